//! The read side of an uncompressed connection, shared by its driver and the JS thread.
//!
//! A message read on the tokio side reaches JS only after a second thread wakes up (the
//! thread-safe function's `uv_async_send`): on a VM that wake-up is most of a round trip. So while
//! a connection is quiet, its socket is read on the JS thread instead: a readiness watch in
//! the JS event loop (`napi_raw::SocketWatch`, set up by `direct`) reads the messages there and
//! runs their listeners at once, as Node's own sockets do. The driver hands the socket over when
//! its last read found it empty (`offer` → `JsEvent::ReadIdle` → `take_over`, so every message it
//! read is delivered first), once the connection has carried a data message: a connection that
//! only opens and closes, or hears nothing but heartbeats, would pay for a watch (its setup, its
//! memory, a hand-back for every pong) and gain nothing from it. The JS thread hands it back
//! (`give_back`) with anything that is not a data message (control frames, the close, an error),
//! after a full batch (a backlog goes the tokio way, in bounded batches), or when reading is
//! paused. Exactly one side reads at a time: the flag and the decoder live under one lock.
//!
//! A `wss:` connection is read the same way through its TLS session, which the connection's
//! writer holds (`writer::Writer::read_tls_now`): the JS thread decrypts what its watch finds,
//! and stops only when the session holds nothing whole, so that what is left is on the socket.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, ReadBuf};

use crate::frame::{Decoder, Incoming, Limits, Small, WireError};
use crate::napi_raw::{self, SharedSocket};
use crate::plain::ReadHalf;
use crate::shared::Shared;
use crate::stats::{self, Gauge, IoBuffers};
use crate::testing::{self, Probe};
use crate::writer::{SessionRead, Writer};

thread_local! {
    /// Set by `lib/`'s `init` on a JS thread whose runtime lets it watch sockets (Node's main event
    /// loop or a worker's), unless `REDIAL_WS_DIRECT_READ=0` there. Per thread, as the dispatch
    /// function and the teardown hook installed with it: the clients made on this thread carry it
    /// (`Shared::direct_read`); elsewhere connections are read on the tokio side only.
    static ENABLED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

pub fn enable(on: bool) {
    ENABLED.set(on && napi_raw::SocketWatch::available());
}

/// Whether this thread reads sockets on its event loop.
pub fn enabled() -> bool {
    ENABLED.get()
}

/// What the JS thread reads in one turn of the event loop at most, in messages and payload
/// bytes, before it gives the socket back (a backlog goes the tokio way, in batches).
pub const TURN_MESSAGES: usize = 4096;
pub const TURN_BYTES: usize = 1 << 20;

/// Whether `n` messages of `bytes` in all, read at one go, are a stream of larger messages: those
/// are read faster on the tokio side, where the copying and checking of their bytes runs beside
/// the JS thread. Small messages cost more per message than per byte, and the JS thread reads
/// them more cheaply itself (measured: `npm run bench`, receive 64 B against 1 KiB and 64 KiB).
pub fn is_stream(n: usize, bytes: usize) -> bool {
    const STREAM_BYTES: usize = 64 * 1024;
    const LARGE_MESSAGE: usize = 512;
    bytes >= STREAM_BYTES && bytes >= n.saturating_mul(LARGE_MESSAGE)
}

pub struct SharedReader {
    state: Mutex<ReaderState>,
    /// A share of the socket: open while this reader (or a watch on it) exists.
    socket: SharedSocket,
    /// The writer holding the TLS session a `wss:` connection is read through.
    session: Option<Arc<Writer>>,
    limits: Limits,
    /// The driver, woken when the JS thread gives the socket back.
    waker: AtomicWaker,
    /// The JS thread read a frame since the driver last looked: the peer is alive (heartbeat).
    alive: AtomicBool,
}

pub struct ReaderState {
    /// Keeps the socket open for as long as either side may read it.
    half: ReadHalf,
    decoder: Decoder,
    /// Counts the decoder's memory in `ioBuffers` while it holds any.
    read_buffer: Option<Gauge<IoBuffers>>,
    /// The JS thread reads; the driver waits.
    by_js: bool,
    /// The driver's last read found the socket empty and nothing left to decode.
    parked: bool,
    /// The driver's standing offer (`JsEvent::ReadIdle` with this number); voided by any read.
    offer: Option<u32>,
    offers: u32,
    /// The driver has read a data message: the connection carries traffic (see `offer`).
    carried_data: bool,
    /// What the JS thread read and gives back for the driver to handle: a frame it does not
    /// deliver itself, or how reading ended.
    handed: Option<Result<Incoming, WireError>>,
    /// The connection is gone: nobody reads any more.
    ended: bool,
}

impl ReaderState {
    fn sync_gauge(&mut self) {
        if self.decoder.holds_buffer() != self.read_buffer.is_some() {
            self.read_buffer = self.decoder.holds_buffer().then(Gauge::<IoBuffers>::new);
        }
    }
}

/// What the JS thread's read came to.
pub enum JsRead {
    /// Keep watching: the socket is empty for now.
    Continue,
    /// Give the socket back to the driver (`give_back`) once the messages are delivered.
    GiveBack,
    /// The connection is gone: stop watching.
    Ended,
}

impl SharedReader {
    pub fn new(half: ReadHalf, session: Option<Arc<Writer>>, leftover: BytesMut, limits: Limits) -> Self {
        SharedReader {
            socket: half.socket(),
            session,
            state: Mutex::new(ReaderState {
                half,
                decoder: Decoder::new(leftover),
                read_buffer: None,
                by_js: false,
                parked: false,
                offer: None,
                offers: 0,
                carried_data: false,
                handed: None,
                ended: false,
            }),
            limits,
            waker: AtomicWaker::new(),
            alive: AtomicBool::new(false),
        }
    }

    /// A share of the socket, for a watch on it.
    pub fn socket(&self) -> SharedSocket {
        self.socket.clone()
    }

    pub fn lock(&self) -> MutexGuard<'_, ReaderState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The driver's next frame: what the JS thread handed back first, else from the socket.
    /// Pending while the JS thread reads (the driver is woken when it gives the socket back).
    pub fn poll_frame(&self, st: &mut ReaderState, cx: &mut Context<'_>) -> Poll<Result<Incoming, WireError>> {
        if st.by_js {
            self.waker.register(cx.waker());
            return Poll::Pending;
        }
        let ReaderState { decoder, half, .. } = st;
        let polled = match (st.handed.take(), &self.session) {
            (Some(h), _) => Poll::Ready(h),
            (None, None) => decoder.poll_next(cx, half, &self.limits),
            (None, Some(writer)) => decoder.poll_next(cx, &mut SessionRead { writer, half }, &self.limits),
        };
        st.parked = polled.is_pending();
        if let Poll::Ready(Ok(Incoming::Text(_) | Incoming::Binary(_) | Incoming::Compressed { .. })) = &polled {
            st.carried_data = true;
        }
        if st.parked {
            // The JS thread may take the socket and hand it back before tokio reports it readable
            // again (it may never: the JS thread read what would have woken the driver).
            self.waker.register(cx.waker());
        } else {
            st.offer = None;
        }
        st.sync_gauge();
        polled
    }

    /// As `Decoder::poll_discard`, for the driver of a failed connection (the JS thread, which
    /// gave the socket back with the failure or never had it, reads no more: no offer follows).
    pub fn poll_discard(
        &self,
        st: &mut ReaderState,
        cx: &mut Context<'_>,
        budget: &mut usize,
    ) -> Poll<std::io::Result<bool>> {
        if st.by_js {
            self.waker.register(cx.waker());
            return Poll::Pending;
        }
        st.handed = None;
        st.offer = None;
        let ReaderState { decoder, half, .. } = st;
        let polled = match &self.session {
            None => decoder.poll_discard(cx, half, budget),
            Some(writer) => decoder.poll_discard(cx, &mut SessionRead { writer, half }, budget),
        };
        st.sync_gauge();
        polled
    }

    /// As `Decoder::take_small`, for the driver: what `poll_frame` would return first if it is a
    /// small message, taken without a copy of its own. None while the JS thread reads.
    pub fn take_small(&self, st: &mut ReaderState, max: usize, f: impl FnOnce(Small<'_>)) -> Option<usize> {
        if st.by_js || st.handed.is_some() {
            return None;
        }
        let len = st.decoder.take_small(&self.limits, max, f)?;
        st.parked = false;
        st.carried_data = true;
        st.offer = None;
        st.sync_gauge();
        Some(len)
    }

    /// After a read that found the socket empty: offers it to the JS thread, unless an offer is
    /// already standing or the connection has yet to carry a data message. Returns the offer's
    /// number (for `JsEvent::ReadIdle`).
    pub fn offer(&self, st: &mut ReaderState) -> Option<u32> {
        // Mid-message (a partial frame buffered), more of it is on its way: not quiet yet.
        if st.by_js || !st.parked || !st.carried_data || st.offer.is_some() || st.ended || st.decoder.holds_buffer() {
            return None;
        }
        st.offers = st.offers.wrapping_add(1);
        st.offer = Some(st.offers);
        Some(st.offers)
    }

    /// What the decoder holds of the frame or message being read (`Decoder::progress`).
    pub fn progress(&self) -> usize {
        self.lock().decoder.progress()
    }

    /// The peer was heard from on the JS thread since the last call.
    pub fn take_alive(&self) -> bool {
        self.alive.swap(false, Ordering::Relaxed)
    }

    /// The socket holds what nobody has read yet: whoever reads it (the JS thread, blocked by
    /// the application, say) is behind, which says nothing of the peer (heartbeat).
    pub fn has_unread(&self) -> bool {
        napi_raw::has_unread(&self.socket)
    }

    /// The connection is gone (the driver dropped it): nobody reads any more, the decoder's
    /// memory goes now, and a JS-thread watch is told at once (the socket shows readable), so
    /// that it lets go of the socket, which closes then.
    pub fn end(&self) {
        let mut st = self.lock();
        st.ended = true;
        st.handed = None;
        st.decoder = Decoder::new(BytesMut::new());
        st.read_buffer = None;
        // A standing offer is an event on its way to the JS thread that keeps the socket open too.
        if st.by_js || st.offer.is_some() {
            napi_raw::shutdown(&self.socket);
        }
    }

    /// The JS thread takes the socket on the driver's offer `offer`, if it still stands: the
    /// driver has read nothing since it made it, so everything it read is already on its way.
    pub fn take_over(&self, offer: u32) -> bool {
        let mut st = self.lock();
        if st.offer != Some(offer) || st.by_js || !st.parked || st.ended || st.handed.is_some() {
            return false;
        }
        st.offer = None;
        // The tokio worker need not wake for data the JS thread reads.
        st.by_js = st.half.unregister();
        if !st.by_js {
            // The driver keeps reading, on a registration its last read did not wait on.
            st.parked = false;
            self.waker.wake();
        }
        st.by_js
    }

    /// The JS thread gives the socket back after its read failed (`why`): the driver ends the
    /// connection with that error rather than read on from where the read stopped.
    pub fn fail(&self, why: &'static str) {
        {
            let mut st = self.lock();
            if !st.ended {
                st.handed = Some(Err(WireError::Internal(why)));
            }
            st.by_js = false;
            st.parked = false;
        }
        self.waker.wake();
    }

    /// The JS thread gives the socket back: the driver reads from here on.
    pub fn give_back(&self) {
        {
            let mut st = self.lock();
            st.by_js = false;
            st.parked = false;
        }
        self.waker.wake();
    }

    /// Reads on the JS thread: the data messages the socket holds now, at most `max_events` or
    /// about `max_bytes` (one batch per turn of the event loop), each given to `deliver`.
    pub fn read_for_js(
        &self,
        shared: &Shared,
        max_events: usize,
        max_bytes: usize,
        mut deliver: impl FnMut(Incoming),
    ) -> JsRead {
        let mut st = self.lock();
        if st.ended || !st.by_js {
            return JsRead::Ended;
        }
        if !shared.read_gate.open() {
            // Paused by JS, or still behind with what the driver read: the driver waits for it.
            return JsRead::GiveBack;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut io = SocketNow {
            socket: &self.socket,
            session: self.session.as_deref(),
            drained: false,
        };
        let (mut n, mut bytes) = (0, 0);
        let outcome = loop {
            if n >= max_events || bytes >= max_bytes || is_stream(n, bytes) {
                break JsRead::GiveBack;
            }
            match st.decoder.poll_next(&mut cx, &mut io, &self.limits) {
                // Fragments are left in the decoder, not on the socket, where the watch would see them.
                Poll::Pending if st.decoder.gave_way() => break JsRead::GiveBack,
                Poll::Pending => break JsRead::Continue,
                Poll::Ready(Ok(m @ Incoming::Text(_))) | Poll::Ready(Ok(m @ Incoming::Binary(_))) => {
                    bytes += match &m {
                        Incoming::Text(t) => t.len(),
                        Incoming::Binary(b) => b.len(),
                        _ => 0,
                    };
                    deliver(m);
                }
                Poll::Ready(other) => {
                    st.handed = Some(other);
                    break JsRead::GiveBack;
                }
            }
            n += 1;
        };
        if n > 0 || st.handed.is_some() {
            self.alive.store(true, Ordering::Relaxed);
        }
        let metrics = &shared.metrics;
        stats::add(&metrics.messages_received, n as u64);
        stats::add(&metrics.bytes_received, bytes as u64);
        testing::count(Probe::DirectMessages, n as u64);
        st.sync_gauge();
        outcome
    }
}

/// The socket read without waiting, for the JS thread (readiness comes from its watch, so
/// `Pending` registers nothing); through the TLS session of a `wss:` connection.
struct SocketNow<'a> {
    socket: &'a SharedSocket,
    session: Option<&'a Writer>,
    /// A read returned less than there was room for: the socket is empty for now, and asking
    /// again would only cost a system call (the watch fires again when more arrives; libuv
    /// reads the same way).
    drained: bool,
}

impl AsyncRead for SocketNow<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(writer) = this.session {
            return writer.read_tls_now(this.socket, &mut this.drained, buf);
        }
        if self.drained {
            return Poll::Pending;
        }
        let room = buf.remaining();
        match napi_raw::recv_now(self.socket, buf) {
            Ok(n) => {
                self.drained = n > 0 && n < room;
                Poll::Ready(Ok(()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::future::poll_fn;
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::time::Duration;

    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mut out = vec![0x80 | opcode, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    fn text(s: &str) -> Vec<u8> {
        frame(crate::frame::OPCODE_TEXT, s.as_bytes())
    }

    /// A reader over a real loopback connection, and the server's end of it.
    async fn connected() -> (Arc<SharedReader>, std::net::TcpStream, crate::plain::WriteHalf) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (read, write) = crate::plain::split(client).unwrap();
        let limits = Limits {
            max_payload: 1 << 20,
            max_text: 1 << 20,
            deflate: false,
            replace_invalid_utf8: false,
            max_fragments: 0,
        };
        (
            Arc::new(SharedReader::new(read, None, BytesMut::new(), limits)),
            server,
            write,
        )
    }

    /// One poll of the driver's read, as the driver makes it.
    async fn driver_poll(r: &SharedReader) -> Poll<Result<Incoming, WireError>> {
        poll_fn(|cx| Poll::Ready(r.poll_frame(&mut r.lock(), cx))).await
    }

    /// The driver's next frame (waiting for it to arrive).
    async fn driver_next(r: &SharedReader) -> Incoming {
        let next = poll_fn(|cx| r.poll_frame(&mut r.lock(), cx));
        tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("a frame")
            .expect("no error")
    }

    /// The driver reads until the socket is empty, then offers it.
    async fn park_and_offer(r: &SharedReader) -> u32 {
        assert!(driver_poll(r).await.is_pending());
        r.offer(&mut r.lock()).expect("an offer")
    }

    /// A connected reader that the JS thread has taken on the driver's offer, and its client's state.
    async fn read_by_js() -> (Arc<SharedReader>, std::net::TcpStream, crate::plain::WriteHalf, Shared) {
        let (r, mut server, w) = connected().await;
        // Only a connection that carries messages is offered.
        server.write_all(&text("first")).unwrap();
        assert_eq!(driver_next(&r).await, Incoming::Text("first".into()));
        let offer = park_and_offer(&r).await;
        assert!(r.take_over(offer));
        (r, server, w, Shared::new(1, false))
    }

    #[test]
    fn only_larger_messages_in_quantity_are_a_stream() {
        assert!(is_stream(1, 64 * 1024), "one 64 KiB message");
        assert!(is_stream(100, 100 * 1024), "a hundred 1 KiB messages");
        assert!(!is_stream(1024, 64 * 1024), "64 B messages, however many");
        assert!(!is_stream(1, 16 * 1024), "a single mid-sized message");
    }

    /// What the JS thread reads, retrying while the socket is empty (the peer's bytes in flight)
    /// until `want` messages or another outcome.
    async fn js_read(r: &SharedReader, shared: &Shared, max: usize, want: usize) -> (Vec<Incoming>, JsRead) {
        let mut got = Vec::new();
        for _ in 0..500 {
            let outcome = r.read_for_js(shared, max, usize::MAX, |m| got.push(m));
            if !matches!(outcome, JsRead::Continue) || got.len() >= want {
                return (got, outcome);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("the JS read saw {} of {want} messages", got.len());
    }

    fn texts(v: &[Incoming]) -> Vec<String> {
        v.iter()
            .map(|m| match m {
                Incoming::Text(t) => t.as_str().to_string(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn the_js_thread_takes_the_socket_only_on_a_standing_offer() {
        let (r, mut server, _w) = connected().await;
        assert!(driver_poll(&r).await.is_pending());
        assert!(
            r.offer(&mut r.lock()).is_none(),
            "not offered before the connection carried a message"
        );
        server.write_all(&frame(crate::frame::OPCODE_PING, b"p")).unwrap();
        assert_eq!(driver_next(&r).await, Incoming::Ping(Bytes::from_static(b"p")));
        assert!(driver_poll(&r).await.is_pending());
        assert!(r.offer(&mut r.lock()).is_none(), "a control frame is not a message");
        server.write_all(&text("a")).unwrap();
        assert_eq!(driver_next(&r).await, Incoming::Text("a".into()));
        let first = park_and_offer(&r).await;
        assert!(r.offer(&mut r.lock()).is_none(), "one offer stands at a time");
        server.write_all(&text("a2")).unwrap();
        assert_eq!(driver_next(&r).await, Incoming::Text("a2".into()));
        // The driver read after offering: that message may still be on its way to JS.
        assert!(!r.take_over(first), "a read voids the offer");
        let second = park_and_offer(&r).await;
        assert_ne!(first, second);
        assert!(!r.take_over(first), "a stale offer is refused");
        assert!(r.take_over(second));
        assert!(!r.take_over(second), "taken once");
        server.write_all(&text("b")).unwrap();
        assert!(
            driver_poll(&r).await.is_pending(),
            "the driver does not read while the JS thread does"
        );
        let (got, outcome) = js_read(&r, &Shared::new(1, false), 100, 1).await;
        assert_eq!(texts(&got), ["b"]);
        assert!(matches!(outcome, JsRead::Continue));
        assert!(
            r.take_alive() && !r.take_alive(),
            "what the JS thread read proves the peer alive, once"
        );
    }

    #[tokio::test]
    async fn control_frames_go_back_to_the_driver_in_order() {
        let (r, mut server, _w, shared) = read_by_js().await;
        let mut bytes = [
            text("m0"),
            text("m1"),
            frame(crate::frame::OPCODE_PING, b"p"),
            text("m2"),
        ]
        .concat();
        for i in 3..20 {
            bytes.extend(text(&format!("m{i}")));
        }
        server.write_all(&bytes).unwrap();
        // Data messages up to the ping; the ping is the driver's (it answers it).
        let (got, outcome) = js_read(&r, &shared, 100, 2).await;
        assert_eq!(texts(&got), ["m0", "m1"]);
        assert!(matches!(outcome, JsRead::GiveBack));
        r.give_back();
        assert_eq!(driver_next(&r).await, Incoming::Ping(Bytes::from_static(b"p")));
        for i in 2..20 {
            assert_eq!(driver_next(&r).await, Incoming::Text(format!("m{i}").into()));
        }
    }

    #[tokio::test]
    async fn a_batch_bound_hands_the_backlog_to_the_driver_in_order() {
        let (r, mut server, _w, shared) = read_by_js().await;
        let bytes: Vec<u8> = (0..20).flat_map(|i| text(&format!("m{i}"))).collect();
        server.write_all(&bytes).unwrap();
        let (got, outcome) = js_read(&r, &shared, 5, 5).await;
        assert_eq!(texts(&got), ["m0", "m1", "m2", "m3", "m4"]);
        assert!(matches!(outcome, JsRead::GiveBack), "one batch per turn");
        r.give_back();
        for i in 5..20 {
            assert_eq!(driver_next(&r).await, Incoming::Text(format!("m{i}").into()));
        }
        assert_eq!(
            shared.metrics.messages_received.load(Ordering::Relaxed),
            5,
            "the JS thread counts what it read"
        );
    }

    #[tokio::test]
    async fn a_paused_gate_hands_the_socket_back_unread() {
        let (r, mut server, _w, shared) = read_by_js().await;
        server.write_all(&text("kept")).unwrap();
        shared.read_gate.set(true);
        let mut got = Vec::new();
        assert!(matches!(
            r.read_for_js(&shared, 100, usize::MAX, |m| got.push(m)),
            JsRead::GiveBack
        ));
        assert!(got.is_empty());
        r.give_back();
        shared.read_gate.set(false);
        assert_eq!(driver_next(&r).await, Incoming::Text("kept".into()));
    }

    #[tokio::test]
    async fn ending_while_the_js_thread_reads_shuts_the_socket_and_frees_the_buffer() {
        let (r, mut server, w, shared) = read_by_js().await;
        // Half a frame: the decoder holds a buffer.
        server.write_all(&[0x81, 5, b'h', b'e']).unwrap();
        let (got, _) = js_read(&r, &shared, 100, 0).await;
        assert!(got.is_empty());
        assert!(r.lock().read_buffer.is_some());
        drop(w);
        r.end();
        assert!(r.lock().read_buffer.is_none(), "the connection's buffer goes with it");
        // The reader still holds the socket (the JS thread's watch has yet to let go), but the
        // peer is told at once, as closing it would.
        let mut buf = [0u8; 16];
        assert_eq!(server.read(&mut buf).unwrap(), 0, "the peer sees the connection closed");
        assert!(matches!(r.read_for_js(&shared, 100, usize::MAX, |_| ()), JsRead::Ended));
        assert!(r.offer(&mut r.lock()).is_none(), "nothing is offered once ended");
    }
}
