//! Writers for the replies slotgate makes itself (local commands, errors,
//! merged answers), in the protocol of the client that receives them.

use bytes::{BufMut, BytesMut};

use super::Protocol;

/// `<kind><len>\r\n`: the header of a bulk string or an aggregate.
pub fn header(out: &mut BytesMut, kind: u8, len: usize) {
    if len < 10 {
        // The usual part of a split request, or a short value: one copy.
        return out.put_slice(&[kind, b'0' + len as u8, b'\r', b'\n']);
    }
    out.put_u8(kind);
    out.put_slice(itoa::Buffer::new().format(len).as_bytes());
    out.put_slice(b"\r\n");
}

pub fn ok(out: &mut BytesMut) {
    out.put_slice(b"+OK\r\n");
}

/// A simple string; `s` must not contain CR or LF.
pub fn simple(out: &mut BytesMut, s: &str) {
    out.put_u8(b'+');
    out.put_slice(s.as_bytes());
    out.put_slice(b"\r\n");
}

/// An error line. `message` starts with its code (`ERR ...`, `CROSSSLOT ...`);
/// CR and LF inside it become spaces, as Redis does, so the frame stays valid.
/// Bytes, not text: Redis echoes a client's bytes in its errors as they came.
pub fn error(out: &mut BytesMut, message: impl AsRef<[u8]>) {
    out.put_u8(b'-');
    out.extend(message.as_ref().iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.put_slice(b"\r\n");
}

pub fn integer(out: &mut BytesMut, n: i64) {
    out.put_u8(b':');
    out.put_slice(itoa::Buffer::new().format(n).as_bytes());
    out.put_slice(b"\r\n");
}

pub fn bulk(out: &mut BytesMut, data: &[u8]) {
    header(out, b'$', data.len());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// The null reply: `$-1` in RESP2, `_` in RESP3.
pub fn null(out: &mut BytesMut, protocol: Protocol) {
    out.put_slice(match protocol {
        Protocol::Resp2 => b"$-1\r\n",
        Protocol::Resp3 => b"_\r\n",
    });
}

/// Text for people (INFO, CLIENT LIST): a verbatim string in RESP3, a bulk
/// string in RESP2.
pub fn verbatim(out: &mut BytesMut, protocol: Protocol, text: &str) {
    match protocol {
        Protocol::Resp2 => bulk(out, text.as_bytes()),
        Protocol::Resp3 => {
            header(out, b'=', text.len() + 4);
            out.put_slice(b"txt:");
            out.put_slice(text.as_bytes());
            out.put_slice(b"\r\n");
        }
    }
}

pub fn array(out: &mut BytesMut, len: usize) {
    header(out, b'*', len);
}

/// A map header: `%n` in RESP3, an array of `2n` alternating keys and values in RESP2.
pub fn map(out: &mut BytesMut, protocol: Protocol, pairs: usize) {
    match protocol {
        Protocol::Resp2 => header(out, b'*', 2 * pairs),
        Protocol::Resp3 => header(out, b'%', pairs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut out = BytesMut::new();
        f(&mut out);
        out.to_vec()
    }

    #[test]
    fn replies_encode_per_protocol() {
        assert_eq!(written(|o| bulk(o, b"hi")), b"$2\r\nhi\r\n");
        assert_eq!(written(|o| integer(o, -7)), b":-7\r\n");
        assert_eq!(written(|o| null(o, Protocol::Resp2)), b"$-1\r\n");
        assert_eq!(written(|o| null(o, Protocol::Resp3)), b"_\r\n");
        assert_eq!(written(|o| map(o, Protocol::Resp2, 3)), b"*6\r\n");
        assert_eq!(written(|o| map(o, Protocol::Resp3, 3)), b"%3\r\n");
    }

    #[test]
    fn errors_never_break_the_frame() {
        assert_eq!(written(|o| error(o, "ERR a\r\nb")), b"-ERR a  b\r\n");
    }
}
