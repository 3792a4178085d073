//! Hooks the tests use to reach rare paths: a task or a read that panics, a thread preempted at
//! the wrong moment, a slow resolver. They exist only with the `testing` feature, which
//! `npm run build` turns on; the published binaries (`npm run build:dist`) have none, and there
//! each hook below is a constant the compiler removes.

#[cfg(feature = "testing")]
mod hooks {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::time::Duration;

    /// The id of a client whose task panics on its next poll. 0: none.
    static PANIC_DRIVER: AtomicU64 = AtomicU64::new(0);
    /// The id of a client whose next read on the JS thread panics. 0: none.
    static PANIC_READ: AtomicU64 = AtomicU64::new(0);
    /// The id of a client whose next call from JS panics. 0: none.
    static PANIC_CALL: AtomicU64 = AtomicU64::new(0);
    /// The id of a client whose next event panics as its batch for JS is made. 0: none.
    static PANIC_DELIVERY: AtomicU64 = AtomicU64::new(0);
    /// Milliseconds the next `disconnect()` stalls once it has written its close frame. 0: none.
    static STALL_AFTER_CLOSE: AtomicU64 = AtomicU64::new(0);
    /// Milliseconds the next driver to exit waits before it reports the exit. 0: none.
    static STALL_DRIVER_EXIT: AtomicU64 = AtomicU64::new(0);
    /// Milliseconds every lookup waits before it asks the resolver. 0: none.
    static LOOKUP_DELAY: AtomicU64 = AtomicU64::new(0);
    /// Lookups still to be refused a thread. 0: none.
    static REFUSED_LOOKUP_THREADS: AtomicU64 = AtomicU64::new(0);

    fn sleep(ms: u64) {
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }

    pub fn panic_driver(id: u64) {
        PANIC_DRIVER.store(id, Relaxed);
    }

    /// Whether client `id`'s task is to panic now.
    pub fn driver_panics(id: u64) -> bool {
        PANIC_DRIVER.load(Relaxed) == id
    }

    /// Client `id`'s task panicked: the request is spent.
    pub fn driver_panicked(id: u64) {
        let _ = PANIC_DRIVER.compare_exchange(id, 0, Relaxed, Relaxed);
    }

    pub fn panic_read(id: u64) {
        PANIC_READ.store(id, Relaxed);
    }

    pub fn panic_call(id: u64) {
        PANIC_CALL.store(id, Relaxed);
    }

    pub fn panic_delivery(id: u64) {
        PANIC_DELIVERY.store(id, Relaxed);
    }

    /// Whether making a batch with an event of client `id` is to panic (once).
    pub fn delivery_panics(id: u64) -> bool {
        // 0: no client (a warning's events), and no request.
        id != 0
            && PANIC_DELIVERY.load(Relaxed) == id
            && PANIC_DELIVERY.compare_exchange(id, 0, Relaxed, Relaxed).is_ok()
    }

    /// Whether this call from JS on client `id` is to panic (once; another client's call leaves
    /// the request in place).
    pub fn call_panics(id: u64) -> bool {
        PANIC_CALL.load(Relaxed) == id && PANIC_CALL.compare_exchange(id, 0, Relaxed, Relaxed).is_ok()
    }

    /// Whether this read of client `id` is to panic (once).
    pub fn read_panics(id: u64) -> bool {
        PANIC_READ.swap(0, Relaxed) == id
    }

    pub fn set_stall_after_close(ms: u32) {
        STALL_AFTER_CLOSE.store(u64::from(ms), Relaxed);
    }

    /// As a preempted JS thread would, between the close frame and the command that follows it.
    pub fn stall_after_close() {
        sleep(STALL_AFTER_CLOSE.swap(0, Relaxed));
    }

    pub fn set_stall_driver_exit(ms: u32) {
        STALL_DRIVER_EXIT.store(u64::from(ms), Relaxed);
    }

    /// As a preempted worker would, before a driver reports its exit.
    pub fn stall_driver_exit() {
        sleep(STALL_DRIVER_EXIT.swap(0, Relaxed));
    }

    pub fn set_lookup_delay(ms: u32) {
        LOOKUP_DELAY.store(u64::from(ms), Relaxed);
    }

    /// Milliseconds a lookup waits first.
    pub fn lookup_delay() -> u64 {
        LOOKUP_DELAY.load(Relaxed)
    }

    pub fn refuse_lookup_threads(count: u32) {
        REFUSED_LOOKUP_THREADS.store(u64::from(count), Relaxed);
    }

    /// Whether this lookup's thread is to be refused (counted down).
    pub fn lookup_thread_refused() -> bool {
        REFUSED_LOOKUP_THREADS
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

#[cfg(not(feature = "testing"))]
mod hooks {
    pub fn driver_panics(_id: u64) -> bool {
        false
    }

    pub fn driver_panicked(_id: u64) {}

    pub fn read_panics(_id: u64) -> bool {
        false
    }

    pub fn call_panics(_id: u64) -> bool {
        false
    }

    pub fn delivery_panics(_id: u64) -> bool {
        false
    }

    pub fn stall_after_close() {}

    pub fn stall_driver_exit() {}

    pub fn lookup_delay() -> u64 {
        0
    }

    pub fn lookup_thread_refused() -> bool {
        false
    }
}

pub use hooks::*;

/// Paths the tests prove were taken, counted only in tests and with the `testing` feature: the
/// published binaries count nothing.
#[derive(Clone, Copy)]
pub enum Probe {
    /// Messages read on the JS thread.
    DirectMessages,
    /// Readable sockets the JS thread left for a later turn, its budget for the turn spent.
    DirectWaits,
    /// Sockets a JS thread took over (and watched).
    TakeOvers,
    /// Close frames `disconnect()` wrote on the JS thread.
    ClosesFromJs,
    /// First messages of a turn the send fast path wrote at once.
    WrittenAtOnce,
    /// Writes of what the send fast path corked (`disconnect()`'s close among them).
    CorkedWrites,
    /// Calls into JS the addon asked for, each a wake-up of a JS thread.
    Rings,
    /// Host name lookup threads started.
    Lookups,
    /// Writes that failed while a connection was open (reading went on: `connection::Broken`).
    FailedWrites,
}

#[cfg(any(test, feature = "testing"))]
static PROBES: [std::sync::atomic::AtomicU64; 9] = [const { std::sync::atomic::AtomicU64::new(0) }; 9];

/// Counts `n` more of `probe`.
#[inline]
pub fn count(probe: Probe, n: u64) {
    #[cfg(any(test, feature = "testing"))]
    PROBES[probe as usize].fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    #[cfg(not(any(test, feature = "testing")))]
    let _ = (probe, n);
}

/// How many of `probe` were counted since the process started.
#[cfg(any(test, feature = "testing"))]
pub fn probe(probe: Probe) -> u64 {
    PROBES[probe as usize].load(std::sync::atomic::Ordering::Relaxed)
}
