//! Parser tests: exact behaviour on Redis's edge cases, every split point,
//! and a differential check against redis-protocol on valid input.

use bytes::BytesMut;
use proptest::prelude::*;

use super::*;

/// Parses `input` in one piece: the argument lists, then the error if any.
fn parse_all(input: &[u8]) -> (Vec<Vec<Vec<u8>>>, Option<ProtocolError>) {
    let mut parser = RequestParser::new(Limits::default());
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    loop {
        match parser.parse(&mut buf) {
            Ok(Some(req)) => out.push(req.args().map(<[u8]>::to_vec).collect()),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

/// Feeds `input` in chunks of the given sizes, as a socket might deliver it.
fn parse_chunked(input: &[u8], cuts: &[usize]) -> (Vec<Vec<Vec<u8>>>, Option<ProtocolError>) {
    let mut parser = RequestParser::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut bounds: Vec<usize> = cuts.iter().copied().filter(|&c| c < input.len()).collect();
    bounds.sort_unstable();
    bounds.push(input.len());
    for end in bounds {
        buf.extend_from_slice(&input[at..end]);
        at = end;
        loop {
            match parser.parse(&mut buf) {
                Ok(Some(req)) => out.push(req.args().map(<[u8]>::to_vec).collect()),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn args(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|a| a.as_bytes().to_vec()).collect()
}

#[test]
fn multibulk_requests_keep_their_bytes() {
    let input = b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$0\r\n\r\n";
    let mut parser = RequestParser::new(Limits::default());
    let mut buf = BytesMut::from(&input[..]);
    let first = parser.parse(&mut buf).unwrap().unwrap();
    assert_eq!(&first.frame()[..], b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n");
    assert_eq!(first.name(), b"GET");
    assert_eq!(first.arg(1), Some(&b"a"[..]));
    let second = parser.parse(&mut buf).unwrap().unwrap();
    assert_eq!(second.argc(), 3);
    assert_eq!(second.arg(2), Some(&b""[..]));
    assert!(parser.parse(&mut buf).unwrap().is_none());
    assert!(buf.is_empty());
}

#[test]
fn inline_requests_become_multibulk() {
    let (reqs, err) = parse_all(b"set a \"b c\"\r\nPING\n\r\n   \r\n");
    assert_eq!(reqs, vec![args(&["set", "a", "b c"]), args(&["PING"])]);
    assert_eq!(err, None);
    let mut buf = BytesMut::from(&b"get k\r\n"[..]);
    let req = RequestParser::default().parse(&mut buf).unwrap().unwrap();
    assert_eq!(&req.frame()[..], b"*2\r\n$3\r\nget\r\n$1\r\nk\r\n");
}

#[test]
fn an_inline_line_with_a_nul_never_completes_like_redis() {
    let (reqs, err) = parse_all(b"set a b\0c d\r\nget a\r\n");
    assert_eq!((reqs.len(), err), (0, None), "nothing runs, as with strchr in Redis");
    let mut input = b"ping\0".to_vec();
    input.extend(vec![b'x'; 70_000]);
    input.extend(b"\r\n");
    assert_eq!(parse_all(&input).1, Some(ProtocolError::TooBigInline));
}

#[test]
fn empty_multibulks_are_skipped_like_redis() {
    let (reqs, err) = parse_all(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n");
    assert_eq!(reqs, vec![args(&["PING"])]);
    assert_eq!(err, None);
}

#[test]
fn malformed_input_gets_redis_errors() {
    let cases: &[(&[u8], ProtocolError)] = &[
        (b"*abc\r\n", ProtocolError::InvalidMultibulkLength),
        (b"*2147483648\r\n", ProtocolError::InvalidMultibulkLength),
        (b"*1\r\n$-1\r\n", ProtocolError::InvalidBulkLength),
        (b"*1\r\n$536870913\r\n", ProtocolError::InvalidBulkLength),
        (b"*1\r\n$x\r\n", ProtocolError::InvalidBulkLength),
        // Leading zeros and signs: what the one-pass reading of plain lengths leaves to string2ll's rules.
        (b"*01\r\n", ProtocolError::InvalidMultibulkLength),
        (b"*1\r\n$01\r\n", ProtocolError::InvalidBulkLength),
        (b"*1\r\n$-0\r\n", ProtocolError::InvalidBulkLength),
        (b"*1\r\n$+1\r\n", ProtocolError::InvalidBulkLength),
        (b"*1\r\n:1\r\n", ProtocolError::ExpectedBulk(b':')),
        (b"set \"a\r\n", ProtocolError::UnbalancedQuotes),
    ];
    for (input, want) in cases {
        let (_, err) = parse_all(input);
        assert_eq!(err, Some(*want), "{:?}", String::from_utf8_lossy(input));
    }
    assert_eq!(ProtocolError::ExpectedBulk(b':').to_string(), "Protocol error: expected '$', got ':'");
}

#[test]
fn a_length_line_is_judged_once_it_has_ended_as_in_redis() {
    // Redis reads a bulk's kind byte only once the line's `\r` and the byte
    // after it are there: before that, it waits, and past 64 KB the line is
    // too big. A NUL stops its search for the `\r` (strchr).
    let waiting: &[&[u8]] = &[b"*1\r\nx", b"*1\r\n:1\r", b"*1\r\n\x00\r\n", b"*1\r\n$3\x00\r\n", b"*3\x00\r\n"];
    for input in waiting {
        assert_eq!(parse_all(input), (vec![], None), "{:?}", String::from_utf8_lossy(input));
    }
    let too_big = [&b"*1\r\n"[..], &[b'x'; 65_537]].concat();
    assert_eq!(parse_all(&too_big).1, Some(ProtocolError::TooBigBulkCount));
    let nul_header = [&b"*1\r\n$1\x00\r\n"[..], &[b'1'; 65_537]].concat();
    assert_eq!(parse_all(&nul_header).1, Some(ProtocolError::TooBigBulkCount));
    let nul_count = [&b"*1\x00\r\n"[..], &[b'1'; 65_537]].concat();
    assert_eq!(parse_all(&nul_count).1, Some(ProtocolError::TooBigMultibulkCount));
    // A `\r` as the kind byte is a complete line.
    assert_eq!(parse_all(b"*1\r\n\r\n").1, Some(ProtocolError::ExpectedBulk(b'\r')));
}

#[test]
fn huge_lengths_are_not_allocated() {
    // A 512 MB bulk header is accepted and waited for, never reserved up front.
    let mut parser = RequestParser::new(Limits::default());
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$536870912\r\nabc"[..]);
    assert!(parser.parse(&mut buf).unwrap().is_none());
    assert!(buf.capacity() < 4096);
    assert_eq!(parser.wanted(), 25 + 536_870_912 + 2);
    // A multibulk count near INT_MAX likewise.
    let mut parser = RequestParser::new(Limits::default());
    let mut buf = BytesMut::from(&b"*2147483647\r\n$1\r\na\r\n"[..]);
    assert!(parser.parse(&mut buf).unwrap().is_none());
    assert!(buf.capacity() < 4096);
}

#[test]
fn headers_without_end_are_bounded() {
    let long = [b"*".as_slice(), &[b'1'; 70_000]].concat();
    assert_eq!(parse_all(&long).1, Some(ProtocolError::TooBigMultibulkCount));
    let long = [b"*1\r\n$".as_slice(), &[b'1'; 70_000]].concat();
    assert_eq!(parse_all(&long).1, Some(ProtocolError::TooBigBulkCount));
    let long = vec![b'a'; 70_000];
    assert_eq!(parse_all(&long).1, Some(ProtocolError::TooBigInline));
}

#[test]
fn a_line_over_the_limit_is_refused_however_it_arrives() {
    // Found by fuzz/request_parser: a line longer than the limit passed when
    // its newline came in the same read, and failed when it came later.
    let limits = Limits { max_inline_len: 8, ..Limits::default() };
    let first_error = |input: &[u8], cut: usize| {
        let mut parser = RequestParser::new(limits);
        let mut buf = BytesMut::from(&input[..cut]);
        let mut result = parser.parse(&mut buf);
        if matches!(result, Ok(None)) {
            buf.extend_from_slice(&input[cut..]);
            result = parser.parse(&mut buf);
        }
        result.map(|r| r.map(|r| r.argc()))
    };
    type Argc = Result<Option<usize>, ProtocolError>;
    let cases: &[(&[u8], Argc)] = &[
        (b"get abc\r\n", Ok(Some(2))),
        (b"get abcd\r\n", Err(ProtocolError::TooBigInline)),
        (b"*1\r\n$3\r\nget\r\n", Ok(Some(1))),
        (b"*000000001\r\n$3\r\nget\r\n", Err(ProtocolError::TooBigMultibulkCount)),
        (b"*1\r\n$000000003\r\nget\r\n", Err(ProtocolError::TooBigBulkCount)),
    ];
    for (input, want) in cases {
        for cut in 0..=input.len() {
            assert_eq!(first_error(input, cut), *want, "{:?} split at {cut}", String::from_utf8_lossy(input));
        }
    }
}

#[test]
fn requests_over_the_query_limit_are_refused() {
    let limits = Limits { max_query_len: 100, ..Limits::default() };
    let mut parser = RequestParser::new(limits);
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$200\r\n"[..]);
    assert_eq!(parser.parse(&mut buf).unwrap_err(), ProtocolError::QueryBufferLimit);
}

#[test]
fn one_byte_at_a_time_gives_the_same_requests() {
    let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\nget key\r\n*1\r\n$4\r\nPING\r\n";
    let cuts: Vec<usize> = (1..input.len()).collect();
    assert_eq!(parse_chunked(input, &cuts), parse_all(input));
}

/// A request of arbitrary binary arguments, encoded either way a client may.
fn request_strategy() -> impl Strategy<Value = (Vec<Vec<u8>>, Vec<u8>)> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6).prop_map(|args| {
        let encoded = Request::from_args(&args).frame().to_vec();
        (args, encoded)
    })
}

proptest! {
    #[test]
    fn every_split_point_yields_the_same_result(
        reqs in prop::collection::vec(request_strategy(), 1..8),
        cuts in prop::collection::vec(0usize..2000, 0..12),
    ) {
        let input: Vec<u8> = reqs.iter().flat_map(|(_, bytes)| bytes.clone()).collect();
        let want: Vec<Vec<Vec<u8>>> = reqs.iter().map(|(args, _)| args.clone()).collect();
        prop_assert_eq!(parse_chunked(&input, &cuts), (want, None));
    }

    #[test]
    fn agrees_with_redis_protocol_on_valid_input(reqs in prop::collection::vec(request_strategy(), 1..8)) {
        let input: Vec<u8> = reqs.iter().flat_map(|(_, bytes)| bytes.clone()).collect();
        let (ours, err) = parse_all(&input);
        prop_assert_eq!(err, None);
        let mut theirs = Vec::new();
        let mut at = 0;
        while at < input.len() {
            let (frame, used) = redis_protocol::resp2::decode::decode(&input[at..]).unwrap().unwrap();
            at += used;
            let redis_protocol::resp2::types::OwnedFrame::Array(items) = frame else { panic!("not an array") };
            theirs.push(items.into_iter().map(|item| match item {
                redis_protocol::resp2::types::OwnedFrame::BulkString(b) => b,
                other => panic!("unexpected {other:?}"),
            }).collect::<Vec<_>>());
        }
        prop_assert_eq!(ours, theirs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_all(&input);
    }
}

#[test]
fn a_line_end_is_found_at_every_position_short_or_long() {
    for len in 0..100 {
        for (end, byte) in [(len, b'\r'), (len, 0u8)] {
            let mut line = vec![b'7'; len];
            line.push(byte);
            line.extend_from_slice(b"\r\n");
            assert_eq!(super::cr_or_nul(&line), Some(end), "{len}: {byte}");
        }
        assert_eq!(super::cr_or_nul(&vec![b'7'; len]), None, "{len}: none");
    }
}

/// The one request in `input`.
fn parse_one(input: &[u8]) -> Request {
    let mut buf = BytesMut::from(input);
    let request = RequestParser::new(Limits::default()).parse(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    request
}

#[test]
fn parts_copy_the_arguments_as_the_client_sent_them() {
    // The bytes after a length line's `\r` and after each argument are
    // skipped unchecked (as by Redis): the parts carry them along.
    let mset = parse_one(b"*5\rx$4\r\nMSET\r\n$1\r\na\r\n$2\r\nAAyz$1\r\nb\r\n$0\r\n\r\n");
    let inline = parse_one(b"mget a b\r\n");
    let mut buf = BytesMut::new();
    let mut builder = RequestsBuilder::on(&mut buf, 64);
    let mut parts = Vec::new();
    builder.begin(3);
    builder.args_of(&mset, 0..1);
    builder.args_of(&mset, 3..5);
    parts.push(builder.finish());
    builder.begin(2);
    builder.args_of(&inline, 0..1);
    builder.args_of(&inline, 2..3);
    parts.push(builder.finish());
    builder.begin(3);
    builder.args_of(&mset, 0..3);
    parts.push(builder.finish());
    let frames: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
    assert_eq!(
        frames,
        [
            &b"*3\r\n$4\r\nMSET\r\n$1\r\nb\r\n$0\r\n\r\n"[..],
            b"*2\r\n$4\r\nmget\r\n$1\r\nb\r\n",
            b"*3\r\n$4\r\nMSET\r\n$1\r\na\r\n$2\r\nAAyz"
        ]
    );
    // Each part reads back as what it holds, by the parser and from its frame.
    let expected = [vec![&b"MSET"[..], b"b", b""], vec![b"mget", b"b"], vec![b"MSET", b"a", b"AA"]];
    for (part, expected) in parts.iter().zip(expected) {
        assert_eq!(parse_one(part).args().collect::<Vec<_>>(), expected);
        assert_eq!(Request::from_frame(part.clone()).unwrap().args().collect::<Vec<_>>(), expected);
    }
}

#[test]
fn a_kept_frame_gives_its_request_back() {
    for list in [&["GET", "k"][..], &["SET", "key", "", "EX", "10"], &["EVALSHA", "0123456789", "1", "k", "v\r\nx"]] {
        let request = Request::from_args(list);
        let again = Request::from_frame(request.clone().into_frame()).unwrap();
        assert_eq!(again.args().collect::<Vec<_>>(), request.args().collect::<Vec<_>>());
        assert_eq!(again.frame(), request.frame());
    }
    for bad in [
        &b""[..],
        b"*0\r\n",
        b"*1\r\n$3\r\nGET",
        b"*1\r\n$3\r\nGETX\r\n",
        b"*2\r\n$1\r\na\r\n",
        b"$1\r\na\r\n",
        b"*1\r\n$x\r\n",
    ] {
        assert!(Request::from_frame(Bytes::copy_from_slice(bad)).is_none(), "{bad:?}");
    }
}

#[test]
fn requests_written_one_after_another_come_apart() {
    let requests = [Request::from_args(&["MGET", "a"]), Request::from_args(&["MSET", "b", "x\r\ny"])];
    let mut frames = BytesMut::new();
    requests.iter().for_each(|request| frames.extend_from_slice(request.frame()));
    let each = Request::split_frames(frames.freeze());
    assert_eq!(each, requests.iter().map(|request| request.frame().clone()).collect::<Vec<_>>());
    // A cut-off request is not one: what comes before it is.
    let cut = Bytes::from_static(b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPI");
    assert_eq!(Request::split_frames(cut), [Bytes::from_static(b"*1\r\n$4\r\nPING\r\n")]);
}
