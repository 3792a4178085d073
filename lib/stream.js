'use strict'
// `createWebSocketStream(client)`: ws's helper of the same name, a Duplex over a client's
// messages, with backpressure both ways. It lasts as long as the client does, across reconnects:
// it ends when the client closes for good, not when one connection drops.

const { Duplex } = require('node:stream')
const { makeError, gaveUpError } = require('./errors')

/**
 * Readable side: each message is a chunk (text as UTF-8 bytes, or a string in
 * `readableObjectMode`); past the readable high-water mark the client stops reading the socket
 * (`control.pause`) until the stream is read again. While the stream wants data it keeps the
 * client alive between connections (`control.hold`), as a pending `messages()` read does. It ends
 * when the client is disconnected, or gives up after a connection that closed cleanly; a giveup
 * after anything else fails it with ERR_GAVE_UP (the last error as `cause`). Made
 * before the client's first connect(), it waits for it; made on a client that had already ended,
 * its first read ends it unless connect() came first.
 *
 * Writable side: each chunk is one message, `send(chunk, callback)`: the next is taken once the
 * socket has the previous one (queued while reconnecting); a message that will never be sent, or
 * a `send()` that throws, fails the stream. Ending it disconnects the client; destroying it
 * terminates the client.
 */
function webSocketStream(client, control, options) {
  const duplex = new Duplex({
    ...options,
    autoDestroy: true,
    emitClose: true,
    objectMode: false,
    writableObjectMode: false,
  })
  let finished = false
  // How the client had ended when the stream was made (null if it had not): until connect() is
  // called again, the first read ends the stream (no event will).
  let endedAtStart = control.ended()
  // The last connection closed with a close handshake, not to be retried: a giveup after it ends the stream.
  let closedCleanly = false
  const onMessage = (data, isBinary) => {
    if (isBinary && data instanceof Blob && !duplex.readableObjectMode) {
      // A Blob's bytes come only asynchronously: they cannot keep their place in a byte stream.
      release()
      return void duplex.destroy(makeError('ERR_INVALID_STATE', "binaryType 'blob' delivers Blobs: read the stream with readableObjectMode, or use another binaryType"))
    }
    if (!duplex.push(chunkOf(data, isBinary, duplex.readableObjectMode))) {
      control.hold(false)
      control.pause(true)
    }
  }
  const onClose = (ev) => {
    closedCleanly = !ev.willReconnect && ev.wasClean
    // Closed for good without disconnect(): the client gave up, and its giveup event follows.
    if (!ev.willReconnect && control.closedForGood() && control.disconnecting()) end()
  }
  const onGiveUp = (ev) => {
    if (finished) return
    // As ws's stream ends on a close: every message the server sent before its close was read.
    if (control.disconnecting() || (closedCleanly && !ev.lastError)) return end()
    release()
    duplex.destroy(gaveUpError(ev))
  }
  let offClosed = null
  const release = () => {
    if (finished) return
    finished = true
    client.off('message', onMessage)
    client.off('close', onClose)
    client.off('giveup', onGiveUp)
    offClosed?.()
    control.pause(false)
    control.hold(false)
  }
  const end = () => {
    release()
    duplex.push(null)
  }
  client.on('message', onMessage)
  client.on('close', onClose)
  client.on('giveup', onGiveUp)
  // A disconnect() during a backoff wait ends the client with no close event.
  offClosed = control.onClosed(end)

  duplex._read = () => {
    if (finished) return
    if (endedAtStart !== null) {
      const same = control.ended() === endedAtStart
      endedAtStart = null
      if (same) return end()
    }
    control.pause(false)
    control.hold(true)
  }
  duplex._write = (chunk, _encoding, callback) => {
    try {
      client.send(chunk, callback)
    } catch (err) {
      callback(err)
    }
  }
  duplex._final = (callback) => {
    client.disconnect().then(() => callback(), callback)
  }
  duplex._destroy = (err, callback) => {
    release()
    if (control.closedForGood() && !control.active()) return callback(err)
    client.terminate().then(
      () => callback(err),
      () => callback(err),
    )
  }
  return duplex
}

/** A message as a chunk of the readable side: bytes, or in object mode text as a string (and a Blob as itself). */
function chunkOf(data, isBinary, objectMode) {
  if (!isBinary) return objectMode ? data : Buffer.from(data)
  if (Buffer.isBuffer(data) || data instanceof Blob) return data
  if (Array.isArray(data)) return Buffer.concat(data) // binaryType 'fragments'
  if (data instanceof ArrayBuffer) return Buffer.from(data)
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength)
}

module.exports = { webSocketStream }
