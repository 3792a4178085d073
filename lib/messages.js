'use strict'
// `client.messages()`: an async iterator over a client's messages, with
// backpressure down to the socket.

// What a buffered message counts for `highWaterMarkBytes`: its bytes (a string, its length).
const { sizeOf } = require('./backlog')
const { makeError, gaveUpError } = require('./errors')

/**
 * Past `highWaterMark` buffered messages, or `highWaterMarkBytes` buffered
 * bytes, the iterator asks the client to stop reading the socket
 * (`control.pause(true)`) until the consumer has taken half of them (both
 * back at or below half their mark). A pending `next()` keeps the client alive
 * (`control.hold(true)`), also between connections; several pending `next()`
 * calls are settled in the order they were made. The iteration ends when the
 * client closes for good (`control.closedForGood()`): disconnected, or given up
 * after a clean close; any other giveup rejects the `next()` after the last
 * message received with ERR_GAVE_UP (as createWebSocketStream fails), and the
 * iteration is done after it. A `next()` on a client that had already ended (and was not
 * connected again since) ends it at once, as `opened()` rejects at once, while
 * one before the first `connect()` waits for it.
 */
function messageIterator(client, control, highWaterMark = 1024, highWaterMarkBytes = 16 * 1024 * 1024) {
  checkMark('highWaterMark', highWaterMark)
  checkMark('highWaterMarkBytes', highWaterMarkBytes)
  const buffer = []
  let bufferedBytes = 0
  /** Pending next() calls' `{ resolve, reject }`, oldest first. */
  const waiters = []
  let ended = false
  // How the client had ended when the iterator was made (null if it had not): until connect()
  // is called again, the first read ends the iteration (no event will).
  let endedAtStart = control.ended()
  const settle = (result) => {
    const { resolve } = waiters.shift()
    if (waiters.length === 0) control.hold(false)
    resolve(result)
  }
  const onMessage = (data) => {
    if (waiters.length > 0) return settle({ value: data, done: false })
    buffer.push(data)
    bufferedBytes += sizeOf(data)
    if (buffer.length >= highWaterMark || bufferedBytes >= highWaterMarkBytes) control.pause(true)
  }
  // The last connection closed with a close handshake, not to be retried: a giveup after it ends the iteration.
  let closedCleanly = false
  // The error of a giveup, for the next() after the buffered messages (then null: done).
  let failure = null
  const onClose = (ev) => {
    closedCleanly = !ev.willReconnect && ev.wasClean
    // Closed for good by disconnect(). Otherwise the client gave up, and a giveup listener may
    // connect() again: its giveup event (`onGiveUp`) decides.
    if (!ev.willReconnect && control.closedForGood() && control.disconnecting()) finish()
  }
  const onGiveUp = (ev) => {
    if (!control.closedForGood()) return
    finish(control.disconnecting() || (closedCleanly && !ev.lastError) ? null : gaveUpError(ev))
  }
  let offMessage = null
  let offClose = null
  let offClosed = null
  let offGaveUp = null
  const finish = (err = null) => {
    if (ended) return
    ended = true
    offMessage?.()
    offClose?.()
    offGaveUp?.()
    offClosed?.()
    control.pause(false)
    // Pending next() calls mean nothing is buffered: the first gets the error.
    failure = err
    while (waiters.length > 0) {
      if (failure === null) settle({ value: undefined, done: true })
      else {
        const reject = waiters.shift().reject
        if (waiters.length === 0) control.hold(false)
        reject(failure)
        failure = null
      }
    }
  }
  offMessage = control.onMessage(onMessage)
  offClose = control.onClose(onClose)
  offGaveUp = control.onGaveUp(onGiveUp)
  // A disconnect() during a backoff wait ends the client with no close event; one that a giveup
  // listener made passes that giveup, which the readers hear of only after it.
  offClosed = control.onClosed((giveup) => (giveup ? onGiveUp(giveup) : finish()))
  return {
    next: () => {
      if (buffer.length) {
        const value = buffer.shift()
        bufferedBytes -= sizeOf(value)
        if (buffer.length <= highWaterMark >> 1 && bufferedBytes <= highWaterMarkBytes / 2) control.pause(false)
        return Promise.resolve({ value, done: false })
      }
      if (endedAtStart !== null) {
        // The same end as when the iterator was made: no connect() came since.
        if (control.ended() === endedAtStart) finish()
        endedAtStart = null
      }
      if (ended) {
        const err = failure
        failure = null
        return err === null ? Promise.resolve({ value: undefined, done: true }) : Promise.reject(err)
      }
      control.hold(true)
      return new Promise((resolve, reject) => waiters.push({ resolve, reject }))
    },
    return: () => {
      finish()
      failure = null
      buffer.length = 0
      bufferedBytes = 0
      return Promise.resolve({ value: undefined, done: true })
    },
    [Symbol.asyncIterator]() {
      return this
    },
  }
}

function checkMark(name, value) {
  if (!Number.isInteger(value) || value < 1) {
    throw makeError('ERR_OUT_OF_RANGE', `${name} must be an integer >= 1. Received ${String(value)}`, RangeError)
  }
}

module.exports = { messageIterator }
