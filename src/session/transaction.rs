//! MULTI/EXEC/DISCARD/WATCH/UNWATCH, and blocking commands: both run on a
//! node connection of this client alone ([`Dedicated`]), so that a queued
//! transaction or a BLPOP never holds up another client's traffic.
//!
//! A transaction runs on the master of its first key's slot (WATCH's, or
//! the first queued command's); every later key must hash to that slot, as
//! on a cluster node: a command with a key elsewhere gets `-CROSSSLOT`, and
//! EXEC then answers `-EXECABORT` (the node is told to DISCARD). Until the
//! slot is known, MULTI and keyless commands are answered `+OK`/`+QUEUED`
//! by slotgate and held; they go out in order once it is (or at EXEC: any
//! master), their node replies dropped.
//!
//! Switching between the shared connections and the dedicated one waits
//! for everything in flight (see "Ordering" in the session), so a WATCH
//! never overtakes this client's own earlier write, and a BLPOP sees it.

use std::time::Duration;

use bytes::Bytes;

use super::Session;
use super::pending::{Entry, Target};
use crate::backend::{NodeError, Outbound, ReplyTo, Retry};
use crate::cluster::{NodeAddr, Slot, key_slot};
use crate::command::{self, Entry as CommandEntry, InvalidKeys, Local, Route, key_positions};
use crate::error::ClientError;
use crate::resp::{Protocol, Request};

/// A sequence number no entry has: the reply to a request slotgate sends on
/// its own account (the DISCARD of an aborted transaction) is dropped.
pub(super) const UNANSWERED: u64 = u64::MAX;

/// The connection a request travels on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Conn {
    /// The worker's pipelined connections, shared with other clients.
    Shared,
    /// This client's own connection to one node, in one protocol.
    Dedicated { addr: NodeAddr, protocol: Protocol },
}

/// A transaction in progress (WATCH or MULTI seen, EXEC or DISCARD not yet).
#[derive(Debug, Default)]
pub(super) struct Transaction {
    /// Inside MULTI: commands are queued on the node.
    pub multi: bool,
    /// The slot every key must hash to, once the first key is seen.
    slot: Option<Slot>,
    /// The node it runs on, once started.
    node: Option<NodeAddr>,
    /// The node has been sent WATCH or MULTI: later requests go straight there.
    started: bool,
    /// Requests held (already answered) until the node is known.
    held: Vec<Request>,
    /// A command could not be queued: EXEC must abort.
    pub dirty: bool,
}

impl Transaction {
    pub fn active(&self) -> bool {
        self.multi || self.started
    }
}

impl Session {
    /// A command while MULTI is open: queued on the transaction's node,
    /// or refused (and the transaction marked to abort).
    pub(super) fn queue_in_transaction(&mut self, entry: &'static CommandEntry, request: Request) {
        let result = match entry.route {
            Route::Keyed(keyed) => self.keys_slot(entry.command, keyed.finder, &request),
            Route::AnyMaster | Route::Publish => Ok(None),
            Route::Wait => Err(ClientError::NotInTransaction(entry.command.name, "it waits on replicas")),
            Route::PubSub(_) => {
                Err(ClientError::NotInTransaction(entry.command.name, "subscriptions are per connection"))
            }
            // The node queues these like any command, and EXEC answers them.
            Route::Local(Local::Ping | Local::Echo | Local::Unwatch) => Ok(None),
            Route::Refused(why) => Err(ClientError::Refused(entry.command.name, why)),
            Route::Local(_) => Err(ClientError::NotInTransaction(entry.command.name, "it is about the connection")),
            Route::Broadcast(_) | Route::Scan => {
                Err(ClientError::NotInTransaction(entry.command.name, "it needs every master"))
            }
            Route::SlotArgument => Err(ClientError::NotInTransaction(entry.command.name, "it names a slot")),
            Route::ConfigGet => Err(ClientError::NotInTransaction(entry.command.name, "its answer is filtered")),
        };
        match result {
            Ok(slot) => self.send_in_transaction(slot, request),
            Err(error) => {
                self.tx.dirty = true;
                self.reply_error(error);
            }
        }
    }

    /// The one slot of a keyed command's keys (keyless: `None`).
    fn keys_slot(
        &mut self,
        command: &'static command::Command,
        finder: command::KeyFinder,
        request: &Request,
    ) -> Result<Option<Slot>, ClientError> {
        let mut keys = std::mem::take(&mut self.keys);
        let result = match key_positions(command, finder, request, &mut keys) {
            Err(InvalidKeys) => Ok(None),
            Ok(()) => {
                let mut slots = keys.iter().map(|&at| key_slot(request.arg(at).unwrap_or_default()));
                match slots.next() {
                    None => Ok(None),
                    Some(first) if slots.all(|slot| slot == first) => Ok(Some(first)),
                    Some(_) => Err(ClientError::CrossSlot),
                }
            }
        };
        self.keys = keys;
        result
    }

    /// Queues `request` (whose keys hash to `slot`) in the transaction.
    fn send_in_transaction(&mut self, slot: Option<Slot>, request: Request) {
        if let Some(slot) = slot {
            match self.tx.slot {
                Some(chosen) if chosen != slot => {
                    self.tx.dirty = true;
                    return self.reply_error(ClientError::CrossSlot);
                }
                _ => self.tx.slot = Some(slot),
            }
        }
        if !self.tx.started && self.tx.slot.is_some() && !self.start_transaction(&request) {
            return;
        }
        if self.tx.started {
            if self.tx_connection_ready(&request) {
                let seq = self.pending.push(Entry::new(Target::Dedicated, false));
                self.send_dedicated(seq, request, None);
            }
        } else if self.tx.held.len() >= self.settings.max_pipeline {
            self.tx.dirty = true;
            self.reply_error(ClientError::TooManyHeld);
        } else {
            self.tx.held.push(request);
            self.reply(Bytes::from_static(b"+QUEUED\r\n"));
        }
    }

    /// Whether requests of the started transaction may go now (everything
    /// in flight elsewhere is answered); otherwise `request` is parked.
    fn tx_connection_ready(&mut self, request: &Request) -> bool {
        let Some(addr) = self.tx.node.clone() else { return true };
        if self.use_conn(Conn::Dedicated { addr, protocol: self.client.protocol }) {
            return true;
        }
        self.parked = Some(request.clone());
        false
    }

    /// Opens the transaction on its node and sends what was held. False when
    /// it must wait for requests in flight elsewhere (`request` is parked).
    fn start_transaction(&mut self, request: &Request) -> bool {
        let routes = self.routes.clone();
        let node = match self.tx.slot {
            Some(slot) => routes.master(slot),
            None => routes.any_master(self.client.id),
        };
        let Some(addr) = node.map(|node| node.addr().clone()) else {
            self.ctx.pool.topology().refresh();
            if self.tx.multi {
                // Like a command the node refuses: EXEC will abort.
                self.tx.dirty = true;
            } else {
                self.tx = Transaction::default();
            }
            self.reply_error(ClientError::SlotNotServed);
            return false;
        };
        if !self.use_conn(Conn::Dedicated { addr: addr.clone(), protocol: self.client.protocol }) {
            self.parked = Some(request.clone());
            return false;
        }
        self.tx.started = true;
        self.tx.node = Some(addr);
        for held in std::mem::take(&mut self.tx.held) {
            self.send_dedicated(UNANSWERED, held, None);
        }
        true
    }

    pub(super) fn multi(&mut self, request: Request) {
        if self.tx.multi {
            return self.reply_error(ClientError::NestedMulti);
        }
        if !self.tx_connection_ready(&request) {
            return;
        }
        self.tx.multi = true;
        self.tx.dirty = false;
        if self.tx.started {
            let seq = self.pending.push(Entry::new(Target::Dedicated, false));
            self.send_dedicated(seq, request, None);
        } else {
            // Answered now: a client may wait for it before queuing more.
            self.tx.held.push(request);
            self.reply(Bytes::from_static(b"+OK\r\n"));
        }
    }

    pub(super) fn exec(&mut self, request: Request) {
        if !self.tx.multi {
            return self.reply_error(ClientError::ExecWithoutMulti);
        }
        if self.tx.dirty {
            self.abandon_transaction();
            return self.reply_error(ClientError::ExecAbort);
        }
        let ready = if self.tx.started { self.tx_connection_ready(&request) } else { self.start_transaction(&request) };
        if !ready {
            return;
        }
        let seq = self.pending.push(Entry::new(Target::Dedicated, false));
        self.send_dedicated(seq, request, None);
        self.tx = Transaction::default();
    }

    pub(super) fn discard(&mut self, request: Request) {
        if !self.tx.multi {
            return self.reply_error(ClientError::DiscardWithoutMulti);
        }
        if self.tx.started {
            if !self.tx_connection_ready(&request) {
                return;
            }
            let seq = self.pending.push(Entry::new(Target::Dedicated, false));
            self.send_dedicated(seq, request, None);
            self.tx = Transaction::default();
        } else {
            self.abandon_transaction();
            self.reply(Bytes::from_static(b"+OK\r\n"));
        }
    }

    /// Ends a transaction that will not run: the node forgets what it
    /// queued and watched (DISCARD, or UNWATCH before MULTI; nobody waits
    /// for the reply); held requests were never sent.
    pub(super) fn abandon_transaction(&mut self) {
        let tx = std::mem::take(&mut self.tx);
        if tx.started {
            let end = if tx.multi { "DISCARD" } else { "UNWATCH" };
            self.send_dedicated(UNANSWERED, Request::from_args(&[end]), None);
        }
    }

    pub(super) fn watch(&mut self, command: &'static command::Command, request: Request) {
        if self.tx.multi {
            return self.reply_error(ClientError::WatchInMulti);
        }
        let slot = match self.keys_slot(command, command::KeyFinder::Specs, &request) {
            Ok(Some(slot)) => slot,
            Ok(None) => return self.reply_error(ClientError::WrongArity(command.name)),
            Err(error) => return self.reply_error(error),
        };
        if self.tx.slot.is_some_and(|chosen| chosen != slot) {
            return self.reply_error(ClientError::CrossSlot);
        }
        self.tx.slot = Some(slot);
        // Parked (or failed) otherwise: a parked WATCH is handled again,
        // from the start, once the requests in flight are answered.
        let ready = if self.tx.started { self.tx_connection_ready(&request) } else { self.start_transaction(&request) };
        if !ready {
            return;
        }
        let seq = self.pending.push(Entry::new(Target::Dedicated, false));
        self.send_dedicated(seq, request, None);
    }

    pub(super) fn unwatch(&mut self, request: Request) {
        if !self.tx.started {
            return self.reply(Bytes::from_static(b"+OK\r\n"));
        }
        if !self.tx_connection_ready(&request) {
            return;
        }
        let seq = self.pending.push(Entry::new(Target::Dedicated, false));
        self.send_dedicated(seq, request, None);
        if !self.tx.multi {
            self.tx = Transaction::default();
        }
    }

    /// A blocking command (BLPOP, XREAD BLOCK, ...) on this client's own
    /// connection to the master of `slot`; while a WATCH holds that
    /// connection, on it (its slot only, as on a cluster node).
    pub(super) fn forward_blocking(&mut self, slot: Slot, request: Request, blocks_for: Option<Duration>) {
        if self.tx.started {
            if self.tx.slot != Some(slot) {
                return self.reply_error(ClientError::CrossSlot);
            }
            if self.tx_connection_ready(&request) {
                let seq = self.pending.push(Entry::new(Target::Dedicated, false));
                self.send_dedicated(seq, request, blocks_for);
            }
            return;
        }
        let Some(addr) = self.routes.master(slot).map(|node| node.addr().clone()) else {
            self.ctx.pool.topology().refresh();
            return self.reply_error(ClientError::SlotNotServed);
        };
        if !self.use_conn(Conn::Dedicated { addr, protocol: self.client.protocol }) {
            self.parked = Some(request);
            return;
        }
        // A MOVED or ASK is followed with the frame it comes back with (see `redirect_blocking`).
        let seq = self.pending.push(Entry::new(Target::Dedicated, false));
        self.send_dedicated(seq, request, blocks_for);
    }

    /// A blocking command outside a transaction was redirected (it did not
    /// run): it goes again, on a new connection of the client's own to the
    /// node named, after `ASKING` for an ASK.
    pub(super) fn redirect_blocking(&mut self, seq: u64, request: Request, addr: NodeAddr, asking: bool) {
        let protocol = self.client.protocol;
        self.dedicated = Some((self.ctx.pool.dedicated(&addr, protocol), protocol));
        self.conn = Conn::Dedicated { addr, protocol };
        let blocks_for = self.commands.lookup(&request).ok().and_then(|entry| match entry.route {
            Route::Keyed(keyed) => keyed.blocking.block_time(&request),
            _ => None,
        });
        let reply_to = ReplyTo { session: self.mailbox.clone(), seq };
        let out = Outbound { frame: request.frame().clone(), parts: 1, asking, blocks_for, reply_to };
        match self.dedicated.as_ref().map(|(conn, _)| conn.send(out)) {
            Some(Ok(())) => self.in_flight += 1,
            _ => {
                self.fail(seq, ClientError::ConnectionClosed);
                self.dedicated_lost();
            }
        }
    }

    /// Makes `conn` the connection requests travel on; false while requests
    /// are in flight on another one (the caller parks its request).
    pub(super) fn use_conn(&mut self, conn: Conn) -> bool {
        if self.conn == conn {
            return true;
        }
        if self.in_flight > 0 {
            return false;
        }
        if let Conn::Dedicated { addr, protocol } = &conn {
            let reuse = self.dedicated.as_ref().is_some_and(|(d, p)| d.addr() == addr && p == protocol);
            if !reuse {
                self.dedicated = Some((self.ctx.pool.dedicated(addr, *protocol), *protocol));
            }
        }
        self.conn = conn;
        true
    }

    /// Sends entry `seq`'s request on the dedicated connection. Nothing sent
    /// there is ever retried: a transaction's commands belong to it.
    fn send_dedicated(&mut self, seq: u64, request: Request, blocks_for: Option<Duration>) {
        let reply_to = ReplyTo { session: self.mailbox.clone(), seq };
        let out = Outbound { frame: request.frame().clone(), parts: 1, asking: false, blocks_for, reply_to };
        let Some((dedicated, _)) = &self.dedicated else {
            return self.fail(seq, ClientError::ConnectionClosed);
        };
        match dedicated.send(out) {
            Ok(()) => self.in_flight += 1,
            Err(_) => {
                let cause = "this client's node connection closed".into();
                let error = NodeError { addr: dedicated.addr().clone(), cause, retry: Retry::Safe };
                self.fail(seq, ClientError::NodeUnreachable(error));
                self.dedicated_lost();
            }
        }
    }

    /// The dedicated connection failed: a transaction on it is gone with
    /// it, so the client is closed once it has its replies, as if the
    /// server it talked to had gone away.
    pub(super) fn dedicated_lost(&mut self) {
        self.dedicated = None;
        self.conn = Conn::Shared;
        if self.tx.active() {
            self.tx = Transaction::default();
            self.close_after_last();
        }
    }

    /// RESET and protocol changes: the transaction is dropped with its connection.
    pub(super) fn drop_dedicated(&mut self) {
        self.tx = Transaction::default();
        self.dedicated = None;
        self.conn = Conn::Shared;
    }

    /// Is the client waiting, and not read from meanwhile: on a blocking
    /// command, or on a retry (TRYAGAIN, WAIT's polling)? Then slotgate
    /// still watches its socket, to end the wait as soon as it leaves.
    pub(super) fn blocked(&self) -> bool {
        (matches!(self.conn, Conn::Dedicated { .. }) && self.in_flight > 0) || !self.retries.is_empty()
    }
}
