//! The events a client reports: what the connection and the driver produce, in order, and
//! `delivery` hands to JS.

use std::ops::{Index, Range};
use std::sync::Arc;

use tungstenite::{Bytes, Utf8Bytes};

use crate::errors::ConnError;
pub use crate::frame::Small;
use crate::payload::Payload;
use crate::reader::SharedReader;

/// An event for one client, in the order the driver produced it.
pub enum JsEvent {
    Connecting {
        attempt: u32,
    },
    /// The server's 101 answer as received (status line and headers), just before `Open`: JS
    /// parses it only for an `upgrade` listener.
    Upgrade(Bytes),
    Open {
        protocol: Option<String>,
        /// The server's `Sec-WebSocket-Extensions` answer, when it accepted one.
        extensions: Option<String>,
    },
    Text(Utf8Bytes),
    /// Small text messages read one after another (see `JsEvent::push_text`).
    Texts(Box<TextRun>),
    Binary(Payload),
    /// Small binary messages read one after another (see `JsEvent::push_binary`).
    Binaries(Box<BinaryRun>),
    Error(ConnError),
    /// The connection began its close handshake (the peer's close frame answered, or, with the
    /// error, the client failed it): its `Close` follows when the TCP connection ends.
    Closing(Option<ConnError>),
    Close {
        code: u16,
        reason: String,
        was_clean: bool,
        will_reconnect: bool,
        /// A `reconnect()` call ended the connection (reconnecting-websocket's mode fired this close already).
        by_reconnect: bool,
        /// The machine's count of consecutive failures once this close is accounted for: what
        /// the next attempt reports (reconnecting-websocket's `retryCount`).
        retries: u32,
        /// The generation of the driver that reports it (a `connect()` may have started another).
        gen: u32,
        /// The client's `connect()` and `reconnect()` calls the driver had taken when it decided
        /// what follows this close (`Shared::restarts`): JS knows that a call it made since has
        /// started the client again. 0: the driver's last word (it crashed), whatever JS called.
        restarts: u32,
    },
    Reconnecting {
        attempt: u32,
        delay_ms: u64,
        /// As `Close`'s: JS ignores a wait announced before its latest call, which ended it.
        restarts: u32,
    },
    GiveUp {
        attempts: u32,
        reason: &'static str,
        last_error: Option<ConnError>,
        /// As `Close`'s.
        gen: u32,
    },
    Ping(Bytes),
    Pong(Bytes),
    /// Messages sent with a callback were written (or otherwise settled): JS takes their
    /// tickets from the outbox (`clientTakeSettled`).
    Sent,
    /// The attempt followed a redirect to this address (`followRedirects`), before its outcome.
    Redirect(String),
    /// Ask the user's `lookup` for `host`'s addresses; answer with `lookupAnswer(request, ...)`.
    Lookup {
        request: u64,
        host: String,
        family: u8,
    },
    /// Ask the user's `tls.checkServerIdentity` about `host`'s verified chain (DER, leaf first);
    /// answer with `identityAnswer(request, error)`.
    Identity {
        request: u64,
        host: String,
        chain: Vec<Vec<u8>>,
    },
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
    /// The `disconnect()` calls numbered up to `upto` completed, and the driver goes on (a
    /// `connect()` came after them); `discarded` queued messages were dropped (reported, not silent).
    DisconnectDone {
        discarded: u32,
        upto: u32,
    },
    /// The driver of generation `gen` has exited, having received the `disconnect()` calls
    /// numbered up to `upto`; a disconnect that finished it discarded `discarded` queued messages.
    Idle {
        gen: u32,
        discarded: u32,
        upto: u32,
    },
    /// A process warning not tied to a live client.
    Warning {
        code: &'static str,
        message: String,
        /// About this occurrence (`lib/wire.js` shows each message once).
        detail: String,
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
        if text.len() > TextRun::MAX_MESSAGE || !join_run(events, Small::Text(&text)) {
            events.push(JsEvent::Text(text));
        }
    }

    /// As `push_text`, for a binary message.
    pub fn push_binary(events: &mut Vec<JsEvent>, data: Payload) {
        if data.len() > BinaryRun::MAX_MESSAGE || !join_run(events, Small::Binary(&data)) {
            events.push(JsEvent::Binary(data));
        }
    }

    /// As `push_text` and `push_binary`, for a small message borrowed from the read buffer
    /// (`Decoder::take_small`).
    pub fn push_small(events: &mut Vec<JsEvent>, message: Small<'_>) {
        if !join_run(events, message) {
            events.push(match message {
                Small::Text(t) => JsEvent::Text(t.to_owned().into()),
                Small::Binary(b) => JsEvent::Binary(Payload::copy_from(b)),
            });
        }
    }

    /// Bytes this event counts for in the read bound (see `ReadGate`), if it counts.
    pub fn payload_len(&self) -> usize {
        match self {
            JsEvent::Text(t) => t.len(),
            JsEvent::Texts(run) => run.bytes(),
            JsEvent::Binaries(run) => run.bytes(),
            JsEvent::Binary(b) => b.len(),
            JsEvent::Ping(b) | JsEvent::Pong(b) => b.len(),
            _ => 0,
        }
    }

    /// How many frames read from the socket this event carries (each counts against the read
    /// bound with its payload); 0 for an event that was not read.
    pub fn messages(&self) -> usize {
        match self {
            JsEvent::Texts(run) => run.messages(),
            JsEvent::Binaries(run) => run.messages(),
            JsEvent::Text(_) | JsEvent::Binary(_) | JsEvent::Ping(_) | JsEvent::Pong(_) => 1,
            _ => 0,
        }
    }

    /// The event is something read from the socket (it counts against the read bound).
    pub fn is_read(&self) -> bool {
        self.messages() > 0
    }
}

/// Appends `message` (at most `MAX_MESSAGE` bytes) to the run of its kind that ends `events`, or
/// makes one with the small message of its kind that ends them; false when neither is there.
fn join_run(events: &mut [JsEvent], message: Small<'_>) -> bool {
    let Some(last) = events.last_mut() else { return false };
    let run = match (&mut *last, message) {
        (JsEvent::Texts(run), Small::Text(t)) if run.has_room(t.len()) => {
            run.push(t);
            return true;
        }
        (JsEvent::Binaries(run), Small::Binary(b)) if run.has_room(b.len()) => {
            run.push(b);
            return true;
        }
        (JsEvent::Text(prev), Small::Text(t)) if prev.len() <= TextRun::MAX_MESSAGE => {
            JsEvent::Texts(Run::of(prev.as_str(), t))
        }
        (JsEvent::Binary(prev), Small::Binary(b)) if prev.len() <= BinaryRun::MAX_MESSAGE => {
            JsEvent::Binaries(Run::of(&prev[..], b))
        }
        _ => return false,
    };
    *last = run;
    true
}

/// What a run keeps its messages in, end to end: a `String` for texts, a `Vec<u8>` for binaries.
pub trait RunData: Index<Range<usize>> {
    fn with_capacity(bytes: usize) -> Self;
    fn append(&mut self, message: &Self::Output);
    fn size(&self) -> usize;
    fn len_of(message: &Self::Output) -> usize;
}

impl RunData for String {
    fn with_capacity(bytes: usize) -> Self {
        String::with_capacity(bytes)
    }
    fn append(&mut self, message: &str) {
        self.push_str(message);
    }
    fn size(&self) -> usize {
        self.len()
    }
    fn len_of(message: &str) -> usize {
        message.len()
    }
}

impl RunData for Vec<u8> {
    fn with_capacity(bytes: usize) -> Self {
        Vec::with_capacity(bytes)
    }
    fn append(&mut self, message: &[u8]) {
        self.extend_from_slice(message);
    }
    fn size(&self) -> usize {
        self.len()
    }
    fn len_of(message: &[u8]) -> usize {
        message.len()
    }
}

/// Small messages of one kind from one client, read one after another, copied end to end. A
/// message of its own is a reference into the socket's read buffer, whose count the tokio worker
/// raises and the JS thread lowers, one event in each queue it passes through (and, for a binary,
/// one Buffer with a backing store of its own); a run is one event and three allocations for up
/// to `MAX_MESSAGES` messages.
pub struct Run<D> {
    data: D,
    /// Where each message ends in `data`.
    ends: Vec<u32>,
}

/// Texts (see `Run`).
pub type TextRun = Run<String>;
/// Binary messages (see `Run`).
pub type BinaryRun = Run<Vec<u8>>;

impl<D: RunData> Run<D> {
    /// Messages up to this size join a run; copying larger ones costs more than it saves.
    pub const MAX_MESSAGE: usize = 1024;
    /// A run ends at this many messages, or once it holds `MAX_BYTES`; the next message starts another.
    const MAX_MESSAGES: usize = 512;
    const MAX_BYTES: usize = 64 * 1024;

    fn of(first: &D::Output, second: &D::Output) -> Box<Self> {
        let mut data = D::with_capacity((D::len_of(first) + D::len_of(second)) * 4);
        data.append(first);
        let first_end = data.size() as u32;
        data.append(second);
        let mut ends = Vec::with_capacity(8);
        ends.extend([first_end, data.size() as u32]);
        Box::new(Run { data, ends })
    }

    fn has_room(&self, len: usize) -> bool {
        self.ends.len() < Self::MAX_MESSAGES && self.data.size() + len <= Self::MAX_BYTES
    }

    fn push(&mut self, message: &D::Output) {
        self.data.append(message);
        self.ends.push(self.data.size() as u32);
    }

    /// The number of messages (two or more).
    pub fn messages(&self) -> usize {
        self.ends.len()
    }

    /// Their payload bytes.
    pub fn bytes(&self) -> usize {
        self.data.size()
    }

    /// The messages, in order.
    pub fn iter(&self) -> impl Iterator<Item = &D::Output> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let message = &self.data[start..end as usize];
            start = end as usize;
            message
        })
    }
}

impl BinaryRun {
    /// The run as JS takes it (`event::BINARY_BATCH`): the messages end to end, then where each
    /// ends and their count, as little-endian u32s.
    pub fn into_wire(self) -> Vec<u8> {
        let mut out = self.data;
        out.reserve(4 * (self.ends.len() + 1));
        for end in &self.ends {
            out.extend_from_slice(&end.to_le_bytes());
        }
        out.extend_from_slice(&(self.ends.len() as u32).to_le_bytes());
        out
    }
}

/// What `shouldReconnect(info)` receives.
pub enum PolicyInfo {
    Close {
        code: u16,
        reason: String,
        /// The close handshake completed (the close event's `wasClean`).
        was_clean: bool,
        /// The client failed the connection (`code` is the client's own): the error's code.
        error: Option<&'static str>,
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
            (JsEvent::Binary(Payload::copy_from(&[1, 2, 3])), 3),
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
            JsEvent::Closing(None),
            JsEvent::DisconnectDone { discarded: 3, upto: 1 },
            JsEvent::Idle {
                gen: 1,
                discarded: 0,
                upto: 1,
            },
            JsEvent::Warning {
                code: "W",
                message: "a long message that is not a payload".into(),
                detail: String::new(),
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
    fn small_binaries_in_a_row_travel_as_one_run_apart_from_texts() {
        let mut events = Vec::new();
        JsEvent::push_binary(&mut events, Payload::copy_from(&[1, 2]));
        JsEvent::push_small(&mut events, Small::Binary(&[3]));
        JsEvent::push_small(&mut events, Small::Binary(&[]));
        JsEvent::push_small(&mut events, Small::Text("t"));
        JsEvent::push_small(&mut events, Small::Text("u"));
        JsEvent::push_binary(&mut events, vec![9; BinaryRun::MAX_MESSAGE + 1].into());
        JsEvent::push_small(&mut events, Small::Binary(&[4]));
        let [JsEvent::Binaries(run), JsEvent::Texts(texts), JsEvent::Binary(large), JsEvent::Binary(last)] =
            &events[..]
        else {
            panic!("not a binary run, a text run, a large binary and a binary");
        };
        assert_eq!(run.iter().collect::<Vec<_>>(), [&[1, 2][..], &[3], &[]]);
        assert_eq!((run.messages(), run.bytes()), (3, 3));
        assert_eq!(texts.iter().collect::<Vec<_>>(), ["t", "u"]);
        assert_eq!((large.len(), &last[..]), (BinaryRun::MAX_MESSAGE + 1, &[4][..]));
    }

    #[test]
    fn a_binary_run_goes_to_js_with_its_ends_and_count_after_the_messages() {
        let mut events = Vec::new();
        for m in [&b"ab"[..], b"", b"cde"] {
            JsEvent::push_small(&mut events, Small::Binary(m));
        }
        let Some(JsEvent::Binaries(run)) = events.pop() else {
            panic!("not a run")
        };
        let mut expected = b"abcde".to_vec();
        for n in [2u32, 2, 5, 3] {
            expected.extend_from_slice(&n.to_le_bytes());
        }
        assert_eq!(run.into_wire(), expected);
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
