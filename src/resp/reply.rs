//! Reply frame boundaries, RESP2 and RESP3, without decoding.
//!
//! Replies pass from nodes to clients as the bytes the node sent; slotgate
//! only needs to know where each one ends. The scanner is resumable: when a
//! large reply arrives in pieces it continues from the element where it
//! stopped, so a reply is scanned once however it is split. Nesting is
//! tracked on an explicit, bounded stack (no recursion). An attribute (`|`)
//! is part of the frame of the value it describes; RESP3's streamed strings
//! and aggregates (`$?`), which Redis never sends, are invalid lengths here.

use super::{find_cr, parse_i64, plain_length};

/// The deepest nesting accepted from a node; Redis's own replies stay under 10.
const MAX_DEPTH: usize = 128;

/// Why a node's reply stream cannot be read any further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("unknown RESP type byte {0:#04x}")]
    UnknownType(u8),
    #[error("invalid length in RESP header")]
    InvalidLength,
    #[error("reply nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// One complete reply at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyFrame {
    /// Length in bytes.
    pub len: usize,
    /// A RESP3 push (`>`): out-of-band data, not the answer to a request.
    pub push: bool,
}

/// Finds where replies end in a node's byte stream.
#[derive(Debug, Default)]
pub struct ReplyScanner {
    /// Offset of the next element header to read in the current frame.
    pos: usize,
    /// Elements still expected by each open aggregate, innermost last.
    open: Vec<u64>,
    /// The current frame is a push.
    push: bool,
    /// The element being scanned at the top is an attribute: the frame goes
    /// on with the value it describes.
    attribute: bool,
    /// Where the search for the end of the current header line resumes, so
    /// a long line arriving in pieces is scanned once.
    line_scan: usize,
    /// The buffer length the string being read needs, once its header is in.
    wanted: usize,
}

impl ReplyScanner {
    /// The length of the complete reply at the front of `buf`, or `None` until
    /// more bytes arrive. Call again with the same buffer start (plus more
    /// bytes) after `None`; after `Some`, the caller drops `len` bytes from the
    /// front before the next call.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<ReplyFrame>, ReplyError> {
        // A new frame that is flat and complete (most replies) is measured
        // in one pass; anything else, or a frame cut short, is scanned
        // element by element and resumes where it stopped.
        let fresh = self.pos == 0 && self.line_scan == 0 && self.open.is_empty() && !self.attribute;
        if let Some(len) = fresh.then(|| flat_frame(buf)).flatten() {
            return Ok(Some(ReplyFrame { len, push: false }));
        }
        self.scan_nested(buf)
    }

    /// [`ReplyScanner::scan`] element by element, with its state kept.
    fn scan_nested(&mut self, buf: &[u8]) -> Result<Option<ReplyFrame>, ReplyError> {
        loop {
            let Some(&kind) = buf.get(self.pos) else {
                return Ok(None);
            };
            // Known before the line ends: garbage fails now, not after a CR.
            let shape = Shape::of(kind).ok_or(ReplyError::UnknownType(kind))?;
            let from = self.line_scan.max(self.pos);
            let Some(cr) = find_cr(&buf[from..]).map(|i| i + from) else {
                self.line_scan = buf.len();
                return Ok(None);
            };
            self.line_scan = cr;
            if cr + 1 >= buf.len() {
                return Ok(None);
            }
            let line_end = cr + 2;
            let children = match shape {
                Shape::Line => {
                    self.pos = line_end;
                    0
                }
                Shape::Blob => {
                    let len = self.length(&buf[self.pos + 1..cr])?;
                    if len >= 0 {
                        let end = line_end + len as usize + 2;
                        if buf.len() < end {
                            self.wanted = end;
                            return Ok(None);
                        }
                        self.pos = end;
                    } else {
                        self.pos = line_end;
                    }
                    0
                }
                Shape::Aggregate => {
                    let entries = self.length(&buf[self.pos + 1..cr])?.max(0) as u64;
                    let top = self.open.is_empty();
                    self.pos = line_end;
                    match kind {
                        b'>' if top => {
                            self.push = true;
                            entries
                        }
                        b'%' => 2 * entries,
                        // An attribute describes the value after it. At the top
                        // it is a prefix: the value decides the frame's kind (a
                        // push or a reply), so it is scanned as at the top.
                        b'|' if top => {
                            self.attribute = true;
                            2 * entries
                        }
                        b'|' => 2 * entries + 1,
                        _ => entries,
                    }
                }
            };
            if children > 0 {
                if self.open.len() >= MAX_DEPTH {
                    return Err(ReplyError::TooDeep);
                }
                self.open.push(children);
                continue;
            }
            // One element is complete: it closes every aggregate it finishes.
            loop {
                match self.open.last_mut() {
                    None if std::mem::take(&mut self.attribute) => break,
                    None => {
                        let frame = ReplyFrame { len: self.pos, push: self.push };
                        self.pos = 0;
                        self.push = false;
                        self.line_scan = 0;
                        self.wanted = 0;
                        return Ok(Some(frame));
                    }
                    Some(left) if *left > 1 => {
                        *left -= 1;
                        break;
                    }
                    Some(_) => {
                        self.open.pop();
                    }
                }
            }
        }
    }

    /// How long the buffer must be for the string being read to complete,
    /// once its length is known (0 otherwise): lets the reader make room for
    /// a large reply at once rather than growing, and copying, step by step.
    pub fn wanted(&self) -> usize {
        self.wanted
    }

    /// A length header: -1 (null) or a non-negative count.
    fn length(&self, digits: &[u8]) -> Result<i64, ReplyError> {
        match parse_i64(digits) {
            Some(len) if len >= -1 => Ok(len),
            _ => Err(ReplyError::InvalidLength),
        }
    }
}

/// The length of the reply at the front of `buf` when it is complete and
/// flat: a line, a string, or an array of those. `None` for anything else
/// (nested, a push or an attribute, cut short, or malformed), which the
/// element-by-element scan then measures or refuses.
fn flat_frame(buf: &[u8]) -> Option<usize> {
    if buf.first() != Some(&b'*') {
        return flat_element(buf, 0);
    }
    let (count, mut at) = length_line(buf, 0)?;
    for _ in 0..count.max(0) {
        at = flat_element(buf, at)?;
    }
    Some(at)
}

/// Where the line or string element at `at` ends, if it has arrived.
#[inline]
fn flat_element(buf: &[u8], at: usize) -> Option<usize> {
    match Shape::of(*buf.get(at)?)? {
        Shape::Line => {
            let cr = at + find_cr(&buf[at..])?;
            (cr + 2 <= buf.len()).then_some(cr + 2)
        }
        Shape::Blob => {
            let (len, line_end) = length_line(buf, at)?;
            let end = if len < 0 { line_end } else { line_end + len as usize + 2 };
            (end <= buf.len()).then_some(end)
        }
        Shape::Aggregate => None,
    }
}

/// The valid length (-1 or more) on the header line at `at`, and where the
/// line ends, once the line has arrived.
#[inline]
fn length_line(buf: &[u8], at: usize) -> Option<(i64, usize)> {
    if let Some((len, cr)) = buf.get(at + 1..).and_then(plain_length) {
        let line_end = at + 1 + cr + 2;
        return (line_end <= buf.len()).then_some((len, line_end));
    }
    any_length_line(buf, at)
}

/// [`length_line`] for the lines a plain length is not: kept out of line so
/// that the usual case stays small enough to inline where replies are measured.
#[inline(never)]
fn any_length_line(buf: &[u8], at: usize) -> Option<(i64, usize)> {
    let cr = at + find_cr(&buf[at..])?;
    if cr + 2 > buf.len() {
        return None;
    }
    let len = parse_i64(&buf[at + 1..cr]).filter(|&len| len >= -1)?;
    Some((len, cr + 2))
}

/// How an element of each RESP type is laid out.
#[derive(Clone, Copy)]
enum Shape {
    /// The line is the element: `+ - : _ # , (`.
    Line,
    /// A length line, then that many bytes and CRLF: `$ ! =`.
    Blob,
    /// A count line, then that many elements (pairs for `%` and `|`):
    /// `* ~ > % |`.
    Aggregate,
}

impl Shape {
    fn of(kind: u8) -> Option<Shape> {
        match kind {
            b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => Some(Shape::Line),
            b'$' | b'!' | b'=' => Some(Shape::Blob),
            b'*' | b'~' | b'>' | b'%' | b'|' => Some(Shape::Aggregate),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The frames one scanner finds in `input`, by `scan` (`ReplyScanner::scan`
    /// or a part of it), up to the first error.
    type Scan = fn(&mut ReplyScanner, &[u8]) -> Result<Option<ReplyFrame>, ReplyError>;

    fn frames_by(input: &[u8], scan: Scan) -> Vec<Result<ReplyFrame, ReplyError>> {
        let mut scanner = ReplyScanner::default();
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            match scan(&mut scanner, &input[at..]) {
                Ok(Some(frame)) => {
                    at += frame.len;
                    out.push(Ok(frame));
                }
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }

    fn lens(input: &[u8]) -> Vec<usize> {
        frames(input).into_iter().map(|f| f.map(|f| f.len).unwrap_or(usize::MAX)).collect()
    }

    #[test]
    fn resp2_replies_are_delimited() {
        assert_eq!(lens(b"+OK\r\n-ERR x\r\n:12\r\n$3\r\nfoo\r\n$-1\r\n*-1\r\n"), vec![5, 8, 5, 9, 5, 5]);
        assert_eq!(lens(b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n"), vec![19]);
        assert_eq!(lens(b"*0\r\n$0\r\n\r\n"), vec![4, 6]);
    }

    #[test]
    fn resp3_replies_are_delimited() {
        let map = b"%2\r\n+a\r\n:1\r\n+b\r\n*2\r\n_\r\n,1.5\r\n";
        assert_eq!(lens(map), vec![map.len()]);
        let set = b"~2\r\n#t\r\n(123\r\n";
        assert_eq!(lens(set), vec![set.len()]);
        let verbatim = b"=8\r\ntxt:abcd\r\n!3\r\nerr\r\n";
        assert_eq!(lens(verbatim), vec![14, 9]);
        let attribute = b"|1\r\n+ttl\r\n:3\r\n$1\r\nx\r\n";
        assert_eq!(lens(attribute), vec![attribute.len()]);
    }

    #[test]
    fn pushes_are_marked() {
        let out = frames(b">2\r\n+message\r\n+x\r\n+OK\r\n");
        assert_eq!(out, vec![Ok(ReplyFrame { len: 18, push: true }), Ok(ReplyFrame { len: 5, push: false })]);
    }

    #[test]
    fn an_attribute_belongs_to_the_value_it_describes() {
        // Found by fuzz/differential: `|0` was a frame of its own.
        assert_eq!(lens(b"|0\r\n+OK\r\n"), vec![9]);
        assert_eq!(lens(b"*2\r\n|0\r\n:1\r\n:2\r\n"), vec![16]);
        assert_eq!(lens(b"|1\r\n+a\r\n|1\r\n+b\r\n:1\r\n:2\r\n:3\r\n"), vec![28]);
        // A push keeps its kind behind an attribute; an attribute inside one does not make a push.
        let out = frames(b"|1\r\n+k\r\n+v\r\n>1\r\n+x\r\n*1\r\n|1\r\n+k\r\n>0\r\n+v\r\n");
        assert_eq!(out, vec![Ok(ReplyFrame { len: 20, push: true }), Ok(ReplyFrame { len: 20, push: false })]);
    }

    #[test]
    fn every_split_point_gives_the_same_frames() {
        let input = b"*3\r\n$3\r\nfoo\r\n%1\r\n+k\r\n*2\r\n:1\r\n:2\r\n_\r\n+OK\r\n$5\r\nhello\r\n".to_vec();
        let whole = lens(&input);
        for split in 0..input.len() {
            let mut scanner = ReplyScanner::default();
            let first = scanner.scan(&input[..split]).unwrap_or(None);
            let got = match first {
                Some(frame) => frame.len,
                None => scanner.scan(&input).ok().flatten().map(|f| f.len).unwrap_or(0),
            };
            assert_eq!(got, whole[0], "split at {split}");
        }
    }

    #[test]
    fn a_long_line_in_pieces_is_scanned_once() {
        let mut line = b"-ERR ".to_vec();
        line.extend(vec![b'x'; 100_000]);
        let mut scanner = ReplyScanner::default();
        for end in (1000..line.len()).step_by(1000) {
            assert_eq!(scanner.scan(&line[..end]), Ok(None));
            assert!(scanner.line_scan >= end - 1000, "the search resumes where it stopped");
        }
        line.extend(b"\r\n+OK\r\n");
        assert_eq!(scanner.scan(&line).unwrap().map(|f| f.len), Some(line.len() - 5));
    }

    /// Replies as nodes send them, nested or not, with pushes and attributes.
    fn reply_strategy() -> impl Strategy<Value = Vec<u8>> {
        let leaf = prop_oneof![
            "[a-z]{0,5}".prop_map(|s| format!("+{s}\r\n").into_bytes()),
            "[a-z ]{0,5}".prop_map(|s| format!("-ERR {s}\r\n").into_bytes()),
            any::<i32>().prop_map(|n| format!(":{n}\r\n").into_bytes()),
            prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| {
                let mut out = format!("${}\r\n", b.len()).into_bytes();
                out.extend(b);
                out.extend(b"\r\n");
                out
            }),
            Just(b"$-1\r\n".to_vec()),
            Just(b"_\r\n".to_vec()),
            Just(b"*-1\r\n".to_vec()),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            (prop::sample::select(vec![b'*', b'~', b'>', b'%', b'|']), prop::collection::vec(inner, 0..6)).prop_map(
                |(kind, items)| {
                    let count = if matches!(kind, b'%' | b'|') { items.len() / 2 } else { items.len() };
                    let mut out = format!("{}{count}\r\n", char::from(kind)).into_bytes();
                    items
                        .iter()
                        .take(if matches!(kind, b'%' | b'|') { count * 2 } else { count })
                        .for_each(|i| out.extend(i));
                    out
                },
            )
        })
    }

    fn frames(input: &[u8]) -> Vec<Result<ReplyFrame, ReplyError>> {
        frames_by(input, ReplyScanner::scan)
    }

    /// The element-by-element scan alone, over the same input.
    fn nested_only(input: &[u8]) -> Vec<Result<ReplyFrame, ReplyError>> {
        frames_by(input, ReplyScanner::scan_nested)
    }

    proptest! {
        #[test]
        fn the_flat_shortcut_agrees_with_the_full_scan(
            replies in prop::collection::vec(reply_strategy(), 1..6),
            garbage in prop::collection::vec(any::<u8>(), 0..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut input: Vec<u8> = replies.concat();
            input.extend(&garbage);
            prop_assert_eq!(frames(&input), nested_only(&input));
            // Cut anywhere, then completed: the same first frame.
            let split = cut.index(input.len() + 1);
            let mut scanner = ReplyScanner::default();
            let first = match scanner.scan(&input[..split]) {
                Ok(Some(frame)) => Ok(Some(frame)),
                Ok(None) => scanner.scan(&input),
                Err(e) => Err(e),
            };
            prop_assert_eq!(first.ok().flatten(), nested_only(&input).first().and_then(|f| f.ok()));
        }
    }

    #[test]
    fn a_long_string_says_how_much_it_needs() {
        let mut scanner = ReplyScanner::default();
        assert_eq!(scanner.scan(b"*2\r\n$1\r\na\r\n$1000\r\nxy"), Ok(None));
        assert_eq!(scanner.wanted(), 11 + 7 + 1000 + 2);
        let mut whole = b"*2\r\n$1\r\na\r\n$1000\r\n".to_vec();
        whole.extend([b'x'; 1000]);
        whole.extend(b"\r\n");
        assert_eq!(scanner.scan(&whole).unwrap().map(|f| f.len), Some(whole.len()));
        assert_eq!(scanner.wanted(), 0, "reset for the next reply");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(frames(b"?\r\n"), vec![Err(ReplyError::UnknownType(b'?'))]);
        assert_eq!(
            frames(b"+OK\r\nHTTP/1.1 400"),
            vec![Ok(ReplyFrame { len: 5, push: false }), Err(ReplyError::UnknownType(b'H'))]
        );
        assert_eq!(frames(b"$-2\r\n"), vec![Err(ReplyError::InvalidLength)]);
        assert_eq!(frames(b"*x\r\n"), vec![Err(ReplyError::InvalidLength)]);
        let deep = b"*1\r\n".repeat(MAX_DEPTH + 1);
        assert_eq!(frames(&deep), vec![Err(ReplyError::TooDeep)]);
    }
}
