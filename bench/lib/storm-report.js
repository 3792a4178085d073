'use strict'
// Formatting of the reconnect-storm report (bench/storm.js): terminal table,
// Markdown and a small hand-written SVG of the server's accepts per 100 ms.

const { group, mdEscape, wrap, xml } = require('./report')

const dash = '—'
const ms = (v) => (v === null || v === undefined || !Number.isFinite(v) ? dash : group(v))
const num = (v, d = 0) => (v === null || v === undefined || !Number.isFinite(v) ? dash : group(v, d))
const mark = (ok) => (ok ? ' ✓' : ' ✗')

function label(run, name) {
  if (!name.startsWith('redial-ws')) return `${name} (no jitter)`
  return jitterName(name) === 'none' ? 'redial-ws (jitter none)' : `redial-ws (${jitterName(name)} jitter)`
}

function jitterName(name) {
  return name.split(':')[1] || 'spread'
}

/** The rows: [label, (figures, run, env) => cell]. */
function rowsOf(env) {
  const b = env.backoff
  return [
    ['connections held, then dropped (close codes seen)', (f) => `${group(f.held)} (${codes(f.closeCodes)})`],
    ['open again', (f) => `${group(f.reopened)} / ${group(f.n)}`],
    ['server back → 50 % open, ms', (f) => ms(f.t50)],
    ['server back → 99 % open, ms', (f) => ms(f.t99)],
    [`server back → 100 % open, ms (target ≤ ${group(env.targetAllMs)})`, (f) => ms(f.t100) + (f.t100 === null ? '' : mark(f.meetsAllTarget))],
    ['server back → last upgrade completed (server side), ms', (f) => ms(f.lastUpgradeMs)],
    ['server accepts per 100 ms: peak', (f) => num(f.peak)],
    ['  mean over the window (server back → last accept)', (f) => `${num(f.mean)} (${f.windowBuckets} × 100 ms)`],
    [`  peak ÷ mean (target ≤ ${env.targetRatio})`, (f) => num(f.ratio, 2) + (f.ratio === null ? '' : mark(f.meetsRatioTarget))],
    ['  peak ÷ mean, window ending at the 99th-percentile accept', (f) => num(f.ratio99, 2)],
    ['  peak as a share of N', (f) => (f.peakShare === null ? dash : `${(f.peakShare * 100).toFixed(1)} %`)],
    ['server: accepts / completed upgrades after the return', (f) => `${group(f.accepts)} / ${group(f.upgrades)}`],
    ['attempts refused (nothing listening: the outage)', (f) => group(f.refused)],
    ['  of which JS saw only after the return (late events)', (f) => group(f.refusedSeenAfterReturn)],
    [
      '  attempt start → its refusal seen by JS, ms: median / p99 / max',
      (f) => (f.refusedLatency ? `${num(f.refusedLatency.p50, 1)} / ${num(f.refusedLatency.p99, 1)} / ${num(f.refusedLatency.max, 1)}` : dash),
    ],
    ['other failed attempts (timeouts, resets, …)', (f) => group(f.otherFailures)],
    ['  failed attempts by code', (f) => codes(f.errorCodes)],
    ['attempts started during the outage / after the return', (f, run) => `${group(f.attemptsDuringOutage)} / ${group(f.attemptsAfterReturn)}${run.peer.startsWith('redial-ws') ? ' (scheduled)' : ''}`],
    [
      'first reconnect delay after the drop, ms: min / median / max',
      (f) => (f.firstDelay ? `${ms(f.firstDelay.min)} / ${ms(f.firstDelay.p50)} / ${ms(f.firstDelay.max)}` : dash),
    ],
    ['server: destroying the N connections took, ms', (f) => ms(f.destroyMs)],
    ['drop → client saw the close, ms: median / last', (f) => (f.closeLag ? `${ms(f.closeLag.p50)} / ${ms(f.closeLag.max)}` : dash)],
    ['client CPU, all open → all open again, ms', (f) => ms(f.cpuStormMs)],
    [`client CPU in total (incl. opening the N), ms`, (f) => ms(f.cpuTotalMs)],
    ['server CPU, drop → all open again, ms (not the client\'s)', (f) => ms(f.serverCpuMs)],
    ['whole machine busy: outage / server back → all open', (f) => `${pctOf(f.machineBusyOutage)} / ${pctOf(f.machineBusyReconnect)}`],
    ['time to open the N at first, ms', (f) => ms(f.openMs)],
    ['client RSS with N open / peak in the storm / at the end, MiB', (f) => `${num(f.rssReadyMiB)} / ${num(f.rssPeakStormMiB)} / ${num(f.rssEndMiB)}`],
    ['client event loop: longest delay in the storm, ms', (f) => num(f.eventLoopMaxMs)],
    ['uncaught exceptions in the client', (f) => (f.uncaught && f.uncaught.count ? `${group(f.uncaught.count)} !` : '0')],
    [
      `backoff formula alone: 100 % open, ms / peak ÷ mean`,
      (f, run) => (run.model ? `${ms(run.model.t100)} / ${num(run.model.ratio, 2)}` : dash),
    ],
    [
      `the same, each client from when it saw the drop: 100 % open, ms / peak ÷ mean`,
      (f, run) => (run.modelFromDrop ? `${ms(run.modelFromDrop.t100)} / ${num(run.modelFromDrop.ratio, 2)}` : dash),
    ],
  ].map(([l, fn]) => ({ label: l, fn, b }))
}

function pctOf(v) {
  return v === null || v === undefined ? dash : `${Math.round(v * 100)} %`
}

function codes(c) {
  const e = Object.entries(c || {})
  return e.length ? e.map(([k, v]) => (e.length === 1 ? k : `${k}: ${group(v)}`)).join(', ') : 'none'
}

function tableCells(report) {
  const peers = report.peers.filter((p) => p.available)
  const header = ['', ...peers.map((p) => label(report.runs[p.name], p.name))]
  const body = rowsOf(report.env).map((row) => [
    row.label,
    ...peers.map((p) => {
      const run = report.runs[p.name]
      if (!run || !run.figures) return 'FAIL'
      return row.fn(run.figures, run, report.env) + (run.ok ? '' : '*')
    }),
  ])
  return { header, body }
}

function envLine(env) {
  return (
    `${env.date} · ${env.cpu} × ${env.cores} cores · ${env.memory} · Node ${env.node} · ${env.platform} · ` +
    `${group(env.clients)} clients${env.clients !== env.requested ? ` (SCALED DOWN from ${group(env.requested)})` : ''}${env.quick ? ' · QUICK mode' : ''} · ` +
    `open files ${env.nofile.soft} · ephemeral ports ${env.portRange} · somaxconn ${env.somaxconn} · tcp_max_syn_backlog ${env.synBacklog} · ` +
    `load ${env.loadavg} at start` +
    (env.commit ? ` · commit ${env.commit}` : '')
  )
}

const LEGEND =
  'Times are ms after the server listened again ("server back"), on the monotonic clock all processes share. ' +
  'Accepts per 100 ms are counted by the server from its return; the window ends at its last accept. ' +
  'Attempts refused during the outage are counted by the client (error events). ' +
  '"backoff formula alone" simulates the library\'s documented schedule with instant I/O (every client drops at once), ' +
  'to tell what the jitter itself gives from what CPU and kernel add; the row after it starts each client\'s schedule ' +
  'when that client saw the drop (its close event), which adds the spread of the server\'s teardown. ' +
  '* = the run did not complete (see failures).'

function renderText(report) {
  const { header, body } = tableCells(report)
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)))
  const line = (cells) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd()
  const out = [envLine(report.env), '', line(header), widths.map((w) => '-'.repeat(w)).join('  ')]
  for (const r of body) out.push(line(r))
  out.push('', wrap(LEGEND, 110, '  '))
  if (report.notes.length) out.push('', ...report.notes.map((n) => wrap(`- ${n}`, 110, '  ')))
  return out.join('\n')
}

function renderMarkdown(report) {
  const { env, peers, failures } = report
  const { header, body } = tableCells(report)
  const out = ['# redial-ws reconnect storm', '', envLine(env), '']
  out.push(`Wall time: ${report.wallSeconds.toFixed(1)} s.`, '')
  out.push('Libraries:', '')
  for (const p of peers) out.push(`- **${p.name}** ${p.available ? p.version : `— n/a: ${mdEscape(p.reason)}`}`)
  out.push('')
  out.push(`| ${header.map(mdEscape).join(' | ')} |`)
  out.push(`|${header.map((_, i) => (i ? ' ---: ' : ' --- ')).join('|')}|`)
  for (const r of body) out.push(`| ${r.map(mdEscape).join(' | ')} |`)
  out.push('', LEGEND, '')
  out.push('![server accepts per 100 ms](storm.svg)', '')
  if (report.notes.length) {
    out.push('Settings and notes:', '')
    for (const n of report.notes) out.push(`- ${mdEscape(n)}`)
  }
  const uncaught = Object.values(report.runs).filter((r) => r.figures && r.figures.uncaught && r.figures.uncaught.count)
  if (uncaught.length) {
    out.push('', '## Uncaught exceptions', '')
    for (const r of uncaught) out.push(`- ${r.peer}: ${r.figures.uncaught.count}, first: \`${r.figures.uncaught.first}\``)
  }
  if (failures.length) {
    out.push('', '## Failures', '')
    for (const f of failures) {
      out.push(`- ${f.peer}: ${mdEscape(f.error)}`)
      if (f.stderr) out.push('', '  ```', ...f.stderr.split('\n').map((l) => `  ${l}`), '  ```')
    }
  }
  out.push('')
  return out.join('\n')
}

/** A round axis maximum ≥ v. */
function niceMax(v) {
  if (!(v > 0)) return 1
  const p = 10 ** Math.floor(Math.log10(v))
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p
  return 10 * p
}

const r1 = (v) => Math.round(v * 10) / 10

/**
 * One panel per library, on a shared time axis: the server's accepts per 100 ms after it came back
 * (blue), the attempts refused per 100 ms while it was down (red, left of 0), the window's mean
 * (dashed) and the target time for 100 % open (maxDelay + 1 s).
 */
function renderSvg(report) {
  const { env } = report
  const panels = report.peers.filter((p) => p.available && report.runs[p.name] && report.runs[p.name].figures)
  const W = 900
  const left = 64
  const right = 24
  const plotW = W - left - right
  const top = 58
  const panelH = 120
  const gap = 44
  const H = top + Math.max(1, panels.length) * (panelH + gap) + 24
  const B = env.bucketMs
  const xMinMs = -env.outageMs
  let xMaxMs = env.targetAllMs + 500
  for (const p of panels) {
    const f = report.runs[p.name].figures
    if (f.lastAcceptMs !== null) xMaxMs = Math.max(xMaxMs, f.lastAcceptMs + B)
    if (f.t100 !== null) xMaxMs = Math.max(xMaxMs, f.t100 + B)
  }
  xMaxMs = Math.ceil(xMaxMs / 1000) * 1000
  const x = (t) => r1(left + ((t - xMinMs) / (xMaxMs - xMinMs)) * plotW)
  const bw = Math.max(0.5, r1((B / (xMaxMs - xMinMs)) * plotW - 0.6))
  const out = []
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="12" y="22" font-size="15" font-weight="bold">Reconnect storm: server accepts per ${B} ms, ${xml(group(env.clients))} clients in one process</text>`,
    `<text x="12" y="40" fill="#555">${xml(
      `outage ${group(env.outageMs)} ms · backoff ${env.backoff.minDelay}→${env.backoff.maxDelay} ms ×${env.backoff.factor} · ${env.date.slice(0, 10)} · Node ${env.node} · ${env.cpu} × ${env.cores}${env.quick ? ' · quick' : ''}`,
    )} · red: attempts refused while down · dashed: mean</text>`,
  )
  panels.forEach((p, k) => {
    const run = report.runs[p.name]
    const f = run.figures
    const y0 = top + k * (panelH + gap) + 18 // top of the plot area
    const yb = y0 + panelH // baseline
    const yMax = niceMax(Math.max(f.peak || 0, ...f.outageBuckets, 1))
    const y = (v) => r1(yb - (v / yMax) * panelH)
    const title =
      `${label(run, p.name)} ${p.version}: peak ${num(f.peak)}, mean ${num(f.mean)} per ${B} ms (peak ÷ mean ${num(f.ratio, 2)}); ` +
      `all open ${f.t100 === null ? 'NOT reached' : `at +${ms(f.t100)} ms`}` +
      (run.ok ? '' : ' (incomplete)')
    out.push(`<text x="${left}" y="${y0 - 6}" font-weight="bold">${xml(title)}</text>`)
    // outage shading, grid, axes
    out.push(`<rect x="${x(xMinMs)}" y="${y0}" width="${r1(x(0) - x(xMinMs))}" height="${panelH}" fill="#f1f1f1"/>`)
    out.push(`<text x="${r1((x(xMinMs) + x(0)) / 2)}" y="${y0 + 14}" text-anchor="middle" fill="#888">server down</text>`)
    for (let t = Math.ceil(xMinMs / 1000) * 1000; t <= xMaxMs; t += 1000) {
      out.push(`<line x1="${x(t)}" y1="${y0}" x2="${x(t)}" y2="${yb}" stroke="#e5e5e5"/>`)
      out.push(`<text x="${x(t)}" y="${yb + 14}" text-anchor="middle" fill="#555">${t === 0 ? '0' : `${t > 0 ? '+' : ''}${t / 1000} s`}</text>`)
    }
    for (const v of [0, yMax / 2, yMax]) {
      out.push(`<line x1="${left}" y1="${y(v)}" x2="${left + plotW}" y2="${y(v)}" stroke="${v ? '#eeeeee' : '#999999'}"/>`)
      out.push(`<text x="${left - 6}" y="${y(v) + 4}" text-anchor="end" fill="#555">${xml(group(v))}</text>`)
    }
    // refused attempts while down (bucket i covers (-(i+1)·B, -i·B])
    f.outageBuckets.forEach((v, i) => {
      if (!v) return
      out.push(`<rect x="${x(-(i + 1) * B)}" y="${y(v)}" width="${bw}" height="${r1(yb - y(v))}" fill="#c62828" opacity="0.55"/>`)
    })
    // accepts after the return
    f.acceptBuckets.forEach((v, i) => {
      if (!v) return
      out.push(`<rect x="${x(i * B)}" y="${y(v)}" width="${bw}" height="${r1(yb - y(v))}" fill="#1565c0"/>`)
    })
    if (f.mean !== null) {
      out.push(
        `<line x1="${x(0)}" y1="${y(f.mean)}" x2="${x(f.windowBuckets * B)}" y2="${y(f.mean)}" stroke="#000" stroke-dasharray="4 3"/>`,
      )
    }
    out.push(`<line x1="${x(0)}" y1="${y0}" x2="${x(0)}" y2="${yb}" stroke="#000"/>`)
    if (f.t100 !== null) {
      // the moment the last client saw its open (client side; the bars are the server's TCP accepts)
      out.push(
        `<line x1="${x(f.t100)}" y1="${y0 + 20}" x2="${x(f.t100)}" y2="${yb}" stroke="#000" stroke-width="1.5"/>`,
        `<text x="${x(f.t100) + 4}" y="${y0 + 30}" fill="#000">all open</text>`,
      )
    }
    out.push(
      `<line x1="${x(env.targetAllMs)}" y1="${y0}" x2="${x(env.targetAllMs)}" y2="${yb}" stroke="#2e7d32" stroke-width="1.5" stroke-dasharray="6 3"/>`,
      `<text x="${x(env.targetAllMs) - 4}" y="${y0 + 14}" text-anchor="end" fill="#2e7d32">maxDelay + 1 s</text>`,
    )
  })
  if (panels.length === 0) out.push(`<text x="${left}" y="${top + 30}" fill="#555">no library completed a run</text>`)
  out.push(
    `<text x="${left + plotW / 2}" y="${H - 8}" text-anchor="middle" fill="#555">time since the server listened again (its outage shaded)</text>`,
  )
  out.push('</svg>', '')
  return out.join('\n')
}

module.exports = { renderText, renderMarkdown, renderSvg }
