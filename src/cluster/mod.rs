//! The cluster as slotgate sees it: hash slots, immutable slot-map snapshots
//! held in an `ArcSwap`, the topology task that is their only writer, and the
//! parsing of redirects. No client sockets live here.

mod redirect;
mod slot;
mod slotmap;
mod topology;

pub use redirect::Redirect;
pub use slot::{SLOT_COUNT, Slot, key_slot};
pub use slotmap::{NodeAddr, Shard, SlotMap};
pub use topology::{Topology, TopologySettings};
