//! SCAN across masters. slotgate's cursor holds which master is being
//! scanned (in the order of their first slots) and that master's own cursor,
//! so a full iteration visits every master once, each from 0 to 0, and
//! every key Redis's SCAN guarantees on one node is returned here too.

use bytes::{Bytes, BytesMut};

use crate::resp::{value, write};

/// Low bits of slotgate's cursor: the master's position. Redis Cluster
/// supports at most 1000 nodes.
const SHARD_BITS: u32 = 10;

/// Where a SCAN continues: the master's position and how many there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanCursor {
    pub shard: u16,
    pub shards: u16,
}

/// The client's cursor names no master, or is not a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidCursor;

impl ScanCursor {
    /// Reads a client's cursor, for a cluster of `shards` masters: where to
    /// continue, and the cursor to send that master.
    pub fn parse(cursor: &[u8], shards: usize) -> Result<(ScanCursor, u64), InvalidCursor> {
        let cursor: u64 = std::str::from_utf8(cursor).ok().and_then(|c| c.parse().ok()).ok_or(InvalidCursor)?;
        let shard = (cursor & ((1 << SHARD_BITS) - 1)) as usize;
        let shards = u16::try_from(shards).map_err(|_| InvalidCursor)?;
        if shard >= usize::from(shards) {
            return Err(InvalidCursor);
        }
        Ok((ScanCursor { shard: shard as u16, shards }, cursor >> SHARD_BITS))
    }

    /// slotgate's cursor after the master answered with `node_cursor`.
    fn next(self, node_cursor: u64) -> Option<u64> {
        if node_cursor == 0 {
            let next = self.shard + 1;
            return Some(if next < self.shards { u64::from(next) } else { 0 });
        }
        let shifted = node_cursor.checked_shl(SHARD_BITS).filter(|s| s >> SHARD_BITS == node_cursor)?;
        Some(shifted | u64::from(self.shard))
    }
}

/// The master's `[cursor, keys]` with its cursor replaced by slotgate's.
pub(super) fn merge(cursor: ScanCursor, replies: &[Bytes], out: &mut BytesMut) {
    let answer = replies.first().and_then(|reply| {
        let parts = value::elements(reply)?;
        let [node_cursor, keys] = parts.as_slice() else { return None };
        let node_cursor = std::str::from_utf8(value::text(node_cursor)?).ok()?.parse().ok()?;
        Some((cursor.next(node_cursor)?, *keys))
    });
    match answer {
        Some((next, keys)) => {
            write::array(out, 2);
            write::bulk(out, itoa::Buffer::new().format(next).as_bytes());
            out.extend_from_slice(keys);
        }
        None => match replies.first() {
            Some(error) if value::is_error(error) => out.extend_from_slice(error),
            _ => write::error(out, "ERR slotgate could not read a node's SCAN reply"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_walks_every_master_once() {
        let (at, node) = ScanCursor::parse(b"0", 3).unwrap();
        assert_eq!((at, node), (ScanCursor { shard: 0, shards: 3 }, 0));
        assert_eq!(at.next(17), Some(17 << SHARD_BITS));
        let (at, node) = ScanCursor::parse((17u64 << SHARD_BITS).to_string().as_bytes(), 3).unwrap();
        assert_eq!((at.shard, node), (0, 17));
        assert_eq!(at.next(0), Some(1), "the next master, from its start");
        let last = ScanCursor { shard: 2, shards: 3 };
        assert_eq!(last.next(0), Some(0), "the end of the last master ends the iteration");
    }

    #[test]
    fn bad_cursors_are_refused() {
        assert_eq!(ScanCursor::parse(b"x", 3), Err(InvalidCursor));
        assert_eq!(ScanCursor::parse(b"-1", 3), Err(InvalidCursor));
        assert_eq!(ScanCursor::parse(b"5", 3), Err(InvalidCursor), "names a fifth master of three");
        assert_eq!(ScanCursor { shard: 0, shards: 1 }.next(u64::MAX), None);
    }

    #[test]
    fn the_reply_carries_slotgate_cursor() {
        let reply = Bytes::from_static(b"*2\r\n$2\r\n12\r\n*1\r\n$1\r\nk\r\n");
        let mut out = BytesMut::new();
        merge(ScanCursor { shard: 1, shards: 3 }, &[reply], &mut out);
        let expected =
            format!("*2\r\n${}\r\n{}\r\n*1\r\n$1\r\nk\r\n", ((12u64 << 10) | 1).to_string().len(), (12u64 << 10) | 1);
        assert_eq!(String::from_utf8_lossy(&out), expected);
    }
}
