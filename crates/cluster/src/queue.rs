//! Queues bounded in bytes as well as in items.
//!
//! A [`Budget`] is a number of bytes; every queued item holds a [`Held`] share of one or
//! two budgets (its connection's and, for clients, the all-clients one) and gives it back
//! when the item is dropped, whoever drops it: the consumer after use, or a queue that is
//! itself dropped with items inside. So a budget's use is always the bytes really waiting.
//! Producers either wait for room ([`Budget::take`], back-pressure on a replica's TCP
//! window) or drop the item ([`Budget::try_take`], clients and outbound frames: the
//! protocol retransmits).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// A byte budget, with an optional high-water-mark counter (shared by every budget of the
/// same kind, so it reports the largest use of any one of them).
#[derive(Debug)]
pub struct Budget {
    sem: Arc<Semaphore>,
    max: usize,
    hwm: Option<Arc<AtomicUsize>>,
}

/// Bytes held from one or two budgets; returned on drop.
#[derive(Debug, Default)]
pub struct Held {
    _own: Option<OwnedSemaphorePermit>,
    _shared: Option<OwnedSemaphorePermit>,
    _count: Option<OwnedSemaphorePermit>,
}

impl Held {
    /// Add `other`'s bytes to these (both taken from the same budget or budgets).
    pub fn merge(&mut self, other: Held) {
        fn one(a: &mut Option<OwnedSemaphorePermit>, b: Option<OwnedSemaphorePermit>) {
            match (a.as_mut(), b) {
                (Some(a), Some(b)) => a.merge(b),
                (None, b) => *a = b,
                (Some(_), None) => {}
            }
        }
        one(&mut self._own, other._own);
        one(&mut self._shared, other._shared);
        one(&mut self._count, other._count);
    }

    /// `self`, taken from a connection's own budget, together with `shared`, taken from
    /// a budget shared by connections: one share of both.
    #[must_use]
    pub fn with_shared(mut self, shared: Held) -> Held {
        self._shared = shared._own;
        self
    }

    /// `self` together with `count`, taken from a budget counted in items rather than
    /// bytes (a client's frames waiting for the core): one share of all.
    #[must_use]
    pub fn with_count(mut self, count: Held) -> Held {
        self._count = count._own;
        self
    }
}

impl Budget {
    /// A budget of `max` bytes.
    #[must_use]
    pub fn new(max: usize, hwm: Option<Arc<AtomicUsize>>) -> Arc<Budget> {
        let max = max.min(Semaphore::MAX_PERMITS);
        Arc::new(Budget {
            sem: Arc::new(Semaphore::new(max)),
            max,
            hwm,
        })
    }

    /// Bytes in use now.
    #[must_use]
    pub fn used(&self) -> usize {
        self.max - self.sem.available_permits().min(self.max)
    }

    /// The budget's size.
    #[must_use]
    pub fn max(&self) -> usize {
        self.max
    }

    fn note(&self) {
        if let Some(h) = &self.hwm {
            h.fetch_max(self.used(), Ordering::Relaxed);
        }
    }

    fn permits(n: usize) -> Option<u32> {
        u32::try_from(n).ok()
    }

    /// `n` bytes now, or `None` if they are not free.
    pub fn try_take(self: &Arc<Self>, n: usize) -> Option<Held> {
        let p = self
            .sem
            .clone()
            .try_acquire_many_owned(Self::permits(n)?)
            .ok()?;
        self.note();
        Some(Held {
            _own: Some(p),
            _shared: None,
            _count: None,
        })
    }

    /// `n` bytes, waiting until they are free; `None` if `n` exceeds the whole budget.
    pub async fn take(self: &Arc<Self>, n: usize) -> Option<Held> {
        if n > self.max {
            return None;
        }
        let p = self
            .sem
            .clone()
            .acquire_many_owned(Self::permits(n)?)
            .await
            .ok()?;
        self.note();
        Some(Held {
            _own: Some(p),
            _shared: None,
            _count: None,
        })
    }

    /// `n` bytes from `own` and from `shared` now, or `None` (holding nothing) if either
    /// is short.
    pub fn try_take_both(
        own: &Arc<Budget>,
        shared: Option<&Arc<Budget>>,
        n: usize,
    ) -> Option<Held> {
        let mut a = own.try_take(n)?;
        if let Some(s) = shared {
            a._shared = s.try_take(n)?._own;
        }
        Some(a)
    }
}

/// The sending side of a byte-bounded frame queue. Never waits.
#[derive(Debug, Clone)]
pub struct QueueTx {
    tx: mpsc::Sender<(Bytes, Held)>,
    own: Arc<Budget>,
    shared: Option<Arc<Budget>>,
}

/// The receiving side of a byte-bounded frame queue.
#[derive(Debug)]
pub struct QueueRx {
    rx: mpsc::Receiver<(Bytes, Held)>,
}

/// A queue of at most `count` frames and `own.max()` bytes (and, with `shared`, within
/// that budget too).
#[must_use]
pub fn queue(count: usize, own: Arc<Budget>, shared: Option<Arc<Budget>>) -> (QueueTx, QueueRx) {
    let (tx, rx) = mpsc::channel(count.max(1));
    (QueueTx { tx, own, shared }, QueueRx { rx })
}

impl QueueTx {
    /// Queue `frame`, or `false` (dropped) if the count or a byte budget is full.
    pub fn try_send(&self, frame: Bytes) -> bool {
        let Some(held) = Budget::try_take_both(&self.own, self.shared.as_ref(), frame.len()) else {
            return false;
        };
        self.tx.try_send((frame, held)).is_ok()
    }

    /// Queue `frame`, waiting for room in the count and in the own budget (the shared
    /// budget is never waited for). `false` if the queue is closed or the frame can never
    /// fit.
    pub async fn send(&self, frame: Bytes) -> bool {
        let Some(mut held) = self.own.take(frame.len()).await else {
            return false;
        };
        if let Some(s) = &self.shared {
            match s.try_take(frame.len()) {
                Some(h) => held._shared = h._own,
                None => return false,
            }
        }
        self.tx.send((frame, held)).await.is_ok()
    }

    /// Bytes queued now.
    #[must_use]
    pub fn queued_bytes(&self) -> usize {
        self.own.used()
    }
}

impl QueueRx {
    /// The next frame and its budget share (keep it until the frame is written).
    pub async fn recv(&mut self) -> Option<(Bytes, Held)> {
        self.rx.recv().await
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<(Bytes, Held)> {
        self.rx.try_recv().ok()
    }

    /// Whether every sender is gone.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.rx.is_closed()
    }

    /// Drop everything queued (stale frames after a reconnection).
    pub fn clear(&mut self) {
        while self.rx.try_recv().is_ok() {}
    }
}

/// Items from many senders, each under a key (a client identity), taken one key at a time
/// in turn: a key with many items queued delays another key's first item by at most one
/// item of each other key. At most `max` items in all (callers bound each key's share).
#[derive(Debug)]
pub struct FairTx<K: Eq + std::hash::Hash + Clone, T> {
    inner: Arc<Fair<K, T>>,
}

/// The receiving side of [`fair`].
#[derive(Debug)]
pub struct FairRx<K: Eq + std::hash::Hash + Clone, T> {
    inner: Arc<Fair<K, T>>,
}

#[derive(Debug)]
struct Fair<K, T> {
    state: std::sync::Mutex<FairState<K, T>>,
    notify: tokio::sync::Notify,
    senders: AtomicUsize,
    rx_alive: std::sync::atomic::AtomicBool,
    max: usize,
}

#[derive(Debug)]
struct FairState<K, T> {
    queues: std::collections::HashMap<K, std::collections::VecDeque<T>>,
    ring: std::collections::VecDeque<K>,
    len: usize,
}

/// A fair queue of at most `max` items.
#[must_use]
pub fn fair<K: Eq + std::hash::Hash + Clone, T>(max: usize) -> (FairTx<K, T>, FairRx<K, T>) {
    let inner = Arc::new(Fair {
        state: std::sync::Mutex::new(FairState {
            queues: std::collections::HashMap::new(),
            ring: std::collections::VecDeque::new(),
            len: 0,
        }),
        notify: tokio::sync::Notify::new(),
        senders: AtomicUsize::new(1),
        rx_alive: std::sync::atomic::AtomicBool::new(true),
        max: max.max(1),
    });
    (
        FairTx {
            inner: inner.clone(),
        },
        FairRx { inner },
    )
}

impl<K, T> Fair<K, T> {
    fn state(&self) -> std::sync::MutexGuard<'_, FairState<K, T>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<K: Eq + std::hash::Hash + Clone, T> FairTx<K, T> {
    /// Queue `item` under `key`; `Err(item)` if `max` items are queued or the receiver is
    /// gone.
    pub fn try_send(&self, key: K, item: T) -> Result<(), T> {
        if !self.inner.rx_alive.load(Ordering::Acquire) {
            return Err(item);
        }
        {
            let mut st = self.inner.state();
            if st.len >= self.inner.max {
                return Err(item);
            }
            let q = st.queues.entry(key.clone()).or_default();
            let was_empty = q.is_empty();
            q.push_back(item);
            if was_empty {
                st.ring.push_back(key);
            }
            st.len += 1;
        }
        self.inner.notify.notify_one();
        Ok(())
    }
}

impl<K: Eq + std::hash::Hash + Clone, T> Clone for FairTx<K, T> {
    fn clone(&self) -> Self {
        self.inner.senders.fetch_add(1, Ordering::Relaxed);
        FairTx {
            inner: self.inner.clone(),
        }
    }
}

impl<K: Eq + std::hash::Hash + Clone, T> Drop for FairTx<K, T> {
    fn drop(&mut self) {
        if self.inner.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.notify.notify_one();
        }
    }
}

impl<K: Eq + std::hash::Hash + Clone, T> Drop for FairRx<K, T> {
    fn drop(&mut self) {
        self.inner.rx_alive.store(false, Ordering::Release);
        // Queued items (and the budget shares they hold) go now, not with the last sender.
        let mut st = self.inner.state();
        st.queues.clear();
        st.ring.clear();
        st.len = 0;
    }
}

impl<K: Eq + std::hash::Hash + Clone, T> FairRx<K, T> {
    /// The next item, one key at a time in turn, if one is queued.
    pub fn try_recv(&mut self) -> Option<T> {
        let mut st = self.inner.state();
        let key = st.ring.pop_front()?;
        let q = st.queues.get_mut(&key)?;
        let item = q.pop_front();
        if q.is_empty() {
            st.queues.remove(&key);
        } else {
            st.ring.push_back(key);
        }
        if item.is_some() {
            st.len -= 1;
        }
        item
    }

    /// The next item, waiting for one; `None` once every sender is gone and nothing is
    /// queued.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            if let Some(x) = self.try_recv() {
                return Some(x);
            }
            if self.inner.senders.load(Ordering::Acquire) == 0 {
                return self.try_recv();
            }
            self.inner.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_refuses_frames_beyond_its_bytes_and_returns_them_on_drop() {
        let hwm = Arc::new(AtomicUsize::new(0));
        let shared = Budget::new(250, None);
        let own = Budget::new(200, Some(hwm.clone()));
        let (tx, mut rx) = queue(100, own.clone(), Some(shared.clone()));
        assert!(tx.try_send(Bytes::from(vec![0u8; 150])));
        assert!(!tx.try_send(Bytes::from(vec![0u8; 60])), "own budget full");
        assert!(tx.try_send(Bytes::from(vec![0u8; 50])));
        assert_eq!((own.used(), shared.used()), (200, 200));
        let (f, held) = rx.try_recv().expect("frame");
        assert_eq!(f.len(), 150);
        assert_eq!(own.used(), 200, "held until written");
        drop(held);
        assert_eq!((own.used(), shared.used()), (50, 50));
        // The shared budget limits too, and a refusal holds nothing.
        let own2 = Budget::new(1000, None);
        let (tx2, rx2) = queue(100, own2.clone(), Some(shared.clone()));
        assert!(!tx2.try_send(Bytes::from(vec![0u8; 201])));
        assert_eq!((own2.used(), shared.used()), (0, 50));
        assert!(tx2.try_send(Bytes::from(vec![0u8; 200])));
        drop(rx2);
        assert_eq!(shared.used(), 50, "a dropped queue returns its bytes");
        assert_eq!(hwm.load(Ordering::Relaxed), 200);
        // The count bound holds too.
        let (tx3, _rx3) = queue(2, Budget::new(1000, None), None);
        assert!(tx3.try_send(Bytes::from_static(b"a")));
        assert!(tx3.try_send(Bytes::from_static(b"b")));
        assert!(!tx3.try_send(Bytes::from_static(b"c")));
    }
}
