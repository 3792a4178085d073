//! One WebSocket connection: the attempt (TCP connect + HTTP upgrade under one
//! deadline) and the full-duplex I/O of an open socket.
//!
//! The open socket is polled by hand rather than split into halves: one poll
//! writes what `send()` queued (stopping, not blocking, when the socket is
//! full) and then reads everything that is ready, so a peer that is busy
//! writing to us can never deadlock against our own writes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, Stream};
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use url::Url;

use crate::delivery::JsEvent;
use crate::driver::ReadGate;
use crate::errors::{self, ConnError};
use crate::queue::Queue;
use crate::stats::{self, Gauge, Metrics, GLOBAL};
use crate::transport::{self, Proxy, TlsOptions, Transport, Writer};

pub type Ws = WebSocketStream<Transport>;

#[derive(Clone, Debug)]
pub struct ConnConfig {
    pub connect_timeout: Duration,
    pub max_payload: usize,
    /// 0 disables heartbeats.
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub close_timeout: Duration,
    pub tls: TlsOptions,
    /// Built on the first `wss:` attempt, then shared by every later one.
    pub tls_config: Arc<std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>>>,
}

/// What one attempt connects to: fixed, or supplied per attempt by JS providers.
#[derive(Clone, Debug)]
pub struct AttemptParams {
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub protocols: Vec<String>,
    pub proxy: Option<Proxy>,
}

/// Where an attempt gets its parameters.
pub enum ParamSource {
    Fixed(Arc<AttemptParams>),
    /// Sent by JS after running the user's providers; bounded by the connect timeout.
    Provided(tokio::sync::oneshot::Receiver<Result<AttemptParams, ConnError>>),
}

impl ConnConfig {
    pub fn ws_config(&self) -> WebSocketConfig {
        // Small initial buffers keep an idle connection at a few KiB; they grow
        // (and tungstenite reserves whole frames) under load.
        WebSocketConfig::default()
            .read_buffer_size(4 * 1024)
            .write_buffer_size(0)
            .max_message_size(Some(self.max_payload))
            .max_frame_size(Some(self.max_payload))
    }
}

pub struct Opened {
    pub ws: Ws,
    pub protocol: Option<String>,
}

/// A connection attempt in flight. Dropping it drops whatever part of the
/// attempt exists (socket, half-done handshake): nothing is left running.
pub struct Attempt {
    fut: Pin<Box<dyn Future<Output = Result<Opened, ConnError>> + Send>>,
    _gauge: Gauge,
}

impl Attempt {
    pub fn start(cfg: &ConnConfig, params: ParamSource) -> Self {
        let cfg = cfg.clone();
        let fut = async move {
            let attempt = async {
                let params = match params {
                    ParamSource::Fixed(p) => p,
                    ParamSource::Provided(rx) => Arc::new(rx.await.unwrap_or_else(|_| {
                        Err(ConnError::new(errors::ERR_PROVIDER, "the providers were abandoned"))
                    })?),
                };
                connect(&cfg, &params).await
            };
            match tokio::time::timeout(cfg.connect_timeout, attempt).await {
                Ok(r) => r,
                Err(_) => Err(ConnError::new(
                    errors::ERR_CONNECT_TIMEOUT,
                    format!("no connection within {} ms", cfg.connect_timeout.as_millis()),
                )),
            }
        };
        Attempt {
            fut: Box::pin(fut),
            _gauge: Gauge::new(&GLOBAL.pending_attempts),
        }
    }
}

impl Future for Attempt {
    type Output = Result<Opened, ConnError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.fut.as_mut().poll(cx)
    }
}

async fn connect(cfg: &ConnConfig, params: &AttemptParams) -> Result<Opened, ConnError> {
    let url = &params.url;
    let stream = transport::open(url, params.proxy.as_ref(), &cfg.tls_config, &cfg.tls).await?;
    let request = build_request(params)?;
    let (ws, response) = tokio_tungstenite::client_async_with_config(request, stream, Some(cfg.ws_config()))
        .await
        .map_err(handshake_error)?;
    let protocol = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(Opened { ws, protocol })
}

fn build_request(params: &AttemptParams) -> Result<tungstenite::handshake::client::Request, ConnError> {
    let invalid = |e: &dyn std::fmt::Display| ConnError::new(errors::ERR_HANDSHAKE, e.to_string());
    let mut request = params.url.as_str().into_client_request().map_err(|e| invalid(&e))?;
    let headers = request.headers_mut();
    for (name, value) in &params.headers {
        let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(&e))?;
        let value = tungstenite::http::HeaderValue::from_str(value).map_err(|e| invalid(&e))?;
        headers.append(name, value);
    }
    if !params.protocols.is_empty() {
        let value = tungstenite::http::HeaderValue::from_str(&params.protocols.join(", ")).map_err(|e| invalid(&e))?;
        headers.insert("sec-websocket-protocol", value);
    }
    Ok(request)
}

fn handshake_error(e: tungstenite::Error) -> ConnError {
    match e {
        tungstenite::Error::Http(resp) => {
            let status = resp.status().as_u16();
            let mut err = ConnError::new(
                errors::ERR_HANDSHAKE,
                format!("server answered the upgrade with HTTP {status}"),
            );
            err.status = Some(status);
            err.headers = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            if status == 429 || status == 503 {
                err.retry_after_ms = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
            }
            err
        }
        tungstenite::Error::Io(io) => ConnError::new(errors::ERR_CONNECT, io.to_string()),
        other => ConnError::new(errors::ERR_HANDSHAKE, other.to_string()),
    }
}

/// `Retry-After`: delay-seconds or an HTTP date, as milliseconds from now.
pub fn parse_retry_after(value: &str) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .map_or(0, |d| d.as_millis() as u64),
    )
}

/// How an open connection ended.
#[derive(Debug)]
pub struct Ended {
    pub code: u16,
    pub reason: String,
    pub was_clean: bool,
    pub error: Option<ConnError>,
}

pub enum IoEvent {
    /// Messages were appended to the event buffer.
    Progress,
    Ended(Ended),
}

/// Upper bound of messages taken in one poll, so that deliveries reach JS
/// in batches and commands are not starved.
const MAX_BATCH: usize = 512;

/// What `send()` needs to reach an open connection.
pub struct Sending {
    pub tx: Arc<Queue<Message>>,
    pub in_channel: Arc<AtomicUsize>,
    pub writer: Option<Arc<Writer>>,
}

pub struct OpenConn {
    /// Shared with the JS thread's send fast path (plain TCP only).
    writer: Option<Arc<Writer>>,
    /// Messages handed to `out_rx` by `send()` and not yet written.
    in_channel: Arc<AtomicUsize>,
    /// `pending` came from `out_rx` (not a heartbeat ping).
    from_channel: bool,
    ws: Ws,
    out_rx: Arc<Queue<Message>>,
    /// Taken from `out_rx` while the socket was not ready for it.
    pending: Option<Message>,
    dirty: bool,
    close_frame: Option<CloseFrame>,
    peer_close: Option<(u16, String)>,
    /// After the peer's close frame, how long we wait for it to drop TCP (RFC 6455 has the server close first).
    close_timeout: Duration,
    peer_close_deadline: Option<Pin<Box<Sleep>>>,
    heartbeat: Option<Heartbeat>,
    read_gate: Arc<ReadGate>,
    metrics: Arc<Metrics>,
    _gauge: Gauge,
}

/// The connection's own ping timer and pong deadline: it lives and dies with the connection.
struct Heartbeat {
    interval: Duration,
    pong_timeout: Duration,
    next_ping: Pin<Box<Sleep>>,
    pong_deadline: Option<Pin<Box<Sleep>>>,
    ping_due: bool,
    _gauge: Gauge,
}

/// Bytes `send()` accounts in `bufferedAmount`: the payload of data messages.
pub fn data_len(msg: &Message) -> Option<usize> {
    match msg {
        Message::Text(t) => Some(t.len()),
        Message::Binary(b) => Some(b.len()),
        _ => None,
    }
}

impl OpenConn {
    pub fn new(ws: Ws, metrics: Arc<Metrics>, read_gate: Arc<ReadGate>, cfg: &ConnConfig) -> (Self, Sending) {
        let out_rx = Arc::new(Queue::default());
        let tx = out_rx.clone();
        let heartbeat = (!cfg.ping_interval.is_zero()).then(|| Heartbeat {
            interval: cfg.ping_interval,
            pong_timeout: cfg.pong_timeout,
            next_ping: Box::pin(tokio::time::sleep(cfg.ping_interval)),
            pong_deadline: None,
            ping_due: false,
            _gauge: Gauge::new(&GLOBAL.heartbeats),
        });
        let writer = ws.get_ref().writer();
        let in_channel = Arc::new(AtomicUsize::new(0));
        let sending = Sending {
            tx,
            in_channel: in_channel.clone(),
            writer: writer.clone(),
        };
        let conn = OpenConn {
            writer,
            in_channel,
            from_channel: false,
            ws,
            out_rx,
            pending: None,
            dirty: false,
            close_frame: None,
            peer_close: None,
            close_timeout: cfg.close_timeout,
            peer_close_deadline: None,
            heartbeat,
            read_gate,
            metrics,
            _gauge: Gauge::new(&GLOBAL.open_connections),
        };
        (conn, sending)
    }

    /// Queues our close frame behind everything already sent. The caller has
    /// closed `out_rx`, so it ends once drained.
    pub fn begin_close(&mut self, code: u16, reason: String) {
        self.close_frame = Some(CloseFrame {
            code: code.into(),
            reason: reason.into(),
        });
    }

    /// Data messages accepted for this connection but never handed to the socket, oldest first.
    /// The caller has already stopped new sends from reaching `out_rx`.
    pub fn take_unsent(&mut self) -> Vec<Message> {
        let mut unsent: Vec<Message> = self.pending.take().into_iter().collect();
        while let Some(m) = self.out_rx.try_recv() {
            unsent.push(m);
        }
        unsent.retain(|m| data_len(m).is_some());
        unsent
    }

    pub fn poll_io(&mut self, cx: &mut Context<'_>, events: &mut Vec<JsEvent>) -> Poll<IoEvent> {
        if let Some(hb) = self.heartbeat.as_mut() {
            if hb.next_ping.as_mut().poll(cx).is_ready() {
                let now = tokio::time::Instant::now();
                hb.next_ping.as_mut().reset(now + hb.interval);
                let _ = hb.next_ping.as_mut().poll(cx);
                hb.ping_due = true;
                if hb.pong_deadline.is_none() {
                    hb.pong_deadline = Some(Box::pin(tokio::time::sleep(hb.pong_timeout)));
                }
            }
        }
        if let Err(e) = self.poll_write(cx) {
            return Poll::Ready(IoEvent::Ended(self.ended_by(e)));
        }
        let mut n = 0;
        loop {
            if self.read_gate.is_closed(cx) {
                // JS is behind: leave the data in the socket. Unread pongs are not a dead peer.
                if let Some(hb) = self.heartbeat.as_mut() {
                    hb.pong_deadline = None;
                }
                return if n > 0 {
                    Poll::Ready(IoEvent::Progress)
                } else {
                    Poll::Pending
                };
            }
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Ready(Some(Ok(msg))) => {
                    // Any frame proves the peer alive.
                    if let Some(hb) = self.heartbeat.as_mut() {
                        hb.pong_deadline = None;
                    }
                    match msg {
                        Message::Text(t) => {
                            stats::add(&self.metrics.bytes_received, t.len() as u64);
                            stats::inc(&self.metrics.messages_received);
                            self.read_gate.admit(t.len());
                            events.push(JsEvent::Text(t));
                        }
                        Message::Binary(b) => {
                            stats::add(&self.metrics.bytes_received, b.len() as u64);
                            stats::inc(&self.metrics.messages_received);
                            self.read_gate.admit(b.len());
                            events.push(JsEvent::Binary(b));
                        }
                        Message::Ping(p) => events.push(JsEvent::Ping(p)),
                        Message::Pong(p) => events.push(JsEvent::Pong(p)),
                        Message::Close(frame) => {
                            // tungstenite answers the close itself; keep polling until the stream ends.
                            self.peer_close = Some(match frame {
                                Some(f) => (f.code.into(), f.reason.to_string()),
                                None => (1005, String::new()),
                            });
                            self.peer_close_deadline = Some(Box::pin(tokio::time::sleep(self.close_timeout)));
                        }
                        Message::Frame(_) => {}
                    }
                    n += 1;
                    if n >= MAX_BATCH {
                        cx.waker().wake_by_ref();
                        return Poll::Ready(IoEvent::Progress);
                    }
                }
                Poll::Ready(None) => {
                    let ended = match self.peer_close.take() {
                        Some((code, reason)) => Ended {
                            code,
                            reason,
                            was_clean: true,
                            error: None,
                        },
                        None => Ended {
                            code: 1006,
                            reason: String::new(),
                            was_clean: false,
                            error: None,
                        },
                    };
                    return Poll::Ready(IoEvent::Ended(ended));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(IoEvent::Ended(self.ended_by(e))),
                Poll::Pending if n > 0 => return Poll::Ready(IoEvent::Progress),
                Poll::Pending => break,
            }
        }
        if let Some(deadline) = self.peer_close_deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                // The close handshake is complete; only the peer's TCP close is late.
                let (code, reason) = self.peer_close.take().unwrap_or((1005, String::new()));
                return Poll::Ready(IoEvent::Ended(Ended {
                    code,
                    reason,
                    was_clean: true,
                    error: None,
                }));
            }
        }
        if let Some(hb) = self.heartbeat.as_mut() {
            if let Some(deadline) = hb.pong_deadline.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
                    let ms = hb.pong_timeout.as_millis();
                    let error = ConnError::new(errors::ERR_PONG_TIMEOUT, format!("no pong within {ms} ms of a ping"));
                    return Poll::Ready(IoEvent::Ended(Ended {
                        code: 1006,
                        reason: String::new(),
                        was_clean: false,
                        error: Some(error),
                    }));
                }
            }
        }
        Poll::Pending
    }

    fn ended_by(&mut self, e: tungstenite::Error) -> Ended {
        if let Some((code, reason)) = self.peer_close.take() {
            // The peer closed cleanly and then went away before our reply was flushed.
            return Ended {
                code,
                reason,
                was_clean: true,
                error: None,
            };
        }
        let (error, code) = errors::from_ws_error(&e);
        if code != 1006 {
            // Tell the peer why (1002, 1007, 1009) before dropping the socket: best effort, no waiting.
            let reason: String = error.message.chars().take(100).collect();
            let frame = CloseFrame {
                code: code.into(),
                reason: reason.into(),
            };
            if Pin::new(&mut self.ws).start_send(Message::Close(Some(frame))).is_ok() {
                let _ = Pin::new(&mut self.ws).poll_flush(&mut Context::from_waker(std::task::Waker::noop()));
            }
        }
        Ended {
            code,
            reason: String::new(),
            was_clean: false,
            error: Some(error),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<(), tungstenite::Error> {
        if let Some(w) = &self.writer {
            // The fast path may have left bytes the socket did not take: flush them when writable.
            w.waker.register(cx.waker());
            if w.has_pending() {
                self.dirty = true;
            }
        }
        loop {
            if self.pending.is_none() {
                if self.heartbeat.as_ref().is_some_and(|h| h.ping_due) {
                    self.from_channel = false;
                    self.pending = Some(Message::Ping(Default::default()));
                    if let Some(h) = self.heartbeat.as_mut() {
                        h.ping_due = false;
                    }
                } else {
                    match self.out_rx.poll_recv(cx) {
                        Poll::Ready(Some(m)) => {
                            self.from_channel = true;
                            self.pending = Some(m);
                        }
                        Poll::Ready(None) => match self.close_frame.take() {
                            Some(f) => self.pending = Some(Message::Close(Some(f))),
                            None => break,
                        },
                        Poll::Pending => break,
                    }
                }
            }
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    let msg = self.pending.take().expect("pending message");
                    let len = data_len(&msg);
                    Pin::new(&mut self.ws).start_send(msg)?;
                    if std::mem::take(&mut self.from_channel) {
                        // Written (or queued in the shared writer): the fast path may go again.
                        self.in_channel.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                    }
                    if let Some(len) = len {
                        stats::inc(&self.metrics.messages_sent);
                        stats::add(&self.metrics.bytes_sent, len as u64);
                        self.metrics
                            .buffered
                            .fetch_sub(len as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    self.dirty = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        if self.dirty {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.dirty = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        Ok(())
    }
}
