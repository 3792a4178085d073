'use strict'
// `createWebSocketStream(client)`: ws's helper of the same name, a Duplex over a client's
// messages, with backpressure both ways. It lasts as long as the client does, across reconnects:
// it ends when the client closes for good, not when one connection drops.

const { Duplex } = require('node:stream')
const { makeError, gaveUpError, notSent } = require('./errors')

/**
 * Readable side: each message is a chunk (text as UTF-8 bytes, or a string in
 * `readableObjectMode`); past the readable high-water mark the client stops reading the socket
 * (`control.pause`) until the stream is read again. While the stream wants data it keeps the
 * client alive between connections (`control.hold`), as a pending `messages()` read does, and so
 * does a write waiting for the next open (`control.keep`). It ends
 * when the client is disconnected, or gives up after a connection that closed cleanly; a giveup
 * after anything else fails it with ERR_GAVE_UP (the last error as `cause`), once the messages
 * received before it are read. Made before the
 * client's first connect(), it waits for it; made on a client that had already ended, its first
 * read ends it unless connect() came first.
 *
 * Writable side: each chunk is one message, `send(chunk, callback)`. The chunks the stream has
 * buffered are sent together (`_writev`), and the write completes once the socket has the last of
 * them. Once one does not go to an open connection (the connection may have ended before JS has
 * seen it end) they go one at a time, each once the previous one is settled (so that the stream
 * does not fill the offline queue with its own messages, which a 'drop-oldest' queue would push
 * out, nor send past one that a dropped connection refused), and a chunk the offline queue
 * refuses (`queue: false`, or over its bounds), or that a connection dropped before JS saw it
 * drop, waits for the next open, as ws's stream waits for a connecting socket. A write fails only
 * when its message will never be sent: the client gave up (ERR_GAVE_UP) or disconnect() discarded
 * it (ERR_NOT_SENT), or a `send()` failed otherwise (a 'drop-oldest' queue given back more by a
 * dropped connection than it holds). Ending the stream disconnects the client (one connecting or
 * waiting to reconnect once it has opened, as a write waits); destroying it
 * terminates the client (one that had given up: what the stream wrote into its offline queue is
 * discarded, so that no failed write goes out on a later connect()). A giveup listener that calls
 * connect() keeps the stream going, as it keeps opened() waiting; once the stream has ended with
 * the client (or a giveup failed it), a connect() since is the application's: neither ending nor
 * destroying the stream acts on the client then.
 */
function webSocketStream(client, control, options) {
  const duplex = new Duplex({
    ...options,
    autoDestroy: true,
    emitClose: true,
    objectMode: false,
    writableObjectMode: false,
  })

  // Readable side.
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
    gaveUp = gaveUpError(ev)
    if (duplex.readableLength === 0) return void duplex.destroy(gaveUp)
    // Messages received before the giveup wait to be read: the stream fails once they are
    // (destroying it now would discard them). Its writes fail now, as a destroy would fail them,
    // their callbacks held until then (a write's error destroys a stream); what it wrote into the
    // offline queue is discarded, so that a later connect() does not send a write that failed.
    failure = gaveUp
    // Streams emit no 'removeListener' (Node's shape mode): the ways a reader leaves are watched.
    for (const name of ['removeListener', 'off', 'removeAllListeners']) {
      const remove = duplex[name]
      duplex[name] = function (...args) {
        const result = remove.apply(this, args)
        readerLeft()
        return result
      }
    }
    if (batch !== null) complete(batch, gaveUp)
    control.discardSent(unsettled)
    const read = duplex.read
    // Every way of consuming a Readable (flowing, 'readable', async iteration, pipe) takes its chunks through read().
    duplex.read = function (n) {
      // A sized read past what is left gets the rest, as from a stream that has ended.
      const chunk = read.call(this, failure !== null && n > this.readableLength ? undefined : n)
      if (failure !== null && this.readableLength === 0) {
        const err = failure
        failure = null
        // After the chunk's 'data' or the iterator's step: the error follows the last message.
        process.nextTick(() => this.destroy(err))
      }
      return chunk
    }
  }
  /** Whether the readable side has a consumer: 'data' (pipe(), flowing reads) or 'readable' (read() loops, async iteration). */
  const hasReader = () => duplex.listenerCount('data') > 0 || duplex.listenerCount('readable') > 0
  // A reader that goes (unpipe(), an iterator left) while write callbacks are held for it: nothing
  // would release them; the stream fails now.
  const readerLeft = () => {
    if (failure === null || held.length === 0) return
    process.nextTick(() => {
      if (failure !== null && held.length > 0 && !hasReader()) duplex.destroy(failure)
    })
  }
  // The giveup's error once one has failed the stream: later writes fail with it, and the stream
  // no longer acts on the client (a connect() since is the application's).
  let gaveUp = null
  // That error while it waits for the buffered messages to be read, and the write callbacks held meanwhile.
  let failure = null
  const held = []
  let offMessage = null
  let offClose = null
  let offClosed = null
  let offGaveUp = null
  const release = () => {
    if (finished) return
    finished = true
    offMessage?.()
    offClose?.()
    offGaveUp?.()
    offClosed?.()
    control.pause(false)
    control.hold(false)
  }
  // The readable side ended with the client (disconnected, or a giveup after a clean close): once
  // a connect() has come since, the stream no longer acts on the client (Node's own clean-up of
  // the finished stream, an iterator's destroy() or allowHalfOpen's end(), must not close the
  // application's next connection), as after a giveup that failed it.
  let endedWithClient = false
  const connectedSince = () => endedWithClient && control.ended() === null && !control.disconnecting()
  const end = () => {
    release()
    endedWithClient = true
    duplex.push(null)
  }
  offMessage = control.onMessage(onMessage)
  offClose = control.onClose(onClose)
  offGaveUp = control.onGaveUp(onGiveUp)
  // A disconnect() during a backoff wait ends the client with no close event; one that a giveup
  // listener made passes that giveup, which the readers hear of only after it.
  offClosed = control.onClosed((giveup) => (giveup ? onGiveUp(giveup) : end()))

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

  // Writable side. `batch`: the write under way, `{ chunks, callback, sent, outstanding,
  // oneAtATime, closedFrom, closedAt, closed, error }` (`sent`: how many of its chunks went to
  // send(); `outstanding`: how many of those await their callback; `oneAtATime`: the last one sent
  // did not go to an open connection; `closedFrom`: the earliest chunk a dropped connection
  // returned, `closedAt` the opens seen when it was sent, `closed` the errors of all it returned;
  // `error`: the first other error), or null.
  let batch = null
  // The open events JS has seen while a batch was under way (counted only then: a stream that is
  // not written to adds no listener that would keep it as long as its client).
  let opens = 0
  const countOpen = () => opens++
  // The listeners of a batch waiting for the client to open (a function removing them), or null.
  let unblock = null
  // The callbacks of the messages handed to send() and not yet settled (any batch's).
  const unsettled = new Set()
  let offWriteGiveUp = null
  let offCountOpens = null
  const onWriteGiveUp = (ev) => {
    if (batch !== null) complete(batch, gaveUpError(ev))
  }
  /** The client will open again without a connect() from here (neither ended nor disconnecting). */
  const mayOpen = () => control.ended() === null && !control.disconnecting()
  const startBatch = (chunks, callback) => {
    const b = { chunks, callback, sent: 0, outstanding: 0, oneAtATime: false, closedFrom: -1, closedAt: 0, closed: null, error: null }
    batch = b
    // A giveup leaves queued messages queued (for a later connect()): their callbacks would not come.
    offWriteGiveUp = control.onGaveUp(onWriteGiveUp)
    offCountOpens = control.onOpened(countOpen)
    return b
  }
  const write = (chunks, callback) => {
    const b = startBatch(chunks, callback)
    if (gaveUp !== null) return complete(b, gaveUp)
    pump(b)
  }
  const pump = (b) => {
    const { chunks } = b
    while (b.sent < chunks.length) {
      if (b.outstanding > 0 && b.oneAtATime) return
      const i = b.sent
      const at = opens
      const sent = (err) => {
        unsettled.delete(sent)
        settle(b, i, at, err)
      }
      try {
        b.oneAtATime = !control.sendChunk(chunks[i], sent)
        unsettled.add(sent)
      } catch (err) {
        const failed = refused(err)
        return failed === null ? block(b) : complete(b, failed)
      }
      b.sent++
      b.outstanding++
    }
    if (b.outstanding === 0) complete(b, null)
  }
  /**
   * What a chunk send() refused makes of the batch: an error, or null when the chunk waits for
   * the next open. (A chunk held behind a Blob gets this refusal as its callback's error.)
   */
  const refused = (err) => {
    // The client is connecting (or not yet started): the chunk waits for the next open.
    if ((err.code === 'ERR_NOT_OPEN' || err.code === 'ERR_QUEUE_FULL') && mayOpen()) return null
    if (err.code === 'ERR_NOT_OPEN') {
      // Written once the client gave up (and no connect() came since): failed as the writes it found waiting.
      const ended = control.ended()
      if (ended !== null && ended !== 'disconnected') return gaveUpError(ended.giveup)
      // Written once disconnect() was called or completed: discarded as the writes it found waiting are.
      if (ended === 'disconnected' || control.disconnecting()) return notSent('discarded')
    }
    return err
  }
  const settle = (b, i, at, err) => {
    if (b !== batch) return
    b.outstanding--
    if (err) {
      const refusal = err.code === 'ERR_NOT_OPEN' || err.code === 'ERR_QUEUE_FULL'
      if (refusal ? refused(err) === null : err.code === 'ERR_NOT_SENT' && err.reason === 'closed' && mayOpen()) {
        // The connection went away before JS saw it (with `queue: false`): sent again on the next one.
        if (b.closedFrom < 0 || i < b.closedFrom) [b.closedFrom, b.closedAt] = [i, at]
        ;(b.closed ??= []).push(err)
      } else {
        b.error ??= refusal ? refused(err) : err
      }
    }
    if (b.outstanding > 0) return
    if (b.error !== null) return complete(b, b.error)
    if (b.closed !== null) {
      // Sent again only if nothing after them went out: the server gets the messages in order.
      if (b.closed.length !== b.sent - b.closedFrom) return complete(b, b.closed[0])
      b.sent = b.closedFrom
      b.closedFrom = -1
      b.closed = null
      // Once the connection after the one that refused them is open (JS may have seen it open
      // already, as the last callbacks came after its open event).
      if (unblock !== null) return
      return opens > b.closedAt && client.state === 'open' ? pump(b) : block(b)
    }
    if (unblock === null) pump(b)
  }
  const block = (b) => {
    if (unblock !== null) return
    const onOpen = () => {
      unblock()
      pump(b)
    }
    const offDisconnected = control.onClosed(() => complete(b, notSent('discarded')))
    const offOpened = control.onOpened(onOpen)
    // The write's callback waits for that open: the client stays alive between connections for
    // it, as for a pending read (its reconnect would otherwise end with the client, unreferenced).
    control.keep(true)
    unblock = () => {
      unblock = null
      offOpened()
      offDisconnected()
      control.keep(false)
    }
  }
  const complete = (b, err = null) => {
    if (b !== batch) return
    batch = null
    offWriteGiveUp()
    offCountOpens()
    unblock?.()
    // Held only while the readable side has a consumer ('data' for pipe() and flowing reads,
    // 'readable' for read() loops and async iteration) that will take what is left; with none
    // (a stream that is only written to), it fails now, and the unread messages with it.
    if (err !== null && failure !== null && hasReader()) {
      return void held.push(() => b.callback(err))
    }
    b.callback(err)
  }
  duplex._write = (chunk, _encoding, callback) => write([chunk], callback)
  duplex._writev = (entries, callback) => {
    const chunks = new Array(entries.length)
    for (let i = 0; i < entries.length; i++) chunks[i] = entries[i].chunk
    write(chunks, callback)
  }
  duplex._final = (callback) => {
    // A stream a giveup failed, or that ended with the client, no longer acts on the client (a connect() since is the application's).
    if (gaveUp !== null || connectedSince()) return callback()
    const disconnect = () => client.disconnect().then(() => callback(), callback)
    if (!(client.state === 'connecting' || client.state === 'reconnecting') || !mayOpen()) return disconnect()
    // A connection on its way: as ws's stream waits for a connecting socket, the end waits for it
    // to open (a write of nothing), then closes it; a giveup first fails the stream, as it fails a
    // write (a server never reached is reported); a disconnect() meanwhile ends it.
    const settled = (err) => {
      // destroy() terminates the client itself.
      if (duplex.destroyed) return callback(err)
      if (err === null || err.code === 'ERR_NOT_SENT') return disconnect()
      callback(err)
    }
    block(startBatch([], settled))
  }
  duplex._destroy = (err, callback) => {
    release()
    failure = null
    for (const heldCallback of held.splice(0)) heldCallback()
    if (batch !== null) {
      // A write waiting for the next open (or with nothing out): the client is terminated, its message discarded.
      if (unblock !== null || batch.outstanding === 0) complete(batch, err ?? notSent('discarded'))
      else {
        // Messages handed to send() are settled by the terminate() below as they fared (written
        // ones with null); the rest of the batch is not sent, which fails the write.
        if (batch.sent < batch.chunks.length) batch.error ??= err ?? notSent('discarded')
        batch.chunks.length = batch.sent
      }
    }
    if (gaveUp !== null || connectedSince() || (control.closedForGood() && !control.active())) {
      // A client that gave up keeps its queue for a later connect(): what the stream wrote there,
      // failed, must not go out then (the application's own messages stay).
      control.discardSent(unsettled)
      return callback(err)
    }
    client.terminate().then(
      () => callback(err),
      () => callback(err),
    )
  }
  return duplex
}

/**
 * A message as a chunk of the readable side: bytes, or in object mode the message as the client's
 * `binaryType` delivers it, as ws's stream passes it on (text as a string).
 */
function chunkOf(data, isBinary, objectMode) {
  if (objectMode) return data
  if (!isBinary) return Buffer.from(data)
  if (Buffer.isBuffer(data) || data instanceof Blob) return data
  if (Array.isArray(data)) return Buffer.concat(data) // binaryType 'fragments'
  if (data instanceof ArrayBuffer) return Buffer.from(data)
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength)
}

module.exports = { webSocketStream }
