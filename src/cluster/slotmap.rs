//! Immutable snapshots of which master serves each slot.
//!
//! A snapshot is never changed once published: the topology task builds a
//! new one and swaps it in, so a reader holding one sees a consistent map.

use std::fmt;
use std::sync::Arc;

use super::slot::{SLOT_COUNT, Slot};

/// A node's address as the cluster announces it (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr(Arc<str>);

impl NodeAddr {
    pub fn new(addr: impl Into<Arc<str>>) -> NodeAddr {
        NodeAddr(addr.into())
    }

    /// `host` and `port` joined, bracketing IPv6 hosts.
    pub fn from_parts(host: &str, port: u16) -> NodeAddr {
        if host.contains(':') {
            NodeAddr::new(format!("[{host}]:{port}"))
        } else {
            NodeAddr::new(format!("{host}:{port}"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host part, without brackets.
    pub fn host(&self) -> &str {
        let host = self.0.rsplit_once(':').map_or(&*self.0, |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A master and its replicas, serving some slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub master: NodeAddr,
    pub replicas: Vec<NodeAddr>,
    /// The master's node id; empty when only a MOVED named it.
    pub id: Arc<str>,
    /// The master's config epoch: of two claims on a slot, the higher wins.
    pub epoch: u64,
    /// The cluster flags the master `fail` or `fail?` (it may be failing over).
    pub failing: bool,
}

impl Shard {
    /// A master known only by its address (from a MOVED).
    pub fn at(master: NodeAddr) -> Shard {
        Shard { master, replicas: Vec::new(), id: "".into(), epoch: 0, failing: false }
    }
}

/// Marks a slot no shard serves.
const UNSERVED: u16 = u16::MAX;

/// Which shard serves each slot, at one moment.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotMap {
    version: u64,
    shards: Vec<Shard>,
    /// Every node of the cluster, with slots or without, masters and replicas.
    nodes: Vec<NodeAddr>,
    /// Index into `shards` for every slot, or `UNSERVED`.
    slots: Box<[u16]>,
}

impl fmt::Debug for SlotMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotMap")
            .field("version", &self.version)
            .field("shards", &self.shards)
            .field("served", &self.served_slots())
            .finish()
    }
}

impl SlotMap {
    /// The map before anything is known: no slot is served.
    pub fn empty() -> SlotMap {
        SlotMap {
            version: 0,
            shards: Vec::new(),
            nodes: Vec::new(),
            slots: vec![UNSERVED; SLOT_COUNT].into_boxed_slice(),
        }
    }

    /// Builds a map from `(first slot, last slot, shard)` ranges, merging
    /// ranges of the same master into one shard; the cluster's members are
    /// the shards' nodes.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u16, u16, Shard)>) -> SlotMap {
        let mut map = SlotMap::empty();
        for (first, last, shard) in ranges {
            let index = match map.shards.iter().position(|s| s.master == shard.master) {
                Some(index) => index,
                None => {
                    map.shards.push(shard);
                    map.shards.len() - 1
                }
            };
            let last = usize::from(last).min(SLOT_COUNT - 1);
            for slot in usize::from(first)..=last {
                map.slots[slot] = index as u16;
            }
        }
        let nodes = map.shards.iter().flat_map(|s| std::iter::once(&s.master).chain(&s.replicas)).cloned().collect();
        map.with_nodes(nodes)
    }

    /// The same map, with `nodes` as the cluster's members (those without
    /// slots included).
    pub fn with_nodes(mut self, mut nodes: Vec<NodeAddr>) -> SlotMap {
        nodes.sort_unstable();
        nodes.dedup();
        self.nodes = nodes;
        self
    }

    /// A monotonically increasing number; 0 for the empty map.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn with_version(mut self, version: u64) -> SlotMap {
        self.version = version;
        self
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Every node of the cluster, sorted.
    pub fn nodes(&self) -> &[NodeAddr] {
        &self.nodes
    }

    /// Is `addr` a node of the cluster (or a master a MOVED named)?
    pub fn knows(&self, addr: &NodeAddr) -> bool {
        self.nodes.binary_search(addr).is_ok() || self.shards.iter().any(|s| &s.master == addr)
    }

    /// The shard serving `slot`.
    pub fn shard(&self, slot: Slot) -> Option<&Shard> {
        self.shard_index(slot).map(|index| &self.shards[index])
    }

    /// The index (into [`SlotMap::shards`]) of the shard serving `slot`.
    pub fn shard_index(&self, slot: Slot) -> Option<usize> {
        match self.slots[slot.index()] {
            UNSERVED => None,
            index => Some(usize::from(index)),
        }
    }

    /// The first slot of each shard that serves any, in slot order: where a
    /// command for every master is sent, one per master.
    pub fn first_slots(&self) -> Vec<Slot> {
        let mut seen = vec![false; self.shards.len()];
        let mut out = Vec::with_capacity(self.shards.len());
        for (slot, &index) in self.slots.iter().enumerate() {
            if let Some(seen) = seen.get_mut(usize::from(index)).filter(|seen| !**seen) {
                *seen = true;
                out.extend(Slot::new(slot as u16));
            }
        }
        out
    }

    pub fn master(&self, slot: Slot) -> Option<&NodeAddr> {
        self.shard_index(slot).map(|index| &self.shards[index].master)
    }

    /// How many slots each shard serves, in the order of [`SlotMap::shards`].
    pub fn slot_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.shards.len()];
        for &index in self.slots.iter().filter(|&&index| index != UNSERVED) {
            counts[usize::from(index)] += 1;
        }
        counts
    }

    /// How many slots have a master.
    pub fn served_slots(&self) -> usize {
        self.slots.iter().filter(|&&index| index != UNSERVED).count()
    }

    /// Moves `slot` to the master at `addr` (after a MOVED).
    pub fn set_master(&mut self, slot: Slot, addr: &NodeAddr) {
        let index = match self.shards.iter().position(|s| &s.master == addr) {
            Some(index) => index,
            None => {
                self.shards.push(Shard::at(addr.clone()));
                self.shards.len() - 1
            }
        };
        self.slots[slot.index()] = index as u16;
    }

    /// Same slots, shards and nodes, whatever the version.
    pub fn same_layout(&self, other: &SlotMap) -> bool {
        self.shards == other.shards && self.slots == other.slots && self.nodes == other.nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(addr: &str) -> Shard {
        Shard::at(NodeAddr::new(addr))
    }

    #[test]
    fn ranges_become_a_lookup() {
        let map =
            SlotMap::from_ranges([(0, 5460, shard("a:1")), (5461, 10922, shard("b:1")), (10923, 16383, shard("a:1"))]);
        assert_eq!(map.shards().len(), 2);
        assert_eq!(map.master(Slot::new(0).unwrap()).map(NodeAddr::as_str), Some("a:1"));
        assert_eq!(map.master(Slot::new(6000).unwrap()).map(NodeAddr::as_str), Some("b:1"));
        assert_eq!(map.master(Slot::new(16383).unwrap()).map(NodeAddr::as_str), Some("a:1"));
        assert_eq!(map.served_slots(), SLOT_COUNT);
        let firsts: Vec<u16> = map.first_slots().iter().map(|s| s.index() as u16).collect();
        assert_eq!(firsts, vec![0, 5461]);
    }

    #[test]
    fn moved_slots_change_one_entry() {
        let map = SlotMap::from_ranges([(0, 100, shard("a:1"))]);
        let slot = Slot::new(7).unwrap();
        let mut moved = map.clone();
        moved.set_master(slot, &NodeAddr::new("c:1"));
        assert_eq!(moved.master(slot).map(NodeAddr::as_str), Some("c:1"));
        assert_eq!(moved.master(Slot::new(8).unwrap()).map(NodeAddr::as_str), Some("a:1"));
        assert_eq!(moved.served_slots(), 101);
        assert!(!map.same_layout(&moved));
    }

    #[test]
    fn hosts_are_split_from_ports() {
        assert_eq!(NodeAddr::new("127.0.0.1:7001").host(), "127.0.0.1");
        assert_eq!(NodeAddr::from_parts("::1", 7001).as_str(), "[::1]:7001");
        assert_eq!(NodeAddr::from_parts("::1", 7001).host(), "::1");
    }
}
