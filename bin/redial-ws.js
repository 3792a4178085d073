#!/usr/bin/env node
'use strict'
// redial-ws: a wscat-like REPL that reconnects. Lines read from stdin are sent
// as text messages; received messages go to stdout; connection state changes go
// to stderr. Lines typed while the connection is down are queued by the client
// and written, in order, once it is open again.

const fs = require('node:fs')
const readline = require('node:readline')
const { parseArgs } = require('node:util')

const { ReconnectingWebSocket } = require('..')
const { redactUrl } = require('../lib/errors')
const { version } = require('../package.json')

const USAGE = `Usage: redial-ws <url> [options]

Reads lines from stdin and sends each one as a text message; prints every
received message on stdout; reconnects with backoff when the connection drops.
Connection state changes are shown on stderr. Ctrl-D (end of input) closes the
connection cleanly and exits.

Options:
  -H, --header "Name: value"  extra handshake header (repeatable)
  -p, --protocol <name>       subprotocol to offer (repeatable)
      --max-delay <ms>        cap of the reconnect delay [30000]
      --ping-interval <ms>    heartbeat ping interval, 0 disables [30000]
      --no-reconnect          do not reconnect: exit when the connection ends
      --ca <file>             extra trusted CA certificate(s), PEM file (wss:)
      --insecure              accept any TLS certificate (testing only)
      --proxy <url>           HTTP CONNECT proxy, http://[user:pass@]host:port
                              (default: HTTPS_PROXY / HTTP_PROXY unless NO_PROXY)
      --json                  print messages as JSON lines:
                              {"type":"message","data":...,"binary":false}
                              (binary data is base64, with "encoding":"base64")
  -h, --help                  show this help
      --version               show the version

Exit status: 0 after a clean close, 1 when the connection failed or the client
gave up, 2 on bad usage, 130 on SIGINT.`

const EXIT_USAGE = 2

function usageError(message) {
  process.stderr.write(`redial-ws: ${message}\nUsage: redial-ws <url> [options]   (redial-ws --help for the options)\n`)
  process.exit(EXIT_USAGE)
}

function parseCommandLine(argv) {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        header: { type: 'string', short: 'H', multiple: true, default: [] },
        protocol: { type: 'string', short: 'p', multiple: true, default: [] },
        'max-delay': { type: 'string' },
        'ping-interval': { type: 'string' },
        'no-reconnect': { type: 'boolean', default: false },
        ca: { type: 'string' },
        insecure: { type: 'boolean', default: false },
        proxy: { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
        version: { type: 'boolean', default: false },
      },
    })
  } catch (err) {
    usageError(err.message)
  }
  const { values, positionals } = parsed
  if (values.help) {
    process.stdout.write(`${USAGE}\n`)
    process.exit(0)
  }
  if (values.version) {
    process.stdout.write(`${version}\n`)
    process.exit(0)
  }
  if (positionals.length === 0) usageError('missing <url>')
  if (positionals.length > 1) usageError(`unexpected argument: ${positionals[1]}`)
  return { url: positionals[0], values }
}

function milliseconds(values, name) {
  const raw = values[name]
  if (raw === undefined) return undefined
  if (!/^\d+$/.test(raw)) usageError(`--${name} must be a whole number of milliseconds, got "${raw}"`)
  return Number(raw)
}

function clientOptions(values) {
  const options = {}
  const maxDelay = milliseconds(values, 'max-delay')
  if (maxDelay !== undefined) {
    options.maxDelay = maxDelay
    // The default first delay (250 ms) must not exceed the cap.
    options.minDelay = Math.min(250, maxDelay)
  }
  const pingInterval = milliseconds(values, 'ping-interval')
  if (pingInterval !== undefined) options.pingInterval = pingInterval
  if (values['no-reconnect']) options.maxRetries = 0

  if (values.header.length > 0) {
    const headers = {}
    for (const header of values.header) {
      const colon = header.indexOf(':')
      if (colon <= 0) usageError(`--header must look like "Name: value", got "${header}"`)
      const name = header.slice(0, colon).trim()
      const value = header.slice(colon + 1).trim()
      const previous = headers[name]
      headers[name] = previous === undefined ? value : [].concat(previous, value)
    }
    options.headers = headers
  }
  if (values.protocol.length > 0) options.protocols = values.protocol

  const tls = {}
  if (values.ca !== undefined) {
    try {
      tls.ca = fs.readFileSync(values.ca, 'utf8')
    } catch (err) {
      usageError(`cannot read --ca file: ${err.message}`)
    }
  }
  if (values.insecure) tls.rejectUnauthorized = false
  if (Object.keys(tls).length > 0) options.tls = tls
  if (values.proxy !== undefined) options.proxy = values.proxy
  return options
}

function main() {
  const { url, values } = parseCommandLine(process.argv.slice(2))
  const json = values.json
  const note = (line) => process.stderr.write(`${line}\n`)

  let client
  try {
    client = new ReconnectingWebSocket(url, clientOptions(values))
  } catch (err) {
    usageError(err.code ? `${err.code}: ${err.message}` : err.message)
  }

  let exiting = false
  let lastClose = null
  const exit = (code) => {
    exiting = true
    process.exit(code)
  }

  // A closed stdout (e.g. `redial-ws url | head -1`) ends the session.
  process.stdout.on('error', () => {
    if (!exiting) client.disconnect().finally(() => exit(1))
  })

  note(`connecting ${redactUrl(String(url))}`)
  let connected = false
  client.on('open', () => {
    connected = true
    note(client.protocol ? `open (protocol ${client.protocol})` : 'open')
  })
  client.on('close', (ev) => {
    lastClose = ev
    // A failed attempt also ends with a close event; its error was shown already.
    if (connected) note(`closed ${ev.code}${ev.reason ? ` ${ev.reason}` : ''}`)
    connected = false
  })
  client.on('reconnecting', (ev) => note(`reconnecting in ${(ev.delay / 1000).toFixed(1)} s (attempt ${ev.attempt})`))
  client.on('error', (err) => note(`error ${err.code}: ${err.message}`))
  client.on('giveup', (ev) => {
    // Nothing is left to do. A clean, normal close by the server (with --no-reconnect) is a success.
    const clean = !ev.lastError && lastClose !== null && lastClose.wasClean && lastClose.code === 1000
    if (!clean) {
      const plural = ev.attempts === 1 ? '' : 's'
      const why = ev.lastError ? `: ${ev.lastError.code}: ${ev.lastError.message}` : ''
      note(`gave up: ${ev.reason} after ${ev.attempts} attempt${plural}${why}`)
    }
    exit(clean ? 0 : 1)
  })
  client.on('message', (data, isBinary) => {
    if (json) {
      const record = isBinary
        ? { type: 'message', data: Buffer.from(data).toString('base64'), binary: true, encoding: 'base64' }
        : { type: 'message', data, binary: false }
      process.stdout.write(`${JSON.stringify(record)}\n`)
    } else {
      process.stdout.write(isBinary ? `<binary ${data.byteLength} bytes>\n` : `${data}\n`)
    }
  })

  let interrupted = false
  const interrupt = (signal, code) => {
    if (interrupted || exiting) exit(code) // a second Ctrl-C does not wait
    interrupted = true
    note(`${signal}: disconnecting`)
    client.disconnect().finally(() => exit(code))
  }
  process.on('SIGINT', () => interrupt('SIGINT', 130))
  process.on('SIGTERM', () => interrupt('SIGTERM', 143))

  // Every line is handed to send(): while the connection is down it is queued
  // by the client. Only a full offline queue makes us wait for the next open.
  const send = async (line) => {
    for (;;) {
      try {
        client.send(line)
        return
      } catch (err) {
        if (err.code !== 'ERR_QUEUE_FULL') {
          note(`error ${err.code}: ${err.message} (line not sent)`)
          return
        }
        await new Promise((resolve) => {
          const done = () => {
            client.off('open', done)
            client.off('giveup', done)
            resolve()
          }
          client.on('open', done)
          client.on('giveup', done)
        })
        if (client.state === 'closed') return
      }
    }
  }

  const lines = readline.createInterface({ input: process.stdin, terminal: false, crlfDelay: Infinity })
  ;(async () => {
    for await (const line of lines) {
      if (exiting || interrupted) return
      await send(line)
    }
    if (exiting || interrupted) return
    // End of input: write what is still queued (connecting if needed, within
    // the close deadline), close with 1000 and exit once nothing is running.
    lastClose = null
    const { discarded } = await client.disconnect(1000, '', { flush: true })
    if (discarded > 0) note(`${discarded} queued message${discarded === 1 ? '' : 's'} could not be sent`)
    const clean = discarded === 0 && (lastClose === null || lastClose.wasClean)
    exit(clean ? 0 : 1)
  })().catch((err) => {
    note(`redial-ws: ${err.stack || err}`)
    exit(1)
  })
}

main()
