//! The shape of one command's metadata, exactly as Redis describes it in
//! `COMMAND INFO`: arity, flags, ACL categories, request/response tips and
//! key specs. The data itself lives in the generated `table.rs`.

/// A Redis command (or a container's subcommand, named `container|sub`).
#[derive(Debug, PartialEq, Eq)]
pub struct Command {
    /// Lower-case name; subcommands are `container|sub` as Redis names them.
    pub name: &'static str,
    /// Redis arity: `n` means exactly `n` arguments (name included), `-n` at least `n`.
    pub arity: i16,
    pub flags: Flags,
    pub acl: Acl,
    pub tips: Tips,
    /// Where the keys are, in Redis's key-spec language.
    pub key_specs: &'static [KeySpec],
    /// Subcommands of a container command (CLIENT, OBJECT, ...), sorted by name.
    pub subcommands: &'static [Command],
}

impl Command {
    /// Does `argc` (command name included) satisfy the arity?
    pub fn arity_ok(&self, argc: usize) -> bool {
        let arity = self.arity as isize;
        let argc = argc as isize;
        if arity >= 0 { argc == arity } else { argc >= -arity }
    }

    /// The subcommand named `name` (case-insensitive), if this is a container.
    pub fn subcommand(&self, name: &[u8]) -> Option<&'static Command> {
        let base = self.name.len() + 1;
        self.subcommands.iter().find(|sub| sub.name.as_bytes()[base..].eq_ignore_ascii_case(name))
    }

    /// May a client that has not authenticated run it (AUTH, HELLO, QUIT, RESET)?
    pub fn runs_before_auth(&self) -> bool {
        self.flags.contains(flag::NO_AUTH)
    }

    /// Does it name keys? Shard channels (SPUBLISH, SSUBSCRIBE) have key
    /// specs too, flagged `not_key`: they are not keys.
    pub fn names_keys(&self) -> bool {
        self.key_specs.iter().any(|spec| !spec.flags.contains(key::NOT_KEY))
    }

    /// The container's name (`client` for `client|setname`), or the name itself.
    pub fn container_name(&self) -> &'static str {
        self.name.split('|').next().unwrap_or(self.name)
    }
}

/// Command flags from `COMMAND INFO` (`write`, `readonly`, `blocking`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags(pub u32);

impl Flags {
    pub fn contains(self, bit: u32) -> bool {
        self.0 & bit == bit
    }
}

/// The bits of [`Flags`], one per Redis command flag.
pub mod flag {
    pub const WRITE: u32 = 1 << 0;
    pub const READONLY: u32 = 1 << 1;
    pub const DENYOOM: u32 = 1 << 2;
    pub const MODULE: u32 = 1 << 3;
    pub const ADMIN: u32 = 1 << 4;
    pub const PUBSUB: u32 = 1 << 5;
    pub const NOSCRIPT: u32 = 1 << 6;
    pub const BLOCKING: u32 = 1 << 7;
    pub const LOADING: u32 = 1 << 8;
    pub const STALE: u32 = 1 << 9;
    pub const SKIP_MONITOR: u32 = 1 << 10;
    pub const SKIP_SLOWLOG: u32 = 1 << 11;
    pub const ASKING: u32 = 1 << 12;
    pub const FAST: u32 = 1 << 13;
    pub const NO_AUTH: u32 = 1 << 14;
    pub const MAY_REPLICATE: u32 = 1 << 15;
    pub const NO_MANDATORY_KEYS: u32 = 1 << 16;
    pub const NO_ASYNC_LOADING: u32 = 1 << 17;
    pub const NO_MULTI: u32 = 1 << 18;
    pub const MOVABLE_KEYS: u32 = 1 << 19;
    pub const ALLOW_BUSY: u32 = 1 << 20;

    /// Names as `COMMAND INFO` prints them, for the table test.
    pub const NAMES: &[(u32, &str)] = &[
        (WRITE, "write"),
        (READONLY, "readonly"),
        (DENYOOM, "denyoom"),
        (MODULE, "module"),
        (ADMIN, "admin"),
        (PUBSUB, "pubsub"),
        (NOSCRIPT, "noscript"),
        (BLOCKING, "blocking"),
        (LOADING, "loading"),
        (STALE, "stale"),
        (SKIP_MONITOR, "skip_monitor"),
        (SKIP_SLOWLOG, "skip_slowlog"),
        (ASKING, "asking"),
        (FAST, "fast"),
        (NO_AUTH, "no_auth"),
        (MAY_REPLICATE, "may_replicate"),
        (NO_MANDATORY_KEYS, "no_mandatory_keys"),
        (NO_ASYNC_LOADING, "no_async_loading"),
        (NO_MULTI, "no_multi"),
        (MOVABLE_KEYS, "movablekeys"),
        (ALLOW_BUSY, "allow_busy"),
    ];
}

/// ACL categories (`@read`, `@dangerous`, ...), kept for ACL rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acl(pub u32);

impl Acl {
    pub fn contains(self, bit: u32) -> bool {
        self.0 & bit == bit
    }
}

/// The bits of [`Acl`], one per Redis ACL category.
pub mod acl {
    pub const KEYSPACE: u32 = 1 << 0;
    pub const READ: u32 = 1 << 1;
    pub const WRITE: u32 = 1 << 2;
    pub const SET: u32 = 1 << 3;
    pub const SORTEDSET: u32 = 1 << 4;
    pub const LIST: u32 = 1 << 5;
    pub const HASH: u32 = 1 << 6;
    pub const STRING: u32 = 1 << 7;
    pub const BITMAP: u32 = 1 << 8;
    pub const HYPERLOGLOG: u32 = 1 << 9;
    pub const GEO: u32 = 1 << 10;
    pub const STREAM: u32 = 1 << 11;
    pub const PUBSUB: u32 = 1 << 12;
    pub const ADMIN: u32 = 1 << 13;
    pub const FAST: u32 = 1 << 14;
    pub const SLOW: u32 = 1 << 15;
    pub const BLOCKING: u32 = 1 << 16;
    pub const DANGEROUS: u32 = 1 << 17;
    pub const CONNECTION: u32 = 1 << 18;
    pub const TRANSACTION: u32 = 1 << 19;
    pub const SCRIPTING: u32 = 1 << 20;

    /// Names as `COMMAND INFO` prints them (without the `@`).
    pub const NAMES: &[(u32, &str)] = &[
        (KEYSPACE, "keyspace"),
        (READ, "read"),
        (WRITE, "write"),
        (SET, "set"),
        (SORTEDSET, "sortedset"),
        (LIST, "list"),
        (HASH, "hash"),
        (STRING, "string"),
        (BITMAP, "bitmap"),
        (HYPERLOGLOG, "hyperloglog"),
        (GEO, "geo"),
        (STREAM, "stream"),
        (PUBSUB, "pubsub"),
        (ADMIN, "admin"),
        (FAST, "fast"),
        (SLOW, "slow"),
        (BLOCKING, "blocking"),
        (DANGEROUS, "dangerous"),
        (CONNECTION, "connection"),
        (TRANSACTION, "transaction"),
        (SCRIPTING, "scripting"),
    ];
}

/// Redis's command tips: how a cluster client should fan a command out and
/// merge the answers (`request_policy`, `response_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tips {
    pub request: RequestPolicy,
    pub response: ResponsePolicy,
    /// `nondeterministic_output` or `nondeterministic_output_order`.
    pub nondeterministic: bool,
}

impl Tips {
    pub const NONE: Tips =
        Tips { request: RequestPolicy::Default, response: ResponsePolicy::Default, nondeterministic: false };
}

/// Which nodes a keyless or multi-key command must reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestPolicy {
    /// By its keys, or any node when it has none.
    Default,
    AllNodes,
    AllShards,
    MultiShard,
    Special,
}

/// How the answers of several nodes become one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponsePolicy {
    Default,
    OneSucceeded,
    AllSucceeded,
    AggLogicalAnd,
    AggLogicalOr,
    AggMin,
    AggMax,
    AggSum,
    Special,
}

/// One key spec: where to start looking, and how to find the keys from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub begin: BeginSearch,
    pub find: FindKeys,
    pub flags: KeyFlags,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginSearch {
    /// The first key is at this argument index.
    Index(i32),
    /// The first key follows `keyword`, searched from `start_from`
    /// (negative: counted from the end, searching backwards).
    Keyword {
        keyword: &'static str,
        start_from: i32,
    },
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys up to `last_key` (relative to the first key; negative: from the end),
    /// every `key_step`; `limit` divides the remaining arguments when `last_key` is -1.
    Range {
        last_key: i32,
        key_step: i32,
        limit: i32,
    },
    /// The key count is at `keynum_idx` (relative), keys start at `first_key` (relative).
    Keynum {
        keynum_idx: i32,
        first_key: i32,
        key_step: i32,
    },
    Unknown,
}

/// Key-spec flags (`RO`, `RW`, `not_key`, `incomplete`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFlags(pub u16);

impl KeyFlags {
    pub fn contains(self, bit: u16) -> bool {
        self.0 & bit == bit
    }
}

/// The bits of [`KeyFlags`].
pub mod key {
    pub const RO: u16 = 1 << 0;
    pub const RW: u16 = 1 << 1;
    pub const OW: u16 = 1 << 2;
    pub const RM: u16 = 1 << 3;
    pub const ACCESS: u16 = 1 << 4;
    pub const UPDATE: u16 = 1 << 5;
    pub const INSERT: u16 = 1 << 6;
    pub const DELETE: u16 = 1 << 7;
    pub const NOT_KEY: u16 = 1 << 8;
    pub const INCOMPLETE: u16 = 1 << 9;
    pub const VARIABLE_FLAGS: u16 = 1 << 10;

    /// Names as `COMMAND INFO` prints them.
    pub const NAMES: &[(u16, &str)] = &[
        (RO, "RO"),
        (RW, "RW"),
        (OW, "OW"),
        (RM, "RM"),
        (ACCESS, "access"),
        (UPDATE, "update"),
        (INSERT, "insert"),
        (DELETE, "delete"),
        (NOT_KEY, "not_key"),
        (INCOMPLETE, "incomplete"),
        (VARIABLE_FLAGS, "variable_flags"),
    ];
}
