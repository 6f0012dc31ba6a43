//! Several nodes' views, one map. Of the masters that claim a slot, the one
//! with the highest config epoch owns it: the rule Redis Cluster itself
//! applies, so a node on the minority side of a partition, or one just woken
//! from a pause, cannot turn the map back to a master that lost its slots.
//! The map in use counts as one more claim, as long as the nodes asked
//! still know its master (a cluster recreated from scratch restarts its
//! epochs, and its views must win).

use std::collections::HashSet;
use std::sync::Arc;

use super::discover::{ClusterNode, View};
use crate::cluster::SLOT_COUNT;
use crate::cluster::slot::Slot;
use crate::cluster::slotmap::{Shard, SlotMap};

/// Who serves a slot in the merged map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    None,
    /// `views[view].nodes[node]`.
    Fresh {
        view: usize,
        node: usize,
    },
    /// `current.shards()[index]`.
    Current(usize),
}

pub(super) fn merge(views: &[View], current: &SlotMap) -> SlotMap {
    let mut best = vec![(0u64, Owner::None); SLOT_COUNT];
    for (v, view) in views.iter().enumerate() {
        for (n, node) in view.nodes.iter().enumerate().filter(|(_, n)| n.is_master) {
            for &(first, last) in &node.slots {
                let slots = usize::from(first).min(SLOT_COUNT)..(usize::from(last) + 1).min(SLOT_COUNT);
                for claim in best.get_mut(slots).unwrap_or_default() {
                    if claim.1 == Owner::None || node.epoch > claim.0 {
                        *claim = (node.epoch, Owner::Fresh { view: v, node: n });
                    }
                }
            }
        }
    }
    let known: HashSet<&str> = views.iter().flat_map(|v| &v.nodes).map(|n| n.id.as_str()).collect();
    for (slot, claim) in best.iter_mut().enumerate() {
        let Some(index) = Slot::new(slot as u16).and_then(|slot| current.shard_index(slot)) else { continue };
        let shard = &current.shards()[index];
        if claim.1 != Owner::None && shard.epoch > claim.0 && known.contains(&*shard.id) {
            *claim = (shard.epoch, Owner::Current(index));
        }
    }
    let mut ranges = Vec::new();
    let mut start = 0;
    for slot in 1..=SLOT_COUNT {
        if slot < SLOT_COUNT && best[slot].1 == best[start].1 {
            continue;
        }
        let shard = match best[start].1 {
            Owner::None => None,
            Owner::Fresh { view, node } => Some(shard_of(&views[view], &views[view].nodes[node])),
            Owner::Current(index) => Some(current.shards()[index].clone()),
        };
        if let Some(shard) = shard {
            ranges.push((start as u16, (slot - 1) as u16, shard));
        }
        start = slot;
    }
    // A node that every view listing it flags failing is left out: its
    // connections close rather than retry for ever (a dead node stays in
    // CLUSTER NODES until forgotten). Should it come back, it is listed again.
    let alive: HashSet<&str> =
        views.iter().flat_map(|v| &v.nodes).filter(|n| !n.failing).map(|n| n.id.as_str()).collect();
    let members = views.iter().flat_map(|v| &v.nodes).filter(|n| alive.contains(n.id.as_str())).map(|n| n.addr.clone());
    let map = SlotMap::from_ranges(ranges);
    let members = members.chain(map.shards().iter().map(|s| s.master.clone())).collect();
    map.with_nodes(members)
}

/// `master` with the replicas `view` lists for it, failing ones left out.
fn shard_of(view: &View, master: &ClusterNode) -> Shard {
    let replicas = view
        .nodes
        .iter()
        .filter(|n| !n.is_master && !n.failing && n.master_id.as_deref() == Some(master.id.as_str()))
        .map(|n| n.addr.clone())
        .collect();
    let id = Arc::from(master.id.as_str());
    Shard { master: master.addr.clone(), replicas, id, epoch: master.epoch, failing: master.failing }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::slotmap::NodeAddr;

    fn master(id: &str, port: u16, epoch: u64, slots: &[(u16, u16)]) -> ClusterNode {
        ClusterNode {
            id: id.into(),
            addr: NodeAddr::from_parts("h", port),
            master_id: None,
            is_master: true,
            failing: false,
            epoch,
            slots: slots.to_vec(),
        }
    }

    fn replica(id: &str, port: u16, of: &str) -> ClusterNode {
        ClusterNode { master_id: Some(of.into()), is_master: false, ..master(id, port, 0, &[]) }
    }

    fn view(nodes: Vec<ClusterNode>) -> View {
        View { nodes, redis_version: None }
    }

    fn owner(map: &SlotMap, slot: u16) -> Option<&str> {
        map.master(Slot::new(slot).unwrap()).map(NodeAddr::as_str)
    }

    /// A failover seen by a current node, and the old master's stale view.
    fn failover_views() -> (View, View) {
        let current = view(vec![
            master("a", 1, 1, &[(0, 8191)]),
            master("b", 2, 2, &[]),
            replica("b", 2, "x"),
            master("c", 3, 7, &[(8192, 16383)]),
        ]);
        let stale =
            view(vec![master("a", 1, 1, &[(0, 8191)]), master("b", 2, 2, &[(8192, 16383)]), replica("c", 3, "b")]);
        (current, stale)
    }

    #[test]
    fn the_highest_epoch_wins_whatever_the_order_of_the_views() {
        let (current, stale) = failover_views();
        let views = [stale, current];
        let map = merge(&views, &SlotMap::empty());
        assert_eq!(owner(&map, 9000), Some("h:3"));
        assert_eq!(owner(&map, 0), Some("h:1"));
        assert_eq!(map.served_slots(), SLOT_COUNT);
    }

    #[test]
    fn a_stale_view_alone_does_not_turn_the_map_back() {
        let (current, stale) = failover_views();
        let map = merge(&[current], &SlotMap::empty());
        let after = merge(&[stale], &map);
        assert_eq!(owner(&after, 9000), Some("h:3"), "the promoted master keeps its slots");
        assert!(after.same_layout(&map));
    }

    #[test]
    fn a_recreated_cluster_replaces_the_map_despite_lower_epochs() {
        let (current, _) = failover_views();
        let map = merge(&[current], &SlotMap::empty());
        let fresh = view(vec![master("new1", 11, 1, &[(0, 16383)])]);
        let after = merge(&[fresh], &map);
        assert_eq!(owner(&after, 9000), Some("h:11"));
        assert!(!after.knows(&NodeAddr::from_parts("h", 3)), "the old nodes are forgotten");
    }

    #[test]
    fn replicas_and_slotless_members_are_kept_failed_nodes_are_not() {
        let nodes = vec![
            master("a", 1, 1, &[(0, 16383)]),
            replica("r", 4, "a"),
            ClusterNode { failing: true, ..replica("f", 5, "a") },
            master("e", 6, 3, &[]),
        ];
        let map = merge(&[view(nodes.clone())], &SlotMap::empty());
        assert_eq!(map.shards()[0].replicas, vec![NodeAddr::from_parts("h", 4)]);
        assert!(map.knows(&NodeAddr::from_parts("h", 6)), "a master without slots is a member");
        assert!(!map.knows(&NodeAddr::from_parts("h", 5)), "failing in every view that lists it");
        let seen_alive = view(vec![master("a", 1, 1, &[(0, 16383)]), replica("f", 5, "a")]);
        let map = merge(&[view(nodes), seen_alive], &SlotMap::empty());
        assert!(map.knows(&NodeAddr::from_parts("h", 5)), "one view sees it alive");
    }
}
