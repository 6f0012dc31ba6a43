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
//! connects (and says `HELLO 3` for a RESP3 connection), and reconnects with
//! backoff after a failure, failing requests at once while the node is down.
//!
//! # Cancel safety
//! The `select!` arms use `read_buf`, `write_buf` and `recv_many`, each of
//! which either completes or leaves no effect when another arm wins.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until, timeout};

use super::{BackendSettings, Mailbox, NodeError, Outbound, Reply, ReplyTo, Retry};
use crate::cluster::NodeAddr;
use crate::resp::{Protocol, ReplyScanner, Request};

const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
/// Read in chunks of this size, reserving again when less than `MIN_READ` is free.
const READ_CHUNK: usize = 64 * 1024;
const MIN_READ: usize = 8 * 1024;
/// Stop taking requests while this much is waiting to be written.
const MAX_UNWRITTEN: usize = 4 * 1024 * 1024;
/// The largest single reply accepted from a node (Redis values stop at 512 MB).
const MAX_REPLY: usize = 1024 * 1024 * 1024;
/// Room for requests taken from the queue at once (it grows when needed).
const BATCH: usize = 512;

/// Starts the driver task of one connection and returns its queue; closing
/// the queue ends the task.
///
/// `request_timeout` is `None` for a connection that may legitimately wait
/// forever (a client's own connection for blocking commands).
pub(super) fn spawn(
    addr: NodeAddr,
    protocol: Protocol,
    settings: Arc<BackendSettings>,
    mode: Mode,
) -> Arc<Mailbox<Outbound>> {
    let queue = Arc::new(Mailbox::default());
    tokio::spawn(run(addr, protocol, queue.clone(), settings, mode));
    queue
}

/// What a connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Many clients' requests: one reply per request, in order; a node
    /// silent for `request_timeout` is taken as hung; reconnects as needed.
    Shared { request_timeout: Duration },
    /// One client's own connection (its transaction, its blocking command):
    /// replies in order, no timeout (BLPOP 0 waits for ever), and never
    /// reopened: what the node holds for it (MULTI, WATCH) dies with it, so
    /// once it breaks every later request fails.
    Dedicated,
    /// One client's subscribed connection: confirmations and messages come
    /// as the node pleases, so every frame goes to the client; never reopened.
    Subscriber,
}

impl Mode {
    fn request_timeout(self) -> Option<Duration> {
        match self {
            Mode::Shared { request_timeout } => Some(request_timeout),
            Mode::Dedicated | Mode::Subscriber => None,
        }
    }

    /// Does one break end the connection for good?
    fn one_shot(self) -> bool {
        !matches!(self, Mode::Shared { .. })
    }
}

async fn run(
    addr: NodeAddr,
    protocol: Protocol,
    queue: Arc<Mailbox<Outbound>>,
    settings: Arc<BackendSettings>,
    mode: Mode,
) {
    let mut failures: u32 = 0;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        // Connect on demand: wait for work first.
        if !poll_fn(|cx| queue.poll_take(cx, &mut batch)).await {
            return;
        }
        let stream = match connect(&addr, protocol, settings.connect_timeout).await {
            Ok(stream) => stream,
            Err(cause) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures % 100 == 0 {
                    tracing::warn!(node = %addr, %cause, attempts = failures, "cannot connect to node");
                }
                let cause: Arc<str> = cause.into();
                fail_all(&mut batch, &addr, &cause);
                if mode.one_shot() {
                    return close_for_good(&queue, &addr, &cause);
                }
                if !fail_while_backing_off(&queue, &mut batch, &addr, &cause, backoff(failures)).await {
                    return;
                }
                continue;
            }
        };
        let mut conn = Connection::new(stream, std::mem::take(&mut batch), mode);
        let result = conn.serve(&queue, mode.request_timeout()).await;
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
        if failures > 0 && !fail_while_backing_off(&queue, &mut batch, &addr, &cause, backoff(failures)).await {
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
) -> bool {
    let until = Instant::now() + gap;
    loop {
        tokio::select! {
            () = sleep_until(until) => return true,
            taken = poll_fn(|cx| queue.poll_take(cx, batch)) => {
                if !taken {
                    return false;
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
        fail(out.reply_to, addr, cause, Retry::Safe);
    }
}

fn fail_all(batch: &mut Vec<Outbound>, addr: &NodeAddr, cause: &Arc<str>) {
    for out in batch.drain(..) {
        fail(out.reply_to, addr, cause, Retry::Safe);
    }
}

/// 100 ms after the first failure, doubling up to 1 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100).saturating_mul(1 << failures.clamp(1, 5).saturating_sub(1)).min(Duration::from_secs(1))
}

fn fail(reply_to: ReplyTo, addr: &NodeAddr, cause: &Arc<str>, retry: Retry) {
    reply_to.send(Reply::Failed(NodeError { addr: addr.clone(), cause: cause.clone(), retry }));
}

async fn connect(addr: &NodeAddr, protocol: Protocol, limit: Duration) -> Result<TcpStream, String> {
    let mut stream = timeout(limit, TcpStream::connect(addr.as_str()))
        .await
        .map_err(|_| format!("connect timed out after {limit:?}"))?
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    if protocol == Protocol::Resp3 {
        timeout(limit, hello3(&mut stream)).await.map_err(|_| "HELLO 3 timed out".to_string())??;
    }
    Ok(stream)
}

/// Switches a fresh connection to RESP3 and consumes the HELLO reply.
async fn hello3(stream: &mut TcpStream) -> Result<(), String> {
    stream.write_all(Request::from_args(&["HELLO", "3"]).frame()).await.map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(1024);
    let mut scanner = ReplyScanner::default();
    loop {
        if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed during HELLO 3".into());
        }
        if let Some(frame) = scanner.scan(&buf).map_err(|e| e.to_string())? {
            if buf.first() == Some(&b'-') {
                return Err(format!("HELLO 3 refused: {}", String::from_utf8_lossy(&buf[1..frame.len - 2])));
            }
            return Ok(());
        }
        if buf.len() > 1024 * 1024 {
            return Err("HELLO 3 reply too large".into());
        }
    }
}

/// A request written (or about to be) and not yet answered.
struct InFlight {
    /// `None` for an ASKING sent ahead of a request: its `+OK` is dropped.
    reply_to: Option<ReplyTo>,
    /// Offset in the connection's output stream just past this request.
    end: u64,
    /// When it was queued here, for the request timeout.
    queued_at: Instant,
}

struct Connection {
    stream: TcpStream,
    read: BytesMut,
    unwritten: BytesMut,
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
}

impl Connection {
    /// A fresh connection, with the first requests to write.
    fn new(stream: TcpStream, first: Vec<Outbound>, mode: Mode) -> Connection {
        let mut conn = Connection {
            stream,
            read: BytesMut::with_capacity(READ_CHUNK),
            unwritten: BytesMut::with_capacity(READ_CHUNK),
            scanner: ReplyScanner::default(),
            in_flight: VecDeque::with_capacity(BATCH),
            queued: 0,
            written: 0,
            batch: first,
            answered: false,
            mode,
            sink: None,
        };
        conn.queue_batch();
        conn
    }

    fn queue_batch(&mut self) {
        // One clock read per batch: the timeout is coarse by design.
        let now = Instant::now();
        let mut batch = std::mem::take(&mut self.batch);
        for out in batch.drain(..) {
            if self.mode == Mode::Subscriber {
                self.unwritten.extend_from_slice(&out.frame);
                self.queued += out.frame.len() as u64;
                self.sink = Some(out.reply_to);
                continue;
            }
            if out.asking {
                self.append(ASKING, None, now);
            }
            self.append(&out.frame, Some(out.reply_to), now);
        }
        self.batch = batch;
    }

    fn append(&mut self, frame: &[u8], reply_to: Option<ReplyTo>, queued_at: Instant) {
        self.unwritten.extend_from_slice(frame);
        self.queued += frame.len() as u64;
        self.in_flight.push_back(InFlight { reply_to, end: self.queued, queued_at });
    }

    /// Has the oldest request waited longer than `limit`?
    fn overdue(&self, limit: Duration) -> bool {
        self.in_flight.front().is_some_and(|oldest| oldest.queued_at.elapsed() > limit)
    }

    /// Runs until the queue closes and what was sent is answered (`Ok`), or
    /// the connection fails (`Err`).
    async fn serve(&mut self, queue: &Mailbox<Outbound>, request_timeout: Option<Duration>) -> Result<(), String> {
        let mut closing = false;
        // Checked a few times per timeout period, only while requests wait.
        let mut check = tokio::time::interval(request_timeout.unwrap_or(Duration::from_secs(3600)) / 4);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if closing && self.in_flight.is_empty() {
                return Ok(());
            }
            if self.read.capacity() - self.read.len() < MIN_READ {
                self.read.reserve(READ_CHUNK);
            }
            let (mut reader, mut writer) = self.stream.split();
            tokio::select! {
                biased;
                read = reader.read_buf(&mut self.read) => match read {
                    Ok(0) => return Err("connection closed by the node".into()),
                    Ok(_) => self.complete_replies()?,
                    Err(e) => return Err(e.to_string()),
                },
                wrote = writer.write_buf(&mut self.unwritten), if !self.unwritten.is_empty() => match wrote {
                    Ok(0) => return Err("connection closed while writing".into()),
                    Ok(n) => self.written += n as u64,
                    Err(e) => return Err(e.to_string()),
                },
                taken = poll_fn(|cx| queue.poll_take(cx, &mut self.batch)), if !closing && self.unwritten.len() < MAX_UNWRITTEN => {
                    // A shared connection whose node left the cluster answers
                    // what it carries first; a client's own closes at once
                    // (that is how the node learns the client left).
                    closing = !taken;
                    if closing && self.mode.one_shot() {
                        return Ok(());
                    }
                    self.queue_batch();
                }
                _ = check.tick(), if request_timeout.is_some() && !self.in_flight.is_empty() => {
                    if let Some(limit) = request_timeout.filter(|&limit| self.overdue(limit)) {
                        return Err(format!("no reply within {} ms", limit.as_millis()));
                    }
                }
            }
        }
    }

    /// Hands every complete reply in the read buffer to its request.
    fn complete_replies(&mut self) -> Result<(), String> {
        let result = self.take_replies();
        if result.is_ok() && self.read.len() > MAX_REPLY {
            return Err("reply larger than 1 GB".into());
        }
        result
    }

    fn take_replies(&mut self) -> Result<(), String> {
        while let Some(frame) = self.scanner.scan(&self.read).map_err(|e| format!("unreadable reply: {e}"))? {
            let reply = self.read.split_to(frame.len).freeze();
            if let Some(sink) = &self.sink {
                self.answered = true;
                sink.clone().send(Reply::Frame(reply));
                continue;
            }
            if frame.push {
                continue;
            }
            let Some(entry) = self.in_flight.pop_front() else {
                return Err("reply without a request".into());
            };
            self.answered = true;
            if let Some(reply_to) = entry.reply_to {
                reply_to.send(Reply::Frame(reply));
            }
        }
        Ok(())
    }

    /// Errors for everything still pending: written requests may have run.
    fn fail_in_flight(&mut self, addr: &NodeAddr, cause: &Arc<str>) {
        if let Some(sink) = self.sink.take() {
            fail(sink, addr, cause, Retry::NotSafe);
        }
        for entry in self.in_flight.drain(..) {
            let retry = if entry.end <= self.written { Retry::NotSafe } else { Retry::Safe };
            if let Some(reply_to) = entry.reply_to {
                fail(reply_to, addr, cause, retry);
            }
        }
    }
}
