//! Commands that need every master, answered as one server would: KEYS,
//! SCAN (a cursor across masters), DBSIZE, RANDOMKEY, INFO, LASTSAVE,
//! SCRIPT and FUNCTION (loaded everywhere, so any slot can run them),
//! FLUSHALL/FLUSHDB, the CLUSTER subcommands a client may use, and the
//! administrative commands slotgate refuses by name.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::collections::HashSet;

use redis::{Connection, Value};
use support::{Cluster, Proxy, connect, shared, slot_of};

fn client(protocol: &str) -> Connection {
    shared().proxy.client(protocol)
}

fn set_many(con: &mut Connection, keys: &[String]) {
    for chunk in keys.chunks(500) {
        let _: () = redis::cmd("MSET")
            .arg(chunk.iter().flat_map(|k| [k.as_str(), "v"]).collect::<Vec<_>>())
            .query(con)
            .unwrap();
    }
}

/// The keys of every master, asked of the nodes directly.
fn direct_dbsize() -> i64 {
    shared()
        .cluster
        .masters()
        .iter()
        .map(|&p| redis::cmd("DBSIZE").query::<i64>(&mut connect(p).unwrap()).unwrap())
        .sum()
}

#[test]
fn keys_come_from_every_master() {
    let mut con = client("resp3");
    let keys: Vec<String> = (0..300).map(|i| format!("wide:keys:{i}")).collect();
    set_many(&mut con, &keys);
    let found: Vec<String> = redis::cmd("KEYS").arg("wide:keys:*").query(&mut con).unwrap();
    assert_eq!(found.iter().cloned().collect::<HashSet<_>>(), keys.iter().cloned().collect::<HashSet<_>>());
    assert_eq!(found.len(), keys.len(), "no key twice");
}

#[test]
fn a_full_scan_returns_every_key() {
    for protocol in ["resp2", "resp3"] {
        let mut con = client(protocol);
        let keys: Vec<String> = (0..5000).map(|i| format!("wide:scan:{protocol}:{i}")).collect();
        set_many(&mut con, &keys);
        let hashes: Vec<String> = (0..20).map(|i| format!("wide:scan:{protocol}:h{i}")).collect();
        for hash in &hashes {
            let _: () = redis::cmd("HSET").arg(hash).arg("f").arg("v").query(&mut con).unwrap();
        }
        let scan = |con: &mut Connection, extra: &[&str]| {
            let (mut cursor, mut seen, mut calls) = (0u64, Vec::new(), 0);
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("wide:scan:{protocol}:*"))
                    .arg(extra)
                    .query(con)
                    .unwrap();
                seen.extend(batch);
                calls += 1;
                assert!(calls < 100_000, "SCAN never ends");
                if next == 0 {
                    return seen;
                }
                cursor = next;
            }
        };
        let seen = scan(&mut con, &["COUNT", "500"]);
        let unique: HashSet<String> = seen.iter().cloned().collect();
        let expected: HashSet<String> = keys.iter().chain(&hashes).cloned().collect();
        assert_eq!(unique, expected, "{protocol}: every key, and only the matching ones");
        let only_hashes: HashSet<String> = scan(&mut con, &["TYPE", "hash"]).into_iter().collect();
        assert_eq!(only_hashes, hashes.iter().cloned().collect(), "{protocol}: TYPE filters");
    }
    let error = redis::cmd("SCAN").arg("notanumber").query::<Value>(&mut client("resp2")).unwrap_err();
    assert_eq!(error.detail(), Some("invalid cursor"));
}

#[test]
fn counts_and_random_keys_cover_the_cluster() {
    let mut con = client("resp2");
    set_many(&mut con, &(0..30).map(|i| format!("wide:count:{i}")).collect::<Vec<_>>());
    // Stable while this test's keys exist: no test of this binary deletes keys.
    let direct = direct_dbsize();
    let through: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert!(through >= direct && through >= 30, "DBSIZE {through} sums every master ({direct} just before)");
    let key: String = redis::cmd("RANDOMKEY").query(&mut con).unwrap();
    let exists: i64 = redis::cmd("EXISTS").arg(&key).query(&mut con).unwrap();
    assert_eq!(exists, 1, "RANDOMKEY returns a key that exists");
    let _: i64 = redis::cmd("LASTSAVE").query(&mut con).unwrap();
}

#[test]
fn info_is_one_standalone_server_with_summed_keyspace() {
    for protocol in ["resp2", "resp3"] {
        let mut con = client(protocol);
        let text: String = redis::cmd("INFO").query(&mut con).unwrap();
        for field in [
            "redis_version:",
            "redis_mode:standalone",
            "cluster_enabled:0",
            "# Proxy",
            "slotgate_version:",
            "cluster_masters:3",
        ] {
            assert!(text.contains(field), "{protocol}: {field:?} missing from INFO:\n{text}");
        }
        let keyspace: String = redis::cmd("INFO").arg("keyspace").query(&mut con).unwrap();
        let keys: i64 = keyspace
            .lines()
            .find_map(|l| l.strip_prefix("db0:keys="))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        let direct = direct_dbsize();
        assert!(keys > 0 && keys <= direct + 1000, "{protocol}: db0 keys {keys} vs {direct}");
        assert!(!keyspace.contains("# Proxy"), "a section asked for by name comes alone");
    }
}

#[test]
fn scripts_loaded_once_run_on_every_slot() {
    let mut con = client("resp2");
    let script = "return redis.call('SET', KEYS[1], ARGV[1])";
    let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(script).query(&mut con).unwrap();
    let keys: Vec<String> = (0..50).map(|i| format!("wide:script:{i}")).collect();
    assert!(keys.iter().map(|k| slot_of(k)).collect::<HashSet<_>>().len() >= 45);
    for key in &keys {
        let ok: String = redis::cmd("EVALSHA").arg(&sha).arg(1).arg(key).arg("x").query(&mut con).unwrap();
        assert_eq!(ok, "OK");
    }
    let exists: Vec<bool> = redis::cmd("SCRIPT").arg("EXISTS").arg(&sha).arg("0".repeat(40)).query(&mut con).unwrap();
    assert_eq!(exists, vec![true, false]);

    let library = "#!lua name=wide_lib\nredis.register_function('wide_get', function(keys) return redis.call('GET', keys[1]) end)";
    let name: String = redis::cmd("FUNCTION").arg("LOAD").arg("REPLACE").arg(library).query(&mut con).unwrap();
    assert_eq!(name, "wide_lib");
    for key in &keys {
        let value: String = redis::cmd("FCALL").arg("wide_get").arg(1).arg(key).query(&mut con).unwrap();
        assert_eq!(value, "x");
    }
    let listed: Value = redis::cmd("FUNCTION").arg("LIST").arg("LIBRARYNAME").arg("wide_lib").query(&mut con).unwrap();
    assert!(format!("{listed:?}").contains("wide_get"));
    let _: () = redis::cmd("FUNCTION").arg("DELETE").arg("wide_lib").query(&mut con).unwrap();
    for &port in &shared().cluster.masters() {
        let left: Value = redis::cmd("FUNCTION")
            .arg("LIST")
            .arg("LIBRARYNAME")
            .arg("wide_lib")
            .query(&mut connect(port).unwrap())
            .unwrap();
        assert_eq!(left, Value::Array(vec![]), "deleted on master {port}");
    }
}

#[test]
fn cluster_subcommands_a_client_may_use() {
    let mut con = client("resp2");
    for key in ["a", "{user1000}.following", "wide:slot"] {
        let slot: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(&mut con).unwrap();
        assert_eq!(slot, slot_of(key));
    }
    let _: () = redis::cmd("SET").arg("wide:slot").arg(1).query(&mut con).unwrap();
    let count: i64 = redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot_of("wide:slot")).query(&mut con).unwrap();
    assert!(count >= 1);
    let error = redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(16384).query::<Value>(&mut con).unwrap_err();
    assert_eq!(error.detail(), Some("Invalid slot"));
    let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut con).unwrap();
    assert!(info.contains("cluster_state:ok"));
}

#[test]
fn administrative_commands_are_refused_by_name() {
    let mut con = client("resp2");
    for args in [
        &["CONFIG", "SET", "maxmemory", "0"][..],
        &["CONFIG", "REWRITE"],
        &["DEBUG", "SLEEP", "0"],
        &["SHUTDOWN"],
        &["MONITOR"],
        &["CLUSTER", "NODES"],
        &["MIGRATE", "127.0.0.1", "1", "k", "0", "1000"],
        &["REPLICAOF", "NO", "ONE"],
        &["FAILOVER"],
    ] {
        let error = redis::cmd(args[0]).arg(&args[1..]).query::<Value>(&mut con).unwrap_err();
        let name = args[0].to_lowercase();
        assert_eq!(error.code(), Some("ERR"), "{args:?}");
        assert!(error.detail().unwrap_or_default().contains(&format!("'{name}")), "{args:?}: {error}");
    }
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn flushall_and_flushdb_empty_every_master() {
    // Its own cluster: flushing would disturb the other tests.
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds(), &[]);
    proxy.wait_routing();
    let mut con = proxy.connection();
    for flush in [&["FLUSHALL"][..], &["FLUSHALL", "ASYNC"], &["FLUSHDB", "SYNC"], &["FLUSHDB"]] {
        set_many(&mut con, &(0..100).map(|i| format!("flush:{i}")).collect::<Vec<_>>());
        let size: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
        assert_eq!(size, 100);
        let _: () = redis::cmd(flush[0]).arg(&flush[1..]).query(&mut con).unwrap();
        for &port in &cluster.masters() {
            let left: i64 = redis::cmd("DBSIZE").query(&mut connect(port).unwrap()).unwrap();
            assert_eq!(left, 0, "{flush:?} emptied master {port}");
        }
    }
}

#[test]
fn wait_counts_the_replicas_that_have_this_clients_writes() {
    let mut con = client("resp2");
    // Each master of the shared cluster has one replica.
    let _: () = redis::cmd("SET").arg("wide:wait").arg("v").query(&mut con).unwrap();
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(0).query(&mut con).unwrap();
    assert_eq!(acked, 1, "the replica of the key's master has the write");
    // Two replicas never come: the timeout answers with the one there is.
    let start = std::time::Instant::now();
    let acked: i64 = redis::cmd("WAIT").arg(2).arg(300).query(&mut con).unwrap();
    assert_eq!(acked, 1);
    assert!(start.elapsed() >= std::time::Duration::from_millis(250), "WAIT returned before its timeout");
    // A replica that stops answering never has the next write: WAIT says 0.
    let cluster = &shared().cluster;
    let master = cluster.owner(slot_of("wide:wait"));
    let replicas: Vec<String> = redis::cmd("CLUSTER")
        .arg("REPLICAS")
        .arg(cluster.node(master).id())
        .query(&mut connect(master).unwrap())
        .unwrap();
    let replica: u16 = replicas[0]
        .split_whitespace()
        .nth(1)
        .and_then(|addr| addr.split('@').next()?.rsplit(':').next()?.parse().ok())
        .expect("the master's replica");
    cluster.node(replica).pause();
    let _: () = redis::cmd("SET").arg("wide:wait").arg("w").query(&mut con).unwrap();
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(300).query(&mut con).unwrap();
    cluster.node(replica).resume();
    assert_eq!(acked, 0, "a paused replica cannot have acknowledged the write");
    let error = redis::cmd("WAIT").arg(1).arg(-1).query::<Value>(&mut con).unwrap_err();
    assert_eq!(error.detail(), Some("timeout is negative"));
}
