//! What a client is owed on its socket, in order. Replies are copied into
//! one buffer, except large ones: those are written from where they arrived
//! (the node connection's read buffer), so a 1 MiB value is not copied once
//! more on its way out.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

/// Replies from this size on are written where they are, not copied.
const WRITTEN_IN_PLACE: usize = 16 * 1024;

/// The client's unsent bytes: `whole` replies first, then `tail`.
#[derive(Debug, Default)]
pub struct Output {
    /// Large replies, and what was buffered before each, in order.
    whole: VecDeque<Bytes>,
    /// Where replies are copied, and the merged ones written; always last.
    tail: BytesMut,
    /// Bytes in `whole`.
    whole_len: usize,
}

impl Output {
    /// Queues `reply` behind everything else.
    pub fn push(&mut self, reply: Bytes) {
        if reply.len() < WRITTEN_IN_PLACE {
            return self.tail.extend_from_slice(&reply);
        }
        if !self.tail.is_empty() {
            let before = self.tail.split().freeze();
            self.whole_len += before.len();
            self.whole.push_back(before);
        }
        self.whole_len += reply.len();
        self.whole.push_back(reply);
    }

    /// The buffer that comes last, for a reply written in place.
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

impl Buf for Output {
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
                return self.tail.advance(cnt);
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
    fn drain(output: &mut Output, step: usize) -> Vec<u8> {
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
    fn replies_leave_in_order_whatever_their_size() {
        let big = Bytes::from(vec![b'x'; WRITTEN_IN_PLACE]);
        let mut output = Output::default();
        output.push(Bytes::from_static(b"+OK\r\n"));
        output.push(big.clone());
        output.buffer().extend_from_slice(b":1\r\n");
        output.push(big.clone());
        output.push(big.clone());
        output.push(Bytes::from_static(b"$-1\r\n"));
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
        output.push(Bytes::from_static(b"+PONG\r\n"));
        assert_eq!(output.chunk(), b"+PONG\r\n");
    }
}
