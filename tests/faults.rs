//! The cluster changes under load: a master killed or frozen, slots
//! resharded, nodes added and removed, the whole cluster restarted. Each
//! scenario runs writers and readers through slotgate and checks what they
//! saw: errors only where the cluster itself had no master to ask, recovery
//! within a second of the cluster's own, no write executed twice.
//!
//! The scenarios run one at a time (they measure recovery times, which a
//! neighbour's CPU load would blur). `SLOTGATE_CHAOS_SECS` stretches the
//! traffic around each fault; `scripts/chaos.sh` uses it and collects the
//! summary rows each scenario prints.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::load::{Load, Op, Outcome, Report, SUMMARY_HEADER};
use support::{Cluster, Proxy, is_serving_master, redis_cli_cluster, slot_of, wait_for};

/// One scenario at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Traffic before and after each fault: a little in the test suite, as long
/// as asked under `scripts/chaos.sh`.
fn traffic_time() -> Duration {
    let secs = std::env::var("SLOTGATE_CHAOS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    Duration::from_secs_f64(secs)
}

/// The scenario's row of the chaos table (`lag`: how long after the
/// cluster's own recovery writes went through again).
fn print_summary(report: &Report, scenario: &str, lag: Option<Duration>) {
    eprintln!("{SUMMARY_HEADER}\n{}", report.summary(scenario, lag));
}

/// A 3+3 cluster with slotgate in front of it, and traffic flowing.
fn cluster_under_load(extra: &[&str]) -> (Cluster, Proxy, Load) {
    cluster_under_load_with(&[], extra)
}

/// Like [`cluster_under_load`], with extra arguments for the nodes and for slotgate.
fn cluster_under_load_with(node_extra: &[&str], extra: &[&str]) -> (Cluster, Proxy, Load) {
    let cluster = Cluster::start_with(3, 1, node_extra);
    let proxy = Proxy::start(&cluster.seeds(), extra);
    proxy.wait_routing();
    let load = Load::start(&proxy.url(), 4, 1);
    std::thread::sleep(traffic_time());
    (cluster, proxy, load)
}

#[test]
fn a_killed_master_fails_over_and_only_its_in_flight_requests_fail() {
    let _serial = serial();
    let (mut cluster, proxy, load) = cluster_under_load(&[]);
    let victim = cluster.owner(slot_of(&load.counters[0]));
    let replica = cluster.replica_of(victim);
    let victims = KeysOf::node(&cluster, &load, victim);
    let killed = Instant::now();
    cluster.node_mut(victim).kill();
    wait_for("the replica to take over", Duration::from_secs(20), || is_serving_master(replica));
    let recovered = Instant::now();
    std::thread::sleep(traffic_time() + Duration::from_secs(1));
    let report = load.stop(Duration::from_secs(10));
    eprintln!("cluster recovered {} ms after the kill", (recovered - killed).as_millis());

    assert_writes_resume(&report, "kill -9 of a master", killed, recovered, |key| victims.counters[key]);
    assert_errors_only(&report, "on the failed master's slots, in flight or while it had no successor", |error| {
        let text = error.error.as_deref().unwrap_or_default();
        // Under way at the kill (answered after it) counts as sent while the
        // slot had no master: a request the client sent just before the kill
        // but slotgate had not yet written was retried (it cannot have run)
        // until the retry window, shorter than this failover, ran out.
        let during = error.done >= killed && error.sent <= recovered;
        victims.hit(error) && (text.contains("may have run") || during)
    });
    assert_eq!(report.over_counts(), 0, "writes executed twice");
    drop(proxy);
}

#[test]
fn a_frozen_master_costs_only_its_own_slots_a_timeout() {
    let _serial = serial();
    // With full coverage required, Redis refuses every slot while one has no
    // master; this cluster keeps serving the others, as many do in production.
    let (cluster, proxy, load) =
        cluster_under_load_with(&["--cluster-require-full-coverage", "no"], &["--request-timeout-ms", "1000"]);
    let victim = cluster.owner(slot_of(&load.counters[0]));
    let replica = cluster.replica_of(victim);
    let victims = KeysOf::node(&cluster, &load, victim);
    // A client of the other masters' slots alone, timing each request.
    let healthy_key = (0..).map(|i| format!("healthy:{i}")).find(|k| cluster.owner(slot_of(k)) != victim).unwrap();
    let probe_url = proxy.url();
    let probing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let probe = {
        let probing = probing.clone();
        std::thread::spawn(move || {
            let mut c = redis::Client::open(probe_url).unwrap().get_connection().unwrap();
            let (mut slowest, mut count) = (Duration::ZERO, 0u64);
            while probing.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let _: () = redis::cmd("SET").arg(&healthy_key).arg(count).query(&mut c).unwrap();
                slowest = slowest.max(started.elapsed());
                count += 1;
            }
            (slowest, count)
        })
    };
    let frozen = Instant::now();
    cluster.node(victim).pause();
    wait_for("the replica to take over", Duration::from_secs(20), || is_serving_master(replica));
    let recovered = Instant::now();
    cluster.node(victim).resume();
    std::thread::sleep(traffic_time() + Duration::from_secs(1));
    probing.store(false, std::sync::atomic::Ordering::Relaxed);
    let (slowest, probed) = probe.join().unwrap();
    let report = load.stop(Duration::from_secs(10));
    eprintln!(
        "cluster recovered {} ms after the freeze; healthy slots: {probed} SETs, slowest {slowest:?}",
        (recovered - frozen).as_millis()
    );

    assert!(slowest < Duration::from_millis(500), "a healthy slot's request waited {slowest:?}");
    assert_writes_resume(&report, "SIGSTOP of a master until failover", frozen, recovered, |key| victims.counters[key]);
    assert_errors_only(&report, "on the frozen master's slots, timed out or while it had no successor", |error| {
        let text = error.error.as_deref().unwrap_or_default();
        victims.hit(error) && (text.contains("no reply within") || (error.sent >= frozen && error.sent <= recovered))
    });
    assert_eq!(report.over_counts(), 0, "writes executed twice");
}

#[test]
fn resharding_1000_slots_under_load_costs_no_error() {
    let _serial = serial();
    let (cluster, _proxy, load) = cluster_under_load(&[]);
    let masters = cluster.masters();
    let (from, to) = (cluster.node(masters[0]).id(), cluster.node(masters[1]).id());
    let entry = format!("127.0.0.1:{}", masters[2]);
    redis_cli_cluster(&[
        "reshard",
        &entry,
        "--cluster-from",
        &from,
        "--cluster-to",
        &to,
        "--cluster-slots",
        "1000",
        "--cluster-yes",
    ]);
    std::thread::sleep(traffic_time());
    let report = load.stop(Duration::from_secs(10));
    print_summary(&report, "reshard 1000 slots", None);
    assert_clean(&report);
    assert_eq!(
        support::slot_ranges(masters[1]).iter().filter(|r| r.2 == masters[1]).map(|r| r.1 - r.0 + 1).sum::<i64>(),
        5461 + 1000
    );
}

#[test]
fn a_node_added_and_rebalanced_under_load_takes_traffic_without_errors() {
    let _serial = serial();
    let (mut cluster, _proxy, load) = cluster_under_load(&[]);
    let entry = format!("127.0.0.1:{}", cluster.masters()[0]);
    let added = cluster.spawn_node();
    redis_cli_cluster(&["add-node", &format!("127.0.0.1:{added}"), &entry]);
    wait_for("the new node to be known everywhere", Duration::from_secs(20), || {
        cluster
            .nodes
            .iter()
            .all(|n| support::cluster_info(n.port).get("cluster_known_nodes") == Some(&cluster.nodes.len().to_string()))
    });
    wait_for("the new node to see the cluster ok", Duration::from_secs(20), || {
        support::cluster_info(added).get("cluster_state").map(String::as_str) == Some("ok")
    });
    redis_cli_cluster(&["rebalance", &entry, "--cluster-use-empty-masters"]);
    std::thread::sleep(traffic_time());
    let report = load.stop(Duration::from_secs(10));
    print_summary(&report, "add-node + rebalance", None);
    assert_clean(&report);
    let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut cluster.node(added).connection()).unwrap();
    assert!(stats.contains("cmdstat_incr:"), "the new node serves its share of the writes:\n{stats}");
}

#[test]
fn a_node_emptied_and_deleted_under_load_is_forgotten() {
    let _serial = serial();
    let mut cluster = Cluster::start(4, 0);
    let proxy = Proxy::start(&cluster.seeds(), &[]);
    proxy.wait_routing();
    let load = Load::start(&proxy.url(), 4, 1);
    std::thread::sleep(traffic_time());
    let leaving = cluster.masters()[3];
    let leaving_id = cluster.node(leaving).id();
    let entry = format!("127.0.0.1:{}", cluster.masters()[0]);
    redis_cli_cluster(&["rebalance", &entry, "--cluster-weight", &format!("{leaving_id}=0")]);
    redis_cli_cluster(&["del-node", &entry, &leaving_id]);
    let left = cluster.take_node(leaving);
    std::thread::sleep(traffic_time());
    let report = load.stop(Duration::from_secs(10));
    print_summary(&report, "rebalance away + del-node", None);
    assert_clean(&report);
    // slotgate closes its connections to the node once it has left the cluster.
    wait_for("slotgate to close its connections to the deleted node", Duration::from_secs(15), || {
        let info: String = redis::cmd("INFO").arg("clients").query(&mut left.connection()).unwrap_or_default();
        info.contains("connected_clients:1\r")
    });
}

#[test]
fn a_whole_cluster_restart_answers_clusterdown_then_recovers() {
    let _serial = serial();
    let mut cluster = Cluster::start_with(3, 1, &["--appendonly", "yes", "--appendfsync", "always"]);
    let proxy = Proxy::start(&cluster.seeds(), &[]);
    proxy.wait_routing();
    let load = Load::start(&proxy.url(), 4, 1);
    std::thread::sleep(traffic_time());
    let stopping = Instant::now();
    for node in &mut cluster.nodes {
        node.kill();
    }
    let stopped = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    for node in &mut cluster.nodes {
        node.restart();
    }
    cluster.wait_stable();
    let recovered = Instant::now();
    std::thread::sleep(traffic_time() + Duration::from_secs(1));
    let report = load.stop(Duration::from_secs(10));
    assert_writes_resume(&report, "whole cluster restart", stopped, recovered, |_| true);
    assert_errors_only(&report, "CLUSTERDOWN while the cluster was down, or in flight when it stopped", |error| {
        let text = error.error.as_deref().unwrap_or_default();
        let in_flight = error.sent <= stopped && text.contains("may have run");
        let down = error.sent >= stopping && error.sent <= recovered && text.starts_with("ClusterDown");
        in_flight || down
    });
    assert_eq!(report.over_counts(), 0, "writes executed twice");
    assert_eq!(report.lost_writes(), 0, "acknowledged writes lost (the nodes fsync every write)");
}

#[test]
fn a_cluster_back_on_new_addresses_is_found_through_the_seeds() {
    let _serial = serial();
    let old = Cluster::start(3, 0);
    let new_ports: Vec<u16> = (0..3).map(|_| support::free_port()).collect();
    // The operator listed where the cluster may be: today's nodes and tomorrow's.
    let seeds = format!("{},{}", old.seeds(), support::seed_list(&new_ports[..1]));
    let proxy = Proxy::start(&seeds, &[]);
    proxy.wait_routing();
    let load = Load::start(&proxy.url(), 2, 1);
    std::thread::sleep(traffic_time());
    let stopping = Instant::now();
    drop(old);
    let stopped = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let new = Cluster::start_on(&new_ports, 3, 0);
    let recovered = Instant::now();
    std::thread::sleep(traffic_time() + Duration::from_secs(1));
    let report = load.stop(Duration::from_secs(10));
    assert_writes_resume(&report, "cluster back on new addresses", stopped, recovered, |_| true);
    assert_errors_only(&report, "CLUSTERDOWN while no cluster was up, or the old cluster's data missing", |error| {
        let text = error.error.as_deref().unwrap_or_default();
        let in_flight = error.sent <= stopped && text.contains("may have run");
        let down = error.sent >= stopping && error.sent <= recovered && text.starts_with("ClusterDown");
        // The new cluster is empty: the readers' keys are gone (and stay
        // gone). An MGET's parts may come from either cluster.
        let gone = text == "wrong value None" || text.starts_with("missing values");
        in_flight || down || gone
    });
    drop(new);
}

#[test]
fn slotgate_started_before_the_cluster_serves_it_once_it_is_up() {
    let _serial = serial();
    let ports: Vec<u16> = (0..6).map(|_| support::free_port()).collect();
    let proxy = Proxy::start(&support::seed_list(&ports[..3]), &[]);
    let load = Load::start(&proxy.url(), 2, 1);
    std::thread::sleep(traffic_time());
    let started = Instant::now();
    let cluster = Cluster::start_on(&ports, 3, 1);
    let recovered = Instant::now();
    std::thread::sleep(traffic_time() + Duration::from_secs(1));
    let report = load.stop(Duration::from_secs(10));
    assert_writes_resume(&report, "slotgate started before the cluster", started, recovered, |_| true);
    assert_errors_only(&report, "CLUSTERDOWN before the cluster was up", |error| {
        error.sent <= recovered && error.error.as_deref().unwrap_or_default().contains("ClusterDown")
    });
    drop(cluster);
}

/// Which of the load's keys one node serves.
struct KeysOf {
    counters: Vec<bool>,
    fixed: Vec<bool>,
}

impl KeysOf {
    fn node(cluster: &Cluster, load: &Load, port: u16) -> KeysOf {
        let on = |keys: &[String]| keys.iter().map(|k| cluster.owner(slot_of(k)) == port).collect();
        KeysOf { counters: on(&load.counters), fixed: on(&load.fixed) }
    }

    /// Was this request for one of them?
    fn hit(&self, outcome: &Outcome) -> bool {
        match outcome.op {
            Op::Incr => self.counters[outcome.key],
            Op::Get => self.fixed[outcome.key],
            Op::Mget => support::load::mget_group(outcome.key).any(|key| self.fixed[key]),
        }
    }
}

/// Writes to the counters `which` selects succeed again within a second of
/// the cluster's own recovery at `recovered` (a fault at `since`).
fn assert_writes_resume(
    report: &Report,
    scenario: &str,
    since: Instant,
    recovered: Instant,
    which: impl Fn(usize) -> bool,
) {
    let first = report.first_write_after(since, which).expect("writes resume");
    let lag = first.saturating_duration_since(recovered);
    print_summary(report, scenario, Some(lag));
    assert!(lag <= Duration::from_secs(1), "writes resumed {lag:?} after the cluster had recovered");
}

/// Every error the clients saw is one `allowed` accepts (described by `what`).
fn assert_errors_only(report: &Report, what: &str, allowed: impl Fn(&Outcome) -> bool) {
    let errors = report.errors();
    eprintln!("{} errors; first: {:?}", errors.len(), errors.first());
    for error in errors {
        assert!(allowed(error), "an error other than {what}: {error:?}");
    }
}

/// No error, no wrong value, nothing lost or run twice.
fn assert_clean(report: &Report) {
    assert_eq!(report.errors().len(), 0, "client-visible errors, first: {:?}", report.errors().first());
    assert_eq!(report.over_counts(), 0, "writes executed twice");
    assert_eq!(report.lost_writes(), 0, "acknowledged writes lost");
}
