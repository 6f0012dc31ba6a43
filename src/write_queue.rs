//! Bytes waiting to be written to a socket, in order: a client's replies, a
//! node connection's requests. Small pieces are copied into one buffer;
//! large ones are written from where they already are (a node connection's
//! read buffer, a client's), so a 1 MiB value is not copied once more on
//! its way out, and no buffer grows to the size of the largest value seen.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

/// Pieces from this size on are written where they are, not copied.
const WRITTEN_IN_PLACE: usize = 16 * 1024;

/// The most room the buffer keeps once everything is written.
const KEPT_WHEN_EMPTY: usize = 1024 * 1024;

/// The unsent bytes: `whole` pieces first, then `tail`.
#[derive(Debug, Default)]
pub struct WriteQueue {
    /// Large pieces, and what was buffered before each, in order.
    whole: VecDeque<Bytes>,
    /// Where small pieces are copied (and replies written in place); always last.
    tail: BytesMut,
    /// Bytes in `whole`.
    whole_len: usize,
}

impl WriteQueue {
    /// Queues `bytes` behind everything else.
    pub fn push(&mut self, bytes: &Bytes) {
        if bytes.len() < WRITTEN_IN_PLACE {
            return self.tail.extend_from_slice(bytes);
        }
        if !self.tail.is_empty() {
            let before = self.tail.split().freeze();
            self.whole_len += before.len();
            self.whole.push_back(before);
        }
        self.whole_len += bytes.len();
        self.whole.push_back(bytes.clone());
    }

    /// The buffer that comes last, for bytes written in place.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    pub fn len(&self) -> usize {
        self.whole_len + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Buf for WriteQueue {
    fn remaining(&self) -> usize {
        self.len()
    }

    fn chunk(&self) -> &[u8] {
        self.whole.front().map_or(&self.tail[..], |first| &first[..])
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let all = self.whole.iter().map(|b| &b[..]).chain(std::iter::once(&self.tail[..]));
        let mut filled = 0;
        for (slot, chunk) in dst.iter_mut().zip(all.filter(|c| !c.is_empty())) {
            *slot = IoSlice::new(chunk);
            filled += 1;
        }
        filled
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(first) = self.whole.front_mut() else {
                self.tail.advance(cnt);
                // Grown for one large merged reply (a huge MGET, say): not
                // kept for the small ones after it.
                if self.tail.is_empty() && self.tail.try_reclaim(KEPT_WHEN_EMPTY + 1) {
                    self.tail = BytesMut::new();
                }
                return;
            };
            let step = cnt.min(first.len());
            first.advance(step);
            self.whole_len -= step;
            cnt -= step;
            if first.is_empty() {
                self.whole.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything `output` would write, taken as a socket would: a few
    /// bytes at a time, over chunk boundaries.
    fn drain(output: &mut WriteQueue, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while output.has_remaining() {
            let mut slices = [IoSlice::new(&[]); 4];
            let filled = output.chunks_vectored(&mut slices);
            let gathered: Vec<u8> = slices[..filled].iter().flat_map(|s| s.iter().copied()).collect();
            let take = step.min(gathered.len());
            out.extend_from_slice(&gathered[..take]);
            output.advance(take);
        }
        out
    }

    #[test]
    fn pieces_leave_in_order_whatever_their_size() {
        let big = Bytes::from(vec![b'x'; WRITTEN_IN_PLACE]);
        let mut output = WriteQueue::default();
        output.push(&Bytes::from_static(b"+OK\r\n"));
        output.push(&big);
        output.buffer().extend_from_slice(b":1\r\n");
        output.push(&big);
        output.push(&big);
        output.push(&Bytes::from_static(b"$-1\r\n"));
        assert_eq!(output.len(), 5 + 4 + 5 + 3 * big.len());
        let mut want = b"+OK\r\n".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b":1\r\n");
        want.extend_from_slice(&big);
        want.extend_from_slice(&big);
        want.extend_from_slice(b"$-1\r\n");
        assert_eq!(drain(&mut output, 7001), want);
        assert!(output.is_empty());
        // Used again once empty.
        output.push(&Bytes::from_static(b"+PONG\r\n"));
        assert_eq!(output.chunk(), b"+PONG\r\n");
    }

    #[test]
    fn a_buffer_grown_large_is_let_go_once_written() {
        let mut output = WriteQueue::default();
        output.buffer().extend_from_slice(&vec![b'x'; 4 * KEPT_WHEN_EMPTY]);
        drain(&mut output, 1 << 20);
        // Reserving would take back the whole allocation, had it been kept.
        output.buffer().reserve(16);
        assert!(output.buffer().capacity() <= KEPT_WHEN_EMPTY, "{}", output.buffer().capacity());
    }

    #[test]
    fn large_pieces_never_grow_the_buffer() {
        let mut output = WriteQueue::default();
        output.push(&Bytes::from_static(b"+OK\r\n"));
        let before = output.buffer().capacity();
        output.push(&Bytes::from(vec![b'x'; 8 * 1024 * 1024]));
        output.push(&Bytes::from_static(b":1\r\n"));
        assert!(output.buffer().capacity() <= before.max(WRITTEN_IN_PLACE), "the 8 MiB piece was copied");
        assert_eq!(output.len(), 5 + 8 * 1024 * 1024 + 4);
    }
}
