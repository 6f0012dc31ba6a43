//! The one mapping from everything that can go wrong to what the client
//! sees: Redis's own error codes and words wherever Redis has them
//! (`-ERR`, `-CROSSSLOT`, `-CLUSTERDOWN`, `-NOPROTO`, `-WRONGPASS`), and a
//! sentence naming the command and the reason where slotgate itself refuses.

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::backend::NodeError;
use crate::resp::{ProtocolError, Request, write};

/// An error reply, before it is written.
#[derive(Debug, Clone)]
pub enum ClientError {
    Protocol(ProtocolError),
    UnknownCommand(Request),
    /// The container's name and the subcommand the client asked for.
    UnknownSubcommand(&'static str, Bytes),
    /// The command's full name (`get`, `client|setname`).
    WrongArity(&'static str),
    /// slotgate will not run this command, and why.
    Refused(&'static str, &'static str),
    /// Cannot be queued in a transaction that runs on one node, and why.
    NotInTransaction(&'static str, &'static str),
    NestedMulti,
    NegativeTimeout,
    UnknownClientType(Bytes),
    InvalidClientId,
    NoSuchClient,
    /// Too many commands queued before a transaction's first key.
    TooManyHeld,
    /// This client's own node connection is gone.
    ConnectionClosed,
    /// The nodes' answers to a split or broadcast request could not be combined.
    Unmergeable(&'static str),
    /// A RESP2 client with subscriptions sent another command.
    Subscribed(&'static str),
    ExecWithoutMulti,
    DiscardWithoutMulti,
    WatchInMulti,
    ExecAbort,
    /// EXEC itself was refused (NOAUTH, NOPERM): the transaction is gone.
    ExecAbortBecause(Box<ClientError>),
    CrossSlot,
    /// A multi-key command's keys span more slots than `max_fanout`: (slots, limit).
    FanoutTooLarge(usize, usize),
    InvalidCursor,
    InvalidSlot,
    /// No cluster topology has been discovered yet; the last failure if any.
    NoTopology(Option<String>),
    SlotNotServed,
    /// A node could not be reached; the request was never sent.
    NodeUnreachable(NodeError),
    /// The connection to a node broke after the request was written.
    NodeLost(NodeError),
    SelectNotAllowed,
    NotAnInteger,
    ClusterSupportDisabled,
    NoProto,
    ProtocolVersion,
    HelloOption(Bytes),
    AuthWithoutPassword,
    WrongPass,
    Syntax,
    InvalidClientName,
    UnknownClientInfo(Bytes),
    InvalidClientInfo(Bytes),
    /// `max_clients` connections are open; this one is closed.
    MaxClients,
    /// A command before AUTH, when the default user has a password.
    NoAuth,
    /// The client's user may not run this command (its full name).
    NoPermCommand(&'static str),
    /// The client's user may not use one of the request's keys.
    NoPermKey,
    /// CLIENT KILL USER names a user that does not exist.
    NoSuchUser(Bytes),
    /// HELLO before AUTH, without its own AUTH option.
    NoAuthHello,
    /// Too many wrong passwords from this address lately: seconds to wait.
    TooManyFailedLogins(u64),
    /// `node_queue_limit` requests wait for the node already.
    NodeOverloaded(crate::cluster::NodeAddr, usize),
}

impl ClientError {
    /// Appends the error as a RESP error frame, with the client's bytes in
    /// it exactly as they came (Redis does not make them valid UTF-8).
    pub fn write(&self, out: &mut BytesMut) {
        let mut message = Wire(Vec::new());
        // Writing into a Vec cannot fail.
        let _ = self.message(&mut message);
        write::error(out, &message.0);
    }

    /// The message, written once for both ends: raw bytes on the wire,
    /// lossy text for logs ([`fmt::Display`]).
    fn message(&self, f: &mut impl Sink) -> fmt::Result {
        match self {
            // Redis prints the byte with `%c`: one byte, not its UTF-8 encoding.
            ClientError::Protocol(ProtocolError::ExpectedBulk(got)) => {
                f.write_str("ERR Protocol error: expected '$', got '")?;
                f.raw(&[*got])?;
                f.write_str("'")
            }
            ClientError::Protocol(e) => write!(f, "ERR {e}"),
            ClientError::UnknownCommand(req) => {
                f.write_str("ERR unknown command '")?;
                f.raw(c_str(req.name(), 128))?;
                f.write_str("', with args beginning with: ")?;
                // Redis shows arguments until 128 bytes are used up.
                let mut used = 0;
                for arg in req.args().skip(1) {
                    if used >= 128 {
                        break;
                    }
                    let shown = c_str(arg, 128 - used);
                    f.write_str("'")?;
                    f.raw(shown)?;
                    f.write_str("' ")?;
                    used += shown.len() + 3;
                }
                Ok(())
            }
            ClientError::UnknownSubcommand(container, sub) => {
                f.write_str("ERR unknown subcommand '")?;
                f.raw(c_str(sub, 128))?;
                write!(f, "'. Try {} HELP.", container.to_ascii_uppercase())
            }
            ClientError::WrongArity(name) => write!(f, "ERR wrong number of arguments for '{name}' command"),
            ClientError::Refused(name, reason) => write!(f, "ERR slotgate cannot run '{name}': {reason}"),
            ClientError::NotInTransaction(name, reason) => {
                write!(f, "ERR slotgate cannot run '{name}' inside a transaction: {reason}")
            }
            ClientError::NestedMulti => f.write_str("ERR MULTI calls can not be nested"),
            ClientError::NegativeTimeout => f.write_str("ERR timeout is negative"),
            ClientError::UnknownClientType(kind) => {
                f.write_str("ERR Unknown client type '")?;
                f.raw(c_str(kind, 128))?;
                f.write_str("'")
            }
            ClientError::InvalidClientId => f.write_str("ERR Invalid client ID"),
            ClientError::NoSuchClient => f.write_str("ERR No such client"),
            ClientError::TooManyHeld => f.write_str(
                "ERR slotgate holds too many commands before the transaction's first key; the transaction will abort",
            ),
            ClientError::ConnectionClosed => f.write_str("ERR this client's node connection is closed"),
            ClientError::Unmergeable(what) => {
                write!(f, "ERR slotgate could not combine the nodes' replies: {what}")
            }
            ClientError::Subscribed(name) => write!(
                f,
                "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
            ),
            ClientError::ExecWithoutMulti => f.write_str("ERR EXEC without MULTI"),
            ClientError::DiscardWithoutMulti => f.write_str("ERR DISCARD without MULTI"),
            ClientError::WatchInMulti => f.write_str("ERR WATCH inside MULTI is not allowed"),
            ClientError::ExecAbort => f.write_str("EXECABORT Transaction discarded because of previous errors."),
            ClientError::ExecAbortBecause(error) => {
                f.write_str("EXECABORT Transaction discarded because of: ")?;
                error.message(f)
            }
            ClientError::CrossSlot => f.write_str("CROSSSLOT Keys in request don't hash to the same slot"),
            ClientError::FanoutTooLarge(slots, limit) => write!(
                f,
                "ERR this command's keys hash to {slots} slots, more than max_fanout ({limit}) allows; send it in parts"
            ),
            ClientError::InvalidCursor => f.write_str("ERR invalid cursor"),
            ClientError::InvalidSlot => f.write_str("ERR Invalid slot"),
            ClientError::NoTopology(None) => f.write_str("CLUSTERDOWN slotgate has not discovered the cluster yet"),
            ClientError::NoTopology(Some(why)) => {
                write!(f, "CLUSTERDOWN slotgate has not discovered the cluster yet: {why}")
            }
            ClientError::SlotNotServed => f.write_str("CLUSTERDOWN Hash slot not served"),
            ClientError::NodeUnreachable(e) => write!(f, "CLUSTERDOWN node {} is unreachable: {}", e.addr, e.cause),
            ClientError::NodeLost(e) => write!(
                f,
                "ERR connection to node {} lost before its reply ({}); the command may have run",
                e.addr, e.cause
            ),
            ClientError::SelectNotAllowed => f.write_str("ERR SELECT is not allowed in cluster mode"),
            ClientError::NotAnInteger => f.write_str("ERR value is not an integer or out of range"),
            ClientError::ClusterSupportDisabled => f.write_str("ERR This instance has cluster support disabled"),
            ClientError::NoProto => f.write_str("NOPROTO unsupported protocol version"),
            ClientError::ProtocolVersion => f.write_str("ERR Protocol version is not an integer or out of range"),
            ClientError::HelloOption(option) => {
                f.write_str("ERR Syntax error in HELLO option '")?;
                f.raw(c_str(option, 128))?;
                f.write_str("'")
            }
            ClientError::AuthWithoutPassword => f.write_str(
                "ERR AUTH <password> called without any password configured for the default user. \
                 Are you sure your configuration is correct?",
            ),
            ClientError::WrongPass => f.write_str("WRONGPASS invalid username-password pair or user is disabled."),
            ClientError::Syntax => f.write_str("ERR syntax error"),
            ClientError::InvalidClientName => {
                f.write_str("ERR Client names cannot contain spaces, newlines or special characters.")
            }
            ClientError::UnknownClientInfo(attr) => {
                f.write_str("ERR Unrecognized option '")?;
                f.raw(c_str(attr, 128))?;
                f.write_str("'")
            }
            ClientError::InvalidClientInfo(attr) => {
                f.write_str("ERR ")?;
                f.raw(c_str(attr, 128))?;
                f.write_str(" cannot contain spaces, newlines or special characters.")
            }
            ClientError::MaxClients => f.write_str("ERR max number of clients reached"),
            ClientError::NoAuth => f.write_str("NOAUTH Authentication required."),
            ClientError::NoPermCommand(name) => {
                write!(f, "NOPERM this user has no permissions to run the '{name}' command")
            }
            ClientError::NoPermKey => {
                f.write_str("NOPERM this user has no permissions to access one of the keys used as arguments")
            }
            ClientError::NoSuchUser(name) => {
                f.write_str("ERR No such user '")?;
                f.raw(c_str(name, usize::MAX))?;
                f.write_str("'")
            }
            ClientError::NodeOverloaded(addr, limit) => write!(
                f,
                "ERR node {addr} is overloaded: {limit} requests already wait for it (node_queue_limit); not sent"
            ),
            ClientError::TooManyFailedLogins(seconds) => write!(
                f,
                "WRONGPASS too many failed authentication attempts from this address; try again in {seconds} s"
            ),
            ClientError::NoAuthHello => f.write_str(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH \
                 <user> <pass> option can be used to authenticate the client and select the RESP protocol version \
                 at the same time",
            ),
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.message(f)
    }
}

/// Where a message is written: text, plus client bytes that may not be UTF-8.
trait Sink: fmt::Write {
    fn raw(&mut self, bytes: &[u8]) -> fmt::Result;
}

/// The wire: client bytes go out as they came.
struct Wire(Vec<u8>);

impl fmt::Write for Wire {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl Sink for Wire {
    fn raw(&mut self, bytes: &[u8]) -> fmt::Result {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// Logs and `to_string`: client bytes as lossy UTF-8.
impl Sink for fmt::Formatter<'_> {
    fn raw(&mut self, bytes: &[u8]) -> fmt::Result {
        self.write_str(&String::from_utf8_lossy(bytes))
    }
}

/// What Redis's `%.<limit>s` prints of client bytes: up to the first NUL
/// (they are C strings there), at most `limit` bytes.
fn c_str(bytes: &[u8], limit: usize) -> &[u8] {
    let end = memchr::memchr(0, bytes).unwrap_or(bytes.len()).min(limit);
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_commands_are_reported_like_redis() {
        let req = Request::from_args(&["foo", "a", "b"]);
        assert_eq!(
            ClientError::UnknownCommand(req).to_string(),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        let req = Request::from_args(&["foo"]);
        assert_eq!(
            ClientError::UnknownCommand(req).to_string(),
            "ERR unknown command 'foo', with args beginning with: "
        );
    }

    #[test]
    fn redis_words_are_kept() {
        assert_eq!(
            ClientError::UnknownSubcommand("client", Bytes::from_static(b"foo")).to_string(),
            "ERR unknown subcommand 'foo'. Try CLIENT HELP."
        );
        assert_eq!(
            ClientError::WrongArity("client|setname").to_string(),
            "ERR wrong number of arguments for 'client|setname' command"
        );
        let mut out = BytesMut::new();
        ClientError::CrossSlot.write(&mut out);
        assert_eq!(&out[..], b"-CROSSSLOT Keys in request don't hash to the same slot\r\n");
    }

    #[test]
    fn client_bytes_are_echoed_as_redis_echoes_them() {
        let written = |e: ClientError| {
            let mut out = BytesMut::new();
            e.write(&mut out);
            out.to_vec()
        };
        // Not made valid UTF-8; cut at a NUL and at 128 bytes, like `%.128s`.
        let req = Request::from_args(&[&b"f\xffo"[..], b"a\x00b", b"\xc3"]);
        assert_eq!(
            written(ClientError::UnknownCommand(req)),
            b"-ERR unknown command 'f\xffo', with args beginning with: 'a' '\xc3' \r\n"
        );
        let long = [b'\xe9'; 200];
        let req = Request::from_args(&[&b"x"[..], &long, b"y"]);
        let mut want = b"-ERR unknown command 'x', with args beginning with: '".to_vec();
        want.extend_from_slice(&long[..128]);
        want.extend_from_slice(b"' \r\n");
        assert_eq!(written(ClientError::UnknownCommand(req)), want);
        // `%c`: the one byte.
        let got = written(ClientError::Protocol(ProtocolError::ExpectedBulk(0xff)));
        assert_eq!(got, b"-ERR Protocol error: expected '$', got '\xff'\r\n");
        // Logs get text.
        assert_eq!(
            ClientError::HelloOption(Bytes::from_static(b"\xffx")).to_string(),
            "ERR Syntax error in HELLO option '\u{fffd}x'"
        );
    }
}
