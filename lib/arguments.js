'use strict'
// The arguments of `send()` and `disconnect()`, checked as `ws` checks them.

const { isAnyArrayBuffer } = require('node:util').types
const { makeError, optionTypeError: typeError } = require('./errors')
const { utf8 } = require('./utf8')

/**
 * The close codes an endpoint may send, as `ws` allows them: 1000-1014 but 1004, 1005 and 1006
 * (RFC 6455, section 7.4.1: reserved, or never sent), and 3000-4999 (registered and private).
 */
function sendableCloseCode(code) {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999)
}

/**
 * A Buffer over the bytes of a Buffer, any ArrayBufferView, an ArrayBuffer or a SharedArrayBuffer,
 * as ws takes them (not copied), or null for anything else. `what` (e.g. 'send()') names the caller
 * in the error for a detached buffer, whose bytes are gone.
 */
function bytesOf(data, what) {
  if (Buffer.isBuffer(data)) return data
  const view = ArrayBuffer.isView(data)
  if (!view && !isAnyArrayBuffer(data)) return null
  try {
    return view ? Buffer.from(data.buffer, data.byteOffset, data.byteLength) : Buffer.from(data)
  } catch (cause) {
    throw makeError('ERR_INVALID_ARG_TYPE', `${what} cannot read a detached ArrayBuffer`, TypeError, { cause })
  }
}

/**
 * Checks `disconnect()`'s code and reason (a string, or UTF-8 bytes as `ws` takes them); returns
 * the reason as a string.
 */
function checkClose(code, reason) {
  if (typeof code !== 'number' || !Number.isInteger(code) || !sendableCloseCode(code)) {
    throw makeError('ERR_INVALID_CLOSE_CODE', `The close code must be 1000-1014 (but 1004-1006) or in 3000-4999. Received ${String(code)}`, RangeError)
  }
  if (typeof reason !== 'string') {
    if (!ArrayBuffer.isView(reason)) throw makeError('ERR_INVALID_ARG_TYPE', 'The close reason must be a string or a Buffer', TypeError)
    try {
      reason = utf8.decode(reason)
    } catch {
      throw makeError('ERR_INVALID_CLOSE_REASON', 'The close reason must be valid UTF-8', SyntaxError)
    }
  }
  if (Buffer.byteLength(reason) > 123) {
    throw makeError('ERR_INVALID_CLOSE_REASON', 'The close reason must be at most 123 bytes of UTF-8', SyntaxError)
  }
  return reason
}

const SEND_OPTIONS = ['binary', 'compress', 'fin', 'mask']

/** Checks `send()`'s options object (undefined and null pass); returns it. */
function checkSendOptions(options) {
  if (options === undefined || options === null) return {}
  if (typeof options !== 'object' || Array.isArray(options)) throw typeError('send() options', 'an object', options)
  for (const key of Object.keys(options)) {
    if (!SEND_OPTIONS.includes(key)) throw makeError('ERR_UNKNOWN_OPTION', `Unknown send() option "${key}" (known: ${SEND_OPTIONS.join(', ')})`, TypeError)
  }
  const { binary, compress, fin, mask } = options
  for (const [name, value] of [['binary', binary], ['compress', compress], ['fin', fin], ['mask', mask]]) {
    if (value !== undefined && typeof value !== 'boolean') throw typeError(`send() option ${name}`, 'a boolean', value)
  }
  if (mask === false) throw makeError('ERR_INVALID_ARG_VALUE', 'send() option mask: false is not allowed: a client masks every frame (RFC 6455)', TypeError)
  return options
}

/**
 * `send(data, options)` in `ws`'s shape: `binary` picks the frame type (a string as binary; bytes
 * as text if they are UTF-8), `mask: true` is accepted (a client masks every frame). `compress`
 * and `fin: false` are the client's to handle (lib/client.js, lib/fragments.js). What cannot be honoured is refused, not ignored: `mask: false`. Returns the
 * data to send (the callback is the client's: lib/client.js).
 */
function withSendOptions(data, options) {
  // A wrapper that forwards optional options passes undefined (or null, which ws takes too).
  if (options === undefined || options === null) return data
  const { binary } = checkSendOptions(options)
  if (binary === true && typeof data === 'string') return Buffer.from(data)
  if (binary === false && typeof data !== 'string') {
    const bytes = bytesOf(data, 'send()')
    if (bytes === null) return data // send() reports the type
    try {
      return utf8.decode(bytes)
    } catch {
      throw makeError('ERR_INVALID_ARG_VALUE', 'send() option binary: false needs data that is valid UTF-8 text', TypeError)
    }
  }
  return data
}

module.exports = { bytesOf, checkClose, checkSendOptions, withSendOptions }
