//! The native side of `ReconnectingWebSocket` (see `lib/client.js`), wrapped onto the
//! JS client object itself (`napi_wrap`): a client is one JS object, not two, with no
//! per-instance bookkeeping beyond the wrap. The JS layer calls the `client*` functions
//! at the end of this file with the client object as first argument.
//!
//! Lifetime: the JS object owns this state; this state refers back to it only
//! through a registry reference that is strong while a connection exists. When the application drops a client that has no connection, both
//! are collected, and `finalize`/`Drop` abort the driver: the pending
//! reconnect timer dies with it. `Drop` needs no runtime of its own: an abort handle (which
//! schedules the task's cancellation, or drops it here once the runtime has shut down) and a
//! closed command queue only, so it is safe at process exit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tungstenite::{Bytes, Message};

use crate::ask;
use crate::backoff::{Backoff, Jitter};
use crate::connection::ConnConfig;
use crate::deflate::DeflateConfig;
use crate::delivery;
use crate::direct;
use crate::driver::{Command, Driver, DriverConfig};
use crate::errors::{self, ConnError, ERR_PROVIDER};
use crate::events::JsEvent;
use crate::frame::Limits;
use crate::interned::{InternTable, Interned};
use crate::machine::{HonorRetryAfter, Policy};
use crate::napi_raw;
use crate::options::NativeOptions;
use crate::outbox::{Outbound, QueueConfig, SendOutcome, NO_TICKET};
use crate::protocol::send as outcome;
use crate::proxy::{Proxy, ProxyEnv};
use crate::queue::Queue;
use crate::redact::url_in_message;
use crate::registry;
use crate::shared::{AttemptParams, Shared};
use crate::stats::{self, GLOBAL};
use crate::testing;
use crate::tls::{ClientAuth, TlsOptions};
use crate::transport::Dial;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Configurations of live clients, by the key `lib/` makes of URL and options (a configuration
/// goes with its last client, and its key, which may spell a credential, with it). Each is ~0.5
/// KiB with its parsed URL, more with CA certificates.
static CONFIGS: InternTable<str, DriverConfig> = InternTable::new();

/// What V8 is told each client costs natively, so that abandoned clients are
/// collected promptly rather than when the JS heap alone gets full.
const EXTERNAL_BYTES: i64 = 64 * 1024;

#[napi(object)]
pub struct NativeMetrics {
    pub connect_attempts: f64,
    pub connects: f64,
    pub reconnects: f64,
    pub connection_errors: f64,
    pub messages_received: f64,
    pub messages_sent: f64,
    pub bytes_received: f64,
    pub bytes_sent: f64,
    pub pending_reconnects: u32,
    /// Messages waiting in the offline queue.
    pub queued_messages: f64,
}

pub struct NativeClient {
    shared: Arc<Shared>,
    config: Arc<Interned<str, DriverConfig>>,
    commands: Option<Arc<Queue<Command>>>,
    driver: Option<tokio::task::JoinHandle<()>>,
    /// `connect()` and `reconnect()` calls so far, never 0 once there was one (`Shared::restarts`);
    /// `lib/client.js` keeps what the latest call returned.
    restarts: u32,
    /// Messages the last `send()` dropped from the queue (`drop-oldest`), for the `drop` event.
    dropped: Vec<Message>,
    /// Where JS made the client (its stack), kept only under `--trace-warnings`: the warning of a
    /// client collected without `disconnect()` names it.
    created_at: Option<Box<str>>,
}

/// A message handed back to JS (drained or dropped from the queue).
type JsMessage = Either<String, Buffer>;

fn to_js(m: Message) -> Option<JsMessage> {
    match m {
        Message::Text(t) => Some(Either::A(t.as_str().to_owned())),
        Message::Binary(b) => Some(Either::B(b.to_vec().into())),
        _ => None,
    }
}

fn attempt_params(
    url: &str,
    headers: &[String],
    protocols: Vec<String>,
    proxy: Option<&str>,
) -> std::result::Result<AttemptParams, ConnError> {
    let proxy = proxy
        .map(Proxy::parse)
        .transpose()
        .map_err(|e| ConnError::new(ERR_PROVIDER, e))?;
    let url = url::Url::parse(url).map_err(|e| ConnError::new(ERR_PROVIDER, format!("invalid URL {url}: {e}")))?;
    let headers = headers
        .chunks(2)
        .filter(|kv| kv.len() == 2)
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect();
    Ok(AttemptParams {
        proxy,
        url,
        headers,
        protocols,
    })
}

fn count(v: f64) -> usize {
    if v.is_finite() {
        v.clamp(0.0, usize::MAX as f64) as usize
    } else {
        usize::MAX
    }
}

impl NativeClient {
    /// `owner` is the JS client object; `url` and `options` (`NativeOptions`) are already validated
    /// by `lib/options.js`, and `key` stands for both (`configKey`): clients with equal keys share
    /// one configuration, and `options` is converted only for a key not seen yet (its forty-odd
    /// fields cost more than the rest of making a client).
    fn new(
        env: &Env,
        owner: &Object<'_>,
        url: String,
        key: String,
        options: Unknown<'_>,
        created_at: Option<String>,
    ) -> Result<Self> {
        let config = match CONFIGS.get(key.as_str()) {
            Some(config) => config,
            None => {
                let options = NativeOptions::from_unknown(options)?;
                CONFIGS.insert(Arc::from(key), Self::config(&url, options)?)
            }
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared::new(id, crate::reader::enabled()));
        registry::register(env, id, owner, shared.clone())?;
        env.adjust_external_memory(EXTERNAL_BYTES)?;
        GLOBAL.live_clients.fetch_add(1, Ordering::Relaxed);
        Ok(NativeClient {
            shared,
            config,
            commands: None,
            driver: None,
            dropped: Vec::new(),
            restarts: 0,
            created_at: created_at.map(String::into_boxed_str),
        })
    }

    fn config(url: &str, options: NativeOptions) -> Result<DriverConfig> {
        let invalid = |what: String| Error::new(Status::InvalidArg, what);
        let jitter =
            Jitter::parse(&options.jitter).ok_or_else(|| invalid(format!("invalid jitter {}", options.jitter)))?;
        let honor_retry_after = match options.honor_retry_after.as_str() {
            "capped" => HonorRetryAfter::Capped,
            "always" => HonorRetryAfter::Always,
            "never" => HonorRetryAfter::Never,
            other => return Err(invalid(format!("invalid honorRetryAfter {other}"))),
        };
        let params = if options.providers {
            None
        } else {
            Some(Arc::new(
                attempt_params(
                    url,
                    &options.headers,
                    options.protocols.clone(),
                    options.proxy.as_deref(),
                )
                .map_err(|e| invalid(e.message))?,
            ))
        };
        let config = DriverConfig {
            url: url.to_owned(),
            conn: ConnConfig {
                connect_timeout: timer(options.connect_timeout),
                max_redirects: options.max_redirects,
                proxy_env: match options.proxy_env.as_deref() {
                    Some([http, https, no_proxy]) => Some(Arc::new(ProxyEnv::new(http, https, no_proxy))),
                    _ => None,
                },
                js_lookup: options.lookup,
                js: None,
                dial: Dial {
                    family: u8::try_from(options.family).unwrap_or(0),
                    local: match options.local_address.as_deref().map(str::parse) {
                        None => None,
                        Some(Ok(ip)) => Some(ip),
                        Some(Err(_)) => return Err(invalid("localAddress is not an IP address".to_owned())),
                    },
                    local_port: u16::try_from(options.local_port)
                        .map_err(|_| invalid("localPort is not a port number".to_owned()))?,
                    next_address_after: (options.next_address_after > 0.0).then(|| timer(options.next_address_after)),
                },
                limits: Limits {
                    max_payload: options.max_payload.clamp(1.0, usize::MAX as f64) as usize,
                    max_text: options.max_text_payload.clamp(1.0, usize::MAX as f64) as usize,
                    deflate: false,
                    replace_invalid_utf8: options.skip_utf8_validation,
                    max_fragments: options.max_fragments.clamp(0.0, usize::MAX as f64) as usize,
                },
                ping_interval: timer(options.ping_interval),
                pong_timeout: timer(options.pong_timeout),
                close_timeout: timer(options.close_timeout),
                auto_pong: options.auto_pong,
                deflate: options.per_message_deflate.as_ref().map(|d| DeflateConfig {
                    threshold: d.threshold.clamp(0.0, usize::MAX as f64) as usize,
                    client_no_context_takeover: d.client_no_context_takeover,
                    server_no_context_takeover: d.server_no_context_takeover,
                    client_max_window_bits: d
                        .offer_client_max_window_bits
                        .then(|| d.client_max_window_bits.map(|b| b.clamp(8, 15) as u8)),
                    server_max_window_bits: d.server_max_window_bits.map(|b| b.clamp(8, 15) as u8),
                    level: d.level.min(9),
                }),
                tls: TlsOptions {
                    ca: options.tls_ca,
                    ca_only: options.tls_ca_only,
                    reject_unauthorized: options.tls_reject_unauthorized,
                    servername: options.tls_servername,
                    client_auth: match (options.tls_cert, options.tls_key) {
                        (Some(cert), Some(key)) => Some(ClientAuth { cert, key }),
                        _ => None,
                    },
                    check_identity: options.tls_check_identity,
                    versions: (options.tls_min_version as u8, options.tls_max_version as u8),
                    cipher_suites: options.tls_cipher_suites.iter().map(|&n| n as u16).collect(),
                    kx_groups: options.tls_kx_groups.iter().map(|&n| n as u16).collect(),
                    sig_schemes: options.tls_sig_schemes.iter().map(|&n| n as u16).collect(),
                },
                tls_config: Default::default(),
            },
            policy: Arc::new(Policy {
                backoff: Backoff {
                    min_delay_ms: ms(options.min_delay),
                    max_delay_ms: ms(options.max_delay),
                    factor: options.factor,
                    jitter,
                },
                max_retries: if options.max_retries.is_finite() {
                    options.max_retries.max(0.0) as u64
                } else {
                    u64::MAX
                },
                min_uptime_ms: ms(options.min_uptime),
                ask: options.ask_policy,
                honor_retry_after,
            }),
            queue: QueueConfig {
                enabled: options.queue_enabled,
                max_messages: count(options.queue_max_messages),
                max_bytes: count(options.queue_max_bytes),
                drop_oldest: options.queue_drop_oldest,
            },
            params,
        };
        Ok(config)
    }

    /// Starts connecting (idempotent). Returns the client's count of `connect()` and `reconnect()`
    /// calls, this one included (`Shared::restarts`). `quiet`: JS does not need the `Connecting`
    /// of a new driver's first attempt at once (`Driver::quiet`); a running driver reports its
    /// attempts' promptly.
    pub fn connect(&mut self, env: Env, quiet: bool) -> Result<u32> {
        let id = self.shared.id;
        // Never 0, which `reconnect` returns for "not active".
        self.restarts = self.restarts.wrapping_add(1).max(1);
        let restarts = self.restarts;
        // `send()` is accepted in the same step as the command is queued (see `Driver::poll_run`).
        let accept = || self.shared.outbox().set_accepting(true);
        let active = registry::is_active(id);
        if active {
            if let Some(tx) = &self.commands {
                if tx.send_after(Command::Connect { restarts }, accept).is_ok() {
                    registry::hold_strong(&env, id);
                    return Ok(restarts);
                }
            }
        }
        // No driver, or one that is exiting: start a fresh one. Quiet only where the last one's
        // every event has reached JS (its `Idle` was taken): one still to come may undo what
        // `connect()` set in JS, which its new attempt's prompt `Connecting` then puts right.
        let quiet = quiet && !active;
        accept();
        let hub = registry::hub().ok_or_else(|| Error::from_reason("redial-ws: dispatcher not initialised"))?;
        let gen = registry::activate(&env, id);
        let tx = Arc::new(Queue::default());
        if let Some(old) = self.driver.take() {
            // An exiting driver has already closed its command channel; make sure it is gone.
            old.abort();
            if !old.is_finished() {
                // Still in its exit, on another worker: its last events go to JS before this one's.
                let _ = tx.send(Command::Follow(old));
            }
        }
        let rx = tx.clone();
        // A panic of a call meant for a driver that has exited since does not end this one.
        let _ = self.shared.take_call_panic();
        let driver = Driver::new(self.shared.clone(), hub, self.config.clone(), gen, restarts, quiet);
        let handle = napi::bindgen_prelude::spawn(driver.run(rx));
        registry::set_driver(id, handle.abort_handle());
        self.driver = Some(handle);
        self.commands = Some(tx);
        Ok(restarts)
    }

    /// Asks the driver to disconnect. Returns the call's number (1, 2, ...), which the events
    /// that settle it carry, or 0 when there is nothing to disconnect. From now on `send()` is
    /// refused; with `flush`, queued messages are written first; with `terminate`, the connection
    /// is dropped without a close handshake.
    pub fn disconnect(
        &mut self,
        env: Env,
        code: u16,
        reason: String,
        flush: bool,
        terminate: bool,
        keep_queue: bool,
    ) -> u32 {
        if !registry::is_active(self.shared.id) {
            let mut outbox = self.shared.outbox();
            if keep_queue {
                outbox.stop_accepting_keeping(None);
            } else {
                outbox.stop_accepting(None);
            }
            return 0;
        }
        // Until the disconnect completes, the client stays reachable so that its promise settles.
        let seq = registry::hold_until_disconnected(&env, self.shared.id);
        // Our close frame goes from this thread at once (`Outbox::stop_accepting`), so that the
        // peer's answer is on its way while the driver wakes up. The command is queued in the same
        // step: when the driver reads that answer and the end of the connection, it takes the
        // command first and knows that the close was ours. The socket goes back to the driver
        // after that step: handed back first, it would wake the driver into the queue's lock.
        let close = || {
            let frame = (!terminate).then_some((code, reason.as_str()));
            let mut outbox = self.shared.outbox();
            if keep_queue {
                outbox.stop_accepting_keeping(frame);
            } else {
                // Read by the driver when the calls up to this one complete (`discards_upto`).
                outbox.discard_at(seq);
                outbox.stop_accepting(frame);
            }
            drop(outbox);
            testing::stall_after_close();
        };
        let command = Command::Disconnect {
            code,
            reason: reason.clone(),
            flush: flush && !terminate,
            terminate,
            seq,
        };
        let delivered = match &self.commands {
            Some(tx) => tx.send_after(command, close).is_ok(),
            None => {
                close();
                false
            }
        };
        if !delivered {
            // The driver is exiting (it gave up) and will not run this call: what it would have
            // discarded goes now, and its exit report settles the call.
            let discarded = self.shared.outbox().discard_at_completion(seq, &self.shared.metrics);
            registry::disconnect_undelivered(self.shared.id, seq, discarded);
        }
        delivery::read_close_on_driver(self.shared.id);
        seq
    }

    /// Forces a fresh connection now. Returns the count `connect` returns, or 0 when the client is
    /// not active (the caller connects).
    pub fn reconnect(&mut self, env: Env, code: u16, reason: String) -> u32 {
        if !registry::is_active(self.shared.id) {
            self.shared.outbox().set_accepting(true);
            return 0;
        }
        // A send() after the call is for the next connection, whenever the driver gets to the
        // command: the open one is left now, in the same step as the command is queued.
        let accept = || {
            let mut outbox = self.shared.outbox();
            outbox.set_accepting(true);
            outbox.leave_connection();
        };
        let restarts = self.restarts.wrapping_add(1).max(1);
        let command = Command::Reconnect { code, reason, restarts };
        let queued = self
            .commands
            .as_ref()
            .is_some_and(|tx| tx.send_after(command, accept).is_ok());
        if !queued {
            return 0;
        }
        self.restarts = restarts;
        registry::hold_strong(&env, self.shared.id);
        restarts
    }

    /// The verdict of `shouldReconnect` for request `id`.
    pub fn decide(&self, id: f64, retry: bool) {
        if let Some(tx) = &self.commands {
            let _ = tx.send(Command::Decided { id: id as u64, retry });
        }
    }

    /// The providers' result for attempt request `id` (ignored if the attempt is gone).
    /// Whether request `id` was still waiting (an attempt since cancelled, or replaced, ignores it).
    pub fn provide(
        &self,
        id: f64,
        url: String,
        headers: Vec<String>,
        protocols: Vec<String>,
        proxy: Option<String>,
    ) -> bool {
        self.answer(id, attempt_params(&url, &headers, protocols, proxy.as_deref()))
    }

    pub fn provide_error(&self, id: f64, message: String) {
        self.answer(id, Err(ConnError::new(ERR_PROVIDER, message)));
    }

    fn answer(&self, id: f64, result: std::result::Result<AttemptParams, ConnError>) -> bool {
        let mut slot = self.shared.provide.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|(pending, _)| *pending == id as u64) {
            if let Some((_, tx)) = slot.take() {
                return tx.send(result).is_ok();
            }
        }
        false
    }

    pub fn active(&self) -> bool {
        registry::is_active(self.shared.id)
    }

    pub fn generation(&self) -> u32 {
        registry::generation(self.shared.id)
    }

    /// Sends or queues a text message. Returns a `protocol::send` outcome. `turn`: the JS event
    /// loop's current turn, where the runtime numbers them (`Writer::write_or_cork`).
    pub fn send_text(&mut self, data: String, turn: Option<u64>) -> u32 {
        self.send(Message::Text(data.into()), NO_TICKET, turn)
    }

    /// As `sendText`, for binary data (copied once).
    pub fn send_binary(&mut self, data: &[u8], turn: Option<u64>) -> u32 {
        self.send(Message::Binary(Bytes::copy_from_slice(data)), NO_TICKET, turn)
    }

    /// `send(data, callback)`: the message carries `ticket` until its fate is known.
    /// `compress: false`: `send(data, { compress: false })`.
    pub fn send_ticketed(
        &mut self,
        data: Either<String, &[u8]>,
        ticket: u64,
        compress: bool,
        turn: Option<u64>,
    ) -> u32 {
        let msg = match data {
            Either::A(text) => Message::Text(text.into()),
            Either::B(bytes) => Message::Binary(Bytes::copy_from_slice(bytes)),
        };
        self.send_outbound(Outbound { msg, ticket, compress }, turn)
    }

    fn send(&mut self, msg: Message, ticket: u64, turn: Option<u64>) -> u32 {
        let compress = true;
        self.send_outbound(Outbound { msg, ticket, compress }, turn)
    }

    fn send_outbound(&mut self, out: Outbound, turn: Option<u64>) -> u32 {
        let result = self
            .shared
            .outbox()
            .send_outbound(out, turn, &self.config.queue, &self.shared.metrics);
        match result {
            SendOutcome::Sent => outcome::SENT,
            SendOutcome::SentUncorkLater => outcome::CORKED,
            SendOutcome::Queued => outcome::QUEUED,
            SendOutcome::Handed => outcome::HANDED,
            SendOutcome::NotOpen => outcome::NOT_OPEN,
            SendOutcome::QueueFull => outcome::QUEUE_FULL,
            SendOutcome::NotConnected => outcome::NOT_CONNECTED,
            SendOutcome::QueuedDropping(dropped) => {
                self.dropped = dropped;
                outcome::DROPPING
            }
        }
    }

    /// Writes what `send()` corked in this turn (scheduled by JS as a microtask).
    pub fn uncork(&self) {
        self.shared.outbox().uncork();
    }

    pub fn take_dropped(&mut self) -> Vec<JsMessage> {
        std::mem::take(&mut self.dropped)
            .into_iter()
            .filter_map(to_js)
            .collect()
    }

    /// Hands back every queued, unsent message, oldest first.
    pub fn drain_queue(&self) -> Vec<JsMessage> {
        self.shared
            .outbox()
            .drain(&self.shared.metrics)
            .into_iter()
            .filter_map(to_js)
            .collect()
    }

    /// Tickets of messages sent with a callback and what became of each, as
    /// `[ticket, fate, ticket, fate, ...]` (`outbox::Fate`'s numbers).
    pub fn take_settled(&self) -> Vec<f64> {
        let settled = self.shared.outbox().take_settled();
        settled
            .into_iter()
            .flat_map(|(ticket, fate)| [ticket as f64, f64::from(fate as u8)])
            .collect()
    }

    /// Discards the queue; returns how many messages were discarded.
    pub fn discard_queue(&self) -> u32 {
        self.shared.outbox().discard(&self.shared.metrics) as u32
    }

    /// Discards the queued messages sent with these tickets; returns how many there were.
    pub fn discard_tickets(&self, tickets: &[u64]) -> u32 {
        self.shared.outbox().discard_tickets(tickets, &self.shared.metrics) as u32
    }

    /// Sends a ping frame; false when the connection is not open.
    pub fn ping(&self, data: &[u8]) -> bool {
        self.shared
            .outbox()
            .send_control(Message::Ping(Bytes::copy_from_slice(data)))
    }

    /// An unsolicited pong (RFC 6455 §5.5.3: a one-way heartbeat).
    pub fn pong(&self, data: &[u8]) -> bool {
        self.shared
            .outbox()
            .send_control(Message::Pong(Bytes::copy_from_slice(data)))
    }

    /// Data bytes accepted by `send()` and not yet written to the socket: those queued or with the
    /// driver (their payload), and the frames the send fast path has not written yet.
    pub fn buffered_amount(&self) -> f64 {
        let framed = self.shared.outbox().unsent_bytes();
        (self.shared.metrics.buffered.load(Ordering::Relaxed) + framed as u64) as f64
    }

    /// Keeps the client reachable without a connection while JS waits on it (`messages()`).
    pub fn hold(&self, env: Env, on: bool) {
        registry::hold(&env, self.shared.id, on);
    }

    /// Stops (or resumes) reading from the socket: backpressure from a slow `messages()` consumer.
    pub fn pause_reading(&self, paused: bool) {
        self.shared.read_gate.set(paused);
    }

    pub fn set_ref(&self, env: Env, refd: bool) {
        registry::set_ref(&env, self.shared.id, refd);
    }

    pub fn metrics(&self) -> NativeMetrics {
        let m = &self.shared.metrics;
        NativeMetrics {
            connect_attempts: stats::read(&m.connect_attempts),
            connects: stats::read(&m.connects),
            reconnects: stats::read(&m.reconnects),
            connection_errors: stats::read(&m.connection_errors),
            messages_received: stats::read(&m.messages_received),
            messages_sent: stats::read(&m.messages_sent),
            bytes_received: stats::read(&m.bytes_received),
            bytes_sent: stats::read(&m.bytes_sent),
            pending_reconnects: m.pending_reconnects.load(Ordering::Relaxed).max(0) as u32,
            queued_messages: stats::read(&m.queued_messages),
        }
    }
}

/// The longest timer of an option (Node's, 2^31 - 1 ms): lib/options.js refuses more, and a
/// deadline this far off cannot overflow an `Instant` where it is added.
const MAX_TIMER_MS: u64 = (1 << 31) - 1;

/// A timeout or interval option as a `Duration`, within `MAX_TIMER_MS`.
fn timer(v: f64) -> Duration {
    Duration::from_millis(ms(v).min(MAX_TIMER_MS))
}

/// Milliseconds from an option, rounded up: 0.5 is 1 ms, as Node's timers take it, not 0 (which
/// means "off" for some options and "at once" for others).
fn ms(v: f64) -> u64 {
    if v.is_finite() {
        v.ceil().clamp(0.0, u64::MAX as f64) as u64
    } else {
        u64::MAX
    }
}

impl NativeClient {
    /// A call from JS panicked in this client's state: a running driver ends the client as after
    /// its own panic (error, close, giveup `'internal'`), releasing what it holds. An idle client
    /// has nothing running to end.
    fn call_panicked(&mut self, what: String) {
        let Some(commands) = &self.commands else { return };
        if !registry::is_active(self.shared.id) {
            return;
        }
        self.shared.set_call_panic(what);
        // Any command wakes the task, which takes the panic first (this one is not a call: the
        // count stays).
        let _ = commands.send(Command::Connect {
            restarts: self.restarts,
        });
    }

    /// The JS object was collected (or the environment is being torn down): the client leaves
    /// its thread's delivery, with a warning if it was never disconnected.
    fn on_collected(self, env: Env) {
        // Without its query, as in error messages: it may carry a token.
        let url =
            url::Url::parse(&self.config.url).map_or_else(|_| self.config.url.to_string(), |u| url_in_message(&u));
        let metrics = &self.shared.metrics;
        let was_active = registry::unregister(&env, self.shared.id, || {
            JsEvent::Warning {
            code: registry::COLLECTED_WARNING,
            message: format!(
                "a ReconnectingWebSocket for {url} was garbage-collected without disconnect(); its reconnect was cancelled"
            ),
            // Which client it was: the message is shown once per URL (lib/wire.js), and more clients may use it.
            detail: format!(
                "It had opened {} connection(s) in {} attempt(s). One warning is shown per URL (for 100 URLs at most); clientStats().collectedWithoutDisconnect counts every such client.{}",
                metrics.connects.load(Ordering::Relaxed),
                metrics.connect_attempts.load(Ordering::Relaxed),
                match &self.created_at {
                    Some(stack) if stack.is_empty() => String::from(" Where it was created is not known: the stack could not be taken (Error.prepareStackTrace, Error.stackTraceLimit)."),
                    Some(stack) => format!("\nIt was created here:\n{stack}"),
                    None => String::from(" Run with --trace-warnings to see where it was created."),
                },
            ),
        }
        });
        // A failure only leaves V8's estimate of external memory high, which is harmless.
        let _ = env.adjust_external_memory(-EXTERNAL_BYTES);
        if was_active && !registry::shutting_down() {
            GLOBAL.collected_without_disconnect.fetch_add(1, Ordering::Relaxed);
        }
        // `Drop` follows and aborts the driver.
    }
}

impl Drop for NativeClient {
    fn drop(&mut self) {
        if let Some(driver) = self.driver.take() {
            driver.abort();
        }
        // Closing the queue ends a driver that the abort has not reached yet.
        if let Some(commands) = self.commands.take() {
            commands.close();
        }
        GLOBAL.live_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

// The JS binding. Every function takes the JS client object first and finds its native
// state with `napi_unwrap` after checking its type tag (what a napi-rs class method does too,
// without the per-instance class bookkeeping: a reference map entry and a second JS object).

impl napi_raw::Wrapped for NativeClient {
    /// Random; `napi_raw` mixes in a key of this copy of the addon.
    const TAG: napi_raw::TypeTag = napi_raw::TypeTag {
        lower: 0x6a0f_27c4_d1b3_9e58,
        upper: 0x2b71_e8a6_5c90_f34d,
    };

    fn finalize(self: Box<Self>, env: Env) {
        (*self).on_collected(env);
    }
}

/// Runs `f` with the native state of the client object `owner`; an error for any other object.
/// A panic in `f` does not cross into Node (which would abort the process): the call throws
/// `ERR_INTERNAL`, and a running client ends as after a panic of its task (`call_panicked`).
fn with_client<R>(env: &Env, owner: &Object<'_>, f: impl FnOnce(&mut NativeClient) -> R) -> Result<R> {
    let outcome = napi_raw::with_wrapped(env, owner, |client: &mut NativeClient| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if testing::call_panics(client.shared.id) {
                panic!("panic requested by a test");
            }
            f(&mut *client)
        }))
        .map_err(|panic| {
            let what = errors::panic_text(&*panic);
            // Outside the guard above, and no more able to unwind into Node than `f`.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| client.call_panicked(what.clone())));
            what
        })
    })?;
    outcome.map_err(|what| {
        let message = format!("internal error ({what}): the client was closed");
        // Thrown here with its code; napi-rs leaves a pending exception as it is.
        let _ = env.throw_error(&message, Some(errors::ERR_INTERNAL));
        Error::new(Status::PendingException, message)
    })
}

/// Gives `owner` (a new `ReconnectingWebSocket`) its native state.
#[napi(catch_unwind)]
pub fn client_attach(
    env: Env,
    owner: Object<'_>,
    url: String,
    key: String,
    options: Unknown<'_>,
    created_at: Option<String>,
) -> Result<()> {
    let state = NativeClient::new(&env, &owner, url, key, options, created_at)?;
    napi_raw::wrap(&env, &owner, state)
}

/// Makes the client's task panic on its next poll (tests prove that a panic ends the client in
/// a defined state). Not part of the API. `wake: false`: the task is not woken for it, so that it
/// panics when the next call's command wakes it, before it takes that command.
#[cfg(feature = "testing")]
#[napi]
pub fn testing_panic_driver(env: Env, owner: Object<'_>, wake: Option<bool>) -> Result<()> {
    with_client(&env, &owner, |client| {
        testing::panic_driver(client.shared.id);
        if wake == Some(false) {
            return;
        }
        if let Some(tx) = &client.commands {
            // Any command wakes the task (this one is not a call: the count stays).
            let _ = tx.send(Command::Connect {
                restarts: client.restarts,
            });
        }
    })
}

/// Makes the client's next call from JS panic (tests prove that the call throws `ERR_INTERNAL`
/// and the client ends in a defined state, where the process aborted). Not part of the API.
#[cfg(feature = "testing")]
#[napi]
pub fn testing_panic_call(env: Env, owner: Object<'_>) -> Result<()> {
    with_client(&env, &owner, |client| testing::panic_call(client.shared.id))
}

/// Makes the next batch of events for JS that holds one of the client's panic as it is made
/// (tests prove that the process goes on, told by a warning, and delivery with it). Not part of the API.
#[cfg(feature = "testing")]
#[napi]
pub fn testing_panic_delivery(env: Env, owner: Object<'_>) -> Result<()> {
    with_client(&env, &owner, |client| testing::panic_delivery(client.shared.id))
}

/// Makes the client's next read on the JS thread panic (tests prove that the connection then ends
/// with `ERR_INTERNAL`, and the client reconnects). Not part of the API.
#[cfg(feature = "testing")]
#[napi]
pub fn testing_panic_read(env: Env, owner: Object<'_>) -> Result<()> {
    with_client(&env, &owner, |client| testing::panic_read(client.shared.id))
}

/// Makes the next disconnect() stall the JS thread for `ms` after writing its close frame, long
/// enough for the peer's answer and TCP close to arrive (tests prove that the driver never takes
/// them for the peer's own close). Not part of the API.
#[cfg(feature = "testing")]
#[napi]
pub fn testing_stall_after_close(ms: u32) {
    testing::set_stall_after_close(ms);
}

/// Makes the next driver to exit wait `ms` before it reports the exit. Not part of the API.
#[cfg(feature = "testing")]
#[napi]
pub fn testing_stall_driver_exit(ms: u32) {
    testing::set_stall_driver_exit(ms);
}

/// Starts connecting (idempotent). Returns the client's count of `connect()` and `reconnect()` calls,
/// which its `close` and `reconnecting` events carry. `quiet`: JS does not need the `connecting`
/// event of an attempt this call starts at once (it goes with the attempt's next event).
#[napi]
pub fn client_connect(env: Env, owner: Object<'_>, quiet: bool) -> Result<u32> {
    with_client(&env, &owner, |c| c.connect(env, quiet))?
}

#[napi]
pub fn client_disconnect(
    env: Env,
    owner: Object<'_>,
    code: u32,
    reason: String,
    flush: bool,
    terminate: bool,
    keep_queue: bool,
) -> Result<u32> {
    let code = close_code(code)?;
    with_client(&env, &owner, |c| {
        c.disconnect(env, code, reason, flush, terminate, keep_queue)
    })
}

/// A close code from JS (checked there, `checkClose`): one that does not fit a frame is refused,
/// not truncated into another code.
fn close_code(code: u32) -> Result<u16> {
    u16::try_from(code).map_err(|_| Error::new(Status::InvalidArg, format!("close code {code} is out of range")))
}

/// Forces a fresh connection now. Returns what `client_connect` returns, or 0 when the client is
/// not active (the caller connects).
#[napi]
pub fn client_reconnect(env: Env, owner: Object<'_>, code: u32, reason: String) -> Result<u32> {
    let code = close_code(code)?;
    with_client(&env, &owner, |c| c.reconnect(env, code, reason))
}

#[napi]
pub fn client_decide(env: Env, owner: Object<'_>, id: f64, retry: bool) -> Result<()> {
    with_client(&env, &owner, |c| c.decide(id, retry))?;
    Ok(())
}

#[napi]
pub fn client_provide(
    env: Env,
    owner: Object<'_>,
    id: f64,
    url: String,
    headers: Vec<String>,
    protocols: Vec<String>,
    proxy: Option<String>,
) -> Result<bool> {
    with_client(&env, &owner, |c| c.provide(id, url, headers, protocols, proxy))
}

#[napi]
pub fn client_provide_error(env: Env, owner: Object<'_>, id: f64, message: String) -> Result<()> {
    with_client(&env, &owner, |c| c.provide_error(id, message))?;
    Ok(())
}

#[napi]
pub fn client_active(env: Env, owner: Object<'_>) -> Result<bool> {
    with_client(&env, &owner, |c| c.active())
}

#[napi]
pub fn client_generation(env: Env, owner: Object<'_>) -> Result<u32> {
    with_client(&env, &owner, |c| c.generation())
}

/// Sends or queues a text message. Returns one of `wireProtocol().send`: `dropping` means
/// older messages were dropped (fetch them with `clientTakeDropped`), `corked` that JS calls
/// `clientUncork` at the end of this turn.
#[napi]
pub fn client_send_text(env: Env, owner: Object<'_>, data: String) -> Result<u32> {
    with_client(&env, &owner, |c| c.send_text(data, direct::current_turn(&env)))
}

/// As `clientSendText`, for binary data (copied once).
#[napi]
pub fn client_send_binary(env: Env, owner: Object<'_>, data: &[u8]) -> Result<u32> {
    with_client(&env, &owner, |c| c.send_binary(data, direct::current_turn(&env)))
}

/// `send(data, callback)` and `send(data, { compress: false })`: as `clientSendText`/
/// `clientSendBinary`, the message carrying `ticket` (a positive integer, or 0 for none) until it
/// is written, dropped, drained or discarded; then `clientTakeSettled` reports it. `handed`: the
/// driver writes it (and a `sent` event follows); `sent`/`corked`: the fast path took it, and JS
/// settles it after the uncork. `compress: false` frames it uncompressed.
#[napi]
pub fn client_send_ticketed(
    env: Env,
    owner: Object<'_>,
    data: Either<String, &[u8]>,
    ticket: f64,
    compress: bool,
) -> Result<u32> {
    const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;
    if !((0.0..=MAX_SAFE_INTEGER).contains(&ticket) && ticket.fract() == 0.0) {
        return Err(Error::new(Status::InvalidArg, "a ticket is a safe integer, 0 or more"));
    }
    with_client(&env, &owner, |c| {
        c.send_ticketed(data, ticket as u64, compress, direct::current_turn(&env))
    })
}

#[napi]
pub fn client_take_settled(env: Env, owner: Object<'_>) -> Result<Vec<f64>> {
    with_client(&env, &owner, |c| c.take_settled())
}

/// The answer of a client's `lookup` function to `request` (a `lookup` event): the addresses
/// (IP literals, in the order to try), or `error`, why it failed.
#[napi(catch_unwind)]
pub fn lookup_answer(request: f64, addresses: Vec<String>, error: Option<String>) {
    let answer = match error {
        Some(why) => Err(why),
        // JS checked each is an IP address (`net.isIP`), which takes a scoped IPv6 address
        // (`fe80::1%eth0`) that is not one here: skipped, as long as another is usable.
        None => {
            let parsed: Vec<std::net::IpAddr> = addresses.iter().filter_map(|a| a.parse().ok()).collect();
            if parsed.is_empty() && !addresses.is_empty() {
                Err("it gave no address that can be connected to (a scoped IPv6 address is not supported)".to_owned())
            } else {
                Ok(parsed)
            }
        }
    };
    ask::answer(
        request as u64,
        answer.map_or_else(ask::Answer::Failed, ask::Answer::Addresses),
    );
}

/// The answer of a client's `tls.checkServerIdentity` to `request` (an `identity` event):
/// `error`, why the certificate is not the server's, or none when it is.
#[napi(catch_unwind)]
pub fn identity_answer(request: f64, error: Option<String>) {
    ask::answer(request as u64, error.map_or(ask::Answer::Accepted, ask::Answer::Failed));
}

/// Writes what sends corked in this turn (scheduled by JS as a microtask).
#[napi]
pub fn client_uncork(env: Env, owner: Object<'_>) -> Result<()> {
    with_client(&env, &owner, |c| c.uncork())?;
    Ok(())
}

#[napi]
pub fn client_take_dropped(env: Env, owner: Object<'_>) -> Result<Vec<JsMessage>> {
    with_client(&env, &owner, |c| c.take_dropped())
}

/// Hands back every queued, unsent message, oldest first.
#[napi]
pub fn client_drain_queue(env: Env, owner: Object<'_>) -> Result<Vec<JsMessage>> {
    with_client(&env, &owner, |c| c.drain_queue())
}

/// Discards the queue; returns how many messages were discarded.
#[napi]
pub fn client_discard_queue(env: Env, owner: Object<'_>) -> Result<u32> {
    with_client(&env, &owner, |c| c.discard_queue())
}

/// Discards the queued messages sent with these tickets (`send()` callbacks' numbers); returns
/// how many there were.
#[napi]
pub fn client_discard_tickets(env: Env, owner: Object<'_>, tickets: Vec<f64>) -> Result<u32> {
    let tickets: Vec<u64> = tickets.into_iter().map(|t| t as u64).collect();
    with_client(&env, &owner, |c| c.discard_tickets(&tickets))
}

/// Sends a ping frame; false when the connection is not open.
#[napi]
pub fn client_ping(env: Env, owner: Object<'_>, data: &[u8]) -> Result<bool> {
    with_client(&env, &owner, |c| c.ping(data))
}

#[napi]
pub fn client_pong(env: Env, owner: Object<'_>, data: &[u8]) -> Result<bool> {
    with_client(&env, &owner, |c| c.pong(data))
}

#[napi]
pub fn client_buffered_amount(env: Env, owner: Object<'_>) -> Result<f64> {
    with_client(&env, &owner, |c| c.buffered_amount())
}

/// Keeps the client reachable without a connection while JS waits on it (`messages()`).
#[napi]
pub fn client_hold(env: Env, owner: Object<'_>, on: bool) -> Result<()> {
    with_client(&env, &owner, |c| c.hold(env, on))?;
    Ok(())
}

/// Stops (or resumes) reading from the socket: backpressure from a slow `messages()` consumer.
#[napi]
pub fn client_pause_reading(env: Env, owner: Object<'_>, paused: bool) -> Result<()> {
    with_client(&env, &owner, |c| c.pause_reading(paused))?;
    Ok(())
}

#[napi]
pub fn client_set_ref(env: Env, owner: Object<'_>, refd: bool) -> Result<()> {
    with_client(&env, &owner, |c| c.set_ref(env, refd))?;
    Ok(())
}

#[napi]
pub fn client_metrics(env: Env, owner: Object<'_>) -> Result<NativeMetrics> {
    with_client(&env, &owner, |c| c.metrics())
}

#[cfg(test)]
mod tests {
    use super::{ms, timer, MAX_TIMER_MS};
    use std::time::Duration;

    #[test]
    fn a_timer_option_stays_within_nodes_longest_timer() {
        assert_eq!(timer(f64::INFINITY), Duration::from_millis(MAX_TIMER_MS));
        assert_eq!(timer(1e300), Duration::from_millis(MAX_TIMER_MS));
        assert_eq!(timer(0.5), Duration::from_millis(1));
        // An Instant this far ahead is fine (u64::MAX ms would overflow it).
        let _ = tokio::time::Instant::now() + timer(f64::INFINITY);
    }

    #[test]
    fn a_fraction_of_a_millisecond_is_rounded_up_not_to_zero() {
        // 0 means "off" for pingInterval and "at once" for timeouts: 0.5 must not become it.
        assert_eq!(
            [ms(0.0), ms(0.5), ms(1.0), ms(1.2), ms(f64::INFINITY)],
            [0, 1, 1, 2, u64::MAX]
        );
    }
}
