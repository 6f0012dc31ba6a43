//! Pub/sub through slotgate with the `redis` crate: SUBSCRIBE, PSUBSCRIBE and
//! SSUBSCRIBE receive what other clients publish, PUBLISH counts slotgate's
//! subscribers, RESP2's subscribed state is Redis's, and a RESP3 client gets
//! its messages as pushes between ordinary replies.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::time::Duration;

use redis::Value;
use support::raw::Raw;
use support::shared;

#[test]
fn subscribers_get_what_others_publish() {
    let proxy = &shared().proxy;
    let mut subscriber = proxy.connection();
    let mut publisher = proxy.connection();
    let mut pubsub = subscriber.as_pubsub();
    pubsub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    pubsub.subscribe("news").unwrap();
    pubsub.psubscribe("sport.*").unwrap();
    let receivers: i64 = redis::cmd("PUBLISH").arg("news").arg("hello").query(&mut publisher).unwrap();
    assert_eq!(receivers, 1, "PUBLISH counts the subscriber behind slotgate");
    let _: i64 = redis::cmd("PUBLISH").arg("sport.tennis").arg("ace").query(&mut publisher).unwrap();
    let first = pubsub.get_message().unwrap();
    assert_eq!((first.get_channel_name(), first.get_payload::<String>().unwrap()), ("news", "hello".to_string()));
    let second = pubsub.get_message().unwrap();
    assert_eq!(second.get_pattern::<String>().unwrap(), "sport.*");
    assert_eq!(second.get_payload::<String>().unwrap(), "ace");
    let channels: Vec<String> = redis::cmd("PUBSUB").arg("CHANNELS").arg("news").query(&mut publisher).unwrap();
    assert_eq!(channels, vec!["news"]);
    let numsub: (String, i64) = redis::cmd("PUBSUB").arg("NUMSUB").arg("news").query(&mut publisher).unwrap();
    assert_eq!(numsub, ("news".to_string(), 1));
    let numpat: i64 = redis::cmd("PUBSUB").arg("NUMPAT").query(&mut publisher).unwrap();
    assert!(numpat >= 1);
}

#[test]
fn sharded_channels_follow_their_slot() {
    let proxy = &shared().proxy;
    let mut raw = Raw::connect(proxy.port);
    let mut publisher = proxy.connection();
    // Two channels in different slots, on one client: one connection per node.
    for (channel, count) in [("{a}orders", 1), ("{b}orders", 2)] {
        raw.send(format!("SSUBSCRIBE {channel}\r\n").as_bytes());
        raw.expect(format!("*3\r\n$10\r\nssubscribe\r\n${}\r\n{channel}\r\n:{count}\r\n", channel.len()).as_bytes());
    }
    for channel in ["{a}orders", "{b}orders"] {
        let receivers: i64 = redis::cmd("SPUBLISH").arg(channel).arg("x").query(&mut publisher).unwrap();
        assert_eq!(receivers, 1, "{channel}");
        raw.expect(format!("*3\r\n$8\r\nsmessage\r\n${}\r\n{channel}\r\n$1\r\nx\r\n", channel.len()).as_bytes());
    }
    raw.send(b"SSUBSCRIBE {a}x {b}y\r\n");
    raw.expect(b"-CROSSSLOT Keys in request don't hash to the same slot\r\n");
}

#[test]
fn resp2_subscribed_state_and_resp3_pushes_are_redis_own() {
    let proxy = &shared().proxy;
    let mut publisher = proxy.connection();
    let mut resp2 = Raw::connect(proxy.port);
    resp2.send(b"SUBSCRIBE state\r\nGET k\r\nPING\r\n");
    resp2.expect(b"*3\r\n$9\r\nsubscribe\r\n$5\r\nstate\r\n:1\r\n");
    resp2.expect(
        b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n",
    );
    resp2.expect(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    resp2.send(b"UNSUBSCRIBE\r\nPING\r\n");
    resp2.expect(b"*3\r\n$11\r\nunsubscribe\r\n$5\r\nstate\r\n:0\r\n+PONG\r\n");

    let mut resp3 = Raw::connect(proxy.port);
    resp3.send(b"HELLO 3\r\n");
    // HELLO's map ends with `modules`, an empty array.
    while resp3.read_line() != "*0\r\n" {}
    resp3.send(b"SUBSCRIBE pushed\r\n");
    resp3.expect(b">3\r\n$9\r\nsubscribe\r\n$6\r\npushed\r\n:1\r\n");
    let _: i64 = redis::cmd("PUBLISH").arg("pushed").arg("m1").query(&mut publisher).unwrap();
    resp3.expect(b">3\r\n$7\r\nmessage\r\n$6\r\npushed\r\n$2\r\nm1\r\n");
    // Any command runs while subscribed in RESP3; its reply comes in order.
    resp3.send(b"SET pushed:k v\r\nGET pushed:k\r\n");
    resp3.expect(b"+OK\r\n$1\r\nv\r\n");
    let value: Value = redis::cmd("GET").arg("pushed:k").query(&mut publisher).unwrap();
    assert_eq!(value, Value::BulkString(b"v".to_vec()));
}

#[test]
fn subscriptions_survive_reset_and_mixing_kinds() {
    let proxy = &shared().proxy;
    let mut publisher = proxy.connection();
    // A shard channel on the node SUBSCRIBE uses (the master of slot 0).
    let shard = (0..)
        .map(|i| format!("mix:{i}"))
        .find(|c| support::slot_of(c) < 5000)
        .expect("a channel in the first master's slots");
    let mut raw = Raw::connect(proxy.port);
    raw.send(format!("SSUBSCRIBE {shard}\r\nSUBSCRIBE mixnews\r\nUNSUBSCRIBE mixnews\r\n").as_bytes());
    raw.expect(format!("*3\r\n$10\r\nssubscribe\r\n${}\r\n{shard}\r\n:1\r\n", shard.len()).as_bytes());
    raw.expect(b"*3\r\n$9\r\nsubscribe\r\n$7\r\nmixnews\r\n:1\r\n");
    raw.expect(b"*3\r\n$11\r\nunsubscribe\r\n$7\r\nmixnews\r\n:0\r\n");
    let receivers: i64 = redis::cmd("PUBLISH").arg("mixnews").arg("late").query(&mut publisher).unwrap();
    assert_eq!(receivers, 0, "UNSUBSCRIBE reached the node");
    // RESET, then a new subscription at once: the old connection's goodbye
    // does not end the client.
    raw.send(b"RESET\r\nSUBSCRIBE mixafter\r\n");
    raw.expect(b"+RESET\r\n*3\r\n$9\r\nsubscribe\r\n$8\r\nmixafter\r\n:1\r\n");
    std::thread::sleep(Duration::from_millis(200));
    let receivers: i64 = redis::cmd("PUBLISH").arg("mixafter").arg("m").query(&mut publisher).unwrap();
    assert_eq!(receivers, 1);
    raw.expect(b"*3\r\n$7\r\nmessage\r\n$8\r\nmixafter\r\n$1\r\nm\r\n");
}

#[test]
fn subscriptions_survive_the_failover_of_their_node() {
    let mut cluster = support::Cluster::start(3, 1);
    let proxy = support::Proxy::start(&cluster.seeds(), &[]);
    proxy.wait_routing();
    // SUBSCRIBE goes to the master of slot 0; a shard channel of that master too.
    let victim = cluster.owner(0);
    let replica = cluster.replica_of(victim);
    let shard_channel =
        (0..).map(|i| format!("failover-chan:{i}")).find(|c| cluster.owner(support::slot_of(c)) == victim).unwrap();
    let mut subscriber = proxy.connection();
    let mut pubsub = subscriber.as_pubsub();
    pubsub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    pubsub.subscribe("failover-news").unwrap();
    let mut shard = Raw::connect(proxy.port);
    ssubscribe(&mut shard, &shard_channel);
    cluster.node_mut(victim).kill();
    support::wait_for("the replica to take over", Duration::from_secs(20), || support::is_serving_master(replica));
    let mut publisher = proxy.connection();
    // Delivery, not PUBLISH's count: the subscription may now sit on another node.
    pubsub.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    support::wait_for("PUBLISH to reach the subscriber again", Duration::from_secs(15), || {
        let _: i64 = redis::cmd("PUBLISH").arg("failover-news").arg("after").query(&mut publisher).unwrap_or(0);
        pubsub.get_message().is_ok_and(|m| m.get_payload::<String>().unwrap() == "after")
    });
    support::wait_for("SPUBLISH to reach the shard subscriber again", Duration::from_secs(15), || {
        redis::cmd("SPUBLISH").arg(&shard_channel).arg("after").query::<i64>(&mut publisher).unwrap_or(0) == 1
    });
    let lines: Vec<String> = (0..7).map(|_| shard.read_line()).collect();
    assert_eq!(lines[2], "smessage\r\n", "{lines:?}");
    assert_eq!(lines[6], "after\r\n", "{lines:?}");
}

#[test]
fn a_shard_channel_follows_its_slot_to_a_new_master() {
    let cluster = support::Cluster::start(3, 0);
    let proxy = support::Proxy::start(&cluster.seeds(), &[]);
    proxy.wait_routing();
    let channel = "moving-chan";
    let slot = support::slot_of(channel);
    let mut shard = Raw::connect(proxy.port);
    ssubscribe(&mut shard, channel);
    // The old owner unsubscribes its shard channels when the slot leaves it.
    cluster.migrate_slot(slot, cluster.other_master(slot), || {});
    let mut publisher = proxy.connection();
    support::wait_for("SPUBLISH to reach the subscriber at the new owner", Duration::from_secs(15), || {
        redis::cmd("SPUBLISH").arg(channel).arg("moved").query::<i64>(&mut publisher).unwrap_or(0) == 1
    });
    let lines: Vec<String> = (0..7).map(|_| shard.read_line()).collect();
    assert_eq!(lines[2], "smessage\r\n", "{lines:?}");
    assert_eq!(lines[6], "moved\r\n", "{lines:?}");
}

#[test]
fn a_subscriber_of_a_frozen_node_moves_to_its_successor() {
    let cluster = support::Cluster::start_with(3, 1, &["--cluster-require-full-coverage", "no"]);
    let proxy = support::Proxy::start(&cluster.seeds(), &["--request-timeout-ms", "500", "--health-check-ms", "100"]);
    proxy.wait_routing();
    let victim = cluster.owner(0);
    let replica = cluster.replica_of(victim);
    let mut subscriber = proxy.connection();
    let mut pubsub = subscriber.as_pubsub();
    pubsub.subscribe("frozen-news").unwrap();
    // The node keeps the connection open but answers nothing: only the
    // subscribed connection's own PING can tell.
    cluster.node(victim).pause();
    support::wait_for("the replica to take over", Duration::from_secs(20), || support::is_serving_master(replica));
    let mut publisher = proxy.connection();
    pubsub.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    support::wait_for("PUBLISH to reach the subscriber again", Duration::from_secs(15), || {
        let _: i64 = redis::cmd("PUBLISH").arg("frozen-news").arg("thawed").query(&mut publisher).unwrap_or(0);
        pubsub.get_message().is_ok_and(|m| m.get_payload::<String>().unwrap() == "thawed")
    });
    cluster.node(victim).resume();
}

/// SSUBSCRIBE to `channel` on a raw connection, its confirmation read.
fn ssubscribe(raw: &mut Raw, channel: &str) {
    raw.send(format!("*2\r\n$10\r\nSSUBSCRIBE\r\n${}\r\n{channel}\r\n", channel.len()).as_bytes());
    for _ in 0..6 {
        raw.read_line();
    }
}
