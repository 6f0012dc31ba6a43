//! Reads from replicas (opt-in `read_from`) and node health checks: reads
//! go where the setting says and fall back to the master when no replica is
//! up; writes always go to the master; an idle connection to a hung node is
//! found by its health-check PING.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::time::Duration;

use support::{Cluster, Proxy, slot_of, wait_for};

/// `cmdstat_<command>` calls on the node at `port`.
fn calls(port: u16, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut support::connect(port).unwrap()).unwrap();
    info.lines()
        .find(|l| l.starts_with(&format!("cmdstat_{command}:")))
        .and_then(|l| l.split("calls=").nth(1)?.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// A key, its master and that master's replica, the value set through
/// slotgate and already copied to the replica.
fn replicated_key(cluster: &Cluster, proxy: &Proxy, name: &str) -> (String, u16, u16) {
    let master = cluster.owner(slot_of(name));
    let replica = cluster.replica_of(master);
    let _: () = redis::cmd("SET").arg(name).arg("v").query(&mut proxy.connection()).unwrap();
    wait_for("the replica to have the key", Duration::from_secs(10), || {
        let mut c = support::connect(replica).unwrap();
        let _: () = redis::cmd("READONLY").query(&mut c).unwrap();
        redis::cmd("GET").arg(name).query::<Option<String>>(&mut c).unwrap().as_deref() == Some("v")
    });
    (name.to_string(), master, replica)
}

#[test]
fn replica_preferred_reads_from_the_replica_and_writes_to_the_master() {
    let cluster = Cluster::start(3, 1);
    let proxy = Proxy::start(&cluster.seeds(), &["--read-from", "replica-preferred"]);
    proxy.wait_routing();
    let (key, master, replica) = replicated_key(&cluster, &proxy, "rf:key");
    let other_master = cluster.owner(slot_of("rf:other"));
    let (gets_before, sets_before) = (calls(master, "get"), calls(other_master, "set"));
    let mut c = proxy.connection();
    for _ in 0..50 {
        let v: String = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
        assert_eq!(v, "v");
        let _: () = redis::cmd("SET").arg("rf:other").arg("x").query(&mut c).unwrap();
    }
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&key).arg("rf:missing").query(&mut c).unwrap();
    assert_eq!(values, vec![Some("v".to_string()), None]);
    assert!(calls(replica, "get") >= 50, "the replica served the reads");
    assert_eq!(calls(master, "get"), gets_before, "the master served none of them");
    // (A replica counts the writes it copies, so the master's count tells.)
    assert!(calls(other_master, "set") >= sets_before + 50, "the writes went to the master");
}

#[test]
fn reads_fall_back_to_the_master_when_the_replica_is_down() {
    let mut cluster = Cluster::start(3, 1);
    let proxy = Proxy::start(&cluster.seeds(), &["--read-from", "replica-preferred"]);
    proxy.wait_routing();
    let (key, master, replica) = replicated_key(&cluster, &proxy, "fallback:key");
    let mut c = proxy.connection();
    let _: String = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
    assert!(calls(replica, "get") >= 1);
    cluster.node_mut(replica).kill();
    let before = calls(master, "get");
    for _ in 0..20 {
        let v: String = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
        assert_eq!(v, "v", "a read whose replica died is answered by the master");
    }
    assert!(calls(master, "get") >= before + 20);
}

#[test]
fn round_robin_takes_the_master_and_its_replica_in_turn() {
    let cluster = Cluster::start(3, 1);
    let proxy = Proxy::start(&cluster.seeds(), &["--read-from", "round-robin"]);
    proxy.wait_routing();
    let (key, master, replica) = replicated_key(&cluster, &proxy, "rr:key");
    let (before, replica_before) = (calls(master, "get"), calls(replica, "get"));
    let mut c = proxy.connection();
    for _ in 0..40 {
        let v: String = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
        assert_eq!(v, "v");
    }
    let (on_master, on_replica) = (calls(master, "get") - before, calls(replica, "get") - replica_before);
    assert_eq!(on_master + on_replica, 40);
    assert!((15..=25).contains(&on_replica), "{on_replica} of 40 reads on the replica");
}

#[test]
fn nearest_reads_from_a_node_of_the_slot() {
    let cluster = Cluster::start(3, 1);
    let proxy = Proxy::start(&cluster.seeds(), &["--read-from", "nearest", "--health-check-ms", "50"]);
    proxy.wait_routing();
    let (key, master, replica) = replicated_key(&cluster, &proxy, "near:key");
    let (before, replica_before) = (calls(master, "get"), calls(replica, "get"));
    let mut c = proxy.connection();
    for _ in 0..40 {
        let v: String = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
        assert_eq!(v, "v");
        std::thread::sleep(Duration::from_millis(5));
    }
    let served = calls(master, "get") - before + calls(replica, "get") - replica_before;
    assert_eq!(served, 40, "every read went to the slot's nodes");
}

#[test]
fn a_hung_node_is_found_by_the_health_check_while_idle() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds(), &["--health-check-ms", "100", "--request-timeout-ms", "300"]);
    proxy.wait_routing();
    let key = "idle:key";
    let node = cluster.owner(slot_of(key));
    let _: () = redis::cmd("SET").arg(key).arg("v").query(&mut proxy.connection()).unwrap();
    cluster.node(node).pause();
    // No client sends anything; the PING finds the node hung.
    wait_for("slotgate to notice the hung node", Duration::from_secs(5), || {
        proxy.log().contains(&format!("node=127.0.0.1:{node} cause=no reply within 300 ms"))
    });
    cluster.node(node).resume();
    let v: String = redis::cmd("GET").arg(key).query(&mut proxy.connection()).unwrap();
    assert_eq!(v, "v");
}
