//! What operators watch: the Prometheus registry with slotgate's metrics,
//! and the HTTP endpoints that serve them: `/metrics` (Prometheus text
//! format), `/healthz` (the process answers) and `/readyz` (the topology is
//! known and every slot has a master that is not failing and that slotgate's
//! connections reach; 503 with the reason otherwise; `/readyz?partial` asks
//! only for the topology and one reachable master, for load balancers).
//!
//! Metrics live in one process-wide set, made on first use. Labelled
//! children are resolved once where they are created, never per command.

use std::convert::Infallible;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cluster::{SLOT_COUNT, Topology};
use crate::command::Family;

/// How a command ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// An error reply from a node.
    RedisError,
    /// An error slotgate answered itself (node unreachable, CROSSSLOT, a refusal, ...).
    ProxyError,
}

/// Label values, in the order of [`Outcome`]'s variants (its index).
const OUTCOMES: [(Outcome, &str); 3] =
    [(Outcome::Ok, "ok"), (Outcome::RedisError, "redis_error"), (Outcome::ProxyError, "proxy_error")];

/// slotgate's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Client connections open now.
    pub clients: IntGauge,
    /// Client connections accepted since start.
    pub clients_accepted: IntCounter,
    /// Client connections refused because `max_clients` were open.
    pub clients_rejected: IntCounter,
    /// Topology refreshes that found the cluster.
    pub refreshes_ok: IntCounter,
    /// Topology refreshes where no node answered.
    pub refreshes_failed: IntCounter,
    /// Slots each master serves, by node address (a bounded set: the cluster's masters).
    pub node_slots: IntGaugeVec,
    /// The highest config epoch among the masters.
    pub cluster_epoch: IntGauge,
    /// Commands answered, by family and outcome (indexed `[family][outcome]`).
    commands: Vec<[IntCounter; 3]>,
    /// From reading a command to its reply being ready to write.
    latency: Histogram,
    node_requests: IntCounterVec,
    node_errors: IntCounterVec,
    node_latency: HistogramVec,
    node_connections: IntGaugeVec,
    node_queue: IntGaugeVec,
    node_redirects: IntCounterVec,
    node_saturated: IntCounterVec,
    /// Requests a multi-key or cluster-wide command was split into.
    pub fanout_parts: IntCounter,
    /// Commands refused for spanning more slots than `max_fanout`.
    pub fanout_refused: IntCounter,
    /// Bytes read from and written to clients.
    pub client_bytes_received: IntCounter,
    pub client_bytes_sent: IntCounter,
    /// Clients closed for malformed input.
    pub protocol_errors: IntCounter,
    /// AUTH and HELLO AUTH with a wrong user or password.
    pub auth_failures: IntCounter,
    /// Clients closed for being idle longer than `client_idle_timeout_ms`.
    pub idle_clients_closed: IntCounter,
    /// Clients closed for leaving more unread than their output limit.
    pub output_limit_closed: IntCounter,
    /// TLS clients whose handshake failed or timed out.
    pub tls_handshake_failures: IntCounter,
}

/// One node's metrics (labelled by its address), resolved once per node.
#[derive(Debug, Clone)]
pub struct NodeMetrics {
    /// Requests written to it.
    pub requests: IntCounter,
    /// Requests that got no reply (connection lost, timed out, unreachable).
    pub errors: IntCounter,
    /// From queueing a request to its reply.
    pub latency: Histogram,
    /// Shared connections open to it.
    pub connections: IntGauge,
    /// Requests sent and not yet answered.
    pub queue: IntGauge,
    /// Requests refused because `node_queue_limit` wait for it already.
    pub saturated: IntCounter,
}

/// Seconds from 50 µs to 10 s, for latencies.
fn latency_buckets() -> Vec<f64> {
    vec![0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| register(&registry, made(IntCounter::new(name, help)));
        let gauge = |name: &str, help: &str| register(&registry, made(IntGauge::new(name, help)));
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, made(IntCounterVec::new(Opts::new(name, help), labels)))
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, made(IntGaugeVec::new(Opts::new(name, help), labels)))
        };
        let latency = |name: &str, help: &str| HistogramOpts::new(name, help).buckets(latency_buckets());

        let build = gauge_vec("slotgate_build_info", "slotgate's version; always 1.", &["version"]);
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let refreshes =
            counter_vec("slotgate_topology_refreshes_total", "Topology refreshes, by outcome.", &["outcome"]);
        let commands = counter_vec(
            "slotgate_commands_total",
            "Commands answered, by command family and outcome.",
            &["family", "outcome"],
        );
        let command_latency = latency(
            "slotgate_command_duration_seconds",
            "From reading a command to its reply being ready to write, end to end.",
        );
        let node_latency =
            latency("slotgate_node_request_duration_seconds", "From sending a request to a node to its reply.");
        Metrics {
            clients: gauge("slotgate_client_connections", "Client connections open now."),
            clients_accepted: counter("slotgate_client_connections_accepted_total", "Client connections accepted."),
            clients_rejected: counter(
                "slotgate_client_connections_rejected_total",
                "Client connections refused because max_clients were open.",
            ),
            refreshes_ok: refreshes.with_label_values(&["ok"]),
            refreshes_failed: refreshes.with_label_values(&["error"]),
            node_slots: gauge_vec("slotgate_node_slots", "Hash slots each master serves.", &["node"]),
            cluster_epoch: gauge("slotgate_cluster_epoch", "The highest config epoch among the cluster's masters."),
            commands: Family::ALL
                .iter()
                .map(|family| OUTCOMES.map(|(_, outcome)| commands.with_label_values(&[family.name(), outcome])))
                .collect(),
            latency: register(&registry, made(Histogram::with_opts(command_latency))),
            node_requests: counter_vec("slotgate_node_requests_total", "Requests sent to each node.", &["node"]),
            node_errors: counter_vec(
                "slotgate_node_errors_total",
                "Requests to each node that got no reply (lost, timed out, unreachable).",
                &["node"],
            ),
            node_latency: register(&registry, made(HistogramVec::new(node_latency, &["node"]))),
            node_connections: gauge_vec(
                "slotgate_node_connections",
                "Shared connections open to each node.",
                &["node"],
            ),
            node_queue: gauge_vec(
                "slotgate_node_queue_depth",
                "Requests sent to each node and not yet answered.",
                &["node"],
            ),
            node_redirects: counter_vec(
                "slotgate_node_redirects_total",
                "MOVED and ASK answers received from each node.",
                &["node", "kind"],
            ),
            node_saturated: counter_vec(
                "slotgate_node_saturated_total",
                "Requests refused at once because node_queue_limit requests already wait for the node.",
                &["node"],
            ),
            fanout_parts: counter(
                "slotgate_fanout_subrequests_total",
                "Requests that multi-key and cluster-wide commands were split into.",
            ),
            fanout_refused: counter(
                "slotgate_fanout_refused_total",
                "Multi-key commands refused for spanning more slots than max_fanout.",
            ),
            client_bytes_received: counter("slotgate_client_bytes_received_total", "Bytes read from clients."),
            client_bytes_sent: counter("slotgate_client_bytes_sent_total", "Bytes written to clients."),
            protocol_errors: counter("slotgate_protocol_errors_total", "Clients closed for malformed input."),
            auth_failures: counter(
                "slotgate_auth_failures_total",
                "AUTH and HELLO AUTH with a wrong user or password.",
            ),
            idle_clients_closed: counter(
                "slotgate_client_idle_closed_total",
                "Clients closed for being idle longer than client_idle_timeout_ms.",
            ),
            output_limit_closed: counter(
                "slotgate_client_output_limit_closed_total",
                "Clients closed for leaving more replies or messages unread than their output limit.",
            ),
            tls_handshake_failures: counter(
                "slotgate_tls_handshake_failures_total",
                "TLS clients whose handshake failed (no or a bad certificate, not TLS) or timed out.",
            ),
            registry,
        }
    }

    /// The metrics of the node at `addr`.
    pub fn node(&self, addr: &str) -> NodeMetrics {
        // Its redirect series exist from the start, at 0, so that a rate of
        // them is 0 rather than no data until the first MOVED.
        for kind in ["moved", "ask"] {
            self.node_redirects.with_label_values(&[addr, kind]);
        }
        NodeMetrics {
            requests: self.node_requests.with_label_values(&[addr]),
            errors: self.node_errors.with_label_values(&[addr]),
            latency: self.node_latency.with_label_values(&[addr]),
            connections: self.node_connections.with_label_values(&[addr]),
            queue: self.node_queue.with_label_values(&[addr]),
            saturated: self.node_saturated.with_label_values(&[addr]),
        }
    }

    /// The node at `addr` left the cluster: its series go, so the label set
    /// stays the cluster's nodes.
    pub fn forget_node(&self, addr: &str) {
        let _ = self.node_requests.remove_label_values(&[addr]);
        let _ = self.node_errors.remove_label_values(&[addr]);
        let _ = self.node_latency.remove_label_values(&[addr]);
        let _ = self.node_connections.remove_label_values(&[addr]);
        let _ = self.node_queue.remove_label_values(&[addr]);
        let _ = self.node_saturated.remove_label_values(&[addr]);
        for kind in ["moved", "ask"] {
            let _ = self.node_redirects.remove_label_values(&[addr, kind]);
        }
    }

    /// A node answered MOVED (`kind` "moved") or ASK ("ask").
    pub fn redirect(&self, addr: &str, kind: &str) {
        self.node_redirects.with_label_values(&[addr, kind]).inc();
    }

    /// One command answered: its family, how it ended, how long it took.
    pub fn command(&self, family: Family, outcome: Outcome, seconds: f64) {
        if let Some(counters) = self.commands.get(family as usize) {
            counters[outcome as usize].inc();
        }
        self.latency.observe(seconds);
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// A metric made from fixed, distinct names and labels: that cannot fail.
fn made<T>(metric: prometheus::Result<T>) -> T {
    metric.unwrap_or_else(|e| unreachable!("metric: {e}"))
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    // Names are fixed and distinct: registering cannot fail.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

/// What `/readyz` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Every slot has a master that the cluster does not flag failing and
    /// that slotgate reaches: the whole keyspace is served.
    AllSlots,
    /// `/readyz?partial`: the topology is known and some master is reached,
    /// so this slotgate serves what the cluster serves. For load balancers:
    /// while part of the cluster is down every slotgate is equally affected,
    /// and taking them all out of service would fail the healthy slots too.
    SomeSlots,
}

/// Why slotgate is not ready in the sense of `readiness`, if it is not.
pub fn not_ready(topology: &Topology, readiness: Readiness) -> Option<String> {
    let map = topology.snapshot();
    if map.version() == 0 {
        let why = topology.last_error().unwrap_or_else(|| "no node has answered yet".into());
        return Some(format!("cluster topology not discovered yet: {why}"));
    }
    if readiness == Readiness::SomeSlots {
        let reached = map.shards().iter().any(|s| topology.unreachable(&s.master).is_none());
        return (!reached).then(|| "slotgate reaches no master".into());
    }
    let unserved = SLOT_COUNT - map.served_slots();
    if unserved > 0 {
        return Some(format!("{unserved} hash slots have no master"));
    }
    let failing: Vec<&str> = map.shards().iter().filter(|s| s.failing).map(|s| s.master.as_str()).collect();
    if !failing.is_empty() {
        return Some(format!("masters marked failing by the cluster: {}", failing.join(", ")));
    }
    let unreachable: Vec<String> = map
        .shards()
        .iter()
        .filter_map(|s| Some(format!("{} ({})", s.master, topology.unreachable(&s.master)?)))
        .collect();
    if !unreachable.is_empty() {
        return Some(format!("masters slotgate cannot reach: {}", unreachable.join(", ")));
    }
    None
}

/// `/readyz` asks for every slot; `/readyz?partial` for some.
fn readiness(query: Option<&str>) -> Readiness {
    match query {
        Some("partial") => Readiness::SomeSlots,
        _ => Readiness::AllSlots,
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, topology: Arc<Topology>, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "metrics endpoint: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let topology = topology.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| answer(request, topology.clone()));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn answer(request: Request<Incoming>, topology: Arc<Topology>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &str, body: Vec<u8>| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
        }
        Ok(response)
    };
    const TEXT: &str = "text/plain; charset=utf-8";
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, b"GET only\n".to_vec());
    }
    match request.uri().path() {
        "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", get().render()),
        "/healthz" => reply(StatusCode::OK, TEXT, b"ok\n".to_vec()),
        "/readyz" => match not_ready(&topology, readiness(request.uri().query())) {
            None => reply(StatusCode::OK, TEXT, b"ready\n".to_vec()),
            Some(why) => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("not ready: {why}\n").into_bytes()),
        },
        _ => reply(StatusCode::NOT_FOUND, TEXT, b"not found: try /metrics, /healthz or /readyz\n".to_vec()),
    }
}
