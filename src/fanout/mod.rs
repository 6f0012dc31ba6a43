//! Commands one node cannot answer alone, and the one reply a single server
//! would give for them: multi-key commands split into one request per slot
//! (MGET, MSET, DEL, ...), commands sent to every master (KEYS, DBSIZE,
//! FLUSHALL, SCRIPT LOAD, INFO, ...), and SCAN's cursor across masters.
//!
//! Splitting makes requests; merging reads the parts' replies (already in
//! the client's protocol, since node connections speak it) and writes one
//! reply. Neither knows where the parts go: the session sends them.

mod info;
mod scan;

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use crate::cluster::{Slot, key_slot};
use crate::command::spec::FindKeys;
use crate::command::{Combine, Command};
use crate::error::ClientError;
use crate::resp::{Protocol, ReplyScanner, Request, RequestsBuilder, value, write};

pub use info::ProxyInfo;
pub use scan::{InvalidCursor, ScanCursor};

/// How the replies of a request's parts become its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// MGET: for each key asked for, the index of the part that has it
    /// (inline for the usual few keys: no allocation of its own).
    InKeyOrder(SmallVec<[u16; 16]>),
    Sum,
    AllSucceeded,
    OneSucceeded,
    LogicalAnd,
    Min,
    Concat,
    /// RANDOMKEY: which of the non-null answers to take.
    AnyNonNull(u64),
    /// INFO, with slotgate's own section for the sections asked for.
    Info(Box<ProxyInfo>),
    /// SCAN on one master: the node's cursor becomes slotgate's.
    Scan(ScanCursor),
    /// CONFIG GET: only the parameters slotgate shows.
    ConfigReadable,
    Union,
    PairSum,
}

impl Merge {
    /// The merge for a command sent to every master.
    pub fn broadcast(combine: Combine, pick: u64, proxy: impl FnOnce() -> ProxyInfo) -> Merge {
        match combine {
            Combine::InKeyOrder | Combine::Concat => Merge::Concat,
            Combine::Sum => Merge::Sum,
            Combine::AllSucceeded => Merge::AllSucceeded,
            Combine::OneSucceeded => Merge::OneSucceeded,
            Combine::LogicalAnd => Merge::LogicalAnd,
            Combine::Min => Merge::Min,
            Combine::AnyNonNull => Merge::AnyNonNull(pick),
            Combine::Info => Merge::Info(Box::new(proxy())),
            Combine::Union => Merge::Union,
            Combine::PairSum => Merge::PairSum,
        }
    }
}

/// One request per slot: their frames one after another, in part order.
#[derive(Debug)]
pub struct Split {
    pub frames: Bytes,
    /// Each part's slot, and where its frame ends in `frames`.
    pub parts: Vec<(Slot, usize)>,
    pub merge: Merge,
}

impl Split {
    /// Where the frames of parts `range` are in `frames`.
    pub fn span(&self, range: std::ops::Range<usize>) -> std::ops::Range<usize> {
        let start = range.start.checked_sub(1).map_or(0, |before| self.parts[before].1);
        start..self.parts[range.end - 1].1
    }

    /// The frame of part `index`.
    pub fn part(&self, index: usize) -> Bytes {
        self.frames.slice(self.span(index..index + 1))
    }
}

/// Splits `request`, whose keys are at argument positions `keys` (in order),
/// into one request per slot. Each key carries the arguments up to the next
/// key (MSET's value). `None` when the arguments are not a plain list of keys
/// (with their values) after the command name: then it is not split.
///
/// Parts are ordered by `rank` of their slot, and in the order their slots
/// first appear among the keys within a rank: the caller ranks slots by
/// node, and the parts for one node are one run of frames, sent as one.
/// The frames are written into `buf` (see [`RequestsBuilder::on`]).
pub fn split_by_slot(
    command: &Command,
    combine: Combine,
    request: &Request,
    keys: &[usize],
    mut rank: impl FnMut(Slot) -> u16,
    buf: &mut BytesMut,
) -> Option<Split> {
    let step = match command.key_specs.first()?.find {
        FindKeys::Range { key_step, .. } => usize::try_from(key_step).ok().filter(|&s| s > 0)?,
        _ => return None,
    };
    let plain = keys.iter().enumerate().all(|(i, &at)| at == 1 + i * step);
    if !plain || request.argc() != 1 + keys.len() * step {
        return None;
    }
    // Part index per slot: a short scan while there are few slots (the
    // usual MGET), a map beyond, so a huge request stays linear.
    let mut slots: SmallVec<[Slot; 16]> = SmallVec::new();
    let mut index: HashMap<Slot, u16> = HashMap::new();
    let mut owner: SmallVec<[u16; 16]> = SmallVec::with_capacity(keys.len());
    for &at in keys {
        let slot = key_slot(request.arg(at)?);
        let found = if slots.len() <= 16 {
            slots.iter().position(|&s| s == slot).map(|p| p as u16)
        } else {
            if index.is_empty() {
                index.extend(slots.iter().enumerate().map(|(p, &s)| (s, p as u16)));
            }
            index.get(&slot).copied()
        };
        let part = match found {
            Some(part) => part,
            None => {
                slots.push(slot);
                let part = u16::try_from(slots.len() - 1).ok()?;
                if !index.is_empty() {
                    index.insert(slot, part);
                }
                part
            }
        };
        owner.push(part);
    }
    // The order of the parts (`order[new] = old`, a stable sort by rank),
    // and each key's part by it.
    let ranks: SmallVec<[u16; 16]> = slots.iter().map(|&slot| rank(slot)).collect();
    let mut order: SmallVec<[u16; 16]> = (0..slots.len() as u16).collect();
    if !ranks.is_sorted() {
        order_by_rank(&ranks, &mut order);
        let mut place: SmallVec<[u16; 16]> = SmallVec::from_elem(0, slots.len());
        for (new, &old) in order.iter().enumerate() {
            place[usize::from(old)] = new as u16;
        }
        owner.iter_mut().for_each(|part| *part = place[usize::from(*part)]);
    }
    // Every part in one buffer (one allocation however many slots), its
    // arguments copied as the client encoded them.
    let mut builder = RequestsBuilder::on(buf, request.frame().len() + 16 * slots.len());
    let mut parts = Vec::with_capacity(slots.len());
    if slots.len() == keys.len() {
        // A slot per key (random keys): each part is its key.
        for &old in &order {
            let at = keys[usize::from(old)];
            builder.begin(1 + step);
            builder.args_of(request, 0..1);
            builder.args_of(request, at..at + step);
            parts.push((slots[usize::from(old)], builder.len()));
        }
    } else {
        // Keys grouped by part in one pass (a counting sort), keeping their order.
        let mut starts = vec![0usize; slots.len() + 1];
        for &part in &owner {
            starts[usize::from(part) + 1] += 1;
        }
        for part in 0..slots.len() {
            starts[part + 1] += starts[part];
        }
        let mut fill = starts.clone();
        let mut grouped = vec![0usize; keys.len()];
        for (&part, &at) in owner.iter().zip(keys) {
            grouped[fill[usize::from(part)]] = at;
            fill[usize::from(part)] += 1;
        }
        for (part, &old) in order.iter().enumerate() {
            let mine = &grouped[starts[part]..starts[part + 1]];
            builder.begin(1 + mine.len() * step);
            builder.args_of(request, 0..1);
            for &at in mine {
                builder.args_of(request, at..at + step);
            }
            parts.push((slots[usize::from(old)], builder.len()));
        }
    }
    let merge = match combine {
        Combine::InKeyOrder => Merge::InKeyOrder(owner),
        Combine::Sum => Merge::Sum,
        _ => Merge::AllSucceeded,
    };
    Some(Split { frames: builder.finish(), parts, merge })
}

/// Sorts `order`, the part numbers in order, by their `ranks`, stably: by
/// counting when the ranks are small (masters' shards), as they usually are.
fn order_by_rank(ranks: &[u16], order: &mut [u16]) {
    const FEW: usize = 16;
    if ranks.iter().any(|&rank| usize::from(rank) >= FEW) {
        return order.sort_by_key(|&part| ranks[usize::from(part)]);
    }
    let mut starts = [0u16; FEW + 1];
    for &rank in ranks {
        starts[usize::from(rank) + 1] += 1;
    }
    for rank in 0..FEW {
        starts[rank + 1] += starts[rank];
    }
    for (part, &rank) in ranks.iter().enumerate() {
        order[usize::from(starts[usize::from(rank)])] = part as u16;
        starts[usize::from(rank)] += 1;
    }
}

/// Writes the reply made of the parts' `replies` (in part order).
pub fn merge(merge: &Merge, replies: &[Bytes], protocol: Protocol, out: &mut BytesMut) {
    let first_error = replies.iter().find(|r| value::is_error(r));
    match merge {
        Merge::OneSucceeded => {
            let pick = replies.iter().find(|r| !value::is_error(r)).or(replies.first());
            out.extend_from_slice(pick.map_or(&b"+OK\r\n"[..], |r| r));
        }
        _ if first_error.is_some() => out.extend_from_slice(first_error.map_or(&[][..], |r| r)),
        Merge::AllSucceeded => out.extend_from_slice(replies.first().map_or(&b"+OK\r\n"[..], |r| r)),
        Merge::Sum => match checked_sum(replies.iter().map(|r| value::integer(r))) {
            Some(sum) => write::integer(out, sum),
            None => unexpected(out),
        },
        Merge::Min => match replies.iter().map(|r| value::integer(r)).collect::<Option<Vec<_>>>() {
            Some(all) => write::integer(out, all.into_iter().min().unwrap_or(0)),
            None => unexpected(out),
        },
        Merge::InKeyOrder(owner) => in_key_order(owner, replies, out),
        Merge::Concat => match replies.iter().map(|r| value::elements(r)).collect::<Option<Vec<_>>>() {
            Some(all) => {
                write::array(out, all.iter().map(Vec::len).sum());
                all.iter().flatten().for_each(|e| out.extend_from_slice(e));
            }
            None => unexpected(out),
        },
        Merge::LogicalAnd => logical_and(replies, out),
        Merge::AnyNonNull(pick) => {
            let found: Vec<&Bytes> = replies.iter().filter(|r| !value::is_null(r)).collect();
            match found.len() {
                0 => write::null(out, protocol),
                n => out.extend_from_slice(found[(*pick % n as u64) as usize]),
            }
        }
        Merge::Info(proxy) => info::merge(proxy, replies, protocol, out),
        Merge::Scan(cursor) => scan::merge(*cursor, replies, out),
        Merge::ConfigReadable => config_readable(replies, protocol, out),
        Merge::Union => match replies.iter().map(|r| value::elements(r)).collect::<Option<Vec<_>>>() {
            Some(all) => {
                let mut seen = std::collections::HashSet::new();
                let unique: Vec<&[u8]> = all.iter().flatten().copied().filter(|e| seen.insert(*e)).collect();
                write::array(out, unique.len());
                unique.iter().for_each(|e| out.extend_from_slice(e));
            }
            None => unexpected(out),
        },
        Merge::PairSum => pair_sum(replies, out),
    }
}

/// `[name, count, ...]` from every node (same names, same order), counts summed.
fn pair_sum(replies: &[Bytes], out: &mut BytesMut) {
    let Some(parts) = replies.iter().map(|r| value::elements(r)).collect::<Option<Vec<_>>>() else {
        return unexpected(out);
    };
    let Some(first) = parts.first() else { return write::array(out, 0) };
    if parts.iter().any(|p| p.len() != first.len()) {
        return unexpected(out);
    }
    write::array(out, first.len());
    for (i, element) in first.iter().enumerate() {
        if i % 2 == 0 {
            out.extend_from_slice(element);
            continue;
        }
        match checked_sum(parts.iter().map(|p| value::integer(p[i]))) {
            Some(sum) => write::integer(out, sum),
            None => return unexpected(out),
        }
    }
}

/// CONFIG GET's name/value pairs, less those slotgate does not show.
fn config_readable(replies: &[Bytes], protocol: Protocol, out: &mut BytesMut) {
    let Some(pairs) = replies.first().and_then(|r| value::elements(r)) else {
        return unexpected(out);
    };
    let shown: Vec<&[&[u8]]> = pairs
        .chunks(2)
        .filter(|pair| pair.len() == 2 && value::text(pair[0]).is_some_and(crate::command::config_readable))
        .collect();
    write::map(out, protocol, shown.len());
    shown.iter().flat_map(|pair| pair.iter()).for_each(|part| out.extend_from_slice(part));
}

/// MGET: each key's value, read from its part's reply where the last one
/// read from that part ended (no per-part element lists).
fn in_key_order(owner: &[u16], replies: &[Bytes], out: &mut BytesMut) {
    // Each part's reply is an array; `next` is where its next element starts.
    let mut next: SmallVec<[usize; 16]> = SmallVec::new();
    for reply in replies {
        // The usual part (one key) without a search: memchr's set-up is
        // most of the cost of finding a newline four bytes in.
        if reply.starts_with(b"*1\r\n") {
            next.push(4);
            continue;
        }
        match (reply.first(), memchr::memchr(b'\n', reply)) {
            (Some(b'*'), Some(newline)) => next.push(newline + 1),
            _ => return unexpected(out),
        }
    }
    let start = out.len();
    write::array(out, owner.len());
    for &part in owner {
        let part = usize::from(part);
        let (Some(reply), Some(at)) = (replies.get(part), next.get(part).copied()) else {
            out.truncate(start);
            return unexpected(out);
        };
        // A part of one key (the usual: one key per slot) answers `*1` and
        // its element, which is all that follows: no need to scan it.
        if reply.starts_with(b"*1\r\n") && at == 4 {
            out.extend_from_slice(&reply[at..]);
            next[part] = reply.len();
            continue;
        }
        match ReplyScanner::default().scan(&reply[at..]) {
            Ok(Some(frame)) => {
                out.extend_from_slice(&reply[at..at + frame.len]);
                next[part] = at + frame.len;
            }
            _ => {
                out.truncate(start);
                return unexpected(out);
            }
        }
    }
}

fn logical_and(replies: &[Bytes], out: &mut BytesMut) {
    let Some(parts) = replies.iter().map(|r| value::elements(r)).collect::<Option<Vec<_>>>() else {
        return unexpected(out);
    };
    let len = parts.first().map_or(0, Vec::len);
    if parts.iter().any(|p| p.len() != len) {
        return unexpected(out);
    }
    write::array(out, len);
    for i in 0..len {
        let all = parts.iter().all(|p| value::integer(p[i]).is_some_and(|n| n != 0));
        write::integer(out, i64::from(all));
    }
}

/// The sum of integers, `None` if one is missing or the sum overflows.
fn checked_sum(mut values: impl Iterator<Item = Option<i64>>) -> Option<i64> {
    values.try_fold(0i64, |sum, n| sum.checked_add(n?))
}

/// A node answered a part in a shape its command never has.
fn unexpected(out: &mut BytesMut) {
    ClientError::Unmergeable("a node answered in an unexpected form").write(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Route, lookup};

    fn split_args(args: &[&str]) -> Option<Split> {
        split_ranked(args, |_| 0)
    }

    fn split_ranked(args: &[&str], rank: impl FnMut(Slot) -> u16) -> Option<Split> {
        let request = Request::from_args(args);
        let entry = lookup(&request).ok()?;
        let Route::Keyed(keyed) = entry.route else { return None };
        let mut keys = crate::command::KeyPositions::new();
        crate::command::key_positions(entry.command, keyed.finder, &request, &mut keys).ok()?;
        split_by_slot(entry.command, keyed.split?, &request, &keys, rank, &mut BytesMut::new())
    }

    fn merged(merge: &Merge, replies: &[&str]) -> String {
        let replies: Vec<Bytes> = replies.iter().map(|r| Bytes::copy_from_slice(r.as_bytes())).collect();
        let mut out = BytesMut::new();
        super::merge(merge, &replies, Protocol::Resp2, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn keys_are_grouped_by_slot_in_first_seen_order() {
        // a and {a}x share a slot; b does not.
        let split = split_args(&["MGET", "a", "b", "{a}x", "b"]).unwrap();
        let parts: Vec<Vec<u8>> = (0..split.parts.len()).map(|part| split.part(part).to_vec()).collect();
        assert_eq!(parts[0], Request::from_args(&["MGET", "a", "{a}x"]).frame().to_vec());
        assert_eq!(parts[1], Request::from_args(&["MGET", "b", "b"]).frame().to_vec());
        assert_eq!(split.parts[0].0, key_slot(b"a"));
        assert_eq!(split.merge, Merge::InKeyOrder([0, 1, 0, 1].into_iter().collect()));
    }

    #[test]
    fn parts_ranked_alike_are_one_run_and_keys_keep_their_order() {
        // b's slot ranks first (its node, say): its part moves to the front.
        let b = key_slot(b"b");
        let split = split_ranked(&["MGET", "a", "b", "{a}x", "c"], |slot| u16::from(slot != b)).unwrap();
        let slots: Vec<Slot> = split.parts.iter().map(|&(slot, _)| slot).collect();
        assert_eq!(slots, [b, key_slot(b"a"), key_slot(b"c")]);
        assert_eq!(&split.frames[split.span(1..3)], &[split.part(1), split.part(2)].concat()[..]);
        assert_eq!(split.part(1).to_vec(), Request::from_args(&["MGET", "a", "{a}x"]).frame().to_vec());
        let replies = ["*1\r\n$1\r\nB\r\n", "*2\r\n$1\r\nA\r\n$1\r\nX\r\n", "*1\r\n$1\r\nC\r\n"];
        assert_eq!(merged(&split.merge, &replies), "*4\r\n$1\r\nA\r\n$1\r\nB\r\n$1\r\nX\r\n$1\r\nC\r\n");
        // One slot per key, reordered the same way.
        let split = split_ranked(&["MGET", "a", "b", "c"], |slot| u16::from(slot != b)).unwrap();
        assert_eq!(split.part(0).to_vec(), Request::from_args(&["MGET", "b"]).frame().to_vec());
        assert_eq!(split.merge, Merge::InKeyOrder([1, 0, 2].into_iter().collect()));
    }

    #[test]
    fn values_travel_with_their_keys() {
        let split = split_args(&["mset", "a", "1", "b", "2", "{a}c", "3"]).unwrap();
        assert_eq!(split.part(0).to_vec(), Request::from_args(&["mset", "a", "1", "{a}c", "3"]).frame().to_vec());
        assert_eq!(split.part(1).to_vec(), Request::from_args(&["mset", "b", "2"]).frame().to_vec());
        assert_eq!(split.merge, Merge::AllSucceeded);
        assert_eq!(split_args(&["del", "a", "b"]).unwrap().merge, Merge::Sum);
    }

    #[test]
    fn replies_merge_like_one_server() {
        let order = Merge::InKeyOrder([0, 1, 0, 1].into_iter().collect());
        assert_eq!(
            merged(&order, &["*2\r\n$1\r\nA\r\n$-1\r\n", "*2\r\n$1\r\nB\r\n$2\r\nBB\r\n"]),
            "*4\r\n$1\r\nA\r\n$1\r\nB\r\n$-1\r\n$2\r\nBB\r\n"
        );
        // One key per part (the usual), a RESP3 null and a nested reply among them.
        let order = Merge::InKeyOrder([1, 0, 2].into_iter().collect());
        assert_eq!(
            merged(&order, &["*1\r\n_\r\n", "*1\r\n$1\r\nB\r\n", "*1\r\n*1\r\n:1\r\n"]),
            "*3\r\n$1\r\nB\r\n_\r\n*1\r\n:1\r\n"
        );
        assert_eq!(merged(&order, &["*1\r\n_\r\n", "-ERR x\r\n", "*1\r\n:1\r\n"]), "-ERR x\r\n");
        assert_eq!(merged(&Merge::Sum, &[":2\r\n", ":3\r\n"]), ":5\r\n");
        assert_eq!(merged(&Merge::Min, &[":7\r\n", ":3\r\n"]), ":3\r\n");
        assert_eq!(merged(&Merge::AllSucceeded, &["+OK\r\n", "+OK\r\n"]), "+OK\r\n");
        assert_eq!(merged(&Merge::AllSucceeded, &["+OK\r\n", "-ERR no\r\n"]), "-ERR no\r\n");
        assert_eq!(merged(&Merge::OneSucceeded, &["-NOTBUSY x\r\n", "+OK\r\n"]), "+OK\r\n");
        assert_eq!(merged(&Merge::OneSucceeded, &["-NOTBUSY x\r\n", "-NOTBUSY y\r\n"]), "-NOTBUSY x\r\n");
        assert_eq!(
            merged(&Merge::Concat, &["*1\r\n$1\r\na\r\n", "*0\r\n", "*1\r\n$1\r\nb\r\n"]),
            "*2\r\n$1\r\na\r\n$1\r\nb\r\n"
        );
        assert_eq!(merged(&Merge::LogicalAnd, &["*2\r\n:1\r\n:1\r\n", "*2\r\n:1\r\n:0\r\n"]), "*2\r\n:1\r\n:0\r\n");
        assert_eq!(merged(&Merge::AnyNonNull(5), &["$-1\r\n", "$1\r\nk\r\n"]), "$1\r\nk\r\n");
        assert_eq!(merged(&Merge::AnyNonNull(5), &["$-1\r\n", "$-1\r\n"]), "$-1\r\n");
        assert_eq!(
            merged(&Merge::Union, &["*2\r\n$1\r\na\r\n$1\r\nb\r\n", "*1\r\n$1\r\na\r\n"]),
            "*2\r\n$1\r\na\r\n$1\r\nb\r\n"
        );
        let numsub = "*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:0\r\n";
        assert_eq!(merged(&Merge::PairSum, &[numsub, numsub]), "*4\r\n$1\r\na\r\n:2\r\n$1\r\nb\r\n:0\r\n");
        let config = "*4\r\n$4\r\nsave\r\n$0\r\n\r\n$10\r\nmasterauth\r\n$6\r\nsecret\r\n";
        assert_eq!(merged(&Merge::ConfigReadable, &[config]), "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
    }

    #[test]
    fn odd_replies_give_an_error_not_a_panic() {
        let order = Merge::InKeyOrder([0, 0].into_iter().collect());
        assert!(merged(&order, &["*1\r\n$1\r\nA\r\n"]).starts_with("-ERR slotgate"));
        assert!(merged(&Merge::Sum, &[":1\r\n", "+OK\r\n"]).starts_with("-ERR slotgate"));
        assert!(merged(&Merge::LogicalAnd, &["*1\r\n:1\r\n", "*2\r\n:1\r\n:1\r\n"]).starts_with("-ERR slotgate"));
    }
}
