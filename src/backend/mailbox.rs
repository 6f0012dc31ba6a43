//! The hand-off between client sessions and node connections, both ways:
//! requests to a node connection, replies to a session.
//!
//! Both arrive in bursts (one client read carries many requests, one node
//! read answers many of them), so a mailbox collects items in a vector the
//! receiving task takes whole, and wakes that task once per burst rather
//! than once per item. One uncontended lock per item, no allocation in
//! steady state (the receiver swaps in its emptied vector).

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

#[derive(Debug)]
pub struct Mailbox<T> {
    inner: Mutex<Inbox<T>>,
}

#[derive(Debug)]
struct Inbox<T> {
    items: Vec<T>,
    /// The receiving task, while it waits.
    waker: Option<Waker>,
    /// The receiver has gone: nothing more is accepted.
    closed: bool,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Mailbox { inner: Mutex::new(Inbox { items: Vec::new(), waker: None, closed: false }) }
    }
}

/// Why an item was not delivered; it is given back.
#[derive(Debug)]
pub enum Undelivered<T> {
    /// The receiver has gone.
    Closed(T),
    /// As many items as allowed are waiting already.
    Full(T),
}

impl<T> Mailbox<T> {
    /// Leaves an item, waking the receiver if it waits; gives the item back
    /// when the receiver has gone.
    pub fn deliver(&self, item: T) -> Result<(), T> {
        self.deliver_at_most(item, usize::MAX).map_err(|(Undelivered::Closed(item) | Undelivered::Full(item))| item)
    }

    /// Like [`Mailbox::deliver`], unless `limit` items are waiting already.
    pub fn deliver_at_most(&self, item: T, limit: usize) -> Result<(), Undelivered<T>> {
        let waker = {
            let mut inbox = self.lock();
            if inbox.closed {
                return Err(Undelivered::Closed(item));
            }
            if inbox.items.len() >= limit {
                return Err(Undelivered::Full(item));
            }
            inbox.items.push(item);
            inbox.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Leaves every item of `items` (emptied, its allocation kept) with one
    /// lock and at most one wake; drops them when the receiver has gone.
    pub fn deliver_all(&self, items: &mut Vec<T>) {
        let waker = {
            let mut inbox = self.lock();
            if inbox.closed {
                items.clear();
                return;
            }
            if inbox.items.is_empty() {
                std::mem::swap(&mut inbox.items, items);
            } else {
                inbox.items.append(items);
            }
            inbox.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Moves every item into `into` (which must be empty): `Ready(true)` when
    /// there were some, `Ready(false)` once closed and empty; otherwise the
    /// task is woken by the next delivery or by [`Mailbox::close`].
    pub fn poll_take(&self, cx: &mut Context<'_>, into: &mut Vec<T>) -> Poll<bool> {
        let mut inbox = self.lock();
        if !inbox.items.is_empty() {
            std::mem::swap(&mut inbox.items, into);
            return Poll::Ready(true);
        }
        if inbox.closed {
            return Poll::Ready(false);
        }
        if !inbox.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            inbox.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Like [`Mailbox::poll_take`] without waiting: false when empty.
    pub fn try_take(&self, into: &mut Vec<T>) -> bool {
        let mut inbox = self.lock();
        if inbox.items.is_empty() {
            return false;
        }
        std::mem::swap(&mut inbox.items, into);
        true
    }

    /// Whether the receiver has gone.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Takes nothing more; returns what was left and wakes the receiver.
    pub fn close(&self) -> Vec<T> {
        let (left, waker) = {
            let mut inbox = self.lock();
            inbox.closed = true;
            (std::mem::take(&mut inbox.items), inbox.waker.take())
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        left
    }

    fn lock(&self) -> MutexGuard<'_, Inbox<T>> {
        // Plain data, never left half-updated: a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use bytes::Bytes;

    use super::*;
    use crate::backend::{Completion, Reply};

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn reply(seq: u64) -> Completion {
        Completion {
            seq,
            reply: Reply::Frame(Bytes::from_static(b"+OK\r\n")),
            from: None,
            request: Bytes::new(),
            parts: 1,
        }
    }

    #[test]
    fn a_burst_wakes_the_session_once_and_arrives_whole() {
        let mailbox = Mailbox::<Completion>::default();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut batch = Vec::new();
        assert!(mailbox.poll_take(&mut cx, &mut batch).is_pending());
        for seq in 0..5 {
            mailbox.deliver(reply(seq)).unwrap();
        }
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "one wake for the burst");
        assert_eq!(mailbox.poll_take(&mut cx, &mut batch), Poll::Ready(true));
        assert_eq!(batch.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        batch.clear();
        assert!(!mailbox.try_take(&mut batch));
    }

    #[test]
    fn a_run_delivered_whole_keeps_its_order_behind_what_waits() {
        let mailbox = Mailbox::<Completion>::default();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut batch = Vec::new();
        assert!(mailbox.poll_take(&mut cx, &mut batch).is_pending());
        mailbox.deliver(reply(0)).unwrap();
        let mut run: Vec<Completion> = (1..4).map(reply).collect();
        mailbox.deliver_all(&mut run);
        assert!(run.is_empty());
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "one wake");
        assert_eq!(mailbox.poll_take(&mut cx, &mut batch), Poll::Ready(true));
        assert_eq!(batch.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        mailbox.close();
        let mut late = vec![reply(9)];
        mailbox.deliver_all(&mut late);
        assert!(late.is_empty(), "dropped once the receiver has gone");
    }

    #[test]
    fn closing_returns_what_was_left_and_refuses_more() {
        let mailbox = Mailbox::default();
        mailbox.deliver(reply(1)).unwrap();
        let left = mailbox.close();
        assert_eq!(left.len(), 1);
        assert!(mailbox.deliver(reply(2)).is_err());
        let waker = Waker::from(Arc::new(CountingWaker(AtomicUsize::new(0))));
        let mut batch = Vec::new();
        assert_eq!(mailbox.poll_take(&mut Context::from_waker(&waker), &mut batch), Poll::Ready(false));
    }
}
