'use strict'
// The server's answer to the upgrade, for the `upgrade` event: the head the addon read (status
// line and header lines, one Latin-1 character per byte, as Node reads HTTP), shaped like the
// fields of Node's `http.IncomingMessage` that `ws`'s `upgrade` listeners read; and the headers of
// a refusal (`err.headers`, `shouldReconnect`'s info) as Node builds `headers`.

// Node keeps the first of these when a response repeats them (`IncomingMessage#headers`).
const FIRST_ONLY = new Set([
  'age',
  'authorization',
  'content-length',
  'content-type',
  'etag',
  'expires',
  'from',
  'host',
  'if-modified-since',
  'if-unmodified-since',
  'last-modified',
  'location',
  'max-forwards',
  'proxy-authorization',
  'referer',
  'retry-after',
  'server',
  'user-agent',
])

/** A header value without the spaces and tabs around it (HTTP's OWS), as Node's parser trims it: not U+00A0. */
function trimWhitespace(value) {
  let start = 0
  let end = value.length
  while (start < end && (value[start] === ' ' || value[start] === '\t')) start++
  while (end > start && (value[end - 1] === ' ' || value[end - 1] === '\t')) end--
  return value.slice(start, end)
}

/**
 * `headers` from `rawHeaders` (names and values in turn) as Node builds them (`IncomingMessage`'s
 * `_addHeaderLine`): a plain object, names lower-cased, `set-cookie` an array, a repeated header
 * joined with ', ' (`cookie` with '; ') unless only its first value counts. As there, a name that
 * is an Object.prototype member is an own property (`constructor`) or dropped (`__proto__`).
 */
function headersFrom(rawHeaders) {
  const headers = {}
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const key = rawHeaders[i].toLowerCase()
    const value = rawHeaders[i + 1]
    if (key === 'set-cookie') {
      if (headers[key] === undefined) headers[key] = [value]
      else headers[key].push(value)
    } else if (FIRST_ONLY.has(key)) {
      if (headers[key] === undefined) headers[key] = value
    } else if (typeof headers[key] === 'string') headers[key] += `${key === 'cookie' ? '; ' : ', '}${value}`
    else headers[key] = value
  }
  return headers
}

/**
 * `{ statusCode, statusMessage, httpVersion, headers, rawHeaders }` of a response head the addon
 * has already parsed and checked (so the status line and every header line are well formed).
 */
function parseResponseHead(head) {
  const lines = head.split(/\r?\n/)
  const status = /^HTTP\/(\d\.\d) (\d{3})(?: (.*))?$/.exec(lines[0])
  const rawHeaders = []
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]
    if (line === '') continue
    const colon = line.indexOf(':')
    if (colon <= 0) continue
    rawHeaders.push(line.slice(0, colon), trimWhitespace(line.slice(colon + 1)))
  }
  return {
    statusCode: status ? Number(status[2]) : 101,
    statusMessage: status?.[3] ?? '',
    httpVersion: status ? status[1] : '1.1',
    headers: headersFrom(rawHeaders),
    rawHeaders,
  }
}

module.exports = { parseResponseHead, headersFrom }
