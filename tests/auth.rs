//! Client authentication: with `requirepass`, a client must AUTH (or
//! HELLO ... AUTH) before anything else, and every answer on the way is a
//! Redis server's own, byte for byte, checked against a real redis-server
//! started with the same password.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::http::{http_get, sample};
use support::raw::Raw;
use support::{Process, Proxy, TempDir, free_port, shared, wait_for};

const PASSWORD: &str = "s3cret";

/// Sends each command to `port`, on one connection, and collects the answers.
fn session(port: u16, commands: &[&str]) -> Vec<String> {
    let mut raw = Raw::connect(port);
    commands
        .iter()
        .map(|command| {
            raw.send(format!("{command}\r\n").as_bytes());
            let first = raw.read_line();
            // HELLO's map differs in its fields (id, version): compare its header.
            if first.starts_with('*') || first.starts_with('%') {
                let _ = raw.closed_within(Duration::from_millis(200));
            }
            first
        })
        .collect()
}

#[test]
fn before_auth_only_auth_hello_quit_and_reset_run_with_redis_own_words() {
    let proxy = Proxy::start(&shared().cluster.seeds(), &["--requirepass", PASSWORD]);
    let redis_port = free_port();
    let dir = TempDir::new("auth-redis");
    let _redis = Process::spawn(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1", "--requirepass", PASSWORD])
            .args(["--save", "", "--appendonly", "no", "--dir", &dir.path().display().to_string()])
            .stdout(Stdio::null()),
        "redis-server",
    );
    wait_for("redis-server", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_ok()
    });

    let commands = [
        "GET auth:k",
        "PING",
        "HELLO 3",
        "NOSUCHCOMMAND x",
        "GET",
        "AUTH wrong",
        "AUTH nobody s3cret",
        "AUTH s3cret",
        "GET auth:none",
        "PING",
        "AUTH wrong",
        "PING",
        "RESET",
        "GET auth:k",
        "HELLO 2 AUTH default wrong",
        "HELLO 2 AUTH default s3cret",
        "AUTH default s3cret",
        "QUIT",
    ];
    let through_slotgate = session(proxy.port, &commands);
    let from_redis = session(redis_port, &commands);
    for ((command, ours), theirs) in commands.iter().zip(&through_slotgate).zip(&from_redis) {
        assert_eq!(ours, theirs, "{command}");
    }
    assert_eq!(through_slotgate[0], "-NOAUTH Authentication required.\r\n");
    assert_eq!(through_slotgate[7], "+OK\r\n");

    // Before AUTH a request may not be large (Redis 7): the error, then the connection closes.
    for request in [&b"*11\r\n"[..], b"*1\r\n$16385\r\n"] {
        let answers: Vec<(String, bool)> = [proxy.port, redis_port]
            .into_iter()
            .map(|port| {
                let mut raw = Raw::connect(port);
                raw.send(request);
                (raw.read_line(), raw.closed_within(Duration::from_secs(2)))
            })
            .collect();
        assert_eq!(answers[0], answers[1], "{}", String::from_utf8_lossy(request));
        assert!(answers[0].0.starts_with("-ERR Protocol error: unauthenticated"), "{answers:?}");
    }
    // Once logged in, they may.
    let mut raw = Raw::connect(proxy.port);
    raw.send(format!("AUTH {PASSWORD}\r\n").as_bytes());
    raw.expect(b"+OK\r\n");
    let big = "x".repeat(20_000);
    raw.send(format!("*3\r\n$3\r\nSET\r\n$8\r\nauth:big\r\n${}\r\n{big}\r\n", big.len()).as_bytes());
    raw.expect(b"+OK\r\n");
}

#[test]
fn clients_log_in_with_their_password_and_failures_are_counted() {
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let proxy = Proxy::start(&shared().cluster.seeds(), &["--requirepass", PASSWORD, "--metrics", &metrics]);
    // The redis crate: AUTH over RESP2, HELLO 3 AUTH over RESP3.
    for protocol in ["resp2", "resp3"] {
        let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/?protocol={protocol}", proxy.port);
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        wait_for("slotgate to route", Duration::from_secs(20), || {
            redis::cmd("EXISTS").arg("auth:probe").query::<i64>(&mut c).is_ok()
        });
        let _: () = redis::cmd("SET").arg("auth:set").arg(protocol).query(&mut c).unwrap();
        let v: String = redis::cmd("GET").arg("auth:set").query(&mut c).unwrap();
        assert_eq!(v, protocol);
        let wrong = format!("redis://:nope@127.0.0.1:{}/?protocol={protocol}", proxy.port);
        assert!(redis::Client::open(wrong).unwrap().get_connection().is_err(), "{protocol}: a wrong password");
    }
    let failures = sample(&http_get(metrics_port, "/metrics").1, "slotgate_auth_failures_total");
    assert_eq!(failures, Some(2.0));
}

#[test]
fn the_password_comes_from_the_environment_and_is_never_printed() {
    let output = Command::new(env!("CARGO_BIN_EXE_slotgate"))
        .arg("check-config")
        .env_clear()
        .env("SLOTGATE_REQUIREPASS", "hunter2")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(printed.contains("requirepass: (set)") && !printed.contains("hunter2"), "{printed}");
}

#[test]
fn slotgate_logs_in_to_nodes_that_want_a_password_and_says_so_when_it_cannot() {
    let cluster = support::Cluster::start(3, 0);
    let nodes = "n0de-pass";
    for port in cluster.masters() {
        let mut node = cluster.node(port).connection();
        let _: () = redis::cmd("CONFIG").arg("SET").arg("requirepass").arg(nodes).query(&mut node).unwrap();
    }
    let proxy = Proxy::start(&cluster.seeds(), &["--node-password", nodes]);
    proxy.wait_routing();
    let mut c = proxy.connection();
    let keys: Vec<String> = (0..30).map(|i| format!("auth:node:{i}")).collect();
    let _: () =
        redis::cmd("MSET").arg(keys.iter().flat_map(|k| [k.as_str(), "v"]).collect::<Vec<_>>()).query(&mut c).unwrap();
    let found: i64 = redis::cmd("EXISTS").arg(&keys).query(&mut c).unwrap();
    assert_eq!(found, 30, "every master reached");

    // A wrong password (or none): -CLUSTERDOWN naming the refusal, a log line, and no crash.
    for args in [&["--node-password", "wrong"][..], &[][..]] {
        let proxy = Proxy::start(&cluster.seeds(), args);
        let refusal = if args.is_empty() { "NOAUTH" } else { "WRONGPASS" };
        // (Before its first discovery attempt has failed, slotgate can only
        // say that it has not discovered the cluster yet.)
        wait_for("the log to say why", Duration::from_secs(5), || proxy.log().contains(refusal));
        let mut c = proxy.connection();
        let error = redis::cmd("GET").arg("auth:node:1").query::<Option<String>>(&mut c).unwrap_err().to_string();
        assert!(error.to_uppercase().contains("CLUSTERDOWN") && error.contains(refusal), "{args:?}: {error}");
        std::thread::sleep(Duration::from_millis(500));
        let again = redis::cmd("GET").arg("auth:node:1").query::<Option<String>>(&mut c).unwrap_err().to_string();
        assert!(again.contains(refusal), "still up and still saying why: {again}");
    }
}

#[test]
fn an_address_that_keeps_guessing_is_held_off_even_with_the_right_password() {
    let proxy = Proxy::start(&shared().cluster.seeds(), &["--requirepass", PASSWORD]);
    let mut guesser = Raw::connect(proxy.port);
    for guess in 0..10 {
        guesser.send(format!("AUTH guess{guess}\r\n").as_bytes());
        guesser.expect(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n");
    }
    // Any connection from this address, for the rest of the 10 s window.
    let mut again = Raw::connect(proxy.port);
    again.send(format!("AUTH {PASSWORD}\r\n").as_bytes());
    let refused = again.read_line();
    assert!(refused.starts_with("-WRONGPASS too many failed authentication attempts from this address"), "{refused}");
    again.send(b"GET auth:k\r\n");
    again.expect(b"-NOAUTH Authentication required.\r\n");
}
