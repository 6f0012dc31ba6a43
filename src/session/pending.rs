//! The replies a client is owed, in the order it asked.
//!
//! Every request gets a sequence number and an entry here. Node replies may
//! complete entries in any order (different nodes answer at different
//! speeds); replies leave only from the front, so the client always receives
//! them in request order.

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::time::Instant;

use crate::cluster::Slot;
use crate::fanout::Merge;
use crate::resp::Protocol;

/// Where a request goes, which is also what it must stay ordered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The master of this slot.
    Slot(Slot),
    /// A read-only command for this slot: its master or, by `read_from`, a replica.
    Reader(Slot),
    /// Any master (keyless commands).
    AnyMaster,
    /// Answered by slotgate itself.
    Local,
    /// The client's own node connection (transactions, blocking commands).
    Dedicated,
}

impl Target {
    /// The slot a request is sent for, if any.
    pub fn slot(self) -> Option<Slot> {
        match self {
            Target::Slot(slot) | Target::Reader(slot) => Some(slot),
            _ => None,
        }
    }
}

/// What the metrics need of a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    /// Its command's family plus one; 0: not counted (a part, an internal request).
    pub family: u8,
    /// When it was read, in microseconds since the session began.
    pub read_at_us: u32,
    /// slotgate answered it with an error of its own.
    pub by_proxy: bool,
}

/// One request the client is waiting on.
#[derive(Debug)]
pub struct Entry {
    pub tally: Tally,
    /// The reply, once known.
    pub reply: Option<Bytes>,
    pub target: Target,
    /// The command runs user code (EVAL, FCALL): its error replies may look
    /// like redirects without being them.
    pub runs_scripts: bool,
    /// The command only reads: sent twice, it changes nothing, so it is
    /// retried even when a node may have run it before its connection broke.
    pub read_only: bool,
    /// MOVED/ASK hops so far.
    pub redirects: u8,
    /// A NOSCRIPT was healed once (the script loaded on the node).
    pub healed: bool,
    /// CLIENT REPLY OFF/SKIP: the reply is not written.
    pub silent: bool,
    /// Retries after TRYAGAIN, CLUSTERDOWN or an unreachable node, whether
    /// one is waiting now, and until when they may go on.
    pub retries: u8,
    pub retrying: bool,
    pub retry_until: Option<Instant>,
    /// Close the connection once this reply is written (QUIT, protocol errors).
    pub close_after: bool,
    /// WAIT: what it waits for; its request is `INFO replication`, sent
    /// again until enough replicas have caught up.
    pub wait: Option<Box<Wait>>,
    /// The first part of a request sent in parts (split per slot, or to
    /// every master): its parts are the entries from here on.
    pub group: Option<Box<Group>>,
}

/// A WAIT in progress.
#[derive(Debug)]
pub struct Wait {
    pub replicas: i64,
    /// None: for ever (timeout 0).
    pub deadline: Option<Instant>,
    /// The master's replication offset when the WAIT began: every write
    /// of this client before it is at or below it.
    pub offset: Option<u64>,
}

/// A request sent in parts: how many entries its parts take (this one
/// included), and how their replies merge.
#[derive(Debug)]
pub struct Group {
    pub parts: usize,
    pub merge: Merge,
    /// The client's protocol when it asked (the parts' replies are in it).
    pub protocol: Protocol,
    /// CLIENT REPLY OFF/SKIP: the merged reply is not written.
    pub silent: bool,
}

/// What leaves the front of the queue.
#[derive(Debug)]
pub enum Ready {
    One(Entry),
    /// Every part of a request has its reply, in part order; the first
    /// part's tally (`by_proxy` if any part's).
    Parts(Box<Group>, Vec<Bytes>, Tally),
}

impl Entry {
    /// A request about to be sent to `target`.
    pub fn new(target: Target, runs_scripts: bool) -> Entry {
        Entry {
            tally: Tally::default(),
            reply: None,
            target,
            runs_scripts,
            read_only: false,
            redirects: 0,
            healed: false,
            silent: false,
            wait: None,
            retries: 0,
            retrying: false,
            retry_until: None,
            close_after: false,
            group: None,
        }
    }

    /// A reply slotgate already has (a local command, an error).
    pub fn ready(reply: Bytes) -> Entry {
        Entry { reply: Some(reply), ..Entry::new(Target::Local, false) }
    }

    /// Has it reached a node (answered, or on its way and not waiting for a
    /// retry)? An entry is sent as soon as it is made, or answered at once.
    fn sent(&self) -> bool {
        self.reply.is_some() || !self.retrying
    }
}

#[derive(Debug, Default)]
pub struct Pending {
    /// Sequence number of the front entry.
    base: u64,
    entries: VecDeque<Entry>,
    /// The last split request's list of part replies, emptied, for the next.
    spare: Vec<Bytes>,
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

    /// The sequence number the next entry will get.
    pub fn next_seq(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// Marks every entry from `seq` on as not to be written.
    pub fn silence_from(&mut self, seq: u64) {
        let from = usize::try_from(seq.saturating_sub(self.base)).unwrap_or(usize::MAX);
        for entry in self.entries.iter_mut().skip(from) {
            entry.silent = true;
            if let Some(group) = &mut entry.group {
                group.silent = true;
            }
        }
    }

    pub fn get_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        let index = seq.checked_sub(self.base)?;
        self.entries.get_mut(usize::try_from(index).ok()?)
    }

    /// The newest entry.
    pub fn back_mut(&mut self) -> Option<&mut Entry> {
        self.entries.back_mut()
    }

    /// Has a request sent after `seq` to the same target already reached a
    /// node? Then sending `seq` again would run it after that one.
    pub fn later_sent_to(&self, seq: u64, target: Target) -> bool {
        let Some(index) = seq.checked_sub(self.base).and_then(|i| usize::try_from(i).ok()) else {
            return false;
        };
        // A read for a slot and a write for it are one target: whichever
        // node each went to, the read must not come back with the later write.
        let same = |other: Target| other == target || (target.slot().is_some() && other.slot() == target.slot());
        self.entries.iter().skip(index + 1).any(|entry| same(entry.target) && entry.sent())
    }

    /// The front request's reply, once it (all its parts) is ready.
    pub fn pop_ready(&mut self) -> Option<Ready> {
        let front = self.entries.front()?;
        let Some(parts) = front.group.as_ref().map(|group| group.parts) else {
            front.reply.as_ref()?;
            self.base += 1;
            return self.entries.pop_front().map(Ready::One);
        };
        self.pop_group(parts)
    }

    /// Takes back the list of part replies of a [`Ready::Parts`], once
    /// merged: the next split request fills it without allocating.
    pub fn recycle(&mut self, mut replies: Vec<Bytes>) {
        replies.clear();
        // Not one grown for a huge fan-out.
        if replies.capacity() <= 64 {
            self.spare = replies;
        }
    }

    /// [`Pending::pop_ready`] for a request split in `parts`: kept apart so
    /// that the single-reply path stays small.
    #[inline(never)]
    fn pop_group(&mut self, parts: usize) -> Option<Ready> {
        if self.entries.len() < parts || self.entries.iter().take(parts).any(|entry| entry.reply.is_none()) {
            return None;
        }
        let front = self.entries.front_mut()?;
        let group = front.group.take()?;
        let mut tally = front.tally;
        self.base += parts as u64;
        let mut replies = std::mem::take(&mut self.spare);
        replies.reserve(parts);
        for entry in self.entries.drain(..parts) {
            tally.by_proxy |= entry.tally.by_proxy;
            replies.extend(entry.reply);
        }
        Some(Ready::Parts(group, replies, tally))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(target: Target) -> Entry {
        Entry::new(target, false)
    }

    #[test]
    fn replies_leave_in_request_order() {
        let mut pending = Pending::default();
        let a = pending.push(waiting(Target::AnyMaster));
        let b = pending.push(waiting(Target::AnyMaster));
        assert_eq!((a, b), (0, 1));
        pending.get_mut(b).unwrap().reply = Some(Bytes::from_static(b"+B\r\n"));
        assert!(pending.pop_ready().is_none());
        pending.get_mut(a).unwrap().reply = Some(Bytes::from_static(b"+A\r\n"));
        assert_eq!(reply(pending.pop_ready()), "+A\r\n");
        assert_eq!(reply(pending.pop_ready()), "+B\r\n");
        assert!(pending.is_empty());
        assert_eq!(pending.push(waiting(Target::AnyMaster)), 2);
        assert!(pending.get_mut(1).is_none());
    }

    fn reply(ready: Option<Ready>) -> Bytes {
        match ready {
            Some(Ready::One(entry)) => entry.reply.unwrap(),
            other => panic!("expected one reply, got {other:?}"),
        }
    }

    #[test]
    fn a_request_in_parts_leaves_when_every_part_is_answered() {
        let mut pending = Pending::default();
        let first = pending.push(waiting(Target::AnyMaster));
        pending.get_mut(first).unwrap().group =
            Some(Box::new(Group { parts: 2, merge: Merge::Sum, protocol: Protocol::Resp2, silent: false }));
        let second = pending.push(waiting(Target::AnyMaster));
        let after = pending.push(Entry::ready(Bytes::from_static(b"+PONG\r\n")));
        pending.get_mut(first).unwrap().reply = Some(Bytes::from_static(b":1\r\n"));
        assert!(pending.pop_ready().is_none());
        pending.get_mut(second).unwrap().reply = Some(Bytes::from_static(b":2\r\n"));
        match pending.pop_ready() {
            Some(Ready::Parts(group, replies, _)) => {
                assert_eq!(group.merge, Merge::Sum);
                assert_eq!(replies, vec![Bytes::from_static(b":1\r\n"), Bytes::from_static(b":2\r\n")]);
            }
            other => panic!("expected the parts, got {other:?}"),
        }
        assert_eq!(after, 2);
        assert_eq!(reply(pending.pop_ready()), "+PONG\r\n");
    }

    #[test]
    fn an_entry_stays_within_two_cache_lines() {
        // Thousands are in flight for a client pipelining split requests, and
        // each is read again when its reply comes back, long after it was
        // made: its size is what that reply costs in cache misses.
        assert!(std::mem::size_of::<Entry>() <= 96, "{} bytes", std::mem::size_of::<Entry>());
    }

    #[test]
    fn later_requests_to_the_same_slot_are_found() {
        let (s1, s2) = (Target::Slot(Slot::new(1).unwrap()), Target::Slot(Slot::new(2).unwrap()));
        let mut pending = Pending::default();
        let first = pending.push(waiting(s1));
        pending.push(waiting(s2));
        pending.push(Entry::ready(Bytes::from_static(b"+PONG\r\n")));
        assert!(!pending.later_sent_to(first, s1));
        let later = pending.push(waiting(s1));
        assert!(pending.later_sent_to(first, s1));
        pending.get_mut(later).unwrap().retrying = true;
        assert!(!pending.later_sent_to(first, s1), "a later request waiting for its own retry has not been sent");
    }
}
