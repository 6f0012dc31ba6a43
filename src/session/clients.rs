//! slotgate's own clients, across workers, for CLIENT LIST, CLIENT INFO and
//! CLIENT KILL: like Redis, slotgate lists the clients connected to it.
//!
//! Each session owns a [`ClientHandle`] in the registry and refreshes its
//! view once per batch of requests (one uncontended lock), never per command.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;

use crate::backend::{Completion, Mailbox};

/// A sequence number that tells a session it was killed (CLIENT KILL).
pub(super) const KILLED: u64 = u64::MAX - 4096;
/// A sequence number that tells a session slotgate is stopping: answer what
/// has arrived, then close.
pub(super) const DRAIN: u64 = KILLED + 1;
/// A sequence number that asks a session whether it is idle, and closes it if so.
pub(super) const IDLE: u64 = KILLED + 2;
/// A sequence number that wakes a session to take the settings a reload put in force.
pub(super) const RELOADED: u64 = KILLED + 3;

/// Every client connected to this slotgate.
#[derive(Debug, Default)]
pub struct Clients {
    last_id: AtomicU64,
    all: Mutex<HashMap<u64, Arc<ClientHandle>>>,
    /// slotgate is stopping: every session answers what it has, then closes.
    draining: AtomicBool,
}

/// One client, as the registry sees it.
#[derive(Debug)]
pub(super) struct ClientHandle {
    pub id: u64,
    addr: Option<SocketAddr>,
    laddr: Option<SocketAddr>,
    created: Instant,
    /// Its session's mailbox: a kill is delivered there.
    mailbox: Arc<Mailbox<Completion>>,
    pub view: Mutex<View>,
}

/// What CLIENT LIST shows that changes while the client runs.
#[derive(Debug, Clone)]
pub(super) struct View {
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    pub last_command: &'static str,
    pub last_active: Instant,
    pub resp: i64,
    pub sub: usize,
    pub psub: usize,
    pub ssub: usize,
    /// Commands queued in MULTI, or -1 outside one.
    pub multi: i64,
    pub blocked: bool,
    pub no_evict: bool,
    /// The user it logged in as; `None`: `default`, as Redis shows a
    /// client that has not logged in.
    pub user: Option<Arc<str>>,
}

impl Clients {
    /// Registers a new client; it leaves the registry when the returned
    /// guard is dropped.
    pub(super) fn register(
        self: &Arc<Self>,
        addr: Option<SocketAddr>,
        laddr: Option<SocketAddr>,
        mailbox: Arc<Mailbox<Completion>>,
    ) -> Registered {
        let id = self.last_id.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let view = View {
            name: None,
            lib_name: None,
            lib_ver: None,
            last_command: "NULL",
            last_active: now,
            resp: 2,
            sub: 0,
            psub: 0,
            ssub: 0,
            multi: -1,
            blocked: false,
            no_evict: false,
            user: None,
        };
        let handle = Arc::new(ClientHandle { id, addr, laddr, created: now, mailbox, view: Mutex::new(view) });
        lock(&self.all).insert(id, handle.clone());
        Registered { clients: self.clone(), handle }
    }

    /// slotgate is stopping: tells every session, and every one that
    /// registers from now on, to answer what has arrived and close.
    pub fn drain(&self) {
        // Flag first: a session registering after the loop below sees it.
        self.draining.store(true, Ordering::SeqCst);
        for handle in lock(&self.all).values() {
            let _ = handle.mailbox.deliver(Completion::signal(DRAIN));
        }
    }

    /// Asks every client that has sent nothing for `limit`, and is neither
    /// blocked nor subscribed (as Redis's `timeout` spares them), to close
    /// if it has nothing in flight either.
    /// Wakes every session to take the settings in force now (a reload):
    /// an idle one would only see them with its next request.
    pub fn reloaded(&self) {
        for handle in lock(&self.all).values() {
            let _ = handle.mailbox.deliver(Completion::signal(RELOADED));
        }
    }

    pub fn close_idle(&self, limit: std::time::Duration) {
        let now = Instant::now();
        for handle in lock(&self.all).values() {
            let view = lock(&handle.view);
            let idle = now.saturating_duration_since(view.last_active) >= limit
                && !view.blocked
                && view.sub + view.psub + view.ssub == 0;
            drop(view);
            if idle {
                let _ = handle.mailbox.deliver(Completion::signal(IDLE));
            }
        }
    }

    pub(super) fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// How many clients are connected.
    pub fn len(&self) -> usize {
        lock(&self.all).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The clients, by id.
    pub(super) fn snapshot(&self) -> Vec<Arc<ClientHandle>> {
        let mut all: Vec<_> = lock(&self.all).values().cloned().collect();
        all.sort_by_key(|client| client.id);
        all
    }
}

/// A client's place in the registry, for as long as its session runs.
#[derive(Debug)]
pub(super) struct Registered {
    clients: Arc<Clients>,
    pub handle: Arc<ClientHandle>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.clients.all).remove(&self.handle.id);
    }
}

impl ClientHandle {
    /// Ends the client's session at once, unless it is `me` (the client
    /// that asked, which is closed after its reply instead).
    pub fn kill_unless(&self, me: u64) {
        if self.id != me {
            let _ = self.mailbox.deliver(Completion::signal(KILLED));
        }
    }

    /// Is it of CLIENT LIST's `TYPE` `kind` (lowercase)? slotgate's clients
    /// are never masters or replicas.
    pub fn is_type(&self, kind: &[u8]) -> bool {
        let view = lock(&self.view);
        let pubsub = view.sub + view.psub + view.ssub > 0;
        match kind {
            b"pubsub" => pubsub,
            b"normal" => !pubsub,
            _ => false,
        }
    }

    /// The name of the user it is logged in as.
    pub fn user(&self) -> Arc<str> {
        lock(&self.view).user.clone().unwrap_or_else(|| "default".into())
    }

    /// The client's IP address, if known.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.addr.map(|addr| addr.ip())
    }

    /// Seconds since it connected.
    pub fn age(&self, now: Instant) -> i64 {
        i64::try_from(now.duration_since(self.created).as_secs()).unwrap_or(i64::MAX)
    }

    pub fn addr(&self) -> String {
        self.addr.map_or_else(|| "?:0".to_string(), |a| a.to_string())
    }

    pub fn laddr(&self) -> String {
        self.laddr.map_or_else(|| "?:0".to_string(), |a| a.to_string())
    }

    /// One line of CLIENT LIST, with Redis 7's fields (those a proxy has no
    /// value for are 0).
    pub fn line(&self, now: Instant) -> String {
        let view = lock(&self.view).clone();
        let text = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
        let mut flags = String::new();
        if view.sub + view.psub + view.ssub > 0 {
            flags.push('P');
        }
        if view.multi >= 0 {
            flags.push('x');
        }
        if view.blocked {
            flags.push('b');
        }
        if view.no_evict {
            flags.push('e');
        }
        if flags.is_empty() {
            flags.push('N');
        }
        let mut line = String::with_capacity(320);
        let _ = write!(
            line,
            "id={} addr={} laddr={} fd=0 name={} age={} idle={} flags={flags} db=0 sub={} psub={} ssub={} multi={} \
             qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} \
             user={} redir=-1 resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr(),
            self.laddr(),
            text(&view.name),
            now.duration_since(self.created).as_secs(),
            now.duration_since(view.last_active).as_secs(),
            view.sub,
            view.psub,
            view.ssub,
            view.multi,
            view.last_command,
            view.user.as_deref().unwrap_or("default"),
            view.resp,
            text(&view.lib_name),
            text(&view.lib_ver),
        );
        line
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
