//! The wire format and its limits: the zero-copy request parser, the reply
//! scanner (frame boundaries only, RESP2 and RESP3), and writers for the
//! replies slotgate makes itself.
//!
//! This module knows bytes, not clusters: it never imports `cluster`,
//! `backend` or `session`.

mod inline;
mod reply;
mod request;
pub mod value;
pub mod write;

pub use reply::{ReplyError, ReplyFrame, ReplyScanner};
pub use request::{Limits, ProtocolError, Request, RequestParser, RequestsBuilder};

/// The protocol a client (and the node connection serving it) speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Resp2,
    Resp3,
}

impl Protocol {
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// How far a plain loop looks for a line's end before memchr takes over:
/// length lines are a few bytes, and for them the loop costs less than
/// memchr's set-up.
const SHORT_LINE: usize = 32;

/// The first `\r` of `bytes` (the end of a reply's header line).
fn find_cr(bytes: &[u8]) -> Option<usize> {
    let head = &bytes[..bytes.len().min(SHORT_LINE)];
    if let Some(at) = head.iter().position(|&b| b == b'\r') {
        return Some(at);
    }
    let tail = bytes.get(SHORT_LINE..).filter(|tail| !tail.is_empty())?;
    memchr::memchr(b'\r', tail).map(|at| at + SHORT_LINE)
}

/// The usual header line after its kind byte: a non-negative integer of at
/// most 18 digits and no leading zero, then `\r`. Its value and where the
/// `\r` is, found in the one pass that reads the digits. `None` for anything
/// else (a sign, a leading zero, more digits, another byte, the end of the
/// buffer): the general rules ([`find_cr`], [`parse_i64`]) judge those, and
/// agree with this on every line it reads.
#[inline]
fn plain_length(line: &[u8]) -> Option<(i64, usize)> {
    let mut value: i64 = 0;
    for (at, &byte) in line[..line.len().min(19)].iter().enumerate() {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            let leading_zero = at > 1 && line[0] == b'0';
            return (byte == b'\r' && at > 0 && !leading_zero).then_some((value, at));
        }
        if at == 18 {
            // A 19th digit: past what is read here without overflow.
            return None;
        }
        value = value * 10 + i64::from(digit);
    }
    None
}

/// Parses a RESP length or integer the way Redis's `string2ll` does: an
/// optional `-`, then decimal digits with no leading `+`, no spaces and no
/// leading zeros (except "0" itself); overflow is an error.
pub fn parse_i64(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 19 || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    if negative && digits == b"0" {
        return None;
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(d - b'0');
        value = value.checked_mul(10)?;
        value = if negative { value.checked_sub(digit)? } else { value.checked_add(digit)? };
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{find_cr, parse_i64, plain_length};

    #[test]
    fn plain_lengths_are_read_in_one_pass() {
        assert_eq!(plain_length(b"0\r\n"), Some((0, 1)));
        assert_eq!(plain_length(b"32\r\nvalue"), Some((32, 2)));
        assert_eq!(plain_length(b"999999999999999999\r"), Some((999_999_999_999_999_999, 18)));
        // For the general rules: signs, leading zeros, long or unfinished lines.
        let longer = [&b"99999999999999999999999\r"[..], b"9999999999999999999\r", b"1234567890123456789\r"];
        for other in [&b"-1\r"[..], b"01\r", b"\r", b"12", b"1 \r", b""].into_iter().chain(longer) {
            assert_eq!(plain_length(other), None, "{:?}", String::from_utf8_lossy(other));
        }
    }

    proptest! {
        #[test]
        fn a_plain_length_is_what_the_general_rules_read(line in proptest::collection::vec(
            prop_oneof![30 => b'9'..=b'9', 30 => b'0'..=b'9', 1 => Just(b'\r'), 1 => Just(b'-'), 1 => any::<u8>()], 0..26)) {
            if let Some((value, cr)) = plain_length(&line) {
                prop_assert_eq!(find_cr(&line), Some(cr));
                prop_assert_eq!(parse_i64(&line[..cr]), Some(value));
            }
        }
    }

    #[test]
    fn integers_parse_like_redis_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"123"), Some(123));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [&b""[..], b"-", b"+1", b" 1", b"1 ", b"01", b"-0", b"1a", b"9223372036854775808"] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
