//! A closable multi-producer queue with one consumer task, for the client's
//! commands and a connection's outgoing messages. A deque costs nothing until
//! used and nothing once drained, where a tokio unbounded channel costs ~2.4 KiB
//! per instance, and a connection needs two: a sizeable share of an idle
//! connection's memory.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

pub struct Queue<T> {
    inner: Mutex<Inner<T>>,
    waker: AtomicWaker,
}

struct Inner<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                closed: false,
            }),
            waker: AtomicWaker::new(),
        }
    }
}

impl<T> Queue<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `item` to the consumer; gives it back once the queue is closed.
    pub fn send(&self, item: T) -> Result<(), T> {
        self.send_after(item, || {})
    }

    /// As `send`, with `effect` run first under the queue's lock: a consumer that sees anything
    /// `effect` did and then takes from the queue finds `item` (`effect` runs even when the
    /// queue is closed).
    pub fn send_after(&self, item: T, effect: impl FnOnce()) -> Result<(), T> {
        let mut q = self.lock();
        effect();
        if q.closed {
            return Err(item);
        }
        q.items.push_back(item);
        drop(q);
        self.waker.wake();
        Ok(())
    }

    /// Nothing more will be accepted: the consumer takes what is queued, then sees the end.
    pub fn close(&self) {
        self.lock().closed = true;
        self.waker.wake();
    }

    /// As `close`, without waking the consumer: for a caller that wakes the same task next (a
    /// command queued with `send_after` in the same step), so that the consumer does not wake
    /// up into the caller's locks.
    pub fn close_quietly(&self) {
        self.lock().closed = true;
    }

    /// Closes the queue if it is empty (atomically): the consumer may then exit without
    /// losing an item. False: items are waiting, take them first.
    #[cfg(test)]
    pub fn close_if_empty(&self) -> bool {
        self.close_if_empty_then(|| {})
    }

    /// As `close_if_empty`, running `effect` under the queue's lock when it closes: a producer
    /// that undoes `effect` in `send_after` either comes after it or finds the queue open.
    pub fn close_if_empty_then(&self, effect: impl FnOnce()) -> bool {
        let mut q = self.lock();
        // A queue closed already stays closed, items or not.
        if !q.items.is_empty() {
            return false;
        }
        q.closed = true;
        effect();
        true
    }

    /// The next item; `Ready(None)` once closed and drained.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut q = self.lock();
        if let Some(item) = q.items.pop_front() {
            return Poll::Ready(Some(item));
        }
        if q.closed {
            return Poll::Ready(None);
        }
        if q.items.capacity() > 0 {
            // Drained: an idle client keeps no buffer (a wake-up costs more than the allocation).
            q.items = VecDeque::new();
        }
        // Registered under the lock: a `send` after this point wakes the consumer.
        self.waker.register(cx.waker());
        Poll::Pending
    }

    #[cfg(test)]
    pub async fn recv(&self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub fn try_recv(&self) -> Option<T> {
        self.lock().items.pop_front()
    }

    /// `f` of the next item, in place (under the lock: `f` must be quick), or of `None`.
    pub fn with_front<R>(&self, f: impl FnOnce(Option<&mut T>) -> R) -> R {
        f(self.lock().items.front_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn order_close_and_wakeups() {
        let q = Arc::new(Queue::default());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let consumer = {
            let q = q.clone();
            rt.spawn(async move {
                let mut got = Vec::new();
                while let Some(i) = q.recv().await {
                    got.push(i);
                }
                got
            })
        };
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..10_000 {
                    q.send(i).unwrap();
                }
                q.close();
                assert_eq!(q.send(-1), Err(-1), "a closed queue refuses");
                let other = Queue::default();
                other.send(1).unwrap();
                assert!(!other.close_if_empty(), "not while an item waits");
                assert_eq!(other.try_recv(), Some(1));
                assert!(other.close_if_empty());
                let closed = Queue::default();
                closed.send(1).unwrap();
                closed.close();
                assert!(!closed.close_if_empty(), "an item waits");
                assert_eq!(closed.send(2), Err(2), "closed, it stays closed");
                assert_eq!(other.send(2), Err(2));
            })
        };
        producer.join().unwrap();
        let got = rt.block_on(consumer).unwrap();
        assert_eq!(got, (0..10_000).collect::<Vec<_>>());
    }

    /// What `send_after`'s effect did is never seen without its item: the consumer, having seen
    /// the effect, takes the item, however long the producer takes between the two.
    #[test]
    fn an_effect_and_its_item_are_seen_together() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let q = Arc::new(Queue::default());
        let effect = Arc::new(AtomicU32::new(0));
        let producer = {
            let (q, effect) = (q.clone(), effect.clone());
            std::thread::spawn(move || {
                for i in 1..=200u32 {
                    q.send_after(i, || {
                        effect.store(i, Ordering::Release);
                        if i % 50 == 0 {
                            // A producer preempted between the effect and the item.
                            std::thread::sleep(std::time::Duration::from_millis(20));
                        }
                    })
                    .unwrap();
                }
            })
        };
        let mut taken = 0;
        while taken < 200 {
            let seen = effect.load(Ordering::Acquire);
            while taken < seen {
                taken = q.try_recv().expect("the item of an effect already seen");
            }
            std::hint::spin_loop();
        }
        producer.join().unwrap();
        let closed = Queue::default();
        closed.close();
        let mut ran = false;
        assert_eq!(closed.send_after(7, || ran = true), Err(7));
        assert!(ran, "the effect runs even when the queue is closed");
    }

    #[test]
    fn a_drained_queue_keeps_no_buffer() {
        let q = Queue::default();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        q.send(1).unwrap();
        q.send(2).unwrap();
        assert_eq!(q.poll_recv(&mut cx), Poll::Ready(Some(1)));
        assert_eq!(q.poll_recv(&mut cx), Poll::Ready(Some(2)));
        assert!(q.lock().items.capacity() > 0);
        assert!(q.poll_recv(&mut cx).is_pending());
        assert_eq!(q.lock().items.capacity(), 0, "an idle client keeps no command buffer");
    }
}
