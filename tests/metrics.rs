//! The HTTP endpoint: `/metrics` in the Prometheus text format with the
//! process's client, topology and build metrics; `/healthz` while the process
//! runs; `/readyz` only once every slot has a master.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::http::{http_get, sample};
use support::{Cluster, Proxy, cluster_info, free_port, seed_list, wait_for};

#[test]
fn metrics_health_and_readiness_are_served() {
    let cluster = Cluster::start(3, 0);
    let metrics_port = free_port();
    let proxy = Proxy::start(&cluster.seeds(), &["--metrics", &format!("127.0.0.1:{metrics_port}")]);
    proxy.wait_routing();
    assert_eq!(http_get(metrics_port, "/healthz"), (200, "ok\n".to_string()));
    wait_for("slotgate to be ready", Duration::from_secs(10), || http_get(metrics_port, "/readyz").0 == 200);
    let (ready, said) = health(&["--metrics", &format!("0.0.0.0:{metrics_port}")]);
    assert!(ready && said.contains("ready (127.0.0.1:") && said.contains("): ready"), "{said}");
    let (ready, said) = health(&["--listen", &format!("127.0.0.1:{}", proxy.port)]);
    assert!(ready && said.ends_with("): cluster_slots_served:16384"), "INFO proxy when metrics are off: {said}");
    let mut c = proxy.connection();
    let _: () = redis::cmd("SET").arg("m").arg("1").query(&mut c).unwrap();
    let (status, text) = http_get(metrics_port, "/metrics");
    assert_eq!(status, 200);
    assert!(text.contains(&format!("slotgate_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))), "{text}");
    assert!(sample(&text, "slotgate_client_connections_accepted_total").unwrap() >= 2.0, "{text}");
    assert!(sample(&text, "slotgate_client_connections ").unwrap() >= 1.0, "{text}");
    assert!(sample(&text, "slotgate_topology_refreshes_total{outcome=\"ok\"}").unwrap() >= 1.0, "{text}");
    let slots: f64 = cluster
        .masters()
        .iter()
        .map(|port| sample(&text, &format!("slotgate_node_slots{{node=\"127.0.0.1:{port}\"}}")).unwrap())
        .sum();
    assert_eq!(slots, 16384.0, "{text}");
    assert!(sample(&text, "slotgate_cluster_epoch").unwrap() >= 1.0);
    assert_eq!(http_get(metrics_port, "/nope").0, 404);

    // Commands by family and outcome, and their latency.
    let _: () = redis::cmd("SET").arg("m:text").arg("abc").query(&mut c).unwrap();
    assert!(redis::cmd("INCR").arg("m:text").query::<i64>(&mut c).is_err(), "a node's error");
    // (Not a keyspace command: the harness's EXISTS probes got CLUSTERDOWN before discovery.)
    assert!(redis::cmd("SMOVE").arg("m:a").arg("m:b").arg("x").query::<i64>(&mut c).is_err(), "slotgate's CROSSSLOT");
    let _: Vec<Option<String>> = redis::cmd("MGET").arg("m:1").arg("m:2").arg("m:3").query(&mut c).unwrap();
    let text = http_get(metrics_port, "/metrics").1;
    let count = |family: &str, outcome: &str| {
        sample(&text, &format!("slotgate_commands_total{{family=\"{family}\",outcome=\"{outcome}\"}}")).unwrap()
    };
    assert!(count("string", "ok") >= 3.0, "SET, SET, MGET: {text}");
    assert_eq!(count("string", "redis_error"), 1.0, "{text}");
    assert_eq!(count("set", "proxy_error"), 1.0, "{text}");
    let observed = sample(&text, "slotgate_command_duration_seconds_count").unwrap();
    let counted: f64 = text
        .lines()
        .filter(|l| l.starts_with("slotgate_commands_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(observed, counted, "every command counted once, with its latency");

    // Per node: requests, latency, connections, nothing left waiting; a MOVED.
    let key = "m:moving";
    let _: () = redis::cmd("SET").arg(key).arg("v").query(&mut c).unwrap();
    let slot = support::slot_of(key);
    let old_owner = cluster.owner(slot);
    cluster.migrate_slot(slot, cluster.other_master(slot), || {});
    let v: String = redis::cmd("GET").arg(key).query(&mut c).unwrap();
    assert_eq!(v, "v");
    let text = http_get(metrics_port, "/metrics").1;
    let node = |metric: &str, port: u16| sample(&text, &format!("{metric}{{node=\"127.0.0.1:{port}\"}}"));
    for port in cluster.masters() {
        assert!(node("slotgate_node_requests_total", port).unwrap() >= 1.0, "{port}: {text}");
        assert_eq!(node("slotgate_node_queue_depth", port), Some(0.0), "{port}: {text}");
        assert!(node("slotgate_node_request_duration_seconds_count", port).unwrap() >= 1.0, "{port}: {text}");
    }
    assert!(node("slotgate_node_connections", old_owner).unwrap() >= 1.0, "{text}");
    let moved =
        sample(&text, &format!("slotgate_node_redirects_total{{kind=\"moved\",node=\"127.0.0.1:{old_owner}\"}}"));
    assert_eq!(moved, Some(1.0), "{text}");

    // Fan-out parts, bytes, protocol errors.
    let _: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    let mut bad = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    bad.write_all(b"*1\r\n$x\r\n").unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = bad.read_to_string(&mut answer);
    assert!(answer.starts_with("-ERR Protocol error"), "{answer}");
    let text = http_get(metrics_port, "/metrics").1;
    assert!(sample(&text, "slotgate_fanout_subrequests_total").unwrap() >= 3.0, "DBSIZE asks the 3 masters: {text}");
    assert!(sample(&text, "slotgate_client_bytes_received_total").unwrap() > 100.0, "{text}");
    assert!(sample(&text, "slotgate_client_bytes_sent_total").unwrap() > 100.0, "{text}");
    assert_eq!(sample(&text, "slotgate_protocol_errors_total"), Some(1.0), "{text}");
}

#[test]
fn readyz_says_why_while_there_is_no_cluster() {
    let seeds = seed_list(&[free_port()]);
    let metrics_port = free_port();
    let proxy = Proxy::start(&seeds, &["--metrics", &format!("127.0.0.1:{metrics_port}")]);
    wait_for("the metrics endpoint", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", metrics_port)).is_ok()
    });
    assert_eq!(http_get(metrics_port, "/healthz").0, 200, "alive even without a cluster");
    let (status, body) = http_get(metrics_port, "/readyz");
    assert_eq!(status, 503);
    assert!(body.starts_with("not ready: cluster topology not discovered yet"), "{body}");
    let (ready, said) = health(&["--metrics", &format!("127.0.0.1:{metrics_port}")]);
    assert!(!ready && said.contains("not ready: cluster topology not discovered yet"), "{said}");
    let (ready, said) = health(&["--listen", &format!("127.0.0.1:{}", free_port())]);
    assert!(!ready && said.contains("slotgate is not answering on 127.0.0.1:"), "{said}");
    let (ready, said) = health(&["--listen", &format!("127.0.0.1:{}", proxy.port)]);
    assert!(!ready && said.contains("): -CLUSTERDOWN slotgate has not discovered the cluster yet"), "{said}");
}

#[test]
fn readyz_is_503_while_slotgate_cannot_reach_a_master() {
    // A long node timeout: the cluster itself does not flag the master while the test runs.
    let mut cluster = Cluster::start_with(3, 0, &["--cluster-node-timeout", "60000"]);
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let proxy = Proxy::start(&cluster.seeds(), &["--metrics", &metrics, "--request-timeout-ms", "1000"]);
    proxy.wait_routing();
    wait_for("slotgate to be ready", Duration::from_secs(10), || http_get(metrics_port, "/readyz").0 == 200);
    let master = cluster.masters()[1];
    let key = (0..).map(|i| format!("ready:{i}")).find(|k| cluster.owner(support::slot_of(k)) == master).unwrap();
    let mut c = proxy.connection();
    let _: () = redis::cmd("SET").arg(&key).arg("v").query(&mut c).unwrap();

    // No command follows: slotgate notices the closed connection by itself,
    // and keeps trying it, so that it also notices the master's return.
    cluster.node_mut(master).kill();
    let why = format!("not ready: masters slotgate cannot reach: 127.0.0.1:{master} (");
    wait_for("/readyz to say which master is unreachable", Duration::from_secs(10), || {
        let (status, body) = http_get(metrics_port, "/readyz");
        status == 503 && body.starts_with(&why)
    });
    assert!(cluster_info(cluster.masters()[0])["cluster_state"] == "ok", "the cluster has not noticed");
    // For load balancers: this slotgate still serves the other masters' slots.
    assert_eq!(http_get(metrics_port, "/readyz?partial"), (200, "ready\n".to_string()));

    // Back, and reconnected to by slotgate on its own: ready again.
    cluster.node_mut(master).restart();
    wait_for("slotgate to be ready again", Duration::from_secs(15), || http_get(metrics_port, "/readyz").0 == 200);
    let _: () = redis::cmd("SET").arg(&key).arg("again").query(&mut c).unwrap();

    // Hung (a stopped process still accepts connections): found by the
    // health check, and not taken for back by a mere reconnect.
    cluster.node(master).pause();
    wait_for("/readyz to name the hung master", Duration::from_secs(10), || {
        let (status, body) = http_get(metrics_port, "/readyz");
        status == 503 && body.starts_with(&why)
    });
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(http_get(metrics_port, "/readyz").0, 503, "a hung master is never ready");
    }
    cluster.node(master).resume();
    wait_for("slotgate to be ready after the resume", Duration::from_secs(15), || {
        http_get(metrics_port, "/readyz").0 == 200
    });
}

/// `slotgate health` with `args` (container healthchecks run it): whether it
/// exited 0, and what it printed.
fn health(args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_slotgate"))
        .arg("health")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    (output.status.success(), said.trim().to_string())
}
