//! docker-compose.yml: valid for docker-compose, and consistent with the node configs,
//! the Prometheus and Grafana provisioning and the slotgate image it names.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;

use super::{
    COMPOSE, DOCKERFILE, NODES, at, cargo_binary, host_of, is_loopback, port_of, read, root, seq, text, text_at, yaml,
};

pub(super) struct Compose(Value);

impl Compose {
    pub(super) fn load() -> Compose {
        Compose(yaml(COMPOSE))
    }

    pub(super) fn service(&self, name: &str) -> &Value {
        at(&self.0, "services").and_then(|s| s.get(name)).unwrap_or_else(|| panic!("{COMPOSE}: no service `{name}`"))
    }

    pub(super) fn services(&self) -> Vec<(String, &Value)> {
        let services = at(&self.0, "services").and_then(Value::as_mapping).expect("docker-compose.yml: no services");
        services.iter().map(|(name, service)| (name.as_str().unwrap().to_string(), service)).collect()
    }
}

/// A service's environment, written as a map or as a list of `KEY=VALUE`.
fn environment(service: &Value) -> BTreeMap<String, String> {
    match service.get("environment") {
        Some(Value::Mapping(map)) => map.iter().map(|(k, v)| (text(k).unwrap(), text(v).unwrap_or_default())).collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|item| item.as_str()?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

pub(super) fn env_var(service: &Value, name: &str, service_name: &str) -> String {
    environment(service).remove(name).unwrap_or_else(|| panic!("{COMPOSE}: {service_name} does not set {name}"))
}

/// A service's published ports as (published on the host, target in the container).
fn ports(service: &Value) -> Vec<(u16, u16)> {
    let number = |v: Option<&Value>| v.and_then(text).and_then(|p| p.parse().ok()).expect("a port is not a number");
    let short = |spec: &str| {
        // [IP:]PUBLISHED:TARGET[/PROTOCOL], or a bare TARGET
        let mut parts = spec.split('/').next().unwrap().rsplit(':').map(|p| p.parse().expect("bad port"));
        let target = parts.next().unwrap();
        (parts.next().unwrap_or(target), target)
    };
    let ports = seq(service.get("ports")).iter();
    ports
        .map(|p| {
            if p.is_mapping() {
                (number(p.get("published")), number(p.get("target")))
            } else {
                short(&text(p).unwrap())
            }
        })
        .collect()
}

/// A service's bind mounts and volumes as (source, target), short or long syntax.
fn mounts(service: &Value) -> Vec<(String, String)> {
    seq(service.get("volumes"))
        .iter()
        .map(|volume| match volume {
            Value::Mapping(_) => (text_at(volume, "source", COMPOSE), text_at(volume, "target", COMPOSE)),
            _ => {
                let spec = text(volume).unwrap();
                let mut parts = spec.split(':');
                (parts.next().unwrap().to_string(), parts.next().unwrap_or_default().to_string())
            }
        })
        .collect()
}

fn mount_target<'a>(mounts: &'a [(String, String)], source: &str, service: &str) -> &'a str {
    let found = mounts.iter().find(|(src, _)| src.trim_end_matches('/') == source);
    &found.unwrap_or_else(|| panic!("{COMPOSE}: {service} does not mount {source}")).1
}

/// A command or healthcheck test as words (a string is split on whitespace, as compose does).
fn words(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => s.split_whitespace().map(String::from).collect(),
        Some(Value::Sequence(items)) => items.iter().filter_map(text).collect(),
        _ => Vec::new(),
    }
}

fn flag<'a>(words: &'a [String], name: &str) -> Option<&'a str> {
    words.iter().position(|w| w == name).and_then(|i| words.get(i + 1)).map(String::as_str)
}

/// `depends_on` as (service, condition); the list form means `service_started`.
fn depends_on(service: &Value) -> BTreeMap<String, String> {
    match service.get("depends_on") {
        Some(Value::Sequence(items)) => {
            items.iter().map(|s| (text(s).unwrap(), "service_started".to_string())).collect()
        }
        Some(Value::Mapping(map)) => map
            .iter()
            .map(|(k, v)| (text(k).unwrap(), v.get("condition").and_then(text).unwrap_or("service_started".into())))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// The default of a `${NAME:-default}` interpolation.
fn interpolation_default(expr: &str) -> Option<&str> {
    expr.strip_prefix("${")?.strip_suffix('}')?.split_once(":-").map(|(_, default)| default)
}

/// The `port` a node config sets (Redis's default 6379 when it sets none).
fn redis_port(config: &str) -> u16 {
    read(config)
        .lines()
        .find_map(|line| line.trim().strip_prefix("port ").map(|p| p.trim().parse().unwrap()))
        .unwrap_or(6379)
}

/// The redis-cluster-net gateway: the default announce address.
fn network_gateway(compose: &Compose) -> Ipv4Addr {
    let net = at(&compose.0, "networks.redis-cluster-net").expect("docker-compose.yml: no network redis-cluster-net");
    assert_eq!(text_at(net, "driver", COMPOSE), "bridge", "redis-cluster-net must be a bridge network");
    let ipam = seq(at(net, "ipam.config")).first().expect("redis-cluster-net needs a fixed subnet (ipam.config)");
    let gateway: Ipv4Addr = text_at(ipam, "gateway", COMPOSE).parse().unwrap();
    let subnet = text_at(ipam, "subnet", COMPOSE);
    let (base, bits) = subnet.split_once('/').unwrap();
    let mask = u32::MAX.checked_shl(32 - bits.parse::<u32>().unwrap()).unwrap_or(0);
    let base: Ipv4Addr = base.parse().unwrap();
    assert_eq!(u32::from(gateway) & mask, u32::from(base) & mask, "gateway {gateway} is outside subnet {subnet}");
    gateway
}

/// `docker-compose -f docker-compose.yml config -q` in `dir` succeeds without a word on stderr.
fn assert_compose_config_clean(dir: &Path) {
    let out = Command::new("docker-compose").args(["-f", COMPOSE, "config", "-q"]).current_dir(dir).output();
    let out = out.unwrap_or_else(|e| {
        panic!("cannot run docker-compose ({e}): run scripts/test.sh, which installs it (or apt-get install docker-compose)")
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "docker-compose config failed in {}:\n{stderr}", dir.display());
    assert!(stderr.trim().is_empty(), "docker-compose config warns in {}:\n{stderr}", dir.display());
}

#[test]
fn compose_config_is_valid_and_quiet() {
    assert_compose_config_clean(&root());
}

/// What a fresh clone has: the files git tracks or would track (none it ignores).
#[test]
fn compose_needs_no_file_a_fresh_clone_lacks() {
    let out = Command::new("git")
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .current_dir(root())
        .output()
        .expect("cannot run git");
    assert!(out.status.success(), "git ls-files failed: {}", String::from_utf8_lossy(&out.stderr));
    let clone = std::env::temp_dir().join(format!("slotgate-deploy-clone-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&clone);
    for path in out.stdout.split(|&b| b == 0).filter(|p| !p.is_empty()) {
        let path = std::str::from_utf8(path).unwrap();
        if root().join(path).is_file() {
            std::fs::create_dir_all(clone.join(path).parent().unwrap()).unwrap();
            std::fs::copy(root().join(path), clone.join(path)).unwrap();
        }
    }
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _remove = Remove(clone.clone());

    assert_compose_config_clean(&clone);
    assert_compose_files_exist(&clone, "a fresh clone");
    for (name, service) in Compose::load().services() {
        for (source, _) in mounts(service).into_iter().filter(|(s, _)| s.starts_with("./data/")) {
            // Docker creates it on first start: it must be ignored, or the tree turns dirty.
            let ignored = Command::new("git").args(["check-ignore", "-q", &source]).current_dir(root()).status();
            assert!(ignored.unwrap().success(), "{name} mounts {source}, which .gitignore does not ignore");
        }
    }
}

/// Every host file compose names exists under `dir`: bind-mount sources (but data/,
/// which Docker creates) and build contexts and Dockerfiles.
fn assert_compose_files_exist(dir: &Path, what: &str) {
    for (name, service) in Compose::load().services() {
        for (source, target) in mounts(service) {
            if source.starts_with("./data/") || !(source.starts_with('.') || source.starts_with('/')) {
                continue; // named volumes live in Docker
            }
            assert!(dir.join(&source).exists(), "{name} mounts {source} (on {target}), which {what} lacks");
        }
        if let Some(build) = service.get("build") {
            let context = at(build, "context").and_then(text).unwrap_or(".".into());
            let dockerfile = at(build, "dockerfile").and_then(text).unwrap_or("Dockerfile".into());
            let path = dir.join(&context).join(&dockerfile);
            assert!(path.is_file(), "{name} builds from {context}/{dockerfile}, which {what} lacks");
        }
    }
}

#[test]
fn every_bind_mount_and_build_file_exists() {
    assert_compose_files_exist(&root(), "the repository");
}

#[test]
fn nodes_publish_and_announce_the_same_addresses() {
    let compose = Compose::load();
    let gateway = network_gateway(&compose);
    for n in NODES {
        let name = format!("redis-node-{n}");
        let node = compose.service(&name);
        assert_eq!(text_at(node, "container_name", COMPOSE), name, "the guide's `docker exec {name}` needs it");
        assert_eq!(text_at(node, "image", COMPOSE), "redis:7-alpine", "{name}: the guide's image");
        let config = format!("config/redis-node-{n}.conf");
        let port = redis_port(&config);
        let published = ports(node);
        assert!(published.contains(&(7000 + n, port)), "{name} must publish {}:{port}: {published:?}", 7000 + n);
        let bus = (17000 + n, port + 10000);
        assert!(published.contains(&bus), "{name} must publish its cluster bus {}:{}: {published:?}", bus.0, bus.1);
        let mounts = mounts(node);
        let conf = mount_target(&mounts, &format!("./{config}"), &name);
        assert_eq!(conf, "/usr/local/etc/redis/redis.conf", "{name}: where its command reads the config");
        let dir = read(&config).lines().find_map(|l| l.strip_prefix("dir ").map(|d| d.trim().to_string()));
        let data = mount_target(&mounts, &format!("./data/node-{n}"), &name);
        assert_eq!(Some(data), dir.as_deref(), "{name}: ./data/node-{n} must be mounted on the `dir` of {config}");

        let command = words(node.get("command"));
        assert_eq!(command[..2], ["redis-server", "/usr/local/etc/redis/redis.conf"], "{name}: command");
        let announce_ip = flag(&command, "--cluster-announce-ip").unwrap_or_else(|| panic!("{name}: no announce ip"));
        assert_eq!(
            interpolation_default(announce_ip),
            Some(gateway.to_string().as_str()),
            "{name} must announce ${{REDIS_ANNOUNCE_IP:-<redis-cluster-net gateway>}}, not {announce_ip}"
        );
        let announced = (flag(&command, "--cluster-announce-port"), flag(&command, "--cluster-announce-bus-port"));
        let (port, bus) = ((7000 + n).to_string(), (17000 + n).to_string());
        assert_eq!(announced, (Some(port.as_str()), Some(bus.as_str())), "{name} must announce its published ports");

        let test = words(at(node, "healthcheck.test"));
        assert!(test.contains(&"redis-cli".into()) && test.contains(&"ping".into()), "{name}: healthcheck {test:?}");
        assert!(words(node.get("networks")).contains(&"redis-cluster-net".into()), "{name} not on redis-cluster-net");
    }
}

#[test]
fn cluster_init_creates_the_cluster_once_on_the_announced_addresses() {
    let compose = Compose::load();
    let init = compose.service("cluster-init");
    assert!(text_at(init, "image", COMPOSE).starts_with("redis:"), "cluster-init needs redis-cli");
    let restart = init.get("restart").and_then(text).unwrap_or("no".into());
    assert_eq!(restart, "no", "cluster-init is one-shot: a restart policy would run it forever");
    let node_ip = words(compose.service("redis-node-1").get("command"));
    let node_ip = flag(&node_ip, "--cluster-announce-ip").unwrap();
    assert_eq!(env_var(init, "ANNOUNCE_IP", "cluster-init"), node_ip, "cluster-init must use the nodes' announce ip");
    let script = words(init.get("command")).join(" ");
    for n in NODES {
        assert!(script.contains(&format!("$$ANNOUNCE_IP:{}", 7000 + n)), "cluster-init does not create node {n}");
    }
    for needed in ["--cluster create", "--cluster-replicas 1", "--cluster-yes", "cluster_state"] {
        assert!(script.contains(needed), "cluster-init's script lacks {needed:?}");
    }
    // A restart with data/ kept must not try to create the cluster again.
    assert!(
        script.contains("cluster_known_nodes") || script.contains("cluster_slots_assigned"),
        "cluster-init must check whether the cluster exists before creating it"
    );
}

#[test]
fn dependencies_name_services_and_wait_for_the_right_state() {
    let compose = Compose::load();
    let names: BTreeSet<String> = compose.services().into_iter().map(|(name, _)| name).collect();
    for (name, service) in compose.services() {
        for (dependency, condition) in depends_on(service) {
            assert!(names.contains(&dependency), "{name} depends on {dependency}, which is no service");
            let target = compose.service(&dependency);
            match condition.as_str() {
                "service_healthy" => {
                    let healthcheck = target.get("healthcheck");
                    assert!(healthcheck.is_some(), "{name} waits for {dependency} to be healthy: no healthcheck");
                }
                "service_completed_successfully" => {
                    let restart = target.get("restart").and_then(text).unwrap_or("no".into());
                    assert_eq!(restart, "no", "{name} waits for {dependency} to complete: it must not restart");
                }
                "service_started" => {}
                other => panic!("{name} depends on {dependency} with unknown condition {other}"),
            }
        }
    }
    let init = depends_on(compose.service("cluster-init"));
    for n in NODES {
        let node = format!("redis-node-{n}");
        assert_eq!(init.get(&node).map(String::as_str), Some("service_healthy"), "cluster-init must wait for {node}");
    }
    let expected = [
        ("slotgate", "cluster-init", "service_completed_successfully"),
        ("prometheus", "slotgate", "service_started"),
        ("grafana", "prometheus", "service_started"),
    ];
    for (service, dependency, condition) in expected {
        let actual = depends_on(compose.service(service)).remove(dependency);
        assert!(actual.is_some(), "{service} must depend on {dependency}");
        if condition != "service_started" {
            assert_eq!(actual.as_deref(), Some(condition), "{service} on {dependency}");
        }
    }
}

#[test]
fn slotgate_service_publishes_what_it_listens_on() {
    let compose = Compose::load();
    let slotgate = compose.service("slotgate");
    let published = ports(slotgate);
    for var in ["SLOTGATE_LISTEN", "SLOTGATE_METRICS"] {
        let addr = env_var(slotgate, var, "slotgate");
        // Docker forwards published ports to the container's address, never to its loopback.
        assert!(!is_loopback(host_of(&addr)), "slotgate's {var}={addr} is unreachable through a published port");
        let port = port_of(&addr);
        assert!(published.iter().any(|&(_, target)| target == port), "slotgate does not publish {var}'s port {port}");
    }
    let binary = cargo_binary();
    assert_eq!(words(at(slotgate, "healthcheck.test")), ["CMD", binary.as_str(), "health"], "slotgate's healthcheck");
    assert_eq!(text_at(slotgate, "build.dockerfile", COMPOSE), DOCKERFILE, "slotgate: the image's Dockerfile");
    assert!(slotgate.get("stop_grace_period").is_some(), "slotgate needs a stop_grace_period to drain");
    for seed in env_var(slotgate, "SLOTGATE_CLUSTER", "slotgate").split(',') {
        let node = host_of(seed);
        let config = format!("config/{node}.conf");
        assert!(node.starts_with("redis-node-") && root().join(&config).exists(), "seed {seed} is not a node service");
        compose.service(node);
        assert_eq!(port_of(seed), redis_port(&config), "seed {seed}: the node listens on {}", redis_port(&config));
    }
}

#[test]
fn prometheus_scrapes_slotgate_on_its_metrics_port() {
    let compose = Compose::load();
    let prometheus = compose.service("prometheus");
    let mounts = mounts(prometheus);
    let config = mount_target(&mounts, "./deploy/prometheus.yml", "prometheus");
    assert_eq!(config, "/etc/prometheus/prometheus.yml", "prometheus: the image's default config file");
    assert!(ports(prometheus).contains(&(9090, 9090)), "prometheus must publish 9090");

    let file = "deploy/prometheus.yml";
    let config = yaml(file);
    let jobs = seq(config.get("scrape_configs"));
    let job = jobs.iter().find(|job| job.get("job_name").and_then(text).as_deref() == Some("slotgate"));
    let job = job.unwrap_or_else(|| panic!("{file}: no job `slotgate`"));
    let interval = job.get("scrape_interval").or(at(&config, "global.scrape_interval")).and_then(text);
    assert!(matches!(interval.as_deref(), Some("5s" | "10s")), "{file}: scrape_interval {interval:?}, want 5s or 10s");
    let targets: Vec<String> = seq(job.get("static_configs")).iter().flat_map(|c| words(c.get("targets"))).collect();
    let metrics = env_var(compose.service("slotgate"), "SLOTGATE_METRICS", "slotgate");
    let expected = format!("slotgate:{}", port_of(&metrics));
    assert_eq!(targets, [expected], "{file} must scrape the slotgate service on its SLOTGATE_METRICS port");
}

#[test]
fn grafana_provisioning_matches_the_compose_services() {
    let compose = Compose::load();
    let grafana = compose.service("grafana");
    assert!(ports(grafana).contains(&(3000, 3000)), "grafana must publish 3000");
    let mounts = mounts(grafana);
    let provisioning = mount_target(&mounts, "./grafana/provisioning", "grafana");
    assert_eq!(provisioning, "/etc/grafana/provisioning", "grafana: where the image reads provisioning");
    let dashboards_dir = mount_target(&mounts, "./grafana/dashboards", "grafana");

    let file = "grafana/provisioning/datasources/prometheus.yml";
    let datasources = yaml(file);
    let sources = seq(datasources.get("datasources"));
    let source = sources.iter().find(|d| d.get("uid").and_then(text).as_deref() == Some("prometheus"));
    let source = source.unwrap_or_else(|| panic!("{file}: no datasource with uid `prometheus` (dashboards use it)"));
    assert_eq!(text_at(source, "type", file), "prometheus", "{file}: type");
    assert_eq!(text_at(source, "isDefault", file), "true", "{file}: the Prometheus datasource is the default");
    let prometheus_port = ports(compose.service("prometheus")).first().expect("prometheus publishes no port").1;
    assert_eq!(text_at(source, "url", file), format!("http://prometheus:{prometheus_port}"), "{file}: url");
    let scrape = at(&yaml("deploy/prometheus.yml"), "global.scrape_interval").and_then(text);
    assert_eq!(at(source, "jsonData.timeInterval").and_then(text), scrape, "{file}: timeInterval = scrape_interval");

    let file = "grafana/provisioning/dashboards/slotgate.yml";
    let providers = yaml(file);
    let provider = seq(providers.get("providers")).first().unwrap_or_else(|| panic!("{file}: no provider"));
    assert_eq!(text_at(provider, "type", file), "file", "{file}: type");
    assert_eq!(text_at(provider, "options.path", file), dashboards_dir, "{file}: not where compose mounts dashboards");

    if let Some(home) = environment(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH") {
        let relative = home.strip_prefix(&format!("{dashboards_dir}/")).expect("home dashboard outside the mount");
        assert!(root().join("grafana/dashboards").join(relative).is_file(), "home dashboard {home} does not exist");
    }
    let uids: BTreeSet<String> = sources.iter().filter_map(|d| d.get("uid").and_then(text)).collect();
    for entry in std::fs::read_dir(root().join("grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let dashboard = serde_json::from_str(&std::fs::read_to_string(&path).unwrap());
            let dashboard = dashboard.unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            for uid in datasource_uids(&dashboard) {
                let known = uids.contains(&uid) || uid.starts_with('$') || uid == "-- Grafana --";
                assert!(known, "{} uses datasource uid {uid:?}, which is not provisioned", path.display());
            }
        }
    }
}

/// Every `"datasource": {"uid": ...}` in a dashboard.
fn datasource_uids(value: &serde_json::Value) -> Vec<String> {
    match value {
        serde_json::Value::Object(map) => {
            let own = map.get("datasource").and_then(|d| d.get("uid")).and_then(|u| u.as_str()).map(String::from);
            own.into_iter().chain(map.values().flat_map(datasource_uids)).collect()
        }
        serde_json::Value::Array(items) => items.iter().flat_map(datasource_uids).collect(),
        _ => Vec::new(),
    }
}
