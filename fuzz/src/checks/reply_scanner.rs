//! `reply_scanner`: arbitrary bytes from a node to [`ReplyScanner`] (RESP2
//! and RESP3: aggregates nested to any depth, attributes, pushes, verbatim
//! and blob errors). Never a panic; no memory beyond its bounded nesting
//! stack; every frame it reports lies within the bytes received, is a frame
//! on its own and is not complete any earlier; the same frames and error
//! whether the input comes in one piece, split once, or in small pieces; and
//! the frames (lengths, pushes) that a plain recursive reading of the RESP3
//! grammar, [`reference`], finds in the same bytes.
//!
//! Input: the split offset (2 bytes), the piece size (1 byte), then the
//! node's bytes.

use slotgate::resp::{ReplyError, ReplyFrame, ReplyScanner, parse_i64};

use super::{Choices, Meter, deliveries};

/// The frames found in a node's bytes, then the error that ends the
/// connection, if any.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Outcome {
    pub frames: Vec<ReplyFrame>,
    pub error: Option<ReplyError>,
}

pub fn check(data: &[u8], meter: Meter) {
    let mut choices = Choices::new(data);
    let cut = usize::from(choices.u16());
    let chunk = usize::from(choices.byte() % 16) + 1;
    let input = choices.rest();
    let [whole, once, pieces] = deliveries(input.len(), cut, chunk);
    let want = scan(input, &whole, meter);
    assert_eq!(scan(input, &once, meter), want, "split at {once:?}");
    assert_eq!(scan(input, &pieces, meter), want, "in pieces of {chunk}");
    let mut at = 0;
    for frame in want.frames {
        let bytes = &input[at..at + frame.len];
        assert_eq!(ReplyScanner::default().scan(bytes), Ok(Some(frame)), "a frame alone: {bytes:?}");
        assert_eq!(ReplyScanner::default().scan(&bytes[..frame.len - 1]), Ok(None), "complete early: {bytes:?}");
        let push = value_start(input, at, 0).is_some_and(|start| input.get(start) == Some(&b'>'));
        assert_eq!(reference(input, at, 0), Some(at + frame.len), "the grammar reads another frame: {bytes:?}");
        assert_eq!(frame.push, push, "push or not: {bytes:?}");
        at += frame.len;
    }
    // Where the scanner finds nothing more (or refuses what follows), there
    // is no complete frame; nesting deeper than the scanner allows aside.
    if want.error != Some(ReplyError::TooDeep) {
        let rest = &input[at..];
        assert_eq!(reference(input, at, 0), None, "a frame the scanner missed or refused: {rest:?}");
    }
}

/// Where the frame starting at `at` ends, read by the grammar alone:
/// recursive, not resumable, no limits but a depth that keeps the stack
/// safe. `None` for an incomplete or invalid frame.
fn reference(buf: &[u8], at: usize, depth: usize) -> Option<usize> {
    let (kind, count, line_end) = header(buf, value_start(buf, at, depth)?, depth)?;
    match kind {
        b'$' | b'!' | b'=' if count >= 0 => {
            let end = line_end.checked_add(usize::try_from(count).ok()?)?.checked_add(2)?;
            (end <= buf.len()).then_some(end)
        }
        b'%' => elements_end(buf, line_end, count.max(0).saturating_mul(2), depth),
        b'*' | b'~' | b'>' => elements_end(buf, line_end, count.max(0), depth),
        _ => Some(line_end),
    }
}

/// Where the value of the frame at `at` starts: attributes (`|`, pairs)
/// before a value belong to its frame.
fn value_start(buf: &[u8], mut at: usize, depth: usize) -> Option<usize> {
    while buf.get(at) == Some(&b'|') {
        let (_, count, line_end) = header(buf, at, depth)?;
        at = elements_end(buf, line_end, count.max(0).saturating_mul(2), depth)?;
    }
    Some(at)
}

/// A header line at `at`: its type, its number (0 for the types without
/// one) and where it ends; `None` when incomplete, invalid or too deep.
fn header(buf: &[u8], at: usize, depth: usize) -> Option<(u8, i64, usize)> {
    let kind = *buf.get(at).filter(|_| depth < 1000)?;
    let cr = at + buf[at..].iter().position(|&b| b == b'\r')?;
    let line_end = cr + 2;
    if line_end > buf.len() {
        return None;
    }
    let count = match kind {
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => 0,
        b'$' | b'!' | b'=' | b'*' | b'~' | b'>' | b'%' | b'|' => parse_i64(&buf[at + 1..cr]).filter(|&n| n >= -1)?,
        _ => return None,
    };
    Some((kind, count, line_end))
}

/// Where `count` frames starting at `at` end.
fn elements_end(buf: &[u8], mut at: usize, count: i64, depth: usize) -> Option<usize> {
    for _ in 0..count {
        at = reference(buf, at, depth + 1)?;
    }
    Some(at)
}

/// Scans `input` handed over up to each offset in `ends` in turn, dropping
/// each frame found from the front as the node driver does.
pub(super) fn scan(input: &[u8], ends: &[usize], meter: Meter) -> Outcome {
    let mut scanner = ReplyScanner::default();
    let mut buf = Vec::new();
    let mut out = Outcome { frames: Vec::new(), error: None };
    let mut at = 0;
    for &end in ends {
        buf.extend_from_slice(&input[at..end]);
        at = end;
        loop {
            let mut result = Ok(None);
            let peak = meter(&mut || result = scanner.scan(&buf));
            // The nesting stack: 128 levels of 8 bytes, doubled as it grows.
            assert!(peak <= 4096, "{peak} bytes allocated by the scanner");
            match result {
                Ok(Some(frame)) => {
                    // The smallest frame is a type byte and a line end.
                    assert!((3..=buf.len()).contains(&frame.len), "{frame:?} in {} bytes", buf.len());
                    buf.drain(..frame.len);
                    out.frames.push(frame);
                }
                Ok(None) => break,
                Err(error) => {
                    out.error = Some(error);
                    return out;
                }
            }
        }
    }
    out
}
