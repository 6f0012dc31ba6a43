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

/// One request per slot, in the order the slots first appear among the keys:
/// each part's frame, as a node gets it.
#[derive(Debug)]
pub struct Split {
    pub parts: Vec<(Slot, Bytes)>,
    pub merge: Merge,
}

/// Splits `request`, whose keys are at argument positions `keys` (in order),
/// into one request per slot. Each key carries the arguments up to the next
/// key (MSET's value). `None` when the arguments are not a plain list of keys
/// (with their values) after the command name: then it is not split.
pub fn split_by_slot(command: &Command, combine: Combine, request: &Request, keys: &[usize]) -> Option<Split> {
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
    // Every part in one buffer (one allocation however many slots), its
    // arguments copied as the client encoded them.
    let mut builder = RequestsBuilder::with_capacity(request.frame().len() + 16 * slots.len());
    let mut parts = Vec::with_capacity(slots.len());
    if slots.len() == keys.len() {
        // A slot per key (random keys): the parts are the keys in order.
        for (&at, &slot) in keys.iter().zip(&slots) {
            builder.begin(1 + step);
            builder.args_of(request, 0..1);
            builder.args_of(request, at..at + step);
            parts.push((slot, builder.finish()));
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
        for (part, &slot) in slots.iter().enumerate() {
            let mine = &grouped[starts[part]..starts[part + 1]];
            builder.begin(1 + mine.len() * step);
            builder.args_of(request, 0..1);
            for &at in mine {
                builder.args_of(request, at..at + step);
            }
            parts.push((slot, builder.finish()));
        }
    }
    let merge = match combine {
        Combine::InKeyOrder => Merge::InKeyOrder(owner),
        Combine::Sum => Merge::Sum,
        _ => Merge::AllSucceeded,
    };
    Some(Split { parts, merge })
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
        let request = Request::from_args(args);
        let entry = lookup(&request).ok()?;
        let Route::Keyed(keyed) = entry.route else { return None };
        let mut keys = crate::command::KeyPositions::new();
        crate::command::key_positions(entry.command, keyed.finder, &request, &mut keys).ok()?;
        split_by_slot(entry.command, keyed.split?, &request, &keys)
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
        let parts: Vec<Vec<u8>> = split.parts.iter().map(|(_, frame)| frame.to_vec()).collect();
        assert_eq!(parts[0], Request::from_args(&["MGET", "a", "{a}x"]).frame().to_vec());
        assert_eq!(parts[1], Request::from_args(&["MGET", "b", "b"]).frame().to_vec());
        assert_eq!(split.parts[0].0, key_slot(b"a"));
        assert_eq!(split.merge, Merge::InKeyOrder([0, 1, 0, 1].into_iter().collect()));
    }

    #[test]
    fn values_travel_with_their_keys() {
        let split = split_args(&["mset", "a", "1", "b", "2", "{a}c", "3"]).unwrap();
        assert_eq!(split.parts[0].1.to_vec(), Request::from_args(&["mset", "a", "1", "{a}c", "3"]).frame().to_vec());
        assert_eq!(split.parts[1].1.to_vec(), Request::from_args(&["mset", "b", "2"]).frame().to_vec());
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
