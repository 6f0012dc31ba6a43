//! `request_parser`: arbitrary bytes from a client to [`RequestParser`], with
//! Redis's default limits or tiny ones the input picks. Never a panic; never
//! more memory than the bytes received justify (whatever lengths they
//! announce); no request beyond the limits; every request's frame, as it goes
//! to a node, parses back to the same arguments; and the same requests and
//! error whether the input comes in one piece, split once, or in small pieces.
//!
//! Input: a limits byte (odd: tiny limits, three more bytes give them), the
//! split offset (2 bytes), the piece size (1 byte), then the client's bytes.

use bytes::{Bytes, BytesMut};
use slotgate::resp::{Limits, ProtocolError, RequestParser};

use super::{Choices, Meter, deliveries};

/// What the parser made of a client's bytes: each request's frame and
/// arguments, then the error that ends the connection, if any.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Outcome {
    pub requests: Vec<(Bytes, Vec<Vec<u8>>)>,
    pub error: Option<ProtocolError>,
}

pub fn check(data: &[u8], meter: Meter) {
    let mut choices = Choices::new(data);
    let limits = limits(&mut choices);
    let cut = usize::from(choices.u16());
    let chunk = usize::from(choices.byte() % 16) + 1;
    let input = choices.rest();
    let [whole, once, pieces] = deliveries(input.len(), cut, chunk);
    let want = parse(limits, input, &whole, meter);
    assert_eq!(parse(limits, input, &once, meter), want, "split at {once:?}");
    assert_eq!(parse(limits, input, &pieces, meter), want, "in pieces of {chunk}");
}

fn limits(choices: &mut Choices) -> Limits {
    if choices.byte() & 1 == 0 {
        return Limits::default();
    }
    Limits {
        max_bulk_len: usize::from(choices.byte()),
        max_inline_len: usize::from(choices.byte()),
        max_query_len: usize::from(choices.byte()) * 4,
    }
}

/// Parses `input` handed over up to each offset in `ends` in turn.
pub(super) fn parse(limits: Limits, input: &[u8], ends: &[usize], meter: Meter) -> Outcome {
    let mut parser = RequestParser::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Outcome { requests: Vec::new(), error: None };
    let mut at = 0;
    for &end in ends {
        buf.extend_from_slice(&input[at..end]);
        at = end;
        loop {
            let held = buf.len();
            let mut result = Ok(None);
            let peak = meter(&mut || result = parser.parse(&mut buf));
            // An inline line becomes a multibulk frame and a list of
            // arguments: a few dozen bytes per input byte at most.
            assert!(peak <= 64 * held + 4096, "{peak} bytes allocated for {held} bytes received");
            assert!(parser.wanted() <= limits.max_query_len, "wants {} bytes", parser.wanted());
            match result {
                Ok(Some(request)) => {
                    let args: Vec<Vec<u8>> = request.args().map(<[u8]>::to_vec).collect();
                    assert!(!args.is_empty(), "a request without a name");
                    let longest = limits.max_bulk_len.max(limits.max_inline_len);
                    assert!(args.iter().all(|a| a.len() <= longest), "an argument over the limits");
                    reparses(request.frame(), &args);
                    out.requests.push((request.frame().clone(), args));
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

/// The frame a node receives is one request with the same arguments.
fn reparses(frame: &Bytes, args: &[Vec<u8>]) {
    let mut buf = BytesMut::from(&frame[..]);
    let again = RequestParser::new(Limits::default()).parse(&mut buf);
    let again = again.ok().flatten().map(|r| r.args().map(<[u8]>::to_vec).collect::<Vec<_>>());
    assert_eq!(again.as_deref(), Some(args), "the frame a node gets: {frame:?}");
    assert!(buf.is_empty(), "the frame holds more than its request: {frame:?}");
}
