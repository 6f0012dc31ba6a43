//! SCAN across masters. slotgate's cursor holds a slot of the master being
//! scanned (its first slot when the scan reached it) and that master's own
//! cursor, so a full iteration visits every master once, each from 0 to 0,
//! in slot order, and returns every key Redis's SCAN guarantees on one node.
//! Masters added or removed during the scan do not shift the others.

use bytes::{Bytes, BytesMut};

use crate::cluster::Slot;
use crate::error::ClientError;
use crate::resp::{value, write};

/// Low bits of slotgate's cursor: the slot (16384 = 2^14).
const SLOT_BITS: u32 = 14;

/// Where a SCAN is: the slot whose master is scanned, and the first slot
/// of the master after it (none: it is the last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanCursor {
    pub slot: Slot,
    next: Option<Slot>,
}

/// The client's cursor is not a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidCursor;

impl ScanCursor {
    /// Reads a client's cursor, given each master's first slot (in slot
    /// order): where to continue, and the cursor to send that master.
    pub fn parse(cursor: &[u8], first_slots: &[Slot]) -> Result<(ScanCursor, u64), InvalidCursor> {
        let cursor: u64 = std::str::from_utf8(cursor).ok().and_then(|c| c.parse().ok()).ok_or(InvalidCursor)?;
        let slot = match cursor {
            // The start: the first master, wherever its slots begin.
            0 => *first_slots.first().ok_or(InvalidCursor)?,
            _ => Slot::new((cursor & ((1 << SLOT_BITS) - 1)) as u16).ok_or(InvalidCursor)?,
        };
        let next = first_slots.iter().copied().find(|&first| first > slot);
        Ok((ScanCursor { slot, next }, cursor >> SLOT_BITS))
    }

    /// slotgate's cursor after the master answered with `node_cursor`.
    fn after(self, node_cursor: u64) -> Option<u64> {
        if node_cursor == 0 {
            return Some(self.next.map_or(0, |next| next.index() as u64));
        }
        let shifted = node_cursor.checked_shl(SLOT_BITS).filter(|s| s >> SLOT_BITS == node_cursor)?;
        Some(shifted | self.slot.index() as u64)
    }
}

/// The master's `[cursor, keys]` with its cursor replaced by slotgate's.
pub(super) fn merge(cursor: ScanCursor, replies: &[Bytes], out: &mut BytesMut) {
    let answer = replies.first().and_then(|reply| {
        let parts = value::elements(reply)?;
        let [node_cursor, keys] = parts.as_slice() else { return None };
        let node_cursor = std::str::from_utf8(value::text(node_cursor)?).ok()?.parse().ok()?;
        Some((cursor.after(node_cursor)?, *keys))
    });
    match answer {
        Some((next, keys)) => {
            write::array(out, 2);
            write::bulk(out, itoa::Buffer::new().format(next).as_bytes());
            out.extend_from_slice(keys);
        }
        None => match replies.first() {
            Some(error) if value::is_error(error) => out.extend_from_slice(error),
            _ => ClientError::Unmergeable("a node's SCAN reply is unreadable").write(out),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(list: &[u16]) -> Vec<Slot> {
        list.iter().filter_map(|&s| Slot::new(s)).collect()
    }

    #[test]
    fn a_cursor_walks_every_master_once() {
        let masters = slots(&[0, 5461, 10923]);
        let (at, node) = ScanCursor::parse(b"0", &masters).unwrap();
        assert_eq!((at.slot.index(), node), (0, 0));
        assert_eq!(at.after(17), Some(17 << SLOT_BITS));
        let (at, node) = ScanCursor::parse((17u64 << SLOT_BITS).to_string().as_bytes(), &masters).unwrap();
        assert_eq!((at.slot.index(), node), (0, 17));
        assert_eq!(at.after(0), Some(5461), "the next master, from its start");
        let (last, node) = ScanCursor::parse(b"10923", &masters).unwrap();
        assert_eq!((last.slot.index(), node), (10923, 0));
        assert_eq!(last.after(0), Some(0), "the end of the last master ends the iteration");
    }

    #[test]
    fn masters_added_elsewhere_do_not_shift_the_scan() {
        let (at, node) =
            ScanCursor::parse(((5u64 << SLOT_BITS) | 5461).to_string().as_bytes(), &slots(&[0, 5461, 8000, 10923]))
                .unwrap();
        assert_eq!((at.slot.index(), node), (5461, 5));
        assert_eq!(at.after(0), Some(8000));
    }

    #[test]
    fn bad_cursors_are_refused() {
        let masters = slots(&[0, 5461]);
        assert_eq!(ScanCursor::parse(b"x", &masters), Err(InvalidCursor));
        assert_eq!(ScanCursor::parse(b"-1", &masters), Err(InvalidCursor));
        assert_eq!(ScanCursor::parse(b"0", &[]), Err(InvalidCursor));
        let (at, _) = ScanCursor::parse(b"1", &masters).unwrap();
        assert_eq!(at.after(u64::MAX), None);
    }

    #[test]
    fn the_reply_carries_slotgate_cursor() {
        let reply = Bytes::from_static(b"*2\r\n$2\r\n12\r\n*1\r\n$1\r\nk\r\n");
        let mut out = BytesMut::new();
        let (at, _) = ScanCursor::parse(b"5461", &slots(&[0, 5461])).unwrap();
        merge(at, &[reply], &mut out);
        let cursor = ((12u64 << SLOT_BITS) | 5461).to_string();
        assert_eq!(String::from_utf8_lossy(&out), format!("*2\r\n${}\r\n{cursor}\r\n*1\r\n$1\r\nk\r\n", cursor.len()));
    }
}
