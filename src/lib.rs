//! slotgate: a Redis Cluster proxy. Applications that only know a single
//! Redis server connect to slotgate as if it were one; slotgate routes each
//! command by hash slot to the master that owns it, pipelines requests per
//! node, follows MOVED and ASK, splits and merges what one node cannot
//! answer alone, and keeps every client's replies in order.
//!
//! # Layout, in request-flow order
//!
//! - [`server`]: accepts clients and hands each to a worker thread.
//! - [`session`]: one client end to end: read a batch, route, await replies
//!   in order, write them back; local commands (PING, HELLO, CLIENT ...);
//!   the client's own node connections for transactions, blocking commands
//!   and subscriptions.
//! - [`fanout`]: multi-key commands split per slot, commands for every
//!   master, SCAN across masters, and the merge of their answers.
//! - [`resp`]: the wire format: the zero-copy request parser, the reply
//!   scanner (frame boundaries only), writers for local replies.
//! - [`command`]: the command table generated from Redis's `COMMAND`, the
//!   routing kind of each command, and key extraction by key spec.
//! - [`cluster`]: slots, slot-map snapshots in an `ArcSwap`, the topology
//!   task that refreshes them, redirect parsing.
//! - [`backend`]: pipelined, multiplexed node connections per worker, and
//!   one-client connections (dedicated, subscribed).
//! - [`write_queue`]: bytes waiting for a socket, large pieces not copied.
//! - [`error`]: the one place that decides which error a client sees.
//! - [`config`]: settings from defaults, file, environment and flags.
//! - [`live`]: the settings in force, swapped whole by a reload (SIGHUP).
//!
//! Dependencies point one way: `resp`, `command`, `cluster` <- `backend` <-
//! `fanout` <- `session` <- `live` <- `server`; `config` and `error` may be
//! used by any of them, and `write_queue` by `backend` and `session`.

pub mod backend;
pub mod cluster;
pub mod command;
pub mod config;
pub mod error;
pub mod fanout;
pub mod live;
pub mod metrics;
pub mod resp;
pub mod server;
pub mod session;
pub mod tls;
pub mod write_queue;
