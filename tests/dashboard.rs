//! The Grafana dashboard against a real Prometheus: Debian's `prometheus`
//! scrapes a real slotgate under a little traffic, with the scrape settings
//! of `deploy/prometheus.yml`, and every PromQL expression of every panel
//! of `grafana/dashboards/slotgate.json` must return data. A panel whose
//! query returns nothing (a misspelt metric, a label that does not exist, a
//! series that only appears after the first error) fails here.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use serde_norway::Value as Yaml;
use support::http::{http_get, url_encode};
use support::{Cluster, Process, Proxy, TempDir, free_port, wait_for};

/// What `$__rate_interval` stands for here: four 1 s scrapes and some slack,
/// as Grafana computes it (at least four scrape intervals).
const RATE_INTERVAL: &str = "10s";

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn dashboard() -> Json {
    let text = std::fs::read_to_string(repo("grafana/dashboards/slotgate.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

/// Every panel that is not a row, with its title.
fn panels(dashboard: &Json) -> Vec<&Json> {
    let top = dashboard["panels"].as_array().expect("panels");
    // Collapsed rows keep their panels inside.
    let nested = top.iter().filter_map(|p| p["panels"].as_array()).flatten();
    top.iter().chain(nested).filter(|p| p["type"] != "row").collect()
}

/// `expr` as Grafana sends it with "All" instances selected, `instance`
/// being the only one: a regex of the variable's values (no `.*`, which in
/// a shared Prometheus would match every other target too).
fn as_grafana_sends_it(expr: &str, instance: &str) -> String {
    let all = instance.replace('.', "\\\\.");
    let expr = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$instance", &format!("({all})"));
    assert!(!expr.contains('$'), "a variable the test does not know: {expr}");
    expr
}

/// `deploy/prometheus.yml` for this test: its slotgate job scraping
/// `target` every second; the jobs for other services are dropped.
fn prometheus_config(target: &str) -> String {
    let text = std::fs::read_to_string(repo("deploy/prometheus.yml")).unwrap();
    let mut config: Yaml = serde_norway::from_str(&text).expect("deploy/prometheus.yml is YAML");
    config["global"]["scrape_interval"] = Yaml::from("1s");
    config["global"]["evaluation_interval"] = Yaml::from("1s");
    let jobs = config["scrape_configs"].as_sequence_mut().expect("scrape_configs");
    let scrapes_slotgate = |job: &Yaml| {
        job["static_configs"].as_sequence().into_iter().flatten().any(|group| {
            group["targets"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|t| t.as_str().is_some_and(|t| t.starts_with("slotgate:")))
        })
    };
    jobs.retain(scrapes_slotgate);
    assert_eq!(jobs.len(), 1, "deploy/prometheus.yml has one job scraping slotgate:PORT");
    let job = &mut jobs[0];
    if let Some(job) = job.as_mapping_mut() {
        job.remove("scrape_interval");
    }
    job["static_configs"] = serde_norway::from_str(&format!("[{{targets: ['{target}']}}]")).unwrap();
    serde_norway::to_string(&config).unwrap()
}

/// A query's result through Prometheus's HTTP API.
fn query(port: u16, promql: &str) -> Json {
    let (status, body) = http_get(port, &format!("/api/v1/query?query={}", url_encode(promql)));
    let answer: Json = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{status}: {body}"));
    assert_eq!(answer["status"], "success", "{promql}: {body}");
    answer["data"]["result"].clone()
}

/// The series of `result` that have a finite value.
fn finite(result: &Json) -> usize {
    let value = |s: &Json| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok());
    result.as_array().into_iter().flatten().filter(|s| value(s).is_some_and(f64::is_finite)).count()
}

/// Commands of every outcome, fan-out, new connections and a protocol
/// error, until `stop`.
fn traffic(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut c = support::connect(port).unwrap();
        let _: () = redis::cmd("SET").arg("dash:text").arg("abc").query(&mut c).unwrap();
        let mut round = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("dash:{}", round % 1000);
            let _: () = redis::cmd("SET").arg(&key).arg(round).query(&mut c).unwrap();
            let _: Option<String> = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
            let _: Vec<Option<String>> =
                redis::cmd("MGET").arg("dash:1").arg("dash:2").arg("dash:3").query(&mut c).unwrap();
            if round % 10 == 0 {
                assert!(redis::cmd("INCR").arg("dash:text").query::<i64>(&mut c).is_err(), "a node's error");
                assert!(redis::cmd("SMOVE").arg("dash:a").arg("dash:b").arg("x").query::<i64>(&mut c).is_err());
                c = support::connect(port).unwrap();
            }
            if round % 200 == 0 {
                let mut bad = support::raw::Raw::connect(port);
                bad.send(b"*1\r\n$x\r\n");
                assert!(bad.read_line().starts_with("-ERR Protocol error"));
            }
            round += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}

#[test]
fn every_dashboard_panel_returns_data_from_a_real_prometheus() {
    let dashboard = dashboard();
    let cluster = Cluster::start(3, 0);
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let proxy = Proxy::start(&cluster.seeds(), &["--metrics", &metrics, "--topology-refresh-ms", "1000"]);
    proxy.wait_routing();

    let dir = TempDir::new("prometheus");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, prometheus_config(&metrics)).unwrap();
    let prometheus_port = free_port();
    let mut prometheus = Process::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap()),
        "prometheus (Debian's package; scripts/test.sh installs it)",
    );
    wait_for("prometheus to be ready", Duration::from_secs(30), || {
        assert!(!prometheus.exited(), "prometheus exited: {}", read(&dir.path().join("prometheus.log")));
        std::net::TcpStream::connect(("127.0.0.1", prometheus_port)).is_ok()
            && http_get(prometheus_port, "/-/ready").0 == 200
    });

    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(proxy.port, stop.clone());
    let started = Instant::now();
    // A slot moves while the traffic runs: MOVED is counted, the epoch rises.
    let slot = support::slot_of("dash:1");
    cluster.migrate_slot(slot, cluster.other_master(slot), || {});
    // Enough scrapes under traffic for every rate: more than two per rate window.
    wait_for("ten seconds of traffic and twelve scrapes", Duration::from_secs(60), || {
        let scrapes = query(prometheus_port, &format!("count_over_time(up{{instance=\"{metrics}\"}}[1m])"));
        let scrapes = scrapes[0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok());
        started.elapsed() >= Duration::from_secs(10) && scrapes.is_some_and(|n| n >= 12.0)
    });

    let mut empty = Vec::new();
    let mut evaluated = 0;
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("panel {title} has no targets"));
        assert!(!targets.is_empty(), "panel {title} has no queries");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("panel {title}: a target without expr"));
            let result = query(prometheus_port, &as_grafana_sends_it(expr, &metrics));
            evaluated += 1;
            if finite(&result) == 0 {
                empty.push(format!("{title}: {expr}\n    -> {result}"));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert!(empty.is_empty(), "panels with no data:\n{}", empty.join("\n"));
    assert!(evaluated >= 20, "only {evaluated} queries");

    // The instance picker lists this slotgate.
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] == "query" {
            let definition = variable["definition"].as_str().unwrap();
            let (metric, label) = definition
                .strip_prefix("label_values(")
                .and_then(|d| d.strip_suffix(')'))
                .and_then(|d| d.split_once(", "))
                .unwrap_or_else(|| panic!("a variable the test cannot evaluate: {definition}"));
            let (_, body) = http_get(prometheus_port, &format!("/api/v1/label/{label}/values?match[]={metric}"));
            assert!(body.contains(&format!("\"{metrics}\"")), "{definition}: {body}");
        }
    }

    // Every family slotgate exports is on the dashboard (or picks its instances).
    let text = dashboard.to_string();
    let exported: BTreeSet<String> = http_get(metrics_port, "/metrics")
        .1
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(String::from)
        .collect();
    assert!(exported.len() >= 15, "{exported:?}");
    let missing: Vec<&String> = exported.iter().filter(|name| !text.contains(name.as_str())).collect();
    assert!(missing.is_empty(), "metrics no panel shows: {missing:?}");
    drop(prometheus);
}

#[test]
fn the_dashboard_is_well_formed() {
    let dashboard = dashboard();
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(ids.insert(panel["id"].as_u64().expect("a numeric id")), "panel id of {title} repeated");
        let (x, w) = (panel["gridPos"]["x"].as_u64().unwrap(), panel["gridPos"]["w"].as_u64().unwrap());
        assert!(x + w <= 24, "panel {title} is wider than the grid");
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {title} uses the datasource variable");
            assert!(panel["description"].as_str().is_some_and(|d| !d.is_empty()), "panel {title} explains itself");
        }
    }
    // The provisioned datasource is the variable's default.
    assert_eq!(dashboard["templating"]["list"][0]["current"]["value"], "prometheus");
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        assert!(variable["allValue"].is_null(), "'All' must list slotgate's instances, not match every target");
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
