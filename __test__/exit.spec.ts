// A client holds the event loop only while it is active (connecting, open, closing or waiting to
// reconnect) and ref'd: an idle, unref'd or disconnected client never keeps a process alive. Each
// scenario runs in a child process with nothing else to do, so its exit time
// is the proof.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import test from 'ava'

import { rawServer, wsServer } from './helpers.js'

const child = fileURLToPath(new URL('./fixtures/child.cjs', import.meta.url))

interface Run {
  reports: any[]
  code: number | null
  /** ms from the last report to the exit. */
  exitAfterReport: number
  stderr: string
}

async function run(scenario: string, url: string): Promise<Run> {
  const proc = spawn(process.execPath, [child, scenario, url], { stdio: ['ignore', 'pipe', 'pipe'] })
  const reports: any[] = []
  let lastReport = 0
  let stderr = ''
  let buf = ''
  proc.stdout.on('data', (d) => {
    buf += d
    let nl
    while ((nl = buf.indexOf('\n')) >= 0) {
      reports.push(JSON.parse(buf.slice(0, nl)))
      buf = buf.slice(nl + 1)
      lastReport = performance.now()
    }
  })
  proc.stderr.on('data', (d) => (stderr += d))
  const killer = setTimeout(() => proc.kill('SIGKILL'), 20_000)
  const [code] = await once(proc, 'exit')
  clearTimeout(killer)
  return { reports, code, exitAfterReport: performance.now() - lastReport, stderr }
}

test('exits by itself right after disconnect() of an open client', async (t) => {
  const peer = await wsServer()
  const r = await run('disconnect-after-open', peer.url)
  t.is(r.code, 0, r.stderr)
  t.true(r.reports[0]?.done)
  t.is(r.reports[0].stats.runningTasks, 0)
  t.is(r.reports[0].stats.openConnections, 0)
  t.true(r.exitAfterReport < 1_000, `exited ${r.exitAfterReport.toFixed(0)} ms after disconnect()`)
  await peer.close()
})

test('exits by itself right after disconnect() during a 30 s backoff wait', async (t) => {
  // A server of our own that drops every connection: a port merely left closed could be taken by
  // another test file's server meanwhile (ava runs files concurrently), and the child would never back off.
  const peer = await rawServer((socket) => socket.destroy())
  const r = await run('disconnect-during-backoff', peer.url)
  await peer.close()
  t.is(r.code, 0, r.stderr)
  t.true(r.reports[0]?.done)
  t.is(r.reports[0].stats.pendingReconnects, 0)
  t.true(r.exitAfterReport < 1_000, `exited ${r.exitAfterReport.toFixed(0)} ms after disconnect()`)
})

test('an unref()ed client does not hold the process, even while open', async (t) => {
  const peer = await wsServer()
  const r = await run('unref-while-open', peer.url)
  t.is(r.code, 0, r.stderr)
  t.true(r.reports[0]?.done)
  t.true(r.exitAfterReport < 1_000, `exited ${r.exitAfterReport.toFixed(0)} ms after unref()`)
  await peer.close()
})

test('an active client holds the process through its backoff waits', async (t) => {
  const peer = await wsServer((socket) => socket.close(1001))
  const r = await run('backoff-holds-the-loop', peer.url)
  t.is(r.code, 0, r.stderr)
  t.deepEqual(r.reports[0], { done: true, opens: 3 })
  t.is(peer.accepted, 3)
  await peer.close()
})

test('a throwing listener surfaces as an uncaught exception and delivery goes on', async (t) => {
  const peer = await wsServer((socket) => {
    socket.send('one')
    socket.send('two')
  })
  const r = await run('throwing-listener', peer.url)
  t.is(r.code, 0, r.stderr)
  t.deepEqual(r.reports[0], { done: true, messages: ['one', 'two'], thrown: ['listener bug'] })
  await peer.close()
})
