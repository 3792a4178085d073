/// <reference types="node" />
import { EventEmitter } from 'node:events'

/**
 * Options of {@link ReconnectingWebSocket}. Every field is optional; defaults in brackets. `B`: the
 * `binaryType` they set, for an options object held in a variable (`ReconnectingWebSocketOptions<'nodebuffer'>`
 * makes the client a `ReconnectingWebSocket`, whose messages are Buffers).
 */
export interface ReconnectingWebSocketOptions<B extends BinaryType = BinaryType> {
  /** Delay before the first reconnect attempt, in ms [250]. */
  minDelay?: number
  /** Cap of the reconnect delay, in ms [30000, or minDelay if larger]. Delays never exceed 2^31-1 ms. */
  maxDelay?: number
  /** Growth factor of the delay: `min(maxDelay, minDelay * factor^(attempt-1))` [2]. */
  factor?: number
  /**
   * How retries are spread ['spread']. `'spread'`: each client retries on a grid whose steps grow by
   * `factor` up to `maxDelay`, at an offset drawn once per outage (retry n waits between the base
   * delays of retries n-1 and n, the first between 0 and `minDelay`; the step that reaches `maxDelay`
   * may pass its base by a fraction of it, none passes `maxDelay`), so clients dropped together
   * come back at an even rate whenever the server returns. Applied to the capped delay d:
   * `'equal'` d/2 + uniform 0..d/2, `'full'` uniform 0..d, `'none'` exactly d.
   */
  jitter?: 'spread' | 'full' | 'equal' | 'none'
  /** Reconnect attempts after a failure before giving up (`giveup` event) [Infinity]. 0 never reconnects. */
  maxRetries?: number
  /** A connection that stayed open this long (ms) resets the attempt count [5000]. */
  minUptime?: number
  /** Deadline of one attempt (lookup, TCP connect, proxy, TLS and the HTTP upgrade together), in ms [10000]. */
  connectTimeout?: number
  /**
   * Follow a 3xx answer's `Location` within the attempt, as `ws` does [false]: each attempt starts
   * at the client's URL again; a hop to another host or from `wss:` to `ws:` drops `Authorization`
   * and `Cookie`.
   */
  followRedirects?: boolean
  /** With `followRedirects`: redirects followed per attempt before it fails (`ERR_HANDSHAKE`) [10]. */
  maxRedirects?: number
  /** Connect only to the host's IPv4 (4) or IPv6 (6) addresses, as `net.connect`'s `family`; 0: any [0]. */
  family?: 0 | 4 | 6
  /**
   * Happy Eyeballs, as `net.connect`'s `autoSelectFamily`: a host name's addresses are tried with
   * their IP versions alternating, the next one started when the last has not connected within
   * `autoSelectFamilyAttemptTimeout`, the first to connect kept (earlier attempts go on) [Node's
   * default, `net.getDefaultAutoSelectFamily()`]. `false`: each address until it fails, in order.
   */
  autoSelectFamily?: boolean
  /** ms before the next address is tried, at least 10 [the runtime's default, `net.getDefaultAutoSelectFamilyAttemptTimeout()`: 250 on Node, 500 on Bun and Deno]. */
  autoSelectFamilyAttemptTimeout?: number
  /** The local IP address to connect from, as `net.connect`'s `localAddress` (a proxy is reached from it too). */
  localAddress?: string
  /**
   * The local port to connect from, as `net.connect`'s `localPort` (with `localAddress` or from the
   * unspecified address); 0: the system's choice [0]. An attempt that cannot bind it fails with
   * `ERR_CONNECT` and is retried, as while the last connection from it is in TIME_WAIT.
   */
  localPort?: number
  /**
   * Looks up host names instead of the system resolver, as `net.connect`'s `lookup` (`dns.lookup`'s
   * shape; `dns.lookup` itself and caching lookups such as `cacheable-lookup` fit): called for every
   * attempt (and redirect hop) to a host name, or to the proxy's, with `{ family, all: true }`.
   * Within `connectTimeout`; an error fails the attempt with `ERR_CONNECT`.
   */
  lookup?: LookupFunction
  /**
   * As `ws` passes it to `net.connect()`: `dns.ADDRCONFIG`, `dns.V4MAPPED`, `dns.ALL` or a combination.
   * Host names are then looked up by `dns.lookup` with these flags, one lookup per attempt (or by
   * `lookup`, which gets them in its options) [0: the addon's resolver].
   */
  hints?: number
  /**
   * Deadline of a close handshake, in ms: the one `disconnect()` starts, the server's, and the one that
   * follows a protocol violation (its error comes at once, its `close` when the server has closed the
   * TCP connection, or at this deadline); then the socket is dropped [2000].
   */
  closeTimeout?: number
  /**
   * Largest incoming message, in bytes [64 MiB]; at most `buffer.constants.MAX_LENGTH`. A text message
   * is also limited to `buffer.constants.MAX_STRING_LENGTH` bytes (a longer one cannot become a string).
   * Bigger closes with 1009 (`ERR_MESSAGE_TOO_BIG`).
   */
  maxPayload?: number
  /**
   * As `ws`'s option: the most frames an incoming message may come in; more closes with 1008
   * (`ERR_TOO_MANY_FRAGMENTS`) [0: no limit; `maxPayload` still bounds the message, and a read gives
   * way every 1,024 fragments]. `ws`'s client defaults to 16384, which fails Autobahn's cases 9.3
   * and 9.4 (up to 65,536 fragments): set that to close as `ws` does.
   */
  maxFragments?: number
  /**
   * As `ws`'s option: text messages and close reasons that are not valid UTF-8 are decoded as
   * `Buffer#toString` decodes them (U+FFFD for each invalid sequence) instead of closing the
   * connection with 1007 and `ERR_INVALID_UTF8` [false]. Not faster: validation is part of decoding.
   */
  skipUTF8Validation?: boolean
  /**
   * permessage-deflate (RFC 7692), offered on every connection attempt [true]. `false` never offers it;
   * an object sets its parameters (ws's names). The server decides whether it is used: see `extensions`.
   * `maxPayload` bounds a message's inflated size.
   */
  perMessageDeflate?: boolean | PerMessageDeflateOptions
  /** Do not connect from the constructor; wait for `connect()` [false]. */
  startClosed?: boolean
  /** Interval of RFC 6455 heartbeat pings, ms; 0 disables [30000]. */
  pingInterval?: number
  /**
   * A connection with no pong (or any frame) this long after a ping is dead: closed 1006, `ERR_PONG_TIMEOUT` [10000].
   * A JS thread too busy to read what its socket holds is not a dead peer: the next ping asks again.
   */
  pongTimeout?: number
  /**
   * As `ws`'s option: the server's pings are answered with a pong by the connection [true]. `false`
   * leaves them to the application (`on('ping', (data) => client.pong(data))`); heartbeats are not affected.
   */
  autoPong?: boolean
  /** `Retry-After` of a 429/503 upgrade response, a floor under the next delay: `'capped'` by maxDelay, `'always'` honoured whole, or `'never'` ['capped']. */
  honorRetryAfter?: 'capped' | 'always' | 'never'
  /**
   * Decides whether to reconnect after a failure; overrides the default policy (retry network errors,
   * timeouts, 408/425/429/5xx, a 426 naming no protocol (no Upgrade or Sec-WebSocket-Version) and every close but 1002/1003/1007/1008; stop on other 4xx). May be async;
   * `undefined` keeps the default verdict.
   * A throw or rejection falls back to the default (and surfaces as an uncaught exception). Not asked
   * once `disconnect()` has been called.
   */
  shouldReconnect?: (info: ReconnectInfo) => boolean | undefined | Promise<boolean | undefined>
  /**
   * The offline queue used by `send()` while connecting or waiting to reconnect; `false` disables it
   * (`send()` then throws `ERR_NOT_OPEN`; while the client is closing, it reports the message in a `drop` event). [`{ maxMessages: 1000, maxBytes: 4 MiB, overflow: 'reject' }`]
   */
  queue?: boolean | QueueOptions
  /**
   * Extra handshake headers (a number is sent as its text, as by Node's http; a fetch `Headers` or a `Map`
   * too), or a provider called before every attempt (e.g. a fresh token).
   */
  headers?: HandshakeHeaders | Provider<HandshakeHeaders>
  /** Subprotocols to offer, or a provider called before every attempt. `client.protocol` is the server's choice. */
  protocols?: string | string[] | Provider<string | string[] | null | undefined>
  /** `Origin` header of the handshake. */
  origin?: string
  /** TLS for `wss:`: rustls with the webpki roots plus the system CA bundle. */
  tls?: TlsOptions
  /**
   * A proxy: HTTP CONNECT `http://[user:pass@]host:port`, or SOCKS5 `socks5://[user:pass@]host:port`
   * (host names resolved here, `lookup` and `family` included) or `socks5h://…` (by the proxy);
   * `false`/`null` for none. When absent, `HTTPS_PROXY` (wss) / `HTTP_PROXY` (ws), else `ALL_PROXY`
   * (lower-case names first, empty as unset, no scheme as `http://`) apply unless `NO_PROXY` matches
   * the host. SOCKS5 credentials need a user name; user names and passwords are percent-decoded as
   * UTF-8 (other bytes: `ERR_INVALID_PROXY`).
   */
  proxy?: string | false | null
  /** How binary messages are delivered ['nodebuffer']. */
  binaryType?: B
  /** Aborting it disconnects the client (an already aborted signal: it never connects). */
  signal?: AbortSignal
}

/** `net.connect`'s `lookup`: answer with every address (`all: true`) or, as older lookups do, with one. */
export type LookupFunction = (
  hostname: string,
  options: { family: 0 | 4 | 6; all: true; hints?: number },
  callback: (err: Error | null, address?: string | ReadonlyArray<{ address: string; family?: number }>, family?: number) => void,
) => void

/**
 * `ws`'s `createWebSocketStream(ws, options)`: a Duplex over the client's messages. Each chunk written is
 * one message (`send(chunk, callback)`; the chunks buffered meanwhile are sent together): queued while
 * reconnecting, and when the offline queue refuses it (`queue: false`, or over its bounds) it waits for
 * the next open, as `ws`'s stream waits for a connecting socket. A write fails only when its message will
 * never be sent (`ERR_GAVE_UP`, `ERR_NOT_SENT`; also when written after the client gave up or was
 * disconnected). Each message read is one chunk (text as UTF-8 bytes, or a
 * string with `readableObjectMode`). Past the readable high-water mark the socket is no longer read. The
 * stream lasts across reconnects: it ends when the client is disconnected, or gives up after a clean close
 * (a close handshake, and no error); any other giveup fails it with `ERR_GAVE_UP` (the last error as
 * `cause`) once the messages received before it are read (the callbacks of its failed writes wait until
 * then too). Made before the first `connect()` (`startClosed`), it waits for it; made on a
 * client that gave up or was disconnected, its first read ends it unless `connect()` came first. Ending it
 * disconnects the client (while the client connects or waits to reconnect, once it has opened, as a write
 * waits: a giveup first fails the stream), destroying it terminates the client. While it is being read, or a write waits for
 * the next open, it keeps the client alive, also between connections.
 */
export declare function createWebSocketStream(
  client: ReconnectingWebSocket<BinaryType>,
  options?: import('node:stream').DuplexOptions,
): import('node:stream').Duplex

/** What a binary message is delivered as, for each `binaryType`. */
export interface BinaryTypes {
  nodebuffer: Buffer
  arraybuffer: ArrayBuffer
  uint8array: Uint8Array
  /** `ws`'s: an array of Buffers to concatenate; here always one, the whole message. */
  fragments: Buffer[]
  /** `ws`'s (8.18+) and the WHATWG WebSocket's: a Blob of the message's bytes. */
  blob: Blob
}
export type BinaryType = keyof BinaryTypes

/** As in Node, a member that is `null` is not given (`ca: pem ?? null`). */
export interface TlsOptions {
  /** Extra trusted CA certificates (PEM). */
  ca?: string | Buffer | Uint8Array | Array<string | Buffer | Uint8Array> | null
  /** `false` accepts any certificate (testing only) [true; false with NODE_TLS_REJECT_UNAUTHORIZED=0, as in Node]. */
  rejectUnauthorized?: boolean | null
  /** Server name for SNI and certificate verification [the URL's host]. */
  servername?: string | null
  /**
   * Our certificate chain (PEM, leaf first), for servers that ask for a client certificate
   * (mutual TLS). Goes with `key`.
   */
  cert?: string | Buffer | Uint8Array | Array<string | Buffer | Uint8Array> | null
  /** The private key of `cert` (PEM: PKCS#8, PKCS#1 or SEC1; RSA, ECDSA P-256/P-384 or Ed25519). */
  key?: string | Buffer | Uint8Array | null
  /**
   * Our certificate and its key in one PKCS#12 file (`.p12`/`.pfx`), instead of `cert` and `key`;
   * with `passphrase` when it has a password. Its other certificates are sent as the chain and, as
   * Node does, trusted as CAs. DER files encrypted with AES or 3DES, as OpenSSL 3 and Java's keytool write them; an old
   * file encrypted with RC2 throws `ERR_INVALID_ARG_VALUE` saying how to convert it.
   */
  pfx?: Buffer | Uint8Array | null
  /** Decrypts an encrypted `key`, or opens `pfx`. */
  passphrase?: string | Buffer | Uint8Array | null
  /**
   * As Node's (`tls.connect`): once the server's chain is verified up to a trusted root, decides
   * whether the certificate is the server's, in place of the host name check; return an Error (or
   * throw) to refuse it (`ERR_TLS_CERT`, not retried by default), `undefined` to accept. `cert` is
   * shaped as `getPeerCertificate(true)` gives it, `issuerCertificate` links up to the root when it
   * is in `ca` or Node's bundled roots. Call `tls.checkServerIdentity(host, cert)` inside to keep
   * the host name check, for instance to pin a key as well. Not called with `rejectUnauthorized: false`.
   */
  checkServerIdentity?: ((host: string, cert: import('node:tls').DetailedPeerCertificate) => Error | undefined) | null
  /**
   * The lowest and highest TLS versions offered, as Node names them [TLS 1.2 and 1.3]. rustls has
   * no version below 1.2: a lower minimum means 1.2, a lower maximum throws.
   */
  minVersion?: import('node:tls').SecureVersion | null
  maxVersion?: import('node:tls').SecureVersion | null
  /**
   * The cipher suites offered, as Node takes them (an OpenSSL list, `'TLS_AES_128_GCM_SHA256:ECDHE-RSA-AES128-GCM-SHA256'`)
   * [rustls's]. TLS 1.3 suites named replace the default TLS 1.3 ones; without a TLS 1.2 suite,
   * TLS 1.2 is not offered. Names rustls has not are skipped; OpenSSL's keywords (`HIGH`) throw.
   */
  ciphers?: string | null
  /** Key exchange groups offered, in order: `'X25519'`, `'P-256'`, `'P-384'` joined by `:`, or `'auto'` [rustls's]. */
  ecdhCurve?: string | null
  /**
   * Node's `sigalgs`: the signature algorithms accepted from the server and made with `key`, in order
   * of preference, as OpenSSL names them (`'rsa_pss_rsae_sha256:ECDSA+SHA256'`). rustls has RSA-PSS
   * and RSA PKCS#1 with SHA-256/384/512, ECDSA P-256/SHA-256 and P-384/SHA-384, and Ed25519; others
   * are skipped. An unknown or repeated name, or none rustls has, throws `ERR_INVALID_ARG_VALUE` [rustls's].
   */
  sigalgs?: string | null
}

/**
 * `send()`'s callback: `err` is `null` once the message is written (as in `ws`), an `ERR_NOT_SENT` error once it
 * never will be. Not called for a message still queued when the client is garbage-collected (README: a client
 * dropped without `disconnect()`).
 */
export type SendCallback = (err: NotSentError | null) => void

/** `ping()`'s and `pong()`'s callback: `null` once the frame is handed to the connection, or why it never will be. */
export type ControlCallback = (err: NotSentError | null) => void

/** Why a message sent with a callback will never be sent. */
export interface NotSentError extends Error {
  code: 'ERR_NOT_SENT'
  /** `'overflow'`: the full queue dropped it (`'drop-oldest'`); `'drained'`: `drainQueue()` handed it back;
   * `'discarded'`: `disconnect()` discarded it; `'closed'`: the client closed as it was sent (see the `drop` event);
   * `'unreadable'`: it was a Blob whose bytes could not be read, or sent as text were not UTF-8 (the error is `cause`).
   * For a `ping()`/`pong()`: `'unreadable'` (a Blob's), or `'closed'` when the connection it was called on has gone. */
  reason: 'overflow' | 'drained' | 'discarded' | 'closed' | 'unreadable'
}

/** `send()` options, as `ws` takes them. */
export interface SendOptions {
  /** Send a string as a binary message (`true`), or bytes (a Blob's too) that are UTF-8 as a text message (`false`) [by the data's type]. */
  binary?: boolean
  /** `false`: sent uncompressed even where permessage-deflate was negotiated (already compressed data, say); otherwise the `perMessageDeflate` threshold decides [true]. */
  compress?: boolean
  /**
   * `false`: a piece of a message; every `send()` after it continues the message, up to one without
   * `fin: false`, which ends it. The pieces are held (counted in `bufferedAmount`) and the message goes
   * out whole with the last one, on one connection [true]. A piece may be a Blob: the message is then a Blob
   * of its pieces, sent once read, as `send(blob)` is.
   */
  fin?: boolean
  /** A client masks every frame: `false` throws `ERR_INVALID_ARG_VALUE`. */
  mask?: boolean
}

export interface QueueOptions {
  /** [1000] */
  maxMessages?: number
  /** Sum of payload bytes [4194304]. */
  maxBytes?: number
  /** `'reject'`: `send()` throws `ERR_QUEUE_FULL` (while the client still reads `'open'`, its connection lost unseen, a `drop` event carries the message instead); `'drop-oldest'`: a `drop` event carries what was dropped; a message larger than `maxBytes` (or any, with `maxMessages: 0`) throws `ERR_QUEUE_FULL` in both modes, since no drop makes room for it ['reject']. */
  overflow?: 'reject' | 'drop-oldest'
}

/** Called before every attempt; a throw or rejection is a failed attempt (`ERR_PROVIDER`); bounded by `connectTimeout`. */
export type Provider<T> = (ctx: { attempt: number }) => T | Promise<T>

/** Handshake headers: an object of names and values (an array: one line each, a Cookie array one line joined by `; `), a `Headers` or a `Map`. */
export type HandshakeHeaders = Record<string, string | number | Array<string | number>> | Headers | Map<string, string | number | Array<string | number>>

export type ReconnectInfo = (
  /** `error`: the client closed the connection for this error (the peer broke the protocol, a pong timed out, the socket failed), and `code` is the one it sent. */
  | { kind: 'close'; code: number; reason: string; wasClean: boolean; error?: RedialErrorCode }
  | { kind: 'handshake'; status: number; headers: ResponseHeaders }
  | { kind: 'error'; code: RedialErrorCode }
) & { /** Consecutive failures so far. */ attempt: number }

export type ReconnectingWebSocketState = 'connecting' | 'open' | 'reconnecting' | 'closing' | 'closed'

/** Stable error codes carried by `err.code`. */
export type RedialErrorCode =
  /** `opened({ signal })`: the signal aborted (a DOMException-like AbortError, as Node's own). */
  | 'ABORT_ERR'
  /** `require('redial-ws')`: no native binary for this platform could be loaded (the message says why). */
  | 'ERR_NATIVE_BINDING'
  /** TCP connect failed (refused, unreachable, DNS). Retried. */
  | 'ERR_CONNECT'
  /** The attempt (providers, TCP, proxy, TLS, upgrade) exceeded `connectTimeout`. Retried. */
  | 'ERR_CONNECT_TIMEOUT'
  /**
   * The HTTP upgrade was refused (`err.status`) or invalid, or its connection closed or failed (`err.cause`).
   * 408/425/429/5xx (and a 426 naming no protocol) retried; other 4xx give up.
   */
  | 'ERR_HANDSHAKE'
  /** An open connection failed (reset, I/O error). Retried. */
  | 'ERR_SOCKET'
  /** The peer broke the protocol; the client closed with 1002 (1007 for compressed data that does not inflate, as `ws` closes). */
  | 'ERR_PROTOCOL'
  /** Invalid UTF-8 in a text message; the client closed with 1007. */
  | 'ERR_INVALID_UTF8'
  /** An incoming message exceeded `maxPayload`; the client closed with 1009. */
  | 'ERR_MESSAGE_TOO_BIG'
  /** An incoming message came in more than `maxFragments` frames; the client closed with 1008. */
  | 'ERR_TOO_MANY_FRAGMENTS'
  /** A bug in redial-ws ended the client's task; the client is closed (no reconnect), nothing is left running. */
  | 'ERR_INTERNAL'
  /** `send()`/`ping()` while closed (or while connecting with `queue: false`). */
  | 'ERR_NOT_OPEN'
  /**
   * Given to a `send()` callback: the message will never be sent (`err.reason`). Also to a `ping()`'s or
   * `pong()`'s that waited for a Blob, and, emitted as `error`, a `ping(blob)` without a callback whose Blob could not be read.
   */
  | 'ERR_NOT_SENT'
  /** Malformed URL, or a fragment in it (SyntaxError). */
  | 'ERR_INVALID_URL'
  /** A URL scheme other than ws:, wss:, http:, https: (SyntaxError). */
  | 'ERR_INVALID_URL_SCHEME'
  /** An argument or option of the wrong type (TypeError). */
  | 'ERR_INVALID_ARG_TYPE'
  /** An option or argument out of range (RangeError). */
  | 'ERR_OUT_OF_RANGE'
  /** An option name redial-ws does not know (typos are not ignored). */
  | 'ERR_UNKNOWN_OPTION'
  /** `tls.minVersion`/`tls.maxVersion` is not one of Node's TLS version names (TypeError). */
  | 'ERR_TLS_INVALID_PROTOCOL_VERSION'
  /** `tls.minVersion` is above `tls.maxVersion` (TypeError). */
  | 'ERR_TLS_PROTOCOL_VERSION_CONFLICT'
  /** `tls.ciphers` leaves no cipher suite rustls has (for the versions allowed), as Node's error of that name. */
  | 'ERR_SSL_NO_CIPHER_MATCH'
  /** `disconnect()`/`close()`/`reconnect()` code other than 1000-1014 (but 1004-1006) or 3000-4999, as `ws` allows (RangeError). */
  | 'ERR_INVALID_CLOSE_CODE'
  /** Close reason longer than 123 UTF-8 bytes, or bytes that are not UTF-8 (SyntaxError). */
  | 'ERR_INVALID_CLOSE_REASON'
  /** In `giveup.lastError`: the server closed with 1002, 1003, 1007 or 1008. */
  | 'ERR_CLOSED'
  /** `opened()`: the client gave up before it opened; `createWebSocketStream()` and `messages()`: it gave up other than after a clean close (the last error is the `cause`). */
  | 'ERR_GAVE_UP'
  /** No pong (nor any frame) within `pongTimeout` of a ping; closed 1006. Retried. */
  | 'ERR_PONG_TIMEOUT'
  /** A `url`/`headers`/`protocols` provider threw or rejected. Retried. */
  | 'ERR_PROVIDER'
  /** The offline queue refused the message (`overflow: 'reject'`, or a message larger than `maxBytes`). */
  | 'ERR_QUEUE_FULL'
  /** A header name that is not an HTTP token. */
  | 'ERR_INVALID_HTTP_TOKEN'
  /** A header or `origin` value with a control character (any but tab), as Node's http refuses it. */
  | 'ERR_INVALID_CHAR'
  /** An invalid or duplicated subprotocol (SyntaxError). */
  | 'ERR_INVALID_PROTOCOL'
  /** TLS failed (other than the certificate). Retried. */
  | 'ERR_TLS'
  /** A certificate was rejected: the server's, or ours (the server asked for one, or refused it). Gives up unless `shouldReconnect` says otherwise. */
  | 'ERR_TLS_CERT'
  /** The proxy was unreachable or refused the tunnel. */
  | 'ERR_PROXY'
  /** The proxy wants other credentials (HTTP 407, or SOCKS5's refusal). Gives up unless `shouldReconnect` says otherwise. */
  | 'ERR_PROXY_AUTH'
  /** A proxy URL that is not http://, socks5:// or socks5h:// (SyntaxError). */
  | 'ERR_INVALID_PROXY'
  /** An argument or option with a value it cannot take: two options naming the same setting (`minDelay` and `minReconnectionDelay`), a `family`, `localAddress`, `hints` or `tls` value, `send()`'s `mask: false`, `binary: false` with bytes that are not UTF-8. */
  | 'ERR_INVALID_ARG_VALUE'
  /** `createWebSocketStream()`: a Blob (`binaryType: 'blob'`) for a stream that is not in `readableObjectMode`. */
  | 'ERR_INVALID_STATE'

export interface RedialError extends Error {
  code: RedialErrorCode
  /**
   * The system's error where there was one (`ERR_CONNECT`, `ERR_SOCKET`, an `ERR_HANDSHAKE` whose connection
   * failed during the upgrade): `code` such as
   * `'ECONNREFUSED'` or `'ECONNRESET'` (what `ws` reports as its error's own code), `errno`.
   * `ERR_GAVE_UP`'s is the last error. Not enumerable.
   */
  cause?: unknown
  /** HTTP status of a rejected upgrade (`ERR_HANDSHAKE`): the target server's own answer. */
  status?: number
  /**
   * The headers of that answer as Node's `res.headers` has them, which `ws`'s `unexpected-response`
   * listeners read (names lower-cased, `set-cookie` an array, a repeated header joined with ', ' unless
   * only its first counts, a byte per character); not enumerable, so that a logged error does not show them.
   */
  headers?: ResponseHeaders
  /**
   * The start of that answer's body when it is a refusal (4xx, 5xx): at most 64 KiB, as far as it
   * came within a second (a JSON reason, an error page); not enumerable either.
   */
  body?: Buffer
  /** HTTP status of a CONNECT proxy's refusal (`ERR_PROXY`, `ERR_PROXY_AUTH`): told apart from `status`. */
  proxyStatus?: number
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
  /** `'maxRetries'` exhausted, the retry `'policy'` said stop, or a bug ended the client's task (`'internal'`, `lastError` `ERR_INTERNAL`). */
  reason: 'maxRetries' | 'policy' | 'internal'
  attempts: number
  lastError?: RedialError
}

export interface ClientMetrics {
  connectAttempts: number
  /** Successful handshakes. */
  connects: number
  /** Successful handshakes that re-established a lost connection (not a first connection that took retries, nor one that replaced a connection `reconnect()` closed). */
  reconnects: number
  connectionErrors: number
  messagesReceived: number
  messagesSent: number
  bytesReceived: number
  bytesSent: number
  /** 0 or 1: the client's one reconnect timer. */
  pendingReconnects: number
  /** Messages waiting in the offline queue. */
  queuedMessages: number
}

export interface DropEventInfo {
  /**
   * `'overflow'`: the offline queue dropped them. `'closed'`: `send()` was called while the client still
   * looked open (or connecting), but the connection had already ended for good (the `close` or `giveup`
   * event was on its way), or, with `queue: false`, the connection ended while it waited behind a Blob's
   * bytes, so nothing will write them; or `send()` was called while the client is closing and did not queue
   * it (after `disconnect()`, or with `queue: false`: a listener answering what the connection still
   * delivers; `ws` drops it too).
   * `'unreadable'`: a Blob whose bytes could not be read, or, sent as text
   * (`binary: false`), were not UTF-8 (`error` says why).
   */
  reason: 'overflow' | 'closed' | 'unreadable'
  /**
   * The dropped messages, oldest first: those the queue held (bytes as Buffers), or the one `send()`
   * was given, as it was given.
   */
  messages: Array<string | Buffer | ArrayBufferView | ArrayBuffer | SharedArrayBuffer | Blob>
  /** With `'unreadable'`: the error the Blob's read failed with. */
  error?: unknown
}

export interface DisconnectOptions {
  /**
   * Write queued messages first (connecting if needed: one attempt, whose failure discards them), within `closeTimeout` [false]. During the close of a
   * `reconnect()` (or of a `disconnect()` a `connect()` followed), that close ends first, within its own
   * `closeTimeout`; the connection after it writes the queue, then closes. As any connection that opens
   * while a `disconnect()` is under way, the one that writes the queue is not reported open (no `open`,
   * no `message`): the client is closing, where `send()` throws.
   */
  flush?: boolean
}

export interface DisconnectResult {
  /** Queued messages that were never sent and were discarded. */
  discarded: number
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
  /** Heartbeat timers (one per open connection with `pingInterval` > 0). */
  heartbeats: number
  /** TLS configurations alive: one per distinct trust setting (`tls.ca`, `rejectUnauthorized`), shared by its clients, kept until the last of them is collected (not released by `disconnect()`). */
  tlsConfigs: number
  /** Read and write buffers held by open connections: an idle connection holds none. */
  ioBuffers: number
  /** zlib streams (permessage-deflate) held by open connections; none while no message needs one. */
  deflateContexts: number
  /** Sockets read on the JS thread (quiet uncompressed `ws:` and `wss:` connections, on Node); none once their connections end. */
  jsReaders: number
  /** Bytes of large received messages' buffers (16 KiB and up) that JS's garbage collector freed, kept for the next large message: at most 4 MiB, none once no connection is open, nor once no large message has come for 2 s (freed at the next read or heartbeat). */
  recycledBytes: number
}

/** The `perMessageDeflate` option, with ws's names. */
export interface PerMessageDeflateOptions {
  /** Messages shorter than this many bytes are sent uncompressed, with or without context takeover (`ws` compresses them all where our side keeps its context: `0` does that) [1024]. */
  threshold?: number
  /** Ask to compress each of our messages on its own: no compressor is kept between messages [false]. */
  clientNoContextTakeover?: boolean
  /** Ask the server to compress each message on its own: no decompressor is kept between messages [false]. */
  serverNoContextTakeover?: boolean
  /** `true` lets the server pick our window (8-15 bits), a number caps it, `false` does not offer the parameter [true]. */
  clientMaxWindowBits?: boolean | number
  /** Ask the server to compress with at most this window, 8-15 bits [not offered]. */
  serverMaxWindowBits?: number | false
  /** zlib compression level, 0-9 (-1: zlib's default, 6) [6]. */
  level?: number
  /** Accepted for ws compatibility (1-9); the Rust backend always uses zlib's default memory level, 8. */
  memLevel?: number
  /** ws's form of `level` and `memLevel` (zlib's other options, as ws's examples pass them, are accepted and have nothing to set). */
  zlibDeflateOptions?: import('node:zlib').ZlibOptions
  /** Accepted for ws compatibility; nothing to set (the window follows the negotiation). */
  zlibInflateOptions?: object
  /** Accepted for ws compatibility; compression runs on the client's own thread, not a pool. */
  concurrencyLimit?: number
}

/** What the handshake chose, given with the `open` event. */
export interface OpenEventInfo {
  /** The subprotocol the server selected ('' if none). */
  protocol: string
  /** The server's `Sec-WebSocket-Extensions` answer ('' if none). */
  extensions: string
}

/** A response's headers as Node's `IncomingMessage#headers`: names lower-cased; `set-cookie` an array; a repeated header joined with ', ' unless only its first counts (Node's rules). */
export type ResponseHeaders = Record<string, string | string[] | undefined> & { 'set-cookie'?: string[] }

/**
 * The server's 101 answer, given with the `upgrade` event before each connection's `open` (or, as in
 * `ws`, before the error of a 101 answer the client refuses): the fields of Node's
 * `http.IncomingMessage` that `ws`'s `upgrade` listeners read.
 */
export interface UpgradeResponse {
  statusCode: 101
  statusMessage: string
  httpVersion: string
  headers: ResponseHeaders
  /** Names and values as received, alternating. */
  rawHeaders: string[]
}

/** The events and their listeners' arguments; `B` is the client's `binaryType`. */
export interface ReconnectingWebSocketEvents<B extends BinaryType = BinaryType> {
  /** Each connection's 101 answer, just before its `open` (or before the error of a 101 answer the client refuses, as in `ws`). */
  upgrade: [response: UpgradeResponse]
  /** With `followRedirects`: each address a redirect led to, before the attempt's `open` or `error` (no user name or password). */
  redirect: [url: string]
  open: [event: OpenEventInfo]
  /** Text is a string; binary data is a Buffer, an ArrayBuffer or a Uint8Array according to `binaryType`. */
  message: [data: string | BinaryTypes[B], isBinary: boolean]
  close: [event: CloseEventInfo]
  reconnecting: [event: ReconnectingEventInfo]
  error: [err: RedialError]
  giveup: [event: GiveUpEventInfo]
  drop: [event: DropEventInfo]
  ping: [data: Buffer]
  pong: [data: Buffer]
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
export declare class ReconnectingWebSocket<B extends BinaryType = 'nodebuffer'> extends EventEmitter<
  ReconnectingWebSocketEvents<B>
> {
  // The native overload is declared last: when no overload matches, TypeScript reports the
  // last one's error, so a misspelt option is reported against ReconnectingWebSocketOptions.
  /**
   * reconnecting-websocket / partysocket shape: subprotocols second, their option names accepted.
   * A client built this way runs in their mode (defaults, retryCount, event order); see docs/migrating.md.
   */
  constructor(
    url: string | URL | Provider<string | URL>,
    protocols?: string | string[] | Provider<string | string[] | null | undefined> | null,
    options?: ReconnectingWebSocketOptions<B> & RwsCompatOptions,
  )
  /** Their option names with the options second: their mode too. */
  constructor(url: string | URL | Provider<string | URL>, options: ReconnectingWebSocketOptions<B> & RwsCompatOptions)
  /**
   * `url`: `ws:`, `wss:` (`http:` and `https:` become them) or, as in `ws`, `ws+unix:/path/to/socket:/request/path`
   * for a Unix domain socket; or a provider called before every attempt.
   */
  constructor(url: string | URL | Provider<string | URL>, options?: ReconnectingWebSocketOptions<B>)
  // Listeners run with the client as `this`, as EventEmitter (and `ws`) call them: `function () { this.send(…) }`.
  // Each `(event: never, …)` overload takes no call: it keeps the method assignable to EventEmitter's
  // own, which @types/node 25 and later declare generic over the event map.
  on<K extends keyof ReconnectingWebSocketEvents<B>>(event: K, listener: (this: this, ...args: ReconnectingWebSocketEvents<B>[K]) => void): this
  on(event: never, listener: (...args: any[]) => void): this
  once<K extends keyof ReconnectingWebSocketEvents<B>>(event: K, listener: (this: this, ...args: ReconnectingWebSocketEvents<B>[K]) => void): this
  once(event: never, listener: (...args: any[]) => void): this
  addListener<K extends keyof ReconnectingWebSocketEvents<B>>(event: K, listener: (this: this, ...args: ReconnectingWebSocketEvents<B>[K]) => void): this
  addListener(event: never, listener: (...args: any[]) => void): this
  prependListener<K extends keyof ReconnectingWebSocketEvents<B>>(event: K, listener: (this: this, ...args: ReconnectingWebSocketEvents<B>[K]) => void): this
  prependListener(event: never, listener: (...args: any[]) => void): this
  prependOnceListener<K extends keyof ReconnectingWebSocketEvents<B>>(event: K, listener: (this: this, ...args: ReconnectingWebSocketEvents<B>[K]) => void): this
  prependOnceListener(event: never, listener: (...args: any[]) => void): this
  off<K extends keyof ReconnectingWebSocketEvents<B>>(event: K, listener: (this: this, ...args: ReconnectingWebSocketEvents<B>[K]) => void): this
  off(event: never, listener: (...args: any[]) => void): this
  removeListener<K extends keyof ReconnectingWebSocketEvents<B>>(event: K, listener: (this: this, ...args: ReconnectingWebSocketEvents<B>[K]) => void): this
  removeListener(event: never, listener: (...args: any[]) => void): this
  static readonly CONNECTING: 0
  static readonly OPEN: 1
  static readonly CLOSING: 2
  static readonly CLOSED: 3
  readonly CONNECTING: 0
  readonly OPEN: 1
  readonly CLOSING: 2
  readonly CLOSED: 3
  /** WHATWG readyState; CLOSED (3) also while waiting to reconnect; CLOSING (2) from the start of a close handshake (a `disconnect()`, the server's close frame, or a connection the client failed) to its `close`. */
  readonly readyState: 0 | 1 | 2 | 3
  /** reconnecting-websocket's retry counter: attempts since the last connection that stayed up `minUptime`. */
  readonly retryCount: number
  /** Whether the client keeps (re)connecting (partysocket's getter); the `shouldReconnect` option is the policy. */
  readonly shouldReconnect: boolean
  onopen: ((event: Event) => void) | null
  onmessage: ((event: MessageEvent) => void) | null
  onclose: ((event: CloseEvent) => void) | null
  onerror: ((event: ErrorEvent) => void) | null
  /** A boolean third argument is the DOM's `capture`, accepted and without effect (the client is the only target). */
  addEventListener<K extends keyof WhatwgEventMap>(
    type: K,
    listener: ((event: WhatwgEventMap[K]) => void) | { handleEvent(event: WhatwgEventMap[K]): void },
    options?: boolean | WhatwgListenerOptions,
  ): void
  removeEventListener<K extends keyof WhatwgEventMap>(
    type: K,
    listener: ((event: WhatwgEventMap[K]) => void) | { handleEvent(event: WhatwgEventMap[K]): void },
    options?: boolean | { capture?: boolean },
  ): void
  /**
   * Calls the addEventListener listeners of `event.type` (not `on<type>`); a redial-ws event gets the
   * client as its `target`. False if a listener called `preventDefault()` on a cancelable event.
   */
  dispatchEvent(event: Event): boolean
  /**
   * WHATWG alias of `disconnect()` (returns nothing). In rws mode (reconnecting-websocket's constructor
   * shape) the queued messages are kept, as reconnecting-websocket and partysocket keep theirs: a later
   * `reconnect()` sends them, `drainQueuedMessages()` hands them back.
   */
  close(code?: number, reason?: string | Buffer): void
  /** partysocket's name for `drainQueue()`. */
  drainQueuedMessages(): Array<string | Buffer | Blob>
  /**
   * The normalised URL (the last one a provider returned; '' before the first), its credentials masked
   * (`wss://user:***@host/`, a lone user name, often a token, as `***`): it is shown in logs.
   */
  readonly url: string
  /**
   * Bytes accepted by `send()` and not yet written to the socket (queued or in flight; a message
   * already framed on the JS thread counts as its frame, header included).
   */
  readonly bufferedAmount: number
  readonly state: ReconnectingWebSocketState
  /** The subprotocol the server selected ('' if none, and while the next connection is being made). */
  readonly protocol: string
  /**
   * The extensions the server accepted: its `Sec-WebSocket-Extensions` answer, e.g.
   * `'permessage-deflate; client_max_window_bits=15'`, or '' (also while the next connection is being made;
   * in rws mode the names only, as ws reports them).
   */
  readonly extensions: string
  /**
   * How binary messages are delivered. Listeners are typed by the `binaryType` given to the
   * constructor; set it there rather than here for types that match.
   */
  binaryType: BinaryType
  readonly metrics: ClientMetrics
  /** Starts connecting; idempotent. During a reconnect wait, connects now. While closing, reconnects after the close. */
  connect(): this
  /**
   * Closes (code 1000-1014 but 1004-1006, or 3000-4999, as `ws` allows; reason at most 123 UTF-8 bytes), cancels
   * any pending reconnect, and resolves once nothing of the client is running.
   */
  disconnect(code?: number, reason?: string | Buffer, options?: DisconnectOptions): Promise<DisconnectResult>
  disconnect(options: DisconnectOptions & { code?: number; reason?: string | Buffer }): Promise<DisconnectResult>
  /**
   * `ws`'s `terminate()`: as `disconnect()`, without the close handshake. The connection is dropped at
   * once (its `close` event has code 1006): what was sent on the open connection is written first as far
   * as the socket takes it without waiting (compressed messages as far as one step of compression goes);
   * the rest, and queued messages, are discarded.
   */
  terminate(): Promise<DisconnectResult>
  /**
   * Forces a fresh connection now: closes the open one with `code` (1000) or cancels the reconnect wait.
   * While a `disconnect()`/`terminate()` is under way, as `connect()`: its close ends, then the client connects.
   */
  reconnect(code?: number, reason?: string | Buffer): this
  /**
   * Sends a text (string) or binary message; while connecting or waiting to reconnect it is queued and
   * written, in order, on the next open. Throws `ERR_NOT_OPEN` when closed, `ERR_QUEUE_FULL` on overflow;
   * while the client is closing and does not queue it (after `disconnect()`, or with `queue: false`), the
   * message is dropped (a `drop` event, `'closed'`; `callback` too).
   * `options` as in `ws`. A Blob goes as a binary message (text with `binary: false`; a piece with
   * `fin: false`) once its bytes are read: it, and every `send()`,
   * `disconnect()` or `reconnect()` after it, wait for them in order (counted in `bufferedAmount`; the client
   * reads `'closing'` meanwhile after a `disconnect()`; a connection that ends meanwhile has the calls made
   * then, and a `disconnect()` discards what waited before it); `terminate()` discards them. `callback`, as `ws`'s, runs asynchronously (never inside the call that settles it): with `null` once the message
   * is written to the socket (from the queue: on a later connection), with an `ERR_NOT_SENT` error
   * (`err.reason`) once it never will be; not at all when `send()` throws.
   */
  send(data: string | Buffer | ArrayBufferView | ArrayBuffer | SharedArrayBuffer | Blob, options?: SendOptions | null, callback?: SendCallback): void
  send(data: string | Buffer | ArrayBufferView | ArrayBuffer | SharedArrayBuffer | Blob, callback: SendCallback): void
  /** A callback typed as `@types/ws` types it, `(err?: Error) => void`: it too gets `null` once the message is written. */
  send(data: string | Buffer | ArrayBufferView | ArrayBuffer | SharedArrayBuffer | Blob, options: SendOptions | null | undefined, callback: (err?: Error) => void): void
  send(data: string | Buffer | ArrayBufferView | ArrayBuffer | SharedArrayBuffer | Blob, callback: (err?: Error) => void): void
  /**
   * Sends a ping (payload at most 125 bytes), in `ws`'s shape. Throws `ERR_NOT_OPEN` when neither open nor
   * closing (while closing, or when a connection ended while the client still reads `'open'`, JS not having
   * seen its end yet, it is not thrown for: `callback` gets `ERR_NOT_SENT`, `'closed'`, as in `ws`).
   * `callback` runs (a microtask, with `null`) once the frame is handed to the connection; `mask: false` throws.
   * A Blob's bytes go once read; a ping made while sends wait for a Blob's bytes waits behind them (as in `ws`):
   * either goes on the connection it was called on, and `callback` gets an `ERR_NOT_SENT` error should that
   * connection go meanwhile (`'closed'`) or its Blob be unreadable (`'unreadable'`; without a callback: an
   * `error` event, or a process warning when nothing listens).
   */
  ping(data?: string | number | ArrayBufferView | ArrayBuffer | SharedArrayBuffer | Blob | null, mask?: boolean, callback?: ControlCallback): void
  ping(data: string | number | ArrayBufferView | ArrayBuffer | SharedArrayBuffer | Blob | null | undefined, callback: ControlCallback): void
  ping(callback: ControlCallback): void
  /** A callback typed as `@types/ws` types it, `(err: Error) => void`: it too gets `null` once the frame is handed over. */
  ping(data: string | number | ArrayBufferView | ArrayBuffer | SharedArrayBuffer | Blob | null | undefined, mask: boolean | undefined, callback: (err: Error) => void): void
  /** Sends an unsolicited pong, as `ws`'s `pong()` (pings are answered anyway). Throws as `ping()` does; otherwise as `ping()`. */
  pong(data?: string | number | ArrayBufferView | ArrayBuffer | SharedArrayBuffer | Blob | null, mask?: boolean, callback?: ControlCallback): void
  pong(data: string | number | ArrayBufferView | ArrayBuffer | SharedArrayBuffer | Blob | null | undefined, callback: ControlCallback): void
  pong(callback: ControlCallback): void
  /** A callback typed as `@types/ws` types it, `(err: Error) => void`: it too gets `null` once the frame is handed over. */
  pong(data: string | number | ArrayBufferView | ArrayBuffer | SharedArrayBuffer | Blob | null | undefined, mask: boolean | undefined, callback: (err: Error) => void): void
  /**
   * As `ws`'s: stops reading the socket, for this connection and the next ones, until `resume()`; no
   * `message`, `ping` or `pong` event comes meanwhile (what was read ahead waits: it comes from the turn
   * after `resume()`, or before the connection's `error` or `close` should it end first). The heartbeat never takes a paused connection for dead; one the server
   * resets meanwhile is found at `resume()`, a `send()` or the next heartbeat ping (`ws`, reading on into its
   * buffer, finds it at once). `disconnect()` while paused cannot read the server's close either: it ends
   * the connection after `closeTimeout` (close 1006, not clean), and what the server sent meanwhile is not
   * delivered; `resume()` first to read it and the server's close.
   */
  pause(): void
  resume(): void
  /** Whether `pause()` is in effect. */
  readonly isPaused: boolean
  /** Hands back the queued, unsent messages, oldest first, and empties the queue (then those waiting for a Blob's bytes, a Blob as itself). */
  drainQueue(): Array<string | Buffer | Blob>
  /**
   * `for await (const data of client.messages())`: messages in order, with backpressure (past
   * `highWaterMark` [1024] buffered messages, or `highWaterMarkBytes` [16 MiB] buffered bytes, the socket
   * stops being read until half of them are taken). Ends when the client is disconnected, or gives up
   * after a clean close (a close handshake, and no error); any other giveup rejects the read after the last
   * message received with `ERR_GAVE_UP` (the last error as `cause`), as `createWebSocketStream()` fails.
   * Made before `connect()`, it waits for it, made on a client that gave up or was disconnected, its first read ends
   * it unless `connect()` came first. A pending read keeps the client alive, also while it waits to
   * reconnect; several pending `next()` calls are settled in order.
   */
  messages(options?: {
    /** Buffered messages past which the socket stops being read [1024]. */
    highWaterMark?: number
    /** Buffered bytes (a text message counts its length) past which the socket stops being read [16 MiB]. */
    highWaterMarkBytes?: number
  }): AsyncIterableIterator<string | BinaryTypes[B]>
  /**
   * Resolves when the client is open (at once if it is), however many attempts that takes; rejects only
   * when it will not open: it gave up (`ERR_GAVE_UP`), `disconnect()` was called (`ERR_NOT_OPEN`) or
   * `signal` aborted (an `AbortError`, code `ABORT_ERR`); at once when it already gave up or was
   * disconnected and no `connect()` came since. Unlike `events.once(client, 'open')`, which rejects on the first `error` event even
   * though the client retries, a failed attempt does not reject it.
   */
  opened(options?: { signal?: AbortSignal }): Promise<OpenEventInfo>
  /** Keeps the process alive while the client is active (default). */
  ref(): this
  /** Lets the process exit while the client is active; a `disconnect()` under way still holds it until it settles. */
  unref(): this
}

/**
 * The process's counters: every client of every thread (a worker's, another test file's in a
 * runner that runs files in worker threads, as Vitest's default pool does), not only this thread's.
 */
export declare function clientStats(): ClientStats

/** A WebSocket's options: a ReconnectingWebSocket's, without those of reconnecting. */
export type WebSocketOptions<B extends BinaryType = BinaryType> = Omit<
  ReconnectingWebSocketOptions<B>,
  'minDelay' | 'maxDelay' | 'factor' | 'jitter' | 'maxRetries' | 'minUptime' | 'honorRetryAfter' | 'shouldReconnect' | 'startClosed'
>

/**
 * A WebSocket's EventEmitter events: a ReconnectingWebSocket's, but `close` as `ws` emits it. The
 * WHATWG `onclose` and `addEventListener('close')` get a `CloseEvent`, with `wasClean` too.
 */
export interface WebSocketEvents<B extends BinaryType = BinaryType> extends Omit<ReconnectingWebSocketEvents<B>, 'close'> {
  /** The close code and the reason's UTF-8 bytes, as `ws` passes them (`reason.toString()`). */
  close: [code: number, reason: Buffer]
}

/**
 * One connection, as `ws`'s and the DOM's WebSocket make: a client that never reconnects, for the
 * libraries that take a WebSocket class and reconnect on their own (graphql-ws's `webSocketImpl`,
 * stompjs's `webSocketFactory`, phoenix's `transport`...). A close is final (unless you call the
 * `connect()` or `reconnect()` it inherits); a connection that fails reports `error`, then `close`
 * with 1006, as `ws` does, whatever the arguments' shape. Its EventEmitter `close` is `ws`'s,
 * `(code, reason)` with the reason as a Buffer.
 */
export declare class WebSocket<B extends BinaryType = 'nodebuffer'> extends ReconnectingWebSocket<B> {
  constructor(
    url: string | URL | Provider<string | URL>,
    protocols?: string | string[] | Provider<string | string[] | null | undefined> | null,
    options?: Omit<WebSocketOptions<B>, 'protocols'>,
  )
  constructor(url: string | URL | Provider<string | URL>, options?: WebSocketOptions<B>)
  on<K extends keyof WebSocketEvents<B>>(event: K, listener: (this: this, ...args: WebSocketEvents<B>[K]) => void): this
  on(event: never, listener: (...args: any[]) => void): this
  once<K extends keyof WebSocketEvents<B>>(event: K, listener: (this: this, ...args: WebSocketEvents<B>[K]) => void): this
  once(event: never, listener: (...args: any[]) => void): this
  addListener<K extends keyof WebSocketEvents<B>>(event: K, listener: (this: this, ...args: WebSocketEvents<B>[K]) => void): this
  addListener(event: never, listener: (...args: any[]) => void): this
  prependListener<K extends keyof WebSocketEvents<B>>(event: K, listener: (this: this, ...args: WebSocketEvents<B>[K]) => void): this
  prependListener(event: never, listener: (...args: any[]) => void): this
  prependOnceListener<K extends keyof WebSocketEvents<B>>(event: K, listener: (this: this, ...args: WebSocketEvents<B>[K]) => void): this
  prependOnceListener(event: never, listener: (...args: any[]) => void): this
  off<K extends keyof WebSocketEvents<B>>(event: K, listener: (this: this, ...args: WebSocketEvents<B>[K]) => void): this
  off(event: never, listener: (...args: any[]) => void): this
  removeListener<K extends keyof WebSocketEvents<B>>(event: K, listener: (this: this, ...args: WebSocketEvents<B>[K]) => void): this
  removeListener(event: never, listener: (...args: any[]) => void): this
  emit<K extends keyof WebSocketEvents<B>>(event: K, ...args: WebSocketEvents<B>[K]): boolean
  emit(event: never, ...args: any[]): boolean
  listeners<K extends keyof WebSocketEvents<B>>(event: K): Array<(...args: WebSocketEvents<B>[K]) => void>
  listeners(event: never): Function[]
  rawListeners<K extends keyof WebSocketEvents<B>>(event: K): Array<(...args: WebSocketEvents<B>[K]) => void>
  rawListeners(event: never): Function[]
  /** `createWebSocketStream`, where `ws` has it too. */
  static createWebSocketStream: typeof createWebSocketStream
}


/** reconnecting-websocket / partysocket option names (aliases of ours, or theirs alone). */
export interface RwsCompatOptions {
  /** = `maxDelay` [10000 in their mode] */
  maxReconnectionDelay?: number
  /** = `minDelay` [1000 + random × 4000, drawn once per process, in their mode] */
  minReconnectionDelay?: number
  /** = `factor` [1.3 in their mode] */
  reconnectionDelayGrowFactor?: number
  /** = `connectTimeout` [4000 in their mode] */
  connectionTimeout?: number
  /** Queue bound; past it the newest message is dropped and reported by a `drop` event [Infinity]. */
  maxEnqueuedMessages?: number
  /** Logs `'RWS>', ...` lines [false]. */
  debug?: boolean
  /** partysocket: where debug lines go [console.log]. */
  debugLogger?: (...args: unknown[]) => void
  /** Accepted and ignored: redial-ws brings its own socket. */
  WebSocket?: unknown
  /** partysocket: decides on server closes (return false to stop). */
  shouldReconnectOnClose?: (event: CloseEvent) => boolean
}

export interface WhatwgEventMap {
  open: Event
  message: MessageEvent
  close: CloseEvent
  error: ErrorEvent
}

/** `addEventListener`'s options, as the DOM's. */
export interface WhatwgListenerOptions {
  /** Removed once called (any truthy value, as the DOM converts it). */
  once?: boolean
  /** Removed when the signal aborts; not added if it has aborted already. */
  signal?: AbortSignal
  /** Accepted, without effect: the client is the only target. */
  capture?: boolean
  /** Accepted, without effect: the client's events are not cancelable. */
  passive?: boolean
}

/** The DOM's EventInit. */
export interface EventInit {
  bubbles?: boolean
  /** Only a cancelable event's `preventDefault()` sets `defaultPrevented` (the client's events are not). */
  cancelable?: boolean
  composed?: boolean
}

/**
 * The events of the WHATWG API, shaped as the DOM's: `currentTarget` is the client while its
 * listeners run (null otherwise), `stopImmediatePropagation()` keeps the listeners after the current
 * one (and after `on<type>`) from being called.
 */
export declare class Event {
  /** The DOM's form. */
  constructor(type: string, init?: EventInit)
  /** redial-ws' form: the target (an object that is not a plain `{ ... }`). */
  constructor(type: string, target?: unknown)
  readonly type: string
  readonly target: unknown
  readonly currentTarget: unknown
  readonly bubbles: boolean
  readonly cancelable: boolean
  readonly composed: boolean
  readonly defaultPrevented: boolean
  /** `performance.now()` when the event was made. */
  readonly timeStamp: number
  /** No effect beyond the DOM's: the client is the only target, there is nothing to propagate to. */
  stopPropagation(): void
  stopImmediatePropagation(): void
  preventDefault(): void
  composedPath(): unknown[]
}

export interface MessageEventInit extends EventInit {
  /** null if not given. */
  data?: string | BinaryTypes[BinaryType]
}

/** `data`: a text message's string, or a binary message as the client's `binaryType` delivers it. */
export declare class MessageEvent extends Event {
  /** The DOM's form: `new MessageEvent('message', { data })`. */
  constructor(type: 'message', init: MessageEventInit)
  /**
   * redial-ws' form. A first argument `'message'` followed by a plain object, or alone, is the
   * DOM's form (alone: `data` is null).
   */
  constructor(data: unknown, target?: unknown)
  /** (null for an event made without `data`, which the client never dispatches.) */
  readonly data: string | BinaryTypes[BinaryType]
}

export interface CloseEventInit extends EventInit {
  /** 0 if not given, as in the DOM. */
  code?: number
  reason?: string
  /** false if not given, as in the DOM. */
  wasClean?: boolean
}

export declare class CloseEvent extends Event {
  /** The DOM's form: `new CloseEvent('close', { code, reason, wasClean })` (a string first argument). */
  constructor(type: string, init?: CloseEventInit)
  /** redial-ws' form; its defaults are 1000, '' and true. */
  constructor(code?: number, reason?: string, wasClean?: boolean, target?: unknown)
  readonly code: number
  readonly reason: string
  readonly wasClean: boolean
}

export interface ErrorEventInit extends EventInit {
  /** '' if not given. */
  message?: string
  /** null if not given (any value, as the DOM's; the client's own events carry a RedialError). */
  error?: unknown
}

export declare class ErrorEvent extends Event {
  /** The DOM's form: `new ErrorEvent('error', { message, error })` (a string first argument). */
  constructor(type: string, init?: ErrorEventInit)
  constructor(error: Error, target?: unknown)
  readonly message: string
  /** (null for an event made without `error`, which the client never dispatches.) */
  readonly error: RedialError
}
