//! The guide's cluster kit, end to end: the real `scripts/redis-cluster.sh` starts six nodes and
//! slotgate on free ports with a scratch data folder, backs it up while it runs, and a restore
//! brings back exactly what the backup held: the keys written before it, not the one after.
//! Also: a backup never keeps a node folder whose AOF manifest names a missing file; `stop` and
//! `start` leave alone a Redis they did not start; `help` prints the usage.
//!
//! Everything the script starts is stopped by the script, then by PID, when the test ends,
//! fails, or is killed (a watchdog process runs `stop` once this process is gone).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;

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
/// slotgate. The script stops and starts the same ports again (nodes.conf records them), so no
/// one else may take them in that gap: they lie outside `support::free_port`'s range (20000-55000,
/// which the other test binaries scan) and outside Linux's default ephemeral range (32768-60999,
/// where a busy machine's outgoing connections hold hundreds of ports): nodes on 4001-4500, their
/// bus on 14001-14500, slotgate on 61000-64999. Kits of this process never share one: the ports
/// stay free until the script starts something on them.
fn free_ports() -> (u16, u16) {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap();
    let free = |port: u16| !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok();
    let seed = std::process::id() as u16;
    let base = (0..50)
        .map(|i| 4_000 + (seed.wrapping_add(i) % 50) * 10)
        .find(|base| (base + 1..=base + 6).all(|port| free(port) && free(port + 10_000)))
        .expect("no free block of node ports in 4001-4500");
    let slotgate = (0..4000)
        .map(|i| 61_000 + seed.wrapping_add(i) % 4000)
        .find(|&port| free(port))
        .expect("no free port in 61000-64999");
    handed_out.extend((base + 1..=base + 6).chain([slotgate]));
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

/// Something answers PONG on `port`.
fn answers(port: u16) -> bool {
    let pong = support::connect(port).ok().and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok());
    pong.as_deref() == Some("PONG")
}

/// Node N's `aof_rewrites` and `rdb_saves`: AOF rewrites and RDB saves since it started.
fn save_counts(kit: &Kit, n: u16) -> (u64, u64) {
    let mut node = support::connect(kit.node_port(n)).unwrap();
    let info: String = redis::cmd("INFO").arg("persistence").query(&mut node).unwrap();
    let field = |name: &str| -> u64 {
        let value = info.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':'));
        value.unwrap_or_else(|| panic!("no {name} in INFO persistence:\n{info}")).trim().parse().unwrap()
    };
    (field("aof_rewrites"), field("rdb_saves"))
}

/// How many AOF manifests a node folder holds (in its appendonlydir), and the base and incr files
/// they name that are missing: Redis would refuse to start from it. History files (type h) may
/// be gone; Redis deletes them in the background and never reads them.
fn missing_aof_files(node: &Path) -> (usize, Vec<String>) {
    let (mut manifests, mut missing) = (0, Vec::new());
    for dir in std::fs::read_dir(node).unwrap().map(|entry| entry.unwrap().path()).filter(|p| p.is_dir()) {
        for path in std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().path()) {
            let name = path.file_name().unwrap().to_string_lossy();
            if !name.ends_with(".manifest") || name.starts_with("temp-") {
                continue;
            }
            manifests += 1;
            // Lines read "file NAME seq N type b|h|i".
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                let value =
                    |key: &str| words.chunks(2).find(|pair| pair[0] == key).and_then(|pair| pair.get(1).copied());
                if let (Some(file), Some(kind)) = (value("file"), value("type")) {
                    if kind != "h" && !dir.join(file).is_file() {
                        missing.push(format!("{} names {file}", path.display()));
                    }
                }
            }
        }
    }
    (manifests, missing)
}

#[test]
fn a_restored_backup_holds_the_keys_written_before_it_and_none_after() {
    let mut kit = Kit::new();
    kit.start();
    kit.ok(&["status"]);

    // `stop` for another data folder finds neither a pidfile of its own nor a node running in
    // its folders on these ports: it must leave this cluster alone.
    let elsewhere =
        kit.command(SCRIPT).env("REDIS_CLUSTER_DATA", kit.dir.join("elsewhere")).arg("stop").output().unwrap();
    assert!(elsewhere.status.success(), "stop for another data folder failed:\n{}", text(&elsewhere));
    assert!(text(&elsewhere).contains("Left alone"), "it should say what it left alone:\n{}", text(&elsewhere));
    for port in (1..=6).map(|n| kit.node_port(n)).chain([kit.slotgate_port]) {
        assert!(answers(port), "port {port} was stopped by another data folder's stop:\n{}", text(&elsewhere));
    }

    let keys: Vec<String> = (0..30).map(|i| format!("kit:{i}")).collect();
    let mut client = kit.slotgate();
    for key in &keys {
        set(&mut client, key, &format!("value of {key}"));
    }
    assert_eq!(masters_with_keys(&kit), 3, "the keys should be spread over the three masters");

    // A backup of the running cluster: nodes flush their AOF and RDB, then data/ is copied.
    let counts_before: Vec<(u64, u64)> = (1..=6).map(|n| save_counts(&kit, n)).collect();
    let said = kit.ok(&["backup"]);
    for (n, before) in (1..=6).zip(counts_before) {
        let after = save_counts(&kit, n);
        assert!(
            after.0 > before.0 && after.1 > before.1,
            "node-{n} should have rewritten its AOF and saved its RDB for the backup: \
             (aof_rewrites, rdb_saves) went from {before:?} to {after:?}:\n{said}"
        );
    }
    let backups = kit.backups();
    assert_eq!(backups.len(), 1, "one data-backup-* folder expected:\n{said}");
    for n in 1..=6 {
        let (manifests, missing) = missing_aof_files(&backups[0].join(format!("node-{n}")));
        assert_eq!(manifests, 1, "node-{n} of the backup should hold one AOF manifest");
        assert!(missing.is_empty(), "the backup of node-{n} lacks AOF files: {missing:?}");
    }
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

#[test]
fn stop_leaves_a_redis_it_did_not_start_alone_and_start_refuses_to_run_beside_it() {
    let kit = Kit::new();
    let elsewhere = support::TempDir::new("kit-foreign");
    let port = kit.node_port(3);
    let foreign = support::Node::spawn(port, elsewhere.path(), &[]);

    let said = kit.ok(&["stop"]);
    assert!(said.contains(&format!("Left alone: port {port} is taken by a Redis that is not node-3")), "{said}");
    assert!(answers(port), "stop shut down a Redis it did not start:\n{said}");

    let refused = kit.run(&["start"]);
    let said = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "start must refuse a foreign Redis on a node port:\n{said}");
    let expected = format!(
        "port {port} is taken by a Redis that is not node-3 of {}; stop it or set REDIS_CLUSTER_PORT_BASE",
        kit.data().display()
    );
    assert!(said.contains(&expected), "expected '{expected}' in:\n{said}");
    // It refuses before starting anything, node-1 and node-2 included.
    for other in [kit.node_port(1), kit.node_port(2), kit.slotgate_port] {
        assert!(support::connect(other).is_err(), "start left something on port {other}:\n{said}");
    }
    assert!(answers(port), "start touched the foreign Redis:\n{said}");
    assert!(!kit.data().exists(), "a refused start made the data folder:\n{said}");

    let status = kit.run(&["status"]);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
    assert!(text(&status).contains("not node-3"), "status should not count it as node-3:\n{}", text(&status));
    drop(foreign);
}

#[test]
fn a_backup_never_keeps_a_node_folder_that_lacks_a_file_its_aof_manifest_names() {
    let kit = Kit::new();
    // A stopped cluster's data folder, AOF files only. The manifest's history entry (type h)
    // names a file Redis has deleted: that one is not needed.
    let manifest = "file appendonly.aof.1.base.rdb seq 1 type h\n\
                    file appendonly.aof.2.base.rdb seq 2 type b\n\
                    file appendonly.aof.2.incr.aof seq 2 type i\n";
    for n in 1..=6 {
        let aof = kit.data().join(format!("node-{n}/appendonlydir"));
        std::fs::create_dir_all(&aof).unwrap();
        std::fs::write(aof.join("appendonly.aof.manifest"), manifest).unwrap();
        std::fs::write(aof.join("appendonly.aof.2.incr.aof"), "").unwrap();
        if n != 2 {
            std::fs::write(aof.join("appendonly.aof.2.base.rdb"), "").unwrap();
        }
    }
    let failed = kit.run(&["backup"]);
    let said = text(&failed);
    assert_eq!(failed.status.code(), Some(1), "a backup lacking an AOF file must fail:\n{said}");
    assert!(said.contains("node-2/appendonlydir/appendonly.aof.manifest names appendonly.aof.2.base.rdb"), "{said}");
    assert!(kit.backups().is_empty(), "a failed backup left a backup folder:\n{said}");
    assert!(folders_named(&kit.dir, ".data-backup-").is_empty(), "a failed backup left its partial copy:\n{said}");

    // Complete, it is backed up; a backup that loses a file is not restored.
    std::fs::write(kit.data().join("node-2/appendonlydir/appendonly.aof.2.base.rdb"), "").unwrap();
    let said = kit.ok(&["backup"]);
    let backups = kit.backups();
    assert_eq!(backups.len(), 1, "{said}");
    std::fs::remove_file(backups[0].join("node-5/appendonlydir/appendonly.aof.2.incr.aof")).unwrap();
    let refused = kit.run(&["restore"]);
    let said = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "an incomplete backup must not be restored:\n{said}");
    assert!(said.contains("node-5/appendonlydir/appendonly.aof.manifest names appendonly.aof.2.incr.aof"), "{said}");
    assert!(folders_named(&kit.dir, "data-before-restore-").is_empty(), "a refused restore moved data/:\n{said}");
    assert!(folders_named(&kit.dir, ".data").is_empty(), "a refused restore left its partial copy:\n{said}");
}

#[test]
fn help_prints_the_usage_on_stdout_and_a_wrong_command_gets_it_on_stderr() {
    let kit = Kit::new();
    for arg in ["help", "-h", "--help"] {
        let out = kit.run(&[arg]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{arg}: {}", text(&out));
        assert!(stdout.starts_with("usage: "), "{arg} should print the usage on stdout:\n{}", text(&out));
        assert!(stdout.contains(&format!("{}-{}", kit.node_port(1), kit.node_port(6))), "{stdout}");
        assert!(out.stderr.is_empty(), "{arg}: {}", text(&out));
    }
    let out = kit.run(&["bogus"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("usage: "), "{}", text(&out));
}
