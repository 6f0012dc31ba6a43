//! `resp3`: the RESP3 path. slotgate passes node replies through unchanged
//! (a RESP3 client gets node connections that speak RESP3), so what handles
//! RESP3 is the scanner's framing of RESP3 types and pushes, the readers in
//! `resp::value` that fan-out merges and pub/sub use on delimited frames
//! (maps, sets, pushes, verbatim strings, blob errors, `_` nulls), and the
//! writers of slotgate's own RESP3 replies.
//!
//! The input is read twice: as a node's reply stream, where every frame the
//! scanner delimits must be read consistently by the value readers, at every
//! nesting level (an aggregate's elements rebuild it exactly, a string's
//! text lies inside it, nothing panics); and as text for the writers, whose
//! output must be one frame that reads back as what was written.

use bytes::BytesMut;
use slotgate::resp::{Protocol, ReplyFrame, ReplyScanner, parse_i64, value, write};

use super::{Choices, Meter};

pub fn check(data: &[u8], _meter: Meter) {
    let mut scanner = ReplyScanner::default();
    let mut at = 0;
    while let Ok(Some(frame)) = scanner.scan(&data[at..]) {
        let bytes = &data[at..at + frame.len];
        if bytes[0] == b'>' {
            assert!(frame.push, "a push not marked: {bytes:?}");
        }
        if frame.push {
            assert!(matches!(bytes[0], b'>' | b'|'), "marked a push: {bytes:?}");
        }
        read(bytes);
        at += frame.len;
    }
    written(data);
}

/// The value readers on one complete frame, and on each of its elements.
fn read(frame: &[u8]) {
    let kind = frame[0];
    let cr = frame.iter().position(|&b| b == b'\r').unwrap_or(frame.len());
    let header = parse_i64(&frame[1..cr]);
    assert_eq!(value::is_error(frame), matches!(kind, b'-' | b'!'), "{frame:?}");
    if let Some(n) = value::integer(frame) {
        assert_eq!(frame, format!(":{n}\r\n").as_bytes());
    }
    match value::text(frame) {
        Some(text) => {
            let inside = frame.as_ptr_range();
            assert!(inside.contains(&text.as_ptr()) || text.is_empty(), "text outside its frame: {frame:?}");
            let declared = header.and_then(|n| usize::try_from(n).ok());
            match kind {
                b'+' => assert_eq!(text, &frame[1..frame.len() - 2]),
                b'$' => assert_eq!(Some(text.len()), declared, "{frame:?}"),
                b'=' => assert_eq!(Some(text.len() + 4), declared, "{frame:?}"),
                _ => panic!("text of {frame:?}"),
            }
        }
        None => assert!(
            kind != b'$' || header.is_none_or(|n| n < 0),
            "a bulk string the scanner delimited has no text: {frame:?}"
        ),
    }
    let per_entry = match kind {
        b'*' | b'~' | b'>' => 1,
        b'%' => 2,
        _ => {
            assert_eq!(value::elements(frame), None, "elements of {frame:?}");
            return;
        }
    };
    let Some(elements) = value::elements(frame) else {
        assert!(header.is_none_or(|n| n < 0), "an aggregate the scanner delimited has no elements: {frame:?}");
        return;
    };
    assert_eq!(Some(elements.len() as i64), header.and_then(|n| n.checked_mul(per_entry)), "{frame:?}");
    let mut rebuilt = frame[..cr + 2].to_vec();
    for element in elements {
        rebuilt.extend_from_slice(element);
        read(element);
    }
    assert_eq!(rebuilt, frame, "the elements are not the aggregate");
}

/// slotgate's own replies, in both protocols, from `data` as their content.
fn written(data: &[u8]) {
    let mut choices = Choices::new(data);
    let number = choices.u64() as i64;
    let pairs = choices.below(4);
    let text = String::from_utf8_lossy(choices.rest());
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let verbatim = one_frame(|out| write::verbatim(out, protocol, &text));
        assert_eq!(value::text(&verbatim), Some(text.as_bytes()));
        assert!(value::is_null(&one_frame(|out| write::null(out, protocol))));
        let map = one_frame(|out| {
            write::map(out, protocol, pairs);
            (0..2 * pairs).for_each(|_| write::bulk(out, text.as_bytes()));
        });
        assert_eq!(value::elements(&map).map(|e| e.len()), Some(2 * pairs));
    }
    let bulk = one_frame(|out| write::bulk(out, text.as_bytes()));
    assert_eq!(value::text(&bulk), Some(text.as_bytes()));
    assert!(value::is_error(&one_frame(|out| write::error(out, format!("ERR {text}")))));
    assert_eq!(value::integer(&one_frame(|out| write::integer(out, number))), Some(number));
    if !text.contains(['\r', '\n']) {
        assert_eq!(value::text(&one_frame(|out| write::simple(out, &text))), Some(text.as_bytes()));
    }
    let push = one_frame_with(true, |out| {
        write::header(out, b'>', 2);
        write::bulk(out, b"message");
        write::bulk(out, text.as_bytes());
    });
    assert_eq!(value::elements(&push).map(|e| e.len()), Some(2));
}

fn one_frame(write: impl FnOnce(&mut BytesMut)) -> BytesMut {
    one_frame_with(false, write)
}

/// What `write` wrote is exactly one reply (a push if `push`).
fn one_frame_with(push: bool, write: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut out = BytesMut::new();
    write(&mut out);
    let frame = ReplyScanner::default().scan(&out);
    assert_eq!(frame, Ok(Some(ReplyFrame { len: out.len(), push })), "{out:?}");
    out
}
