//! redial-ws native core. Layout by responsibility:
//! - `backoff`, `machine`: pure reconnection logic (no I/O, time passed in);
//! - `connection`, `driver`: the tokio side that owns sockets and timers;
//! - `delivery`: coalesced event delivery to JS and the JS-thread registry;
//! - `client`, `options`, `errors`, `stats`: the N-API surface.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod backoff;
pub mod client;
pub mod connection;
pub mod delivery;
pub mod driver;
pub mod errors;
pub mod frame;
pub mod machine;
pub mod napi_raw;
pub mod options;
pub mod outbox;
pub mod queue;
pub mod stats;
pub mod transport;

use std::sync::atomic::Ordering::Relaxed;

use napi::bindgen_prelude::*;
use napi_derive::napi;

/// Installs the JS dispatcher that receives coalesced event batches. Called once by `lib/client.js`.
#[napi]
pub fn init(env: Env, dispatch: Function<'_, napi_raw::RawValue, ()>) -> Result<()> {
    delivery::init(&env, dispatch)
}

/// JS has dispatched the last event batch (called from a `setImmediate`): returns the next
/// batch, or an empty array when there is none.
#[napi]
pub fn delivery_ack(env: Env) -> Result<napi_raw::RawValue> {
    delivery::ack(&env)
}

#[napi(object)]
pub struct ClientStats {
    /// Clients not yet garbage-collected.
    pub live_clients: f64,
    /// Open WebSocket connections (handshake done, socket not yet dropped).
    pub open_connections: f64,
    /// Reconnect timers waiting to fire.
    pub pending_reconnects: f64,
    /// Clients collected while still active (`disconnect()` was forgotten).
    pub collected_without_disconnect: f64,
    /// Driver tasks running (one per active client).
    pub running_tasks: f64,
    /// Connection attempts in flight (TCP connect or handshake).
    pub pending_attempts: f64,
    /// Heartbeat timers (one per open connection when `pingInterval` > 0).
    pub heartbeats: f64,
    /// TLS configurations alive: one per distinct trust setting, shared by its clients.
    pub tls_configs: f64,
    /// Read and write buffers held by open connections: an idle connection holds none.
    pub io_buffers: f64,
}

#[napi]
pub fn client_stats() -> ClientStats {
    let g = &stats::GLOBAL;
    ClientStats {
        live_clients: g.live_clients.load(Relaxed) as f64,
        open_connections: g.open_connections.load(Relaxed) as f64,
        pending_reconnects: g.pending_reconnects.load(Relaxed) as f64,
        collected_without_disconnect: g.collected_without_disconnect.load(Relaxed) as f64,
        running_tasks: g.running_drivers.load(Relaxed) as f64,
        pending_attempts: g.pending_attempts.load(Relaxed) as f64,
        heartbeats: g.heartbeats.load(Relaxed) as f64,
        tls_configs: transport::live_tls_configs() as f64,
        io_buffers: g.io_buffers.load(Relaxed) as f64,
    }
}

/// One tokio worker: every client's driver is I/O-bound and cheap, and on small
/// machines a second worker competes with the JS thread for the cores, which
/// shows up as latency. `REDIAL_WS_WORKERS` overrides it.
#[napi_derive::module_init]
fn init_runtime() {
    let workers = std::env::var("REDIAL_WS_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1usize)
        .max(1);
    if let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("redial-ws")
        .enable_all()
        .build()
    {
        napi::bindgen_prelude::create_custom_tokio_runtime(rt);
    }
}
