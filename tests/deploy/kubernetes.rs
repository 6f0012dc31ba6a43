//! deploy/kubernetes/: every manifest parses, and slotgate's probes, ports, Service and
//! security settings agree with what slotgate listens on and with the image.

use std::path::PathBuf;

use serde::Deserialize as _;
use serde_norway::Value;

use super::dockerfile::{dockerfile_stages, find};
use super::{DOCKERFILE, at, host_of, is_loopback, port_of, read, root, seq, text, text_at};

/// Every document of every YAML file in deploy/kubernetes/, with its file name.
fn kubernetes_documents() -> Vec<(String, Value)> {
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML in deploy/kubernetes/");
    let mut documents = Vec::new();
    for path in files {
        let name = format!("deploy/kubernetes/{}", path.file_name().unwrap().to_str().unwrap());
        let content = read(&name);
        for doc in serde_norway::Deserializer::from_str(&content) {
            let doc = Value::deserialize(doc).unwrap_or_else(|e| panic!("{name} is not YAML: {e}"));
            if doc.is_null() {
                continue;
            }
            for field in ["apiVersion", "kind", "metadata.name"] {
                assert!(at(&doc, field).and_then(text).is_some(), "{name}: a document without {field}");
            }
            documents.push((name.clone(), doc));
        }
    }
    documents
}

/// The pod spec of a workload (a Pod, or a controller's pod template) and the pod's labels.
fn pod_spec(doc: &Value) -> Option<(&Value, Option<&Value>)> {
    match text(doc.get("kind")?)?.as_str() {
        "Pod" => Some((doc.get("spec")?, at(doc, "metadata.labels"))),
        _ => Some((at(doc, "spec.template.spec")?, at(doc, "spec.template.metadata.labels"))),
    }
}

fn is_slotgate(container: &Value) -> bool {
    container.get("image").and_then(text).is_some_and(|image| image.contains("slotgate"))
}

fn containers(pod: &Value) -> Vec<&Value> {
    seq(pod.get("containers")).iter().chain(seq(pod.get("initContainers"))).collect()
}

fn container_env(container: &Value, name: &str) -> Option<String> {
    seq(container.get("env"))
        .iter()
        .find(|e| e.get("name").and_then(text).as_deref() == Some(name))?
        .get("value")
        .and_then(text)
}

/// The containerPort a probe or targetPort names, by number or by port name.
fn container_port(container: &Value, port: &Value) -> Option<u16> {
    let port = text(port)?;
    seq(container.get("ports")).iter().find_map(|p| {
        let number: u16 = text_at(p, "containerPort", "kubernetes").parse().ok()?;
        let matches = port == number.to_string() || p.get("name").and_then(text).as_deref() == Some(&port);
        matches.then_some(number)
    })
}

/// A security setting of the container, or of its pod when the container leaves it out.
fn security(container: &Value, pod: &Value, field: &str) -> Option<String> {
    at(container, &format!("securityContext.{field}")).or(at(pod, &format!("securityContext.{field}"))).and_then(text)
}

#[test]
fn kubernetes_probes_hit_the_port_slotgate_serves_health_on() {
    let image_uid =
        find(dockerfile_stages().last().unwrap(), "USER").last().map(|u| u.split(':').next().unwrap().to_string());
    let mut checked = 0;
    for (file, doc) in kubernetes_documents() {
        let Some((pod, _)) = pod_spec(&doc) else { continue };
        let name = format!("{file} {}", text_at(&doc, "metadata.name", &file));
        for container in containers(pod).into_iter().filter(|c| is_slotgate(c)) {
            checked += 1;
            let metrics = container_env(container, "SLOTGATE_METRICS");
            let metrics = metrics.unwrap_or_else(|| panic!("{name}: no SLOTGATE_METRICS"));
            assert!(!is_loopback(host_of(&metrics)), "{name}: the kubelet cannot reach SLOTGATE_METRICS={metrics}");
            let port = port_of(&metrics);
            let declared = seq(container.get("ports")).iter().filter_map(|p| p.get("containerPort").and_then(text));
            let declared: Vec<String> = declared.collect();
            assert!(declared.contains(&port.to_string()), "{name}: its metrics port {port} is no containerPort");
            for (probe, path, required) in [
                ("livenessProbe", "/healthz", true),
                // Not every slot: one shard down must not take every pod out of service.
                ("readinessProbe", "/readyz?partial", true),
                ("startupProbe", "/readyz?partial", false),
            ] {
                let Some(get) = at(container, &format!("{probe}.httpGet")) else {
                    assert!(!required, "{name}: no {probe}.httpGet");
                    continue;
                };
                assert_eq!(text_at(get, "path", &name), path, "{name}: {probe}");
                let target = get.get("port").and_then(|p| container_port(container, p));
                assert_eq!(target, Some(port), "{name}: {probe} does not probe SLOTGATE_METRICS's port {port}");
            }
            assert!(container_env(container, "SLOTGATE_CLUSTER").is_some(), "{name}: no SLOTGATE_CLUSTER");
            for limit in ["resources.requests.cpu", "resources.requests.memory", "resources.limits.memory"] {
                assert!(at(container, limit).is_some(), "{name}: no {limit}");
            }
            for (field, want) in
                [("runAsNonRoot", "true"), ("readOnlyRootFilesystem", "true"), ("allowPrivilegeEscalation", "false")]
            {
                assert_eq!(security(container, pod, field).as_deref(), Some(want), "{name}: securityContext.{field}");
            }
            if let (Some(uid), Some(image_uid)) = (security(container, pod, "runAsUser"), &image_uid) {
                assert_eq!(&uid, image_uid, "{name}: runAsUser differs from {DOCKERFILE}'s USER");
            }
            // Kubernetes adds SLOTGATE_SERVICE_HOST, SLOTGATE_PORT, ... for a Service named
            // slotgate, and slotgate refuses SLOTGATE_* variables that are not settings.
            let links = at(pod, "enableServiceLinks").and_then(text);
            assert_eq!(links.as_deref(), Some("false"), "{name}: enableServiceLinks must be false");
            assert!(pod.get("terminationGracePeriodSeconds").is_some(), "{name}: no terminationGracePeriodSeconds");
        }
    }
    assert!(checked >= 2, "deploy/kubernetes/ needs slotgate as a sidecar and as a Deployment; found {checked}");
}

#[test]
fn kubernetes_services_select_slotgate_pods_and_their_ports() {
    let documents = kubernetes_documents();
    let mut sidecar = false;
    for (file, doc) in &documents {
        let Some((pod, labels)) = pod_spec(doc) else { continue };
        let selector = at(doc, "spec.selector.matchLabels").and_then(Value::as_mapping);
        if let (Some(selector), Some(labels)) = (selector, labels) {
            for (key, value) in selector {
                assert_eq!(labels.get(key), Some(value), "{file}: the pod template lacks selector label {key:?}");
            }
        }
        let all = containers(pod);
        sidecar |= all.len() >= 2 && all.iter().any(|c| is_slotgate(c));
    }
    assert!(sidecar, "deploy/kubernetes/: no pod with slotgate beside an app container");

    let services: Vec<&(String, Value)> =
        documents.iter().filter(|(_, d)| text_at(d, "kind", "kubernetes") == "Service").collect();
    assert!(!services.is_empty(), "deploy/kubernetes/: no Service in front of the slotgate Deployment");
    for (file, service) in services {
        let selector = at(service, "spec.selector")
            .and_then(Value::as_mapping)
            .unwrap_or_else(|| panic!("{file}: Service without selector"));
        let selects = |labels: &Value| selector.iter().all(|(k, v)| labels.get(k) == Some(v));
        let pods: Vec<&Value> = documents
            .iter()
            .filter_map(|(_, d)| pod_spec(d))
            .filter(|(_, labels)| labels.is_some_and(selects))
            .map(|(pod, _)| pod)
            .collect();
        assert!(!pods.is_empty(), "{file}: the Service selects no pod of deploy/kubernetes/");
        let mut ports = Vec::new();
        for port in seq(at(service, "spec.ports")) {
            let target = port.get("targetPort").or(port.get("port")).unwrap();
            let found = pods.iter().flat_map(|pod| containers(pod)).find_map(|c| Some((c, container_port(c, target)?)));
            let (container, number) =
                found.unwrap_or_else(|| panic!("{file}: targetPort {target:?} is no containerPort"));
            if let Some(listen) = container_env(container, "SLOTGATE_LISTEN").filter(|l| port_of(l) == number) {
                assert!(!is_loopback(host_of(&listen)), "{file}: the Service forwards to loopback {listen}");
            }
            ports.push((number, container_env(container, "SLOTGATE_METRICS").map(|m| port_of(&m))));
        }
        let metrics = ports.iter().find_map(|&(number, metrics)| (Some(number) == metrics).then_some(number));
        let metrics = metrics.unwrap_or_else(|| panic!("{file}: the Service does not expose the metrics port"));
        let annotation = at(service, "metadata.annotations").and_then(|a| a.get("prometheus.io/port")).and_then(text);
        assert_eq!(annotation, Some(metrics.to_string()), "{file}: prometheus.io/port annotation");
        let scrape = at(service, "metadata.annotations").and_then(|a| a.get("prometheus.io/scrape")).and_then(text);
        assert_eq!(scrape.as_deref(), Some("true"), "{file}: prometheus.io/scrape annotation");
    }
}
