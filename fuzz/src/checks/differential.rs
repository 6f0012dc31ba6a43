//! `differential`: slotgate against redis-protocol on *valid* input only
//! (redis-protocol has no limits and recurses without bound: it never sees
//! anything but what it encoded itself here).
//!
//! - Requests: multibulk requests of arbitrary binary arguments, encoded by
//!   redis-protocol; slotgate encodes the same bytes, and its parser and
//!   redis-protocol's decoder read the same arguments, in one piece, split
//!   once and in small pieces.
//! - Replies: RESP2 and RESP3 frames (nested aggregates, maps, sets,
//!   attributes, pushes, verbatim strings, doubles, big numbers) encoded by
//!   redis-protocol; the scanner delimits each as one frame of the encoded
//!   length, marks exactly the pushes, and the value readers read what the
//!   frame holds.
//!
//! Input: a byte choosing requests, RESP2 or RESP3 replies; the split offset
//! (2 bytes) and the piece size (1 byte); then the bytes that shape the
//! requests or frames.

use redis_protocol::resp2::types::{OwnedFrame as Frame2, Resp2Frame};
use redis_protocol::resp3::types::{OwnedFrame as Frame3, Resp3Frame, VerbatimStringFormat};
use redis_protocol::{resp2, resp3};
use slotgate::resp::{Limits, Request, value};

use super::{Choices, Meter, deliveries, reply_scanner, request_parser};

/// Aggregates nest this deep at most (the reference recurses).
const MAX_DEPTH: usize = 6;

pub fn check(data: &[u8], meter: Meter) {
    let mut choices = Choices::new(data);
    let kind = choices.byte() % 3;
    let cut = usize::from(choices.u16());
    let chunk = usize::from(choices.byte() % 16) + 1;
    match kind {
        0 => requests(choices, cut, chunk, meter),
        1 => replies(choices, cut, chunk, meter, |c| {
            let frame = resp2_frame(c, 0);
            (encode2(&frame), Box::new(move |bytes: &[u8]| agree2(bytes, &frame)))
        }),
        _ => replies(choices, cut, chunk, meter, |c| {
            let frame = resp3_frame(c, 0);
            (encode3(&frame), Box::new(move |bytes: &[u8]| agree3(bytes, &frame)))
        }),
    }
}

fn requests(mut choices: Choices, cut: usize, chunk: usize, meter: Meter) {
    let mut input = Vec::new();
    let mut want = Vec::new();
    while !choices.is_empty() && want.len() < 8 {
        let args: Vec<Vec<u8>> = (0..=choices.below(6)).map(|_| choices.bytes(64).to_vec()).collect();
        let encoded = encode2(&Frame2::Array(args.iter().cloned().map(Frame2::BulkString).collect()));
        assert_eq!(Request::from_args(&args).frame()[..], encoded[..], "slotgate encodes requests differently");
        input.extend_from_slice(&encoded);
        want.push(args);
    }
    let mut theirs = Vec::new();
    let mut at = 0;
    while let Ok(Some((Frame2::Array(items), used))) = resp2::decode::decode(&input[at..]) {
        theirs.push(items.into_iter().map(|item| item.as_bytes().unwrap_or_default().to_vec()).collect::<Vec<_>>());
        at += used;
    }
    assert_eq!(theirs, want, "redis-protocol reads other requests");
    for ends in deliveries(input.len(), cut, chunk) {
        let ours = request_parser::parse(Limits::default(), &input, &ends, meter);
        assert_eq!(ours.error, None, "handed over at {ends:?}");
        let args: Vec<_> = ours.requests.into_iter().map(|(_, args)| args).collect();
        assert_eq!(args, want, "handed over at {ends:?}");
    }
}

/// A check that the value readers read in a delimited frame what was encoded.
type Agree = Box<dyn Fn(&[u8])>;

/// Up to four frames made by `frame`, one after the other, scanned.
fn replies(mut choices: Choices, cut: usize, chunk: usize, meter: Meter, frame: fn(&mut Choices) -> (Vec<u8>, Agree)) {
    let mut input = Vec::new();
    let mut want = Vec::new();
    while !choices.is_empty() && want.len() < 4 {
        let (encoded, agree) = frame(&mut choices);
        let start = input.len();
        input.extend_from_slice(&encoded);
        want.push((start..input.len(), agree));
    }
    for ends in deliveries(input.len(), cut, chunk) {
        let ours = reply_scanner::scan(&input, &ends, meter);
        assert_eq!(ours.error, None, "handed over at {ends:?}");
        let lens: Vec<usize> = ours.frames.iter().map(|f| f.len).collect();
        assert_eq!(lens, want.iter().map(|(at, _)| at.len()).collect::<Vec<_>>(), "handed over at {ends:?}");
        let pushes: Vec<bool> = ours.frames.iter().map(|f| f.push).collect();
        let want_pushes: Vec<bool> = want.iter().map(|(at, _)| is_push(&input[at.clone()])).collect();
        assert_eq!(pushes, want_pushes, "pushes, handed over at {ends:?}");
    }
    for (at, agree) in &want {
        agree(&input[at.clone()]);
    }
}

/// A RESP3 push, with or without attributes before it (as redis-protocol
/// decodes it).
fn is_push(frame: &[u8]) -> bool {
    matches!(resp3::decode::complete::decode(frame), Ok(Some((Frame3::Push { .. }, _))))
}

fn encode2(frame: &Frame2) -> Vec<u8> {
    let mut buf = vec![0; frame.encode_len(false)];
    let len = resp2::encode::encode(&mut buf, frame, false).unwrap_or_else(|e| panic!("{frame:?}: {e}"));
    buf.truncate(len);
    buf
}

fn encode3(frame: &Frame3) -> Vec<u8> {
    let mut buf = vec![0; frame.encode_len(false)];
    let len = resp3::encode::complete::encode(&mut buf, frame, false).unwrap_or_else(|e| panic!("{frame:?}: {e}"));
    buf.truncate(len);
    buf
}

/// A simple string's or error's text: no CR or LF.
fn line(choices: &mut Choices) -> Vec<u8> {
    choices.bytes(32).iter().copied().filter(|&b| b != b'\r' && b != b'\n').collect()
}

fn children<F>(choices: &mut Choices, depth: usize, element: fn(&mut Choices, usize) -> F) -> Vec<F> {
    (0..choices.below(5)).map(|_| element(choices, depth + 1)).collect()
}

fn resp2_frame(choices: &mut Choices, depth: usize) -> Frame2 {
    match choices.byte() % if depth < MAX_DEPTH { 6 } else { 5 } {
        0 => Frame2::SimpleString(line(choices)),
        1 => Frame2::Error(String::from_utf8_lossy(&line(choices)).into_owned()),
        2 => Frame2::Integer(choices.u64() as i64),
        3 => Frame2::BulkString(choices.bytes(64).to_vec()),
        4 => Frame2::Null,
        _ => Frame2::Array(children(choices, depth, resp2_frame)),
    }
}

/// What the value readers must find in a RESP2 frame.
fn agree2(bytes: &[u8], frame: &Frame2) {
    match frame {
        Frame2::SimpleString(data) | Frame2::BulkString(data) => assert_eq!(value::text(bytes), Some(&data[..])),
        Frame2::Error(_) => assert!(value::is_error(bytes)),
        Frame2::Integer(n) => assert_eq!(value::integer(bytes), Some(*n)),
        Frame2::Null => assert!(value::is_null(bytes)),
        Frame2::Array(items) => {
            let elements = value::elements(bytes).unwrap_or_else(|| panic!("no elements in {bytes:?}"));
            assert_eq!(elements.len(), items.len(), "{bytes:?}");
            elements.into_iter().zip(items).for_each(|(bytes, item)| agree2(bytes, item));
        }
    }
}

/// A map key or set member: a scalar, as redis-protocol can hash only those.
fn key(choices: &mut Choices) -> Frame3 {
    match choices.byte() % 3 {
        0 => Frame3::BlobString { data: choices.bytes(16).to_vec(), attributes: None },
        1 => Frame3::SimpleString { data: line(choices), attributes: None },
        _ => Frame3::Number { data: choices.u64() as i64, attributes: None },
    }
}

fn resp3_frame(choices: &mut Choices, depth: usize) -> Frame3 {
    let attributes = (depth < MAX_DEPTH && choices.byte() & 7 == 0)
        .then(|| (0..choices.below(3)).map(|_| (key(choices), resp3_frame(choices, depth + 1))).collect());
    match choices.byte() % if depth < MAX_DEPTH { 14 } else { 10 } {
        0 => Frame3::BlobString { data: choices.bytes(64).to_vec(), attributes },
        1 => Frame3::BlobError { data: choices.bytes(64).to_vec(), attributes },
        2 => Frame3::SimpleString { data: line(choices), attributes },
        3 => Frame3::SimpleError { data: String::from_utf8_lossy(&line(choices)).into_owned(), attributes },
        4 => Frame3::Boolean { data: choices.byte() & 1 == 1, attributes },
        5 => Frame3::Null,
        6 => Frame3::Number { data: choices.u64() as i64, attributes },
        7 => Frame3::Double { data: f64::from_bits(choices.u64()), attributes },
        8 => Frame3::BigNumber { data: choices.u64().to_string().into_bytes(), attributes },
        9 => {
            let format =
                if choices.byte() & 1 == 0 { VerbatimStringFormat::Text } else { VerbatimStringFormat::Markdown };
            Frame3::VerbatimString { data: choices.bytes(64).to_vec(), format, attributes }
        }
        10 => Frame3::Array { data: children(choices, depth, resp3_frame), attributes },
        11 => Frame3::Push { data: children(choices, depth, resp3_frame), attributes },
        12 => Frame3::Set { data: children(choices, depth, |c, _| key(c)).into_iter().collect(), attributes },
        _ => Frame3::Map {
            data: (0..choices.below(5)).map(|_| (key(choices), resp3_frame(choices, depth + 1))).collect(),
            attributes,
        },
    }
}

/// What the value readers must find in a RESP3 frame. They do not look
/// past attributes (Redis sends none), so a frame with attributes is only
/// checked for its framing.
fn agree3(bytes: &[u8], frame: &Frame3) {
    if frame.attributes().is_some_and(|a| !a.is_empty()) || bytes.starts_with(b"|") {
        return;
    }
    match frame {
        Frame3::BlobString { data, .. } | Frame3::SimpleString { data, .. } | Frame3::VerbatimString { data, .. } => {
            assert_eq!(value::text(bytes), Some(&data[..]), "{bytes:?}");
        }
        Frame3::BlobError { .. } | Frame3::SimpleError { .. } => assert!(value::is_error(bytes)),
        Frame3::Number { data, .. } => assert_eq!(value::integer(bytes), Some(*data)),
        Frame3::Null => assert!(value::is_null(bytes)),
        Frame3::Array { data, .. } | Frame3::Push { data, .. } => {
            let elements = value::elements(bytes).unwrap_or_else(|| panic!("no elements in {bytes:?}"));
            assert_eq!(elements.len(), data.len(), "{bytes:?}");
            elements.into_iter().zip(data).for_each(|(bytes, item)| agree3(bytes, item));
        }
        Frame3::Set { data, .. } => assert_eq!(value::elements(bytes).map(|e| e.len()), Some(data.len())),
        Frame3::Map { data, .. } => assert_eq!(value::elements(bytes).map(|e| e.len()), Some(2 * data.len())),
        _ => {}
    }
}
