//! Hot reload: on SIGHUP slotgate reads its config file again and puts the
//! new settings in force without dropping a connection; an invalid file
//! changes nothing; settings that need a restart keep their old values and
//! the log says so.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::time::Duration;

use support::raw::Raw;
use support::{Proxy, shared, slot_of, wait_for};

/// slotgate with only a config file: `body` after the cluster and listen lines.
fn proxy(body: &str) -> Proxy {
    let proxy = Proxy::from_file(&config(body));
    proxy.wait_routing();
    proxy
}

fn config(body: &str) -> String {
    let seeds = shared().cluster.seeds();
    let seeds: Vec<String> = seeds.split(',').map(|s| format!("{s:?}")).collect();
    format!("cluster = [{}]\nlisten = \"127.0.0.1:{{port}}\"\n{body}\n", seeds.join(", "))
}

/// Writes `body` as the new file and sends SIGHUP; returns once the log has
/// one more line containing `awaited`.
fn reload(proxy: &Proxy, body: &str, awaited: &str) -> String {
    let before = proxy.log().matches(awaited).count();
    std::fs::write(proxy.config_file(), config(body).replace("{port}", &proxy.port.to_string())).unwrap();
    proxy.signal("HUP");
    wait_for(&format!("{awaited:?} in the log"), Duration::from_secs(10), || {
        proxy.log().matches(awaited).count() > before
    });
    let log = proxy.log();
    let line = log.lines().rfind(|l| l.contains(awaited)).unwrap_or_default();
    line.to_string()
}

#[test]
fn sighup_changes_passwords_and_limits_and_keeps_connected_clients() {
    let proxy = proxy("max_clients = 100");
    let mut connected = Raw::connect(proxy.port);
    connected.send(b"SET reload:a 1\r\n");
    connected.expect(b"+OK\r\n");

    let line = reload(&proxy, "requirepass = \"s3cret\"\nmax_clients = 2", "configuration reloaded");
    assert!(line.contains("max_clients") && line.contains("requirepass"), "{line}");
    // Logged in before (no password was needed): still is, as in Redis.
    connected.send(b"GET reload:a\r\n");
    connected.expect(b"$1\r\n1\r\n");
    let mut second = Raw::connect(proxy.port);
    second.send(b"GET reload:a\r\nAUTH s3cret\r\nGET reload:a\r\n");
    second.expect(b"-NOAUTH Authentication required.\r\n+OK\r\n$1\r\n1\r\n");
    // Two are open: a third is one too many now.
    let mut third = Raw::connect(proxy.port);
    third.expect(b"-ERR max number of clients reached\r\n");
    assert!(third.closed_within(Duration::from_secs(2)));

    // An invalid file: refused, and the settings in force stay.
    let line = reload(&proxy, "requirepass = \"other\"\nmax_clients = 0", "reload refused");
    assert!(line.contains("max_clients"), "the error names the key: {line}");
    connected.send(b"GET reload:a\r\n");
    connected.expect(b"$1\r\n1\r\n");
    let mut refused = Raw::connect(proxy.port);
    refused.expect(b"-ERR max number of clients reached\r\n");
    drop(second);
    std::thread::sleep(Duration::from_millis(200));
    let mut again = Raw::connect(proxy.port);
    again.send(b"AUTH other\r\nAUTH s3cret\r\n");
    again.expect(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n+OK\r\n");
}

#[test]
fn restart_only_settings_are_named_and_keep_their_values() {
    let proxy = proxy("");
    let mut client = Raw::connect(proxy.port);
    let line = reload(&proxy, "threads = 4\nmetrics_listen = \"127.0.0.1:1\"\nmax_pipeline = 10", "need a restart");
    assert!(line.contains("threads") && line.contains("metrics_listen"), "{line}");
    assert!(!line.contains("max_pipeline"), "{line}");
    let line = proxy.log().lines().rfind(|l| l.contains("configuration reloaded")).unwrap().to_string();
    assert!(line.contains("max_pipeline"), "{line}");
    client.send(b"INFO server\r\n");
    let header = client.read_line();
    let length: usize = header[1..].trim().parse().unwrap();
    let info = String::from_utf8(client.read_exact(length + 2)).unwrap();
    assert!(info.contains("redis_version"), "{info}");
    // Still one worker: the workers count is in the startup line only.
    assert!(proxy.log().contains("workers=1"), "{}", proxy.log());
}

#[test]
fn the_log_level_changes_on_reload() {
    let proxy = proxy("log_level = \"info\"");
    // At warn, the reload's own info line is not written, its warning is.
    let before = proxy.log().matches("configuration reloaded").count();
    reload(&proxy, "log_level = \"warn\"\nthreads = 2", "need a restart");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(proxy.log().matches("configuration reloaded").count(), before, "{}", proxy.log());
    let line = reload(&proxy, "log_level = \"info\"", "configuration reloaded");
    assert!(line.contains("log_level"), "{line}");
}

/// GETs a replica has run, from its INFO commandstats.
fn gets_on(port: u16) -> u64 {
    let mut node = support::connect(port).unwrap();
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut node).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn read_from_changes_on_reload_for_clients_already_connected() {
    let proxy = proxy("read_from = \"master\"");
    let key = "reload:read-from";
    let replica = shared().cluster.replica_of(shared().cluster.owner(slot_of(key)));
    let mut client = Raw::connect(proxy.port);
    client.send(format!("SET {key} v\r\nWAIT 1 5000\r\n").as_bytes());
    client.expect(b"+OK\r\n:1\r\n");
    let get = format!("GET {key}\r\n").repeat(20);
    let before = gets_on(replica);
    client.send(get.as_bytes());
    client.expect(&b"$1\r\nv\r\n".repeat(20));
    assert_eq!(gets_on(replica), before, "read_from = master reads from the master");

    reload(&proxy, "read_from = \"replica-preferred\"", "configuration reloaded");
    wait_for("reads to reach the replica", Duration::from_secs(10), || {
        client.send(get.as_bytes());
        client.expect(&b"$1\r\nv\r\n".repeat(20));
        gets_on(replica) > before
    });
}

#[test]
fn a_reload_applies_users_new_rules_and_closes_clients_of_removed_users() {
    let users = |rules: &str| {
        format!(
            "[[users]]\nname = \"app\"\npassword = \"app-pass\"\nrules = \"{rules}\"\n\n\
             [[users]]\nname = \"temp\"\npassword = \"temp-pass\"\nrules = \"+@all ~*\"\n"
        )
    };
    let proxy = proxy(&users("+@all ~*"));
    let mut app = Raw::connect(proxy.port);
    app.send(b"AUTH app app-pass\r\nSET reload:user v\r\n");
    app.expect(b"+OK\r\n+OK\r\n");
    let mut temp = Raw::connect(proxy.port);
    temp.send(b"AUTH temp temp-pass\r\n");
    temp.expect(b"+OK\r\n");

    // app may now only read; temp is gone.
    let only_app = users("+@read ~reload:*");
    let only_app = &only_app[..only_app.find("\n\n").unwrap()];
    reload(&proxy, only_app, "configuration reloaded");
    assert!(temp.closed_within(Duration::from_secs(5)), "temp's client is closed");
    app.send(b"GET reload:user\r\nSET reload:user w\r\n");
    app.expect(b"$1\r\nv\r\n-NOPERM this user has no permissions to run the 'set' command\r\n");
    let mut again = Raw::connect(proxy.port);
    again.send(b"AUTH temp temp-pass\r\n");
    again.expect(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n");
}
