//! The events a client reports: what the connection and the driver produce, in order, and
//! `delivery` hands to JS.

use std::sync::Arc;

use tungstenite::{Bytes, Utf8Bytes};

use crate::errors::ConnError;
use crate::reader::SharedReader;

/// An event for one client, in the order the driver produced it.
pub enum JsEvent {
    Connecting {
        attempt: u32,
    },
    Open {
        protocol: Option<String>,
        /// The server's `Sec-WebSocket-Extensions` answer, when it accepted one.
        extensions: Option<String>,
    },
    Text(Utf8Bytes),
    Binary(Bytes),
    Error(ConnError),
    Close {
        code: u16,
        reason: String,
        was_clean: bool,
        will_reconnect: bool,
        /// The machine's count of consecutive failures once this close is accounted for: what
        /// the next attempt reports (reconnecting-websocket's `retryCount`).
        retries: u32,
    },
    Reconnecting {
        attempt: u32,
        delay_ms: u64,
    },
    GiveUp {
        attempts: u32,
        reason: &'static str,
        last_error: Option<ConnError>,
    },
    Ping(Bytes),
    Pong(Bytes),
    /// Run the user's url/headers/protocols providers for this attempt; answer with `provide(id, ...)`.
    Provide {
        id: u64,
        attempt: u32,
    },
    /// Ask the user's `shouldReconnect`; answer with `decide(id, verdict)`.
    Decide {
        id: u64,
        attempt: u32,
        info: PolicyInfo,
        default: bool,
    },
    /// A `disconnect()` completed; `discarded` queued messages were dropped (reported, not silent).
    DisconnectDone {
        discarded: u32,
    },
    /// The driver of generation `gen` has exited; a disconnect that finished it discarded `discarded` queued messages.
    Idle {
        gen: u32,
        discarded: u32,
    },
    /// A process warning not tied to a live client.
    Warning {
        code: &'static str,
        message: String,
    },
    /// For the JS thread, not for JS: the driver offers it the quiet socket (`reader::SharedReader`).
    ReadIdle {
        reader: Arc<SharedReader>,
        offer: u32,
    },
}

impl JsEvent {
    /// Bytes this event counts for in the read bound (see `ReadGate`), if it counts.
    pub fn payload_len(&self) -> usize {
        match self {
            JsEvent::Text(t) => t.len(),
            JsEvent::Binary(b) | JsEvent::Ping(b) | JsEvent::Pong(b) => b.len(),
            _ => 0,
        }
    }

    /// The event is something read from the socket (it counts against the read bound).
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            JsEvent::Text(_) | JsEvent::Binary(_) | JsEvent::Ping(_) | JsEvent::Pong(_)
        )
    }
}

/// What `shouldReconnect(info)` receives.
pub enum PolicyInfo {
    Close {
        code: u16,
        reason: String,
    },
    Handshake {
        status: u16,
        headers: Vec<(String, String)>,
    },
    Error {
        code: &'static str,
    },
}

impl PolicyInfo {
    pub fn from_error(e: &ConnError) -> Self {
        match e.status {
            Some(status) => PolicyInfo::Handshake {
                status,
                headers: e.headers.clone(),
            },
            None => PolicyInfo::Error { code: e.code },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors;

    #[test]
    fn only_what_was_read_counts_against_the_read_bound() {
        let read = [
            (JsEvent::Text("héllo".into()), 6),
            (JsEvent::Binary(Bytes::from_static(&[1, 2, 3])), 3),
            (JsEvent::Ping(Bytes::from_static(b"p")), 1),
            (JsEvent::Pong(Bytes::new()), 0),
        ];
        for (event, len) in &read {
            assert!(event.is_read());
            assert_eq!(event.payload_len(), *len);
        }
        let other = [
            JsEvent::Connecting { attempt: 1 },
            JsEvent::Open {
                protocol: None,
                extensions: None,
            },
            JsEvent::Error(ConnError::new(errors::ERR_CONNECT, "x")),
            JsEvent::DisconnectDone { discarded: 3 },
            JsEvent::Idle { gen: 1, discarded: 0 },
            JsEvent::Warning {
                code: "W",
                message: "a long message that is not a payload".into(),
            },
        ];
        for event in &other {
            assert!(!event.is_read());
            assert_eq!(event.payload_len(), 0);
        }
    }

    #[test]
    fn policy_info_is_a_handshake_only_with_a_status() {
        let mut e = ConnError::new(errors::ERR_HANDSHAKE, "HTTP 503");
        assert!(matches!(PolicyInfo::from_error(&e), PolicyInfo::Error { code } if code == errors::ERR_HANDSHAKE));
        e.status = Some(503);
        e.headers = vec![("retry-after".into(), "1".into())];
        match PolicyInfo::from_error(&e) {
            PolicyInfo::Handshake { status, headers } => assert_eq!((status, headers), (503, e.headers.clone())),
            _ => panic!("not a handshake"),
        }
    }
}
