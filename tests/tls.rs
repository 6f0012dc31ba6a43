//! TLS at both ends, against a real cluster of redis-server nodes that speak
//! only TLS (`port 0`, `tls-port`, `tls-cluster yes`) and ask clients for
//! certificates: slotgate reaches them with `node_tls`, and serves
//! `redis-cli --tls` and redis-py `ssl=True` on `tls_listen`, plain clients
//! on `listen` beside it. Certificates are made by the test (rcgen).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::http::{http_get, sample};
use support::tls::{TlsFiles, redis_cli, tls_owner};
use support::{Cluster, Proxy, free_port, slot_of};

/// The TLS cluster and a slotgate in front of it, shared by the tests here.
struct Setup {
    tls: TlsFiles,
    cluster: Cluster,
    proxy: Proxy,
    tls_port: u16,
    metrics_port: u16,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let tls = TlsFiles::generate();
        let cluster = Cluster::start_tls(3, &tls);
        let (tls_port, metrics_port) = (free_port(), free_port());
        let path = |p: std::path::PathBuf| p.display().to_string();
        let mut args = vec![
            "--tls-listen".to_string(),
            format!("127.0.0.1:{tls_port}"),
            "--tls-cert-file".into(),
            path(tls.cert()),
            "--tls-key-file".into(),
            path(tls.key()),
            "--tls-ca-cert-file".into(),
            path(tls.ca()),
            "--tls-handshake-timeout-ms".into(),
            "1000".into(),
            "--metrics".into(),
            format!("127.0.0.1:{metrics_port}"),
        ];
        args.extend(tls.node_tls_args());
        let proxy = Proxy::start(&cluster.seeds(), &args.iter().map(String::as_str).collect::<Vec<_>>());
        proxy.wait_routing();
        Setup { tls, cluster, proxy, tls_port, metrics_port }
    })
}

/// Keys that fall on every master of the cluster.
fn keys_on_every_master(setup: &Setup, prefix: &str) -> Vec<String> {
    let keys: Vec<String> = (0..24).map(|i| format!("{prefix}:{i}")).collect();
    let masters: std::collections::BTreeSet<u16> =
        keys.iter().map(|k| tls_owner(&setup.cluster, &setup.tls, slot_of(k))).collect();
    assert_eq!(masters.len(), 3, "the keys should cover every master");
    keys
}

fn handshake_failures(setup: &Setup) -> f64 {
    let (status, metrics) = http_get(setup.metrics_port, "/metrics");
    assert_eq!(status, 200);
    sample(&metrics, "slotgate_tls_handshake_failures_total").expect("the TLS handshake failure counter")
}

#[test]
fn redis_cli_over_tls_reaches_every_master() {
    let setup = setup();
    let cli = setup.tls.cli_args();
    let keys = keys_on_every_master(setup, "cli");
    // One connection, commands on its standard input: SET on every master,
    // then GET them back, then MSET and MGET split across the masters.
    let mut script: String = keys.iter().map(|k| format!("SET {k} v-{k}\n")).collect();
    script += &keys.iter().map(|k| format!("GET {k}\n")).collect::<String>();
    script += &format!("MSET {}\n", keys.iter().map(|k| format!("{k} m-{k}")).collect::<Vec<_>>().join(" "));
    script += &format!("MGET {}\n", keys.join(" "));
    let (ok, out) = redis_cli(setup.tls_port, &cli, &[], &script);
    assert!(ok, "{out}\n{}", setup.proxy.log());
    let mut expected = vec!["OK".to_string(); keys.len()];
    expected.extend(keys.iter().map(|k| format!("v-{k}")));
    expected.push("OK".into());
    expected.extend(keys.iter().map(|k| format!("m-{k}")));
    assert_eq!(out.lines().collect::<Vec<_>>(), expected, "slotgate log:\n{}", setup.proxy.log());
    // What went through slotgate is on the nodes, read over TLS straight from them.
    let owner = tls_owner(&setup.cluster, &setup.tls, slot_of(&keys[0]));
    let (_, direct) = redis_cli(owner, &cli, &["GET", &keys[0]], "");
    assert_eq!(direct.trim(), format!("m-{}", keys[0]));
}

#[test]
fn redis_py_with_ssl_works_through_slotgate() {
    let setup = setup();
    // redis-py's default protocol (RESP3 in redis-py 8), a pipeline, a large
    // value (many TLS records each way) and a multi-slot MSET/MGET.
    let script = r#"
import sys, redis
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
r = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=ca, ssl_certfile=cert, ssl_keyfile=key,
                socket_timeout=20)
assert r.ping()
hello = r.execute_command("HELLO", "3")
assert hello[b"proto"] == 3, hello
keys = [f"py:{i}" for i in range(24)]
pipe = r.pipeline(transaction=False)
for k in keys:
    pipe.set(k, k.upper())
assert all(pipe.execute())
assert r.mget(keys) == [k.upper().encode() for k in keys]
big = b"x" * (3 * 1024 * 1024 + 7)
r.set("py:big", big)
assert r.get("py:big") == big
# Replies that fill the socket while redis-py is still sending: slotgate's
# writes block, and their last TLS records must still be flushed.
pipe = r.pipeline(transaction=False)
for _ in range(6):
    pipe.get("py:big")
assert pipe.execute() == [big] * 6
assert r.delete(*keys, "py:big") == len(keys) + 1
print("redis-py over TLS: ok")
"#;
    let path = |p: std::path::PathBuf| p.display().to_string();
    let output = Command::new("python3")
        .args(["-c", script, &setup.tls_port.to_string()])
        .args([path(setup.tls.ca()), path(setup.tls.cert()), path(setup.tls.key())])
        .output()
        .expect("python3 with redis-py (scripts/test.sh installs it)");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{report}\nslotgate log:\n{}", setup.proxy.log());
    assert!(report.contains("redis-py over TLS: ok"), "{report}");
}

#[test]
fn clients_without_a_certificate_are_refused() {
    let setup = setup();
    let before = handshake_failures(setup);
    let ca_only = vec!["--tls".to_string(), "--cacert".into(), setup.tls.ca().display().to_string()];
    let (_, out) = redis_cli(setup.tls_port, &ca_only, &["PING"], "");
    assert!(!out.contains("PONG"), "a client without a certificate got an answer: {out}");
    let (ok, out) = redis_cli(setup.tls_port, &setup.tls.cli_args(), &["PING"], "");
    assert!(ok && out.trim() == "PONG", "{out}");
    assert!(handshake_failures(setup) > before, "the refused handshake is counted");
}

#[test]
fn a_client_that_never_shakes_hands_is_closed() {
    let setup = setup();
    let mut silent = TcpStream::connect(("127.0.0.1", setup.tls_port)).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let start = Instant::now();
    // tls_handshake_timeout_ms is 1000 here.
    let read = silent.read(&mut [0; 64]);
    assert!(matches!(read, Ok(0)) || read.is_err() && start.elapsed() < Duration::from_secs(14), "{read:?}");
    assert!(start.elapsed() >= Duration::from_millis(900), "closed before its time: {:?}", start.elapsed());
    // Meanwhile, others were served.
    let (ok, out) = redis_cli(setup.tls_port, &setup.tls.cli_args(), &["PING"], "");
    assert!(ok && out.trim() == "PONG", "{out}");
}

#[test]
fn plain_clients_are_served_beside_tls_ones() {
    let setup = setup();
    let mut plain = setup.proxy.connection();
    let keys = keys_on_every_master(setup, "plain");
    for key in &keys {
        let _: () = redis::cmd("SET").arg(key).arg("plain").query(&mut plain).unwrap();
    }
    let values: Vec<String> = redis::cmd("MGET").arg(&keys).query(&mut plain).unwrap();
    assert!(values.iter().all(|v| v == "plain"), "{values:?}");
    // And what one side wrote, the other reads.
    let (_, out) = redis_cli(setup.tls_port, &setup.tls.cli_args(), &["GET", &keys[0]], "");
    assert_eq!(out.trim(), "plain");
}

#[test]
fn nodes_with_a_certificate_from_another_ca_are_refused_clearly() {
    let setup = setup();
    let path = |p: std::path::PathBuf| p.display().to_string();
    let args = [
        "--node-tls",
        "--node-tls-ca-cert-file",
        &path(setup.tls.other_ca()),
        "--node-tls-cert-file",
        &path(setup.tls.cert()),
        "--node-tls-key-file",
        &path(setup.tls.key()),
        "--retry-timeout-ms",
        "200",
    ];
    let mut proxy = Proxy::start(&setup.cluster.seeds(), &args);
    let mut client = support::raw::Raw::connect(proxy.port);
    let mut error = String::new();
    support::wait_for("the certificate error to reach clients", Duration::from_secs(20), || {
        client.send(b"*2\r\n$3\r\nGET\r\n$8\r\nanything\r\n");
        error = client.read_line();
        assert!(error.starts_with('-'), "served by nodes whose certificates it cannot trust: {error}");
        error.contains("certificate")
    });
    assert!(error.starts_with("-CLUSTERDOWN "), "{error}");
    assert!(proxy.log().contains("certificate"), "the log says why:\n{}", proxy.log());
    assert!(proxy.exit_within(Duration::ZERO).is_none(), "slotgate keeps running, and retrying");
}

#[test]
fn insecure_skip_verify_takes_any_node_certificate() {
    let setup = setup();
    let path = |p: std::path::PathBuf| p.display().to_string();
    let args = [
        "--node-tls",
        "--node-tls-insecure-skip-verify",
        "--node-tls-cert-file",
        &path(setup.tls.cert()),
        "--node-tls-key-file",
        &path(setup.tls.key()),
    ];
    let proxy = Proxy::start(&setup.cluster.seeds(), &args);
    proxy.wait_routing();
    let mut client = proxy.connection();
    let _: () = redis::cmd("SET").arg("insecure:k").arg("v").query(&mut client).unwrap();
    let value: String = redis::cmd("GET").arg("insecure:k").query(&mut client).unwrap();
    assert_eq!(value, "v");
    assert!(proxy.log().contains("insecure_skip_verify"), "a warning is logged:\n{}", proxy.log());
}

#[test]
fn node_certificates_are_checked_against_the_server_name() {
    let setup = setup();
    let mut args = setup.tls.node_tls_args();
    args.extend(["--node-tls-server-name".into(), "localhost".into()]);
    let proxy = Proxy::start(&setup.cluster.seeds(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    proxy.wait_routing();
    let _: () = redis::cmd("SET").arg("sni:k").arg("v").query(&mut proxy.connection()).unwrap();
    // A name the certificates do not carry.
    let mut args = setup.tls.node_tls_args();
    args.extend(["--node-tls-server-name".into(), "redis.example".into(), "--retry-timeout-ms".into(), "200".into()]);
    let wrong = Proxy::start(&setup.cluster.seeds(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut client = wrong.connection();
    let mut error = String::new();
    support::wait_for("the name mismatch to reach clients", Duration::from_secs(20), || {
        error = redis::cmd("GET").arg("sni:k").query::<String>(&mut client).unwrap_err().to_string();
        error.contains("certificate")
    });
}

#[test]
fn unusable_certificate_files_stop_slotgate_with_their_name() {
    let setup = setup();
    let path = |p: std::path::PathBuf| p.display().to_string();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_slotgate"))
            .args(["--listen", &format!("127.0.0.1:{}", free_port()), "--cluster", "127.0.0.1:1"])
            .args(args)
            .env_clear()
            .output()
            .unwrap();
        assert!(!out.status.success(), "slotgate started with {args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let tls_listen = format!("127.0.0.1:{}", free_port());
    let missing = run(&[
        "--tls-listen",
        &tls_listen,
        "--tls-cert-file",
        "/nonexistent/slotgate.crt",
        "--tls-key-file",
        &path(setup.tls.key()),
    ]);
    assert!(missing.contains("/nonexistent/slotgate.crt"), "{missing}");
    // A key file given as the certificate: not a certificate.
    let swapped = run(&[
        "--tls-listen",
        &tls_listen,
        "--tls-cert-file",
        &path(setup.tls.key()),
        "--tls-key-file",
        &path(setup.tls.key()),
    ]);
    assert!(swapped.contains("test.key") && swapped.contains("certificate"), "{swapped}");
    let no_key = run(&["--tls-listen", &tls_listen, "--tls-cert-file", &path(setup.tls.cert())]);
    assert!(no_key.contains("tls_key_file"), "{no_key}");
    let node_ca = run(&["--node-tls", "--node-tls-ca-cert-file", "/nonexistent/ca.crt"]);
    assert!(node_ca.contains("/nonexistent/ca.crt"), "{node_ca}");
}
