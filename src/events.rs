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
    /// Text messages read one after another (see `JsEvent::push_text`).
    Texts(Box<TextRun>),
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
    /// Appends a text message read from the socket to a driver's `events`, joining it to the run
    /// of small texts that ends them, if any: a second small text in a row starts one.
    pub fn push_text(events: &mut Vec<JsEvent>, text: Utf8Bytes) {
        if text.len() > TextRun::MAX_MESSAGE || !join_run(events, &text) {
            events.push(JsEvent::Text(text));
        }
    }

    /// As `push_text`, for a small text borrowed from the read buffer (`Decoder::take_small_text`).
    pub fn push_str(events: &mut Vec<JsEvent>, text: &str) {
        if !join_run(events, text) {
            events.push(JsEvent::Text(text.to_owned().into()));
        }
    }

    /// Bytes this event counts for in the read bound (see `ReadGate`), if it counts.
    pub fn payload_len(&self) -> usize {
        match self {
            JsEvent::Text(t) => t.len(),
            JsEvent::Texts(run) => run.bytes(),
            JsEvent::Binary(b) | JsEvent::Ping(b) | JsEvent::Pong(b) => b.len(),
            _ => 0,
        }
    }

    /// How many frames read from the socket this event carries (each counts against the read
    /// bound with its payload); 0 for an event that was not read.
    pub fn messages(&self) -> usize {
        match self {
            JsEvent::Texts(run) => run.messages(),
            JsEvent::Text(_) | JsEvent::Binary(_) | JsEvent::Ping(_) | JsEvent::Pong(_) => 1,
            _ => 0,
        }
    }

    /// The event is something read from the socket (it counts against the read bound).
    pub fn is_read(&self) -> bool {
        self.messages() > 0
    }
}

/// Appends `text` (at most `TextRun::MAX_MESSAGE` bytes) to the run that ends `events`, or makes
/// one with the small text that ends them; false when neither is there.
fn join_run(events: &mut [JsEvent], text: &str) -> bool {
    let Some(last) = events.last_mut() else { return false };
    match last {
        JsEvent::Texts(run) if run.has_room(text.len()) => run.push(text),
        JsEvent::Text(prev) if prev.len() <= TextRun::MAX_MESSAGE => {
            let run = TextRun::of(prev.as_str(), text);
            *last = JsEvent::Texts(run);
        }
        _ => return false,
    }
    true
}

/// Small text messages of one client, read one after another, copied end to end into one
/// string. A text message of its own is a reference into the socket's read buffer, whose count
/// the tokio worker raises and the JS thread lowers, one event in each queue it passes through;
/// a run is one event and three allocations for up to `MAX_MESSAGES` messages.
pub struct TextRun {
    text: String,
    /// Where each message ends in `text`.
    ends: Vec<u32>,
}

impl TextRun {
    /// Messages up to this size join a run; copying larger ones costs more than it saves.
    pub const MAX_MESSAGE: usize = 1024;
    /// A run ends at this many messages, or once it holds `MAX_BYTES`; the next message starts another.
    const MAX_MESSAGES: usize = 512;
    const MAX_BYTES: usize = 64 * 1024;

    fn of(first: &str, second: &str) -> Box<Self> {
        let mut text = String::with_capacity((first.len() + second.len()) * 4);
        text.push_str(first);
        text.push_str(second);
        let mut ends = Vec::with_capacity(8);
        ends.extend([first.len() as u32, text.len() as u32]);
        Box::new(TextRun { text, ends })
    }

    fn has_room(&self, len: usize) -> bool {
        self.ends.len() < Self::MAX_MESSAGES && self.text.len() + len <= Self::MAX_BYTES
    }

    fn push(&mut self, message: &str) {
        self.text.push_str(message);
        self.ends.push(self.text.len() as u32);
    }

    /// The number of messages (two or more).
    pub fn messages(&self) -> usize {
        self.ends.len()
    }

    /// Their payload bytes.
    pub fn bytes(&self) -> usize {
        self.text.len()
    }

    /// The messages, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let message = &self.text[start..end as usize];
            start = end as usize;
            message
        })
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
    fn small_texts_in_a_row_travel_as_one_run_in_order() {
        let big = "b".repeat(TextRun::MAX_MESSAGE + 1);
        let mut events = Vec::new();
        JsEvent::push_text(&mut events, "one".into());
        assert!(matches!(&events[..], [JsEvent::Text(_)]), "a lone text stays as it is");
        for t in ["twö", "", "four"] {
            JsEvent::push_text(&mut events, t.into());
        }
        JsEvent::push_text(&mut events, big.as_str().into());
        events.push(JsEvent::Ping(Bytes::new()));
        JsEvent::push_text(&mut events, "five".into());
        let [JsEvent::Texts(run), JsEvent::Text(large), JsEvent::Ping(_), JsEvent::Text(five)] = &events[..] else {
            panic!("not a run, a large text, a ping and a text");
        };
        assert_eq!(run.iter().collect::<Vec<_>>(), ["one", "twö", "", "four"]);
        assert_eq!((run.messages(), run.bytes()), (4, 11));
        assert_eq!((events[0].messages(), events[0].payload_len()), (4, 11));
        assert_eq!((large.as_str(), five.as_str()), (big.as_str(), "five"));
    }

    #[test]
    fn a_run_is_bounded_in_messages_and_bytes() {
        let mut events = Vec::new();
        for _ in 0..TextRun::MAX_MESSAGES + 1 {
            JsEvent::push_text(&mut events, "m".into());
        }
        assert_eq!(
            events.iter().map(JsEvent::messages).collect::<Vec<_>>(),
            [TextRun::MAX_MESSAGES, 1]
        );
        let kib = "k".repeat(TextRun::MAX_MESSAGE);
        let mut events = Vec::new();
        for _ in 0..TextRun::MAX_BYTES / TextRun::MAX_MESSAGE + 1 {
            JsEvent::push_text(&mut events, kib.as_str().into());
        }
        assert_eq!(
            events.iter().map(JsEvent::payload_len).collect::<Vec<_>>(),
            [TextRun::MAX_BYTES, TextRun::MAX_MESSAGE]
        );
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
