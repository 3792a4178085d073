// Runs one case: a fresh redial-ws client (no reconnect) against the fuzzing server, as an echo
// client, and what the server judged once the connection is gone. Also renders the summary.
import { ReconnectingWebSocket, type ReconnectingWebSocketOptions } from '../../index.js'
import { compareIds } from './cases.js'
import type { CaseResult, CaseSpec, ClientObservation } from './judge.js'
import { missingResult } from './judge.js'
import type { FuzzingServer } from './server.js'

/**
 * 'echo' is the client under test. The others are deliberately broken clients, used to check
 * that the judging does not pass what it must not: 'silent' never echoes, 'retype' echoes text
 * as binary and binary as text, 'late' echoes 200 ms after the message arrived, 'corrupt'
 * echoes the second message with its last character (octet) changed, 'drop' echoes the first
 * message and then drops the connection without a close handshake (`terminate()`), its socket
 * left unread from the echo on (`pause()`): the server's close, which comes once the echo is in,
 * is not answered by the client before it drops.
 */
export type EchoMode = 'echo' | 'silent' | 'retype' | 'late' | 'corrupt' | 'drop'

const MAX_PAYLOAD = 64 * 2 ** 20

/** Changes the last character (octet) of a message, keeping its length. */
function corrupt(data: string | Buffer): string | Buffer {
  if (typeof data === 'string') return data.slice(0, -1) + (data.endsWith('a') ? 'b' : 'a')
  const b = Buffer.from(data)
  b[b.length - 1] ^= 0x01
  return b
}

/** `options`: the client's options beyond the defaults the run uses (e.g. `perMessageDeflate`). */
export async function runCase(server: FuzzingServer, spec: CaseSpec, mode: EchoMode = 'echo', options: ReconnectingWebSocketOptions = {}): Promise<CaseResult> {
  const judged = server.expect(spec.id)
  const observed: ClientObservation = { opened: false, messages: 0, echoed: 0, sendErrors: [], errors: [], close: null }
  const client = new ReconnectingWebSocket(server.url(spec.id), { maxRetries: 0, maxPayload: MAX_PAYLOAD, ...options })
  client.on('open', () => {
    observed.opened = true
  })
  client.on('message', (data, isBinary) => {
    observed.messages++
    if (mode === 'silent') return
    if (mode === 'drop') client.pause()
    let out: string | Buffer
    if (mode === 'retype') out = isBinary ? Buffer.from(data as Buffer).toString('latin1') : Buffer.from(data as string, 'utf8')
    else if (mode === 'corrupt' && observed.messages === 2) out = corrupt(data as string | Buffer)
    else out = data as string | Buffer
    const echo = () => {
      try {
        client.send(out)
        observed.echoed++
      } catch (err) {
        observed.sendErrors.push((err as { code?: string }).code ?? String(err))
      }
    }
    if (mode === 'late') setTimeout(echo, 200)
    else echo()
    if (mode === 'drop') void client.terminate()
  })
  client.on('error', (err) => {
    observed.errors.push(err.code ?? err.message)
  })
  let neverOpened: (() => void) | undefined
  const closedUnopened = new Promise<void>((resolve) => {
    neverOpened = resolve
  })
  client.on('close', (e) => {
    observed.close = { code: e.code, reason: e.reason, wasClean: e.wasClean }
    if (!observed.opened) neverOpened?.()
  })

  // Bound everything: the server's own limits end every case; this catches a harness bug or a
  // connection that neither side ever closes.
  const limitMs = server.caseTimeoutMs + 10_000
  let timer: NodeJS.Timeout | undefined
  const overall = new Promise<CaseResult>((resolve) => {
    timer = setTimeout(() => resolve(missingResult(spec, `The case did not end within ${limitMs} ms (harness limit).`)), limitMs)
  })
  // A client that gave up without ever opening: the server's verdict (if it saw a connection at
  // all) comes within moments; else the case is missing.
  const unopened = closedUnopened
    .then(() => new Promise<void>((r) => setTimeout(r, 1_000)))
    .then(() => missingResult(spec, `The client closed without opening a connection (errors: ${observed.errors.join(',') || 'none'}).`))
  const result = await Promise.race([judged, overall, unopened])
  clearTimeout(timer)
  await client.disconnect()
  result.client = observed
  return result
}

export interface Summary {
  total: number
  behavior: Record<string, number>
  behaviorClose: Record<string, number>
  notOk: CaseResult[]
  informational: CaseResult[]
  lines: string[]
}

/** One line per case that is not OK/OK: what the server saw the client do. */
export function describe(r: CaseResult): string {
  const c = r.client
  const clientClose = c?.close ? `client close event ${c.close.code}${c.close.wasClean ? ' clean' : ''}` : 'no client close event'
  const errs = c && c.errors.length ? ` errors ${c.errors.join(',')}` : ''
  const recv = r.received.length ? JSON.stringify(r.received) : '[]'
  return (
    `${r.id} ${r.behavior}/${r.behaviorClose}: ${r.result} | ${r.resultClose} | received ${recv}` +
    ` | client close code ${r.remoteCloseCode ?? 'none'}, closedByMe(server)=${r.closedByMe}, clean=${r.wasClean}, tcp closed by ${r.tcpClose}` +
    ` | ${clientClose}${errs}${r.notes.length ? ` | ${r.notes.join('; ')}` : ''}`
  )
}

export function summarize(results: CaseResult[], informationalIds: Set<string>, title = 'Autobahn client cases 1-10'): Summary {
  const behavior: Record<string, number> = {}
  const behaviorClose: Record<string, number> = {}
  for (const r of results) {
    behavior[r.behavior] = (behavior[r.behavior] ?? 0) + 1
    behaviorClose[r.behaviorClose] = (behaviorClose[r.behaviorClose] ?? 0) + 1
  }
  const sorted = [...results].sort((a, b) => compareIds(a.id, b.id))
  const informational = sorted.filter((r) => informationalIds.has(r.id))
  const notOk = sorted.filter((r) => !informationalIds.has(r.id) && (r.behavior !== 'OK' || r.behaviorClose !== 'OK' || r.extraFailures.length > 0))
  const fmt = (o: Record<string, number>) =>
    Object.entries(o)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')
  const lines = [
    `${title}: ${results.length} run`,
    `behavior:      ${fmt(behavior)}`,
    `behaviorClose: ${fmt(behaviorClose)}`,
    `informational: ${informational.map((r) => `${r.id} (${r.result})`).join('; ')}`,
    `not OK (${notOk.length}):`,
    ...notOk.map((r) => `  ${describe(r)}${r.extraFailures.length ? ` | beyond Autobahn: ${r.extraFailures.join('; ')}` : ''}`),
  ]
  return { total: results.length, behavior, behaviorClose, notOk, informational, lines }
}
