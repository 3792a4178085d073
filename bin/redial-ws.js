#!/usr/bin/env node
'use strict'
// redial-ws: a wscat-like REPL that reconnects. Lines read from stdin are sent
// as text messages; received messages go to stdout; connection state changes go
// to stderr. Lines typed while the connection is down are queued by the client
// and written, in order, once it is open again.
//
// On a terminal (stdout is a TTY) it reads like wscat: received messages are
// shown as `< message`, lines sent as `> line` (the `> ` prompt while typing),
// and incoming output never garbles the line being typed. When stdout is piped,
// messages are printed as they are, one per line, with no markers.

const fs = require('node:fs')
const { STATUS_CODES } = require('node:http')
const readline = require('node:readline')
const { parseArgs } = require('node:util')

const { ReconnectingWebSocket } = require('..')
const { redactUrl, redactInput } = require('../lib/errors')
// Deno without --allow-env: a variable the CLI may not read is unset.
const { variable } = require('../lib/environment')
// An HTTP header name (an RFC 9110 token), as the client checks it.
const { TOKEN: HEADER_NAME } = require('../lib/options')
const { version } = require('../package.json')


const USAGE = `Usage: redial-ws <url> [options]

Reads lines from stdin and sends each one as a text message; prints every
received message on stdout; reconnects with backoff when the connection drops.
Connection state changes are shown on stderr. Ctrl-D (end of input) closes the
connection cleanly and exits.

<url> is ws://host[:port][/path] or wss://...; without a scheme, ws:// is
assumed (redial-ws localhost:8080); http:// and https:// mean ws:// and wss://.
A Unix domain socket: ws+unix:/path/to/socket[:/request/path].

On a terminal, received messages are shown as "< message" and sent lines as
"> line" (control characters in messages are shown escaped, e.g. \\x1b). When
stdout is not a terminal, each text message is printed as is, one per line, and
a binary one as "<binary N bytes>" (--json prints its bytes, in base64). What
goes to stderr (states, errors, close reasons) is escaped on a terminal or not.
REDIAL_WS_CLI_TTY=1 (or 0) forces the terminal format on (or off).

Options:
  -H, --header "Name: value"  extra handshake header (repeatable)
  -p, --protocol <name>       subprotocol to offer (repeatable)
      --max-delay <ms>        cap of the reconnect delay [30000]
      --ping-interval <ms>    heartbeat ping interval, 0 disables [30000]
      --no-reconnect          do not reconnect: exit when the connection ends
  -L, --location              follow redirects (3xx answers with a Location)
      --ca <file>             extra trusted CA certificate(s), PEM file (wss:)
      --insecure              accept any TLS certificate (testing only)
      --cert <file>           client certificate (chain), PEM file, for a server
                              that asks for one (wss:); goes with --key
      --key <file>            its private key, PEM file; if encrypted, its
                              passphrase from REDIAL_WS_KEY_PASSPHRASE
      --proxy <url>           proxy: http://[user:pass@]host:port (HTTP CONNECT),
                              socks5:// or socks5h:// (names resolved by the proxy)
                              (default: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY
                              unless NO_PROXY)
      --json                  print messages as JSON lines:
                              {"type":"message","data":...,"binary":false}
                              (binary data is base64, with "encoding":"base64")
  -h, --help                  show this help
      --version               show the version

Exit status: 0 after a clean close (1000, or 1005: no code), 1 when the
connection failed (also when the input ends while the client is retrying) or the
client gave up, 2 on bad usage, 130 on SIGINT, 143 on SIGTERM.`

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
        location: { type: 'boolean', short: 'L', default: false },
        ca: { type: 'string' },
        insecure: { type: 'boolean', default: false },
        cert: { type: 'string' },
        key: { type: 'string' },
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
  if (values.location) options.followRedirects = true

  if (values.header.length > 0) {
    // (No prototype: `-H '__proto__: x'` and `-H 'toString: x'` are headers like any other.)
    const headers = Object.create(null)
    // Names are case-insensitive: repeats go under the first spelling given.
    const spelling = new Map()
    for (const header of values.header) {
      const colon = header.indexOf(':')
      const name = header.slice(0, Math.max(colon, 0)).trim()
      // Not the argument itself: a mistyped `Authorization Bearer <token>` (or `… id:secret`)
      // would show the token.
      if (colon <= 0 || !HEADER_NAME.test(name)) {
        usageError(`--header must look like "Name: value" (a name of letters, digits and !#$%&'*+-.^_\`|~, then a colon), got another form (${header.length} characters)`)
      }
      const value = header.slice(colon + 1).trim()
      const key = spelling.get(name.toLowerCase()) ?? name
      spelling.set(name.toLowerCase(), key)
      const previous = headers[key]
      headers[key] = previous === undefined ? value : [].concat(previous, value)
    }
    options.headers = headers
  }
  if (values.protocol.length > 0) options.protocols = values.protocol

  const tls = {}
  for (const name of ['ca', 'cert', 'key']) {
    if (values[name] === undefined) continue
    try {
      tls[name] = fs.readFileSync(values[name], 'utf8')
    } catch (err) {
      usageError(`cannot read --${name} file: ${err.message}`)
    }
  }
  // Not an argument: the command lines of processes are visible to other users.
  const passphrase = variable('REDIAL_WS_KEY_PASSPHRASE')
  if (tls.key !== undefined && passphrase) tls.passphrase = passphrase
  if (values.insecure) tls.rejectUnauthorized = false
  if (Object.keys(tls).length > 0) options.tls = tls
  if (values.proxy !== undefined) options.proxy = values.proxy
  return options
}

// --- URLs -------------------------------------------------------------------

// `scheme://...`, a special scheme the URL parser completes (`ws:host`), or a Unix socket's.
const HAS_SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/|^(?:wss?|https?|ws\+unix):/i

/**
 * The URL to connect to, as wscat reads it: `localhost:8080`, `127.0.0.1:8080/path`
 * and `example.com` get `ws://`; `http://` and `https://` become `ws://` and `wss://`.
 * Anything else is left to the client, which rejects what it cannot use.
 */
function normalizeUrl(input) {
  const trimmed = input.trim()
  if (!HAS_SCHEME.test(trimmed)) return `${trimmed.startsWith('//') ? 'ws:' : 'ws://'}${trimmed}`
  return trimmed.replace(/^http(s?):/i, 'ws$1:')
}

/** How the URL is shown: parsed (as the client sees it) when possible, never with a password. */
function displayUrl(url) {
  try {
    return redactUrl(new URL(url).href)
  } catch {
    return redactInput(url)
  }
}

/** The usage error for a URL the client refused. */
function badUrlMessage(input, err) {
  const shown = JSON.stringify(redactInput(input))
  if (err.code === 'ERR_INVALID_URL_SCHEME') {
    const scheme = /^([A-Za-z][A-Za-z0-9+.-]*:)/.exec(input.trim())
    return `unsupported URL scheme${scheme ? ` "${scheme[1]}"` : ''} in ${shown}: use ws://, wss:// or ws+unix: (ERR_INVALID_URL_SCHEME)`
  }
  if (err.code === 'ERR_INVALID_URL') {
    // The client's message names the URL (redacted); only the generic one is replaced.
    const detail = /^Invalid URL\b/.test(err.message) ? '' : `: ${lowerFirst(err.message.replace(/: \S*$/, ''))}`
    return `invalid URL ${shown}${detail} (ERR_INVALID_URL)`
  }
  return err.code ? `${err.code}: ${err.message}` : err.message
}

// --- Plain words for errors and for why the client stopped --------------------

/** `Connection refused` -> `connection refused`; `TLS ...` stays. */
function lowerFirst(text) {
  return /^[A-Z][a-z]/.test(text) ? text[0].toLowerCase() + text.slice(1) : text
}

/** A client error in a few words: what the user needs, without the code. */
function describeError(err) {
  const message = String(err.message || '')
    .replace(/ \(os error \d+\)/g, '')
    .replace(/ \((?:wss?|https?):\/\/[^\s()]*\)$/, '') // the URL, shown elsewhere
  switch (err.code) {
    case 'ERR_CONNECT':
      if (/refused/i.test(message)) return 'connection refused'
      if (/lookup address|name or service not known|nodename nor servname|no such host|name resolution/i.test(message)) {
        return 'host not found'
      }
      if (/timed out/i.test(message)) return 'timed out'
      return lowerFirst(message) || 'connection failed'
    case 'ERR_CONNECT_TIMEOUT':
      return 'timed out'
    case 'ERR_HANDSHAKE':
      if (typeof err.status === 'number') {
        const text = STATUS_CODES[err.status]
        return `the server answered HTTP ${err.status}${text ? ` ${text}` : ''} instead of upgrading`
      }
      return `bad handshake: ${message}`
    case 'ERR_TLS_CERT':
      // Ours: "the server requires a client certificate" or "... refused our client certificate".
      if (/client certificate/.test(message)) return message.replace(/^TLS handshake failed: /, '').replace(/ \(tls\.cert and tls\.key\)$/, '')
      // (The library's advice names tls.ca; the hint below names --ca.)
      return `certificate rejected: ${message.replace(/^TLS handshake failed: (?:invalid peer certificate: )?/, '').replace(/ \([^()]*tls\.ca[^()]*\)$/, '')}`
    case 'ERR_INTERNAL':
      return `internal error in redial-ws: ${message}`
    default:
      return lowerFirst(message) || err.code || 'unknown error'
  }
}

/** What a user can do about some errors. */
function hint(err) {
  if (!err) return ''
  if (err.code === 'ERR_TLS_CERT' && /client certificate/.test(err.message)) return ' (--cert <file> --key <file> present one)'
  if (err.code === 'ERR_TLS_CERT') return ' (--ca <file> trusts a private CA; --insecure skips the check)'
  // Not as --proxy: a command line is visible to other users (so is the key passphrase's).
  // A SOCKS proxy refused the credentials given, or asked for some: they go in its URL either way.
  if (err.code === 'ERR_PROXY_AUTH' && /^SOCKS proxy: /.test(err.message)) return ' (check the user name and password in the socks5:// URL: socks5://user:pass@host:port in ALL_PROXY or HTTPS_PROXY)'
  if (err.code === 'ERR_PROXY_AUTH') return ' (give the credentials in HTTPS_PROXY or HTTP_PROXY: http://user:pass@host:port)'
  return ''
}

/**
 * The last line before the CLI exits because the client gave up: what happened and
 * why nothing more is tried, from the giveup event's fields.
 */
function stopMessage(ev, { url, noReconnect, wasOpen, lastClose }) {
  let why
  if (ev.lastError) why = oneLine(describeError(ev.lastError))
  else if (lastClose) why = `closed with code ${lastClose.code}${lastClose.reason ? `: ${oneLine(lastClose.reason)}` : ''}`
  else why = 'no reason given'
  const what = wasOpen ? `the connection to ${url} ended` : `could not connect to ${url}`
  if (noReconnect) return `${what} (${why}); not ${wasOpen ? 'reconnecting' : 'retrying'} (--no-reconnect)${hint(ev.lastError)}`
  if (ev.reason === 'policy') return `${what} (${why}); giving up, retrying would not help${hint(ev.lastError)}`
  const plural = ev.attempts === 1 ? '' : 's'
  return `gave up after ${ev.attempts} attempt${plural}: ${why}${hint(ev.lastError)}`
}

// --- Output -------------------------------------------------------------------

/** REDIAL_WS_CLI_TTY=1/0 overrides whether stdout counts as a terminal (for tests and wrappers). */
function terminalOutput() {
  const forced = variable('REDIAL_WS_CLI_TTY')
  if (forced === '1') return true
  if (forced === '0') return false
  return Boolean(process.stdout.isTTY)
}

// C0 and C1 controls other than tab and newline: a message cannot move the cursor,
// recolour or retitle the terminal.
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g
const escapeControl = (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`
// What a server says (a close reason, an error's message) on one line: newlines and tabs too.
const ANY_CONTROL = /[\x00-\x1f\x7f-\x9f]/g
const oneLine = (text) => String(text).replace(ANY_CONTROL, escapeControl)

/** A close that ends a session with success: clean, normal (1000) or with no code (1005). */
const normalClose = (close) => close !== null && close.wasClean && (close.code === 1000 || close.code === 1005)

/** Resolves once what `stream` has queued is written (a pipe's reader may be slower than us). */
function flushed(stream) {
  return new Promise((resolve) => {
    if (stream.destroyed || stream.writableLength === 0) resolve()
    else stream.write('', () => resolve())
  })
}

// How long a signal's exit waits for a reader that has stopped reading stdout.
const SIGNAL_FLUSH_MS = 1_000
// What stdout may hold while the session ends (the client reads on to the server's close): the
// messages beyond it are counted, not printed.
const ENDING_STDOUT_MAX = 8 * 1024 * 1024

/** A received text as shown on a terminal: `< ` first, continuation lines indented. */
function received(text) {
  return `< ${text.replace(CONTROL, escapeControl).replace(/\n/g, '\n  ')}`
}

function main() {
  const { url: input, values } = parseCommandLine(process.argv.slice(2))
  const json = values.json
  const url = normalizeUrl(input)
  const shownUrl = displayUrl(url)

  // The terminal format: markers on messages and sent lines. A prompt and line
  // editing only when both ends are a real terminal.
  const tty = terminalOutput()
  const interactive = tty && Boolean(process.stdin.isTTY) && Boolean(process.stdout.isTTY)
  const dim = process.stderr.isTTY && process.stderr.hasColors() ? (line) => `\x1b[2m${line}\x1b[22m` : (line) => line

  let lines = null // the readline interface, once created
  let prompting = false // a prompt (and maybe a half-typed line) is on screen
  // Writes whole lines without breaking the prompt: clear the line being typed,
  // write, draw the prompt and what was typed again.
  const print = (stream, text) => {
    if (prompting) {
      readline.clearLine(process.stdout, 0)
      readline.cursorTo(process.stdout, 0)
    }
    stream.write(`${text}\n`)
    if (prompting) lines.prompt(true)
  }
  // Server-given text (close reasons, error messages) cannot control the terminal either.
  const note = (line) => print(process.stderr, dim(line.replace(CONTROL, escapeControl)))

  let client
  try {
    client = new ReconnectingWebSocket(url, clientOptions(values))
  } catch (err) {
    usageError(badUrlMessage(input, err))
  }

  let exiting = false
  let lastClose = null
  let unprinted = 0 // messages received while ending that stdout had no room for
  // What stdout and stderr have queued is written first (received messages a pipe's reader has
  // not taken yet would be lost), waiting at most `flushWithin` ms: a signal's exit does not wait
  // for a reader that has stopped, a second Ctrl-C not at all.
  const exit = (code, flushWithin = Infinity) => {
    exiting = true
    if (prompting) {
      // Leave the terminal on a fresh line, without the prompt.
      prompting = false
      readline.clearLine(process.stdout, 0)
      readline.cursorTo(process.stdout, 0)
    }
    if (unprinted > 0) note(`${unprinted} message${unprinted === 1 ? '' : 's'} received while closing not printed: stdout was not taking them`)
    unprinted = 0
    if (flushWithin === 0) process.exit(code)
    if (flushWithin !== Infinity) setTimeout(() => process.exit(code), flushWithin)
    Promise.all([flushed(process.stdout), flushed(process.stderr)]).then(() => process.exit(code))
  }

  // A closed stdout (e.g. `redial-ws url | head -1`) ends the session.
  process.stdout.on('error', () => {
    if (!exiting) client.disconnect().finally(() => exit(1))
  })
  // A closed stderr (`2>&1 | head`): its lines are lost, the session goes on.
  process.stderr.on('error', () => {})

  note(`connecting ${shownUrl}`)
  let connected = false
  let everOpened = false
  let lastWasOpen = false // whether the connection that ended last had been open
  let failure = null // the last error since the last open: the client is retrying
  client.on('open', () => {
    connected = true
    everOpened = true
    failure = null
    note(client.protocol ? `open (protocol ${client.protocol})` : 'open')
  })
  client.on('close', (ev) => {
    lastClose = ev
    lastWasOpen = connected
    // A failed attempt also ends with a close event; its error was shown already.
    if (connected) note(`closed ${ev.code}${ev.reason ? ` ${oneLine(ev.reason)}` : ''}`)
    connected = false
  })
  client.on('reconnecting', (ev) => note(`reconnecting in ${(ev.delay / 1000).toFixed(1)} s (attempt ${ev.attempt})`))
  client.on('error', (err) => {
    failure = err
    note(`error ${err.code}: ${oneLine(err.message)}`)
  })
  client.on('giveup', (ev) => {
    // Nothing is left to do. A clean, normal close by the server (with --no-reconnect) is a success.
    const clean = !ev.lastError && normalClose(lastClose)
    if (!clean) {
      note(stopMessage(ev, { url: shownUrl, noReconnect: values['no-reconnect'], wasOpen: lastWasOpen, lastClose }))
    }
    exit(clean ? 0 : 1)
  })
  // Messages are read no faster than stdout takes them (a pipe to a slow reader)...
  let holdBack = true
  const show = (text) => {
    if (!holdBack && process.stdout.writableLength > ENDING_STDOUT_MAX) {
      unprinted++
      return
    }
    print(process.stdout, text)
    if (holdBack && process.stdout.writableNeedDrain && !client.isPaused) {
      client.pause()
      process.stdout.once('drain', () => client.resume())
    }
  }
  // ...except once the session is ending: a paused client would not read the server's close, and
  // what the server sent before it is printed too (the exit waits for stdout), up to
  // ENDING_STDOUT_MAX held.
  const readToTheClose = () => {
    holdBack = false
    client.resume()
  }
  client.on('message', (data, isBinary) => {
    if (json) {
      const record = isBinary
        ? { type: 'message', data: Buffer.from(data).toString('base64'), binary: true, encoding: 'base64' }
        : { type: 'message', data, binary: false }
      show(JSON.stringify(record))
    } else if (isBinary) {
      show(`${tty ? '< ' : ''}<binary ${data.byteLength} bytes>`)
    } else {
      show(tty ? received(data) : data)
    }
  })

  let interrupted = false
  const interrupt = (signal, code) => {
    if (interrupted || exiting) exit(code, 0) // a second Ctrl-C does not wait
    interrupted = true
    note(`${signal}: disconnecting`)
    readToTheClose()
    client.disconnect().finally(() => exit(code, SIGNAL_FLUSH_MS))
  }
  process.on('SIGINT', () => interrupt('SIGINT', 130))
  process.on('SIGTERM', () => interrupt('SIGTERM', 143))

  // Every line is handed to send(): while the connection is down it is queued
  // by the client. Only a full offline queue makes us wait for the next open.
  const send = async (line) => {
    for (;;) {
      try {
        client.send(line)
        // Typed lines are on screen already, after the prompt; piped ones are shown.
        if (tty && !interactive) print(process.stdout, `> ${line}`)
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

  lines = readline.createInterface({
    input: process.stdin,
    output: interactive ? process.stdout : undefined,
    terminal: interactive,
    prompt: '> ',
    crlfDelay: Infinity,
  })
  if (interactive) {
    // In raw mode Ctrl-C reaches readline, not the process.
    lines.on('SIGINT', () => interrupt('SIGINT', 130))
    lines.on('close', () => {
      // Ctrl-D (on an empty line): the prompt goes, what follows starts on its line.
      if (prompting) {
        prompting = false
        readline.clearLine(process.stdout, 0)
        readline.cursorTo(process.stdout, 0)
      }
    })
    prompting = true
    lines.prompt()
  }
  ;(async () => {
    for await (const line of lines) {
      if (exiting || interrupted) return
      await send(line)
      if (prompting) lines.prompt()
    }
    if (exiting || interrupted) return
    // The first attempt's outcome is the exit status (`</dev/null` checks that the server takes the
    // connection): input that ends before it waits for it. Cut short, an attempt the addon had
    // already seen fail would go unreported, and the exit be 0 or 1 by which JS saw first.
    const firstAttempt = !everOpened && failure === null && lastClose === null && client.state === 'connecting'
    if (firstAttempt || (client.metrics.queuedMessages > 0 && (client.state === 'connecting' || client.state === 'reconnecting'))) {
      // Lines wait for an open: let the next attempt (now) make it, so that what the server
      // answers them is shown; a connection opened by the disconnect() below is not reported.
      if (client.state === 'reconnecting') client.connect()
      await new Promise((resolve) => {
        const events = ['open', 'error', 'giveup']
        const done = () => {
          for (const event of events) client.off(event, done)
          resolve()
        }
        for (const event of events) client.on(event, done)
      })
      if (exiting || interrupted) return
    }
    // End of input: write what is still queued (connecting if needed, within
    // the close deadline), close with 1000 and exit once nothing is running.
    const before = lastClose
    lastClose = null
    readToTheClose()
    const { discarded } = await client.disconnect(1000, '', { flush: true })
    if (discarded > 0) note(`${discarded} queued message${discarded === 1 ? '' : 's'} could not be sent`)
    let clean = discarded === 0
    if (failure !== null && (lastClose === null || !lastClose.wasClean)) {
      // Ended while retrying (waiting, or with an attempt cut short): the last attempt failed. With
      // --no-reconnect nothing was retried: that failure ended the run, as its giveup would say.
      const noReconnect = values['no-reconnect']
      const stop = { lastError: failure }
      note(noReconnect ? stopMessage(stop, { url: shownUrl, noReconnect, wasOpen: lastWasOpen, lastClose }) : `input ended while retrying: ${oneLine(describeError(failure))}${hint(failure)}`)
      clean = false
    } else if (lastClose !== null && (lastClose.wasClean || lastWasOpen)) {
      clean &&= lastClose.wasClean
    } else if (before !== null && !normalClose(before)) {
      // Ended while reconnecting after the server's close (waiting, or an attempt cut short by that
      // disconnect(), whose close is 1006): clean only if that was a normal close, as with
      // --no-reconnect. (The first attempt cut short failed nothing.)
      note(`input ended while reconnecting: the server had closed the connection with code ${before.code}${before.reason ? `: ${oneLine(before.reason)}` : ''}`)
      clean = false
    }
    exit(clean ? 0 : 1)
  })().catch((err) => {
    note(`redial-ws: ${err.stack || err}`)
    exit(1)
  })
}

main()
