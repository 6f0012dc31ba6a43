//! Client authentication: with `requirepass` or `[[users]]`, a client must
//! AUTH (or HELLO ... AUTH) before anything else, and may then run only what
//! its user may; every answer on the way is a Redis server's own, byte for
//! byte, checked against a real redis-server started with the same password
//! or the same ACL users.
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
            let reply = reply(&mut raw);
            // HELLO's map differs in its fields (id, version): compare its header.
            match command.to_ascii_uppercase().starts_with("HELLO") {
                true => reply.split_inclusive("\r\n").next().unwrap_or_default().to_string(),
                false => reply,
            }
        })
        .collect()
}

/// Sends `commands` to slotgate and to redis-server, each on one
/// connection; asserts the answers are the same and returns slotgate's.
fn same_answers(slotgate_port: u16, redis_port: u16, commands: &[&str]) -> Vec<String> {
    let through_slotgate = session(slotgate_port, commands);
    let from_redis = session(redis_port, commands);
    for ((command, ours), theirs) in commands.iter().zip(&through_slotgate).zip(&from_redis) {
        assert_eq!(ours, theirs, "{command}");
    }
    through_slotgate
}

/// One whole reply, as its bytes (lossy UTF-8).
fn reply(raw: &mut Raw) -> String {
    let line = raw.read_line();
    let count: i64 = line[1..line.len() - 2].parse().unwrap_or(-1);
    let elements = match line.as_bytes()[0] {
        b'$' | b'=' if count >= 0 => return line + &String::from_utf8_lossy(&raw.read_exact(count as usize + 2)),
        b'*' | b'~' | b'>' => count,
        b'%' => 2 * count,
        _ => 0,
    };
    (0..elements).fold(line, |all, _| all + &reply(raw))
}

/// A real redis-server on a free port, with extra arguments; its port.
fn redis_server(dir: &TempDir, extra: &[&str]) -> (Process, u16) {
    let port = free_port();
    let redis = Process::spawn(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir", &dir.path().display().to_string()])
            .args(extra)
            .stdout(Stdio::null()),
        "redis-server",
    );
    wait_for("redis-server", Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    (redis, port)
}

#[test]
fn before_auth_only_auth_hello_quit_and_reset_run_with_redis_own_words() {
    let proxy = Proxy::start(&shared().cluster.seeds(), &["--requirepass", PASSWORD]);
    let dir = TempDir::new("auth-redis");
    let (_redis, redis_port) = redis_server(&dir, &["--requirepass", PASSWORD]);

    let commands = [
        "GET auth:k",
        "EXEC",
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
    let through_slotgate = same_answers(proxy.port, redis_port, &commands);
    assert_eq!(through_slotgate[0], "-NOAUTH Authentication required.\r\n");
    assert_eq!(through_slotgate[1], "-EXECABORT Transaction discarded because of: NOAUTH Authentication required.\r\n");
    assert_eq!(through_slotgate[8], "+OK\r\n");

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

    // Nor the users' passwords or their digests.
    let dir = TempDir::new("auth-check-users");
    let file = dir.path().join("users.toml");
    std::fs::write(&file, USERS_TOML).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_slotgate")).args(["check-config", "--config"]).arg(&file).output();
    let output = output.unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && printed.contains("name: \"reader\""), "{printed}");
    assert!(!printed.contains("r3ad") && !printed.contains("05547dd1"), "{printed}");
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

/// The users of the ACL tests, as slotgate's `[[users]]` and as the same
/// users on a redis-server command line.
const USERS_TOML: &str = r#"
[[users]]
name = "default"
password = "def-pw"
rules = "+@all -flushall ~*"

[[users]]
name = "reader"
password = "r3ad"
rules = "+@read +@transaction +acl|whoami -@dangerous ~app:*"

# The SHA-256 of "app-pw".
[[users]]
name = "app"
password_sha256 = "05547dd11b298e04b4937dc62a8d94b26e22a8b5621239b795fa884e2a1a4c86"
rules = "allcommands -@dangerous allkeys"

[[users]]
name = "noexec"
password = "nx"
rules = "+@all -exec allkeys"

[[users]]
name = "off"
password = "off-pw"
enabled = false
rules = "allcommands allkeys"
"#;

#[rustfmt::skip]
const USERS_REDIS: &[&str] = &[
    "--user", "default", "on", ">def-pw", "+@all", "-flushall", "~*",
    "--user", "reader", "on", ">r3ad", "+@read", "+@transaction", "+acl|whoami", "-@dangerous", "~app:*",
    "--user", "app", "on", "#05547dd11b298e04b4937dc62a8d94b26e22a8b5621239b795fa884e2a1a4c86", "allcommands",
    "-@dangerous", "allkeys",
    "--user", "noexec", "on", ">nx", "+@all", "-exec", "allkeys",
    "--user", "off", "off", ">off-pw", "allcommands", "allkeys",
];

/// slotgate with [`USERS_TOML`] and extra arguments.
fn proxy_with_users(dir: &TempDir, extra: &[&str]) -> Proxy {
    let file = dir.path().join("users.toml");
    std::fs::write(&file, USERS_TOML).unwrap();
    let mut args = vec!["--config", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    let proxy = Proxy::start(&shared().cluster.seeds(), &args);
    let mut c =
        redis::Client::open(format!("redis://app:app-pw@127.0.0.1:{}/", proxy.port)).unwrap().get_connection().unwrap();
    wait_for("slotgate to route", Duration::from_secs(20), || {
        redis::cmd("EXISTS").arg("app:acl:probe").query::<i64>(&mut c).is_ok()
    });
    proxy
}

#[test]
fn users_run_only_what_their_rules_allow_with_redis_own_words() {
    let dir = TempDir::new("auth-users");
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let proxy = proxy_with_users(&dir, &["--metrics", &metrics]);
    let (_redis, redis_port) = redis_server(&dir, USERS_REDIS);

    let commands = [
        // The default user of [[users]] has a password: nothing before AUTH.
        "GET app:acl:x",
        "AUTH reader wrong",
        "AUTH nobody r3ad",
        // Disabled: refused with the right password.
        "AUTH off off-pw",
        "AUTH reader r3ad",
        "ACL WHOAMI",
        "GET app:acl:x",
        "GET other:acl:x",
        "MGET app:acl:a other:acl:b",
        "SET app:acl:x 1",
        "PING",
        "CONFIG GET save",
        "CLIENT ID",
        // In @read, but also in @dangerous, which comes later.
        "KEYS app:acl:*",
        "ACL SETUSER someone",
        // Refused at queue time: EXEC aborts.
        "MULTI",
        "GET app:acl:x",
        "GET other:acl:x",
        "EXEC",
        "WATCH other:acl:x",
        "HELLO 2 AUTH app wrong",
        "HELLO 2 AUTH app app-pw",
        "ACL WHOAMI",
        "FLUSHALL",
        "KEYS app:acl:*",
        "SET app:acl:y 1",
        "GET app:acl:y",
        "DEL app:acl:y",
        // A refused EXEC discards the transaction, and says why.
        "AUTH noexec nx",
        "MULTI",
        "SET app:acl:z 1",
        "EXEC",
        "GET app:acl:z",
        "DISCARD",
        "WATCH app:acl:z",
        "EXEC",
        "GET app:acl:z",
        // Back to the default user, who needs its password again.
        "RESET",
        "GET app:acl:x",
        "AUTH def-pw",
        "ACL WHOAMI",
        "FLUSHALL",
        "GET app:acl:x",
        "QUIT",
    ];
    let through_slotgate = same_answers(proxy.port, redis_port, &commands);
    let said = |command: &str| &through_slotgate[commands.iter().position(|c| *c == command).unwrap()];
    assert_eq!(
        said("GET other:acl:x"),
        "-NOPERM this user has no permissions to access one of the keys used as arguments\r\n"
    );
    assert_eq!(said("SET app:acl:x 1"), "-NOPERM this user has no permissions to run the 'set' command\r\n");
    assert_eq!(said("CONFIG GET save"), "-NOPERM this user has no permissions to run the 'config|get' command\r\n");
    assert_eq!(said("FLUSHALL"), "-NOPERM this user has no permissions to run the 'flushall' command\r\n");
    assert_eq!(said("AUTH off off-pw"), "-WRONGPASS invalid username-password pair or user is disabled.\r\n");
    assert_eq!(said("HELLO 2 AUTH app app-pw"), "*14\r\n", "the SHA-256 password");
    assert_eq!(said("SET app:acl:z 1"), "+QUEUED\r\n");
    let failures = sample(&http_get(metrics_port, "/metrics").1, "slotgate_auth_failures_total");
    assert_eq!(failures, Some(4.0), "each WRONGPASS is counted");
}

#[test]
fn client_libraries_log_in_as_users() {
    let dir = TempDir::new("auth-users-clients");
    let proxy = proxy_with_users(&dir, &[]);
    // The redis crate: AUTH user pass over RESP2, HELLO 3 AUTH user pass over RESP3.
    for protocol in ["resp2", "resp3"] {
        let url = format!("redis://reader:r3ad@127.0.0.1:{}/?protocol={protocol}", proxy.port);
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let v: Option<String> = redis::cmd("GET").arg("app:acl:crate").query(&mut c).unwrap();
        assert_eq!(v, None);
        let error = redis::cmd("SET").arg("app:acl:crate").arg(1).query::<()>(&mut c).unwrap_err();
        assert!(error.to_string().contains("no permissions to run the 'set' command"), "{protocol}: {error}");
        let me: String = redis::cmd("ACL").arg("WHOAMI").query(&mut c).unwrap();
        assert_eq!(me, "reader");
        let wrong = format!("redis://reader:nope@127.0.0.1:{}/?protocol={protocol}", proxy.port);
        assert!(redis::Client::open(wrong).unwrap().get_connection().is_err(), "{protocol}: a wrong password");
    }
    let mut app =
        redis::Client::open(format!("redis://app:app-pw@127.0.0.1:{}/", proxy.port)).unwrap().get_connection().unwrap();
    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut app).unwrap();
    assert!(info.contains(" user=app "), "CLIENT INFO names the user: {info}");

    // redis-py, as a legacy application would log in.
    let script = r#"
import sys, redis
r = redis.Redis(port=int(sys.argv[1]), username="app", password="app-pw")
r.set("app:acl:py", "1")
assert r.get("app:acl:py") == b"1"
try:
    r.flushall()
    raise SystemExit("FLUSHALL was allowed")
except redis.exceptions.NoPermissionError as error:
    assert "flushall" in str(error), error
print("ok")
"#;
    let output = Command::new("python3").args(["-c", script, &proxy.port.to_string()]).output().unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && printed.trim() == "ok", "redis-py: {printed}");
}
