//! Routing a request to its node, and what happens to its answer: the reply
//! itself, or a redirect (MOVED, ASK), or a refusal to retry later
//! (TRYAGAIN, CLUSTERDOWN, a node that could not be reached), within the
//! redirect budget and the retry window.
//!
//! Only what a node provably did not run is sent again. A redirect is that
//! proof only when no user code could have written it: the error replies of
//! scripts and functions (EVAL, FCALL) are passed to the client as they are,
//! and a MOVED or ASK must name the slot the request was sent for.

use bytes::Bytes;
use tokio::time::Instant;

use super::clients::{DRAIN, IDLE, KILLED, RELOADED};
use super::pending::{Entry, Group, Target};
use super::pubsub::{SUBSCRIBER_SEQ, SUBSCRIBER_SEQ_END};
use super::transaction::{Conn, UNANSWERED};
use super::{Resend, Session, retry_delay};
use crate::backend::{Completion, Node, NodeError, Outbound, Reply, ReplyTo, Retry, Routes, Undelivered};
use crate::cluster::{NodeAddr, Redirect, Slot, key_slot};
use crate::command::{self, Combine, InvalidKeys, Keyed, Local, LookupError, Route, key_positions};
use crate::error::ClientError;
use crate::fanout::{self, Merge, ProxyInfo, ScanCursor, Split};
use crate::resp::{Protocol, ReplyScanner, Request, parse_i64, value};

impl Session {
    /// Decides what to do with one request, in the order it arrived.
    pub(super) fn handle(&mut self, request: Request) {
        let entry = match self.commands.lookup(&request) {
            Ok(entry) => {
                self.last_command = entry.command.name;
                self.last_known = Some(entry.command);
                entry
            }
            Err(error) => {
                self.last_known = None;
                // Redis refuses it at once, and EXEC will abort.
                self.tx.dirty |= self.tx.multi;
                return self.reply_error(lookup_error(error, request));
            }
        };
        // As in Redis, after the unknown-command and arity checks.
        if self.user.is_none() && !entry.command.runs_before_auth() {
            return self.refuse(entry, ClientError::NoAuth);
        }
        if let Some(denied) = self.denied(entry, &request) {
            return self.refuse(entry, denied);
        }
        if self.tx.multi
            && !matches!(
                entry.route,
                Route::Local(Local::Multi | Local::Exec | Local::Discard | Local::Watch | Local::Quit | Local::Reset)
            )
        {
            return self.queue_in_transaction(entry, request);
        }
        if self.client.protocol == Protocol::Resp2
            && self.subs.active()
            && !matches!(entry.route, Route::PubSub(_) | Route::Local(Local::Ping | Local::Quit | Local::Reset))
        {
            return self.reply_error(ClientError::Subscribed(entry.command.name));
        }
        // RESET drops this client's own connections: not under a request still on them.
        if entry.route == Route::Local(Local::Reset) && self.in_flight > 0 {
            self.parked = Some(request);
            return;
        }
        let shared = match entry.route {
            Route::Local(_) | Route::Refused(_) | Route::PubSub(_) => false,
            Route::Keyed(keyed) => !keyed.blocking.blocks(&request),
            _ => true,
        };
        if shared && !self.use_conn(Conn::Shared) {
            self.parked = Some(request);
            return;
        }
        match entry.route {
            Route::Local(local) => self.local(local, entry.command, request),
            Route::Refused(reason) => self.reply_error(ClientError::Refused(entry.command.name, reason)),
            Route::AnyMaster => self.forward(request, Target::AnyMaster, Kind::Other),
            Route::ConfigGet => {
                self.forward_parts(vec![(Target::AnyMaster, request.into_frame())], Merge::ConfigReadable)
            }
            Route::Keyed(keyed) => {
                if keyed.runs_scripts && matches!(entry.command.name, "eval" | "eval_ro") {
                    self.ctx.scripts.remember(request.arg(1).unwrap_or_default());
                }
                self.forward_keyed(entry.command, keyed, request)
            }
            Route::Broadcast(combine) => {
                if entry.command.name == "script|load" {
                    self.ctx.scripts.remember(request.arg(2).unwrap_or_default());
                }
                self.broadcast(combine, request)
            }
            Route::Scan => self.scan(request),
            Route::PubSub(kind) => self.pubsub(kind, request),
            Route::Wait => self.wait(request),
            Route::Publish => match self.routes.first_slots().first() {
                Some(&slot) => self.forward(request, Target::Slot(slot), Kind::Other),
                None => self.reply_error(ClientError::NoTopology(self.ctx.pool.topology().last_error())),
            },
            Route::SlotArgument => {
                match request.arg(2).and_then(parse_i64).and_then(|n| u16::try_from(n).ok()).and_then(Slot::new) {
                    Some(slot) => self.forward(request, Target::Slot(slot), Kind::Other),
                    None => self.reply_error(ClientError::InvalidSlot),
                }
            }
        }
    }

    /// Why the client's user may not run `request`, if it may not: the
    /// command, then each of its keys, as Redis's ACL check. Free for a
    /// user with every command and key; keys are found only for a user
    /// with key patterns.
    fn denied(&mut self, entry: &'static command::Entry, request: &Request) -> Option<ClientError> {
        let user = self.user.as_deref().filter(|user| !user.unrestricted)?;
        if !user.may_run(entry.command) {
            return Some(ClientError::NoPermCommand(entry.command.name));
        }
        if user.all_keys() || !entry.command.names_keys() {
            return None;
        }
        let finder = match entry.route {
            Route::Keyed(keyed) => keyed.finder,
            _ => command::KeyFinder::Specs,
        };
        // Arguments that do not fit the key specs name no keys, for Redis too.
        if key_positions(entry.command, finder, request, &mut self.keys).is_err() {
            self.keys.clear();
        }
        let denied = self.keys.iter().any(|&at| !user.may_access(request.arg(at).unwrap_or_default()));
        denied.then_some(ClientError::NoPermKey)
    }

    /// Refuses a request before it runs (NOAUTH, NOPERM), as Redis's
    /// `rejectCommand`: inside MULTI, EXEC will abort; a refused EXEC
    /// discards the transaction and says why.
    fn refuse(&mut self, entry: &'static command::Entry, error: ClientError) {
        if entry.route == Route::Local(Local::Exec) {
            self.abandon_transaction();
            return self.reply_error(ClientError::ExecAbortBecause(Box::new(error)));
        }
        self.tx.dirty |= self.tx.multi;
        self.reply_error(error)
    }

    /// Sends a copy of `request` to every master, its replies combined.
    fn broadcast(&mut self, combine: Combine, request: Request) {
        let slots = self.routes.first_slots().to_vec();
        if slots.is_empty() {
            return self.reply_error(ClientError::NoTopology(self.ctx.pool.topology().last_error()));
        }
        let merge = Merge::broadcast(combine, self.random(), || self.proxy_info(&request));
        let parts = slots.into_iter().map(|slot| (Target::Slot(slot), request.frame().clone())).collect();
        self.forward_parts(parts, merge);
    }

    /// SCAN on the master its cursor names, with that master's own cursor.
    fn scan(&mut self, request: Request) {
        let slots = self.routes.first_slots();
        if slots.is_empty() {
            return self.reply_error(ClientError::NoTopology(self.ctx.pool.topology().last_error()));
        }
        let Ok((cursor, node_cursor)) = ScanCursor::parse(request.arg(1).unwrap_or_default(), slots) else {
            return self.reply_error(ClientError::InvalidCursor);
        };
        let target = Target::Slot(cursor.slot);
        let node_cursor = itoa::Buffer::new().format(node_cursor).as_bytes().to_vec();
        let args = std::iter::once(&node_cursor[..]).chain(request.args().skip(2));
        let part = Request::from_name_and_args(request.name(), args);
        self.forward_parts(vec![(target, part.into_frame())], Merge::Scan(cursor));
    }

    /// Sends each part as a request of its own (with its own redirects and
    /// retries); the client gets one reply, merged once all are answered.
    fn forward_parts(&mut self, parts: Vec<(Target, Bytes)>, merge: Merge) {
        let count = parts.len();
        if let Some(metrics) = self.metrics {
            metrics.fanout_parts.inc_by(count as u64);
        }
        let routes = self.routes.clone();
        let mut first = None;
        for (target, frame) in parts {
            let seq = self.pending.push(Entry::new(target, false));
            first.get_or_insert(seq);
            self.send(seq, frame, target, &routes);
        }
        if let Some(entry) = first.and_then(|seq| self.pending.get_mut(seq)) {
            entry.group = Some(Box::new(Group { parts: count, merge, protocol: self.client.protocol, silent: false }));
        }
    }

    /// A split request: an entry per part, and one request per run of parts
    /// whose slots one master serves (one frame, one reply each from the
    /// node's connection, one completion back). Reads from replicas go
    /// part by part, each to its replica.
    fn forward_split(&mut self, split: Split, read_only: bool) {
        let count = split.parts.len();
        if let Some(metrics) = self.metrics {
            metrics.fanout_parts.inc_by(count as u64);
        }
        let reader = read_only && self.routes.reads_from_replicas();
        let target = |slot| if reader { Target::Reader(slot) } else { Target::Slot(slot) };
        let routes = self.routes.clone();
        let first = self.pending.next_seq();
        for &(slot, _) in &split.parts {
            self.pending.push(Entry { read_only, ..Entry::new(target(slot), false) });
        }
        let mut part = 0;
        while part < count {
            let seq = first + part as u64;
            let slot = split.parts[part].0;
            let Some(shard) = routes.shard(slot).filter(|_| !reader) else {
                self.send(seq, split.part(part), target(slot), &routes);
                part += 1;
                continue;
            };
            let run = split.parts[part..].iter().take_while(|&&(slot, _)| routes.shard(slot) == Some(shard)).count();
            let frames = split.frames.slice(split.span(part..part + run));
            self.send_to(seq, frames, routes.shard_master(shard), false, run as u32);
            part += run;
        }
        if let Some(entry) = self.pending.get_mut(first) {
            let group = Group { parts: count, merge: split.merge, protocol: self.client.protocol, silent: false };
            entry.group = Some(Box::new(group));
        }
    }

    fn forward_keyed(&mut self, command: &'static command::Command, keyed: Keyed, request: Request) {
        let mut keys = std::mem::take(&mut self.keys);
        let target = match key_positions(command, keyed.finder, &request, &mut keys) {
            // Redis finds no keys here either and answers with its own error.
            Err(InvalidKeys) => Ok(Target::AnyMaster),
            Ok(()) => match keys.split_first() {
                None => Ok(Target::AnyMaster),
                Some((&first, rest)) => {
                    let slot = key_slot(request.arg(first).unwrap_or_default());
                    if rest.iter().all(|&at| key_slot(request.arg(at).unwrap_or_default()) == slot) {
                        Ok(Target::Slot(slot))
                    } else {
                        // The parts for one master in a row: one run each.
                        let (routes, buf) = (&self.routes, &mut self.parts_buf);
                        let rank = |slot| routes.shard(slot).map_or(u16::MAX, |shard| shard as u16);
                        let split = |combine| fanout::split_by_slot(command, combine, &request, &keys, rank, buf);
                        Err(keyed.split.and_then(split))
                    }
                }
            },
        };
        self.keys = keys;
        let read_only = command.flags.contains(command::spec::flag::READONLY)
            && !command.flags.contains(command::spec::flag::WRITE)
            && !keyed.runs_scripts;
        match target {
            Ok(Target::Slot(slot)) if keyed.blocking.blocks(&request) => {
                let blocks_for = keyed.blocking.block_time(&request);
                self.forward_blocking(slot, request, blocks_for)
            }
            Ok(Target::Slot(slot)) if read_only && self.routes.reads_from_replicas() => {
                self.forward(request, Target::Reader(slot), Kind::Read)
            }
            Ok(target) => {
                if let Target::Slot(slot) = target
                    && command.flags.contains(command::spec::flag::WRITE)
                {
                    self.last_write = Some(slot);
                }
                let kind = match (keyed.runs_scripts, read_only) {
                    (true, _) => Kind::Script,
                    (false, true) => Kind::Read,
                    (false, false) => Kind::Other,
                };
                self.forward(request, target, kind)
            }
            Err(Some(split)) if split.parts.len() > self.settings.max_fanout => {
                crate::metrics::get().fanout_refused.inc();
                self.reply_error(ClientError::FanoutTooLarge(split.parts.len(), self.settings.max_fanout));
            }
            Err(Some(split)) => self.forward_split(split, read_only),
            Err(None) => self.reply_error(ClientError::CrossSlot),
        }
    }

    /// Sends a new request to its target and gives it a place in the order.
    fn forward(&mut self, request: Request, target: Target, kind: Kind) {
        let entry = Entry::new(target, kind == Kind::Script);
        let seq = self.pending.push(Entry { read_only: kind == Kind::Read, ..entry });
        let routes = self.routes.clone();
        self.send(seq, request.into_frame(), target, &routes);
    }

    /// Sends the request of entry `seq` (its `frame`) by `routes`.
    pub(super) fn send(&mut self, seq: u64, frame: Bytes, target: Target, routes: &Routes) {
        let node = match target {
            Target::Slot(slot) => routes.master(slot),
            Target::Reader(slot) => {
                self.reads = self.reads.wrapping_add(1);
                routes.reader(slot, self.client.id, self.reads)
            }
            Target::AnyMaster => routes.any_master(self.client.id),
            Target::Local | Target::Dedicated => None,
        };
        match node {
            Some(node) => self.send_to(seq, frame, node, false, 1),
            None if routes.version() == 0 => {
                let why = self.ctx.pool.topology().last_error();
                self.fail(seq, ClientError::NoTopology(why));
            }
            None => {
                self.ctx.pool.topology().refresh();
                self.fail(seq, ClientError::SlotNotServed);
            }
        }
    }

    /// Sends `parts` requests, numbered from `seq` on, their frames one
    /// after another in `frame`, to `node` as one.
    fn send_to(&mut self, seq: u64, frame: Bytes, node: &Node, asking: bool, parts: u32) {
        let reply_to = ReplyTo { session: self.mailbox.clone(), seq };
        // The frame travels with the request and comes back with its reply.
        let out = Outbound { frame, parts, asking, blocks_for: None, reply_to };
        let seqs = seq..seq + u64::from(parts);
        match node.send(self.client.protocol, self.client.id, out) {
            Ok(()) => self.in_flight += parts as usize,
            Err(Undelivered::Full(_)) => {
                for seq in seqs {
                    self.fail(seq, ClientError::NodeOverloaded(node.addr().clone(), node.queue_limit()));
                }
            }
            // The connection has closed (its node left the map): never sent, so retry.
            Err(Undelivered::Closed(out)) => {
                let mut frames =
                    if parts == 1 { vec![out.frame] } else { Request::split_frames(out.frame) }.into_iter();
                for seq in seqs {
                    if !frames.next().is_some_and(|frame| self.retry_later(seq, frame)) {
                        let cause = "its connection is closed".into();
                        let error = NodeError { addr: node.addr().clone(), cause, retry: Retry::Safe };
                        self.fail(seq, ClientError::NodeUnreachable(error));
                    }
                }
            }
        }
    }

    /// Takes a batch of node answers (leaving `arrived` empty for reuse).
    pub(super) fn complete_all(&mut self, arrived: &mut Vec<Completion>) {
        for completion in arrived.drain(..) {
            if completion.seq == KILLED {
                self.killed = true;
                continue;
            }
            if completion.seq == DRAIN {
                // As if the client had finished sending: what arrived is answered.
                self.eof = true;
                continue;
            }
            if completion.seq == RELOADED {
                // Woken only: the session loop takes the new settings.
                continue;
            }
            if completion.seq == IDLE {
                // Idle by what it sent, and nothing of its own is under way.
                if self.in_flight == 0 && self.pending.is_empty() && !self.subs.active() && !self.tx.multi {
                    crate::metrics::get().idle_clients_closed.inc();
                    self.killed = true;
                }
                continue;
            }
            if (SUBSCRIBER_SEQ..SUBSCRIBER_SEQ_END).contains(&completion.seq) {
                self.subscriber_event(completion.seq - SUBSCRIBER_SEQ, completion.reply);
            } else if completion.parts > 1 {
                self.complete_run(completion);
            } else {
                self.complete(completion);
            }
        }
    }

    /// A node answered (or failed to) a run of parts sent as one: each is
    /// completed by itself, with its own redirects and retries. A part's
    /// frame is found only for an error reply (what may send it again).
    fn complete_run(&mut self, completion: Completion) {
        let Completion { seq, reply, from, request, parts } = completion;
        let seqs = seq..seq + u64::from(parts);
        let mut frames = None;
        let mut frame = |index: usize| {
            let frames = frames.get_or_insert_with(|| Request::split_frames(request.clone()));
            frames.get_mut(index).map(std::mem::take).unwrap_or_default()
        };
        match reply {
            Reply::Failed(error) => {
                for (index, seq) in seqs.enumerate() {
                    let (reply, request) = (Reply::Failed(error.clone()), frame(index));
                    self.complete(Completion { seq, reply, from: None, request, parts: 1 });
                }
            }
            Reply::Frame(mut replies) => {
                let mut scanner = ReplyScanner::default();
                for (index, seq) in seqs.enumerate() {
                    // The connection scanned these replies whole: each is there.
                    let len = match scanner.scan(&replies) {
                        Ok(Some(one)) => one.len,
                        _ => replies.len(),
                    };
                    let reply = replies.split_to(len);
                    let error = reply.first() == Some(&b'-');
                    let (request, from) = if error { (frame(index), from.clone()) } else { (Bytes::new(), None) };
                    self.complete(Completion { seq, reply: Reply::Frame(reply), from, request, parts: 1 });
                }
            }
        }
    }

    /// A node answered (or failed to) the request numbered `completion.seq`.
    fn complete(&mut self, completion: Completion) {
        self.in_flight -= 1;
        let Completion { seq, reply, from, request: frame, .. } = completion;
        let max_redirects = self.settings.max_redirects;
        let Some(entry) = self.pending.get_mut(seq) else { return };
        if entry.target == Target::Dedicated {
            // This client's own connection: passed on as it is, never retried,
            // except a blocking command outside a transaction that a node
            // redirected (it did not run): it follows the redirect.
            match reply {
                Reply::Frame(reply) => {
                    if reply.starts_with(b"-MOVED") || reply.starts_with(b"-ASK") {
                        // The next one goes where the slot is now.
                        self.ctx.pool.topology().refresh();
                        let from = self.dedicated.as_ref().map(|(conn, _)| conn.addr().clone());
                        let redirect = Redirect::parse(&reply, from.as_ref());
                        // Only with nothing else on that connection, which is replaced.
                        let alone = self.in_flight == 0;
                        let request = Some(frame)
                            .filter(|_| alone && entry.redirects < max_redirects)
                            .and_then(Request::from_frame);
                        if let (Some(request), Some(Redirect::Moved { addr, .. } | Redirect::Ask { addr, .. })) =
                            (request, &redirect)
                        {
                            entry.redirects += 1;
                            let asking = matches!(redirect, Some(Redirect::Ask { .. }));
                            return self.redirect_blocking(seq, request, addr.clone(), asking);
                        }
                    }
                    entry.reply = Some(reply);
                }
                Reply::Failed(error) => {
                    let error = match error.retry {
                        Retry::Safe => ClientError::NodeUnreachable(error),
                        Retry::NotSafe | Retry::TimedOut => ClientError::NodeLost(error),
                    };
                    self.fail(seq, error);
                    self.dedicated_lost();
                }
            }
            return;
        }
        if entry.reply.is_some() {
            // Answered already (failed while away): nothing more to do.
            return;
        }
        match reply {
            Reply::Frame(reply) => {
                if entry.wait.is_some() && !value::is_error(&reply) {
                    return self.wait_progress(seq, frame, reply);
                }
                if entry.runs_scripts && !entry.healed && reply.starts_with(b"-NOSCRIPT") {
                    return self.heal_noscript(seq, frame, reply, from);
                }
                // A replica still loading or cut off from its master: the
                // read goes to the master instead.
                if let Target::Reader(slot) = entry.target
                    && (reply.starts_with(b"-LOADING") || reply.starts_with(b"-MASTERDOWN"))
                {
                    entry.target = Target::Slot(slot);
                    if !self.retry_later(seq, frame)
                        && let Some(entry) = self.pending.get_mut(seq)
                    {
                        entry.reply = Some(reply);
                    }
                    return;
                }
                let redirect = match reply.first() {
                    Some(b'-') => Redirect::parse(&reply, from.as_ref()),
                    _ => None,
                };
                let Some(redirect) = redirect else {
                    entry.reply = Some(reply);
                    return;
                };
                let trusted = !entry.runs_scripts;
                let (target, hops_left) = (entry.target, entry.redirects < max_redirects);
                match redirect {
                    Redirect::Moved { slot, addr } if trusted && hops_left && target.slot() == Some(slot) => {
                        entry.redirects += 1;
                        if let (Some(metrics), Some(node)) = (self.metrics, &from) {
                            metrics.redirect(node.as_str(), "moved");
                        }
                        self.ctx.pool.topology().moved(slot, addr.clone());
                        let node = self.ctx.pool.node(&addr);
                        self.send_to(seq, frame, &node, false, 1);
                    }
                    Redirect::Ask { slot, addr } if trusted && hops_left && target.slot() == Some(slot) => {
                        entry.redirects += 1;
                        if let (Some(metrics), Some(node)) = (self.metrics, &from) {
                            metrics.redirect(node.as_str(), "ask");
                        }
                        let node = self.ctx.pool.node(&addr);
                        self.send_to(seq, frame, &node, true, 1);
                    }
                    Redirect::TryAgain | Redirect::ClusterDown if trusted && self.retry_later(seq, frame.clone()) => {
                        if redirect == Redirect::ClusterDown {
                            self.ctx.pool.topology().refresh();
                        }
                    }
                    // Passed on as the node said it. If it was a real redirect
                    // (a script's, say), the map is refreshed for next time.
                    _ => {
                        self.ctx.pool.topology().refresh();
                        if let Some(entry) = self.pending.get_mut(seq) {
                            entry.reply = Some(reply);
                        }
                    }
                }
            }
            Reply::Failed(error) => {
                self.ctx.pool.topology().refresh();
                let read_only = entry.read_only;
                let error = match error.retry {
                    Retry::Safe if self.retry_later(seq, frame.clone()) => return,
                    // Run twice, a read changes nothing.
                    Retry::NotSafe if read_only && self.retry_later(seq, frame) => return,
                    Retry::Safe => ClientError::NodeUnreachable(error),
                    Retry::NotSafe | Retry::TimedOut => ClientError::NodeLost(error),
                };
                self.fail(seq, error);
            }
        }
    }

    /// EVALSHA of a script this node never saw: if slotgate saw it, load it
    /// there and send the EVALSHA again behind it on the same connection
    /// (NOSCRIPT proves it did not run). Otherwise the client gets NOSCRIPT.
    fn heal_noscript(&mut self, seq: u64, frame: Bytes, reply: Bytes, from: Option<NodeAddr>) {
        let request = Request::from_frame(frame.clone());
        let evalsha = request.as_ref().is_some_and(|request| {
            request.name().eq_ignore_ascii_case(b"evalsha") || request.name().eq_ignore_ascii_case(b"evalsha_ro")
        });
        let sha = request.as_ref().and_then(|request| request.arg(1)).filter(|_| evalsha);
        let body = sha.and_then(|sha| self.ctx.scripts.body(sha));
        // Sent again, it would run after a later request to its slot.
        let target = self.pending.get_mut(seq).map(|entry| entry.target);
        let later = target.is_some_and(|target| self.pending.later_sent_to(seq, target));
        let Some(entry) = self.pending.get_mut(seq) else { return };
        let (Some(body), Some(addr), false) = (body, from, later) else {
            entry.reply = Some(reply);
            return;
        };
        entry.healed = true;
        let node = self.ctx.pool.node(&addr);
        let load = Request::from_args(&[&b"SCRIPT"[..], b"LOAD", &body]);
        let reply_to = ReplyTo { session: self.mailbox.clone(), seq: UNANSWERED };
        let out = Outbound { frame: load.frame().clone(), parts: 1, asking: false, blocks_for: None, reply_to };
        if node.send(self.client.protocol, self.client.id, out).is_ok() {
            self.in_flight += 1;
        }
        self.send_to(seq, frame, &node, false, 1);
    }

    /// Schedules entry `seq` to be sent again after a backoff, unless its
    /// retry window (opened at its first retry) is over, or a later request
    /// to the same target has already gone out (the retry would run after
    /// it: the client gets the cluster's error instead).
    fn retry_later(&mut self, seq: u64, frame: Bytes) -> bool {
        let now = Instant::now();
        let window = self.settings.retry_timeout;
        let Some(entry) = self.pending.get_mut(seq) else { return false };
        let target = entry.target;
        if now >= *entry.retry_until.get_or_insert(now + window) || self.pending.later_sent_to(seq, target) {
            return false;
        }
        let Some(entry) = self.pending.get_mut(seq) else { return false };
        entry.retries = entry.retries.saturating_add(1);
        entry.retrying = true;
        let at = now + retry_delay(entry.retries);
        // Kept in request order: a retry never overtakes an earlier one.
        let place = self.retries.partition_point(|resend| resend.seq < seq);
        self.retries.insert(place, Resend { at, seq, frame });
        true
    }

    /// Sends again, in request order, every waiting request whose backoff
    /// has passed, by the newest routes; stops at the first that must wait.
    pub(super) fn retry_due(&mut self) {
        let now = Instant::now();
        let routes = self.ctx.pool.routes();
        while let Some(Resend { at, .. }) = self.retries.front() {
            if *at > now {
                break;
            }
            let Some(Resend { seq, frame, .. }) = self.retries.pop_front() else { break };
            let Some(entry) = self.pending.get_mut(seq) else { continue };
            entry.retrying = false;
            let target = entry.target;
            self.send(seq, frame, target, &routes);
        }
    }

    /// Completes entry `seq` with a slotgate error.
    pub(super) fn fail(&mut self, seq: u64, error: ClientError) {
        if let Some(entry) = self.pending.get_mut(seq) {
            entry.reply = Some(error_bytes(&error));
            entry.tally.by_proxy = true;
        }
    }

    /// Answers the current request with an error, in its place in the order.
    pub(super) fn reply_error(&mut self, error: ClientError) {
        let reply = error_bytes(&error);
        let mut entry = Entry::ready(reply);
        entry.tally.by_proxy = true;
        self.pending.push(entry);
    }

    /// Answers the current request with `reply`, in its place in the order.
    pub(super) fn reply(&mut self, reply: Bytes) {
        self.pending.push(Entry::ready(reply));
    }

    /// The connection closes once the last queued reply is written.
    pub(super) fn close_after_last(&mut self) {
        if let Some(entry) = self.pending.back_mut() {
            entry.close_after = true;
        }
        self.closing = true;
    }
}

impl Session {
    /// A cheap, unpredictable-enough number (RANDOMKEY's choice of master).
    fn random(&self) -> u64 {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (u64::from(nanos.subsec_nanos()) ^ self.client.id.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    /// slotgate's section of INFO, if `request` asks for it.
    fn proxy_info(&self, request: &Request) -> ProxyInfo {
        let map = &self.routes.map;
        let fields = vec![
            ("slotgate_version", env!("CARGO_PKG_VERSION").to_string()),
            ("cluster_masters", self.routes.first_slots().len().to_string()),
            ("cluster_slots_served", map.served_slots().to_string()),
            ("topology_version", map.version().to_string()),
        ];
        ProxyInfo { included: ProxyInfo::wanted(request.args().skip(1)), fields }
    }
}

/// What a forwarded command may do, for redirects and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Only reads: safe to send again whatever happened.
    Read,
    /// Runs a script or function: its errors may look like redirects.
    Script,
    Other,
}

fn error_bytes(error: &ClientError) -> Bytes {
    let mut out = bytes::BytesMut::new();
    error.write(&mut out);
    out.freeze()
}

fn lookup_error(error: LookupError, request: Request) -> ClientError {
    match error {
        LookupError::UnknownCommand => ClientError::UnknownCommand(request),
        LookupError::UnknownSubcommand(container) => {
            ClientError::UnknownSubcommand(container.name, request.arg_bytes(1).unwrap_or_default())
        }
        LookupError::WrongArity(command) => ClientError::WrongArity(command.name),
    }
}
