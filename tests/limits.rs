//! Limits that protect slotgate and the cluster from too many or greedy
//! clients: each refuses as Redis does and is counted in the metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::time::Duration;

use support::http::{http_get, sample};
use support::raw::Raw;
use support::{Proxy, free_port, seed_list, wait_for};

#[test]
fn clients_past_max_clients_are_refused_as_redis_refuses_them() {
    // PING is answered by slotgate itself: no cluster is needed.
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let proxy = Proxy::start(&seed_list(&[free_port()]), &["--max-clients", "2", "--metrics", &metrics]);
    let rejected = || sample(&http_get(metrics_port, "/metrics").1, "slotgate_client_connections_rejected_total");
    wait_for("the metrics endpoint", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_ok()
    });
    // The harness's probe (did slotgate listen?) took a place: wait until it is free.
    wait_for("the probe to close", Duration::from_secs(5), || {
        let text = http_get(metrics_port, "/metrics").1;
        sample(&text, "slotgate_client_connections_accepted_total") >= Some(1.0)
            && sample(&text, "slotgate_client_connections ") == Some(0.0)
    });
    assert_eq!(rejected(), Some(0.0));

    let mut first = Raw::connect(proxy.port);
    let mut second = Raw::connect(proxy.port);
    for client in [&mut first, &mut second] {
        client.send(b"PING\r\n");
        client.expect(b"+PONG\r\n");
    }
    let mut third = Raw::connect(proxy.port);
    third.expect(b"-ERR max number of clients reached\r\n");
    assert!(third.closed_within(Duration::from_secs(5)), "closed after the error");
    assert_eq!(rejected(), Some(1.0));

    // The others were not disturbed, and a client that leaves frees its place.
    second.send(b"PING\r\n");
    second.expect(b"+PONG\r\n");
    drop(first);
    wait_for("a place to free up", Duration::from_secs(5), || {
        let mut next = Raw::connect(proxy.port);
        next.send(b"PING\r\n");
        next.read_line() == "+PONG\r\n"
    });
    assert!(proxy.log().contains("max_clients reached"), "{}", proxy.log());
}

#[test]
fn max_clients_is_lowered_to_fit_the_open_files_limit() {
    // 300 files: 256 kept for slotgate itself, 44 for clients.
    let port = free_port();
    let dir = support::TempDir::new("nofile");
    let log = dir.path().join("slotgate.log");
    let _slotgate = support::Process::spawn(
        std::process::Command::new("sh")
            .args(["-c", "ulimit -n 300 && exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_slotgate")])
            .args(["--cluster", &seed_list(&[free_port()]), "--listen", &format!("127.0.0.1:{port}")])
            .stderr(std::fs::File::create(&log).unwrap()),
        "slotgate under ulimit -n 300",
    );
    wait_for("slotgate to listen", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).unwrap().contains("slotgate ready")
    });
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("max_clients lowered to fit the open-files limit") && said.contains("now=44"), "{said}");
    let mut open: Vec<Raw> = (0..44).map(|_| Raw::connect(port)).collect();
    for client in &mut open {
        client.send(b"PING\r\n");
        client.expect(b"+PONG\r\n");
    }
    Raw::connect(port).expect(b"-ERR max number of clients reached\r\n");
}

#[test]
fn idle_clients_are_closed_but_not_blocked_subscribed_or_busy_ones() {
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let shared = support::shared();
    let proxy = Proxy::start(&shared.cluster.seeds(), &["--client-idle-timeout-ms", "400", "--metrics", &metrics]);
    proxy.wait_routing();
    let mut idle = Raw::connect(proxy.port);
    idle.send(b"PING\r\n");
    idle.expect(b"+PONG\r\n");
    let mut blocked = Raw::connect(proxy.port);
    blocked.send(b"BLPOP limits:idle:list 3\r\n");
    let mut subscribed = Raw::connect(proxy.port);
    subscribed.send(b"SUBSCRIBE limits:idle:channel\r\n");
    subscribed.expect(b"*3\r\n$9\r\nsubscribe\r\n$19\r\nlimits:idle:channel\r\n:1\r\n");
    let mut busy = Raw::connect(proxy.port);

    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(2000) {
        busy.send(b"PING\r\n");
        busy.expect(b"+PONG\r\n");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(idle.closed_within(Duration::from_millis(100)), "the idle client is closed");
    // The others are still served.
    busy.send(b"PING\r\n");
    busy.expect(b"+PONG\r\n");
    let closed = sample(&http_get(metrics_port, "/metrics").1, "slotgate_client_idle_closed_total");
    assert_eq!(closed, Some(1.0));
    blocked.expect(b"*-1\r\n");
    subscribed.send(b"PING\r\n");
    subscribed.expect(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
}

#[test]
fn a_subscriber_that_does_not_read_is_closed_past_its_output_limit() {
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let shared = support::shared();
    let proxy = Proxy::start(
        &shared.cluster.seeds(),
        &["--client-output-buffer-limit-pubsub", "2097152", "--metrics", &metrics],
    );
    proxy.wait_routing();
    let mut slow = Raw::connect(proxy.port);
    slow.send(b"SUBSCRIBE limits:slow\r\n");
    slow.expect(b"*3\r\n$9\r\nsubscribe\r\n$11\r\nlimits:slow\r\n:1\r\n");
    // 32 MB for a client that reads nothing: more than the kernel's buffers and the limit.
    let mut publisher = proxy.connection();
    let message = vec![b'm'; 256 * 1024];
    for _ in 0..128 {
        let _: i64 = redis::cmd("PUBLISH").arg("limits:slow").arg(&message).query(&mut publisher).unwrap();
    }
    assert!(slow.closed_within(Duration::from_secs(10)), "closed past 2 MB unread");
    let closed = sample(&http_get(metrics_port, "/metrics").1, "slotgate_client_output_limit_closed_total");
    assert_eq!(closed, Some(1.0));
    let pong: String = redis::cmd("PING").query(&mut publisher).unwrap();
    assert_eq!(pong, "PONG", "the publisher is not disturbed");
    assert!(proxy.log().contains("output buffer over its limit"), "{}", proxy.log());
}

#[test]
fn requests_for_a_node_that_has_fallen_behind_fail_at_once() {
    // A long node timeout: the cluster keeps the frozen master; slotgate waits 20 s for it.
    let cluster = support::Cluster::start_with(3, 0, &["--cluster-node-timeout", "60000"]);
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let args = ["--node-queue-limit", "20", "--request-timeout-ms", "20000", "--metrics", &metrics];
    let proxy = Proxy::start(&cluster.seeds(), &args);
    proxy.wait_routing();
    let frozen = cluster.masters()[0];
    let key_of = |port: u16| (0..).map(|i| format!("queue:{i}")).find(|k| cluster.owner(support::slot_of(k)) == port);
    let key = key_of(frozen).unwrap();
    let elsewhere = key_of(cluster.masters()[1]).unwrap();
    let mut flood = Raw::connect(proxy.port);
    let mut probe = Raw::connect(proxy.port);
    flood.send(b"PING\r\n");
    flood.expect(b"+PONG\r\n");

    cluster.node(frozen).pause();
    // Twice 100 GETs: 20 are sent to the frozen node, 20 more wait in the
    // queue, the rest are refused.
    let gets: String = (0..100).map(|_| format!("GET {key}\r\n")).collect();
    for _ in 0..2 {
        flood.send(gets.as_bytes());
        std::thread::sleep(Duration::from_millis(300));
    }
    let started = std::time::Instant::now();
    probe.send(format!("GET {key}\r\n").as_bytes());
    let refused = probe.read_line();
    let overloaded = format!("-ERR node 127.0.0.1:{frozen} is overloaded: 20 requests already wait for it");
    assert!(refused.starts_with(&overloaded), "{refused}");
    assert!(started.elapsed() < Duration::from_secs(2), "at once, not after the request timeout");
    probe.send(format!("GET {elsewhere}\r\n").as_bytes());
    probe.expect(b"$-1\r\n");

    cluster.node(frozen).resume();
    let answers: Vec<String> = (0..200).map(|_| flood.read_line()).collect();
    let waited = answers.iter().filter(|a| *a == "$-1\r\n").count();
    let refused = answers.iter().filter(|a| a.starts_with(&overloaded)).count();
    assert_eq!((waited, refused), (40, 160), "{answers:?}");
    assert!(answers[..20].iter().chain(&answers[100..120]).all(|a| a == "$-1\r\n"), "in order: {answers:?}");
    let counted = sample(
        &http_get(metrics_port, "/metrics").1,
        &format!("slotgate_node_saturated_total{{node=\"127.0.0.1:{frozen}\"}}"),
    );
    assert_eq!(counted, Some((refused + 1) as f64));
}
