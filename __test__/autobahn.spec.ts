// Autobahn testsuite client conformance, groups 1-10 (re-implemented from the testsuite's case
// definitions and judging; see __test__/autobahn/). redial-ws runs as the echo client against
// a raw fuzzing server on 127.0.0.1, one fresh client and connection per case.
//
// AUTOBAHN_REPORT=path writes every case's full result as JSON.
// AUTOBAHN_CASES=1.1.1,6.4  runs only the cases whose id equals or starts with one of these.
// AUTOBAHN_CASE_TIMEOUT_MS  overrides the hard per-case limit (default 15000 ms).
import { writeFileSync } from 'node:fs'
import test from 'ava'

import { CASES, INFORMATIONAL_CASES } from './autobahn/cases.js'
import type { CaseResult } from './autobahn/judge.js'
import { runCase, summarize } from './autobahn/runner.js'
import { FuzzingServer } from './autobahn/server.js'
import { quiescent } from './helpers.js'

const CASE_TIMEOUT_MS = Number(process.env.AUTOBAHN_CASE_TIMEOUT_MS ?? 15_000)
const only = process.env.AUTOBAHN_CASES?.split(',').filter(Boolean)
const selected = only ? CASES.filter((c) => only.some((o) => c.id === o || c.id.startsWith(`${o}.`))) : CASES

test.serial('the judge does not pass a client that does not echo, echoes late or with the wrong type', async (t) => {
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
    // A good echo of the same cases passes: the failures above are the broken clients' doing.
    const good = await runCase(server, byId('1.1.2'))
    t.is(`${good.behavior}/${good.behaviorClose}`, 'OK/OK')
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

test.serial('Autobahn client conformance, groups 1-10: every case OK (7.1.6, 7.13.x informational)', async (t) => {
  const server = await FuzzingServer.start(CASES, CASE_TIMEOUT_MS)
  const started = performance.now()
  const results: CaseResult[] = []
  try {
    for (const spec of selected) results.push(await runCase(server, spec))
  } finally {
    await server.close()
  }
  const seconds = (performance.now() - started) / 1000
  await quiescent()

  const summary = summarize(results, INFORMATIONAL_CASES)
  t.log([...summary.lines, `run time ${seconds.toFixed(1)} s; server: ${server.accepted} connections, refused ${JSON.stringify(server.refused)}, unexpected ${JSON.stringify(server.unexpected)}`].join('\n'))
  const reportPath = process.env.AUTOBAHN_REPORT
  if (reportPath) {
    writeFileSync(reportPath, JSON.stringify({ agent: 'redial-ws', seconds, summary: { behavior: summary.behavior, behaviorClose: summary.behaviorClose }, results }, null, 1))
  }

  if (!only) t.is(results.length, 301, 'groups 1-10 hold 301 client cases')
  t.true(results.length > 0)
  t.deepEqual(server.unexpected, [], 'one connection per case')
  for (const r of summary.informational) {
    t.is(`${r.behavior}/${r.behaviorClose}`, 'INFORMATIONAL/INFORMATIONAL', `${r.id} is informational by definition`)
  }
  t.deepEqual(
    summary.notOk.map((r) => `${r.id} ${r.behavior}/${r.behaviorClose}${r.extraFailures.length ? ` (${r.extraFailures.join('; ')})` : ''}`),
    [],
    'every case but the informational ones is OK, with an OK close',
  )
})
