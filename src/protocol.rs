//! The wire protocol between the addon and `lib/`: the one place its numbers are written.
//! JS reads them at load time with `wireProtocol()`.
//!
//! Events reach JS as one flat array per delivery batch,
//! `[client, tag, payload, client, tag, payload, ...]`: `client` is the JS client object
//! (`undefined` for a process warning), `tag` one of [`event`], and `payload` depends on the
//! tag. A run of text messages of one client travels as one `event::TEXT_BATCH` whose payload
//! is an array of its strings (made by the addon; a one-call `Array.of` for the array).
//! A run of one (a quiet connection's usual message) is `event::TEXT` with the string itself.
//! A run of small binary messages is one `event::BINARY_BATCH` whose payload is one Buffer: the
//! messages end to end, then where each ends and their count, as little-endian u32s
//! (`events::BinaryRun::into_wire`); JS hands out views of it.
//!
//! `clientSendText` / `clientSendBinary` return one of [`send`].

use napi_derive::napi;

/// Tags of the delivery batch.
pub mod event {
    pub const OPEN: u32 = 0;
    pub const TEXT: u32 = 1;
    pub const BINARY: u32 = 2;
    pub const ERROR: u32 = 3;
    pub const CLOSE: u32 = 4;
    pub const RECONNECTING: u32 = 5;
    pub const GIVEUP: u32 = 6;
    pub const IDLE: u32 = 7;
    pub const CONNECTING: u32 = 8;
    pub const DISCONNECTED: u32 = 9;
    pub const WARNING: u32 = 10;
    pub const PING: u32 = 11;
    pub const PONG: u32 = 12;
    pub const PROVIDE: u32 = 13;
    pub const DECIDE: u32 = 14;
    pub const TEXT_BATCH: u32 = 15;
    pub const BINARY_BATCH: u32 = 16;
    pub const UPGRADE: u32 = 17;
    pub const SENT: u32 = 18;
    pub const LOOKUP: u32 = 19;
    pub const REDIRECT: u32 = 20;
    pub const IDENTITY: u32 = 21;
    pub const CLOSING: u32 = 22;
}

/// What `send()` did with a message.
pub mod send {
    pub const SENT: u32 = 0;
    pub const QUEUED: u32 = 1;
    /// The client is closed (`disconnect()`, or it gave up).
    pub const NOT_OPEN: u32 = 2;
    pub const QUEUE_FULL: u32 = 3;
    /// Queued after dropping older messages: JS fetches them with `clientTakeDropped`.
    pub const DROPPING: u32 = 4;
    /// Sent but corked: JS calls `clientUncork` at the end of this turn.
    pub const CORKED: u32 = 5;
    /// No connection, and the queue is off.
    pub const NOT_CONNECTED: u32 = 6;
    /// Handed to the connection's driver, which writes it (a ticket settles when it has).
    pub const HANDED: u32 = 7;
}

#[napi(object)]
pub struct WireEvents {
    pub open: u32,
    pub binary: u32,
    pub error: u32,
    pub close: u32,
    pub reconnecting: u32,
    pub giveup: u32,
    pub idle: u32,
    pub connecting: u32,
    pub disconnected: u32,
    pub warning: u32,
    pub ping: u32,
    pub pong: u32,
    pub provide: u32,
    pub decide: u32,
    pub text_batch: u32,
    pub text: u32,
    pub binary_batch: u32,
    pub upgrade: u32,
    pub sent: u32,
    pub lookup: u32,
    pub redirect: u32,
    pub identity: u32,
    pub closing: u32,
}

#[napi(object)]
pub struct WireSend {
    pub sent: u32,
    pub queued: u32,
    pub not_open: u32,
    pub queue_full: u32,
    pub dropping: u32,
    pub corked: u32,
    pub not_connected: u32,
    pub handed: u32,
}

/// Binary messages from this size on reach JS as external Buffers over memory Rust owns (on the
/// main thread: `napi_raw::external_buffer`), not copies.
pub const EXTERNAL_FROM: usize = 16 * 1024;

#[napi(object)]
pub struct WireProtocol {
    pub events: WireEvents,
    pub send: WireSend,
    /// `EXTERNAL_FROM`.
    pub external_from: u32,
}

/// The event tags, send outcomes and the external Buffers' threshold, for `lib/` to read once at
/// load time.
#[napi]
pub fn wire_protocol() -> WireProtocol {
    WireProtocol {
        events: WireEvents {
            open: event::OPEN,
            binary: event::BINARY,
            error: event::ERROR,
            close: event::CLOSE,
            reconnecting: event::RECONNECTING,
            giveup: event::GIVEUP,
            idle: event::IDLE,
            connecting: event::CONNECTING,
            disconnected: event::DISCONNECTED,
            warning: event::WARNING,
            ping: event::PING,
            pong: event::PONG,
            provide: event::PROVIDE,
            decide: event::DECIDE,
            text_batch: event::TEXT_BATCH,
            text: event::TEXT,
            binary_batch: event::BINARY_BATCH,
            upgrade: event::UPGRADE,
            sent: event::SENT,
            lookup: event::LOOKUP,
            redirect: event::REDIRECT,
            identity: event::IDENTITY,
            closing: event::CLOSING,
        },
        send: WireSend {
            sent: send::SENT,
            queued: send::QUEUED,
            not_open: send::NOT_OPEN,
            queue_full: send::QUEUE_FULL,
            dropping: send::DROPPING,
            corked: send::CORKED,
            not_connected: send::NOT_CONNECTED,
            handed: send::HANDED,
        },
        external_from: EXTERNAL_FROM as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn distinct(values: &[u32]) -> bool {
        values.iter().collect::<BTreeSet<_>>().len() == values.len()
    }

    #[test]
    fn event_tags_are_distinct() {
        let e = wire_protocol().events;
        let tags = [
            e.open,
            e.binary,
            e.error,
            e.close,
            e.reconnecting,
            e.giveup,
            e.idle,
            e.connecting,
            e.disconnected,
            e.warning,
            e.ping,
            e.pong,
            e.provide,
            e.decide,
            e.text_batch,
            e.text,
            e.binary_batch,
            e.upgrade,
            e.sent,
            e.lookup,
            e.redirect,
            e.identity,
            e.closing,
        ];
        assert!(distinct(&tags), "{tags:?}");
    }

    #[test]
    fn send_outcomes_are_distinct() {
        let s = wire_protocol().send;
        let outcomes = [
            s.sent,
            s.queued,
            s.not_open,
            s.queue_full,
            s.dropping,
            s.corked,
            s.not_connected,
            s.handed,
        ];
        assert!(distinct(&outcomes), "{outcomes:?}");
    }
}
