//! Starting order: slotgate may start before any node is up; it answers a
//! clear -CLUSTERDOWN meanwhile and starts routing on its own once the
//! cluster appears, with no restart.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::time::Duration;

use support::{Cluster, Proxy, free_port, seed_list, wait_for};

#[test]
fn without_a_cluster_commands_get_a_clear_clusterdown() {
    // Seeds where nothing listens.
    let seeds: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let proxy = Proxy::start(&seed_list(&seeds), &[]);
    let mut c = proxy.connection();
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG", "local commands work without a cluster");
    wait_for("the first discovery attempt to fail", Duration::from_secs(5), || {
        redis::cmd("GET").arg("k").query::<Option<String>>(&mut c).is_err_and(|e| e.to_string().contains("127.0.0.1"))
    });
    let text = redis::cmd("GET").arg("k").query::<Option<String>>(&mut c).unwrap_err().to_string();
    assert!(text.starts_with("ClusterDown"), "{text}");
    assert!(text.contains("slotgate has not discovered the cluster yet"), "{text}");
    for port in &seeds {
        assert!(text.contains(&format!("127.0.0.1:{port}")), "the message names each seed that failed: {text}");
    }
}

#[test]
fn slotgate_waits_for_a_cluster_that_starts_on_its_seed_ports() {
    let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let proxy = Proxy::start(&seed_list(&cluster_ports), &[]);
    let mut c = proxy.connection();
    assert!(redis::cmd("SET").arg("k").arg("v").query::<()>(&mut c).is_err());
    std::thread::sleep(Duration::from_millis(300));
    let cluster = Cluster::start_on(&cluster_ports, 3, 0);
    wait_for("slotgate to find the new cluster", Duration::from_secs(20), || {
        redis::cmd("SET").arg("early:k").arg("v").query::<()>(&mut c).is_ok()
    });
    let v: String = redis::cmd("GET")
        .arg("early:k")
        .query(&mut cluster.node(cluster.owner(slotgate::cluster::key_slot(b"early:k").number())).connection())
        .unwrap();
    assert_eq!(v, "v");
}
