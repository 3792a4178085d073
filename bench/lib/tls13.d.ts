import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'

/** TLS record content types (RFC 8446 section 5.1). */
export const HANDSHAKE: number
export const APPLICATION_DATA: number

/** `count` NewSessionTicket messages, as small as they come. */
export function sessionTickets(count: number): Buffer

/**
 * The server side of a TLS 1.3 connection on `raw`: `socket` to speak through first; `takeOver()`
 * (once OpenSSL has written all it will) returns a function that seals the next record.
 */
export function tls13Server(
  raw: Socket,
  pem: { key: string | Buffer; cert: string | Buffer },
): { socket: TLSSocket; takeOver: () => (type: number, content: Buffer) => Buffer }
