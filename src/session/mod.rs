//! One client, end to end: read a batch of requests, route each, await the
//! replies in order, write them back in batches. Local commands and the
//! client's connection state live here too; node socket I/O does not.
//!
//! # Ordering
//! Replies leave strictly in request order ([`pending`]). A client's requests
//! to one node share one node connection, so they run in order there. When
//! the slot map changes, a session first waits for its in-flight requests
//! before routing new ones with the new map, so a request routed by the new
//! map can never overtake an earlier one still travelling by the old map.
//! A change of protocol (HELLO, RESET) switches node connections and waits
//! the same way. While a request waits for a retry (TRYAGAIN, CLUSTERDOWN, an
//! unreachable node) no new request is routed, retries go in request order,
//! and a request is not retried at all when a later one to the same slot has
//! already gone out: the client then gets the cluster's own error.
//!
//! A client of `tls_listen` is served by the same loop, through the halves
//! of its TLS stream ([`socket`]); a plain client's halves borrow its TCP
//! stream, with no lock between them.
//!
//! # Cancel safety
//! The loop's `select!` arms are `recv`, `write_buf` (or `flush`), a
//! readiness-then-`read_buf` future and a timer; none loses data when
//! another arm wins.

mod acl;
mod clients;
mod dispatch;
mod local;
mod logins;
// Public for benches/request_path.rs, which keeps replies in order with it.
pub mod pending;
mod pubsub;
mod scripts;
mod socket;
mod transaction;
mod wait;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until};
use tokio_rustls::server::TlsStream;

use crate::backend::{Completion, Dedicated, Mailbox, Pool, Routes};
use crate::command::{KeyPositions, LookupCache};
use crate::fanout;
use crate::resp::{Limits, Protocol, Request, RequestParser};
use crate::write_queue::WriteQueue;
pub use acl::{AclError, Password, User, Users};
pub use clients::Clients;
pub use logins::FailedLogins;
use pending::{Pending, Ready};
pub use scripts::Scripts;
use socket::{ClientRead, ClientWrite};
use transaction::{Conn, Transaction};

/// Read at least this much at a time, growing to `MAX_READ` for busy clients.
const MIN_READ: usize = 4 * 1024;
const MAX_READ: usize = 64 * 1024;
/// The most one read reserves ahead for a large argument still arriving.
const MAX_RESERVE: usize = 1024 * 1024;
/// Stop reading requests while this much output waits for a slow reader.
const MAX_UNSENT: usize = 64 * 1024 * 1024;
/// Requests one client may have handled before the worker's other clients
/// get their turn. A worker serves many clients on one thread: without a
/// bound, a client with megabytes of pipelined requests buffered would keep
/// all the others waiting until every one of them was routed.
const TURN: usize = 256;

/// How sessions behave.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// MOVED/ASK hops one request may take before the redirect is passed on.
    pub max_redirects: u8,
    /// How long a request is retried after TRYAGAIN, CLUSTERDOWN or an
    /// unreachable node before that error is passed on.
    pub retry_timeout: Duration,
    /// Requests in flight per client before slotgate stops reading from it.
    pub max_pipeline: usize,
    /// Parts one command may be split into (`max_fanout`).
    pub max_fanout: usize,
    /// Keep per-command metrics (the metrics endpoint is on).
    pub metrics: bool,
    pub limits: Limits,
    /// Who clients may log in as (`default` first of all), and what each may do.
    pub users: Arc<Users>,
    /// Bytes waiting to be written beyond which a client is closed, for
    /// ordinary and subscribed clients; 0: no limit.
    pub output_limit_normal: usize,
    pub output_limit_pubsub: usize,
    /// Wrong passwords an address may give in a window (`max_auth_failures`).
    pub max_auth_failures: u32,
}

/// What the sessions of one worker share: its node connections and settings.
#[derive(Debug)]
pub struct Context {
    pub pool: Pool,
    /// The settings in force; a reload replaces them (see [`crate::live`]).
    pub settings: Arc<ArcSwap<SessionSettings>>,
    /// Every client of this slotgate, across workers.
    pub clients: Arc<Clients>,
    /// Scripts seen by any worker, to heal NOSCRIPT.
    pub scripts: Arc<Scripts>,
    /// Failed logins by client address, across workers.
    pub failed_logins: Arc<FailedLogins>,
}

/// A client's connection state, as CLIENT and HELLO see it.
#[derive(Debug)]
struct Client {
    id: u64,
    protocol: Protocol,
    name: Option<Bytes>,
    lib_name: Option<Bytes>,
    lib_ver: Option<Bytes>,
}

struct Session {
    ctx: Arc<Context>,
    /// The settings this session goes by, taken from `ctx` before each batch.
    settings: Arc<SessionSettings>,
    /// Where they come from: a cache of `ctx.settings` that sees a reload's
    /// new settings with one atomic load, not a reference count.
    settings_source: arc_swap::Cache<Arc<ArcSwap<SessionSettings>>, Arc<SessionSettings>>,
    client: Client,
    parser: RequestParser,
    /// The routes new requests are sent by; see "Ordering" above.
    routes: Arc<Routes>,
    /// A reload may have changed `read_from`: routes are taken again, the
    /// same way as for a new slot map.
    routes_stale: bool,
    pending: Pending,
    /// Requests handed to node connections and not yet answered.
    in_flight: usize,
    /// Requests waiting for a retry after a backoff, in request order.
    retries: VecDeque<Resend>,
    /// The protocol changed: new requests wait until those in flight are
    /// answered, since they travel on another node connection.
    protocol_switch: bool,
    /// Where node connections leave this session's replies.
    mailbox: Arc<Mailbox<Completion>>,
    /// The connection the last request went on; switching waits for
    /// everything in flight (see "Ordering").
    conn: Conn,
    /// This client's own node connection and its protocol, kept for reuse.
    dedicated: Option<(Dedicated, Protocol)>,
    tx: Transaction,
    subs: pubsub::Subscriptions,
    /// A request that waits for the requests in flight before it can go
    /// (it needs another connection than theirs).
    parked: Option<Request>,
    /// Stop taking requests: QUIT, a protocol error, or input ended.
    closing: bool,
    /// The client will send nothing more (it shut down its side).
    eof: bool,
    /// Scratch space reused for every request.
    commands: LookupCache,
    keys: KeyPositions,
    local: BytesMut,
    /// Where split requests' parts are written (empty until the first).
    parts_buf: BytesMut,
    /// This client's entry in the registry (CLIENT LIST).
    registered: clients::Registered,
    /// CLIENT REPLY OFF or SKIP.
    silence: Silence,
    /// CLIENT KILL: the session ends now.
    killed: bool,
    /// The user it is logged in as; `None` until it AUTHs (when the default
    /// user needs a password).
    user: Option<Arc<User>>,
    /// The last command's name, for CLIENT LIST.
    last_command: &'static str,
    /// The slot of the client's last write, whose master WAIT asks.
    last_write: Option<crate::cluster::Slot>,
    /// The command being handled, for its tally (`None`: unknown to slotgate).
    last_known: Option<&'static crate::command::Command>,
    /// Per-command metrics are kept (the metrics endpoint is on).
    metrics: Option<&'static crate::metrics::Metrics>,
    /// When the session began, and when the current batch of requests was
    /// read (microseconds since): one clock read per batch, not per command.
    began: Instant,
    batch_read_at_us: u32,
    /// Reads sent so far: `read_from = "round-robin"` takes the nodes in turn.
    reads: u64,
}

/// Which replies the client asked not to get (CLIENT REPLY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Silence {
    None,
    /// OFF: none until ON.
    Off,
    /// SKIP: the command after SKIP itself (2 while SKIP is handled).
    Skip(u8),
}

/// Serves one client until it disconnects or slotgate closes it.
pub async fn run(mut stream: TcpStream, ctx: Arc<Context>) {
    let _ = stream.set_nodelay(true);
    let addrs = (stream.peer_addr().ok(), stream.local_addr().ok());
    let (reader, writer) = stream.split();
    serve(reader, writer, addrs, ctx).await;
}

/// Serves one client of `tls_listen`, its handshake done.
pub async fn run_tls(stream: TlsStream<TcpStream>, ctx: Arc<Context>) {
    let tcp = stream.get_ref().0;
    let _ = tcp.set_nodelay(true);
    let addrs = (tcp.peer_addr().ok(), tcp.local_addr().ok());
    let (reader, writer) = tokio::io::split(stream);
    serve(reader, writer, addrs, ctx).await;
}

/// The session loop, over the two halves of the client's socket; `addrs`
/// are its peer's and its own address, for CLIENT LIST.
async fn serve<R: ClientRead, W: ClientWrite>(
    mut reader: R,
    mut writer: W,
    (peer, local): (Option<SocketAddr>, Option<SocketAddr>),
    ctx: Arc<Context>,
) {
    let mailbox = Arc::new(Mailbox::default());
    let mut arrived = Vec::new();
    let registered = ctx.clients.register(peer, local, mailbox.clone());
    let mut session = Session::new(ctx, mailbox.clone(), registered);
    // Accepted just before slotgate began to stop: drained like the others.
    session.eof = session.ctx.clients.draining();
    let span = tracing::debug_span!("client", client.id = session.client.id);
    let _enter = span.enter();
    let mut input = BytesMut::new();
    let mut output = WriteQueue::default();
    let mut read_size = MIN_READ;
    // The read buffer was grown for a large request.
    let mut large_input = false;
    let mut turn = TURN;
    // Written, but perhaps still in the stream's TLS records: flush next.
    let mut unflushed = false;
    loop {
        session.refresh_settings();
        if session.killed {
            break;
        }
        turn -= session.process_input(&mut input, turn);
        if large_input && input.is_empty() {
            // Made for a large request: not kept for the small ones after it.
            input = BytesMut::new();
            large_input = false;
        }
        // Requests left unparsed for lack of turn wait for the next one
        // (which also sees the end of input, if that is what is left).
        let more = turn == 0 && session.wants_input();
        if turn == 0 {
            tokio::task::yield_now().await;
            turn = TURN;
        }
        session.take_ready(&mut output);
        if session.in_flight == 0 && session.parts_buf.capacity() > 0 {
            // Kept for the split requests of a pipeline, not for an idle client.
            session.parts_buf = BytesMut::new();
        }
        if session.finished() && output.is_empty() {
            break;
        }
        if session.output_over_limit(output.len()) {
            break;
        }
        // A blocked client is still read from (within limits), so that
        // slotgate notices at once when it goes away.
        let blocked = session.blocked() && input.len() < MAX_READ;
        let reading = !more && !session.eof && (session.wants_input() || blocked) && output.len() < MAX_UNSENT;
        // Retries go in request order: the oldest waiting one sets the time;
        // lost subscribed connections are opened again too.
        let retry_at = session.retries.front().map(|resend| resend.at).into_iter().chain(session.subs.reopen_at).min();
        // A large argument is read in steps, so a length header alone
        // reserves at most MAX_RESERVE, whatever it announces.
        let wanted = session.parser.wanted().saturating_sub(input.len()).min(MAX_RESERVE);
        large_input |= reading && wanted > read_size;
        tokio::select! {
            biased;
            _ = std::future::poll_fn(|cx| mailbox.poll_take(cx, &mut arrived)) => {
                session.complete_all(&mut arrived);
                if session.killed {
                    break;
                }
                if session.in_flight > 0 {
                    // Other nodes' replies to this batch are often already
                    // read and queued behind us: let their connections run
                    // first, so the client gets one write instead of several.
                    tokio::task::yield_now().await;
                    if mailbox.try_take(&mut arrived) {
                        session.complete_all(&mut arrived);
                        if session.killed {
                            break;
                        }
                    }
                }
            }
            // (`W::BUFFERS` is a constant: the plain path never flushes.)
            wrote = async {
                match W::BUFFERS && output.is_empty() {
                    true => writer.flush().await.map(|()| None),
                    false => writer.write_buf(&mut output).await.map(Some),
                }
            }, if !output.is_empty() || (W::BUFFERS && unflushed) => match wrote {
                Ok(Some(n)) if n > 0 => {
                    if let Some(metrics) = session.metrics {
                        metrics.client_bytes_sent.inc_by(n as u64);
                    }
                    unflushed = W::BUFFERS;
                }
                Ok(None) => unflushed = false,
                _ => break,
            },
            read = async {
                // Idle clients hold no read buffer until they have something to say.
                if input.capacity() == input.len() {
                    reader.readable().await?;
                }
                input.reserve(read_size.max(wanted));
                reader.read_buf(&mut input).await
            }, if reading => match read {
                // A blocked client that leaves frees its node connection at
                // once; otherwise requests already received are still answered.
                Ok(0) if session.blocked() => break,
                Ok(0) => session.eof = true,
                Ok(n) => {
                    if let Some(metrics) = session.metrics {
                        metrics.client_bytes_received.inc_by(n as u64);
                    }
                    if n >= read_size {
                        read_size = (read_size * 2).min(MAX_READ);
                    }
                }
                Err(_) => break,
            },
            () = std::future::ready(()), if more => {}
            // select! builds every branch's future even when disabled: only
            // make a timer when a retry waits.
            () = async { if let Some(at) = retry_at { sleep_until(at).await } }, if retry_at.is_some() => {
                session.retry_due();
                session.resubscribe_due();
            }
        }
    }
    drop(mailbox.close());
    let _ = writer.shutdown().await;
}

impl Session {
    fn new(ctx: Arc<Context>, mailbox: Arc<Mailbox<Completion>>, registered: clients::Registered) -> Session {
        let id = registered.handle.id;
        let routes = ctx.pool.routes();
        let mut settings_source = arc_swap::Cache::new(ctx.settings.clone());
        let settings = settings_source.load().clone();
        let user = settings.users.without_auth();
        Session {
            client: Client { id, protocol: Protocol::Resp2, name: None, lib_name: None, lib_ver: None },
            parser: {
                let mut parser = RequestParser::new(settings.limits);
                parser.set_unauthenticated(user.is_none());
                parser
            },
            routes,
            routes_stale: false,
            pending: Pending::default(),
            in_flight: 0,
            retries: VecDeque::new(),
            protocol_switch: false,
            mailbox,
            conn: Conn::Shared,
            dedicated: None,
            tx: Transaction::default(),
            subs: pubsub::Subscriptions::default(),
            parked: None,
            closing: false,
            eof: false,
            commands: LookupCache::default(),
            keys: KeyPositions::new(),
            parts_buf: BytesMut::new(),
            local: BytesMut::new(),
            registered,
            silence: Silence::None,
            killed: false,
            user,
            last_command: "NULL",
            last_write: None,
            last_known: None,
            metrics: settings.metrics.then(crate::metrics::get),
            began: Instant::now(),
            batch_read_at_us: 0,
            reads: 0,
            settings,
            settings_source,
            ctx,
        }
    }

    /// Takes the settings in force, if a reload has changed them. A client
    /// that has logged in stays logged in, as in Redis when requirepass
    /// changes; new limits apply from the next request.
    fn refresh_settings(&mut self) {
        let current = self.settings_source.load();
        if Arc::ptr_eq(current, &self.settings) {
            return;
        }
        self.settings = current.clone();
        self.parser.set_limits(self.settings.limits);
        self.routes_stale = true;
        // The user's new rules apply from now on; a user that is gone or
        // disabled is logged out and closed, as ACL DELUSER does in Redis.
        if let Some(user) = &self.user {
            match self.settings.users.get(user.name.as_bytes()) {
                Some(now) if now.enabled => self.user = Some(now.clone()),
                _ => {
                    tracing::info!(user = %user.name, "closing a client whose user a reload removed or disabled");
                    self.killed = true;
                }
            }
        }
    }

    /// Whether new requests may be routed now (see "Ordering"): not while
    /// a retry waits, nor across a change of slot map or of protocol before
    /// everything in flight is answered.
    fn may_route(&mut self) -> bool {
        if !self.retries.is_empty() {
            return false;
        }
        let map_changed = self.routes_stale || self.routes.version() != self.ctx.pool.topology().version();
        if !(map_changed || self.protocol_switch) {
            return true;
        }
        if self.in_flight > 0 {
            return false;
        }
        self.protocol_switch = false;
        if map_changed {
            self.routes = self.ctx.pool.routes();
            self.routes_stale = false;
        }
        true
    }

    fn wants_input(&mut self) -> bool {
        !self.closing
            && self.pending.len() < self.settings.max_pipeline
            && (self.parked.is_none() || self.in_flight == 0)
            && self.may_route()
    }

    /// A client that does not read what it gets is closed past its output
    /// limit, like Redis's client-output-buffer-limit: said once, counted.
    fn output_over_limit(&self, unsent: usize) -> bool {
        let limit = match self.subs.active() {
            true => self.settings.output_limit_pubsub,
            false => self.settings.output_limit_normal,
        };
        if limit == 0 || unsent <= limit {
            return false;
        }
        tracing::info!(unsent, limit, "closing a client that does not read: output buffer over its limit");
        crate::metrics::get().output_limit_closed.inc();
        true
    }

    fn finished(&self) -> bool {
        self.closing && self.pending.is_empty()
    }

    /// Routes up to `most` complete requests in `input`, as far as limits
    /// allow; returns how many it took.
    fn process_input(&mut self, input: &mut BytesMut, most: usize) -> usize {
        if self.metrics.is_some() {
            self.batch_read_at_us = micros_since(self.began);
        }
        let before = self.pending.next_seq();
        let taken = self.process_requests(input, most);
        if self.pending.next_seq() != before {
            self.publish_view();
        }
        taken
    }

    fn process_requests(&mut self, input: &mut BytesMut, most: usize) -> usize {
        let mut taken = 0;
        while taken < most && self.wants_input() {
            taken += 1;
            if let Some(request) = self.parked.take() {
                self.handle_silenced(request);
                continue;
            }
            match self.parser.parse(input) {
                Ok(Some(request)) => self.handle_silenced(request),
                Ok(None) => {
                    taken -= 1;
                    self.closing |= self.eof;
                    break;
                }
                Err(error) => {
                    if let Some(metrics) = self.metrics {
                        metrics.protocol_errors.inc();
                    }
                    tracing::debug!(%error, "closing client after a protocol error");
                    self.reply_error(crate::error::ClientError::Protocol(error));
                    self.close_after_last();
                    self.closing = true;
                }
            }
        }
        taken
    }

    /// Handles a request whose reply CLIENT REPLY may have silenced.
    fn handle_silenced(&mut self, request: Request) {
        let first = self.pending.next_seq();
        self.handle(request);
        if self.parked.is_some() {
            // Handled again later, from the start.
            return;
        }
        if self.metrics.is_some()
            && let Some(entry) = self.pending.get_mut(first)
        {
            let family = self.last_known.map_or(crate::command::Family::Unknown, crate::command::Family::of);
            entry.tally.family = family as u8 + 1;
            entry.tally.read_at_us = self.batch_read_at_us;
        }
        self.silence = match self.silence {
            Silence::None => Silence::None,
            Silence::Off => {
                self.pending.silence_from(first);
                Silence::Off
            }
            Silence::Skip(2) => Silence::Skip(1),
            Silence::Skip(_) => {
                self.pending.silence_from(first);
                Silence::None
            }
        };
    }

    /// Keeps this client's CLIENT LIST line current, once per batch.
    fn publish_view(&self) {
        let mut view = clients::lock(&self.registered.handle.view);
        view.last_command = self.last_command;
        view.last_active = std::time::Instant::now();
        view.name.clone_from(&self.client.name);
        view.lib_name.clone_from(&self.client.lib_name);
        view.lib_ver.clone_from(&self.client.lib_ver);
        view.resp = self.client.protocol.version();
        (view.sub, view.psub, view.ssub) = self.subs.counts();
        view.multi = if self.tx.multi { 0 } else { -1 };
        view.blocked = self.blocked();
    }

    /// Moves replies that are ready, in order, to the output buffer.
    fn take_ready(&mut self, output: &mut WriteQueue) {
        // One clock read for all the replies ready now.
        let mut now_us = None;
        while let Some(ready) = self.pending.pop_ready() {
            let (tally, is_error) = match ready {
                Ready::One(entry) => {
                    if entry.close_after {
                        // Nothing was taken after a QUIT or a protocol error.
                        self.closing = true;
                    }
                    let is_error = entry.reply.as_ref().is_some_and(|r| r.first() == Some(&b'-'));
                    if let Some(reply) = entry.reply.filter(|_| !entry.silent) {
                        output.push(&reply);
                    }
                    (entry.tally, is_error)
                }
                Ready::Parts(group, replies, tally) => {
                    let mut is_error = false;
                    if !group.silent {
                        let buffer = output.buffer();
                        let at = buffer.len();
                        fanout::merge(&group.merge, &replies, group.protocol, buffer);
                        is_error = buffer.get(at) == Some(&b'-');
                    }
                    self.pending.recycle(replies);
                    (tally, is_error)
                }
            };
            if let Some(metrics) = self.metrics.filter(|_| tally.family > 0) {
                let now = *now_us.get_or_insert_with(|| micros_since(self.began));
                tally_command(metrics, tally, is_error, now);
            }
        }
    }
}

/// Counts one answered command, its reply ready at `now_us`.
fn tally_command(metrics: &crate::metrics::Metrics, tally: pending::Tally, is_error: bool, now_us: u32) {
    use crate::metrics::Outcome;
    let outcome = match (is_error, tally.by_proxy) {
        (false, _) => Outcome::Ok,
        (true, false) => Outcome::RedisError,
        (true, true) => Outcome::ProxyError,
    };
    let family = crate::command::Family::ALL.get(usize::from(tally.family - 1)).copied();
    let elapsed = now_us.wrapping_sub(tally.read_at_us);
    metrics.command(family.unwrap_or(crate::command::Family::Unknown), outcome, f64::from(elapsed) / 1e6);
}

/// Microseconds since `began`, wrapping (after 71 minutes: latencies are
/// differences of two, far shorter).
fn micros_since(began: Instant) -> u32 {
    began.elapsed().as_micros() as u32
}

/// A request to send again once its backoff has passed.
#[derive(Debug)]
struct Resend {
    at: Instant,
    seq: u64,
    /// Its frame: a pending entry keeps none (see `Completion::request`).
    frame: Bytes,
}

/// Backoff before retry number `retries` of a request the cluster could not
/// take yet: 5 ms doubling, at most 100 ms, so a slot that finishes migrating
/// or a master that gets elected is noticed quickly.
fn retry_delay(retries: u8) -> Duration {
    Duration::from_millis(5).saturating_mul(1 << retries.min(5)).min(Duration::from_millis(100))
}
