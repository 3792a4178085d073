'use strict'
// Formatting of the benchmark report: terminal table, Markdown and a small SVG
// bar chart of redial-ws's ratio to ws.

function group(n, digits = 0) {
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

function formatValue(v, row) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—'
  switch (row.unit) {
    case 'msg/s':
      if (v >= 1e6) return `${(v / 1e6).toFixed(2)} M`
      if (v >= 1e3) return `${(v / 1e3).toFixed(1)} k`
      return group(v)
    case 'MB/s':
    case 'cycles/s':
      return v >= 100 ? group(v) : group(v, 1)
    case 'µs':
      return v >= 100 ? group(v) : group(v, 1)
    case 'ms':
      return v.toFixed(2)
    case 'MiB':
      return `${row.signed && v > 0 ? '+' : ''}${v.toFixed(1)}`
    case 'KiB':
      return `${row.signed && v > 0 ? '+' : ''}${group(v)}`
    default:
      return v >= 100 ? group(v) : group(v, 1)
  }
}

/** Peer ÷ ws, in the row's own direction (see `better`); null where a ratio means nothing. */
function ratioOf(value, base, row) {
  if (row.signed && !(value > 0 && base > 0)) return null
  if (!(base > 0) || !(value >= 0)) return null
  return value / base
}

function formatRatio(r) {
  if (r === null || r === undefined || !Number.isFinite(r)) return '—'
  return r >= 10 ? `${r.toFixed(0)}×` : `${r.toFixed(2)}×`
}

/** redial-ws's share of the ceiling (a fraction, 1 = at the limit) as a percentage. */
function formatShare(f) {
  if (f === null || f === undefined || !Number.isFinite(f)) return '—'
  return `${(f * 100).toFixed(f < 0.1 ? 1 : 0)} %`
}

function arrow(row) {
  return row.better === 'higher' ? '↑' : '↓'
}

function cellText(v, row) {
  if (!v) return '—'
  if (v.na) return v.na
  return formatValue(v.value, row) + (v.partial ? '*' : '') + (v.flagged ? '!' : '')
}

/** The table as rows of cells (shared by the text and Markdown renderers). */
function tableCells(report) {
  const header = ['workload', 'unit', 'better']
  for (const p of report.peers) {
    header.push(p.name)
    if (p.name !== 'ws') header.push('×ws')
  }
  if (report.ceiling) header.push(CEILING_HEADER, SHARE_HEADER)
  const body = report.rows.map((row) => {
    const cells = [row.label, row.unit, `${arrow(row)} ${row.better}`]
    for (const p of report.peers) {
      const v = row.values[p.name]
      cells.push(cellText(v, row))
      if (p.name !== 'ws') cells.push(v && !v.na ? formatRatio(v.ratio) : '—')
    }
    if (report.ceiling) {
      const r = row.values['redial-ws']
      cells.push(row.ceiling ? cellText(row.ceiling, row) : '—', formatShare(r && r.ofCeiling))
    }
    return cells
  })
  return { header, body }
}

const CEILING_HEADER = 'ceiling (Rust, no JS)'
const SHARE_HEADER = 'redial-ws % of ceiling'

const CEILING_LEGEND =
  `${CEILING_HEADER}: the same frames from the same server, read and decoded by the crate's own ` +
  'connection code and frame reader in a Rust loop that delivers nothing to JS (benches/ceiling.rs); ' +
  'for the echo rows, a plain TCP round trip of 64 B on loopback (the lower of a Rust std and a Node net client). ' +
  `${SHARE_HEADER}: how close redial-ws comes to that limit, 100 % = at it: ↑ rows redial-ws ÷ ceiling, ` +
  '↓ rows floor ÷ redial-ws.'

const LEGEND =
  '×ws = peer ÷ ws for every row. ↑ rows (throughput): above 1 is faster than ws. ' +
  '↓ rows (latency, memory): below 1 is better than ws. n/a: the peer is missing or lacks the feature ' +
  '(ws and undici do not reconnect, so the reconnect rows have no ws baseline). ' +
  '* = median of the runs that succeeded (some failed). ' +
  '! = the server found what the peer sent wrong (e.g. not compressed where it should be): see the notes.'

function envLine(env) {
  return (
    `${env.date} · ${env.cpu} × ${env.cores} cores · ${env.memory} · Node ${env.node} · ${env.platform} · ` +
    `${env.quick ? 'QUICK mode' : 'full mode'} · ${env.runs} run(s), median${env.scale !== 1 ? ` · counts ×${env.scale}` : ''}` +
    (env.commit ? ` · commit ${env.commit}` : '')
  )
}

function renderText(report) {
  const { header, body } = tableCells(report)
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)))
  const numeric = (i) => i >= 3
  const line = (cells) =>
    cells.map((c, i) => (numeric(i) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd()
  const out = [line(header), widths.map((w) => '-'.repeat(w)).join('  ')]
  for (const r of body) out.push(line(r))
  out.push('', wrap(LEGEND, 100))
  if (report.ceiling) out.push('', wrap(CEILING_LEGEND, 100))
  if (report.notes.length) out.push('', ...report.notes.map((n) => `- ${n}`))
  return out.join('\n')
}

/** `text` broken into lines of at most `width` (a longer word stays whole); `indent` starts the later ones. */
function wrap(text, width, indent = '') {
  const words = text.split(' ')
  const lines = []
  let cur = ''
  for (const w of words) {
    if (cur && cur.length + 1 + w.length > width) {
      lines.push(cur)
      cur = `${indent}${w}`
    } else cur = cur ? `${cur} ${w}` : w
  }
  if (cur) lines.push(cur)
  return lines.join('\n')
}

function mdEscape(s) {
  return String(s).replace(/\|/g, '\\|')
}

function renderMarkdown(report) {
  const { env, peers, workloads, failures } = report
  const { header, body } = tableCells(report)
  const out = []
  out.push('# redial-ws benchmark results', '')
  out.push(envLine(env), '')
  out.push(`Wall time: ${report.wallSeconds.toFixed(1)} s.`, '')
  out.push('Peers:', '')
  for (const p of peers) out.push(`- **${p.name}** ${p.available ? p.version : `— n/a: ${mdEscape(p.reason)}`}`)
  out.push('')
  out.push(`| ${header.map(mdEscape).join(' | ')} |`)
  out.push(`|${header.map((_, i) => (i >= 3 ? ' ---: ' : ' --- ')).join('|')}|`)
  for (const r of body) out.push(`| ${r.map(mdEscape).join(' | ')} |`)
  out.push('', LEGEND, '')
  if (report.ceiling) out.push(CEILING_LEGEND, '')
  out.push('![redial-ws ÷ ws](latest.svg)', '')
  out.push('Workloads:', '')
  for (const w of workloads) out.push(`- \`${w.id}\`: ${w.title}`)
  if (report.notes.length) {
    out.push('', 'Notes:', '')
    for (const n of report.notes) out.push(`- ${mdEscape(n)}`)
  }
  if (failures.length) {
    out.push('', '## Failures', '')
    for (const f of failures) {
      out.push(`- ${f.workload} / ${f.peer}${f.run ? ` run ${f.run}` : ''}: ${mdEscape(f.error)}`)
      if (f.stderr) out.push('', '  ```', ...f.stderr.split('\n').map((l) => `  ${l}`), '  ```')
    }
  }
  out.push('')
  return out.join('\n')
}

function xml(s) {
  return String(s).replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c])
}

/**
 * Horizontal bars: redial-ws ÷ ws per row, with a line at 1.0; below, where the report has ceiling
 * rows, redial-ws's share of the ceiling (0–100 %).
 */
function renderSvg(report) {
  const rows = report.rows
    .map((row) => ({ row, v: row.values['redial-ws'] }))
    .filter(({ v }) => v && v.ratio !== null && v.ratio !== undefined && Number.isFinite(v.ratio))
  const shares = report.rows
    .map((row) => ({ row, v: row.values['redial-ws'] }))
    .filter(({ v }) => v && typeof v.ofCeiling === 'number' && Number.isFinite(v.ofCeiling))
  const W = 900
  const left = 390
  const plotW = 420
  const top = 76
  const rowH = 26
  const top2 = top + Math.max(1, rows.length) * rowH + 46 + 50 // the ceiling panel
  const H = shares.length ? top2 + shares.length * rowH + 46 : top + Math.max(1, rows.length) * rowH + 46
  const maxRatio = Math.max(2, ...rows.map(({ v }) => v.ratio))
  const xMax = Math.min(10, Math.ceil(maxRatio * 2) / 2)
  const x = (r) => Math.round((left + (Math.min(r, xMax) / xMax) * plotW) * 10) / 10
  const out = []
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
  )
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`)
  out.push(
    `<text x="12" y="22" font-size="15" font-weight="bold">redial-ws ÷ ws, per workload</text>`,
    `<text x="12" y="40" fill="#555">${xml(
      `${report.env.quick ? 'quick' : 'full'} mode · ${report.env.date.slice(0, 10)} · Node ${report.env.node} · ${report.env.cpu} × ${report.env.cores}`,
    )} · green = better than ws, red = worse</text>`,
  )
  // grid and ticks
  const step = xMax <= 2 ? 0.5 : xMax <= 5 ? 1 : 2
  const bottom = top + rows.length * rowH
  for (let t = 0; t <= xMax + 1e-9; t += step) {
    out.push(`<line x1="${x(t)}" y1="${top - 4}" x2="${x(t)}" y2="${bottom}" stroke="#e5e5e5"/>`)
    out.push(`<text x="${x(t)}" y="${bottom + 16}" text-anchor="middle" fill="#555">${t}</text>`)
  }
  rows.forEach(({ row, v }, i) => {
    const y = top + i * rowH
    const good = row.better === 'higher' ? v.ratio >= 1 : v.ratio <= 1
    const label = `${row.label} (${row.unit}, ${arrow(row)} better)`
    out.push(`<text x="${left - 8}" y="${y + rowH / 2 + 4}" text-anchor="end">${xml(label)}</text>`)
    out.push(
      `<rect x="${left}" y="${y + 5}" width="${Math.max(1, Math.round((x(v.ratio) - left) * 10) / 10)}" height="${rowH - 10}" fill="${good ? '#2e7d32' : '#c62828'}" opacity="0.85"/>`,
    )
    const clipped = v.ratio > xMax ? ' ▶' : ''
    out.push(`<text x="${x(v.ratio) + 6}" y="${y + rowH / 2 + 4}">${xml(formatRatio(v.ratio) + clipped)}</text>`)
  })
  out.push(`<line x1="${x(1)}" y1="${top - 8}" x2="${x(1)}" y2="${bottom + 4}" stroke="#000" stroke-width="1.5" stroke-dasharray="4 3"/>`)
  out.push(`<text x="${x(1)}" y="${top - 12}" text-anchor="middle" fill="#000">1.0 = ws</text>`)
  if (rows.length === 0) out.push(`<text x="${left}" y="${top + 16}" fill="#555">no ratio available (ws or redial-ws did not run)</text>`)
  out.push(`<text x="${left + plotW / 2}" y="${bottom + 34}" text-anchor="middle" fill="#555">ratio to ws</text>`)
  if (shares.length) {
    // redial-ws as a share of the ceiling (Rust, no JS): 100 % = at the limit.
    const xs = (f) => Math.round((left + Math.min(Math.max(f, 0), 1) * plotW) * 10) / 10
    const bottom2 = top2 + shares.length * rowH
    out.push(
      `<text x="12" y="${top2 - 32}" font-size="15" font-weight="bold">redial-ws, share of the ceiling (Rust, no JS)</text>`,
      `<text x="12" y="${top2 - 14}" fill="#555">${xml(
        '↑ rows: redial-ws ÷ ceiling; ↓ rows: floor ÷ redial-ws (echo: plain TCP round trip); 100 % = at the limit',
      )}</text>`,
    )
    for (let t = 0; t <= 100; t += 25) {
      out.push(`<line x1="${xs(t / 100)}" y1="${top2 - 4}" x2="${xs(t / 100)}" y2="${bottom2}" stroke="#e5e5e5"/>`)
      out.push(`<text x="${xs(t / 100)}" y="${bottom2 + 16}" text-anchor="middle" fill="#555">${t} %</text>`)
    }
    shares.forEach(({ row, v }, i) => {
      const y = top2 + i * rowH
      const label = `${row.label} (${row.unit}, ${arrow(row)} better)`
      out.push(`<text x="${left - 8}" y="${y + rowH / 2 + 4}" text-anchor="end">${xml(label)}</text>`)
      out.push(
        `<rect x="${left}" y="${y + 5}" width="${Math.max(1, Math.round((xs(v.ofCeiling) - left) * 10) / 10)}" height="${rowH - 10}" fill="#1565c0" opacity="0.85"/>`,
      )
      out.push(`<text x="${xs(v.ofCeiling) + 6}" y="${y + rowH / 2 + 4}">${xml(formatShare(v.ofCeiling))}</text>`)
    })
    out.push(`<text x="${left + plotW / 2}" y="${bottom2 + 34}" text-anchor="middle" fill="#555">share of the ceiling</text>`)
  }
  out.push('</svg>', '')
  return out.join('\n')
}

module.exports = { formatValue, formatRatio, formatShare, ratioOf, renderText, renderMarkdown, renderSvg, group, mdEscape, wrap, xml }
