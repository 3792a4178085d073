'use strict'
// What a client tells observers other than its own listeners: diagnostics_channel
// for APM tools and NODE_DEBUG=redial-ws. Nothing is built when nobody listens, and
// no URL is logged with its password or its query (a token as often as not), as error messages show it.

const diagnostics = require('node:diagnostics_channel')
const { debuglog } = require('node:util')
const { redactInput } = require('./errors')

// Subscribers get `{ client, ...event }`.
const channels = {
  open: diagnostics.channel('redial-ws:open'),
  close: diagnostics.channel('redial-ws:close'),
  reconnecting: diagnostics.channel('redial-ws:reconnecting'),
  error: diagnostics.channel('redial-ws:error'),
  giveup: diagnostics.channel('redial-ws:giveup'),
}

const debug = debuglog('redial-ws')

// Fixed arguments rather than a rest array: called on every event, and usually disabled.
function trace(url, what, a, b) {
  if (!debug.enabled) return
  debug('%s %s', redactInput(url), [what, a, b].filter((v) => v !== undefined).join(' '))
}

/** Whether NODE_DEBUG=redial-ws logs. */
function tracing() {
  return debug.enabled
}

module.exports = { channels, trace, tracing }
