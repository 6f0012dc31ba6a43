//! Command families for metrics: a small, fixed label set (never one label
//! per command name), taken from the command's ACL categories the way Redis
//! documents its command groups.

use super::spec::{Command, acl};

/// The group a command belongs to, as the metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    String,
    Bitmap,
    HyperLogLog,
    List,
    Hash,
    Set,
    SortedSet,
    Geo,
    Stream,
    PubSub,
    Scripting,
    Transaction,
    Connection,
    /// Generic key commands (DEL, EXPIRE, SCAN, ...).
    Keyspace,
    /// Everything else (INFO, CONFIG, ...).
    Server,
    /// A command slotgate does not know.
    Unknown,
}

impl Family {
    pub const ALL: [Family; 16] = [
        Family::String,
        Family::Bitmap,
        Family::HyperLogLog,
        Family::List,
        Family::Hash,
        Family::Set,
        Family::SortedSet,
        Family::Geo,
        Family::Stream,
        Family::PubSub,
        Family::Scripting,
        Family::Transaction,
        Family::Connection,
        Family::Keyspace,
        Family::Server,
        Family::Unknown,
    ];

    /// The family of `command`: its data type first (BITCOUNT is a bitmap
    /// command even though it reads a string), then what it is about.
    pub fn of(command: &Command) -> Family {
        const BY_CATEGORY: [(u32, Family); 14] = [
            (acl::BITMAP, Family::Bitmap),
            (acl::HYPERLOGLOG, Family::HyperLogLog),
            (acl::GEO, Family::Geo),
            (acl::STRING, Family::String),
            (acl::LIST, Family::List),
            (acl::HASH, Family::Hash),
            (acl::SORTEDSET, Family::SortedSet),
            (acl::SET, Family::Set),
            (acl::STREAM, Family::Stream),
            (acl::PUBSUB, Family::PubSub),
            (acl::SCRIPTING, Family::Scripting),
            (acl::TRANSACTION, Family::Transaction),
            (acl::CONNECTION, Family::Connection),
            (acl::KEYSPACE, Family::Keyspace),
        ];
        BY_CATEGORY.iter().find(|(bit, _)| command.acl.0 & bit != 0).map_or(Family::Server, |&(_, family)| family)
    }

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Family::String => "string",
            Family::Bitmap => "bitmap",
            Family::HyperLogLog => "hyperloglog",
            Family::List => "list",
            Family::Hash => "hash",
            Family::Set => "set",
            Family::SortedSet => "sortedset",
            Family::Geo => "geo",
            Family::Stream => "stream",
            Family::PubSub => "pubsub",
            Family::Scripting => "scripting",
            Family::Transaction => "transaction",
            Family::Connection => "connection",
            Family::Keyspace => "keyspace",
            Family::Server => "server",
            Family::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::lookup_name;

    fn family(name: &str) -> Family {
        lookup_name(name.as_bytes()).map_or(Family::Unknown, |e| Family::of(e.command))
    }

    #[test]
    fn commands_fall_in_their_redis_groups() {
        let cases = [
            ("get", Family::String),
            ("mset", Family::String),
            ("bitcount", Family::Bitmap),
            ("pfadd", Family::HyperLogLog),
            ("geoadd", Family::Geo),
            ("lpush", Family::List),
            ("hgetall", Family::Hash),
            ("sadd", Family::Set),
            ("zadd", Family::SortedSet),
            ("xadd", Family::Stream),
            ("publish", Family::PubSub),
            ("eval", Family::Scripting),
            ("multi", Family::Transaction),
            ("ping", Family::Connection),
            ("del", Family::Keyspace),
            ("info", Family::Server),
        ];
        for (name, expected) in cases {
            assert_eq!(family(name), expected, "{name}");
        }
        assert_eq!(
            Family::ALL.len(),
            Family::ALL.iter().map(|f| f.name()).collect::<std::collections::HashSet<_>>().len()
        );
    }
}
