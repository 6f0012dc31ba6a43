//! How slotgate routes each command: derived from Redis's own metadata by a
//! few rules, plus one table of the commands where a proxy must differ from a
//! cluster client (answered locally, refused, or routed by a special rule).
//! It says what kind of routing a command needs, never where.

use std::time::Duration;

use super::spec::{Command, RequestPolicy, ResponsePolicy, flag};
use crate::resp::Request;

/// The routing kind of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// slotgate answers it itself, about its own client.
    Local(Local),
    /// Goes to the master of its keys' slot.
    Keyed(Keyed),
    /// Has no keys and needs no cluster-wide view: any master answers it.
    AnyMaster,
    /// CONFIG GET: any master answers (every master runs the same
    /// configuration), and only harmless parameters are shown of its answer.
    ConfigGet,
    /// Needs every master (KEYS, DBSIZE, FLUSHALL, SCRIPT LOAD, ...); their
    /// answers are combined into one.
    Broadcast(Combine),
    /// SCAN: one master at a time, the cursor saying which.
    Scan,
    /// CLUSTER COUNTKEYSINSLOT: the master of the slot named by argument 2.
    SlotArgument,
    /// SUBSCRIBE and its kin: the session keeps the client's subscriptions.
    PubSub(PubSub),
    /// PUBLISH: to the node where slotgate's subscribers listen, so that
    /// its count of receivers includes them.
    Publish,
    /// WAIT: on the master of the client's last write.
    Wait,
    /// Not routed; the client gets an error naming the command and this reason.
    Refused(&'static str),
}

/// The commands that change a client's subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSub {
    Subscribe,
    PSubscribe,
    SSubscribe,
    Unsubscribe,
    PUnsubscribe,
    SUnsubscribe,
}

/// How the answers of several nodes become the one reply a single server
/// would give: Redis's response policies, plus the few special ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// MGET: the values, in the order the keys were asked for.
    InKeyOrder,
    /// DEL, EXISTS, DBSIZE: the sum of the counts.
    Sum,
    /// MSET, FLUSHALL, SCRIPT LOAD: the first answer, unless one failed.
    AllSucceeded,
    /// SCRIPT KILL, FUNCTION KILL: the first success, else the first error.
    OneSucceeded,
    /// SCRIPT EXISTS: element by element, true only where every node says so.
    LogicalAnd,
    /// LASTSAVE: the oldest.
    Min,
    /// KEYS: every node's elements.
    Concat,
    /// RANDOMKEY: any node's key, null only when every node has none.
    AnyNonNull,
    /// INFO: one server's view, with counts summed and a proxy section.
    Info,
    /// PUBSUB CHANNELS: every node's elements, each once.
    Union,
    /// PUBSUB NUMSUB: `[name, count, ...]` with the counts summed.
    PairSum,
}

/// Commands slotgate answers without a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    Ping,
    Echo,
    Hello,
    Auth,
    Quit,
    Reset,
    Select,
    ClientId,
    ClientGetName,
    ClientSetName,
    ClientSetInfo,
    /// CLIENT LIST, INFO, KILL, REPLY, NO-EVICT: about slotgate's own clients.
    ClientList,
    ClientInfo,
    ClientKill,
    ClientReply,
    ClientNoEvict,
    /// ACL WHOAMI: the user this client is logged in as.
    AclWhoAmI,
    /// CLUSTER KEYSLOT: computed by slotgate.
    ClusterKeySlot,
    /// READONLY, READWRITE, ASKING: the client believes it talks to a standalone server.
    ClusterOnly,
    /// The transaction commands: the session runs them on the client's own
    /// node connection.
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
}

/// How a keyed command finds its keys and what it needs from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyed {
    pub finder: KeyFinder,
    /// Keys in several slots are split into one request per slot, whose
    /// answers combine this way; `None`: all keys must share a slot.
    pub split: Option<Combine>,
    /// It runs user code (EVAL, FCALL: `@scripting` with keys), whose error
    /// replies may read like cluster redirects without being them.
    pub runs_scripts: bool,
    pub blocking: Blocking,
}

/// What CONFIG GET shows through slotgate: parameters the same on every
/// node and harmless to show; never passwords, never the cluster's own settings.
const CONFIG_READABLE: &[&str] = &[
    "appendfsync",
    "appendonly",
    "hash-max-listpack-entries",
    "hash-max-listpack-value",
    "list-max-listpack-size",
    "lua-time-limit",
    "busy-reply-threshold",
    "maxmemory",
    "maxmemory-policy",
    "proto-max-bulk-len",
    "save",
    "set-max-intset-entries",
    "slowlog-log-slower-than",
    "slowlog-max-len",
    "stream-node-max-bytes",
    "stream-node-max-entries",
    "timeout",
    "zset-max-listpack-entries",
    "zset-max-listpack-value",
];

/// May CONFIG GET show parameter `name` through slotgate?
pub fn config_readable(name: &[u8]) -> bool {
    CONFIG_READABLE.iter().any(|p| p.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether a keyed command may block its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocking {
    Never,
    /// BLPOP, BZPOPMIN, ...: Redis's `blocking` flag.
    Always,
    /// XREAD and XREADGROUP block only with their BLOCK option.
    WithBlockOption,
}

impl Blocking {
    /// Does this request block? XREAD-style options come before STREAMS;
    /// GROUP takes two arguments and COUNT one, so names equal to "block"
    /// among them are not mistaken for the option.
    pub fn blocks(self, req: &Request) -> bool {
        match self {
            Blocking::Never => false,
            Blocking::Always => true,
            Blocking::WithBlockOption => block_option(req).is_some(),
        }
    }

    /// How long this request may block: `None` if it does not,
    /// `Duration::MAX` for ever (a timeout of 0). A timeout Redis would
    /// refuse counts as no block: the node answers at once.
    pub fn block_time(self, req: &Request) -> Option<Duration> {
        if !self.blocks(req) {
            return None;
        }
        let (arg, unit) = match self {
            Blocking::Never => return None,
            // BLMPOP and BZMPOP take the timeout first; the others last, in seconds.
            Blocking::Always
                if req.name().eq_ignore_ascii_case(b"blmpop") || req.name().eq_ignore_ascii_case(b"bzmpop") =>
            {
                (req.arg(1), 1.0)
            }
            Blocking::Always => (req.arg(req.argc().checked_sub(1)?), 1.0),
            Blocking::WithBlockOption => (req.arg(block_option(req)? + 1), 0.001),
        };
        let seconds =
            std::str::from_utf8(arg?).ok()?.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0)? * unit;
        Some(if seconds == 0.0 { Duration::MAX } else { Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX) })
    }
}

/// The position of XREAD's or XREADGROUP's BLOCK option. Options come
/// before STREAMS; GROUP takes two arguments and COUNT one, so names equal
/// to "block" among them are not mistaken for the option.
fn block_option(req: &Request) -> Option<usize> {
    let mut i = 1;
    while let Some(arg) = req.arg(i) {
        if arg.eq_ignore_ascii_case(b"streams") {
            return None;
        }
        if arg.eq_ignore_ascii_case(b"block") {
            return Some(i);
        }
        i += if arg.eq_ignore_ascii_case(b"group") {
            3
        } else if arg.eq_ignore_ascii_case(b"count") {
            2
        } else {
            1
        };
    }
    None
}

/// Where a command's keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFinder {
    /// Redis's key specs say it all.
    Specs,
    /// SORT/SORT_RO: the STORE key can be anywhere; the rules of Redis's `sortGetKeys`.
    Sort,
}

const PER_NODE: &str = "its answer describes one node and has no cluster-wide equivalent; ask the nodes";
const ADMIN: &str = "administrative commands are not available through slotgate; run them against the nodes";
const CLIENT: &str = "this CLIENT subcommand is about node connections slotgate shares between clients";
const TRACKING: &str = "client-side caching needs invalidations from every node to each client; not supported";
const CLUSTER: &str = "slotgate presents the cluster as one server; of the CLUSTER commands only KEYSLOT, COUNTKEYSINSLOT and INFO are available";
const ACL: &str = "of the ACL commands only WHOAMI is available; slotgate's users are set in its configuration";
const SCRIPT_DEBUG: &str = "script debugging needs a dedicated node connection; not supported";

/// Commands whose routing is not what the rules below derive, by full name;
/// a container's name covers its subcommands unless one is listed itself.
const OVERRIDES: &[(&str, Route)] = &[
    ("ping", Route::Local(Local::Ping)),
    ("echo", Route::Local(Local::Echo)),
    ("hello", Route::Local(Local::Hello)),
    ("auth", Route::Local(Local::Auth)),
    ("quit", Route::Local(Local::Quit)),
    ("reset", Route::Local(Local::Reset)),
    ("select", Route::Local(Local::Select)),
    ("readonly", Route::Local(Local::ClusterOnly)),
    ("readwrite", Route::Local(Local::ClusterOnly)),
    ("asking", Route::Local(Local::ClusterOnly)),
    ("client", Route::Refused(CLIENT)),
    ("client|id", Route::Local(Local::ClientId)),
    ("client|getname", Route::Local(Local::ClientGetName)),
    ("client|setname", Route::Local(Local::ClientSetName)),
    ("client|setinfo", Route::Local(Local::ClientSetInfo)),
    ("client|list", Route::Local(Local::ClientList)),
    ("client|help", Route::AnyMaster),
    ("client|tracking", Route::Refused(TRACKING)),
    ("client|trackinginfo", Route::Refused(TRACKING)),
    ("client|caching", Route::Refused(TRACKING)),
    ("client|getredir", Route::Refused(TRACKING)),
    ("client|info", Route::Local(Local::ClientInfo)),
    ("client|kill", Route::Local(Local::ClientKill)),
    ("client|reply", Route::Local(Local::ClientReply)),
    ("client|no-evict", Route::Local(Local::ClientNoEvict)),
    ("cluster", Route::Refused(CLUSTER)),
    ("cluster|keyslot", Route::Local(Local::ClusterKeySlot)),
    ("cluster|countkeysinslot", Route::SlotArgument),
    ("cluster|info", Route::AnyMaster),
    ("scan", Route::Scan),
    ("info", Route::Broadcast(Combine::Info)),
    ("randomkey", Route::Broadcast(Combine::AnyNonNull)),
    // Data is saved everywhere at least as recently as the oldest save.
    ("lastsave", Route::Broadcast(Combine::Min)),
    ("acl", Route::Refused(ACL)),
    ("acl|whoami", Route::Local(Local::AclWhoAmI)),
    ("script|debug", Route::Refused(SCRIPT_DEBUG)),
    ("multi", Route::Local(Local::Multi)),
    ("exec", Route::Local(Local::Exec)),
    ("discard", Route::Local(Local::Discard)),
    ("watch", Route::Local(Local::Watch)),
    ("unwatch", Route::Local(Local::Unwatch)),
    ("wait", Route::Wait),
    ("publish", Route::Publish),
    ("subscribe", Route::PubSub(PubSub::Subscribe)),
    ("psubscribe", Route::PubSub(PubSub::PSubscribe)),
    ("ssubscribe", Route::PubSub(PubSub::SSubscribe)),
    ("unsubscribe", Route::PubSub(PubSub::Unsubscribe)),
    ("punsubscribe", Route::PubSub(PubSub::PUnsubscribe)),
    ("sunsubscribe", Route::PubSub(PubSub::SUnsubscribe)),
    ("pubsub|channels", Route::Broadcast(Combine::Union)),
    ("pubsub|shardchannels", Route::Broadcast(Combine::Union)),
    ("pubsub|numsub", Route::Broadcast(Combine::PairSum)),
    ("pubsub|shardnumsub", Route::Broadcast(Combine::PairSum)),
    ("pubsub|numpat", Route::Broadcast(Combine::Sum)),
    // redis-benchmark and many clients read it on connect.
    ("config|get", Route::ConfigGet),
    (
        "spublish",
        Route::Keyed(Keyed { finder: KeyFinder::Specs, split: None, runs_scripts: false, blocking: Blocking::Never }),
    ),
    (
        "xread",
        Route::Keyed(Keyed {
            finder: KeyFinder::Specs,
            split: None,
            runs_scripts: false,
            blocking: Blocking::WithBlockOption,
        }),
    ),
    (
        "xreadgroup",
        Route::Keyed(Keyed {
            finder: KeyFinder::Specs,
            split: None,
            runs_scripts: false,
            blocking: Blocking::WithBlockOption,
        }),
    ),
    (
        "sort",
        Route::Keyed(Keyed { finder: KeyFinder::Sort, split: None, runs_scripts: false, blocking: Blocking::Never }),
    ),
    (
        "sort_ro",
        Route::Keyed(Keyed { finder: KeyFinder::Sort, split: None, runs_scripts: false, blocking: Blocking::Never }),
    ),
    ("migrate", Route::Refused(ADMIN)),
];

/// How a `multi_shard` command's parts combine, if it can be split at all:
/// only when each slot's part stands on its own. MSETNX (a minimum over
/// parts) cannot: one part's keys could be set while another's are refused.
fn split_of(command: &Command) -> Option<Combine> {
    if command.tips.request != RequestPolicy::MultiShard {
        return None;
    }
    match command.tips.response {
        ResponsePolicy::Default => Some(Combine::InKeyOrder),
        ResponsePolicy::AggSum => Some(Combine::Sum),
        ResponsePolicy::AllSucceeded => Some(Combine::AllSucceeded),
        _ => None,
    }
}

/// How the answers of a command sent to every master combine.
fn combine_of(command: &Command) -> Option<Combine> {
    match command.tips.response {
        ResponsePolicy::Default => Some(Combine::Concat),
        ResponsePolicy::AggSum => Some(Combine::Sum),
        ResponsePolicy::AllSucceeded => Some(Combine::AllSucceeded),
        ResponsePolicy::OneSucceeded => Some(Combine::OneSucceeded),
        ResponsePolicy::AggLogicalAnd => Some(Combine::LogicalAnd),
        ResponsePolicy::AggMin => Some(Combine::Min),
        _ => None,
    }
}

/// The routing kind of `command` (a subcommand when the command has them).
pub fn route_of(command: &Command) -> Route {
    let container = command.container_name();
    let overridden = OVERRIDES
        .iter()
        .find(|(name, _)| *name == command.name)
        .or_else(|| OVERRIDES.iter().find(|(name, _)| *name == container));
    if let Some((_, route)) = overridden {
        return *route;
    }
    if command.flags.contains(flag::ADMIN) {
        return Route::Refused(ADMIN);
    }
    if !command.key_specs.is_empty() {
        return Route::Keyed(Keyed {
            finder: KeyFinder::Specs,
            split: split_of(command),
            runs_scripts: command.acl.contains(super::spec::acl::SCRIPTING),
            blocking: if command.flags.contains(flag::BLOCKING) { Blocking::Always } else { Blocking::Never },
        });
    }
    if matches!(command.tips.request, RequestPolicy::AllShards | RequestPolicy::AllNodes) {
        // Masters only: replicas get data, scripts and functions from them.
        return combine_of(command).map_or(Route::Refused(PER_NODE), Route::Broadcast);
    }
    if command.tips.request != RequestPolicy::Default || command.acl.contains(super::spec::acl::DANGEROUS) {
        return Route::Refused(ADMIN);
    }
    Route::AnyMaster
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::lookup_name;

    fn route(name: &str) -> Route {
        let mut parts = name.split('|');
        let top = lookup_name(parts.next().unwrap_or_default().as_bytes()).map(|e| e.command);
        let command = match (top, parts.next()) {
            (Some(c), Some(sub)) => c.subcommand(sub.as_bytes()),
            (c, None) => c,
            _ => None,
        };
        route_of(command.unwrap_or_else(|| panic!("{name} is not in the table")))
    }

    #[test]
    fn data_commands_route_by_key() {
        for name in ["get", "set", "hset", "lpush", "sadd", "zadd", "xadd", "setbit", "pfadd", "geoadd", "expire"] {
            assert!(matches!(route(name), Route::Keyed(Keyed { split: None, .. })), "{name}");
        }
        for name in ["object|encoding", "memory|usage", "xinfo|stream", "xgroup|create", "eval", "fcall"] {
            assert!(matches!(route(name), Route::Keyed(_)), "{name}");
        }
        assert!(matches!(route("mget"), Route::Keyed(Keyed { split: Some(Combine::InKeyOrder), .. })));
        assert!(matches!(route("mset"), Route::Keyed(Keyed { split: Some(Combine::AllSucceeded), .. })));
        for name in ["del", "exists", "touch", "unlink"] {
            assert!(matches!(route(name), Route::Keyed(Keyed { split: Some(Combine::Sum), .. })), "{name}");
        }
        // All or nothing: cannot be split.
        for name in ["msetnx", "rename", "smove", "sinterstore", "lmove", "pfmerge", "bitop"] {
            assert!(matches!(route(name), Route::Keyed(Keyed { split: None, .. })), "{name}");
        }
    }

    #[test]
    fn what_a_shared_connection_cannot_carry_is_refused() {
        for name in ["blpop", "bzpopmin", "blmove", "brpoplpush", "blmpop", "bzmpop"] {
            assert!(matches!(route(name), Route::Keyed(Keyed { blocking: Blocking::Always, .. })), "{name}");
        }
        for name in ["client|tracking", "client|pause"] {
            assert!(matches!(route(name), Route::Refused(_)), "{name}");
        }
        for name in ["cluster|slots", "cluster|nodes", "config|set", "shutdown", "debug", "monitor", "migrate"] {
            assert!(matches!(route(name), Route::Refused(_)), "{name}");
        }
        for name in ["replicaof", "failover", "config|rewrite", "memory|stats", "function|stats", "slowlog|get"] {
            assert!(matches!(route(name), Route::Refused(_)), "{name}");
        }
    }

    #[test]
    fn cluster_wide_commands_combine_by_their_response_policy() {
        assert_eq!(route("keys"), Route::Broadcast(Combine::Concat));
        assert_eq!(route("dbsize"), Route::Broadcast(Combine::Sum));
        for name in ["flushall", "flushdb", "script|load", "script|flush", "function|load", "function|delete"] {
            assert_eq!(route(name), Route::Broadcast(Combine::AllSucceeded), "{name}");
        }
        assert_eq!(route("script|exists"), Route::Broadcast(Combine::LogicalAnd));
        assert_eq!(route("script|kill"), Route::Broadcast(Combine::OneSucceeded));
        assert_eq!(route("randomkey"), Route::Broadcast(Combine::AnyNonNull));
        assert_eq!(route("info"), Route::Broadcast(Combine::Info));
        assert_eq!(route("lastsave"), Route::Broadcast(Combine::Min));
        assert_eq!(route("scan"), Route::Scan);
        assert_eq!(route("cluster|keyslot"), Route::Local(Local::ClusterKeySlot));
        assert_eq!(route("cluster|countkeysinslot"), Route::SlotArgument);
    }

    #[test]
    fn xread_blocks_only_with_its_block_option() {
        let blocks = |args: &[&str]| Blocking::WithBlockOption.blocks(&Request::from_args(args));
        assert!(blocks(&["XREAD", "COUNT", "1", "BLOCK", "0", "STREAMS", "s", "$"]));
        assert!(!blocks(&["XREAD", "STREAMS", "block", "0"]));
        assert!(!blocks(&["XREADGROUP", "GROUP", "block", "block", "STREAMS", "s", ">"]));
        assert!(blocks(&["XREADGROUP", "GROUP", "g", "c", "BLOCK", "10", "STREAMS", "s", ">"]));
        assert!(!Blocking::Never.blocks(&Request::from_args(&["XREAD", "BLOCK", "0"])));
    }

    #[test]
    fn block_times_come_from_each_commands_timeout_argument() {
        let time = |kind: Blocking, args: &[&str]| kind.block_time(&Request::from_args(args));
        assert_eq!(time(Blocking::Always, &["BLPOP", "a", "b", "1.5"]), Some(Duration::from_millis(1500)));
        assert_eq!(time(Blocking::Always, &["BLPOP", "a", "0"]), Some(Duration::MAX), "0 waits for ever");
        assert_eq!(time(Blocking::Always, &["BLMPOP", "2", "1", "k", "LEFT"]), Some(Duration::from_secs(2)));
        assert_eq!(time(Blocking::Always, &["BLPOP", "a", "-1"]), None, "refused at once");
        assert_eq!(time(Blocking::Always, &["BLPOP", "a", "soon"]), None);
        let xread = ["XREAD", "BLOCK", "250", "STREAMS", "s", "$"];
        assert_eq!(time(Blocking::WithBlockOption, &xread), Some(Duration::from_millis(250)));
        assert_eq!(time(Blocking::WithBlockOption, &["XREAD", "STREAMS", "s", "$"]), None);
        let group = ["XREADGROUP", "GROUP", "g", "block", "BLOCK", "0", "STREAMS", "s", ">"];
        assert_eq!(time(Blocking::WithBlockOption, &group), Some(Duration::MAX), "a consumer named block");
        assert_eq!(time(Blocking::Never, &["GET", "k"]), None);
    }

    #[test]
    fn only_script_commands_run_user_code() {
        for name in ["eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"] {
            assert!(matches!(route(name), Route::Keyed(Keyed { runs_scripts: true, .. })), "{name}");
        }
        for name in ["get", "set", "mget", "sort", "xread", "spublish"] {
            assert!(matches!(route(name), Route::Keyed(Keyed { runs_scripts: false, .. })), "{name}");
        }
    }

    #[test]
    fn config_get_shows_only_harmless_parameters() {
        for name in ["save", "APPENDONLY", "maxmemory"] {
            assert!(config_readable(name.as_bytes()), "{name}");
        }
        for name in ["masterauth", "requirepass", "cluster-enabled", "*", "dir"] {
            assert!(!config_readable(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn keyless_commands_go_to_any_master_or_stay_local() {
        for name in ["time", "lolwut", "command", "command|count", "command|info", "command|docs", "config|get"] {
            assert!(matches!(route(name), Route::AnyMaster | Route::ConfigGet), "{name}");
        }
        assert_eq!(route("ping"), Route::Local(Local::Ping));
        // Refused with state, so that what follows a refused MULTI never runs.
        assert_eq!(route("multi"), Route::Local(Local::Multi));
        assert_eq!(route("exec"), Route::Local(Local::Exec));
        assert_eq!(route("client|setname"), Route::Local(Local::ClientSetName));
        assert_eq!(route("acl|whoami"), Route::Local(Local::AclWhoAmI));
        assert!(matches!(route("acl|setuser"), Route::Refused(_)));
    }
}
