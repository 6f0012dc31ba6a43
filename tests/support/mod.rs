//! The test harness: real `redis-server` cluster processes on free loopback
//! ports and a real slotgate process in front of them.
//!
//! Everything started here is stopped by PID: by `Drop`, and by a watchdog
//! process that kills the children when the test binary exits without
//! dropping them (shared clusters live in statics, which are never dropped).
//! Ports 6379 and 6380 are never used.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod http;
pub mod load;
pub mod raw;
pub mod tls;

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use redis::{Connection, Value};

/// Node timeout of test clusters: short, so failover tests stay quick;
/// `SLOTGATE_TEST_NODE_TIMEOUT_MS` changes it (scripts/chaos.sh uses 3000).
pub fn node_timeout_ms() -> u64 {
    std::env::var("SLOTGATE_TEST_NODE_TIMEOUT_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// The ports tests take: below Linux's ephemeral range (32768 up), their
/// cluster bus ports (+10000) included. A port in that range can be taken
/// by any outgoing connection between the check below and the bind.
const TEST_PORTS: std::ops::Range<u16> = 10_000..22_768;

/// A loopback port that is free, and whose cluster bus port (+10000) is free too.
pub fn free_port() -> u16 {
    let span = TEST_PORTS.end - TEST_PORTS.start;
    // Spread test binaries running at once over different ranges of 100.
    let _ = NEXT_PORT.compare_exchange(
        0,
        TEST_PORTS.start + (std::process::id() % u32::from(span / 100)) as u16 * 100,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let next = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        let port = TEST_PORTS.start + next.wrapping_sub(TEST_PORTS.start) % span;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

/// A scratch directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("slotgate-{label}-{}-{}", std::process::id(), free_port()));
        // A process that reused an old one's PID may meet its leftovers (shared
        // clusters live in statics, never dropped): a stale nodes.conf there
        // would make a new node join the old cluster.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        // Removed at exit too, for the shared ones (a watchdog, like the processes').
        // (After a second, once the processes' own watchdogs have killed them.)
        after_exit(&format!("sleep 1; rm -rf '{}'", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills `pids` (SIGKILL) as soon as this test process is gone.
fn watchdog(pids: &[u32]) -> Option<Child> {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    after_exit(&format!("kill -9 {} 2>/dev/null", list.join(" ")))
}

/// Runs the shell command `then` as soon as this test process is gone.
fn after_exit(then: &str) -> Option<Child> {
    let script = format!("while kill -0 {} 2>/dev/null; do sleep 0.5; done; {then}", std::process::id());
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
}

/// A helper process (Prometheus, say), killed on drop or when the test process exits.
pub struct Process {
    child: Child,
    watchdog: Option<Child>,
}

impl Process {
    /// Spawns `command`; `what` names it when it cannot start.
    pub fn spawn(command: &mut Command, what: &str) -> Process {
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let watchdog = watchdog(&[child.id()]);
        Process { child, watchdog }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// Its exit status, if it exits within `limit`.
    pub fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        kill(&mut self.child);
        if let Some(mut watchdog) = self.watchdog.take() {
            kill(&mut watchdog);
        }
    }
}

/// One redis-server process.
pub struct Node {
    pub port: u16,
    child: Option<Child>,
    watchdog: Option<Child>,
    args: Vec<String>,
    /// redis-cli's TLS arguments, for a node that speaks only TLS.
    tls_cli: Option<Vec<String>>,
}

impl Node {
    pub fn spawn(port: u16, dir: &Path, extra: &[String]) -> Node {
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &format!("nodes-{port}.conf"),
            "--cluster-node-timeout",
            &node_timeout_ms().to_string(),
            "--dir",
            &dir.display().to_string(),
            "--logfile",
            &format!("redis-{port}.log"),
            // The nodes share a directory: each its own data files.
            "--dbfilename",
            &format!("dump-{port}.rdb"),
            "--appenddirname",
            &format!("appendonlydir-{port}"),
            "--save",
            "",
            "--appendonly",
            "no",
            // Replicas sync at once (not 5 s later), so a test may fail a master right away.
            "--repl-diskless-sync-delay",
            "0",
            "--protected-mode",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        let mut node = Node { port, child: None, watchdog: None, args, tls_cli: None };
        node.restart();
        node
    }

    /// Starts the process (again), with the same arguments and data directory.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install -y redis-server)");
        // The old process's watchdog would kill its PID at exit, by then maybe another process's.
        if let Some(mut old) = self.watchdog.take() {
            kill(&mut old);
        }
        self.watchdog = watchdog(&[child.id()]);
        self.child = Some(child);
        wait_for(&format!("redis-server on {} to answer", self.port), Duration::from_secs(10), || {
            match &self.tls_cli {
                Some(tls) => tls::redis_cli(self.port, tls, &["PING"], "").1.contains("PONG"),
                None => {
                    connect(self.port).ok().and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok()).is_some()
                }
            }
        });
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the node dies without a word, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }

    /// SIGSTOP: the node keeps its connections but stops answering.
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "STOP");
        }
    }

    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "CONT");
        }
    }

    pub fn connection(&self) -> Connection {
        connect(self.port).expect("connect to node")
    }

    pub fn id(&self) -> String {
        redis::cmd("CLUSTER").arg("MYID").query(&mut self.connection()).expect("CLUSTER MYID")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.resume();
        self.kill();
        if let Some(mut watchdog) = self.watchdog.take() {
            kill(&mut watchdog);
        }
    }
}

pub fn connect(port: u16) -> redis::RedisResult<Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let connection = client.get_connection_with_timeout(Duration::from_secs(2))?;
    connection.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(connection)
}

/// Polls `done` until it holds, or panics after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Redis Cluster of real processes: masters with their replicas.
pub struct Cluster {
    pub nodes: Vec<Node>,
    dir: TempDir,
    /// Extra redis-server arguments of every node.
    extra: Vec<String>,
}

impl Cluster {
    /// `masters` masters with `replicas` replicas each; slots split evenly.
    pub fn start(masters: usize, replicas: usize) -> Cluster {
        Cluster::start_with(masters, replicas, &[])
    }

    /// Like [`Cluster::start`], with extra redis-server arguments for every node.
    pub fn start_with(masters: usize, replicas: usize, extra: &[&str]) -> Cluster {
        let ports: Vec<u16> = (0..masters * (1 + replicas)).map(|_| free_port()).collect();
        Cluster::start_on_with(&ports, masters, replicas, extra)
    }

    /// A cluster on the given ports (masters first).
    pub fn start_on(ports: &[u16], masters: usize, replicas: usize) -> Cluster {
        Cluster::start_on_with(ports, masters, replicas, &[])
    }

    fn start_on_with(ports: &[u16], masters: usize, replicas: usize, extra: &[&str]) -> Cluster {
        assert_eq!(ports.len(), masters * (1 + replicas));
        let dir = TempDir::new("cluster");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let nodes: Vec<Node> = ports.iter().map(|&port| Node::spawn(port, dir.path(), &extra)).collect();
        let cluster = Cluster { nodes, dir, extra };
        cluster.create(masters);
        cluster
    }

    /// What `redis-cli --cluster create` does, without its fixed waits:
    /// distinct epochs, slots, MEET, REPLICATE, then wait for agreement.
    fn create(&self, masters: usize) {
        for (i, node) in self.nodes.iter().enumerate() {
            let _: () = redis::cmd("CLUSTER").arg("SET-CONFIG-EPOCH").arg(i + 1).query(&mut node.connection()).unwrap();
        }
        for (i, node) in self.nodes[..masters].iter().enumerate() {
            let first = i * 16384 / masters;
            let last = (i + 1) * 16384 / masters - 1;
            let _: () =
                redis::cmd("CLUSTER").arg("ADDSLOTSRANGE").arg(first).arg(last).query(&mut node.connection()).unwrap();
        }
        let mut first = self.nodes[0].connection();
        for node in &self.nodes[1..] {
            let _: () = redis::cmd("CLUSTER").arg("MEET").arg("127.0.0.1").arg(node.port).query(&mut first).unwrap();
        }
        let total = self.nodes.len();
        wait_for("every node to know every other", Duration::from_secs(20), || {
            self.nodes.iter().all(|n| cluster_info(n.port).get("cluster_known_nodes") == Some(&total.to_string()))
        });
        let ids: Vec<String> = self.nodes[..masters].iter().map(Node::id).collect();
        for (i, replica) in self.nodes[masters..].iter().enumerate() {
            let master = &ids[i % masters];
            let _: () = redis::cmd("CLUSTER").arg("REPLICATE").arg(master).query(&mut replica.connection()).unwrap();
        }
        self.wait_stable();
        // Every node knows every replica as one (gossip takes a moment).
        let replicas = self.nodes.len() - masters;
        wait_for("every node to know the replicas", Duration::from_secs(20), || {
            self.nodes.iter().all(|n| {
                let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut n.connection()).unwrap_or_default();
                nodes.lines().filter(|l| l.contains(" slave ") || l.contains(",slave ")).count() == replicas
            })
        });
        // A replica that never synced could not take over from its master.
        wait_for("every replica to sync", Duration::from_secs(20), || {
            self.nodes[masters..].iter().all(|n| {
                let info: String = redis::cmd("INFO").arg("replication").query(&mut n.connection()).unwrap_or_default();
                info.contains("master_link_status:up")
            })
        });
    }

    /// Waits until every live node says `cluster_state:ok` and all agree on the masters.
    pub fn wait_stable(&self) {
        wait_for("the cluster to be stable", Duration::from_secs(30), || {
            let live: Vec<&Node> = self.nodes.iter().filter(|n| n.child.is_some()).collect();
            let ok = live.iter().all(|n| cluster_info(n.port).get("cluster_state").map(String::as_str) == Some("ok"));
            ok && {
                let views: Vec<Vec<(i64, i64, u16)>> = live.iter().map(|n| slot_ranges(n.port)).collect();
                views.windows(2).all(|w| w[0] == w[1]) && views[0].iter().map(|r| r.1 - r.0 + 1).sum::<i64>() == 16384
            }
        });
    }

    /// Seed list for slotgate's `--cluster`.
    pub fn seeds(&self) -> String {
        seed_list(&self.nodes.iter().map(|n| n.port).collect::<Vec<_>>())
    }

    pub fn node(&self, port: u16) -> &Node {
        self.nodes.iter().find(|n| n.port == port).expect("no node on that port")
    }

    pub fn node_mut(&mut self, port: u16) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.port == port).expect("no node on that port")
    }

    /// A live node to ask about the cluster.
    fn any_live(&self) -> u16 {
        self.nodes.iter().find(|n| n.child.is_some()).map(|n| n.port).expect("no live node")
    }

    /// The port of the master serving `slot`, as the cluster sees it now.
    pub fn owner(&self, slot: u16) -> u16 {
        slot_ranges(self.any_live())
            .into_iter()
            .find(|(first, last, _)| (*first..=*last).contains(&i64::from(slot)))
            .map(|r| r.2)
            .expect("slot has an owner")
    }

    /// Ports of the current masters.
    pub fn masters(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = slot_ranges(self.any_live()).into_iter().map(|r| r.2).collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// Starts one more node with the same settings, not yet in the cluster.
    pub fn spawn_node(&mut self) -> u16 {
        let port = free_port();
        self.nodes.push(Node::spawn(port, self.dir.path(), &self.extra));
        port
    }

    /// Takes the node on `port` out of the cluster's list (after
    /// `del-node`), still running.
    pub fn take_node(&mut self, port: u16) -> Node {
        let at = self.nodes.iter().position(|n| n.port == port).expect("no node on that port");
        self.nodes.remove(at)
    }

    /// The port of a live replica of the master on `master`.
    pub fn replica_of(&self, master: u16) -> u16 {
        let id = self.node(master).id();
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut self.node(master).connection()).unwrap();
        nodes
            .lines()
            .map(|line| line.split(' ').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[3] == id && f[2].contains("slave"))
            .and_then(|f| f[1].split(['@', ':']).nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("the master on {master} ({id}) has no replica:\n{nodes}"))
    }

    /// The master whose slots do not include `slot`: a migration target.
    pub fn other_master(&self, slot: u16) -> u16 {
        let owner = self.owner(slot);
        self.masters().into_iter().find(|p| *p != owner).expect("another master")
    }

    /// Moves `slot` to the master on `to`, key by key, the way
    /// `redis-cli --cluster reshard` does: IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE.
    /// `between_keys` runs after each key moved (to let traffic hit the ASK window).
    pub fn migrate_slot(&self, slot: u16, to: u16, mut between_keys: impl FnMut()) {
        let from = self.begin_migration(slot, to);
        let to_id = self.node(to).id();
        let mut source = self.node(from).connection();
        loop {
            let keys: Vec<Vec<u8>> =
                redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(1).query(&mut source).unwrap();
            let Some(key) = keys.first() else { break };
            let _: () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg(key)
                .arg(0)
                .arg(5000)
                .query(&mut source)
                .or_else(|e| if e.to_string().contains("NOKEY") { Ok(()) } else { Err(e) })
                .unwrap();
            between_keys();
        }
        self.assign_slot(slot, &to_id, to);
    }

    /// Opens the move of `slot` to the master on `to` (IMPORTING there,
    /// MIGRATING at the owner) without moving keys; returns the owner's port.
    pub fn begin_migration(&self, slot: u16, to: u16) -> u16 {
        let from = self.owner(slot);
        let (from_id, to_id) = (self.node(from).id(), self.node(to).id());
        let setslot = |port: u16, state: &str, id: &str| {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(id)
                .query(&mut self.node(port).connection())
                .unwrap();
        };
        setslot(to, "IMPORTING", &from_id);
        setslot(from, "MIGRATING", &to_id);
        from
    }

    /// `CLUSTER SETSLOT slot NODE id` on the new owner first, then everywhere.
    fn assign_slot(&self, slot: u16, to_id: &str, to: u16) {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(to_id)
            .query(&mut self.node(to).connection())
            .unwrap();
        for node in self.nodes.iter().filter(|n| n.child.is_some() && n.port != to) {
            let _: redis::RedisResult<()> =
                redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg("NODE").arg(to_id).query(&mut node.connection());
        }
        wait_for("the new slot owner to be known everywhere", Duration::from_secs(20), || {
            self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                slot_ranges(n.port)
                    .iter()
                    .any(|(first, last, port)| *port == to && (*first..=*last).contains(&i64::from(slot)))
            })
        });
    }
}

/// Runs `redis-cli --cluster <args>` (an operator's command) and returns
/// what it printed; panics if it fails.
pub fn redis_cli_cluster(args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .arg("--cluster")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli must be installed (apt-get install -y redis-tools)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && !text.contains("[ERR]"), "redis-cli --cluster {args:?} failed:\n{text}");
    text
}

/// `127.0.0.1:<port>,...` for slotgate's `--cluster`.
pub fn seed_list(ports: &[u16]) -> String {
    ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
}

/// Does the node on `port` say it is a master, with `cluster_state:ok`?
pub fn is_serving_master(port: u16) -> bool {
    let Ok(mut connection) = connect(port) else { return false };
    let role: redis::RedisResult<Vec<Value>> = redis::cmd("ROLE").query(&mut connection);
    let master = matches!(role.as_deref(), Ok([Value::BulkString(r), ..]) if r == b"master");
    master && cluster_info(port).get("cluster_state").map(String::as_str) == Some("ok")
}

/// `CLUSTER INFO` as a map.
pub fn cluster_info(port: u16) -> HashMap<String, String> {
    let Ok(mut connection) = connect(port) else { return HashMap::new() };
    let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut connection).unwrap_or_default();
    info.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_string(), v.trim().to_string())).collect()
}

/// `(first, last, master port)` for every range of `CLUSTER SLOTS`, sorted.
pub fn slot_ranges(port: u16) -> Vec<(i64, i64, u16)> {
    let Ok(mut connection) = connect(port) else { return Vec::new() };
    let Ok(Value::Array(ranges)) = redis::cmd("CLUSTER").arg("SLOTS").query::<Value>(&mut connection) else {
        return Vec::new();
    };
    let mut out: Vec<(i64, i64, u16)> = ranges
        .into_iter()
        .filter_map(|range| {
            let Value::Array(items) = range else { return None };
            let (Value::Int(first), Value::Int(last), Value::Array(master)) = (&items[0], &items[1], &items[2]) else {
                return None;
            };
            let Value::Int(port) = master.get(1)? else { return None };
            Some((*first, *last, *port as u16))
        })
        .collect();
    out.sort_unstable();
    out
}

/// The slot of `key`, as slotgate computes it.
pub fn slot_of(key: &str) -> u16 {
    slotgate::cluster::key_slot(key.as_bytes()).index() as u16
}

/// The `CLUSTER KEYSLOT` of `key`, asked of a node.
pub fn keyslot(port: u16, key: &[u8]) -> u16 {
    redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(&mut connect(port).unwrap()).unwrap()
}

/// A slotgate process.
pub struct Proxy {
    pub port: u16,
    process: Process,
    log: PathBuf,
    _dir: TempDir,
}

impl Proxy {
    /// slotgate in front of `seeds`, with extra command-line arguments.
    pub fn start(seeds: &str, extra: &[&str]) -> Proxy {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["--cluster", seeds, "--listen", &listen, "--log-level", "info"];
        args.extend(extra);
        Proxy::spawn(port, TempDir::new("proxy"), &args)
    }

    /// slotgate configured by the file `config` alone, where `{port}`
    /// stands for its listen port; the file is [`Proxy::config_file`].
    pub fn from_file(config: &str) -> Proxy {
        let port = free_port();
        let dir = TempDir::new("proxy");
        let file = dir.path().join("proxy.toml");
        std::fs::write(&file, config.replace("{port}", &port.to_string())).expect("config file");
        Proxy::spawn(port, dir, &["--config", file.to_str().expect("a UTF-8 path")])
    }

    /// The file [`Proxy::from_file`] wrote.
    pub fn config_file(&self) -> PathBuf {
        self._dir.path().join("proxy.toml")
    }

    fn spawn(port: u16, dir: TempDir, args: &[&str]) -> Proxy {
        let log = dir.path().join("slotgate.log");
        let process = Process::spawn(
            Command::new(env!("CARGO_BIN_EXE_slotgate"))
                .args(args)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file")),
            "slotgate",
        );
        let proxy = Proxy { port, process, log, _dir: dir };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            // Say why: slotgate's log has it (a port taken, a bad flag).
            let log = std::fs::read_to_string(&proxy.log).unwrap_or_default();
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "slotgate did not listen on {port} in 10 s; its log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy
    }

    /// Waits until slotgate routes commands (it has discovered the cluster).
    pub fn wait_routing(&self) {
        wait_for("slotgate to route commands", Duration::from_secs(20), || {
            connect(self.port).is_ok_and(|mut c| redis::cmd("EXISTS").arg("probe").query::<i64>(&mut c).is_ok())
        });
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn connection(&self) -> Connection {
        connect(self.port).expect("connect to slotgate")
    }

    /// A connection speaking `protocol` ("resp2" or "resp3"), with a read
    /// timeout long enough for blocking commands on a loaded machine.
    pub fn client(&self, protocol: &str) -> Connection {
        let url = format!("{}?protocol={protocol}", self.url());
        let con = redis::Client::open(url).expect("url").get_connection().expect("connect to slotgate");
        con.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
        con
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Its resident memory (VmRSS), in MB.
    pub fn rss_mb(&self) -> f64 {
        self.status_mb("VmRSS")
    }

    /// Its address space (VmSize), in MB: memory reserved but never
    /// touched shows here, not in the RSS.
    pub fn virtual_mb(&self) -> f64 {
        self.status_mb("VmSize")
    }

    fn status_mb(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("slotgate is running");
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"));
        kb / 1024.0
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        !self.process.exited()
    }

    /// Sends the signal `name` (TERM, INT, ...) to slotgate.
    pub fn signal(&self, name: &str) {
        signal(self.pid(), name);
    }

    /// Its exit status, if it exits within `limit`.
    pub fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        self.process.exit_within(limit)
    }
}

/// A 3-master, 3-replica cluster with slotgate in front, shared by the tests
/// of one test binary (they use distinct keys).
pub struct Shared {
    pub cluster: Cluster,
    pub proxy: Proxy,
}

impl Shared {
    pub fn start() -> Shared {
        let cluster = Cluster::start(3, 1);
        let proxy = Proxy::start(&cluster.seeds(), &[]);
        proxy.wait_routing();
        Shared { cluster, proxy }
    }
}

/// The cluster and slotgate shared by the tests of one test binary (each
/// binary compiles this module, so each has its own), started on first use.
pub fn shared() -> &'static Shared {
    static SHARED: std::sync::OnceLock<Shared> = std::sync::OnceLock::new();
    SHARED.get_or_init(Shared::start)
}

/// A tokio runtime for async tests that talk to real processes.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// A multiplexed async connection with timeouts fit for a loaded 2-core
/// test machine (the crate's defaults, 1 s to connect and 500 ms per reply,
/// are for production latency, not for 100,000-command pipelines).
pub async fn async_connection(url: &str) -> redis::aio::MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(Duration::from_secs(60)));
    let client = redis::Client::open(url).expect("url");
    client.get_multiplexed_async_connection_with_config(&config).await.expect("connect")
}
