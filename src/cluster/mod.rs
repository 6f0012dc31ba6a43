//! The cluster as slotgate sees it: hash slots, immutable slot-map snapshots
//! held in an `ArcSwap`, the topology task that is their only writer, and the
//! parsing of redirects, and how slotgate logs in to the nodes. No client
//! sockets live here.

mod login;
mod redirect;
mod slot;
mod slotmap;
mod topology;

pub use login::NodeLogin;
pub use redirect::Redirect;
pub use slot::{SLOT_COUNT, Slot, key_slot};
pub use slotmap::{NodeAddr, Shard, SlotMap};
pub use topology::{Topology, TopologySettings};
