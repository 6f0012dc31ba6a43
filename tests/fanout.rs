//! Multi-key commands across slots: MGET, MSET, DEL, UNLINK, EXISTS and
//! TOUCH are split into one request per slot and their answers merged into
//! the reply one server would give, in its place among pipelined replies.
//! Commands whose keys must share a slot get Redis Cluster's own CROSSSLOT.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::collections::HashSet;

use redis::{Connection, Value};
use support::{connect, shared, slot_of};

/// A connection to slotgate speaking `protocol` ("resp2" or "resp3").
fn client(protocol: &str) -> Connection {
    shared().proxy.client(protocol)
}

const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

fn error_text(error: &redis::RedisError) -> String {
    format!("{} {}", error.code().unwrap_or_default(), error.detail().unwrap_or_default())
}

#[test]
fn mget_of_1000_keys_across_every_master_keeps_request_order() {
    for protocol in ["resp2", "resp3"] {
        let mut con = client(protocol);
        let keys: Vec<String> = (0..1000).map(|i| format!("fanout:mget:{protocol}:{i}")).collect();
        // Every third key stays missing.
        let pairs: Vec<(String, String)> =
            keys.iter().enumerate().filter(|(i, _)| i % 3 != 0).map(|(i, k)| (k.clone(), format!("v{i}"))).collect();
        let _: () = redis::cmd("MSET").arg(&pairs).query(&mut con).unwrap();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
        let expected: Vec<Option<String>> =
            (0..1000).map(|i| if i % 3 == 0 { None } else { Some(format!("v{i}")) }).collect();
        assert_eq!(values, expected, "{protocol}");
        // The keys really are spread: each master holds some of them.
        let cluster = &shared().cluster;
        let owners: HashSet<u16> = keys.iter().map(|k| cluster.owner(slot_of(k))).collect();
        assert_eq!(owners.len(), cluster.masters().len(), "{protocol}: keys on every master");
        for (key, value) in pairs.iter().step_by(97) {
            let owner = cluster.owner(slot_of(key));
            let direct: Option<String> = redis::cmd("GET").arg(key).query(&mut connect(owner).unwrap()).unwrap();
            assert_eq!(direct.as_ref(), Some(value), "{key} is stored on the master of its slot");
        }
    }
}

#[test]
fn a_masters_parts_answered_across_many_reads_arrive_whole_and_in_order() {
    // 240 keys of 8 KB: each master's parts go to it as one run, and its
    // ~640 KB of replies come back over many reads, a run cut anywhere.
    let mut con = client("resp3");
    let keys: Vec<String> = (0..240).map(|i| format!("fanout:long:{i}")).collect();
    let value = |i: usize| format!("{i}:{}", "v".repeat(8 * 1024));
    let pairs: Vec<(String, String)> = keys.iter().enumerate().map(|(i, k)| (k.clone(), value(i))).collect();
    let _: () = redis::cmd("MSET").arg(&pairs).query(&mut con).unwrap();
    let mut pipe = redis::pipe();
    for round in 0..5 {
        pipe.cmd("MGET").arg(&keys);
        pipe.cmd("GET").arg(&keys[round]);
    }
    let replies: Vec<Value> = pipe.query(&mut con).unwrap();
    let expected: Vec<String> = (0..keys.len()).map(value).collect();
    for (round, chunk) in replies.chunks(2).enumerate() {
        let values: Vec<String> = redis::from_redis_value(chunk[0].clone()).unwrap();
        assert!(values == expected, "round {round}: the values come back in key order");
        let one: String = redis::from_redis_value(chunk[1].clone()).unwrap();
        assert_eq!(one, value(round));
    }
}

#[test]
fn counting_commands_sum_over_slots() {
    let mut con = client("resp2");
    let keys: Vec<String> = (0..50).map(|i| format!("fanout:count:{i}")).collect();
    let _: () = redis::cmd("MSET")
        .arg(keys.iter().flat_map(|k| [k.as_str(), "x"]).collect::<Vec<_>>())
        .query(&mut con)
        .unwrap();
    let missing = "fanout:count:missing";
    let exists: i64 = redis::cmd("EXISTS").arg(&keys).arg(missing).arg(&keys[0]).query(&mut con).unwrap();
    assert_eq!(exists, 51, "EXISTS counts a repeated key twice, like Redis");
    let touched: i64 = redis::cmd("TOUCH").arg(&keys).arg(missing).query(&mut con).unwrap();
    assert_eq!(touched, 50);
    let deleted: i64 = redis::cmd("DEL").arg(&keys[..25]).arg(missing).query(&mut con).unwrap();
    assert_eq!(deleted, 25);
    let unlinked: i64 = redis::cmd("UNLINK").arg(&keys).query(&mut con).unwrap();
    assert_eq!(unlinked, 25);
    let exists: i64 = redis::cmd("EXISTS").arg(&keys).query(&mut con).unwrap();
    assert_eq!(exists, 0);
}

#[test]
fn split_replies_keep_their_place_in_a_pipeline() {
    for protocol in ["resp2", "resp3"] {
        let mut con = client(protocol);
        let k = |name: &str| format!("fanout:pipe:{protocol}:{name}");
        let mut pipe = redis::pipe();
        for round in 0..200 {
            pipe.cmd("SET").arg(k("a")).arg(round);
            pipe.cmd("MSET").arg(k("b")).arg(round).arg(k("c")).arg(round + 1);
            pipe.cmd("MGET").arg(k("a")).arg(k("b")).arg(k("c")).arg(k("nope"));
            pipe.cmd("GET").arg(k("c"));
            pipe.cmd("DEL").arg(k("b")).arg(k("c"));
            pipe.cmd("EXISTS").arg(k("a")).arg(k("b")).arg(k("c"));
        }
        let replies: Vec<Value> = pipe.query(&mut con).unwrap();
        for (round, chunk) in replies.chunks(6).enumerate() {
            let round = round as i64;
            let mget: Vec<Option<i64>> = redis::from_redis_value(chunk[2].clone()).unwrap();
            assert_eq!(mget, vec![Some(round), Some(round), Some(round + 1), None], "{protocol} round {round}");
            let get: i64 = redis::from_redis_value(chunk[3].clone()).unwrap();
            assert_eq!(get, round + 1);
            assert_eq!(chunk[4], Value::Int(2));
            assert_eq!(chunk[5], Value::Int(1));
        }
    }
}

#[test]
fn same_slot_commands_across_slots_get_crossslot() {
    let mut con = client("resp2");
    let (a, b) = ("fanout:cross:a", "fanout:cross:b");
    assert_ne!(slot_of(a), slot_of(b));
    for args in [
        &["MSETNX", a, "1", b, "2"][..],
        &["RENAME", a, b],
        &["RENAMENX", a, b],
        &["COPY", a, b],
        &["SMOVE", a, b, "m"],
        &["SINTER", a, b],
        &["SUNIONSTORE", a, b],
        &["SINTERCARD", "2", a, b],
        &["ZUNIONSTORE", a, "2", a, b],
        &["ZRANGESTORE", a, b, "0", "-1"],
        &["LMOVE", a, b, "LEFT", "RIGHT"],
        &["RPOPLPUSH", a, b],
        &["LMPOP", "2", a, b, "LEFT"],
        &["BITOP", "AND", a, b],
        &["PFCOUNT", a, b],
        &["PFMERGE", a, b],
        &["GEOSEARCHSTORE", a, b, "FROMLONLAT", "0", "0", "BYRADIUS", "1", "km"],
        &["XREAD", "STREAMS", a, b, "0", "0"],
        &["SORT", a, "STORE", b],
    ] {
        let error = redis::cmd(args[0]).arg(&args[1..]).query::<Value>(&mut con).unwrap_err();
        assert_eq!(error_text(&error), CROSSSLOT, "{args:?}");
    }
    // With one hash tag they run.
    let _: () = redis::cmd("MSETNX").arg("{fanout:tag}a").arg(1).arg("{fanout:tag}b").arg(2).query(&mut con).unwrap();
    let renamed: () = redis::cmd("RENAME").arg("{fanout:tag}a").arg("{fanout:tag}c").query(&mut con).unwrap();
    assert_eq!(renamed, ());
    let copied: i64 = redis::cmd("COPY").arg("{fanout:tag}c").arg("{fanout:tag}d").query(&mut con).unwrap();
    assert_eq!(copied, 1);
}

#[test]
fn a_wrong_type_among_parts_is_reported_like_redis() {
    let mut con = client("resp2");
    // MSET over a list key just overwrites, as on one server.
    let _: () = redis::cmd("RPUSH").arg("fanout:type:list").arg("x").query(&mut con).unwrap();
    let _: () =
        redis::cmd("MSET").arg("fanout:type:list").arg("v").arg("fanout:type:other").arg("w").query(&mut con).unwrap();
    let values: Vec<String> =
        redis::cmd("MGET").arg("fanout:type:list").arg("fanout:type:other").query(&mut con).unwrap();
    assert_eq!(values, vec!["v", "w"]);
    // MGET of a non-string key gives nil for it, as on one server.
    let _: () = redis::cmd("RPUSH").arg("fanout:type:list2").arg("x").query(&mut con).unwrap();
    let values: Vec<Option<String>> =
        redis::cmd("MGET").arg("fanout:type:list2").arg("fanout:type:other").query(&mut con).unwrap();
    assert_eq!(values, vec![None, Some("w".to_string())]);
}

#[test]
fn a_command_spanning_more_slots_than_max_fanout_is_refused_whole() {
    let metrics_port = support::free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let proxy = support::Proxy::start(&shared().cluster.seeds(), &["--max-fanout", "3", "--metrics", &metrics]);
    proxy.wait_routing();
    let mut con = proxy.connection();
    // Keys of distinct slots, four of them.
    let mut slots = HashSet::new();
    let keys: Vec<String> =
        (0..).map(|i| format!("fanout:limit:{i}")).filter(|k| slots.insert(slot_of(k))).take(4).collect();
    let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "v")).collect();

    let error = redis::cmd("MSET").arg(&pairs).query::<()>(&mut con).unwrap_err();
    assert_eq!(
        error_text(&error),
        "ERR this command's keys hash to 4 slots, more than max_fanout (3) allows; send it in parts"
    );
    let found: i64 = redis::cmd("EXISTS").arg(&keys).query(&mut shared().proxy.connection()).unwrap();
    assert_eq!(found, 0, "nothing of the refused MSET ran");
    let _: () = redis::cmd("MSET").arg(&pairs[..3]).query(&mut con).unwrap();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys[..3]).query(&mut con).unwrap();
    assert_eq!(values, vec![Some("v".to_string()); 3], "three slots are within the limit");
    let (_, text) = support::http::http_get(metrics_port, "/metrics");
    assert_eq!(support::http::sample(&text, "slotgate_fanout_refused_total"), Some(1.0));
}
