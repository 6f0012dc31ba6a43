//! One worker's connections to the nodes, and the routes built from them.
//!
//! Each worker thread has its own pool, so a request and its reply stay on
//! one thread. A node gets a small fixed number of pipelined connections per
//! protocol; a client always uses the same one (chosen by its id), which keeps
//! its requests to one node in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;

use super::{BackendSettings, Health, Mailbox, NodeError, Outbound, ReadFrom, Retry, Undelivered, driver};
use crate::cluster::{NodeAddr, Slot, SlotMap, Topology};
use crate::metrics::NodeMetrics;
use crate::resp::Protocol;

/// The connections of one worker to one node. Dropping it closes them:
/// their tasks fail what is still queued (never sent, so safe to retry).
#[derive(Debug)]
pub struct Node {
    addr: NodeAddr,
    resp2: Vec<Arc<Mailbox<Outbound>>>,
    resp3: Vec<Arc<Mailbox<Outbound>>>,
    health: Arc<Health>,
    /// Requests that may wait in a connection's queue (`queue_limit`; a
    /// reload changes it when the routes are next rebuilt).
    queue_limit: AtomicUsize,
    metrics: Option<NodeMetrics>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.close();
    }
}

impl Node {
    /// Closes the connections (the node left the cluster): each answers what
    /// it has sent, then ends; what was still queued fails, safe to retry.
    fn close(&self) {
        self.health.stop_reporting();
        for queue in self.resp2.iter().chain(&self.resp3) {
            for out in queue.close() {
                let cause = "the node left the cluster map".into();
                out.fail(NodeError { addr: self.addr.clone(), cause, retry: Retry::Safe });
            }
        }
    }
}

impl Node {
    fn new(addr: NodeAddr, live: &Arc<ArcSwap<BackendSettings>>, topology: &Arc<Topology>) -> Node {
        let health = Arc::new(Health::reporting(addr.clone(), topology.clone()));
        let settings = live.load();
        let metrics = settings.metrics.then(|| crate::metrics::get().node(addr.as_str()));
        let connections = |protocol| {
            (0..settings.connections_per_node.max(1))
                .map(|_| {
                    let mode = driver::Mode::Shared;
                    driver::spawn(addr.clone(), protocol, live.clone(), mode, health.clone(), metrics.clone())
                })
                .collect()
        };
        let (resp2, resp3) = (connections(Protocol::Resp2), connections(Protocol::Resp3));
        Node { resp2, resp3, addr, health, queue_limit: AtomicUsize::new(settings.queue_limit), metrics }
    }

    /// What its connections have seen of the node.
    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    /// Queues a request on the connection of `client_id` for `protocol`.
    /// Gives the request back if that connection's task is gone, or if
    /// `queue_limit` requests wait in it already (the node is behind).
    pub fn send(&self, protocol: Protocol, client_id: u64, out: Outbound) -> Result<(), Undelivered<Outbound>> {
        let connections = match protocol {
            Protocol::Resp2 => &self.resp2,
            Protocol::Resp3 => &self.resp3,
        };
        // One connection per node is the default: no division per request.
        let connection = match connections.len() {
            1 => &connections[0],
            n => &connections[(client_id % n as u64) as usize],
        };
        let sent = connection.deliver_at_most(out, self.queue_limit());
        if let (Err(Undelivered::Full(_)), Some(metrics)) = (&sent, &self.metrics) {
            metrics.saturated.inc();
        }
        sent
    }

    pub fn queue_limit(&self) -> usize {
        self.queue_limit.load(Ordering::Relaxed)
    }
}

/// A node connection of one client alone: its transaction, its blocking
/// commands. Dropping it closes the connection, which is how a node learns
/// that the client left (it discards the transaction, ends the block).
#[derive(Debug)]
pub struct Dedicated {
    addr: NodeAddr,
    queue: Arc<Mailbox<Outbound>>,
}

impl Dedicated {
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    /// Queues a request; gives it back if the connection's task is gone.
    pub fn send(&self, out: Outbound) -> Result<(), Outbound> {
        self.queue.deliver(out)
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        for out in self.queue.close() {
            let cause = "the client's own node connection was closed".into();
            out.fail(NodeError { addr: self.addr.clone(), cause, retry: Retry::Safe });
        }
    }
}

/// A slot map with each shard's nodes resolved to this worker's connections.
#[derive(Debug)]
pub struct Routes {
    pub map: Arc<SlotMap>,
    masters: Vec<Arc<Node>>,
    /// Each shard's replicas, where reads may go to them (else empty).
    replicas: Vec<Vec<Arc<Node>>>,
    read_from: ReadFrom,
    /// The settings they were built with: a reload rebuilds them.
    settings: Arc<BackendSettings>,
    /// One slot per master, in slot order (see [`SlotMap::first_slots`]).
    first_slots: Vec<Slot>,
}

impl Routes {
    pub fn version(&self) -> u64 {
        self.map.version()
    }

    pub fn master(&self, slot: Slot) -> Option<&Arc<Node>> {
        self.map.shard_index(slot).map(|index| &self.masters[index])
    }

    /// The shard serving `slot`, by its index in the map: slots with the
    /// same index have the same master.
    pub fn shard(&self, slot: Slot) -> Option<usize> {
        self.map.shard_index(slot)
    }

    /// The master of the shard at `index` (see [`Routes::shard`]).
    ///
    /// # Panics
    /// If there is no shard at `index`.
    pub fn shard_master(&self, index: usize) -> &Arc<Node> {
        &self.masters[index]
    }

    /// Do read-only commands go anywhere but the master?
    pub fn reads_from_replicas(&self) -> bool {
        self.read_from != ReadFrom::Master
    }

    /// The node a read-only command for `slot` goes to, by `read_from`:
    /// the master, or one of its replicas not known to be down. A client
    /// stays on one replica (chosen by `client_id`); round-robin takes the
    /// nodes in `turn`.
    pub fn reader(&self, slot: Slot, client_id: u64, turn: u64) -> Option<&Arc<Node>> {
        let index = self.map.shard_index(slot)?;
        let master = &self.masters[index];
        let up = self.replicas[index].iter().filter(|node| node.health.is_up());
        let nth = |pick: u64, count: usize| (pick % count.max(1) as u64) as usize;
        match self.read_from {
            ReadFrom::Master => Some(master),
            ReadFrom::ReplicaPreferred => {
                let count = up.clone().count();
                Some(up.clone().nth(nth(client_id, count)).unwrap_or(master))
            }
            ReadFrom::RoundRobin => {
                let count = up.clone().count() + 1;
                std::iter::once(master).chain(up).nth(nth(turn, count))
            }
            // Not measured yet counts as nearest, so that it gets measured.
            ReadFrom::Nearest => std::iter::once(master).chain(up).min_by_key(|node| node.health.latency()),
        }
    }

    /// One slot of each master, in slot order: a request for every master
    /// goes to these slots' masters.
    pub fn first_slots(&self) -> &[Slot] {
        &self.first_slots
    }

    /// A master for a command that any master can answer; `pick` spreads them.
    pub fn any_master(&self, pick: u64) -> Option<&Arc<Node>> {
        if self.masters.is_empty() {
            return None;
        }
        Some(&self.masters[(pick % self.masters.len() as u64) as usize])
    }
}

/// One worker's nodes.
#[derive(Debug)]
pub struct Pool {
    topology: Arc<Topology>,
    /// The settings in force; a reload replaces them (see [`crate::live`]).
    settings: Arc<ArcSwap<BackendSettings>>,
    nodes: Mutex<HashMap<NodeAddr, Arc<Node>>>,
    routes: Mutex<Arc<Routes>>,
}

impl Pool {
    pub fn new(topology: Arc<Topology>, settings: Arc<ArcSwap<BackendSettings>>) -> Pool {
        let routes = Arc::new(Routes {
            map: Arc::new(SlotMap::empty()),
            masters: Vec::new(),
            replicas: Vec::new(),
            read_from: settings.load().read_from,
            settings: settings.load_full(),
            first_slots: Vec::new(),
        });
        Pool { topology, settings, nodes: Mutex::default(), routes: Mutex::new(routes) }
    }

    pub fn topology(&self) -> &Arc<Topology> {
        &self.topology
    }

    /// The routes for the current slot map, rebuilt when the map (or, by a
    /// reload, `read_from`) has changed.
    pub fn routes(&self) -> Arc<Routes> {
        let mut routes = lock(&self.routes);
        let settings = self.settings.load_full();
        if routes.version() != self.topology.version() || !Arc::ptr_eq(&routes.settings, &settings) {
            let map = self.topology.snapshot();
            // A node that left the cluster: its connections close now, even
            // while an idle client's old routes still name it.
            lock(&self.nodes).retain(|addr, node| {
                let member = map.knows(addr);
                if !member {
                    node.close();
                    if settings.metrics {
                        crate::metrics::get().forget_node(addr.as_str());
                    }
                }
                member
            });
            let masters = map.shards().iter().map(|shard| self.node(&shard.master)).collect();
            let read_from = settings.read_from;
            let replicas = map
                .shards()
                .iter()
                .map(|shard| match read_from {
                    ReadFrom::Master => Vec::new(),
                    _ => shard.replicas.iter().map(|addr| self.node(addr)).collect(),
                })
                .collect();
            let first_slots = map.first_slots();
            for node in lock(&self.nodes).values() {
                node.queue_limit.store(settings.queue_limit, Ordering::Relaxed);
            }
            *routes = Arc::new(Routes { map, masters, replicas, read_from, settings, first_slots });
        }
        routes.clone()
    }

    /// A new connection to `addr` for one client alone (its transaction, its
    /// blocking commands). The request timeout counts from the end of a
    /// blocking command's own wait; once broken, it stays closed.
    pub fn dedicated(&self, addr: &NodeAddr, protocol: Protocol) -> Dedicated {
        let queue =
            driver::spawn(addr.clone(), protocol, self.settings.clone(), driver::Mode::Dedicated, Arc::default(), None);
        Dedicated { addr: addr.clone(), queue }
    }

    /// A new subscribed connection to `addr` for one client: every frame
    /// the node sends on it goes to that client's session.
    pub fn subscriber(&self, addr: &NodeAddr, protocol: Protocol) -> Dedicated {
        let mode = driver::Mode::Subscriber;
        let queue = driver::spawn(addr.clone(), protocol, self.settings.clone(), mode, Arc::default(), None);
        Dedicated { addr: addr.clone(), queue }
    }

    /// This worker's connections to the node at `addr`, made on first use.
    pub fn node(&self, addr: &NodeAddr) -> Arc<Node> {
        lock(&self.nodes)
            .entry(addr.clone())
            .or_insert_with(|| Arc::new(Node::new(addr.clone(), &self.settings, &self.topology)))
            .clone()
    }
}

/// The pool's maps hold plain data that a panic cannot leave half-updated.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
