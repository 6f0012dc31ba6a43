//! The guide's cluster kit, end to end: the real `scripts/redis-cluster.sh` starts six nodes and
//! slotgate on free ports with a scratch data folder, backs it up while it runs, and a restore
//! brings back exactly what the backup held: the keys written before it, not the one after.
//!
//! Everything the script starts is stopped by the script, then by PID, when the test ends,
//! fails, or is killed (a watchdog process runs `stop` once this process is gone).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/redis-cluster.sh");

/// The six nodes and slotgate as `scripts/redis-cluster.sh` runs them, on ports of their own.
struct Kit {
    /// Scratch folder holding the data folder and its backups.
    dir: PathBuf,
    /// Node N listens on `base + N`.
    base: u16,
    slotgate_port: u16,
    /// Every PID the script's pidfiles have named, to check (and make sure) they are gone.
    pids: Vec<u32>,
    /// Runs `stop` if this test process dies without dropping the kit.
    watchdog: Option<Child>,
}

impl Kit {
    fn new() -> Kit {
        let (base, slotgate_port) = free_ports();
        let dir = std::env::temp_dir().join(format!("slotgate-kit-{}-{base}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut kit = Kit { dir, base, slotgate_port, pids: Vec::new(), watchdog: None };
        let cleanup = format!(
            "while kill -0 {} 2>/dev/null; do sleep 0.5; done; '{SCRIPT}' stop; rm -rf '{}'",
            std::process::id(),
            kit.dir.display()
        );
        kit.watchdog =
            kit.command("sh").arg("-c").arg(cleanup).stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok();
        kit
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `program` with the script's environment: local mode, our ports, our data folder, the
    /// slotgate binary under test.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("REDIS_CLUSTER_MODE", "local")
            .env("REDIS_CLUSTER_PORT_BASE", self.base.to_string())
            .env("REDIS_CLUSTER_PROXY_PORT", self.slotgate_port.to_string())
            .env("REDIS_CLUSTER_DATA", self.data())
            .env("REDIS_CLUSTER_PROXY_BIN", env!("CARGO_BIN_EXE_slotgate"))
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(SCRIPT).args(args).output().unwrap()
    }

    /// Runs the script, asserts it succeeded, and returns what it printed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let text = text(&out);
        assert!(out.status.success(), "redis-cluster.sh {args:?} failed ({}):\n{text}", out.status);
        text
    }

    /// `start`, then note the PIDs of what it started.
    fn start(&mut self) {
        self.ok(&["start"]);
        let data = self.data();
        let pidfiles = (1..=6).map(|n| data.join(format!("node-{n}/redis.pid"))).chain([data.join("slotgate.pid")]);
        for file in pidfiles {
            let pid = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            self.pids.push(pid.trim().parse().unwrap());
        }
    }

    fn node_port(&self, n: u16) -> u16 {
        self.base + n
    }

    /// The `<data>-backup-*` folders beside the data folder.
    fn backups(&self) -> Vec<PathBuf> {
        folders_named(&self.dir, "data-backup-")
    }

    fn slotgate(&self) -> redis::Connection {
        support::connect(self.slotgate_port).unwrap()
    }
}

impl Drop for Kit {
    fn drop(&mut self) {
        let _ = self.run(&["stop"]);
        for &pid in &self.pids {
            if alive(pid) && is_ours(pid) {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

/// A port base whose six node ports and their bus ports (+10000) are free, and a port for
/// slotgate. Unlike `support::free_port` (20000-55000, which the other test binaries scan), they
/// come from above its range: the script stops and starts the same ports again (nodes.conf records
/// them), and another test binary could take a port in that gap. The bus ports (65001-65500) and
/// slotgate's (61000-64999) are outside Linux's default ephemeral range (32768-60999) too; the node
/// ports (55001-55500) are not, a smaller risk.
fn free_ports() -> (u16, u16) {
    let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    let seed = std::process::id() as u16;
    let base = (0..50)
        .map(|i| 55_000 + (seed.wrapping_add(i) % 50) * 10)
        .find(|base| (base + 1..=base + 6).all(|port| free(port) && free(port + 10_000)))
        .expect("no free block of node ports in 55001-55500");
    let slotgate = (0..4000)
        .map(|i| 61_000 + seed.wrapping_add(i) % 4000)
        .find(|&port| free(port))
        .expect("no free port in 61000-64999");
    (base, slotgate)
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn folders_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir() && path.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    found.sort();
    found
}

/// Alive, and not a zombie (an exited daemon its new parent has not reaped yet).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => !status.lines().any(|l| l.starts_with("State:") && l.contains('Z')),
        Err(_) => false,
    }
}

/// Still the program we started, not a process that reused its PID.
fn is_ours(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    cmdline.contains("redis-server") || cmdline.contains("slotgate")
}

fn set(connection: &mut redis::Connection, key: &str, value: &str) {
    let _: () = redis::cmd("SET").arg(key).arg(value).query(connection).unwrap();
}

fn get(connection: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(connection).unwrap()
}

/// Masters among the six nodes that hold at least one key.
fn masters_with_keys(kit: &Kit) -> usize {
    (1..=6)
        .filter(|&n| {
            let mut node = support::connect(kit.node_port(n)).unwrap();
            let info: String = redis::cmd("INFO").arg("replication").query(&mut node).unwrap();
            let keys: i64 = redis::cmd("DBSIZE").query(&mut node).unwrap();
            info.contains("role:master") && keys > 0
        })
        .count()
}

#[test]
fn a_restored_backup_holds_the_keys_written_before_it_and_none_after() {
    let mut kit = Kit::new();
    kit.start();
    kit.ok(&["status"]);

    let keys: Vec<String> = (0..30).map(|i| format!("kit:{i}")).collect();
    let mut client = kit.slotgate();
    for key in &keys {
        set(&mut client, key, &format!("value of {key}"));
    }
    assert_eq!(masters_with_keys(&kit), 3, "the keys should be spread over the three masters");

    // A backup of the running cluster: nodes flush their AOF and RDB, then data/ is copied.
    let said = kit.ok(&["backup"]);
    let backups = kit.backups();
    assert_eq!(backups.len(), 1, "one data-backup-* folder expected:\n{said}");
    assert!(said.contains(&backups[0].display().to_string()), "backup should print its path:\n{said}");
    let name = backups[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.len() == "data-backup-YYYYMMDD-HHMMSS".len() && name[12..].chars().all(|c| c.is_ascii_digit() || c == '-'),
        "{name}"
    );
    set(&mut client, "kit:after-backup", "not in the backup");
    drop(client);

    let refused = kit.run(&["restore"]);
    assert_eq!(refused.status.code(), Some(1), "restore must refuse while the cluster runs:\n{}", text(&refused));
    assert!(text(&refused).contains("stop it first"), "{}", text(&refused));
    assert!(folders_named(&kit.dir, "data-before-restore-").is_empty(), "a refused restore moved data/");

    kit.ok(&["stop"]);
    let said = kit.ok(&["restore"]);
    let aside = folders_named(&kit.dir, "data-before-restore-");
    assert_eq!(aside.len(), 1, "the replaced data/ should be kept aside:\n{said}");
    assert!(said.contains(&aside[0].display().to_string()), "restore should say where the old data went:\n{said}");

    kit.start();
    let mut client = kit.slotgate();
    for key in &keys {
        assert_eq!(get(&mut client, key), Some(format!("value of {key}")), "{key} was written before the backup");
    }
    assert_eq!(get(&mut client, "kit:after-backup"), None, "written after the backup, so not restored");
    drop(client);
    kit.ok(&["status"]);

    kit.ok(&["stop"]);
    for &pid in &kit.pids {
        assert!(!alive(pid), "pid {pid} outlived stop");
    }
    for port in (1..=6).map(|n| kit.node_port(n)).chain([kit.slotgate_port]) {
        assert!(support::connect(port).is_err(), "something still answers on port {port}");
    }
}
