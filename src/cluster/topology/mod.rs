//! The topology task: the only writer of the shared slot map.
//!
//! It discovers the cluster from any reachable seed or known master, applies
//! MOVED answers at once (a one-slot patch), and refreshes the whole map
//! periodically and on demand. Requests for a refresh are coalesced: however
//! many arrive while one is pending or running, one more refresh follows.
//! Until the first discovery succeeds the map is empty and clients are told
//! why the cluster is down; the task keeps retrying with backoff meanwhile.

mod discover;
mod merge;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout_at};

use super::login::NodeLogin;
use super::slot::Slot;
use super::slotmap::{NodeAddr, SlotMap};

/// The shortest pause between two full refreshes, so that a burst of MOVED
/// answers during resharding costs the cluster a handful of queries.
const MIN_REFRESH_GAP: Duration = Duration::from_millis(100);
/// The longest pause between attempts while no node answers.
const MAX_RETRY_GAP: Duration = Duration::from_secs(1);
/// Nodes asked at once in a refresh: more than one, so that one stale or
/// hung node is outvoted or outwaited.
const ASK_AT_ONCE: usize = 3;
/// Once one node has answered, how long the others of its batch may take.
const LATE_ANSWER: Duration = Duration::from_millis(100);

/// What the topology task needs to know.
#[derive(Debug, Clone)]
pub struct TopologySettings {
    /// Nodes to discover the cluster from; any one that answers is enough.
    pub seeds: Vec<NodeAddr>,
    /// Full refresh at least this often.
    pub refresh_interval: Duration,
    /// Limit for connecting to a node and for each query.
    pub timeout: Duration,
    /// How to log in to the nodes, if they want a password.
    pub login: Option<NodeLogin>,
    /// TLS toward the nodes, when on.
    pub tls: Option<Arc<crate::tls::NodeTls>>,
}

enum Event {
    Moved(Slot, NodeAddr),
    Refresh,
}

/// The shared, always-readable view of the cluster.
#[derive(Debug)]
pub struct Topology {
    map: ArcSwap<SlotMap>,
    /// Mirrors `map`'s version so the hot path can check for change with one load.
    version: AtomicU64,
    events: mpsc::UnboundedSender<Event>,
    status: Mutex<Status>,
    /// Tells the workers that the map changed (its version).
    changes: watch::Sender<u64>,
    /// Nodes some worker's shared connection cannot reach now: how many
    /// connections report it down, and the last cause (for `/readyz`).
    unreachable: Mutex<HashMap<NodeAddr, (usize, Arc<str>)>>,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Moved(slot, addr) => write!(f, "Moved({slot}, {addr})"),
            Event::Refresh => f.write_str("Refresh"),
        }
    }
}

#[derive(Debug, Default)]
struct Status {
    /// Why the last discovery failed, for `-CLUSTERDOWN` messages.
    last_error: Option<String>,
    /// `redis_version` of the nodes, reported by HELLO.
    redis_version: Option<Arc<str>>,
}

impl Topology {
    /// Creates the topology and spawns its task on the current runtime. It
    /// goes by the settings in force at each refresh (a reload may change
    /// them; see [`crate::live`]).
    pub fn start(settings: Arc<ArcSwap<TopologySettings>>) -> Arc<Topology> {
        let (events, rx) = mpsc::unbounded_channel();
        let topology = Arc::new(Topology {
            map: ArcSwap::from_pointee(SlotMap::empty()),
            version: AtomicU64::new(0),
            events,
            status: Mutex::new(Status::default()),
            changes: watch::Sender::new(0),
            unreachable: Mutex::default(),
        });
        tokio::spawn(run(Arc::downgrade(&topology), settings, rx));
        topology
    }

    /// The current map. Cheap; do not hold it across an `.await`.
    pub fn snapshot(&self) -> Arc<SlotMap> {
        self.map.load_full()
    }

    /// The current map's version: changes whenever the map does.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Wakes when the map changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A node answered MOVED: patch the map now and refresh it soon.
    pub fn moved(&self, slot: Slot, addr: NodeAddr) {
        let _ = self.events.send(Event::Moved(slot, addr));
    }

    /// Something suggests the map is stale (a node unreachable, CLUSTERDOWN).
    pub fn refresh(&self) {
        let _ = self.events.send(Event::Refresh);
    }

    /// A worker's shared connections to `addr` have failed (`Err(cause)`),
    /// or work again after a failure (`Ok`): each worker reports each change
    /// once, so `addr` is unreachable while some worker's last report failed.
    pub fn reached(&self, addr: &NodeAddr, outcome: Result<(), &str>) {
        let mut unreachable = self.unreachable.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Err(cause) => {
                let entry = unreachable.entry(addr.clone()).or_insert_with(|| (0, "".into()));
                *entry = (entry.0 + 1, cause.into());
            }
            Ok(()) => {
                if let Some((down, _)) = unreachable.get_mut(addr) {
                    *down -= 1;
                    if *down == 0 {
                        unreachable.remove(addr);
                    }
                }
            }
        }
    }

    /// Why slotgate cannot reach `addr` now, if some connection cannot.
    pub fn unreachable(&self, addr: &NodeAddr) -> Option<Arc<str>> {
        let unreachable = self.unreachable.lock().unwrap_or_else(PoisonError::into_inner);
        unreachable.get(addr).map(|(_, cause)| cause.clone())
    }

    /// Why no map is known yet, when discovery keeps failing.
    pub fn last_error(&self) -> Option<String> {
        self.lock_status().last_error.clone()
    }

    /// The Redis version the nodes run, once discovered.
    pub fn redis_version(&self) -> Option<Arc<str>> {
        self.lock_status().redis_version.clone()
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, Status> {
        // The status holds plain data: a panic elsewhere cannot leave it half-written.
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, map: SlotMap) {
        let metrics = crate::metrics::get();
        metrics.node_slots.reset();
        for (shard, slots) in map.shards().iter().zip(map.slot_counts()) {
            metrics.node_slots.with_label_values(&[shard.master.as_str()]).set(slots as i64);
        }
        let epoch = map.shards().iter().map(|s| s.epoch).max().unwrap_or(0);
        metrics.cluster_epoch.set(i64::try_from(epoch).unwrap_or(i64::MAX));
        let version = self.map.load().version() + 1;
        self.map.store(Arc::new(map.with_version(version)));
        self.version.store(version, Ordering::Release);
        self.changes.send_replace(version);
    }
}

impl Topology {
    /// Applies MOVED answers in one new snapshot.
    fn apply_moved(&self, moved: &[(Slot, NodeAddr)]) {
        let current = self.map.load_full();
        if moved.iter().all(|(slot, addr)| current.master(*slot) == Some(addr)) {
            return;
        }
        let mut next = SlotMap::clone(&current);
        for (slot, addr) in moved {
            next.set_master(*slot, addr);
        }
        self.publish(next);
    }
}

async fn run(
    topology: Weak<Topology>,
    live: Arc<ArcSwap<TopologySettings>>,
    mut events: mpsc::UnboundedReceiver<Event>,
) {
    let mut wanted = true;
    let mut failures: u32 = 0;
    let mut not_before = Instant::now();
    let mut periodic = Instant::now() + live.load().refresh_interval;
    loop {
        if wanted && Instant::now() >= not_before {
            let Some(topology) = topology.upgrade() else { return };
            wanted = false;
            let settings = live.load_full();
            let gap = match refresh(&topology, &settings).await {
                Ok(()) => {
                    crate::metrics::get().refreshes_ok.inc();
                    failures = 0;
                    MIN_REFRESH_GAP
                }
                Err(error) => {
                    crate::metrics::get().refreshes_failed.inc();
                    failures = failures.saturating_add(1);
                    wanted = true;
                    if failures == 1 || failures % 60 == 0 {
                        tracing::warn!(%error, attempts = failures, "cluster topology unavailable");
                    }
                    topology.lock_status().last_error = Some(error);
                    backoff(failures)
                }
            };
            not_before = Instant::now() + gap;
            periodic = Instant::now() + settings.refresh_interval;
            continue;
        }
        let wake = if wanted { not_before } else { periodic };
        tokio::select! {
            event = events.recv() => {
                // The channel closes when the Topology is dropped.
                let Some(event) = event else { return };
                let Some(topology) = topology.upgrade() else { return };
                let mut moved = Vec::new();
                for event in std::iter::once(event).chain(std::iter::from_fn(|| events.try_recv().ok())) {
                    if let Event::Moved(slot, addr) = event {
                        moved.push((slot, addr));
                    }
                }
                if !moved.is_empty() {
                    topology.apply_moved(&moved);
                }
                wanted = true;
            }
            () = sleep_until(wake) => wanted = true,
        }
    }
}

/// Pause before the next attempt after `failures` failed ones: 100 ms doubling up to 1 s.
fn backoff(failures: u32) -> Duration {
    MIN_REFRESH_GAP.saturating_mul(1 << failures.clamp(1, 5).saturating_sub(1)).min(MAX_RETRY_GAP)
}

/// Asks a few nodes at once (the known masters first, then the other known
/// nodes, then the seeds), batch after batch until some answer, and merges
/// what they say.
async fn refresh(topology: &Topology, settings: &TopologySettings) -> Result<(), String> {
    let current = topology.snapshot();
    let mut masters: Vec<NodeAddr> = current.shards().iter().map(|s| s.master.clone()).collect();
    // Start at a different master each time, so one sick node is not asked first forever.
    let start = (current.version() as usize) % masters.len().max(1);
    masters.rotate_left(start);
    let mut candidates = Vec::new();
    for addr in masters.into_iter().chain(current.nodes().iter().cloned()).chain(settings.seeds.iter().cloned()) {
        if !candidates.contains(&addr) {
            candidates.push(addr);
        }
    }
    let want_version = topology.redis_version().is_none();
    let mut errors = Vec::new();
    for batch in candidates.chunks(ASK_AT_ONCE) {
        let views = ask_all(batch, settings, want_version, &mut errors).await;
        if views.is_empty() {
            continue;
        }
        let mut status = topology.lock_status();
        status.last_error = None;
        if let Some(version) = views.iter().find_map(|v| v.redis_version.clone()) {
            status.redis_version = Some(version.into());
        }
        drop(status);
        let map = merge::merge(&views, &current);
        if !map.same_layout(&current) {
            tracing::info!(
                shards = map.shards().len(),
                slots = map.served_slots(),
                nodes = map.nodes().len(),
                "cluster topology updated"
            );
            topology.publish(map);
        }
        return Ok(());
    }
    Err(format!("no node answered with the cluster's slots ({})", errors.join("; ")))
}

/// The views of the nodes in `batch` that answer; once one has, the others
/// get [`LATE_ANSWER`] more.
async fn ask_all(
    batch: &[NodeAddr],
    settings: &TopologySettings,
    want_version: bool,
    errors: &mut Vec<String>,
) -> Vec<discover::View> {
    let mut asking = JoinSet::new();
    for addr in batch {
        let (addr, limit, login, tls) = (addr.clone(), settings.timeout, settings.login.clone(), settings.tls.clone());
        asking.spawn(async move {
            let result = discover::ask(&addr, limit, login.as_ref(), tls.as_deref(), want_version).await;
            (addr, result)
        });
    }
    let mut views = Vec::new();
    let mut until = None;
    loop {
        let joined = match until {
            Some(until) => timeout_at(until, asking.join_next()).await.ok().flatten(),
            None => asking.join_next().await,
        };
        match joined {
            None => return views,
            Some(Ok((_, Ok(view)))) => {
                views.push(view);
                until.get_or_insert(Instant::now() + LATE_ANSWER);
            }
            Some(Ok((addr, Err(error)))) => errors.push(format!("{addr}: {error}")),
            Some(Err(join_error)) => errors.push(join_error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_gaps_grow_to_a_second() {
        let gaps: Vec<u64> = (1..=6).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(gaps, vec![100, 200, 400, 800, 1000, 1000]);
    }
}
