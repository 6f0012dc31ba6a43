//! The `slotgate` command: run the proxy (default), print a key's hash slot,
//! or check a configuration. The only place that uses `anyhow`.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use slotgate::config::{Config, FlagValue};
use slotgate::live::{Live, LogFilter};
use tokio_util::sync::CancellationToken;

/// slotgate: a Redis Cluster proxy. Clients that speak to a single Redis
/// server (RESP2 or RESP3) connect to slotgate and reach the whole cluster.
///
/// Every option is also a key in the config file and a SLOTGATE_<KEY>
/// environment variable (e.g. SLOTGATE_LISTEN). Flags beat the environment,
/// which beats the file.
#[derive(Debug, Parser)]
#[command(name = "slotgate", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Config file (TOML); proxy.toml documents every key and its default.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Cluster nodes to discover the topology from, comma-separated.
    /// Any one that answers is enough. [key: cluster; default 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003]
    #[arg(long, global = true, value_name = "HOST:PORT[,HOST:PORT...]", value_delimiter = ',')]
    cluster: Option<Vec<String>>,

    /// Address clients connect to; empty = off. [key: listen; default 127.0.0.1:6380]
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<String>,

    /// Address TLS clients connect to, beside --listen; empty = off. [key: tls_listen; default off]
    #[arg(long, global = true, value_name = "ADDR")]
    tls_listen: Option<String>,

    /// slotgate's certificate for TLS clients (PEM). [key: tls_cert_file]
    #[arg(long, global = true, value_name = "FILE")]
    tls_cert_file: Option<String>,

    /// The private key of --tls-cert-file (PEM). [key: tls_key_file]
    #[arg(long, global = true, value_name = "FILE")]
    tls_key_file: Option<String>,

    /// CA (PEM) that TLS clients' certificates must chain to; set, clients are asked for one.
    /// [key: tls_ca_cert_file; default none]
    #[arg(long, global = true, value_name = "FILE")]
    tls_ca_cert_file: Option<String>,

    /// With --tls-ca-cert-file: yes (a certificate is required), optional, or no, as Redis's tls-auth-clients.
    /// [key: tls_auth_clients; default yes]
    #[arg(long, global = true, value_name = "yes|no|optional")]
    tls_auth_clients: Option<String>,

    /// How long a TLS client may take over its handshake. [key: tls_handshake_timeout_ms; default 5000]
    #[arg(long, global = true, value_name = "MS")]
    tls_handshake_timeout_ms: Option<i64>,

    /// Serve /metrics, /healthz and /readyz over HTTP here; empty = off. [key: metrics_listen; env SLOTGATE_METRICS; default off]
    #[arg(long = "metrics", global = true, value_name = "ADDR")]
    metrics: Option<String>,

    /// Worker threads, each with its own event loop and node connections; 0 = one per CPU. [key: threads; default 1]
    #[arg(long, global = true, value_name = "N")]
    threads: Option<i64>,

    /// Pipelined connections per node, per worker and protocol. [key: node_connections; default 1]
    #[arg(long, global = true, value_name = "N")]
    node_connections: Option<i64>,

    /// Limit for opening a node connection and for topology queries. [key: connect_timeout_ms; default 1000]
    #[arg(long, global = true, value_name = "MS")]
    connect_timeout_ms: Option<i64>,

    /// How long a node may leave a request unanswered before its connection is taken as hung.
    /// [key: request_timeout_ms; default 5000]
    #[arg(long, global = true, value_name = "MS")]
    request_timeout_ms: Option<i64>,

    /// Each node connection sends a PING this often; 0 = never. [key: health_check_ms; default 1000]
    #[arg(long, global = true, value_name = "MS")]
    health_check_ms: Option<i64>,

    /// Where read-only commands go: master, replica-preferred, nearest, round-robin. [key: read_from; default master]
    #[arg(long, global = true, value_name = "WHERE")]
    read_from: Option<String>,

    /// Full topology refresh at least this often. [key: topology_refresh_ms; default 5000]
    #[arg(long, global = true, value_name = "MS")]
    topology_refresh_ms: Option<i64>,

    /// MOVED/ASK hops per request before the redirect reaches the client. [key: max_redirects; default 5]
    #[arg(long, global = true, value_name = "N")]
    max_redirects: Option<i64>,

    /// How long a request the cluster cannot take yet (TRYAGAIN, CLUSTERDOWN, node unreachable) is retried.
    /// [key: retry_timeout_ms; default 5000]
    #[arg(long, global = true, value_name = "MS")]
    retry_timeout_ms: Option<i64>,

    /// Client connections open at once; more are refused as Redis refuses them. [key: max_clients; default 10000]
    #[arg(long, global = true, value_name = "N")]
    max_clients: Option<i64>,

    /// Requests that may wait for one node connection before new ones fail at once. [key: node_queue_limit; default 10000]
    #[arg(long, global = true, value_name = "N")]
    node_queue_limit: Option<i64>,

    /// Requests a client may have in flight before slotgate stops reading from it. [key: max_pipeline; default 1000]
    #[arg(long, global = true, value_name = "N")]
    max_pipeline: Option<i64>,

    /// Slots one multi-key command may span (one request each); more are refused. [key: max_fanout; default 8192]
    #[arg(long, global = true, value_name = "N")]
    max_fanout: Option<i64>,

    /// Close a client whose unread replies pass this many bytes; 0 = no limit.
    /// [key: client_output_buffer_limit_normal; default 0]
    #[arg(long, global = true, value_name = "BYTES")]
    client_output_buffer_limit_normal: Option<i64>,

    /// The same for subscribed clients. [key: client_output_buffer_limit_pubsub; default 32 MB]
    #[arg(long, global = true, value_name = "BYTES")]
    client_output_buffer_limit_pubsub: Option<i64>,

    /// Close clients idle this long (not blocked, subscribed or in MULTI), like Redis's timeout; 0 = never.
    /// [key: client_idle_timeout_ms; default 0]
    #[arg(long, global = true, value_name = "MS")]
    client_idle_timeout_ms: Option<i64>,

    /// On SIGTERM/SIGINT, how long to keep answering what clients sent before closing them.
    /// [key: drain_timeout_ms; default 10000]
    #[arg(long, global = true, value_name = "MS")]
    drain_timeout_ms: Option<i64>,

    /// Largest single argument in bytes, like Redis's proto-max-bulk-len. [key: proto_max_bulk_len; default 512 MB]
    #[arg(long, global = true, value_name = "BYTES")]
    proto_max_bulk_len: Option<i64>,

    /// Largest request in bytes, like Redis's client-query-buffer-limit. [key: client_query_buffer_limit; default 1 GB]
    #[arg(long, global = true, value_name = "BYTES")]
    client_query_buffer_limit: Option<i64>,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive. [key: log_level; default info]
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,

    /// Password clients must AUTH with before other commands, as Redis's requirepass; empty = none.
    /// Prefer the file or SLOTGATE_REQUIREPASS: others on the host can read a command line. [key: requirepass]
    #[arg(long, global = true, value_name = "PASSWORD")]
    requirepass: Option<String>,

    /// Wrong passwords one client address may give in 10 s before its AUTHs are refused; 0 = no limit.
    /// [key: max_auth_failures; default 10]
    #[arg(long, global = true, value_name = "N")]
    max_auth_failures: Option<i64>,

    /// The ACL user slotgate logs in to the nodes as; empty = default. [key: node_user]
    #[arg(long, global = true, value_name = "USER")]
    node_user: Option<String>,

    /// The password slotgate logs in to the nodes with (their requirepass); empty = none.
    /// Prefer the file or SLOTGATE_NODE_PASSWORD. [key: node_password]
    #[arg(long, global = true, value_name = "PASSWORD")]
    node_password: Option<String>,

    /// Connect to the nodes with TLS (their tls-port, with tls-cluster yes). [key: node_tls; default false]
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    node_tls: Option<bool>,

    /// CA (PEM) that the nodes' certificates must chain to. [key: node_tls_ca_cert_file]
    #[arg(long, global = true, value_name = "FILE")]
    node_tls_ca_cert_file: Option<String>,

    /// Certificate (PEM) shown to nodes with tls-auth-clients yes. [key: node_tls_cert_file]
    #[arg(long, global = true, value_name = "FILE")]
    node_tls_cert_file: Option<String>,

    /// The private key of --node-tls-cert-file (PEM). [key: node_tls_key_file]
    #[arg(long, global = true, value_name = "FILE")]
    node_tls_key_file: Option<String>,

    /// Name the nodes' certificates must carry (SNI); empty = each node's host. [key: node_tls_server_name]
    #[arg(long, global = true, value_name = "NAME")]
    node_tls_server_name: Option<String>,

    /// Take any node certificate unchecked: for tests only. [key: node_tls_insecure_skip_verify; default false]
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    node_tls_insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the hash slot of each KEY, as CLUSTER KEYSLOT would ({hash tags} included).
    Slot {
        #[arg(required = true)]
        keys: Vec<std::ffi::OsString>,
    },
    /// Load and validate the configuration, print it, and exit.
    CheckConfig,
    /// Probe a running slotgate (for container healthchecks): GET /readyz on
    /// metrics_listen when it is set, else INFO proxy on listen. Exits 0 when
    /// every slot is served.
    Health,
}

impl Cli {
    /// The flags that were given, as config overrides.
    fn flags(&self) -> Vec<(&'static str, FlagValue)> {
        let mut flags = Vec::new();
        if let Some(cluster) = &self.cluster {
            flags.push(("cluster", FlagValue::List(cluster.clone())));
        }
        let texts = [
            ("listen", &self.listen),
            ("metrics_listen", &self.metrics),
            ("log_level", &self.log_level),
            ("read_from", &self.read_from),
            ("requirepass", &self.requirepass),
            ("node_user", &self.node_user),
            ("node_password", &self.node_password),
            ("tls_listen", &self.tls_listen),
            ("tls_cert_file", &self.tls_cert_file),
            ("tls_key_file", &self.tls_key_file),
            ("tls_ca_cert_file", &self.tls_ca_cert_file),
            ("tls_auth_clients", &self.tls_auth_clients),
            ("node_tls_ca_cert_file", &self.node_tls_ca_cert_file),
            ("node_tls_cert_file", &self.node_tls_cert_file),
            ("node_tls_key_file", &self.node_tls_key_file),
            ("node_tls_server_name", &self.node_tls_server_name),
        ];
        flags.extend(texts.into_iter().filter_map(|(k, v)| Some((k, FlagValue::Text(v.clone()?)))));
        let numbers = [
            ("threads", self.threads),
            ("node_connections", self.node_connections),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("health_check_ms", self.health_check_ms),
            ("topology_refresh_ms", self.topology_refresh_ms),
            ("max_redirects", self.max_redirects),
            ("retry_timeout_ms", self.retry_timeout_ms),
            ("max_clients", self.max_clients),
            ("node_queue_limit", self.node_queue_limit),
            ("max_pipeline", self.max_pipeline),
            ("max_fanout", self.max_fanout),
            ("client_output_buffer_limit_normal", self.client_output_buffer_limit_normal),
            ("client_output_buffer_limit_pubsub", self.client_output_buffer_limit_pubsub),
            ("client_idle_timeout_ms", self.client_idle_timeout_ms),
            ("max_auth_failures", self.max_auth_failures),
            ("drain_timeout_ms", self.drain_timeout_ms),
            ("proto_max_bulk_len", self.proto_max_bulk_len),
            ("client_query_buffer_limit", self.client_query_buffer_limit),
            ("tls_handshake_timeout_ms", self.tls_handshake_timeout_ms),
        ];
        flags.extend(numbers.into_iter().filter_map(|(k, v)| Some((k, FlagValue::Number(v?)))));
        let switches =
            [("node_tls", self.node_tls), ("node_tls_insecure_skip_verify", self.node_tls_insecure_skip_verify)];
        flags.extend(switches.into_iter().filter_map(|(k, v)| Some((k, FlagValue::Bool(v?)))));
        flags
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("slotgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout)]
fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Slot { keys }) = &cli.command {
        for key in keys {
            println!("{}", slotgate::cluster::key_slot(key.as_bytes()));
        }
        return Ok(());
    }
    let env: HashMap<String, String> = std::env::vars().collect();
    let flags = cli.flags();
    let config = Config::load(cli.config.as_deref(), env.clone(), &flags).context("invalid configuration")?;
    match cli.command {
        Some(Command::CheckConfig) => {
            // The certificate and key files too: they are read at startup.
            config.client_tls().context("invalid configuration")?;
            config.node_tls().context("invalid configuration")?;
            println!("{config:#?}");
            return Ok(());
        }
        Some(Command::Health) => {
            println!("{}", health(&config)?);
            return Ok(());
        }
        _ => {}
    }
    let log_filter = init_logging(&config.log_level);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client_tls = config.client_tls().context("invalid configuration")?;
        let node_tls = config.node_tls().context("invalid configuration")?;
        let listeners = slotgate::server::Listeners {
            plain: match config.listen_addr() {
                Some(addr) => Some(bind(addr).await?),
                None => None,
            },
            tls: match (config.tls_listen_addr(), client_tls) {
                (Some(addr), Some(tls)) => Some((bind(addr).await?, tls)),
                _ => None,
            },
        };
        let live = Arc::new(Live::new(config, node_tls).with_log_filter(log_filter));
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        tokio::spawn(reload_on_hangup(live.clone(), cli.config.clone(), env, flags));
        slotgate::server::run(listeners, live, shutdown).await?;
        tracing::info!("slotgate stopped");
        Ok(())
    })
}

/// Redis's own `tcp-backlog`: a burst of clients reconnecting at once (a
/// restarted application) waits in the kernel's queue instead of being
/// dropped and retrying a second later, as past the default of 128.
const LISTEN_BACKLOG: u32 = 511;

async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let listen = |at: std::net::SocketAddr| -> std::io::Result<tokio::net::TcpListener> {
        let socket = if at.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(at)?;
        socket.listen(LISTEN_BACKLOG)
    };
    let mut last = None;
    for at in tokio::net::lookup_host(addr).await.with_context(|| format!("cannot listen on {addr}"))? {
        match listen(at) {
            Ok(listener) => return Ok(listener),
            Err(error) => last = Some(error),
        }
    }
    let error = last.unwrap_or_else(|| std::io::Error::other("the name resolves to no address"));
    Err(anyhow::Error::new(error).context(format!("cannot listen on {addr}")))
}

/// Asks the slotgate that `config` describes whether it is ready: its
/// `/readyz` when the metrics endpoint is on, else `INFO proxy` on its
/// client port; either way, ready when every slot is served. The answer, or
/// why it is not ready.
fn health(config: &Config) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    const SERVED: &str = "cluster_slots_served:";
    let (addr, request): (_, &[u8]) = match config.metrics_addr() {
        Some(addr) => (addr, b"GET /readyz HTTP/1.0\r\n\r\n"),
        // QUIT: slotgate closes the connection once INFO is answered.
        None => (
            config.listen_addr().context("health needs listen or metrics_listen (it speaks no TLS)")?,
            b"*2\r\n$4\r\nINFO\r\n$5\r\nproxy\r\n*1\r\n$4\r\nQUIT\r\n",
        ),
    };
    let target = local_address(addr).with_context(|| format!("cannot resolve {addr}"))?;
    let timeout = std::time::Duration::from_secs(3);
    let mut stream = std::net::TcpStream::connect_timeout(&target, timeout)
        .with_context(|| format!("slotgate is not answering on {target}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(request)?;
    let mut answer = Vec::new();
    (&mut stream).take(64 * 1024).read_to_end(&mut answer).with_context(|| format!("no answer from {target}"))?;
    let answer = String::from_utf8_lossy(&answer);
    let (ready, said) = match config.metrics_addr() {
        Some(_) => {
            let ready = answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200");
            (ready, answer.split_once("\r\n\r\n").map_or(answer.trim(), |(_, body)| body.trim()).to_string())
        }
        None => match answer.lines().find(|line| line.starts_with(SERVED) || line.starts_with('-')) {
            Some(line) => (line == format!("{SERVED}{}", slotgate::cluster::SLOT_COUNT), line.to_string()),
            None => (false, format!("unexpected answer to INFO proxy: {:?}", answer.trim())),
        },
    };
    anyhow::ensure!(ready, "not ready ({target}): {said}");
    Ok(format!("ready ({target}): {said}"))
}

/// Where to reach a listen address from this host: a wildcard address
/// (`0.0.0.0`, `[::]`) is reached on loopback.
fn local_address(listen: &str) -> anyhow::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let mut addr = listen.to_socket_addrs()?.next().context("no address")?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    Ok(addr)
}

/// Logs to stderr through `log_level`'s filter; returns how a reload sets
/// another.
fn init_logging(log_level: &str) -> LogFilter {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(tracing_subscriber::EnvFilter::new(log_level));
    let format = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry().with(filter).with(format).init();
    Box::new(move |level| {
        let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

/// On SIGHUP, reads the configuration again as at startup (the same file,
/// environment and flags: a flag still beats the file) and puts it in
/// force; an invalid file changes nothing.
async fn reload_on_hangup(
    live: Arc<Live>,
    file: Option<PathBuf>,
    env: HashMap<String, String>,
    flags: Vec<(&'static str, FlagValue)>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler: no reloads");
        return;
    };
    while hangups.recv().await.is_some() {
        let Some(file) = &file else {
            tracing::warn!("SIGHUP: slotgate was started without --config, there is no file to reload");
            continue;
        };
        let config = match Config::load(Some(file), env.clone(), &flags) {
            Ok(config) => config,
            Err(error) => {
                tracing::error!(file = %file.display(), %error, "reload refused, the settings in force stay");
                continue;
            }
        };
        let reloaded = live.reload(config);
        if !reloaded.need_restart.is_empty() {
            tracing::warn!(keys = ?reloaded.need_restart, "reload: these settings need a restart; until then the old values stay");
        }
        tracing::info!(file = %file.display(), changed = ?reloaded.applied, "configuration reloaded");
    }
}

/// Cancels `shutdown` on SIGINT or SIGTERM (slotgate drains its clients);
/// a second signal exits at once.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    for signals in 1.. {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        if signals > 1 {
            tracing::warn!("second signal: stopping now");
            std::process::exit(1);
        }
        tracing::info!("signal received, stopping");
        shutdown.cancel();
    }
}
