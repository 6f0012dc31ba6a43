//! Connections to cluster nodes: the pipelined driver (many clients' requests
//! batched into one write, replies matched in FIFO order) and the per-worker
//! pool of those connections. It reports what happened to each request,
//! including whether a retry is safe, and decides nothing about routing.

mod driver;
mod mailbox;
mod pool;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::cluster::NodeAddr;

pub use driver::Health;
pub use mailbox::{Mailbox, Undelivered};
pub use pool::{Dedicated, Node, Pool, Routes};

/// How node connections behave.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    /// Connections per node per worker (and per protocol); a client always
    /// uses the same one, so its requests to a node stay in order.
    pub connections_per_node: usize,
    pub connect_timeout: Duration,
    /// A node that has not answered a request for this long is taken as hung:
    /// its connection is closed and reopened, its requests fail.
    pub request_timeout: Duration,
    /// An idle shared connection is pinged this often (`None`: never).
    pub health_check: Option<Duration>,
    pub read_from: ReadFrom,
    /// Keep per-node metrics (the metrics endpoint is on).
    pub metrics: bool,
    /// How to log in to the nodes, if they want a password.
    pub login: Option<crate::cluster::NodeLogin>,
    /// Requests a shared connection may have waiting to be sent, and sent
    /// but unanswered, each; past it new ones fail at once.
    pub queue_limit: usize,
    /// TLS toward the nodes, when on.
    pub tls: Option<Arc<crate::tls::NodeTls>>,
}

/// Where read-only commands go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadFrom {
    /// The slot's master, like every other command: reads see every write.
    #[default]
    Master,
    /// A replica of the slot's master (the same one for a given client),
    /// or the master while none is up. Reads may miss the latest writes.
    ReplicaPreferred,
    /// The node of the slot's shard with the lowest measured latency.
    Nearest,
    /// The shard's nodes in turn, request by request.
    RoundRobin,
}

/// One request on its way to a node.
#[derive(Debug)]
pub struct Outbound {
    /// The request exactly as the client sent it; or `parts` requests one
    /// after another (a split request's parts for one node), answered by
    /// as many replies, one completion for them all.
    pub frame: Bytes,
    pub parts: u32,
    /// Send `ASKING` first, on the same connection (after an `-ASK`).
    pub asking: bool,
    /// A blocking command may wait this long for its answer before the
    /// request timeout starts counting (`Duration::MAX`: for ever).
    pub blocks_for: Option<Duration>,
    pub reply_to: ReplyTo,
}

impl Outbound {
    /// Fails it unanswered, every part of a run (each failure of a queued
    /// request goes through here, so that none forgets the parts after the
    /// first).
    pub fn fail(self, error: NodeError) {
        self.reply_to.send_run(Reply::Failed(error), self.frame, self.parts);
    }
}

/// Where the reply to one request goes: the client's session, and the
/// request's sequence number there.
#[derive(Debug, Clone)]
pub struct ReplyTo {
    pub session: Arc<Mailbox<Completion>>,
    pub seq: u64,
}

impl ReplyTo {
    /// Hands over the reply, with the `request` it answers. A session that
    /// has gone away no longer wants it: the reply is dropped, which keeps
    /// the connection's FIFO intact.
    pub fn send(self, reply: Reply, request: Bytes) {
        self.send_run(reply, request, 1);
    }

    /// [`ReplyTo::send`] for `parts` requests, numbered from `seq` on.
    pub fn send_run(self, reply: Reply, request: Bytes, parts: u32) {
        let _ = self.session.deliver(Completion { seq: self.seq, reply, from: None, request, parts });
    }
}

/// Replies on their way to sessions, handed over a session's run at a time:
/// one node read answers many requests, and a client's pipelined requests
/// to a node sit together in its queue, so most replies of a read go to the
/// session of the reply before them.
#[derive(Debug, Default)]
pub struct Handover {
    to: Option<Arc<Mailbox<Completion>>>,
    run: Vec<Completion>,
}

impl Handover {
    /// Adds `node`'s reply to `request` (its replies to `parts` requests)
    /// to the current run, first handing the run over when the reply is for
    /// another session.
    pub fn push(&mut self, reply_to: ReplyTo, reply: Bytes, request: Bytes, parts: u32, node: &NodeAddr) {
        if !self.to.as_ref().is_some_and(|to| Arc::ptr_eq(to, &reply_to.session)) {
            self.flush();
            self.to = Some(reply_to.session);
        }
        // Any of several replies may be an error: they name the node once.
        let from = (parts > 1 || reply.first() == Some(&b'-')).then(|| node.clone());
        self.run.push(Completion { seq: reply_to.seq, reply: Reply::Frame(reply), from, request, parts });
    }

    /// Hands the current run to its session.
    pub fn flush(&mut self) {
        if let Some(to) = self.to.take() {
            to.deliver_all(&mut self.run);
        }
    }
}

/// A finished request, as the session receives it.
#[derive(Debug)]
pub struct Completion {
    pub seq: u64,
    pub reply: Reply,
    /// The node that answered with an error (a redirect may name no host:
    /// then it means this node's). Only for error replies: the address is
    /// shared, and a copy per reply would be one more atomic count each.
    pub from: Option<NodeAddr>,
    /// The request's frame, back with its answer (empty for signals and a
    /// subscribed connection's messages): a redirect or a retry sends it
    /// again, and the session keeps no copy while it is away.
    pub request: Bytes,
    /// How many requests it answers, numbered from `seq` on: `request`
    /// holds their frames and `reply` their replies, one after another
    /// (one for a failure).
    pub parts: u32,
}

impl Completion {
    /// A signal to a session, not a reply: `seq` says which (drain, reload, ...).
    pub fn signal(seq: u64) -> Completion {
        Completion { seq, reply: Reply::Frame(Bytes::new()), from: None, request: Bytes::new(), parts: 1 }
    }
}

#[derive(Debug)]
pub enum Reply {
    /// The node's reply, byte for byte.
    Frame(Bytes),
    /// The node did not answer.
    Failed(NodeError),
}

/// A request that got no reply, with whether it is safe to send again.
#[derive(Debug, Clone, thiserror::Error)]
#[error("node {addr}: {cause}")]
pub struct NodeError {
    pub addr: NodeAddr,
    pub cause: Arc<str>,
    pub retry: Retry,
}

/// Whether a failed request may be sent again without risking running twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// It never left slotgate (not written, or the connection never opened).
    Safe,
    /// It was written: the node may have run it.
    NotSafe,
    /// It was written and the node did not answer in time: it may have run,
    /// and sent again it would most likely wait as long.
    TimedOut,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_answers_every_part() {
        let session = Arc::new(Mailbox::default());
        let frame = Bytes::from_static(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n");
        let reply_to = ReplyTo { session: session.clone(), seq: 7 };
        let out = Outbound { frame: frame.clone(), parts: 2, asking: false, blocks_for: None, reply_to };
        out.fail(NodeError { addr: NodeAddr::new("127.0.0.1:7000"), cause: "gone".into(), retry: Retry::Safe });
        let mut arrived = Vec::new();
        assert!(session.try_take(&mut arrived));
        let [failed] = &arrived[..] else { panic!("one completion for the run, got {arrived:?}") };
        assert_eq!((failed.seq, failed.parts, &failed.request), (7, 2, &frame));
        assert!(matches!(&failed.reply, Reply::Failed(error) if error.retry == Retry::Safe));
    }
}
