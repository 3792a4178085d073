// Autobahn testsuite client conformance, groups 1-10, 12 and 13 (re-implemented from the
// testsuite's case definitions and judging; see __test__/autobahn/). redial-ws runs as the echo
// client, with its default options, against a raw fuzzing server on 127.0.0.1, one fresh client
// and connection per case.
//
// AUTOBAHN_REPORT=path writes every case's full result as JSON (groups 12-13: path + '.deflate.json').
// AUTOBAHN_CASES=1.1.1,6.4  runs only the cases whose id equals or starts with one of these.
// AUTOBAHN_CASE_TIMEOUT_MS  overrides the hard per-case limit of groups 1-10 (default 15000 ms).
// Groups 12-13 (permessage-deflate) send 1000 messages of up to 128 KiB per case: the full
// definitions take many minutes. So by default each case sends at most AUTOBAHN_DEFLATE_MESSAGES
// messages (default 200) and at most AUTOBAHN_DEFLATE_MIB MiB of payload each way (default 1,
// but at least 16 messages); every case, parameter set, payload size and fragmentation still runs.
// AUTOBAHN_DEFLATE=full (or both set to 'full') runs Autobahn's counts.
// AUTOBAHN_DEFLATE_CASE_TIMEOUT_MS: their hard per-case limit (default 30 s, full: 300 s).
// AUTOBAHN_TESTDATA=dir: Autobahn's own test data files instead of generated stand-ins.
import { writeFileSync } from 'node:fs'
import test, { type ExecutionContext } from 'ava'

import { CASES, INFORMATIONAL_CASES } from './autobahn/cases.js'
import { deflateCases } from './autobahn/deflate-cases.js'
import type { CaseResult, CaseSpec } from './autobahn/judge.js'
import { runRawCase } from './autobahn/rawclient.js'
import { runCase, summarize } from './autobahn/runner.js'
import { FuzzingServer } from './autobahn/server.js'
import { testDataSource } from './autobahn/testdata.js'
import { quiescent } from './helpers.js'

const CASE_TIMEOUT_MS = Number(process.env.AUTOBAHN_CASE_TIMEOUT_MS ?? 15_000)
const only = process.env.AUTOBAHN_CASES?.split(',').filter(Boolean)
const select = (cases: CaseSpec[]): CaseSpec[] => (only ? cases.filter((c) => only.some((o) => c.id === o || c.id.startsWith(`${o}.`))) : cases)
const selected = select(CASES)

const deflateLimit = (name: string, fallback: number): number | undefined => {
  const v = (process.env.AUTOBAHN_DEFLATE === 'full' ? 'full' : process.env[name])?.toLowerCase()
  if (v === 'full') return undefined
  const n = Number(v ?? fallback)
  if (!(n > 0)) throw new Error(`${name} must be a positive number or 'full'`)
  return n
}
const DEFLATE_MESSAGES = deflateLimit('AUTOBAHN_DEFLATE_MESSAGES', 200)
const DEFLATE_MIB = deflateLimit('AUTOBAHN_DEFLATE_MIB', 1)
const DEFLATE_FULL = DEFLATE_MESSAGES === undefined && DEFLATE_MIB === undefined
const DEFLATE_CASES = deflateCases({ maxMessages: DEFLATE_MESSAGES, maxBytes: DEFLATE_MIB === undefined ? undefined : DEFLATE_MIB * 2 ** 20 })
const DEFLATE_CASE_TIMEOUT_MS = Number(process.env.AUTOBAHN_DEFLATE_CASE_TIMEOUT_MS ?? (DEFLATE_FULL ? 300_000 : 30_000))
const selectedDeflate = select(DEFLATE_CASES)

test('AUTOBAHN_CASES selects at least one case', (t) => {
  t.true(selected.length + selectedDeflate.length > 0, `AUTOBAHN_CASES=${process.env.AUTOBAHN_CASES ?? ''}`)
})

test.serial('the judge does not pass a client that does not echo, echoes late or with the wrong type, echoes invalid UTF-8 or drops the connection', async (t) => {
  const server = await FuzzingServer.start(CASES, CASE_TIMEOUT_MS)
  try {
    const byId = (id: string) => CASES.find((c) => c.id === id)!
    const silent = await runCase(server, byId('1.1.1'), 'silent')
    t.is(silent.behavior, 'FAILED', 'no echo of a text message')
    t.true(silent.connectionWasOpen)
    const silentFrag = await runCase(server, byId('5.3'), 'silent')
    t.is(silentFrag.behavior, 'FAILED', 'no echo of a fragmented message')
    const retyped = await runCase(server, byId('1.2.2'), 'retype')
    t.is(retyped.behavior, 'FAILED', 'binary echoed as text')
    const retypedText = await runCase(server, byId('1.1.2'), 'retype')
    t.is(retypedText.behavior, 'FAILED', 'text echoed as binary')
    // An echo that comes after the client failed the connection is lost: NON-STRICT, not OK.
    const late = await runCase(server, byId('3.2'), 'late')
    t.is(`${late.behavior}/${late.behaviorClose}`, 'NON-STRICT/OK', 'late echo before a protocol violation')
    // A client that does not check UTF-8 echoes invalid text, which the server fails: the wrong
    // endpoint failed the connection (FAILED in group 6), whether the text came whole or in pieces
    // (where a client that fails fast is OK); valid text still passes.
    const unchecked = { skipUTF8Validation: true }
    for (const id of ['6.3.1', '6.4.1', '6.4.3']) {
      const r = await runCase(server, byId(id), 'echo', unchecked)
      t.is(r.behavior, 'FAILED', `${id}: invalid UTF-8 echoed by a client that does not check it`)
    }
    const valid = await runCase(server, byId('6.2.1'), 'echo', unchecked)
    t.is(`${valid.behavior}/${valid.behaviorClose}`, 'OK/OK', '6.2.1: valid UTF-8')
    // A client that drops the connection without a close handshake: its close is not OK.
    const dropped = await runCase(server, byId('1.1.2'), 'drop')
    t.is(`${dropped.behavior}/${dropped.behaviorClose}`, 'OK/UNCLEAN', 'a dropped connection')
    // A good echo of the same cases passes: the failures above are the broken clients' doing.
    const good = await runCase(server, byId('1.1.2'))
    t.is(`${good.behavior}/${good.behaviorClose}`, 'OK/OK')
    t.is(`${(await runCase(server, byId('6.3.1'))).behavior}`, 'OK', '6.3.1: the client checks UTF-8')
  } finally {
    await server.close()
  }
})

test.serial('a case the client cannot connect for is FAILED (server down)', async (t) => {
  // A server that is down: the port is closed before any client connects.
  const server = await FuzzingServer.start(CASES, CASE_TIMEOUT_MS)
  await server.close()
  const r = await runCase(server, CASES[0])
  t.is(r.behavior, 'FAILED')
  t.is(r.behaviorClose, 'FAILED')
  t.false(r.connectionWasOpen)
})

test.serial('the judge does not pass a client that breaks permessage-deflate (groups 12-13)', async (t) => {
  const cases = deflateCases({ messages: 6 })
  const server = await FuzzingServer.start(cases, 20_000)
  const byId = (id: string) => cases.find((c) => c.id === id)!
  const verdict = (r: CaseResult) => `${r.behavior}/${r.behaviorClose}${r.extraFailures.length ? ' +extra' : ''}`
  try {
    // Autobahn judges each echo's type, length and SHA-1: a changed octet fails (text and binary).
    for (const id of ['12.1.4', '12.2.6', '13.5.6']) {
      const r = await runCase(server, byId(id), 'corrupt')
      t.is(r.behavior, 'FAILED', `${id}: an echo with a changed octet`)
      t.regex(r.result, /contents differs .* SHA1/, id)
    }
    const retyped = await runCase(server, byId('12.3.4'), 'retype')
    t.regex(`${retyped.behavior} ${retyped.result}`, /^FAILED .*type differs/, 'binary echoed as text')
    // No extension negotiated: UNIMPLEMENTED, not OK (the server closes at once, cleanly).
    const plain = await runCase(server, byId('13.1.1'), 'echo', { perMessageDeflate: false })
    t.is(`${plain.behavior}/${plain.behaviorClose}`, 'UNIMPLEMENTED/OK', 'a client that does not offer permessage-deflate')
    // A raw client that honours the negotiation passes; the same client compressing with a 15-bit
    // window and a kept context where the server asked for 9 bits / no context takeover does not.
    for (const id of ['12.1.6', '13.3.9', '13.5.6', '13.6.6']) {
      t.is(verdict(await runRawCase(server, byId(id), 'conform')), 'OK/OK', `${id}: raw client honouring the negotiation`)
    }
    const noContext = await runRawCase(server, byId('13.5.6'), 'ignore-negotiation')
    t.is(noContext.behavior, 'FAILED', '13.5.6: echoes that keep their context after client_no_context_takeover')
    t.not(noContext.extraFailures.length, 0)
    const noContext15 = await runRawCase(server, byId('13.6.6'), 'ignore-negotiation')
    t.is(noContext15.behavior, 'FAILED', '13.6.6: echoes that keep their context after client_no_context_takeover')
    // zlib inflates a too-far distance if it is within what the same call produced: Autobahn passes
    // that; the check beyond Autobahn does not.
    const window = await runRawCase(server, byId('13.3.9'), 'ignore-negotiation')
    t.true(window.behavior !== 'OK' || /exceeds the negotiated client window of 512/.test(window.extraFailures.join()), `13.3.9: a 15-bit window after client_max_window_bits=9: ${verdict(window)} ${window.extraFailures.join()}`)
    // RSV1 on a continuation frame: the server fails the connection (protocol error), nothing echoed.
    const rsv1 = await runRawCase(server, byId('12.1.6'), 'rsv1-continuation')
    t.is(rsv1.behavior, 'FAILED', 'RSV1 on a continuation frame')
    t.is(rsv1.localCloseCode, 1002)
    // And redial-ws passes the cases above.
    for (const id of ['12.1.4', '12.2.6', '12.3.4', '13.1.1', '13.3.9', '13.5.6', '13.6.6']) t.is(verdict(await runCase(server, byId(id))), 'OK/OK', id)
    t.deepEqual(server.unexpected, [])
  } finally {
    await server.close()
  }
})

async function runGroups(t: ExecutionContext, all: CaseSpec[], cases: CaseSpec[], caseTimeoutMs: number, title: string): Promise<ReturnType<typeof summarize> & { results: CaseResult[]; server: FuzzingServer; seconds: number }> {
  const server = await FuzzingServer.start(all, caseTimeoutMs)
  const started = performance.now()
  const results: CaseResult[] = []
  try {
    for (const spec of cases) results.push(await runCase(server, spec))
  } finally {
    await server.close()
  }
  const seconds = (performance.now() - started) / 1000
  await quiescent()
  const summary = summarize(results, INFORMATIONAL_CASES, title)
  t.log([...summary.lines, `run time ${seconds.toFixed(1)} s; server: ${server.accepted} connections, refused ${JSON.stringify(server.refused)}, unexpected ${JSON.stringify(server.unexpected)}`].join('\n'))
  return { ...summary, results, server, seconds }
}

function writeReport(path: string, seconds: number, summary: ReturnType<typeof summarize>, results: CaseResult[], extra: object = {}): void {
  writeFileSync(path, JSON.stringify({ agent: 'redial-ws', seconds, ...extra, summary: { behavior: summary.behavior, behaviorClose: summary.behaviorClose }, results }, null, 1))
}

const notOkLines = (notOk: CaseResult[]) => notOk.map((r) => `${r.id} ${r.behavior}/${r.behaviorClose}${r.extraFailures.length ? ` (${r.extraFailures.join('; ')})` : ''}`)

test.serial('Autobahn client conformance, groups 1-10: every case OK (7.1.6, 7.13.x informational)', async (t) => {
  if (selected.length === 0) {
    t.pass('no case of groups 1-10 selected')
    return
  }
  const run = await runGroups(t, CASES, selected, CASE_TIMEOUT_MS, 'Autobahn client cases 1-10')
  if (process.env.AUTOBAHN_REPORT) writeReport(process.env.AUTOBAHN_REPORT, run.seconds, run, run.results)

  if (!only) t.is(run.results.length, 301, 'groups 1-10 hold 301 client cases')
  t.deepEqual(run.server.unexpected, [], 'one connection per case')
  for (const r of run.informational) {
    t.is(`${r.behavior}/${r.behaviorClose}`, 'INFORMATIONAL/INFORMATIONAL', `${r.id} is informational by definition`)
  }
  t.deepEqual(notOkLines(run.notOk), [], 'every case but the informational ones is OK, with an OK close')
})

test.serial('Autobahn client conformance, groups 12-13 (permessage-deflate): every case OK', async (t) => {
  if (selectedDeflate.length === 0) {
    t.pass('no case of groups 12-13 selected')
    return
  }
  // Not longer than it needs: while a test's own timeout runs, ava's inactivity timeout cannot end a
  // test of another file that hangs (its trigger does nothing then, and is not set again).
  t.timeout(DEFLATE_FULL ? 90 * 60_000 : 4 * 60_000)
  const budget = DEFLATE_FULL
    ? "Autobahn's message counts (full definitions)"
    : `at most ${DEFLATE_MESSAGES ?? 1000} messages and ${DEFLATE_MIB ?? '-'} MiB of payload per case, at least 16 messages (AUTOBAHN_DEFLATE=full: Autobahn's 1000)`
  t.log(`payloads: ${testDataSource()}; ${budget}`)
  const run = await runGroups(t, DEFLATE_CASES, selectedDeflate, DEFLATE_CASE_TIMEOUT_MS, 'Autobahn client cases 12-13')
  if (process.env.AUTOBAHN_REPORT) writeReport(`${process.env.AUTOBAHN_REPORT}.deflate.json`, run.seconds, run, run.results, { payloads: testDataSource(), budget })

  if (!only) t.is(run.results.length, 216, 'groups 12 and 13 hold 90 + 126 client cases')
  t.deepEqual(run.server.unexpected, [], 'one connection per case')
  t.deepEqual(notOkLines(run.notOk), [], 'every case is OK, with an OK close, and honours the negotiated parameters')
})
