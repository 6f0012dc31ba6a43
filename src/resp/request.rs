//! Client requests: the incremental, zero-copy parser and the [`Request`] it
//! yields.
//!
//! A request keeps the exact bytes the client sent (so it is forwarded to a
//! node without re-encoding) plus the offsets of each argument in them. The
//! parser resumes where it stopped when input arrives in pieces, so a huge
//! pipeline or a huge argument is scanned once, never quadratically. Lengths
//! from the network are checked before anything is reserved for them.

use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use super::inline;
use super::{SHORT_LINE, find_cr, parse_i64, plain_length};

/// Redis's largest multibulk count (`INT_MAX`).
const MAX_MULTIBULK_COUNT: i64 = i32::MAX as i64;

/// What a malformed request gets, in Redis's own words (after `ERR `).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    #[error("Protocol error: too big mbulk count string")]
    TooBigMultibulkCount,
    #[error("Protocol error: too big bulk count string")]
    TooBigBulkCount,
    #[error("Protocol error: too big inline request")]
    TooBigInline,
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("Protocol error: expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    #[error("Protocol error: request exceeds the query buffer limit")]
    QueryBufferLimit,
    #[error("Protocol error: unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    #[error("Protocol error: unauthenticated bulk length")]
    UnauthenticatedBulkLength,
}

/// The most argument positions reserved before the arguments arrive.
const MAX_RESERVED_ARGS: usize = 1024;

/// What a client that has not logged in may send, as in Redis 7: AUTH and
/// HELLO need no more, and a stranger cannot make slotgate buffer much.
const UNAUTHENTICATED_MAX_ARGS: i64 = 10;
const UNAUTHENTICATED_MAX_BULK: i64 = 16384;

/// Input limits, Redis's defaults unless configured otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `proto-max-bulk-len`: the largest single argument.
    pub max_bulk_len: usize,
    /// `PROTO_INLINE_MAX_SIZE`: the longest inline line or length header.
    pub max_inline_len: usize,
    /// `client-query-buffer-limit`: the largest request, all arguments together.
    pub max_query_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bulk_len: 512 * 1024 * 1024, max_inline_len: 64 * 1024, max_query_len: 1024 * 1024 * 1024 }
    }
}

/// Where one argument lies inside the request's frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

/// One command from a client: its RESP frame and where each argument is.
///
/// Invariant: at least one argument (the command name).
#[derive(Debug, Clone)]
pub struct Request {
    frame: Bytes,
    args: SmallVec<[Span; 6]>,
}

impl Request {
    /// Encodes `args` as a RESP multibulk request (for requests slotgate makes
    /// itself and for inline commands, which nodes get in multibulk form).
    ///
    /// # Panics
    /// If `args` is empty: a request always has a name.
    pub fn from_args<A: AsRef<[u8]>>(args: &[A]) -> Request {
        assert!(!args.is_empty(), "a request needs a command name");
        let size: usize = args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>() + 16;
        let mut out = BytesMut::with_capacity(size);
        let mut spans = SmallVec::with_capacity(args.len());
        super::write::array(&mut out, args.len());
        for arg in args {
            let arg = arg.as_ref();
            super::write::header(&mut out, b'$', arg.len());
            let start = out.len() as u32;
            out.put_slice(arg);
            spans.push(Span { start, end: out.len() as u32 });
            out.put_slice(b"\r\n");
        }
        Request { frame: out.freeze(), args: spans }
    }

    /// A request made of `name` and `args` (a part of a split request).
    pub fn from_name_and_args<'a>(name: &'a [u8], args: impl IntoIterator<Item = &'a [u8]>) -> Request {
        let mut all: SmallVec<[&[u8]; 16]> = SmallVec::new();
        all.push(name);
        all.extend(args);
        Request::from_args(&all)
    }

    /// The request exactly as it goes to a node.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The frame alone: what a request waiting for its reply keeps, in
    /// case it must be sent again (a third of the size with its offsets).
    pub fn into_frame(self) -> Bytes {
        self.frame
    }

    /// The request a frame from [`Request::into_frame`] (or a split
    /// request's part) is, its arguments found again: for the rare paths
    /// that need them once only the frame was kept. As the parser, it
    /// skips the two bytes after a length line's `\r` and after an argument
    /// unchecked (they are the client's). `None` if `frame` is not one
    /// whole multibulk request.
    pub fn from_frame(frame: Bytes) -> Option<Request> {
        let (count, mut at) = number_line(&frame, 0, b'*')?;
        let mut args = SmallVec::with_capacity(count.min(MAX_RESERVED_ARGS));
        for _ in 0..count {
            let (len, start) = number_line(&frame, at, b'$')?;
            let end = start.checked_add(len)?;
            args.push(Span { start: u32::try_from(start).ok()?, end: u32::try_from(end).ok()? });
            at = end + 2;
        }
        (count > 0 && at == frame.len()).then_some(Request { frame, args })
    }

    /// The length of the first `count` requests written one after another
    /// into `frames`, if they are whole multibulk requests.
    pub fn frames_len(frames: &[u8], count: usize) -> Option<usize> {
        (0..count).try_fold(0, |at, _| Some(at + frame_len(frames.get(at..)?)?))
    }

    /// The frames of requests written one after another into `frames` (a
    /// run of a split request's parts sent to one node as one), each on
    /// its own: for the rare paths that send one of them again. Stops at
    /// the first that is not a whole multibulk request.
    pub fn split_frames(mut frames: Bytes) -> Vec<Bytes> {
        let mut each = Vec::new();
        while !frames.is_empty() {
            let Some(len) = frame_len(&frames) else { break };
            each.push(frames.split_to(len));
        }
        each
    }

    /// Number of arguments, the command name included.
    pub fn argc(&self) -> usize {
        self.args.len()
    }

    pub fn arg(&self, index: usize) -> Option<&[u8]> {
        let span = self.args.get(index)?;
        self.frame.get(span.start as usize..span.end as usize)
    }

    /// An argument as shared bytes, without copying.
    pub fn arg_bytes(&self, index: usize) -> Option<Bytes> {
        let span = self.args.get(index)?;
        Some(self.frame.slice(span.start as usize..span.end as usize))
    }

    /// The command name as sent (any case).
    pub fn name(&self) -> &[u8] {
        self.arg(0).unwrap_or_default()
    }

    pub fn args(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.args.iter().map(|span| &self.frame[span.start as usize..span.end as usize])
    }

    /// The encoding of arguments `range` in the frame: each
    /// `$<len>\r\n<arg>\r\n` as the client sent it. The parser takes a
    /// length only in Redis's one spelling (no sign, no leading zero), so a
    /// header is as long as `$`, the length's digits and two bytes; and the
    /// two bytes after an argument end it.
    ///
    /// # Panics
    /// If `range` is empty or past the last argument.
    fn encoded(&self, range: Range<usize>) -> &[u8] {
        let first = self.args[range.start];
        let len = first.end - first.start;
        let start = first.start as usize - 3 - len.checked_ilog10().map_or(1, |log| log as usize + 1);
        let end = self.args[range.end - 1].end as usize + 2;
        &self.frame[start..end]
    }
}

/// A `*<n>` or `$<len>` line at `at` of `frame`: the number and where the
/// line ends. As the parser, the two bytes after the `\r` are not checked.
fn number_line(frame: &[u8], at: usize, kind: u8) -> Option<(usize, usize)> {
    let rest = frame.get(at..)?;
    let cr = find_cr(rest)?;
    if rest.first() != Some(&kind) {
        return None;
    }
    let n = usize::try_from(parse_i64(&rest[1..cr])?).ok()?;
    Some((n, at + cr + 2))
}

/// The length of the multibulk request at the front of `frames`.
fn frame_len(frames: &[u8]) -> Option<usize> {
    let (count, mut at) = number_line(frames, 0, b'*')?;
    for _ in 0..count {
        let (len, start) = number_line(frames, at, b'$')?;
        at = start.checked_add(len)?.checked_add(2)?;
    }
    (count > 0 && at <= frames.len()).then_some(at)
}

/// Encodes several requests into one shared buffer (the parts of a split
/// request), taken off it together as the frames nodes get (where their
/// arguments are is not needed again: see [`Request::from_frame`]).
///
/// The buffer is the caller's and outlives the builder: the next requests go
/// into the room left after these, so a session allocates once per
/// [`RequestsBuilder::ROOM`] bytes of split requests, not once per request
/// (the allocator's free lists were a tenth of a pipelined MSET's cost).
#[derive(Debug)]
pub struct RequestsBuilder<'b> {
    buf: &'b mut BytesMut,
}

impl<'b> RequestsBuilder<'b> {
    /// What a buffer that is too small grows by at least.
    pub const ROOM: usize = 8 * 1024;

    /// Builds into `buf` (emptied first), with room for `bytes` of requests.
    pub fn on(buf: &'b mut BytesMut, bytes: usize) -> RequestsBuilder<'b> {
        buf.clear();
        if buf.capacity() < bytes {
            buf.reserve(bytes.max(Self::ROOM));
        }
        RequestsBuilder { buf }
    }

    /// Starts the next request, of `argc` arguments (its name included):
    /// exactly that many must follow before [`RequestsBuilder::finish`].
    pub fn begin(&mut self, argc: usize) {
        super::write::array(self.buf, argc);
    }

    /// Appends arguments `range` of `request` as the client encoded them: a
    /// copy of its bytes, no lengths written again.
    ///
    /// # Panics
    /// If `range` is empty or past `request`'s last argument.
    pub fn args_of(&mut self, request: &Request, range: Range<usize>) {
        self.buf.extend_from_slice(request.encoded(range));
    }

    /// Bytes written since the last [`RequestsBuilder::finish`]: where the
    /// request begun last ends, once its arguments are in.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The requests begun since the last call, taken off the buffer (which
    /// keeps the room left for the next ones).
    pub fn finish(&mut self) -> Bytes {
        self.buf.split().freeze()
    }
}

/// Where the parser stopped inside a request that has not fully arrived.
#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    /// Inside a multibulk: `remaining` arguments to go, the next `$` at `pos`.
    Multibulk { remaining: u32, pos: usize, args: SmallVec<[Span; 6]> },
    /// An inline command whose newline is not among the first `scanned` bytes.
    Inline { scanned: usize },
}

/// The incremental request parser of one client connection.
///
/// Call [`RequestParser::parse`] with the connection's read buffer until it
/// returns `Ok(None)`; complete requests are split off the front of the
/// buffer. After an error the connection must be closed: the parser does not
/// resynchronise, exactly like Redis.
#[derive(Debug, Default)]
pub struct RequestParser {
    limits: Limits,
    state: State,
    /// Total buffer length the current request needs, when known.
    wanted: usize,
    /// The client has not logged in yet (`requirepass`): tighter limits.
    unauthenticated: bool,
}

impl RequestParser {
    pub fn new(limits: Limits) -> Self {
        RequestParser { limits, state: State::Idle, wanted: 0, unauthenticated: false }
    }

    /// Limits from the next request on (a reload changed them).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Whether the client still has to log in: until it has, a request may
    /// have at most 10 arguments of at most 16 KB each, as in Redis.
    pub fn set_unauthenticated(&mut self, unauthenticated: bool) {
        self.unauthenticated = unauthenticated;
    }

    /// How many bytes the buffer must hold before the current request can
    /// complete, when a bulk length told us (lets the caller reserve once).
    pub fn wanted(&self) -> usize {
        self.wanted
    }

    /// Takes the next complete request off the front of `buf`, skipping empty
    /// ones (`*0`, blank inline lines) as Redis does.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        loop {
            match &mut self.state {
                State::Idle => match buf.first() {
                    None => return Ok(None),
                    Some(b'*') => {
                        let (count, header_len) = match plain_header(&self.limits, buf, 0) {
                            Some(plain) => plain,
                            None => {
                                let too_big = ProtocolError::TooBigMultibulkCount;
                                let Some((digits, header_len)) = length_line(&self.limits, buf, 0, too_big)? else {
                                    return Ok(None);
                                };
                                (parse_i64(digits).ok_or(ProtocolError::InvalidMultibulkLength)?, header_len)
                            }
                        };
                        if count > MAX_MULTIBULK_COUNT {
                            return Err(ProtocolError::InvalidMultibulkLength);
                        }
                        if self.unauthenticated && count > UNAUTHENTICATED_MAX_ARGS {
                            return Err(ProtocolError::UnauthenticatedMultibulkLength);
                        }
                        if count <= 0 {
                            buf.advance(header_len);
                            continue;
                        }
                        // Room for the arguments announced, up to a bound: the
                        // count is the client's word, not yet its bytes.
                        let args = SmallVec::with_capacity((count as usize).min(MAX_RESERVED_ARGS));
                        self.state = State::Multibulk { remaining: count as u32, pos: header_len, args };
                    }
                    Some(_) => self.state = State::Inline { scanned: 0 },
                },
                State::Multibulk { .. } => return self.parse_multibulk(buf),
                State::Inline { scanned } => {
                    // Redis looks for the newline with strchr, which stops at a
                    // NUL byte: a line with a NUL never completes (until the size
                    // limit), and so never runs here either.
                    // One pass finds whichever comes first: a rescan of the
                    // whole buffer per line would make a pipeline quadratic.
                    let (searchable, newline) = match memchr::memchr2(b'\n', 0, &buf[*scanned..]) {
                        Some(i) if buf[*scanned + i] == b'\n' => (*scanned + i, Some(*scanned + i)),
                        Some(nul) => (*scanned + nul, None),
                        None => (buf.len(), None),
                    };
                    // Redis refuses a buffer over the limit with no newline in
                    // it; a longer line whose newline came in the same read is
                    // refused too, so the answer does not depend on how the
                    // line was split.
                    if newline.unwrap_or(buf.len()) > self.limits.max_inline_len {
                        return Err(ProtocolError::TooBigInline);
                    }
                    let Some(newline) = newline else {
                        *scanned = searchable;
                        return Ok(None);
                    };
                    let line_end = if newline > 0 && buf[newline - 1] == b'\r' { newline - 1 } else { newline };
                    let args = inline::split_args(&buf[..line_end]).ok_or(ProtocolError::UnbalancedQuotes)?;
                    buf.advance(newline + 1);
                    self.state = State::Idle;
                    if !args.is_empty() {
                        return Ok(Some(Request::from_args(&args)));
                    }
                }
            }
        }
    }

    fn parse_multibulk(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        let State::Multibulk { remaining, pos, args } = &mut self.state else {
            return Ok(None);
        };
        while *remaining > 0 {
            let (len, header_len) = match plain_header(&self.limits, buf, *pos).filter(|_| buf[*pos] == b'$') {
                Some(plain) => plain,
                None => {
                    // Like Redis, the kind is looked at once its whole line is here:
                    // until then an over-long line is "too big", not "expected '$'".
                    let too_big = ProtocolError::TooBigBulkCount;
                    let Some((digits, header_len)) = length_line(&self.limits, buf, *pos, too_big)? else {
                        return Ok(None);
                    };
                    if buf[*pos] != b'$' {
                        return Err(ProtocolError::ExpectedBulk(buf[*pos]));
                    }
                    (parse_i64(digits).ok_or(ProtocolError::InvalidBulkLength)?, header_len)
                }
            };
            if len < 0 || len as u64 > self.limits.max_bulk_len as u64 {
                return Err(ProtocolError::InvalidBulkLength);
            }
            if self.unauthenticated && len > UNAUTHENTICATED_MAX_BULK {
                return Err(ProtocolError::UnauthenticatedBulkLength);
            }
            let start = *pos + header_len;
            let end = start + len as usize;
            if end + 2 > self.limits.max_query_len {
                return Err(ProtocolError::QueryBufferLimit);
            }
            if buf.len() < end + 2 {
                self.wanted = end + 2;
                return Ok(None);
            }
            // Like Redis, the two bytes after the data are skipped unchecked.
            args.push(Span { start: start as u32, end: end as u32 });
            *pos = end + 2;
            *remaining -= 1;
        }
        let frame_len = *pos;
        let args = std::mem::take(args);
        self.state = State::Idle;
        self.wanted = 0;
        Ok(Some(Request { frame: buf.split_to(frame_len).freeze(), args }))
    }
}

/// Finds the `<kind><integer>\r\n` line at `at`: the text between the kind
/// byte and `\r`, and the line's length.
/// Like Redis, the line ends at the first `\r` and the byte after it is taken
/// as the `\n`; a line longer than the inline limit is too big whether or
/// not its end has arrived (the same answer however the input is split).
/// Redis finds the `\r` with strchr, which stops at a NUL byte: a line with
/// a NUL never ends, and is too big once the buffer passes the limit.
fn length_line<'b>(
    limits: &Limits,
    buf: &'b [u8],
    at: usize,
    too_big: ProtocolError,
) -> Result<Option<(&'b [u8], usize)>, ProtocolError> {
    let rest = &buf[at..];
    let cr = cr_or_nul(rest).filter(|&i| rest[i] == b'\r');
    if cr.unwrap_or(rest.len()) > limits.max_inline_len {
        return Err(too_big);
    }
    let Some(cr) = cr else {
        return Ok(None);
    };
    if cr + 1 >= rest.len() {
        return Ok(None);
    }
    // The kind byte may be the `\r` itself: then there are no digits.
    Ok(Some((rest.get(1..cr).unwrap_or_default(), cr + 2)))
}

/// The usual header line at `at`, its kind byte then a plain length
/// ([`plain_length`]), complete and within the line limit: its value and
/// length, read in one pass. `None` sends anything else to [`length_line`]
/// and [`parse_i64`], which read these lines alike and judge the rest.
fn plain_header(limits: &Limits, buf: &[u8], at: usize) -> Option<(i64, usize)> {
    let (value, digits) = plain_length(buf.get(at + 1..)?)?;
    let header_len = digits + 3;
    (at + header_len <= buf.len() && digits < limits.max_inline_len).then_some((value, header_len))
}

/// The first `\r` or NUL of `rest` (a NUL ends a line for Redis's strchr,
/// so it is never part of one), by a plain loop over the first bytes as
/// [`super::find_cr`] does.
fn cr_or_nul(rest: &[u8]) -> Option<usize> {
    let head = &rest[..rest.len().min(SHORT_LINE)];
    if let Some(at) = head.iter().position(|&b| b == b'\r' || b == 0) {
        return Some(at);
    }
    let tail = rest.get(SHORT_LINE..).filter(|tail| !tail.is_empty())?;
    memchr::memchr2(b'\r', 0, tail).map(|at| at + SHORT_LINE)
}

#[cfg(test)]
mod tests;
