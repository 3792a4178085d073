//! The N-API class behind `ReconnectingWebSocket` (see `index.js`).
//!
//! Lifetime: the JS wrapper owns this object; this object refers back to the
//! wrapper only through a registry reference that is strong while a connection
//! exists. When the application drops a client that has no connection, both
//! are collected, and `finalize`/`Drop` abort the driver: the pending
//! reconnect timer dies with it. `Drop` touches no runtime: an abort handle and
//! dropped channels only, so it is safe at process exit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tokio::sync::mpsc::UnboundedSender;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::backoff::{Backoff, Jitter};
use crate::connection::ConnConfig;
use crate::delivery::{self, JsEvent};
use crate::driver::{Command, Driver, DriverConfig, Shared};
use crate::machine::Policy;
use crate::options::NativeOptions;
use crate::stats::{self, Metrics, GLOBAL};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

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
}

#[napi(custom_finalize)]
pub struct NativeClient {
    shared: Arc<Shared>,
    config: Arc<DriverConfig>,
    url: String,
    commands: Option<UnboundedSender<Command>>,
    driver: Option<tokio::task::AbortHandle>,
}

#[napi]
impl NativeClient {
    /// `owner` is the JS client object; `url` and `options` are already validated by `lib/options.js`.
    #[napi(constructor)]
    pub fn new(env: Env, owner: Object<'_>, url: String, options: NativeOptions) -> Result<Self> {
        let parsed =
            url::Url::parse(&url).map_err(|e| Error::new(Status::InvalidArg, format!("invalid URL {url}: {e}")))?;
        let jitter = Jitter::parse(&options.jitter)
            .ok_or_else(|| Error::new(Status::InvalidArg, format!("invalid jitter {}", options.jitter)))?;
        let config = DriverConfig {
            conn: ConnConfig {
                url: parsed,
                connect_timeout: Duration::from_millis(ms(options.connect_timeout)),
                max_payload: options.max_payload.clamp(1.0, usize::MAX as f64) as usize,
            },
            policy: Policy {
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
            },
            close_timeout: Duration::from_millis(ms(options.close_timeout)),
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        delivery::register(&env, id, &owner)?;
        env.adjust_external_memory(EXTERNAL_BYTES)?;
        GLOBAL.live_clients.fetch_add(1, Ordering::Relaxed);
        Ok(NativeClient {
            shared: Arc::new(Shared {
                id,
                metrics: Arc::new(Metrics::default()),
                out: Mutex::new(None),
            }),
            config: Arc::new(config),
            url,
            commands: None,
            driver: None,
        })
    }

    /// Starts connecting (idempotent). Returns the driver generation.
    #[napi]
    pub fn connect(&mut self, env: Env) -> Result<u32> {
        let id = self.shared.id;
        if delivery::is_active(id) {
            if let Some(tx) = &self.commands {
                if tx.send(Command::Connect).is_ok() {
                    delivery::hold_strong(&env, id);
                    return Ok(delivery::generation(id));
                }
            }
        }
        // No driver, or one that is exiting: start a fresh one.
        let hub = delivery::hub().ok_or_else(|| Error::from_reason("redial-ws: dispatcher not initialised"))?;
        let gen = delivery::activate(&env, id);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = Driver::new(self.shared.clone(), hub, self.config.clone(), gen);
        let handle = napi::bindgen_prelude::spawn(driver.run(rx));
        if let Some(old) = self.driver.replace(handle.abort_handle()) {
            // An exiting driver has already closed its command channel; make sure it is gone.
            old.abort();
        }
        self.commands = Some(tx);
        Ok(gen)
    }

    /// Asks the driver to disconnect. Returns false when there is nothing to disconnect.
    #[napi]
    pub fn disconnect(&mut self, env: Env, code: u32, reason: String) -> bool {
        if !delivery::is_active(self.shared.id) {
            return false;
        }
        // Until the disconnect completes, the client stays reachable so that its promise settles.
        delivery::hold_strong(&env, self.shared.id);
        if let Some(tx) = &self.commands {
            let _ = tx.send(Command::Disconnect {
                code: code as u16,
                reason,
            });
        }
        true
    }

    #[napi(getter)]
    pub fn active(&self) -> bool {
        delivery::is_active(self.shared.id)
    }

    #[napi(getter)]
    pub fn generation(&self) -> u32 {
        delivery::generation(self.shared.id)
    }

    /// Writes a text message; false when the connection is not open.
    #[napi]
    pub fn send_text(&self, data: String) -> bool {
        self.send(Message::Text(data.into()))
    }

    /// Writes a binary message (copied once); false when the connection is not open.
    #[napi]
    pub fn send_binary(&self, data: &[u8]) -> bool {
        self.send(Message::Binary(Bytes::copy_from_slice(data)))
    }

    fn send(&self, msg: Message) -> bool {
        let out = self.shared.out.lock().unwrap_or_else(|p| p.into_inner());
        match out.as_ref() {
            Some(tx) => tx.send(msg).is_ok(),
            None => false,
        }
    }

    #[napi(js_name = "setRef")]
    pub fn set_ref(&self, env: Env, refd: bool) {
        delivery::set_ref(&env, self.shared.id, refd);
    }

    #[napi(getter)]
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
        }
    }
}

fn ms(v: f64) -> u64 {
    if v.is_finite() {
        v.clamp(0.0, u64::MAX as f64) as u64
    } else {
        u64::MAX
    }
}

impl ObjectFinalize for NativeClient {
    fn finalize(self, env: Env) -> Result<()> {
        let was_active = delivery::unregister(&env, self.shared.id);
        let _ = env.adjust_external_memory(-EXTERNAL_BYTES);
        if was_active && !delivery::shutting_down() {
            GLOBAL.collected_without_disconnect.fetch_add(1, Ordering::Relaxed);
            if let Some(hub) = delivery::hub() {
                hub.push_one(
                    0,
                    JsEvent::Warning {
                        code: "REDIAL_WS_NOT_DISCONNECTED",
                        message: format!(
                            "a ReconnectingWebSocket for {} was garbage-collected without disconnect(); its reconnect was cancelled",
                            self.url
                        ),
                    },
                );
            }
        }
        Ok(())
        // `Drop` follows and aborts the driver.
    }
}

impl Drop for NativeClient {
    fn drop(&mut self) {
        if let Some(driver) = self.driver.take() {
            driver.abort();
        }
        self.commands = None;
        GLOBAL.live_clients.fetch_sub(1, Ordering::Relaxed);
    }
}
