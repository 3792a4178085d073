/// <reference types="node" />
import { EventEmitter } from 'node:events'

/** Options of {@link ReconnectingWebSocket}. Every field is optional; defaults in brackets. */
export interface ReconnectingWebSocketOptions {
  /** Delay before the first reconnect attempt, in ms [250]. */
  minDelay?: number
  /** Cap of the reconnect delay, in ms [30000]. Delays never exceed 2^31-1 ms. */
  maxDelay?: number
  /** Growth factor of the delay: `min(maxDelay, minDelay * factor^(attempt-1))` [2]. */
  factor?: number
  /** Jitter applied after the cap: `'full'` uniform 0..d, `'equal'` d/2 + uniform 0..d/2, `'none'` ['full']. */
  jitter?: 'full' | 'equal' | 'none'
  /** Reconnect attempts after a failure before giving up (`giveup` event) [Infinity]. 0 never reconnects. */
  maxRetries?: number
  /** A connection that stayed open this long (ms) resets the attempt count [5000]. */
  minUptime?: number
  /** Deadline of one attempt, TCP connect and HTTP upgrade together, in ms [10000]. */
  connectTimeout?: number
  /** Deadline of the close handshake started by `disconnect()`, in ms; then the socket is dropped [2000]. */
  closeTimeout?: number
  /** Largest incoming message, in bytes [64 MiB]. */
  maxPayload?: number
  /** Do not connect from the constructor; wait for `connect()` [false]. */
  startClosed?: boolean
}

export type ReconnectingWebSocketState = 'connecting' | 'open' | 'reconnecting' | 'closing' | 'closed'

/** Stable error codes carried by `err.code`. */
export type RedialErrorCode =
  | 'ERR_CONNECT'
  | 'ERR_CONNECT_TIMEOUT'
  | 'ERR_HANDSHAKE'
  | 'ERR_SOCKET'
  | 'ERR_PROTOCOL'
  | 'ERR_INVALID_UTF8'
  | 'ERR_MESSAGE_TOO_BIG'
  | 'ERR_NOT_OPEN'
  | 'ERR_INVALID_URL'
  | 'ERR_INVALID_URL_SCHEME'
  | 'ERR_UNSUPPORTED_SCHEME'
  | 'ERR_INVALID_ARG_TYPE'
  | 'ERR_OUT_OF_RANGE'
  | 'ERR_UNKNOWN_OPTION'
  | 'ERR_INVALID_CLOSE_CODE'
  | 'ERR_INVALID_CLOSE_REASON'

export interface RedialError extends Error {
  code: RedialErrorCode
  /** HTTP status of a rejected upgrade (`ERR_HANDSHAKE`). */
  status?: number
}

export interface CloseEventInfo {
  code: number
  reason: string
  wasClean: boolean
  /** Whether a reconnect is scheduled after this close. */
  willReconnect: boolean
}

export interface ReconnectingEventInfo {
  /** 1-based number of the attempt that the timer will start. */
  attempt: number
  /** Delay before it, in ms (after jitter). */
  delay: number
}

export interface GiveUpEventInfo {
  reason: 'maxRetries'
  attempts: number
  lastError?: RedialError
}

export interface ClientMetrics {
  connectAttempts: number
  /** Successful handshakes. */
  connects: number
  /** Successful handshakes that re-established a lost connection. */
  reconnects: number
  connectionErrors: number
  messagesReceived: number
  messagesSent: number
  bytesReceived: number
  bytesSent: number
  /** 0 or 1: the client's one reconnect timer. */
  pendingReconnects: number
}

export interface ClientStats {
  /** Clients not yet garbage-collected. */
  liveClients: number
  /** Open WebSocket connections of all clients. */
  openConnections: number
  /** Reconnect timers waiting, over all clients. */
  pendingReconnects: number
  /** Clients garbage-collected while still active: `disconnect()` was forgotten. */
  collectedWithoutDisconnect: number
  /** Native tasks running (one per active client). */
  runningTasks: number
  /** Connection attempts in flight. */
  pendingAttempts: number
}

export interface ReconnectingWebSocketEvents {
  open: []
  message: [data: string | Buffer, isBinary: boolean]
  close: [event: CloseEventInfo]
  reconnecting: [event: ReconnectingEventInfo]
  error: [err: RedialError]
  giveup: [event: GiveUpEventInfo]
}

/**
 * A WebSocket client that reconnects with backoff. Rust owns the connection,
 * the one reconnect timer and every per-connection resource.
 *
 * Lifetime: while it has a connection (connecting, open, closing) the client
 * keeps itself alive, like a socket. While it waits to reconnect, only your
 * references keep it: keep a reference to a client you want to keep
 * reconnecting. A client collected without `disconnect()` is cleaned up
 * natively (its reconnect is cancelled) and a warning is emitted.
 */
export declare class ReconnectingWebSocket extends EventEmitter<ReconnectingWebSocketEvents> {
  constructor(url: string | URL, options?: ReconnectingWebSocketOptions)
  /** The normalised URL. */
  readonly url: string
  readonly state: ReconnectingWebSocketState
  /** The subprotocol the server selected ('' if none). */
  readonly protocol: string
  readonly metrics: ClientMetrics
  /** Starts connecting; idempotent. During a reconnect wait, connects now. While closing, reconnects after the close. */
  connect(): this
  /**
   * Closes (code 1000 or 3000-4999, reason at most 123 UTF-8 bytes), cancels
   * any pending reconnect, and resolves once nothing of the client is running.
   */
  disconnect(code?: number, reason?: string): Promise<void>
  /** Sends a text (string) or binary message. Throws `ERR_NOT_OPEN` when not open. */
  send(data: string | Buffer | ArrayBufferView | ArrayBuffer): void
  /** Keeps the process alive while the client is active (default). */
  ref(): this
  /** Lets the process exit while the client is active. */
  unref(): this
}

export declare function clientStats(): ClientStats
