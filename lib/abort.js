'use strict'
// The `signal` option's listeners: one 'abort' listener per AbortSignal, however many clients
// listen to it. A signal shared by a fleet raises no MaxListenersExceededWarning, and holds its
// clients weakly: a client collected without disconnect() leaves nothing on it.

/** AbortSignal -> `{ members, onAbort }`: the clients listening (WeakRefs) and the one listener. */
const bySignal = new WeakMap()
/** A collected client leaves its signal's members. */
const collected = new FinalizationRegistry(({ signal, ref }) => leave(signal, ref))

/**
 * Calls `client.disconnect()` when `signal` aborts (unless the client was collected first).
 * Returns the function that stops listening.
 */
function onAbortDisconnect(signal, client) {
  let entry = bySignal.get(signal)
  if (entry === undefined) {
    const members = new Set()
    const onAbort = () => {
      bySignal.delete(signal)
      for (const ref of members) ref.deref()?.disconnect()
    }
    entry = { members, onAbort }
    bySignal.set(signal, entry)
    signal.addEventListener('abort', onAbort, { once: true })
  }
  const ref = new WeakRef(client)
  entry.members.add(ref)
  const token = {}
  collected.register(client, { signal, ref }, token)
  return () => {
    collected.unregister(token)
    leave(signal, ref)
  }
}

function leave(signal, ref) {
  const entry = bySignal.get(signal)
  if (entry === undefined || !entry.members.delete(ref)) return
  if (entry.members.size > 0) return
  bySignal.delete(signal)
  signal.removeEventListener('abort', entry.onAbort)
}

module.exports = { onAbortDisconnect }
