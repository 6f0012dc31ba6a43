//! The command table and what it says about a request: which command it is
//! (subcommands included), whether its arity is right, how it must be routed
//! and where its keys are. Routing kinds only: never which node.
//!
//! `table.rs` is generated from Redis's `COMMAND` (see
//! `scripts/gen-command-table.py`); `policy.rs` turns that data into routing
//! kinds; `keys.rs` finds keys by key spec.

mod family;
mod keys;
mod policy;
pub mod spec;
mod table;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::LazyLock;

pub use family::Family;
pub use keys::{InvalidKeys, KeyPositions, key_positions};
pub use policy::{Blocking, Combine, KeyFinder, Keyed, Local, PubSub, Route, config_readable};
pub use spec::Command;
pub use table::{COMMANDS, REDIS_VERSION};

use crate::resp::Request;

/// A command as slotgate knows it: Redis's metadata and its routing kind.
#[derive(Debug)]
pub struct Entry {
    pub command: &'static Command,
    pub route: Route,
    subcommands: Vec<Entry>,
}

impl Entry {
    fn new(command: &'static Command, extra: &'static [Command]) -> Entry {
        let mut subcommands: Vec<Entry> = command.subcommands.iter().map(|sub| Entry::new(sub, &[])).collect();
        let prefix = format!("{}|", command.name);
        for sub in extra.iter().filter(|sub| sub.name.starts_with(&prefix)) {
            if command.subcommand(&sub.name.as_bytes()[prefix.len()..]).is_none() {
                subcommands.push(Entry::new(sub, &[]));
            }
        }
        Entry { command, route: policy::route_of(command), subcommands }
    }

    /// The subcommand `name` of a container, in any letter case.
    pub fn subcommand(&self, name: &[u8]) -> Option<&Entry> {
        let skip = self.command.name.len() + 1;
        self.subcommands.iter().find(|sub| sub.command.name.as_bytes()[skip..].eq_ignore_ascii_case(name))
    }

    /// A container's subcommands (CONFIG's, CLIENT's, ...); empty for other commands.
    pub fn subcommands(&self) -> &[Entry] {
        &self.subcommands
    }
}

/// Subcommands newer than the generated table that clients send on connect
/// whatever the server's version, and that slotgate answers itself.
static EXTRA: &[Command] = &[Command {
    name: "client|setinfo",
    arity: 4,
    flags: spec::Flags(spec::flag::NOSCRIPT | spec::flag::LOADING | spec::flag::STALE),
    acl: spec::Acl(spec::acl::SLOW | spec::acl::CONNECTION),
    tips: spec::Tips::NONE,
    key_specs: &[],
    subcommands: &[],
}];

/// Why a request names no command slotgate can route, in Redis's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupError {
    UnknownCommand,
    /// The container (CLIENT, OBJECT, ...) has no such subcommand.
    UnknownSubcommand(&'static Command),
    WrongArity(&'static Command),
}

type Table = HashMap<&'static [u8], Entry, BuildHasherDefault<NameHasher>>;

static TABLE: LazyLock<Table> =
    LazyLock::new(|| COMMANDS.iter().map(|command| (command.name.as_bytes(), Entry::new(command, EXTRA))).collect());

/// The longest command name in Redis 7 is 20 bytes; longer names are unknown.
const MAX_NAME: usize = 32;

/// The entry for a top-level command name, in any letter case.
pub fn lookup_name(name: &[u8]) -> Option<&'static Entry> {
    if name.len() > MAX_NAME {
        return None;
    }
    let mut lower = [0u8; MAX_NAME];
    let lower = &mut lower[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    TABLE.get(&*lower)
}

/// Every top-level command slotgate knows, in no particular order.
pub fn all() -> impl Iterator<Item = &'static Entry> {
    TABLE.values()
}

/// The entry that decides how `req` is routed: its command, or its
/// subcommand for a container, with the arity checked as Redis does.
pub fn lookup(req: &Request) -> Result<&'static Entry, LookupError> {
    resolve(lookup_name(req.name()).ok_or(LookupError::UnknownCommand)?, req)
}

/// Remembers a client's last command name: clients repeat commands, and a
/// comparison is cheaper than hashing the name again.
#[derive(Debug, Default)]
pub struct LookupCache(Option<&'static Entry>);

impl LookupCache {
    /// Like [`lookup`], trying the last command first.
    pub fn lookup(&mut self, req: &Request) -> Result<&'static Entry, LookupError> {
        let top = match self.0 {
            Some(last) if last.command.name.as_bytes().eq_ignore_ascii_case(req.name()) => last,
            _ => {
                let found = lookup_name(req.name()).ok_or(LookupError::UnknownCommand)?;
                self.0 = Some(found);
                found
            }
        };
        resolve(top, req)
    }
}

fn resolve(entry: &'static Entry, req: &Request) -> Result<&'static Entry, LookupError> {
    let entry = match req.arg(1) {
        Some(sub) if !entry.subcommands.is_empty() => {
            entry.subcommand(sub).ok_or(LookupError::UnknownSubcommand(entry.command))?
        }
        _ => entry,
    };
    if entry.command.arity_ok(req.argc()) { Ok(entry) } else { Err(LookupError::WrongArity(entry.command)) }
}

/// FxHash: command names are short and trusted-length, so a fast
/// non-cryptographic hash is enough (the table is fixed; input only picks a bucket).
#[derive(Default)]
struct NameHasher(u64);

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_case_and_checks_arity() {
        let req = Request::from_args(&["gEt", "k"]);
        assert_eq!(lookup(&req).map(|e| e.command.name), Ok("get"));
        let req = Request::from_args(&["GET"]);
        assert!(matches!(lookup(&req), Err(LookupError::WrongArity(c)) if c.name == "get"));
        let req = Request::from_args(&["NOSUCH", "x"]);
        assert_eq!(lookup(&req).map(|e| e.command.name), Err(LookupError::UnknownCommand));
        let req = Request::from_args(&["x".repeat(100)]);
        assert!(lookup(&req).is_err());
    }

    #[test]
    fn the_cache_gives_what_lookup_gives() {
        let mut cache = LookupCache::default();
        for args in [
            &["get", "k"][..],
            &["GET", "k"],
            &["set", "k", "v"],
            &["GET"],
            &["client", "id"],
            &["nosuch"],
            &["get", "x"],
        ] {
            let req = Request::from_args(args);
            assert_eq!(cache.lookup(&req).map(|e| e.command.name), lookup(&req).map(|e| e.command.name), "{args:?}");
        }
    }

    #[test]
    fn subcommands_are_resolved() {
        let req = Request::from_args(&["client", "SETNAME", "x"]);
        assert_eq!(lookup(&req).map(|e| e.command.name), Ok("client|setname"));
        let req = Request::from_args(&["CLIENT", "setinfo", "LIB-NAME", "x"]);
        assert_eq!(lookup(&req).map(|e| e.route), Ok(Route::Local(Local::ClientSetInfo)));
        let req = Request::from_args(&["client", "nosuch"]);
        assert!(matches!(lookup(&req), Err(LookupError::UnknownSubcommand(c)) if c.name == "client"));
        let req = Request::from_args(&["client", "setname"]);
        assert!(matches!(lookup(&req), Err(LookupError::WrongArity(c)) if c.name == "client|setname"));
        // COMMAND alone is valid; CLIENT alone is not.
        assert!(lookup(&Request::from_args(&["COMMAND"])).is_ok());
        assert!(matches!(lookup(&Request::from_args(&["CLIENT"])), Err(LookupError::WrongArity(_))));
    }
}
