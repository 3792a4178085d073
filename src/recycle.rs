//! The buffers of large received messages, used again. A payload of 16 KiB or more is read into an
//! allocation of its own, which reaches JS as an external Buffer (`frame`, `event_values`). V8 frees
//! young Buffers in bursts, a scavenge at a time (about 32 MB of them), and glibc then gives the
//! freed memory of the reading thread's arena back to the kernel; the next messages fault their
//! pages in again, zeroed: in a stream of 64 KiB messages, a fifth of the tokio worker's time
//! (docs/performance.md).
//! So a freed payload buffer comes here, and the next large message takes it.
//!
//! Bounded: at most `MAX_BYTES` in the process; a request that no kept buffer fits frees the
//! oldest, so the pool follows the sizes that arrive now. Kept only while a connection is open:
//! the last connection to end empties it, and a buffer that comes back after that is freed.
//! Kept only while large messages keep coming: once none has for `STALE`, the next idle read or
//! heartbeat of any connection empties it (`release_stale`). Kept buffers, returned last, sit at
//! the top of the reading thread's malloc arena, where they would stop glibc from giving back what
//! V8 freed beneath them (tens of MiB after a burst of large messages: docs/performance.md).
//! `clientStats().recycledBytes` shows what it holds.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

/// The most the pool keeps.
pub const MAX_BYTES: usize = 4 << 20;
/// A larger buffer is freed: a message over 1 MiB grows its buffer as it arrives (to any size),
/// and one such buffer would be a quarter of the pool.
const MAX_CAPACITY: usize = (1 << 20) + 64;
/// A kept buffer serves a request for at least this share of its capacity (4/5): a small message
/// does not hold a large buffer that V8 would count at the message's length.
const FIT_NUM: usize = 4;
const FIT_DEN: usize = 5;
/// A request looks at the most recently returned buffers only.
const SCAN: usize = 32;
/// Kept buffers go once no large message has come for this long: a stream has paused.
const STALE: Duration = Duration::from_secs(2);

struct Pool {
    state: Mutex<State>,
}

struct State {
    /// Oldest first.
    free: VecDeque<Vec<u8>>,
    /// The sum of `free`'s capacities.
    bytes: usize,
    /// Open connections (`Holder`s).
    holders: usize,
    /// When a large message last asked for a buffer.
    last_take: Option<Instant>,
}

impl State {
    fn stale(&self, now: Instant) -> bool {
        self.last_take.is_none_or(|t| now.saturating_duration_since(t) >= STALE)
    }
}

/// The process's pool.
static POOL: Pool = Pool::new();

impl Pool {
    const fn new() -> Self {
        Pool {
            state: Mutex::new(State {
                free: VecDeque::new(),
                bytes: 0,
                holders: 0,
                last_take: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it (it is taken in `Drop`s too); were it poisoned, the
        // state would still be consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty buffer of at least `capacity` bytes: a kept one that fits, or a new one. When none
    /// fits, the oldest kept buffer is freed: buffers of sizes no longer asked for leave the pool.
    fn take(&self, capacity: usize) -> Vec<u8> {
        let stale = {
            let mut st = self.lock();
            st.last_take = Some(Instant::now());
            let n = st.free.len();
            let fits = |v: &Vec<u8>| v.capacity() >= capacity && capacity * FIT_DEN >= v.capacity() * FIT_NUM;
            if let Some(i) = (n.saturating_sub(SCAN)..n).rev().find(|&i| fits(&st.free[i])) {
                let v = st.free.remove(i).expect("index in range");
                st.bytes -= v.capacity();
                return v;
            }
            let stale = st.free.pop_front();
            st.bytes -= stale.as_ref().map_or(0, Vec::capacity);
            stale
        };
        drop(stale);
        Vec::with_capacity(capacity)
    }

    /// Keeps `v` for a later `take` if a connection is open, large messages still come, and there
    /// is room. Once the pool is full it keeps what it has rather than trade old buffers for new
    /// ones: freeing buffers kept from earlier bursts let glibc give more memory back than freeing
    /// the new ones (page faults per 40,000 messages of 64 KiB, 2,700-8,900 against 9,400-64,200).
    fn give_back(&self, mut v: Vec<u8>) {
        let cap = v.capacity();
        if cap == 0 || cap > MAX_CAPACITY {
            return;
        }
        v.clear();
        let mut st = self.lock();
        if st.holders > 0 && st.bytes + cap <= MAX_BYTES && !st.stale(Instant::now()) {
            st.bytes += cap;
            st.free.push_back(v);
            return;
        }
        drop(st);
        drop(v);
    }

    fn hold(&self) {
        self.lock().holders += 1;
    }

    fn release(&self) {
        let freed = {
            let mut st = self.lock();
            st.holders = st.holders.saturating_sub(1);
            if st.holders > 0 {
                return;
            }
            st.bytes = 0;
            std::mem::take(&mut st.free)
        };
        drop(freed);
    }

    /// Frees what the pool keeps if no large message has come for `STALE`. Skipped when another
    /// thread holds the pool: it is asking for a buffer, or giving one back.
    fn release_stale(&self, now: Instant) {
        let freed = {
            let mut st = match self.state.try_lock() {
                Ok(st) => st,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
            if st.free.is_empty() || !st.stale(now) {
                return;
            }
            st.bytes = 0;
            std::mem::take(&mut st.free)
        };
        drop(freed);
    }

    fn held_bytes(&self) -> usize {
        self.lock().bytes
    }
}

/// An empty buffer of at least `capacity` bytes for a large payload, kept from an earlier
/// message when one fits.
pub fn take(capacity: usize) -> Vec<u8> {
    POOL.take(capacity)
}

/// `v`, which gives the buffer back to the pool when it is dropped (the JS Buffer over it is
/// collected, or the message was copied and dropped).
pub fn pooled(v: Vec<u8>) -> Pooled {
    Pooled { v, pool: &POOL }
}

/// Called when a connection's socket has nothing more to read, and at its heartbeats: the kept
/// buffers go if large messages have stopped coming.
pub fn release_stale() {
    POOL.release_stale(Instant::now());
}

/// Bytes the pool holds (`clientStats().recycledBytes`).
pub fn held_bytes() -> usize {
    POOL.held_bytes()
}

/// Held by each open connection: the pool keeps buffers only while one is open, and the last to
/// go empties it. Zero-sized: it lives inline in the connection.
pub struct Holder(());

impl Holder {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        POOL.hold();
        Holder(())
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        POOL.release();
    }
}

/// A large message's buffer, taken from the pool (`take`) and filled: it goes back when dropped.
pub struct Pooled {
    v: Vec<u8>,
    pool: &'static Pool,
}

impl Pooled {
    /// The buffer, out of the pool for good (a fragmented message's first piece, which the rest
    /// are appended to).
    pub fn into_vec(mut self) -> Vec<u8> {
        std::mem::take(&mut self.v)
    }
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.v
    }
}

impl AsMut<[u8]> for Pooled {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.v
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool that a large message has just asked (these tests run within `STALE`).
    fn pool() -> &'static Pool {
        let p: &'static Pool = Box::leak(Box::new(Pool::new()));
        p.lock().last_take = Some(Instant::now());
        p
    }

    fn pooled_in(pool: &'static Pool, v: Vec<u8>) -> Pooled {
        Pooled { v, pool }
    }

    #[test]
    fn a_returned_buffer_serves_the_next_request_of_its_size() {
        let p = pool();
        p.hold();
        let mut v = p.take(65_546);
        v.extend_from_slice(&[7; 65_536]);
        let at = v.as_ptr();
        let b = pooled_in(p, v);
        assert_eq!(&b.as_ref()[..3], &[7, 7, 7]);
        assert_eq!(p.held_bytes(), 0);
        drop(b);
        assert!(p.held_bytes() >= 65_546);
        let again = p.take(65_546);
        assert_eq!(again.as_ptr(), at, "the same memory");
        assert!(again.is_empty());
        assert_eq!(p.held_bytes(), 0);
    }

    #[test]
    fn a_buffer_much_larger_than_asked_for_is_not_handed_out() {
        let p = pool();
        p.hold();
        let large = Vec::with_capacity(1 << 20);
        let at = large.as_ptr();
        drop(pooled_in(p, large));
        let near = p.take((1 << 20) - 1000);
        assert_eq!(near.as_ptr(), at, "the kept one, for nearly its size");
        drop(pooled_in(p, near));
        assert_eq!(p.take(16 * 1024).capacity(), 16 * 1024, "a new one for a small message");
    }

    #[test]
    fn the_pool_keeps_at_most_max_bytes() {
        let p = pool();
        p.hold();
        let mut kept = Vec::new();
        for _ in 0..2 * MAX_BYTES / 65_536 {
            let v = Vec::with_capacity(65_536);
            kept.push(v.as_ptr());
            drop(pooled_in(p, v));
            assert!(p.held_bytes() <= MAX_BYTES);
        }
        assert_eq!(p.held_bytes(), MAX_BYTES);
        // The newest of those kept comes back first.
        let newest = p.take(65_536);
        assert_eq!(newest.as_ptr(), kept[MAX_BYTES / 65_536 - 1]);
        drop(pooled_in(p, Vec::with_capacity(2 << 20)));
        assert_eq!(
            p.held_bytes(),
            MAX_BYTES - 65_536,
            "a buffer over MAX_CAPACITY is freed"
        );
    }

    #[test]
    fn sizes_no_longer_asked_for_leave_the_pool() {
        let p = pool();
        p.hold();
        for _ in 0..4 {
            drop(pooled_in(p, Vec::with_capacity(20_000)));
        }
        assert_eq!(p.held_bytes(), 80_000);
        for left in (0..4).rev() {
            assert_eq!(p.take(65_536).capacity(), 65_536, "none fits: a new one");
            assert_eq!(p.held_bytes(), left * 20_000, "and the oldest kept is freed");
        }
    }

    #[test]
    fn kept_buffers_go_once_large_messages_stop_coming() {
        let p = pool();
        p.hold();
        let v = p.take(65_536);
        drop(pooled_in(p, v));
        assert_eq!(p.held_bytes(), 65_536);
        let now = Instant::now();
        p.release_stale(now);
        assert_eq!(p.held_bytes(), 65_536, "a large message came just now");
        p.release_stale(now + STALE);
        assert_eq!(p.held_bytes(), 0, "none for STALE: freed");
        // Nor is a buffer that comes back after that kept.
        p.lock().last_take = now.checked_sub(STALE);
        drop(pooled_in(p, Vec::with_capacity(65_536)));
        assert_eq!(p.held_bytes(), 0);
        // The next large message starts keeping again.
        let v = p.take(65_536);
        drop(pooled_in(p, v));
        assert_eq!(p.held_bytes(), 65_536);
    }

    #[test]
    fn nothing_is_kept_once_no_connection_is_open() {
        let p = pool();
        drop(pooled_in(p, Vec::with_capacity(65_536)));
        assert_eq!(p.held_bytes(), 0, "no connection open");
        p.hold();
        p.hold();
        let late = pooled_in(p, Vec::with_capacity(65_536));
        drop(pooled_in(p, Vec::with_capacity(65_536)));
        p.release();
        assert_eq!(p.held_bytes(), 65_536, "one connection still open");
        p.release();
        assert_eq!(p.held_bytes(), 0, "emptied by the last");
        drop(late);
        assert_eq!(p.held_bytes(), 0, "a buffer that comes back later is freed");
    }
}
