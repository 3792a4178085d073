//! Counters that let tests prove resources return to zero. Process-wide ones
//! back `clientStats()`; per-client ones back `client.metrics`. Resources that
//! must be released hold an RAII guard, so a counter can only go back down when
//! the resource itself is dropped, whatever path drops it (close, error, abort).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

pub struct Global {
    pub live_clients: AtomicI64,
    pub open_connections: AtomicI64,
    pub pending_reconnects: AtomicI64,
    pub collected_without_disconnect: AtomicU64,
    pub running_drivers: AtomicI64,
    pub pending_attempts: AtomicI64,
    pub heartbeats: AtomicI64,
    /// Read and write buffers held by open connections (an idle one holds none).
    pub io_buffers: AtomicI64,
    /// zlib streams (permessage-deflate) held by open connections.
    pub deflate_contexts: AtomicI64,
    /// Sockets the JS thread watches and reads (`reader`).
    pub js_readers: AtomicI64,
}

pub static GLOBAL: Global = Global {
    live_clients: AtomicI64::new(0),
    open_connections: AtomicI64::new(0),
    pending_reconnects: AtomicI64::new(0),
    collected_without_disconnect: AtomicU64::new(0),
    running_drivers: AtomicI64::new(0),
    pending_attempts: AtomicI64::new(0),
    heartbeats: AtomicI64::new(0),
    io_buffers: AtomicI64::new(0),
    deflate_contexts: AtomicI64::new(0),
    js_readers: AtomicI64::new(0),
};

#[derive(Default)]
pub struct Metrics {
    pub connect_attempts: AtomicU64,
    pub connects: AtomicU64,
    pub reconnects: AtomicU64,
    pub connection_errors: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub pending_reconnects: AtomicI64,
    /// `bufferedAmount`, without the frames the send fast path has not written yet (`Writer::unsent`):
    /// data bytes accepted by `send()` that are queued or with the driver.
    pub buffered: AtomicU64,
    pub queued_messages: AtomicU64,
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

pub fn read(c: &AtomicU64) -> f64 {
    c.load(Relaxed) as f64
}

/// Which of `GLOBAL`'s gauges a `Gauge` counts in.
pub trait Kind {
    fn counter() -> &'static AtomicI64;
}

macro_rules! kinds {
    ($($(#[$doc:meta])* $kind:ident => $field:ident,)*) => {
        $(
            $(#[$doc])*
            pub enum $kind {}
            impl Kind for $kind {
                fn counter() -> &'static AtomicI64 {
                    &GLOBAL.$field
                }
            }
        )*
    };
}

kinds! {
    OpenConnections => open_connections,
    PendingReconnects => pending_reconnects,
    RunningDrivers => running_drivers,
    PendingAttempts => pending_attempts,
    Heartbeats => heartbeats,
    IoBuffers => io_buffers,
    DeflateContexts => deflate_contexts,
    JsReaders => js_readers,
}

/// Increments the global gauge `K` for as long as it lives. Zero-sized (the gauge is in its
/// type): a client's task carries several, and fits tokio's 384-byte task cell only without
/// their bytes.
pub struct Gauge<K: Kind> {
    kind: PhantomData<fn() -> K>,
}

impl<K: Kind> Gauge<K> {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        K::counter().fetch_add(1, Relaxed);
        Gauge { kind: PhantomData }
    }
}

impl<K: Kind> Drop for Gauge<K> {
    fn drop(&mut self) {
        K::counter().fetch_sub(1, Relaxed);
    }
}
