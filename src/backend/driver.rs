//! The pipelined driver of one node connection.
//!
//! One task owns the socket. Whatever the sessions queued since its last
//! write goes out in one write; the reader scans complete replies (frame
//! boundaries only) and hands each to the oldest pending request, in FIFO
//! order. A reply whose session has gone away is read and dropped, so the
//! FIFO stays aligned. When the connection breaks, requests that were written
//! get an error marked [`Retry::NotSafe`] (they may have run) and those never
//! written get [`Retry::Safe`]; nothing is ever sent twice from here.
//!
//! A node that answers nothing for `request_timeout` is taken as hung and
//! treated like a broken connection.
//!
//! Connections are opened on demand: the task waits for a first request,
//! connects (and says `HELLO 3` for a RESP3 connection, `READONLY` where
//! replicas serve reads), and after a failure or a lost connection
//! reconnects by itself with backoff, failing requests at once while the
//! node is down. A shared
//! connection sends a PING every `health_check`: one left unanswered past
//! the request timeout marks the node hung (an idle connection would not
//! notice otherwise), and its round trip is the node's latency for
//! `read_from = "nearest"`.
//!
//! With `node_tls`, the socket is a TLS stream ([`NodeStream`]): what was
//! written may wait in TLS records until flushed, so the driver flushes
//! whenever it has written everything it had.
//!
//! # Cancel safety
//! The `select!` arms poll reads and writes of the socket ([`Connection::poll_io`]),
//! the queue and a timer, each of which either completes or leaves no effect
//! when another arm wins.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::io::{poll_read_buf, poll_write_buf};

use super::{BackendSettings, Handover, Mailbox, NodeError, Outbound, Reply, ReplyTo, Retry};
use crate::cluster::{NodeAddr, Topology};
use crate::metrics::NodeMetrics;
use crate::resp::{Protocol, ReplyScanner, Request};
use crate::tls::NodeStream;
use crate::write_queue::WriteQueue;

const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
/// Read in chunks of this size, reserving again when less than `MIN_READ` is free.
const READ_CHUNK: usize = 64 * 1024;
const MIN_READ: usize = 8 * 1024;
/// The most room made at once for a long reply still arriving.
const MAX_RESERVE: usize = 64 * 1024 * 1024;
/// Stop taking requests while this much is waiting to be written.
const MAX_UNWRITTEN: usize = 4 * 1024 * 1024;
/// The largest single reply accepted from a node (Redis values stop at 512 MB).
const MAX_REPLY: usize = 1024 * 1024 * 1024;
/// Room for requests taken from the queue at once (it grows when needed).
const BATCH: usize = 512;
/// Longer than any process lives: a BLPOP 0 is never overdue.
const FOR_EVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Starts the driver task of one connection and returns its queue; closing
/// the queue ends the task. The task reports on the node in `health`.
pub(super) fn spawn(
    addr: NodeAddr,
    protocol: Protocol,
    settings: Arc<ArcSwap<BackendSettings>>,
    mode: Mode,
    health: Arc<Health>,
    metrics: Option<NodeMetrics>,
) -> Arc<Mailbox<Outbound>> {
    let queue = Arc::new(Mailbox::default());
    tokio::spawn(run(addr, protocol, queue.clone(), settings, mode, health, metrics));
    queue
}

/// What a node's connections have seen of it, for choosing among replicas.
#[derive(Debug)]
pub struct Health {
    /// Not known to be down: the last connection attempt succeeded (or none was made).
    up: AtomicBool,
    /// Round trip of the last health-check PING, in microseconds; 0 until measured.
    latency_us: AtomicU64,
    /// Where a shared connection's changes of `up` are told, for `/readyz`,
    /// while `reporting`.
    report: Option<(NodeAddr, Arc<Topology>)>,
    reporting: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health::new(None)
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        self.stop_reporting();
    }
}

impl Health {
    /// The health of a worker's shared connections to `addr`, whose ups and
    /// downs `topology` hears of.
    pub fn reporting(addr: NodeAddr, topology: Arc<Topology>) -> Health {
        Health::new(Some((addr, topology)))
    }

    fn new(report: Option<(NodeAddr, Arc<Topology>)>) -> Health {
        let reporting = report.is_some().into();
        Health { up: true.into(), latency_us: 0.into(), report, reporting }
    }

    /// The node's connections are closing: it counts as reachable again for
    /// the topology, whatever they report from now on.
    pub fn stop_reporting(&self) {
        if self.reporting.swap(false, Ordering::Relaxed) && !self.is_up() {
            if let Some((addr, topology)) = &self.report {
                topology.reached(addr, Ok(()));
            }
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The measured round trip; `None` until a PING has come back.
    pub fn latency(&self) -> Option<Duration> {
        Some(self.latency_us.load(Ordering::Relaxed)).filter(|&us| us > 0).map(Duration::from_micros)
    }

    /// A connection attempt succeeded (`Ok`), or a connection failed.
    fn set_up(&self, outcome: Result<(), &str>) {
        let was_up = self.up.swap(outcome.is_ok(), Ordering::Relaxed);
        if let Some((addr, topology)) = &self.report {
            if was_up != outcome.is_ok() && self.reporting.load(Ordering::Relaxed) {
                topology.reached(addr, outcome);
            }
        }
    }
}

/// What a connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Many clients' requests: one reply per request, in order; a node
    /// silent for `request_timeout` is taken as hung; reconnects as needed.
    Shared,
    /// One client's own connection (its transaction, its blocking command):
    /// replies in order; the request timeout counts from the end of a
    /// blocking command's own timeout (BLPOP 0 waits for ever); never
    /// reopened: what the node holds for it (MULTI, WATCH) dies with it, so
    /// once it breaks every later request fails.
    Dedicated,
    /// One client's subscribed connection: confirmations and messages come
    /// as the node pleases, so every frame goes to the client, except the
    /// answers to its own health-check PINGs (one left unanswered for
    /// `request_timeout` marks the node hung); never reopened.
    Subscriber,
}

impl Mode {
    /// Does one break end the connection for good?
    fn one_shot(self) -> bool {
        self != Mode::Shared
    }

    /// How it goes by `settings`: (request timeout, health check, most
    /// requests in flight). A client's own connection is not pinged: the
    /// PING would land inside its transaction. A shared one sends at most
    /// `queue_limit` requests ahead of the node's answers; more wait in the
    /// queue, where their number is capped.
    fn limits(self, settings: &BackendSettings) -> (Duration, Option<Duration>, usize) {
        match self {
            Mode::Shared => (settings.request_timeout, settings.health_check, settings.queue_limit),
            Mode::Dedicated => (settings.request_timeout, None, usize::MAX),
            Mode::Subscriber => (settings.request_timeout, settings.health_check, usize::MAX),
        }
    }
}

async fn run(
    addr: NodeAddr,
    protocol: Protocol,
    queue: Arc<Mailbox<Outbound>>,
    live: Arc<ArcSwap<BackendSettings>>,
    mode: Mode,
    health: Arc<Health>,
    metrics: Option<NodeMetrics>,
) {
    let mut failures: u32 = 0;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        // Connect on demand: wait for work first. After a failure or a lost
        // connection, try again by itself (once the backoff has passed), so
        // that the node's health is known, and its return noticed, even
        // while no client uses it (/readyz reports it).
        if failures == 0 && health.is_up() && !poll_fn(|cx| queue.poll_take(cx, &mut batch)).await {
            return;
        }
        if queue.is_closed() && batch.is_empty() {
            return;
        }
        // Each connection goes by the settings in force when it opens.
        let settings = live.load_full();
        // Shared connections of a cluster read from replicas say READONLY.
        let readonly = settings.read_from != super::ReadFrom::Master && !mode.one_shot();
        // A shared connection proves that the node answers before it counts
        // as up: a stopped process still accepts TCP connections.
        let stream = match connect(&addr, protocol, &settings, readonly, !mode.one_shot()).await {
            Ok(stream) => {
                health.set_up(Ok(()));
                stream
            }
            Err(cause) => {
                health.set_up(Err(&cause));
                failures = failures.saturating_add(1);
                if failures == 1 || failures % 100 == 0 {
                    tracing::warn!(node = %addr, %cause, attempts = failures, "cannot connect to node");
                }
                let cause: Arc<str> = cause.into();
                if let Some(metrics) = &metrics {
                    metrics.errors.inc_by(requests(&batch));
                }
                fail_all(&mut batch, &addr, &cause);
                if mode.one_shot() {
                    return close_for_good(&queue, &addr, &cause);
                }
                if !fail_while_backing_off(&queue, &mut batch, &addr, &cause, backoff(failures), metrics.as_ref()).await
                {
                    return;
                }
                continue;
            }
        };
        let first = std::mem::take(&mut batch);
        let mut conn = Connection::new(stream, addr.clone(), first, mode, health.clone(), metrics.clone());
        if let Some(metrics) = &metrics {
            metrics.connections.inc();
        }
        let result = conn.serve(&queue, &live).await;
        if let Some(metrics) = &metrics {
            metrics.connections.dec();
        }
        // Only a connection that answered counts as recovered: a node that
        // accepts and closes at once (max clients reached) keeps backing off.
        if conn.answered {
            if failures > 0 {
                tracing::info!(node = %addr, "node answers again");
            }
            failures = 0;
        } else {
            failures = failures.saturating_add(1);
        }
        let cause: Arc<str> = match &result {
            Ok(()) => "the node left the cluster map; connection closed".into(),
            Err(cause) => {
                health.set_up(Err(cause));
                tracing::warn!(node = %addr, %cause, "node connection lost");
                cause.as_str().into()
            }
        };
        conn.fail_in_flight(&addr, &cause);
        batch = conn.batch;
        if result.is_ok() {
            return;
        }
        if mode.one_shot() {
            return close_for_good(&queue, &addr, &cause);
        }
        if failures > 0
            && !fail_while_backing_off(&queue, &mut batch, &addr, &cause, backoff(failures), metrics.as_ref()).await
        {
            return;
        }
    }
}

/// Fails every request that arrives before `gap` has passed; false when the
/// queue has closed.
async fn fail_while_backing_off(
    queue: &Mailbox<Outbound>,
    batch: &mut Vec<Outbound>,
    addr: &NodeAddr,
    cause: &Arc<str>,
    gap: Duration,
    metrics: Option<&NodeMetrics>,
) -> bool {
    let until = Instant::now() + gap;
    loop {
        tokio::select! {
            () = sleep_until(until) => return true,
            taken = poll_fn(|cx| queue.poll_take(cx, batch)) => {
                if !taken {
                    return false;
                }
                if let Some(metrics) = metrics {
                    metrics.errors.inc_by(requests(batch));
                }
                fail_all(batch, addr, cause);
            }
        }
    }
}

/// Ends a one-shot connection: whatever is queued or comes later fails
/// (never sent, so safe to retry elsewhere).
fn close_for_good(queue: &Mailbox<Outbound>, addr: &NodeAddr, cause: &Arc<str>) {
    for out in queue.close() {
        out.fail(NodeError { addr: addr.clone(), cause: cause.clone(), retry: Retry::Safe });
    }
}

fn fail_all(batch: &mut Vec<Outbound>, addr: &NodeAddr, cause: &Arc<str>) {
    for out in batch.drain(..) {
        out.fail(NodeError { addr: addr.clone(), cause: cause.clone(), retry: Retry::Safe });
    }
}

/// The requests in `batch`, each part of a run counted.
fn requests(batch: &[Outbound]) -> u64 {
    batch.iter().map(|out| u64::from(out.parts)).sum()
}

/// 100 ms after the first failure, doubling up to 1 s, plus up to a fifth
/// more at random, so that many connections do not retry in step.
fn backoff(failures: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let base = Duration::from_millis(100)
        .saturating_mul(1 << failures.clamp(1, 5).saturating_sub(1))
        .min(Duration::from_secs(1));
    // RandomState is seeded anew each time: a cheap source of jitter.
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    base + base.mul_f64((random % 1000) as f64 / 5000.0)
}

/// Fails `parts` requests (their frames in `request`), numbered from `reply_to.seq` on.
fn fail(reply_to: ReplyTo, request: Bytes, parts: u32, addr: &NodeAddr, cause: &Arc<str>, retry: Retry) {
    let error = NodeError { addr: addr.clone(), cause: cause.clone(), retry };
    reply_to.send_run(Reply::Failed(error), request, parts);
}

/// Opens a connection and sets it up (AUTH when the nodes want a password);
/// with `probe`, a PING proves the node answers even when there is nothing
/// else to set up.
async fn connect(
    addr: &NodeAddr,
    protocol: Protocol,
    settings: &BackendSettings,
    readonly: bool,
    probe: bool,
) -> Result<NodeStream, String> {
    let limit = settings.connect_timeout;
    let mut stream = NodeStream::connect(addr.as_str(), settings.tls.as_deref(), limit).await?;
    let mut setup = Vec::new();
    if let Some(login) = &settings.login {
        setup.push(login.auth());
    }
    if protocol == Protocol::Resp3 {
        setup.push(Request::from_args(&["HELLO", "3"]));
    }
    if readonly {
        setup.push(Request::from_args(&["READONLY"]));
    }
    if probe && setup.is_empty() {
        setup.push(Request::from_args(&["PING"]));
    }
    if !setup.is_empty() {
        timeout(limit, say(&mut stream, &setup)).await.map_err(|_| "connection setup timed out".to_string())??;
    }
    Ok(stream)
}

/// Sends the setup commands of a fresh connection and consumes their replies.
async fn say(stream: &mut NodeStream, commands: &[Request]) -> Result<(), String> {
    let mut out = Vec::new();
    for command in commands {
        out.extend_from_slice(command.frame());
    }
    stream.write_all(&out).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(1024);
    let mut scanner = ReplyScanner::default();
    for command in commands {
        let name = String::from_utf8_lossy(command.name()).into_owned();
        let frame = loop {
            if let Some(frame) = scanner.scan(&buf).map_err(|e| e.to_string())? {
                break frame;
            }
            if buf.len() > 1024 * 1024 {
                return Err(format!("{name} reply too large"));
            }
            if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err(format!("connection closed during {name}"));
            }
        };
        let reply = buf.split_to(frame.len);
        if reply.first() == Some(&b'-') {
            return Err(format!("{name} refused: {}", String::from_utf8_lossy(&reply[1..reply.len() - 2])));
        }
    }
    Ok(())
}

/// What [`Connection::poll_io`] did.
enum Io {
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
    Flushed(io::Result<()>),
}

/// A request written (or about to be) and not yet answered.
struct InFlight {
    /// `None` for an ASKING sent ahead of a request: its `+OK` is dropped.
    reply_to: Option<ReplyTo>,
    /// The request, handed back with its reply (see `Completion::request`);
    /// or a run of `parts` requests, answered by as many replies.
    request: Bytes,
    parts: u32,
    /// Offset in the connection's output stream just past this request.
    end: u64,
    /// When it was queued here, for the request timeout.
    queued_at: Instant,
    /// A health-check PING: its round trip is the node's latency.
    probe: bool,
}

struct Connection {
    stream: NodeStream,
    /// The node, named in its error replies' completions.
    addr: NodeAddr,
    read: BytesMut,
    /// Roughly the size of `read`'s allocation (its capacity when last grown).
    read_alloc: usize,
    unwritten: WriteQueue,
    scanner: ReplyScanner,
    in_flight: VecDeque<InFlight>,
    /// Bytes queued for writing, and bytes the kernel accepted, since connect.
    queued: u64,
    written: u64,
    batch: Vec<Outbound>,
    /// The node has answered at least one request on this connection.
    answered: bool,
    mode: Mode,
    /// Subscriber mode: where every frame goes.
    sink: Option<ReplyTo>,
    /// Subscriber mode: when the health-check PING still unanswered went out.
    ping_sent: Option<Instant>,
    health: Arc<Health>,
    /// The node left a request unanswered past the request timeout.
    hung: bool,
    metrics: Option<NodeMetrics>,
    /// Replies of the current read, on their way to their sessions.
    handover: Handover,
}

impl Connection {
    /// A fresh connection, with the first requests to write.
    fn new(
        stream: NodeStream,
        addr: NodeAddr,
        first: Vec<Outbound>,
        mode: Mode,
        health: Arc<Health>,
        metrics: Option<NodeMetrics>,
    ) -> Connection {
        let mut conn = Connection {
            stream,
            addr,
            read: BytesMut::with_capacity(READ_CHUNK),
            read_alloc: READ_CHUNK,
            unwritten: WriteQueue::default(),
            scanner: ReplyScanner::default(),
            in_flight: VecDeque::with_capacity(BATCH),
            queued: 0,
            written: 0,
            batch: first,
            answered: false,
            mode,
            sink: None,
            ping_sent: None,
            health,
            hung: false,
            metrics,
            handover: Handover::default(),
        };
        conn.queue_batch();
        conn
    }

    fn queue_batch(&mut self) {
        // One clock read per batch: the timeout is coarse by design.
        let now = Instant::now();
        let mut batch = std::mem::take(&mut self.batch);
        if let Some(metrics) = &self.metrics {
            let requests = requests(&batch);
            metrics.requests.inc_by(requests);
            metrics.queue.add(requests as i64);
        }
        for out in batch.drain(..) {
            if self.mode == Mode::Subscriber {
                self.unwritten.push(&out.frame);
                self.queued += out.frame.len() as u64;
                self.sink = Some(out.reply_to);
                continue;
            }
            if out.asking {
                self.append(Bytes::from_static(ASKING), None, now, 1);
            }
            // A blocking command is overdue only once its own wait is over.
            let counted_from = match out.blocks_for {
                None => now,
                Some(wait) => now.checked_add(wait).unwrap_or_else(|| now + FOR_EVER),
            };
            self.append(out.frame, Some(out.reply_to), counted_from, out.parts);
        }
        self.batch = batch;
    }

    fn append(&mut self, frame: Bytes, reply_to: Option<ReplyTo>, queued_at: Instant, parts: u32) {
        // A request behind a blocking one cannot be answered before it: its
        // clock starts no earlier.
        let queued_at = self.in_flight.back().map_or(queued_at, |before| queued_at.max(before.queued_at));
        self.unwritten.push(&frame);
        self.queued += frame.len() as u64;
        let end = self.queued;
        self.in_flight.push_back(InFlight { reply_to, request: frame, parts, end, queued_at, probe: false });
    }

    /// The read buffer was grown well past its usual size (for a long reply).
    fn read_oversized(&self) -> bool {
        self.read_alloc > 4 * READ_CHUNK
    }

    /// Has the oldest request waited longer than `limit`?
    fn overdue(&self, limit: Duration) -> bool {
        self.in_flight.front().is_some_and(|oldest| oldest.queued_at.elapsed() > limit)
    }

    /// Runs until the queue closes and what was sent is answered (`Ok`), or
    /// the connection fails (`Err`).
    async fn serve(&mut self, queue: &Mailbox<Outbound>, live: &ArcSwap<BackendSettings>) -> Result<(), String> {
        let mut closing = false;
        let mut settings = live.load_full();
        let (mut request_timeout, mut health_check, mut max_in_flight) = self.mode.limits(&settings);
        // Overdue requests are looked for a few times per timeout period, and
        // a PING goes out once per health-check period.
        let period = |timeout: Duration, ping: Option<Duration>| ping.map_or(timeout / 4, |p| p.min(timeout / 4));
        let mut check = tokio::time::interval(period(request_timeout, health_check));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_ping = Instant::now();
        loop {
            if closing && self.in_flight.is_empty() {
                return Ok(());
            }
            // A buffer grown for a long reply is not kept for the replies
            // after it: one of them queued for a client that does not read
            // (written from here, not copied) would keep all of it alive.
            if self.read_oversized() && self.read.len() < READ_CHUNK && self.scanner.wanted() <= self.read.len() {
                let mut fresh = BytesMut::with_capacity(READ_CHUNK);
                fresh.extend_from_slice(&self.read);
                self.read = fresh;
                self.read_alloc = READ_CHUNK;
            }
            // A long string whose header is in gets its room at once (up to
            // MAX_RESERVE at a time, whatever the node announces): grown chunk
            // by chunk, each step would copy what had arrived.
            let free = self.read.capacity() - self.read.len();
            let wanted = self.scanner.wanted().saturating_sub(self.read.len()).min(MAX_RESERVE);
            if free < MIN_READ || free < wanted {
                self.read.reserve(READ_CHUNK.max(wanted));
                self.read_alloc = self.read.capacity();
            }
            let taking = !closing && self.unwritten.len() < MAX_UNWRITTEN && self.in_flight.len() < max_in_flight;
            let (stream, read, unwritten) = (&mut self.stream, &mut self.read, &mut self.unwritten);
            tokio::select! {
                biased;
                io = poll_fn(|cx| Connection::poll_io(stream, read, unwritten, cx)) => match io {
                    Io::Read(Ok(0)) => return Err("connection closed by the node".into()),
                    Io::Read(Ok(_)) => self.complete_replies()?,
                    Io::Wrote(Ok(0)) => return Err("connection closed while writing".into()),
                    Io::Wrote(Ok(n)) => self.written += n as u64,
                    Io::Flushed(Ok(())) => {}
                    Io::Read(Err(e)) | Io::Wrote(Err(e)) | Io::Flushed(Err(e)) => return Err(e.to_string()),
                },
                taken = poll_fn(|cx| queue.poll_take(cx, &mut self.batch)), if taking => {
                    // A shared connection whose node left the cluster answers
                    // what it carries first; a client's own closes at once
                    // (that is how the node learns the client left).
                    closing = !taken;
                    if closing && self.mode.one_shot() {
                        return Ok(());
                    }
                    self.queue_batch();
                }
                now = check.tick() => {
                    // A reload's new timeouts and limits apply from here on.
                    if !Arc::ptr_eq(&settings, &live.load()) {
                        settings = live.load_full();
                        (request_timeout, health_check, max_in_flight) = self.mode.limits(&settings);
                        check = tokio::time::interval_at(now + period(request_timeout, health_check), period(request_timeout, health_check));
                        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                    let ping_overdue = |limit| self.ping_sent.is_some_and(|sent| now - sent > limit);
                    if self.overdue(request_timeout) || ping_overdue(request_timeout) {
                        self.hung = true;
                        return Err(format!("no reply within {} ms", request_timeout.as_millis()));
                    }
                    if health_check.is_some_and(|every| now - last_ping >= every) && !closing {
                        last_ping = now;
                        if self.sink.is_some() {
                            if self.ping_sent.is_none() {
                                self.ping_sent = Some(now);
                                self.unwritten.buffer().extend_from_slice(PING);
                                self.queued += PING.len() as u64;
                            }
                        } else {
                            self.append(Bytes::from_static(PING), None, now, 1);
                            if let Some(ping) = self.in_flight.back_mut() {
                                ping.probe = true;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reads replies, before writing what waits to be written (or flushing
    /// what TLS still holds): the two directions of one socket, polled as
    /// one future since a TLS stream cannot be split without a lock.
    fn poll_io(
        stream: &mut NodeStream,
        read: &mut BytesMut,
        unwritten: &mut WriteQueue,
        cx: &mut Context<'_>,
    ) -> Poll<Io> {
        if let Poll::Ready(result) = poll_read_buf(Pin::new(&mut *stream), cx, read) {
            return Poll::Ready(Io::Read(result));
        }
        if !unwritten.is_empty() {
            return poll_write_buf(Pin::new(stream), cx, unwritten).map(Io::Wrote);
        }
        if stream.wants_flush() {
            return Pin::new(stream).poll_flush(cx).map(Io::Flushed);
        }
        Poll::Pending
    }

    /// Hands every complete reply in the read buffer to its request.
    fn complete_replies(&mut self) -> Result<(), String> {
        let result = self.take_replies();
        // Even after an unreadable reply: those before it are answers.
        self.handover.flush();
        // A length over the limit is refused as soon as its header is read.
        if result.is_ok() && self.read.len().max(self.scanner.wanted()) > MAX_REPLY {
            return Err("reply larger than 1 GB".into());
        }
        result
    }

    fn take_replies(&mut self) -> Result<(), String> {
        // One clock read for every reply of this read.
        let mut now = None;
        // Replies to the oldest request (a run of parts) scanned and not yet
        // taken off the buffer: how many, and their length. A run is handed
        // over whole when it can be, and what has come of it at the end of a
        // read (or before a push message) otherwise.
        let (mut got, mut len) = (0, 0);
        loop {
            let frame = match self.scanner.scan(&self.read[len..]) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    // Those before it are answers all the same.
                    let _ = self.answer(got, len, &mut now);
                    return Err(format!("unreadable reply: {e}"));
                }
            };
            if self.sink.is_some() {
                let reply = self.take_reply(frame.len);
                self.answered = true;
                // Our PING's answer, subscribed (RESP2) or not: nobody else
                // sends PING on this connection (slotgate answers the client's).
                if self.ping_sent.is_some()
                    && (reply.starts_with(b"*2\r\n$4\r\npong\r\n") || &reply[..] == b"+PONG\r\n")
                {
                    self.ping_sent = None;
                    continue;
                }
                if let Some(sink) = &self.sink {
                    sink.clone().send(Reply::Frame(reply), Bytes::new());
                }
                continue;
            }
            if frame.push {
                self.answer(got, len, &mut now)?;
                (got, len) = (0, 0);
                bytes::Buf::advance(&mut self.read, frame.len);
                continue;
            }
            let Some(parts) = self.in_flight.front().map(|oldest| oldest.parts) else {
                return Err("reply without a request".into());
            };
            (got, len) = (got + 1, len + frame.len);
            if got == parts {
                self.answer(got, len, &mut now)?;
                (got, len) = (0, 0);
            }
        }
        self.answer(got, len, &mut now)
    }

    /// The reply of `len` bytes at the front of the read buffer, taken off it.
    fn take_reply(&mut self, len: usize) -> Bytes {
        // A reply much smaller than the buffer it sits in gets its own
        // bytes: queued for a slow client, it would keep all of it alive.
        if self.read_oversized() && len < self.read_alloc / 4 {
            let copy = Bytes::copy_from_slice(&self.read[..len]);
            bytes::Buf::advance(&mut self.read, len);
            copy
        } else {
            self.read.split_to(len).freeze()
        }
    }

    /// Hands the `got` replies (`len` bytes) at the front of the read buffer
    /// to the oldest request: all its replies, or the first of a run's.
    fn answer(&mut self, got: u32, len: usize, now: &mut Option<Instant>) -> Result<(), String> {
        if got == 0 {
            return Ok(());
        }
        let Some(oldest) = self.in_flight.front_mut() else {
            return Err("reply without a request".into());
        };
        let answered = if got < oldest.parts {
            // The rest of the run comes in a later read: it stays, shorter.
            // (slotgate wrote its frames, as the parser reads requests.)
            let Some(frames) = Request::frames_len(&oldest.request, got as usize) else {
                return Err("a run of requests does not read back".into());
            };
            let request = oldest.request.split_to(frames);
            let reply_to = oldest.reply_to.clone();
            if let Some(rest) = &mut oldest.reply_to {
                rest.seq += u64::from(got);
            }
            oldest.parts -= got;
            InFlight { reply_to, request, parts: got, ..*oldest }
        } else {
            match self.in_flight.pop_front() {
                Some(oldest) => oldest,
                None => return Err("reply without a request".into()),
            }
        };
        let reply = self.take_reply(len);
        self.answered = true;
        if answered.probe {
            let micros = answered.queued_at.elapsed().as_micros().clamp(1, u128::from(u64::MAX)) as u64;
            self.health.latency_us.store(micros, Ordering::Relaxed);
        }
        if let Some(reply_to) = answered.reply_to {
            if let Some(metrics) = &self.metrics {
                let now = *now.get_or_insert_with(Instant::now);
                metrics.queue.sub(i64::from(got));
                metrics.latency.observe((now.saturating_duration_since(answered.queued_at)).as_secs_f64());
            }
            self.handover.push(reply_to, reply, answered.request, got, &self.addr);
        }
        Ok(())
    }

    /// Errors for everything still pending: written requests may have run.
    fn fail_in_flight(&mut self, addr: &NodeAddr, cause: &Arc<str>) {
        if let Some(sink) = self.sink.take() {
            fail(sink, Bytes::new(), 1, addr, cause, Retry::NotSafe);
        }
        let (written, hung) = (self.written, self.hung);
        // Written whole, a request may have run; written in part or not at
        // all, it has not (a node runs only whole requests).
        let retry = |end: u64| match (end <= written, hung) {
            (false, _) => Retry::Safe,
            (true, false) => Retry::NotSafe,
            (true, true) => Retry::TimedOut,
        };
        for entry in self.in_flight.drain(..) {
            let Some(reply_to) = entry.reply_to else { continue };
            if let Some(metrics) = &self.metrics {
                metrics.queue.sub(i64::from(entry.parts));
                metrics.errors.inc_by(u64::from(entry.parts));
            }
            let start = entry.end - entry.request.len() as u64;
            if entry.parts == 1 || entry.end <= written || start >= written {
                fail(reply_to, entry.request, entry.parts, addr, cause, retry(entry.end));
                continue;
            }
            // A run written in part: each of its requests by itself.
            let frames = Request::split_frames(entry.request.clone());
            if frames.len() != entry.parts as usize {
                fail(reply_to, entry.request, entry.parts, addr, cause, retry(entry.end));
                continue;
            }
            let (mut seq, mut end) = (reply_to.seq, start);
            for frame in frames {
                end += frame.len() as u64;
                let one = ReplyTo { session: reply_to.session.clone(), seq };
                fail(one, frame, 1, addr, cause, retry(end));
                seq += 1;
            }
        }
    }
}
