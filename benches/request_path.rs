//! The whole request path of one client, in-process and without sockets:
//! a pipeline of 16 requests parsed, looked up, its keys found and hashed,
//! routed by a slot map of 3 masters (redis-cli's ranges) into each node's
//! write buffer; then the nodes' replies scanned, handed back to the client
//! in request order and written to its output buffer. Groups: `GET x16`,
//! `SET x16` (32-byte values) and `MGET 10 keys x16`, each MGET split per
//! slot (`fanout::split_by_slot`) and its parts' replies merged
//! (`fanout::merge`), as redis-benchmark -P 16 sends them.
//!
//! Every step is slotgate's own code, called in the order `session` and the
//! node driver call it (`Session::handle` -> `forward_keyed` -> `send_to`;
//! `Connection::queue_batch` and `take_replies`; `Session::complete` and
//! `take_ready`). What those private methods add around the public calls is
//! mirrored here in a few lines each, and named where it is. Not in it:
//! socket reads and writes, the tokio scheduler (wake-ups go to a no-op
//! waker), metrics (off by default), and the session's per-request checks
//! that are plain field tests (AUTH, ACL, MULTI, subscribed mode).
//!
//! `REQUEST_PATH_GROUP=get|set|mget REQUEST_PATH_ITERATIONS=N` runs N
//! batches of one group without criterion, for `scripts/callgrind-path.sh`
//! (instructions per request, stable where times are not).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput};
use slotgate::backend::{Completion, Handover, Mailbox, Outbound, Reply, ReplyTo};
use slotgate::cluster::{NodeAddr, Redirect, Shard, SlotMap, key_slot};
use slotgate::command::{KeyPositions, LookupCache, Route, key_positions, spec::flag};
use slotgate::fanout::{self, split_by_slot};
use slotgate::resp::{Limits, Protocol, ReplyScanner, Request, RequestParser, write};
use slotgate::session::pending::{Entry, Group, Pending, Ready, Target};

/// Requests per batch, as `redis-benchmark -P 16`.
const PIPELINE: usize = 16;
/// The defaults of `node_queue_limit` and `max_fanout`.
const QUEUE_LIMIT: usize = 10_000;
const MAX_FANOUT: usize = 8192;
/// The driver's read buffer: reserve `READ_CHUNK` when less than `MIN_READ` is free.
const READ_CHUNK: usize = 64 * 1024;
const MIN_READ: usize = 8 * 1024;

/// A benchmark group: its id (`REQUEST_PATH_GROUP`), its name, the pipeline it sends.
struct Workload {
    id: &'static str,
    name: &'static str,
    requests: Vec<Request>,
}

fn key(n: usize) -> String {
    format!("key:{n:012}")
}

/// A key's value, 32 bytes: what SET writes and GET reads.
fn value(key: &[u8]) -> String {
    format!("{:.<32}", format!("value of {}", String::from_utf8_lossy(key)))
}

fn workloads() -> Vec<Workload> {
    let gets = (0..PIPELINE).map(|i| Request::from_args(&["GET", &key(i)])).collect();
    let sets = (0..PIPELINE).map(|i| Request::from_args(&["SET", &key(i), &value(key(i).as_bytes())])).collect();
    let mgets = (0..PIPELINE)
        .map(|i| {
            let mut args = vec!["MGET".to_string()];
            args.extend((0..10).map(|k| key(i * 10 + k)));
            Request::from_args(&args)
        })
        .collect();
    vec![
        Workload { id: "get", name: "GET x16", requests: gets },
        Workload { id: "set", name: "SET x16", requests: sets },
        Workload { id: "mget", name: "MGET 10 keys x16", requests: mgets },
    ]
}

/// A node's answer to one request it got, as Redis would give it.
fn answer(request: &Request, out: &mut BytesMut) {
    match request.name() {
        b"GET" => write::bulk(out, value(request.arg(1).unwrap()).as_bytes()),
        b"SET" => write::ok(out),
        b"MGET" => {
            write::array(out, request.argc() - 1);
            for key in request.args().skip(1) {
                write::bulk(out, value(key).as_bytes());
            }
        }
        other => panic!("no answer for {}", String::from_utf8_lossy(other)),
    }
}

/// A request written and not yet answered (the driver's `InFlight`).
struct InFlight {
    reply_to: ReplyTo,
    request: Bytes,
    parts: u32,
    end: u64,
    queued_at: Instant,
}

/// One shared node connection: its queue, and what its driver task holds.
struct Node {
    addr: NodeAddr,
    queue: Arc<Mailbox<Outbound>>,
    batch: Vec<Outbound>,
    unwritten: BytesMut,
    /// Bytes queued for writing, and bytes the socket took, since connect.
    queued: u64,
    written: u64,
    in_flight: VecDeque<InFlight>,
    read: BytesMut,
    scanner: ReplyScanner,
    handover: Handover,
    /// What the node answers to one batch, byte for byte (found in setup).
    replies: Vec<u8>,
}

impl Node {
    fn new(addr: &str) -> Node {
        Node {
            addr: NodeAddr::new(addr),
            queue: Arc::new(Mailbox::default()),
            batch: Vec::with_capacity(512),
            unwritten: BytesMut::with_capacity(READ_CHUNK),
            queued: 0,
            written: 0,
            in_flight: VecDeque::with_capacity(512),
            read: BytesMut::with_capacity(READ_CHUNK),
            scanner: ReplyScanner::default(),
            handover: Handover::default(),
            replies: Vec::new(),
        }
    }

    /// The driver's loop turn that finds requests queued: take them all, one
    /// clock read, each frame appended to the write buffer (`queue_batch`,
    /// `append`); then it waits on the queue again (here a no-op waker).
    fn take_requests(&mut self, cx: &mut Context<'_>) {
        while let Poll::Ready(true) = self.queue.poll_take(cx, &mut self.batch) {
            let now = Instant::now();
            for out in self.batch.drain(..) {
                let queued_at = self.in_flight.back().map_or(now, |before| now.max(before.queued_at));
                self.unwritten.extend_from_slice(&out.frame);
                self.queued += out.frame.len() as u64;
                let end = self.queued;
                let (reply_to, request, parts) = (out.reply_to, out.frame, out.parts);
                self.in_flight.push_back(InFlight { reply_to, request, parts, end, queued_at });
            }
        }
    }

    /// The socket took everything (stands for `poll_write_buf`).
    fn write(&mut self) {
        self.written += self.unwritten.len() as u64;
        self.unwritten.clear();
    }

    /// A socket read of the node's replies (stands for `poll_read_buf`),
    /// then `take_replies`: complete frames go to the oldest request, a run
    /// of parts' replies at once (here every run arrives whole).
    fn read_replies(&mut self) {
        if self.read.capacity() - self.read.len() < MIN_READ {
            self.read.reserve(READ_CHUNK);
        }
        self.read.extend_from_slice(&self.replies);
        let (mut got, mut len) = (0, 0);
        while let Some(frame) = self.scanner.scan(&self.read[len..]).unwrap() {
            assert!(!frame.push);
            let parts = self.in_flight.front().expect("a reply without a request").parts;
            (got, len) = (got + 1, len + frame.len);
            if got < parts {
                continue;
            }
            // `Connection::answer`.
            let reply = self.read.split_to(len).freeze();
            let entry = self.in_flight.pop_front().unwrap();
            debug_assert!(entry.end <= self.written, "an answer to a request never written");
            self.handover.push(entry.reply_to, reply, entry.request, got, &self.addr);
            (got, len) = (0, 0);
        }
        assert_eq!(got, 0, "a run's replies arrive whole");
        self.handover.flush();
    }
}

/// One client session and the three masters' connections.
struct RequestPath {
    parser: RequestParser,
    commands: LookupCache,
    keys: KeyPositions,
    /// The slot map the session routes by (its `Routes`).
    routes: Arc<SlotMap>,
    nodes: Vec<Node>,
    pending: Pending,
    /// The session's buffer for split requests' parts.
    parts_buf: BytesMut,
    in_flight: usize,
    mailbox: Arc<Mailbox<Completion>>,
    arrived: Vec<Completion>,
    input: BytesMut,
    output: BytesMut,
    /// The client's pipeline, as it arrives on its socket.
    pipeline: Vec<u8>,
}

impl RequestPath {
    /// The path for `requests`, with each node's replies worked out by
    /// sending them through once.
    fn new(requests: &[Request]) -> RequestPath {
        let addrs = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"];
        let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
        let map = SlotMap::from_ranges(
            ranges.iter().zip(addrs).map(|(&(first, last), addr)| (first, last, Shard::at(NodeAddr::new(addr)))),
        );
        let mut path = RequestPath {
            parser: RequestParser::new(Limits::default()),
            commands: LookupCache::default(),
            keys: KeyPositions::new(),
            routes: Arc::new(map),
            nodes: addrs.iter().map(|addr| Node::new(addr)).collect(),
            pending: Pending::default(),
            parts_buf: BytesMut::new(),
            in_flight: 0,
            mailbox: Arc::new(Mailbox::default()),
            arrived: Vec::new(),
            input: BytesMut::new(),
            output: BytesMut::new(),
            pipeline: requests.iter().flat_map(|r| r.frame().to_vec()).collect(),
        };
        let mut cx = Context::from_waker(Waker::noop());
        path.read_requests();
        for node in &mut path.nodes {
            node.take_requests(&mut cx);
            let mut parser = RequestParser::new(Limits::default());
            let mut sent = BytesMut::from(&node.unwritten[..]);
            let mut replies = BytesMut::new();
            while let Some(request) = parser.parse(&mut sent).unwrap() {
                answer(&request, &mut replies);
            }
            node.replies = replies.to_vec();
            node.write();
            node.in_flight.clear();
        }
        path.pending = Pending::default();
        path.in_flight = 0;
        let _ = path.mailbox.try_take(&mut path.arrived);
        path.arrived.clear();
        // The client gets what one server would have answered.
        let mut expected = BytesMut::new();
        requests.iter().for_each(|r| answer(r, &mut expected));
        assert_eq!(path.batch(), expected.len());
        assert_eq!(&path.output[..], &expected[..], "the client gets one server's answers");
        path
    }

    /// One batch end to end; returns the bytes written to the client.
    fn batch(&mut self) -> usize {
        self.output.clear();
        let mut cx = Context::from_waker(Waker::noop());
        self.read_requests();
        for node in &mut self.nodes {
            node.take_requests(&mut cx);
            node.write();
        }
        for node in &mut self.nodes {
            node.read_replies();
        }
        while let Poll::Ready(true) = self.mailbox.poll_take(&mut cx, &mut self.arrived) {
            self.complete_all();
        }
        self.take_ready();
        assert_eq!(self.in_flight, 0);
        self.output.len()
    }

    /// A socket read of the whole pipeline, then each request handled in turn
    /// (`Session::process_requests`).
    fn read_requests(&mut self) {
        self.input.reserve(self.pipeline.len());
        self.input.extend_from_slice(&self.pipeline);
        while let Some(request) = self.parser.parse(&mut self.input).unwrap() {
            self.handle(request);
        }
    }

    /// `Session::handle` for a keyed command on the shared connections.
    fn handle(&mut self, request: Request) {
        let entry = self.commands.lookup(&request).unwrap();
        let Route::Keyed(keyed) = entry.route else { panic!("{} is not keyed", entry.command.name) };
        // Blocking commands take the client's own connection.
        assert!(!keyed.blocking.blocks(&request));
        // `Session::forward_keyed` from here.
        let command = entry.command;
        key_positions(command, keyed.finder, &request, &mut self.keys).unwrap();
        let (&first, rest) = self.keys.split_first().unwrap();
        let slot = key_slot(request.arg(first).unwrap_or_default());
        let same_slot = rest.iter().all(|&at| key_slot(request.arg(at).unwrap_or_default()) == slot);
        let read_only =
            command.flags.contains(flag::READONLY) && !command.flags.contains(flag::WRITE) && !keyed.runs_scripts;
        if same_slot {
            assert!(!keyed.blocking.blocks(&request));
            // `Session::forward`.
            let seq = self.pending.push(Entry { read_only, ..Entry::new(Target::Slot(slot), false) });
            let routes = self.routes.clone();
            return self.send(seq, request.into_frame(), Target::Slot(slot), &routes);
        }
        // Parts ranked by master (`master_rank`: here the shard's index).
        let routes = self.routes.clone();
        let rank = |slot| routes.shard_index(slot).map_or(u16::MAX, |index| index as u16);
        let split =
            split_by_slot(command, keyed.split.unwrap(), &request, &self.keys, rank, &mut self.parts_buf).unwrap();
        assert!(split.parts.len() <= MAX_FANOUT);
        // `Session::forward_split`: an entry per part, a request per run.
        let count = split.parts.len();
        let first = self.pending.next_seq();
        for &(slot, _) in &split.parts {
            self.pending.push(Entry { read_only, ..Entry::new(Target::Slot(slot), false) });
        }
        let mut part = 0;
        while part < count {
            let index = routes.shard_index(split.parts[part].0);
            let run = split.parts[part..].iter().take_while(|&&(slot, _)| routes.shard_index(slot) == index).count();
            let frames = split.frames.slice(split.span(part..part + run));
            self.send_run(first + part as u64, frames, index.unwrap(), run as u32);
            part += run;
        }
        if let Some(entry) = self.pending.get_mut(first) {
            let group = Group { parts: count, merge: split.merge, protocol: Protocol::Resp2, silent: false };
            entry.group = Some(Box::new(group));
        }
    }

    /// `Session::send` and `send_to`: the slot's master (`Routes::master`),
    /// its queue; the frame travels with the request (and comes back with
    /// its reply, for redirects).
    fn send(&mut self, seq: u64, frame: Bytes, target: Target, routes: &SlotMap) {
        let index = routes.shard_index(target.slot().unwrap()).unwrap();
        self.send_run(seq, frame, index, 1);
    }

    /// `Session::send_to`: `parts` requests from `seq` on, as one.
    fn send_run(&mut self, seq: u64, frame: Bytes, node: usize, parts: u32) {
        let reply_to = ReplyTo { session: self.mailbox.clone(), seq };
        let out = Outbound { frame, parts, asking: false, blocks_for: None, reply_to };
        self.nodes[node].queue.deliver_at_most(out, QUEUE_LIMIT).unwrap();
        self.in_flight += parts as usize;
    }

    /// `Session::complete_all` and `complete`, for replies that are neither
    /// redirects nor retries.
    fn complete_all(&mut self) {
        let mut arrived = std::mem::take(&mut self.arrived);
        for completion in arrived.drain(..) {
            assert!(!completion.request.is_empty());
            let Reply::Frame(mut replies) = completion.reply else { panic!("a node failed") };
            if completion.parts == 1 {
                self.complete(completion.seq, replies, completion.from.as_ref());
                continue;
            }
            // `Session::complete_run`: each part's reply by itself.
            let mut scanner = ReplyScanner::default();
            for seq in completion.seq..completion.seq + u64::from(completion.parts) {
                let len = scanner.scan(&replies).unwrap().unwrap().len;
                let reply = replies.split_to(len);
                self.complete(seq, reply, completion.from.as_ref());
            }
        }
        self.arrived = arrived;
    }

    /// `Session::complete`, for a reply that is neither a redirect nor a retry.
    fn complete(&mut self, seq: u64, reply: Bytes, from: Option<&NodeAddr>) {
        self.in_flight -= 1;
        let entry = self.pending.get_mut(seq).unwrap();
        assert!(entry.reply.is_none());
        let redirect = match reply.first() {
            Some(b'-') => Redirect::parse(&reply, from),
            _ => None,
        };
        assert!(redirect.is_none());
        entry.reply = Some(reply);
    }

    /// `Session::take_ready`: replies in request order, parts merged.
    fn take_ready(&mut self) {
        while let Some(ready) = self.pending.pop_ready() {
            match ready {
                Ready::One(entry) => {
                    let reply: Bytes = entry.reply.unwrap();
                    black_box(reply.first() == Some(&b'-'));
                    self.output.extend_from_slice(&reply);
                }
                Ready::Parts(group, replies, _) => {
                    fanout::merge(&group.merge, &replies, group.protocol, &mut self.output);
                    self.pending.recycle(replies);
                }
            }
        }
    }
}

fn request_path(c: &mut Criterion) {
    for workload in workloads() {
        let mut path = RequestPath::new(&workload.requests);
        let mut group = c.benchmark_group(workload.name);
        group.throughput(Throughput::Elements(workload.requests.len() as u64));
        group.bench_function("parse, route, encode", |b| b.iter(|| path.batch()));
        group.finish();
    }
}

/// `REQUEST_PATH_ITERATIONS` batches of `REQUEST_PATH_GROUP`, and how many
/// requests that was (on stderr, for scripts/callgrind-path.sh).
fn fixed_run(group: &str, iterations: &str) {
    let iterations: u64 = iterations.parse().expect("REQUEST_PATH_ITERATIONS is a number");
    let workload = workloads().into_iter().find(|w| w.id == group).expect("REQUEST_PATH_GROUP is get, set or mget");
    let mut path = RequestPath::new(&workload.requests);
    for _ in 0..iterations {
        black_box(path.batch());
    }
    eprintln!("requests: {}", iterations * workload.requests.len() as u64);
}

fn main() {
    if let (Ok(group), Ok(iterations)) = (std::env::var("REQUEST_PATH_GROUP"), std::env::var("REQUEST_PATH_ITERATIONS"))
    {
        return fixed_run(&group, &iterations);
    }
    let mut criterion = Criterion::default().configure_from_args();
    request_path(&mut criterion);
    criterion.final_summary();
}
