//! One WebSocket connection: the attempt (TCP connect + HTTP upgrade under one
//! deadline) and the full-duplex I/O of an open socket.
//!
//! The open socket is polled by hand rather than split into halves: one poll
//! writes what `send()` queued (stopping, not blocking, when the socket is
//! full) and then reads everything that is ready, so a peer that is busy
//! writing to us can never deadlock against our own writes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, Stream};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use url::Url;

use crate::delivery::JsEvent;
use crate::errors::{self, ConnError};
use crate::stats::{self, Gauge, Metrics, GLOBAL};

pub type Ws = WebSocketStream<TcpStream>;

#[derive(Clone, Debug)]
pub struct ConnConfig {
    pub url: Url,
    pub connect_timeout: Duration,
    pub max_payload: usize,
}

impl ConnConfig {
    fn ws_config(&self) -> WebSocketConfig {
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
    pub fn start(cfg: &ConnConfig) -> Self {
        let cfg = cfg.clone();
        let fut = async move {
            match tokio::time::timeout(cfg.connect_timeout, connect(&cfg)).await {
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

async fn connect(cfg: &ConnConfig) -> Result<Opened, ConnError> {
    let url = &cfg.url;
    let port = url.port_or_known_default().unwrap_or(80);
    let tcp = match url.host() {
        Some(url::Host::Domain(d)) => TcpStream::connect((d, port)).await,
        Some(url::Host::Ipv4(ip)) => TcpStream::connect((ip, port)).await,
        Some(url::Host::Ipv6(ip)) => TcpStream::connect((ip, port)).await,
        None => return Err(ConnError::new(errors::ERR_CONNECT, "URL has no host")),
    }
    .map_err(|e| ConnError::new(errors::ERR_CONNECT, format!("{e} ({url})")))?;
    let _ = tcp.set_nodelay(true);
    let request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnError::new(errors::ERR_HANDSHAKE, e.to_string()))?;
    let (ws, response) = tokio_tungstenite::client_async_with_config(request, tcp, Some(cfg.ws_config()))
        .await
        .map_err(handshake_error)?;
    let protocol = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(Opened { ws, protocol })
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
            err
        }
        tungstenite::Error::Io(io) => ConnError::new(errors::ERR_CONNECT, io.to_string()),
        other => ConnError::new(errors::ERR_HANDSHAKE, other.to_string()),
    }
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

pub struct OpenConn {
    ws: Ws,
    out_rx: UnboundedReceiver<Message>,
    /// Taken from `out_rx` while the socket was not ready for it.
    pending: Option<Message>,
    dirty: bool,
    close_frame: Option<CloseFrame>,
    peer_close: Option<(u16, String)>,
    /// After the peer's close frame, how long we wait for it to drop TCP (RFC 6455 has the server close first).
    close_timeout: Duration,
    peer_close_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    metrics: Arc<Metrics>,
    _gauge: Gauge,
}

impl OpenConn {
    pub fn new(ws: Ws, metrics: Arc<Metrics>, close_timeout: Duration) -> (Self, UnboundedSender<Message>) {
        let (tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
        let conn = OpenConn {
            ws,
            out_rx,
            pending: None,
            dirty: false,
            close_frame: None,
            peer_close: None,
            close_timeout,
            peer_close_deadline: None,
            metrics,
            _gauge: Gauge::new(&GLOBAL.open_connections),
        };
        (conn, tx)
    }

    /// Queues our close frame behind everything already sent. The caller has
    /// dropped the last sender, so `out_rx` ends once drained.
    pub fn begin_close(&mut self, code: u16, reason: String) {
        self.close_frame = Some(CloseFrame {
            code: code.into(),
            reason: reason.into(),
        });
    }

    pub fn poll_io(&mut self, cx: &mut Context<'_>, events: &mut Vec<JsEvent>) -> Poll<IoEvent> {
        if let Err(e) = self.poll_write(cx) {
            return Poll::Ready(IoEvent::Ended(self.ended_by(e)));
        }
        let mut n = 0;
        loop {
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Ready(Some(Ok(msg))) => {
                    match msg {
                        Message::Text(t) => {
                            stats::add(&self.metrics.bytes_received, t.len() as u64);
                            stats::inc(&self.metrics.messages_received);
                            events.push(JsEvent::Text(t));
                        }
                        Message::Binary(b) => {
                            stats::add(&self.metrics.bytes_received, b.len() as u64);
                            stats::inc(&self.metrics.messages_received);
                            events.push(JsEvent::Binary(b));
                        }
                        Message::Close(frame) => {
                            // tungstenite answers the close itself; keep polling until the stream ends.
                            self.peer_close = Some(match frame {
                                Some(f) => (f.code.into(), f.reason.to_string()),
                                None => (1005, String::new()),
                            });
                            self.peer_close_deadline = Some(Box::pin(tokio::time::sleep(self.close_timeout)));
                        }
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
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
                Poll::Pending => {
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
                    return Poll::Pending;
                }
            }
        }
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
        Ended {
            code,
            reason: String::new(),
            was_clean: false,
            error: Some(error),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<(), tungstenite::Error> {
        loop {
            if self.pending.is_none() {
                match self.out_rx.poll_recv(cx) {
                    Poll::Ready(Some(m)) => self.pending = Some(m),
                    Poll::Ready(None) => match self.close_frame.take() {
                        Some(f) => self.pending = Some(Message::Close(Some(f))),
                        None => break,
                    },
                    Poll::Pending => break,
                }
            }
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    let msg = self.pending.take().expect("pending message");
                    let len = match &msg {
                        Message::Text(t) => Some(t.len()),
                        Message::Binary(b) => Some(b.len()),
                        _ => None,
                    };
                    Pin::new(&mut self.ws).start_send(msg)?;
                    if let Some(len) = len {
                        stats::inc(&self.metrics.messages_sent);
                        stats::add(&self.metrics.bytes_sent, len as u64);
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
