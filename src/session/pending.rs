//! The replies a client is owed, in the order it asked.
//!
//! Every request gets a sequence number and an entry here. Node replies may
//! complete entries in any order (different nodes answer at different
//! speeds); replies leave only from the front, so the client always receives
//! them in request order.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::cluster::Slot;
use crate::resp::Request;

/// Where a request goes when it must be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The master of this slot.
    Slot(Slot),
    /// Any master (keyless commands).
    AnyMaster,
}

/// One request the client is waiting on.
#[derive(Debug)]
pub struct Entry {
    /// The reply, once known.
    pub reply: Option<Bytes>,
    /// The request, kept while a redirect or retry may need to send it again.
    pub request: Option<Request>,
    pub target: Target,
    /// MOVED/ASK hops so far.
    pub redirects: u8,
    /// Retries after TRYAGAIN, CLUSTERDOWN or an unreachable node, and until
    /// when they may go on.
    pub retries: u8,
    pub retry_until: Option<tokio::time::Instant>,
    /// Close the connection once this reply is written (QUIT, protocol errors).
    pub close_after: bool,
}

impl Entry {
    /// A request about to be sent to `target`.
    pub fn new(target: Target) -> Entry {
        Entry { reply: None, request: None, target, redirects: 0, retries: 0, retry_until: None, close_after: false }
    }

    /// A reply slotgate already has (a local command, an error).
    pub fn ready(reply: Bytes) -> Entry {
        Entry { reply: Some(reply), ..Entry::new(Target::AnyMaster) }
    }
}

#[derive(Debug, Default)]
pub struct Pending {
    /// Sequence number of the front entry.
    base: u64,
    entries: VecDeque<Entry>,
}

impl Pending {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds an entry; returns its sequence number.
    pub fn push(&mut self, entry: Entry) -> u64 {
        self.entries.push_back(entry);
        self.base + self.entries.len() as u64 - 1
    }

    pub fn get_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        let index = seq.checked_sub(self.base)?;
        self.entries.get_mut(usize::try_from(index).ok()?)
    }

    /// The newest entry.
    pub fn back_mut(&mut self) -> Option<&mut Entry> {
        self.entries.back_mut()
    }

    /// The front entry, if its reply is ready.
    pub fn pop_ready(&mut self) -> Option<Entry> {
        if self.entries.front()?.reply.is_some() {
            self.base += 1;
            self.entries.pop_front()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting() -> Entry {
        Entry::new(Target::AnyMaster)
    }

    #[test]
    fn replies_leave_in_request_order() {
        let mut pending = Pending::default();
        let a = pending.push(waiting());
        let b = pending.push(waiting());
        assert_eq!((a, b), (0, 1));
        pending.get_mut(b).unwrap().reply = Some(Bytes::from_static(b"+B\r\n"));
        assert!(pending.pop_ready().is_none());
        pending.get_mut(a).unwrap().reply = Some(Bytes::from_static(b"+A\r\n"));
        assert_eq!(pending.pop_ready().unwrap().reply.unwrap(), "+A\r\n");
        assert_eq!(pending.pop_ready().unwrap().reply.unwrap(), "+B\r\n");
        assert!(pending.is_empty());
        assert_eq!(pending.push(waiting()), 2);
        assert!(pending.get_mut(1).is_none());
    }
}
