//! Reading inside complete replies, for the answers slotgate merges from
//! several nodes (MGET parts, KEYS, SCAN, INFO, ...).
//!
//! Only frames the [`ReplyScanner`] has already delimited come here, so a
//! frame is known to be complete; still, nothing here trusts it: every
//! reader returns `None` on anything unexpected instead of panicking.

use super::{ReplyScanner, parse_i64};

/// Is the reply an error (`-ERR ...`, or a RESP3 blob error)?
pub fn is_error(frame: &[u8]) -> bool {
    matches!(frame.first(), Some(b'-' | b'!'))
}

/// Is the reply a null (`$-1`, `*-1` or RESP3 `_`)?
pub fn is_null(frame: &[u8]) -> bool {
    frame.starts_with(b"_") || frame.starts_with(b"$-1\r\n") || frame.starts_with(b"*-1\r\n")
}

/// The value of an integer reply.
pub fn integer(frame: &[u8]) -> Option<i64> {
    let line = frame.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    parse_i64(line)
}

/// The text of a bulk string, a simple string or a RESP3 verbatim string
/// (without its `txt:` format prefix).
pub fn text(frame: &[u8]) -> Option<&[u8]> {
    match frame.first()? {
        b'+' => frame[1..].strip_suffix(b"\r\n"),
        b'$' | b'=' => {
            let cr = memchr::memchr(b'\r', frame)?;
            let len = usize::try_from(parse_i64(&frame[1..cr])?).ok()?;
            let body = frame.get(cr + 2..cr + 2 + len)?;
            if frame[0] == b'=' { body.get(4..) } else { Some(body) }
        }
        _ => None,
    }
}

/// The elements of an array, set or push reply, each a complete frame (a
/// RESP3 map's keys and values alternate). `None` for any other reply (a
/// null array included).
pub fn elements(frame: &[u8]) -> Option<Vec<&[u8]>> {
    let per_entry = match frame.first()? {
        b'*' | b'~' | b'>' => 1,
        b'%' => 2,
        _ => return None,
    };
    let cr = memchr::memchr(b'\r', frame)?;
    let count = usize::try_from(parse_i64(&frame[1..cr])?).ok()?.checked_mul(per_entry)?;
    let mut at = cr + 2;
    // Never trust a count to size an allocation: each element takes 3 bytes at least.
    let mut out = Vec::with_capacity(count.min(frame.len() / 3));
    for _ in 0..count {
        let rest = frame.get(at..)?;
        let len = ReplyScanner::default().scan(rest).ok()??.len;
        out.push(&rest[..len]);
        at += len;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_read() {
        assert_eq!(integer(b":42\r\n"), Some(42));
        assert_eq!(integer(b":-1\r\n"), Some(-1));
        assert_eq!(integer(b"+42\r\n"), None);
        assert_eq!(text(b"$3\r\nfoo\r\n"), Some(&b"foo"[..]));
        assert_eq!(text(b"+OK\r\n"), Some(&b"OK"[..]));
        assert_eq!(text(b"=8\r\ntxt:abcd\r\n"), Some(&b"abcd"[..]));
        assert_eq!(text(b"$-1\r\n"), None);
        assert_eq!(text(b"$9\r\nfoo\r\n"), None, "a length beyond the frame is not trusted");
        assert!(is_null(b"$-1\r\n") && is_null(b"_\r\n") && is_null(b"*-1\r\n") && !is_null(b"$0\r\n\r\n"));
        assert!(is_error(b"-ERR x\r\n") && is_error(b"!3\r\nerr\r\n") && !is_error(b"+OK\r\n"));
    }

    #[test]
    fn elements_are_split() {
        let frame = b"*3\r\n$1\r\na\r\n_\r\n*2\r\n:1\r\n:2\r\n";
        let got = elements(frame).unwrap();
        assert_eq!(got, vec![&b"$1\r\na\r\n"[..], b"_\r\n", b"*2\r\n:1\r\n:2\r\n"]);
        assert_eq!(elements(b"*0\r\n"), Some(vec![]));
        assert_eq!(elements(b"%1\r\n+a\r\n:1\r\n"), Some(vec![&b"+a\r\n"[..], b":1\r\n"]));
        assert_eq!(elements(b"*-1\r\n"), None);
        assert_eq!(elements(b":1\r\n"), None);
        assert_eq!(elements(b"*5\r\n:1\r\n"), None, "a count beyond the frame is not trusted");
        assert_eq!(elements(b"*99999999999\r\n"), None);
    }
}
