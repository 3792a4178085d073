//! Errors that travel from the connection driver to JavaScript, each with a
//! stable `code` (the `error` event's `err.code`).

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnError {
    pub code: &'static str,
    pub message: String,
    /// HTTP status of a rejected upgrade, when there was one.
    pub status: Option<u16>,
    /// Response headers of a rejected upgrade (for `shouldReconnect`).
    pub headers: Vec<(String, String)>,
    /// `Retry-After` of a 429/503 upgrade response, in ms.
    pub retry_after_ms: Option<u64>,
    /// The start of a rejected upgrade's body (`crate::body`), when it had one (boxed, as the
    /// next field: rare, and an error travels in every attempt's `Result`).
    pub body: Option<Box<bytes::Bytes>>,
    /// A 101 answer the client refused (a wrong accept key, a subprotocol not offered...), as
    /// received: its `upgrade` event comes before the error, as `ws` emits it.
    pub refused_101: Option<Box<bytes::Bytes>>,
}

impl ConnError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        ConnError {
            code,
            message: message.into(),
            status: None,
            headers: Vec::new(),
            retry_after_ms: None,
            body: None,
            refused_101: None,
        }
    }
}

/// What a panic said (its `&str` or `String` payload).
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

pub const ERR_CONNECT: &str = "ERR_CONNECT";
pub const ERR_CONNECT_TIMEOUT: &str = "ERR_CONNECT_TIMEOUT";
pub const ERR_HANDSHAKE: &str = "ERR_HANDSHAKE";
pub const ERR_SOCKET: &str = "ERR_SOCKET";
pub const ERR_PROTOCOL: &str = "ERR_PROTOCOL";
pub const ERR_INVALID_UTF8: &str = "ERR_INVALID_UTF8";
pub const ERR_MESSAGE_TOO_BIG: &str = "ERR_MESSAGE_TOO_BIG";
/// A message came in more fragments than `maxFragments` (closed with 1008, as `ws` closes).
pub const ERR_TOO_MANY_FRAGMENTS: &str = "ERR_TOO_MANY_FRAGMENTS";
/// The errors found in what the peer sent (a broken frame, bad text, a limit): the connection is
/// failed for them whatever else is under way.
pub const PEER_DATA: &[&str] = &[
    ERR_PROTOCOL,
    ERR_INVALID_UTF8,
    ERR_MESSAGE_TOO_BIG,
    ERR_TOO_MANY_FRAGMENTS,
];
/// The server closed with a code the default policy does not retry (1002, 1003, 1007, 1008).
pub const ERR_CLOSED: &str = "ERR_CLOSED";
/// No pong (nor any frame) within `pongTimeout` of a ping: the peer is dead or half-open.
pub const ERR_PONG_TIMEOUT: &str = "ERR_PONG_TIMEOUT";
/// A bug in redial-ws ended the client's task (a panic): the client is closed, nothing is left running.
pub const ERR_INTERNAL: &str = "ERR_INTERNAL";
/// A `url`/`headers`/`protocols` provider threw or rejected.
pub const ERR_PROVIDER: &str = "ERR_PROVIDER";

pub const ERR_TLS: &str = "ERR_TLS";
/// The server's certificate was rejected.
pub const ERR_TLS_CERT: &str = "ERR_TLS_CERT";
pub const ERR_PROXY: &str = "ERR_PROXY";
/// The proxy answered 407.
pub const ERR_PROXY_AUTH: &str = "ERR_PROXY_AUTH";
