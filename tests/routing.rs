//! Routing: every data type's commands through slotgate answer exactly as the
//! cluster does (compared with the `redis` crate's own cluster client talking
//! to the nodes directly), in RESP2 and RESP3; keys land on the master that
//! owns their slot; hash tags and odd keys hash like `CLUSTER KEYSLOT`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{ProtocolVersion, Value};
use support::{keyslot, runtime, shared};

/// One command per line, `$` standing for a key prefix that differs between
/// the slotgate run and the direct run. Marked `~` when the reply's order is
/// not defined (sets), `?` when only its type is compared (time-dependent).
const SCRIPT: &[&str] = &[
    // strings
    "SET $s hello",
    "GET $s",
    "APPEND $s world",
    "STRLEN $s",
    "GETRANGE $s 0 3",
    "SETRANGE $s 0 J",
    "GETSET $s v2",
    "SET $n 10",
    "INCR $n",
    "INCRBY $n 5",
    "DECR $n",
    "DECRBY $n 2",
    "INCRBYFLOAT $n 1.5",
    "SETNX $s other",
    "SET $s x EX 100 GET",
    "GETDEL $s",
    "GET $missing",
    "SETEX $e 100 v",
    "PSETEX $e2 100000 v",
    "GETEX $e PERSIST",
    "MSET {$t}a 1 {$t}b 2",
    "MGET {$t}a {$t}b {$t}missing",
    "LCS {$t}a {$t}b",
    // hashes
    "HSET $h f1 v1 f2 v2 n 1",
    "HGET $h f1",
    "HMGET $h f1 f2 nope",
    "HGETALL $h",
    "HINCRBY $h n 2",
    "HINCRBYFLOAT $h n 0.25",
    "~HKEYS $h",
    "~HVALS $h",
    "HLEN $h",
    "HEXISTS $h f1",
    "HSETNX $h f1 x",
    "HSTRLEN $h f2",
    "HDEL $h f2",
    "HSCAN $h 0",
    // lists
    "RPUSH $l a b c d",
    "LPUSH $l z",
    "LRANGE $l 0 -1",
    "LINDEX $l 2",
    "LSET $l 0 y",
    "LINSERT $l BEFORE b x",
    "LPOS $l c",
    "LREM $l 1 x",
    "LLEN $l",
    "LPOP $l",
    "RPOP $l 2",
    "LTRIM $l 0 0",
    "LPUSHX $l w",
    "RPUSHX $missing w",
    "LMOVE $l $l LEFT RIGHT",
    "LRANGE $l 0 -1",
    // sets
    "SADD $set a b c",
    "~SMEMBERS $set",
    "SISMEMBER $set a",
    "SMISMEMBER $set a z",
    "SCARD $set",
    "SREM $set b",
    "SADD {$t}s1 a b",
    "SADD {$t}s2 b c",
    "~SINTER {$t}s1 {$t}s2",
    "~SUNION {$t}s1 {$t}s2",
    "SINTERCARD 2 {$t}s1 {$t}s2",
    // sorted sets
    "ZADD $z 1 a 2.5 b 3 c",
    "ZSCORE $z b",
    "ZINCRBY $z 1 a",
    "ZRANGE $z 0 -1 WITHSCORES",
    "ZREVRANGE $z 0 0",
    "ZRANGEBYSCORE $z 2 +inf",
    "ZRANK $z c",
    "ZREVRANK $z c",
    "ZCARD $z",
    "ZCOUNT $z 0 10",
    "ZMSCORE $z a nope",
    "ZLEXCOUNT $z - +",
    "ZPOPMIN $z",
    "ZREM $z c",
    "ZADD {$t}z1 1 a 2 b",
    "ZUNIONSTORE {$t}z2 1 {$t}z1 WEIGHTS 2",
    "ZRANGE {$t}z2 0 -1 WITHSCORES",
    // streams
    "XADD $x 1-1 f v",
    "XADD $x 2-1 f w",
    "XLEN $x",
    "XRANGE $x - +",
    "XREVRANGE $x + - COUNT 1",
    "XREAD COUNT 5 STREAMS $x 0",
    "XGROUP CREATE $x g 0",
    "XREADGROUP GROUP g c COUNT 1 STREAMS $x >",
    "XACK $x g 1-1",
    "XPENDING $x g",
    "XDEL $x 2-1",
    "XTRIM $x MAXLEN 0",
    // bitmaps
    "SETBIT $b 7 1",
    "GETBIT $b 7",
    "BITCOUNT $b",
    "BITPOS $b 1",
    "BITFIELD $b INCRBY u8 8 3 GET u8 8",
    // HyperLogLog
    "PFADD $p a b c",
    "PFCOUNT $p",
    // geo
    "GEOADD $g 13.361389 38.115556 Palermo 15.087269 37.502669 Catania",
    "GEOPOS $g Palermo",
    "GEODIST $g Palermo Catania km",
    "GEOHASH $g Palermo",
    "GEOSEARCH $g FROMLONLAT 15 37 BYRADIUS 200 km ASC WITHDIST",
    // expiry and keyspace
    "SET $k v",
    "EXPIRE $k 100",
    "?TTL $k",
    "?PTTL $k",
    "PERSIST $k",
    "TTL $k",
    "EXPIREAT $k 4102444800",
    "EXPIRETIME $k",
    "TYPE $k",
    "EXISTS $k",
    "TOUCH $k",
    "OBJECT ENCODING $k",
    "DUMP $k",
    "RENAME {$t}a {$t}c",
    "COPY {$t}c {$t}d",
    "DEL $k",
    "UNLINK $missing",
    // scripts
    "EVAL \"return redis.call('incr', KEYS[1])\" 1 $n2",
    "EVAL \"return ARGV[1]\" 0 x",
    // local and keyless
    "PING",
    "ECHO hi",
];

/// Runs the script with `prefix` on `connection`, returning every reply
/// (printed, with the key prefix replaced by `$` again).
async fn run_script<C: redis::aio::ConnectionLike>(connection: &mut C, prefix: &str) -> Vec<(String, String)> {
    let mut replies = Vec::new();
    for line in SCRIPT {
        let (mode, line) = match line.chars().next() {
            Some(c @ ('~' | '?')) => (Some(c), &line[1..]),
            _ => (None, *line),
        };
        let words = split_words(&line.replace('$', prefix));
        let mut cmd = redis::cmd(&words[0]);
        for word in &words[1..] {
            cmd.arg(word);
        }
        let reply = match cmd.query_async::<Value>(connection).await {
            Ok(value) => value,
            Err(e) => Value::SimpleString(format!("error: {e}")),
        };
        let reply = match mode {
            Some('~') => sorted(reply),
            Some('?') => Value::SimpleString(format!("type {}", type_name(&reply))),
            _ => reply,
        };
        replies.push((line.to_string(), format!("{reply:?}").replace(prefix, "$")));
    }
    replies
}

/// Words of a script line; double quotes group words.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').expect("closing quote");
            words.push(quoted[..end].to_string());
            rest = quoted[end + 1..].trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            words.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    words
}

fn sorted(value: Value) -> Value {
    match value {
        Value::Array(mut items) | Value::Set(mut items) => {
            items.sort_by_key(|v| format!("{v:?}"));
            Value::Array(items)
        }
        other => other,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Int(_) => "int",
        Value::Nil => "nil",
        _ => "other",
    }
}

async fn proxy_connection(protocol: ProtocolVersion) -> MultiplexedConnection {
    let query = if protocol == ProtocolVersion::RESP3 { "?protocol=resp3" } else { "" };
    support::async_connection(&format!("{}{query}", shared().proxy.url())).await
}

async fn direct_connection(protocol: ProtocolVersion) -> ClusterConnection {
    let nodes: Vec<String> = shared().cluster.nodes.iter().map(|n| format!("redis://127.0.0.1:{}/", n.port)).collect();
    let client = redis::cluster::ClusterClientBuilder::new(nodes).use_protocol(protocol).build().unwrap();
    client.get_async_connection().await.unwrap()
}

fn compare_with_direct(protocol: ProtocolVersion, label: &str) {
    runtime().block_on(async {
        let mut proxy = proxy_connection(protocol).await;
        let mut direct = direct_connection(protocol).await;
        let through_proxy = run_script(&mut proxy, &format!("{label}:p:")).await;
        let direct_replies = run_script(&mut direct, &format!("{label}:d:")).await;
        for ((line, got), (_, want)) in through_proxy.iter().zip(&direct_replies) {
            assert_eq!(got, want, "`{line}` through slotgate differs from the cluster's own answer");
        }
    });
}

#[test]
fn every_data_type_answers_like_the_cluster_in_resp2() {
    compare_with_direct(ProtocolVersion::RESP2, "r2");
}

#[test]
fn every_data_type_answers_like_the_cluster_in_resp3() {
    compare_with_direct(ProtocolVersion::RESP3, "r3");
}

#[test]
fn resp3_types_arrive_as_resp3() {
    runtime().block_on(async {
        let mut proxy = proxy_connection(ProtocolVersion::RESP3).await;
        let _: () = redis::cmd("HSET").arg("t3:h").arg("f").arg("v").query_async(&mut proxy).await.unwrap();
        let map: Value = redis::cmd("HGETALL").arg("t3:h").query_async(&mut proxy).await.unwrap();
        assert!(matches!(map, Value::Map(_)), "{map:?}");
        let _: () = redis::cmd("SADD").arg("t3:s").arg("a").query_async(&mut proxy).await.unwrap();
        let set: Value = redis::cmd("SMEMBERS").arg("t3:s").query_async(&mut proxy).await.unwrap();
        assert!(matches!(set, Value::Set(_)), "{set:?}");
        let _: () = redis::cmd("ZADD").arg("t3:z").arg("1.5").arg("a").query_async(&mut proxy).await.unwrap();
        let score: Value = redis::cmd("ZSCORE").arg("t3:z").arg("a").query_async(&mut proxy).await.unwrap();
        assert_eq!(score, Value::Double(1.5));
        let nil: Value = redis::cmd("GET").arg("t3:missing").query_async(&mut proxy).await.unwrap();
        assert_eq!(nil, Value::Nil);
    });
}

#[test]
fn ten_thousand_keys_land_on_the_masters_that_own_them() {
    let shared = shared();
    runtime().block_on(async {
        let mut proxy = proxy_connection(ProtocolVersion::RESP2).await;
        let mut pipe = redis::pipe();
        for i in 0..10_000 {
            pipe.set(format!("spread:{i}"), i).ignore();
        }
        let _: () = pipe.query_async(&mut proxy).await.unwrap();
        let mut pipe = redis::pipe();
        for i in 0..10_000 {
            pipe.get(format!("spread:{i}"));
        }
        let values: Vec<i64> = pipe.query_async(&mut proxy).await.unwrap();
        assert_eq!(values, (0..10_000).collect::<Vec<i64>>());
    });
    // Each key is on the master that owns its slot (asked directly), and only there.
    let masters = shared.cluster.masters();
    let mut per_master = std::collections::HashMap::new();
    let mut connections: std::collections::HashMap<u16, redis::Connection> =
        masters.iter().map(|&port| (port, shared.cluster.node(port).connection())).collect();
    let slots = support::slot_ranges(masters[0]);
    for i in 0..10_000 {
        let key = format!("spread:{i}");
        let slot = i64::from(slotgate::cluster::key_slot(key.as_bytes()).number());
        let owner = slots.iter().find(|(first, last, _)| (*first..=*last).contains(&slot)).unwrap().2;
        *per_master.entry(owner).or_insert(0) += 1;
        let value: Option<i64> = redis::cmd("GET").arg(&key).query(connections.get_mut(&owner).unwrap()).unwrap();
        assert_eq!(value, Some(i), "{key} is not on its master {owner}");
    }
    assert_eq!(per_master.len(), 3);
    assert!(per_master.values().all(|&n| n > 2_500), "keys spread over all masters: {per_master:?}");
}

#[test]
fn hash_tags_and_odd_keys_hash_like_cluster_keyslot() {
    let shared = shared();
    let port = shared.cluster.masters()[0];
    let keys: Vec<Vec<u8>> = [
        &b"{user1000}.following"[..],
        b"{user1000}.followers",
        b"foo{}{bar}",
        b"foo{{bar}}zap",
        b"foo{bar}{zap}",
        b"{}",
        b"{",
        b"}",
        b"}{",
        b"{a",
        b"a}",
        b"tag-at-end{x}",
        b"{}{x}",
        b"\x00\xff\x10binary{\x00}",
        b"",
        b"plain",
    ]
    .iter()
    .map(|k| k.to_vec())
    .chain((0..200).map(|i| format!("random-key-{i}-{}", i * 7919).into_bytes()))
    .collect();
    let mut proxy = shared.proxy.connection();
    for key in &keys {
        let slot = keyslot(port, key);
        assert_eq!(slotgate::cluster::key_slot(key).number(), slot, "slot of {:?}", String::from_utf8_lossy(key));
        let _: () = redis::cmd("SET").arg(key).arg(key).query(&mut proxy).unwrap();
        let owner = shared.cluster.owner(slot);
        let stored: Vec<u8> = redis::cmd("GET").arg(key).query(&mut shared.cluster.node(owner).connection()).unwrap();
        assert_eq!(&stored, key);
    }
}

#[test]
fn local_commands_answer_like_a_single_server() {
    let mut c = shared().proxy.connection();
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let echo: String = redis::cmd("PING").arg("hey").query(&mut c).unwrap();
    assert_eq!(echo, "hey");
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();
    let err = redis::cmd("SELECT").arg(1).query::<()>(&mut c).unwrap_err();
    assert!(err.to_string().contains("SELECT is not allowed in cluster mode"), "{err}");
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut c).unwrap();
    assert!(id > 0);
    let name: Option<String> = redis::cmd("CLIENT").arg("GETNAME").query(&mut c).unwrap();
    assert_eq!(name, None);
    let _: () = redis::cmd("CLIENT").arg("SETNAME").arg("legacy-app").query(&mut c).unwrap();
    let name: Option<String> = redis::cmd("CLIENT").arg("GETNAME").query(&mut c).unwrap();
    assert_eq!(name.as_deref(), Some("legacy-app"));
    let err = redis::cmd("CLIENT").arg("SETNAME").arg("has space").query::<()>(&mut c).unwrap_err();
    assert!(err.to_string().contains("Client names cannot contain spaces"), "{err}");
    let _: () = redis::cmd("CLIENT").arg("SETINFO").arg("LIB-NAME").arg("legacy").query(&mut c).unwrap();
    let time: Vec<String> = redis::cmd("TIME").query(&mut c).unwrap();
    assert_eq!(time.len(), 2);
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut c).unwrap();
    assert!(count >= 200);
    let info: Value = redis::cmd("COMMAND").arg("INFO").arg("get").query(&mut c).unwrap();
    assert!(matches!(info, Value::Array(ref a) if a.len() == 1), "{info:?}");
    let docs: Value = redis::cmd("COMMAND").arg("DOCS").arg("get").query(&mut c).unwrap();
    assert!(!matches!(docs, Value::Nil));
}

#[test]
fn what_cannot_run_gets_a_clear_error_naming_it() {
    let mut c = shared().proxy.connection();
    let cases: &[(&[&str], &str)] = &[
        (&["CLUSTER", "NODES"], "slotgate cannot run 'cluster|nodes'"),
        (&["CLIENT", "TRACKING", "on"], "slotgate cannot run 'client|tracking'"),
        (&["CONFIG", "SET", "maxmemory", "0"], "slotgate cannot run 'config|set': administrative"),
        (&["RENAME", "a", "b"], "Keys in request don't hash to the same slot"),
        (&["JSON.GET", "k"], "unknown command 'JSON.GET'"),
        (&["GET"], "wrong number of arguments for 'get' command"),
        (&["OBJECT", "NOPE", "k"], "unknown subcommand 'NOPE'. Try OBJECT HELP."),
    ];
    for (args, want) in cases {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        let err = cmd.query::<Value>(&mut c).unwrap_err().to_string();
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // The connection is still fine afterwards.
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}
