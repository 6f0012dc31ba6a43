//! slotgate's settings: typed, documented, validated. Layers, weakest first:
//! built-in defaults, the TOML file (`--config`), `SLOTGATE_*` environment
//! variables, command-line flags. Unknown keys are errors, never ignored.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::{BackendSettings, ReadFrom};
use crate::cluster::{NodeAddr, NodeLogin, TopologySettings};
use crate::resp::Limits;
use crate::session::{AclError, Password, SessionSettings, User, Users};
use crate::tls::{AuthClients, ClientTls, ClientTlsFiles, NodeTls, NodeTlsFiles, TlsError};

/// Every setting, with its default. `proxy.toml` documents the same keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Cluster nodes to discover the topology from, as `host:port`. Any one
    /// that answers is enough; list several. Default: the local cluster,
    /// 127.0.0.1:7001-7003.
    pub cluster: Vec<String>,
    /// Address clients connect to; empty turns it off (then `tls_listen`
    /// must be set). Default `127.0.0.1:6380`.
    pub listen: String,
    /// Address TLS clients connect to, beside `listen`, like Redis's
    /// `tls-port`; empty turns it off. Needs `tls_cert_file` and
    /// `tls_key_file`. Default empty (off).
    pub tls_listen: String,
    /// slotgate's certificate for TLS clients (PEM, the leaf first, then any
    /// intermediates). Default empty.
    pub tls_cert_file: String,
    /// The private key of `tls_cert_file` (PEM). Default empty.
    pub tls_key_file: String,
    /// CA certificates (PEM) that client certificates must chain to; set,
    /// TLS clients are asked for one as `tls_auth_clients` says. Empty: no
    /// client certificates. Default empty.
    pub tls_ca_cert_file: String,
    /// With `tls_ca_cert_file`: `yes` (a client without a valid certificate
    /// is refused), `optional` (one that is shown must be valid) or `no`,
    /// like Redis's `tls-auth-clients`. Default `yes`.
    pub tls_auth_clients: AuthClients,
    /// How long a TLS client may take over its handshake, in milliseconds,
    /// before it is closed. Default 5000.
    pub tls_handshake_timeout_ms: u64,
    /// Address of the HTTP endpoint for `/metrics` (Prometheus), `/healthz`
    /// and `/readyz`, such as `0.0.0.0:9187`; empty turns it off. Also
    /// `SLOTGATE_METRICS` and `--metrics`. Default empty (off).
    pub metrics_listen: String,
    /// Worker threads, each with its own event loop and node connections;
    /// 0 means one per CPU. Default 1.
    pub threads: usize,
    /// Pipelined connections per node, per worker and protocol. Default 1.
    pub node_connections: usize,
    /// Limit for opening a node connection and for topology queries, in
    /// milliseconds. Default 1000.
    pub connect_timeout_ms: u64,
    /// How long a node may leave a request unanswered, in milliseconds,
    /// before its connection is taken as hung: the requests on it fail
    /// (written ones with "the command may have run") and it is reopened.
    /// Longer than your slowest command or script. Default 5000.
    pub request_timeout_ms: u64,
    /// Each shared node connection sends a PING this often, in milliseconds,
    /// so that a hung node is found even while no client uses it, and the
    /// nodes' latencies are known (`read_from = "nearest"`, which without
    /// them reads from the master); 0 turns it off.
    /// Default 1000.
    pub health_check_ms: u64,
    /// Full topology refresh at least this often, in milliseconds (MOVED and
    /// node errors refresh sooner). Default 5000.
    pub topology_refresh_ms: u64,
    /// Where read-only commands go: `master` (every read sees every write),
    /// `replica-preferred` (a replica of the slot, the same one for a client,
    /// or the master while none is up), `nearest` (the slot's node with the
    /// lowest latency), `round-robin` (the slot's nodes in turn). Replicas
    /// copy asynchronously: reads from them may miss recent writes, even the
    /// client's own. Default `master`.
    pub read_from: ReadFrom,
    /// MOVED/ASK hops one request may take before the redirect reaches the
    /// client (protects against redirect loops). Default 5.
    pub max_redirects: u8,
    /// How long a request is retried, in milliseconds, when the cluster
    /// cannot take it yet (TRYAGAIN during a slot migration, CLUSTERDOWN
    /// during a failover, a node that cannot be reached) before the error
    /// reaches the client. Only requests the node provably did not run are
    /// retried. Default 5000.
    pub retry_timeout_ms: u64,
    /// Client connections open at once; one more is answered
    /// `-ERR max number of clients reached` and closed, as Redis does past
    /// its `maxclients`. Default 10000.
    pub max_clients: usize,
    /// Requests that may wait for one node connection, queued and sent but
    /// unanswered (each of the two up to this many): past it, new requests
    /// for that node fail at once (`-ERR node ... is overloaded`) instead of
    /// waiting behind a node that has fallen behind or hangs. Default 10000.
    pub node_queue_limit: usize,
    /// Requests one client may have in flight before slotgate stops reading
    /// from it until replies drain. Each costs slotgate about 0.6 KB while
    /// in flight, so this bounds what a client that pipelines without
    /// reading can hold. Default 1000.
    pub max_pipeline: usize,
    /// Requests one command may be split into: a multi-key command (MGET,
    /// MSET, DEL, ...) whose keys hash to more slots than this is refused
    /// (`-ERR ... max_fanout ...`) and nothing of it runs. Each part costs
    /// slotgate about 0.3 KB while in flight. 1 to 16384; default 8192.
    pub max_fanout: usize,
    /// Replies and messages waiting to be written to a client, in bytes,
    /// beyond which it is closed (it does not read what it asked for), like
    /// Redis's `client-output-buffer-limit normal`; 0: none, Redis's default.
    pub client_output_buffer_limit_normal: usize,
    /// The same for subscribed clients, whose messages arrive unasked: like
    /// Redis's `client-output-buffer-limit pubsub` hard limit. Default
    /// 33554432 (32 MB), Redis's; 0: none.
    pub client_output_buffer_limit_pubsub: usize,
    /// A client that has sent nothing for this long, in milliseconds, and
    /// waits for nothing (not blocked, not subscribed, not in MULTI), is
    /// closed, like Redis's `timeout`; 0: never. Default 0.
    pub client_idle_timeout_ms: u64,
    /// On SIGTERM or SIGINT, how long slotgate keeps answering the requests
    /// clients have already sent before it closes them (new clients are
    /// refused at once), in milliseconds; 0 closes them at once. A second
    /// signal stops it at once too. Default 10000.
    pub drain_timeout_ms: u64,
    /// Largest single argument in bytes, like Redis's `proto-max-bulk-len`.
    /// Default 536870912 (512 MB).
    pub proto_max_bulk_len: usize,
    /// Largest request in bytes, all arguments together, like Redis's
    /// `client-query-buffer-limit`. Default 1073741824 (1 GB).
    pub client_query_buffer_limit: usize,
    /// Log filter: `error`, `warn`, `info`, `debug`, `trace`, or a
    /// tracing directive such as `slotgate=debug`. Default `info`.
    pub log_level: String,
    /// The password clients give with `AUTH <password>` (or `AUTH default
    /// <password>`, `HELLO 3 AUTH default <password>`) before any other
    /// command, like Redis's `requirepass`; empty: none. Not the nodes'
    /// password. Default empty.
    pub requirepass: Secret,
    /// Client users, like Redis ACL users (`[[users]]` tables): each with
    /// its passwords and the commands and keys it may use. One named
    /// `default` replaces the default user (then `requirepass` must be
    /// empty). Default none: the default user alone, as described at
    /// `requirepass`.
    pub users: Vec<UserConfig>,
    /// Wrong passwords a client address may give in 10 seconds; past it,
    /// every AUTH from that address is refused until the 10 seconds are
    /// over, even a right one. Clients behind one address (NAT, a sidecar's
    /// localhost) share the count; 0: no limit. Default 10.
    pub max_auth_failures: u32,
    /// The ACL user slotgate logs in to the nodes as; empty: `default`.
    /// Default empty.
    pub node_user: String,
    /// The password slotgate logs in to the nodes with (their
    /// `requirepass`, or `node_user`'s); empty: the nodes want none. Not a
    /// client password. Default empty.
    pub node_password: Secret,
    /// Connect to the nodes with TLS (nodes with `tls-port` and
    /// `tls-cluster yes`, which announce their TLS ports), topology queries
    /// included. Needs `node_tls_ca_cert_file`. Default false.
    pub node_tls: bool,
    /// CA certificates (PEM) the nodes' certificates must chain to, like
    /// redis-cli's `--cacert`. Default empty.
    pub node_tls_ca_cert_file: String,
    /// The certificate (PEM) slotgate shows nodes that ask for one (their
    /// `tls-auth-clients yes`), with `node_tls_key_file`. Default empty.
    pub node_tls_cert_file: String,
    /// The private key of `node_tls_cert_file` (PEM). Default empty.
    pub node_tls_key_file: String,
    /// The name every node's certificate must carry, like redis-cli's
    /// `--sni`; empty: each node's own host as the cluster announces it
    /// (an IP address then needs an IP entry in the certificate). Default
    /// empty.
    pub node_tls_server_name: String,
    /// Take any node certificate, unchecked: the traffic is encrypted but a
    /// machine in the middle would go unnoticed. For tests only; logged as a
    /// warning. Default false.
    pub node_tls_insecure_skip_verify: bool,
}

/// One `[[users]]` entry: a client user, like an ACL user of Redis.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The name clients give with `AUTH <name> <password>`; `default` is
    /// the user of `AUTH <password>` and of clients that never AUTH.
    pub name: String,
    /// Its password; slotgate keeps only its SHA-256. Default empty.
    #[serde(default)]
    pub password: Secret,
    /// Its password's SHA-256 in hex (64 digits), like ACL's `#<hash>`,
    /// so the file need not hold the password. Default empty. An enabled
    /// user needs this or `password` (or both: either is taken).
    #[serde(default)]
    pub password_sha256: Secret,
    /// May log in, like ACL's `on`; false is `off`. Default true.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// ACL rules, space-separated, applied in order as by `ACL SETUSER` to
    /// a user that starts with no commands and no keys: `+@category`,
    /// `-@category`, `+command`, `-command`, `+container|sub`,
    /// `-container|sub`, `allcommands`, `nocommands`, `~pattern`,
    /// `allkeys`, `resetkeys`. Channels are not restricted. Default empty.
    #[serde(default)]
    pub rules: String,
}

fn enabled() -> bool {
    true
}

/// A password: read like a string, never printed.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The password, unless none is set.
    pub fn get(&self) -> Option<&str> {
        Some(self.0.as_str()).filter(|p| !p.is_empty())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "(none)" } else { "(set)" })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster: vec!["127.0.0.1:7001".into(), "127.0.0.1:7002".into(), "127.0.0.1:7003".into()],
            listen: "127.0.0.1:6380".into(),
            tls_listen: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_ca_cert_file: String::new(),
            tls_auth_clients: AuthClients::Yes,
            tls_handshake_timeout_ms: 5000,
            metrics_listen: String::new(),
            threads: 1,
            node_connections: 1,
            connect_timeout_ms: 1000,
            request_timeout_ms: 5000,
            health_check_ms: 1000,
            topology_refresh_ms: 5000,
            read_from: ReadFrom::Master,
            max_redirects: 5,
            retry_timeout_ms: 5000,
            max_clients: 10_000,
            node_queue_limit: 10_000,
            max_pipeline: 1000,
            max_fanout: 8192,
            client_output_buffer_limit_normal: 0,
            client_output_buffer_limit_pubsub: 32 * 1024 * 1024,
            client_idle_timeout_ms: 0,
            drain_timeout_ms: 10_000,
            proto_max_bulk_len: 512 * 1024 * 1024,
            client_query_buffer_limit: 1024 * 1024 * 1024,
            log_level: "info".into(),
            requirepass: Secret::default(),
            users: Vec::new(),
            max_auth_failures: 10,
            node_user: String::new(),
            node_password: Secret::default(),
            node_tls: false,
            node_tls_ca_cert_file: String::new(),
            node_tls_cert_file: String::new(),
            node_tls_key_file: String::new(),
            node_tls_server_name: String::new(),
            node_tls_insecure_skip_verify: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Load(#[from] config::ConfigError),
    #[error("invalid setting `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
    /// A certificate, key or CA file that cannot be used (named in `cause`).
    #[error("TLS toward {side}: {cause}")]
    Tls { side: &'static str, cause: TlsError },
}

impl Config {
    /// Loads the layers: defaults, then `file`, then the `SLOTGATE_*` entries
    /// of `env`, then `flags` (key, value) pairs; then validates.
    pub fn load(
        file: Option<&Path>,
        env: HashMap<String, String>,
        flags: &[(&str, FlagValue)],
    ) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml).required(true));
        }
        let mut env: HashMap<String, String> = env.into_iter().filter(|(k, _)| k.starts_with("SLOTGATE_")).collect();
        // The short name operators expect, for metrics_listen.
        if let Some(addr) = env.remove("SLOTGATE_METRICS") {
            env.entry("SLOTGATE_METRICS_LISTEN".into()).or_insert(addr);
        }
        builder = builder.add_source(
            config::Environment::with_prefix("SLOTGATE")
                .prefix_separator("_")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("cluster")
                .source(Some(env)),
        );
        for (key, value) in flags {
            builder = match value {
                FlagValue::Text(text) => builder.set_override(*key, text.as_str())?,
                FlagValue::Number(n) => builder.set_override(*key, *n)?,
                FlagValue::Bool(b) => builder.set_override(*key, *b)?,
                FlagValue::List(items) => builder.set_override(*key, items.clone())?,
            };
        }
        let config: Config = builder.build()?.try_deserialize()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: addresses, ranges, the log filter.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if self.cluster.is_empty() {
            return invalid("cluster", "at least one seed node is needed".into());
        }
        for seed in &self.cluster {
            if let Err(reason) = check_host_port(seed) {
                return invalid("cluster", format!("{seed:?}: {reason}"));
            }
        }
        if let Some(reason) = self.listen_addr().and_then(|addr| check_host_port(addr).err()) {
            return invalid("listen", format!("{:?}: {reason}", self.listen));
        }
        if self.listen_addr().is_none() && self.tls_listen_addr().is_none() {
            return invalid("listen", "clients need somewhere to connect: set listen or tls_listen".into());
        }
        self.validate_tls()?;
        if let Some(reason) = self.metrics_addr().and_then(|addr| check_host_port(addr).err()) {
            return invalid("metrics_listen", format!("{:?}: {reason}", self.metrics_listen));
        }
        if !(1..=64).contains(&self.node_connections) {
            return invalid("node_connections", "must be 1 to 64".into());
        }
        if self.threads > 1024 {
            return invalid("threads", "must be 0 (one per CPU) to 1024".into());
        }
        if self.connect_timeout_ms == 0 || self.topology_refresh_ms == 0 || self.retry_timeout_ms == 0 {
            return invalid("connect_timeout_ms", "timeouts and intervals must be above 0".into());
        }
        if self.request_timeout_ms < 10 {
            return invalid("request_timeout_ms", "must be at least 10".into());
        }
        if self.max_redirects == 0 {
            return invalid("max_redirects", "must be at least 1".into());
        }
        if !self.node_user.is_empty() && self.node_password.get().is_none() {
            return invalid("node_user", "needs node_password".into());
        }
        if self.max_clients == 0 || self.max_clients > 1 << 30 {
            return invalid("max_clients", "must be 1 to 1073741824".into());
        }
        if self.drain_timeout_ms > 3_600_000 {
            return invalid("drain_timeout_ms", "must be at most 3600000 (an hour)".into());
        }
        if self.node_queue_limit == 0 {
            return invalid("node_queue_limit", "must be at least 1".into());
        }
        if self.max_pipeline == 0 {
            return invalid("max_pipeline", "must be at least 1".into());
        }
        if !(1..=crate::cluster::SLOT_COUNT).contains(&self.max_fanout) {
            return invalid("max_fanout", "must be 1 to 16384 (the slots)".into());
        }
        // Argument offsets inside a request are 32-bit.
        if self.client_query_buffer_limit < 1024 * 1024 || self.client_query_buffer_limit > u32::MAX as usize {
            return invalid("client_query_buffer_limit", "must be 1 MB to 4 GB".into());
        }
        if self.proto_max_bulk_len < 1024 || self.proto_max_bulk_len > self.client_query_buffer_limit {
            return invalid("proto_max_bulk_len", "must be 1 KB up to client_query_buffer_limit".into());
        }
        self.users()?;
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return invalid("log_level", format!("{:?} is not a log filter", self.log_level));
        }
        Ok(())
    }

    /// The TLS settings that only make sense together.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| Err(ConfigError::Invalid { key, reason: reason.into() });
        if let Some(reason) = self.tls_listen_addr().and_then(|addr| check_host_port(addr).err()) {
            return Err(ConfigError::Invalid { key: "tls_listen", reason: format!("{:?}: {reason}", self.tls_listen) });
        }
        if self.tls_cert_file.is_empty() != self.tls_key_file.is_empty() {
            return invalid("tls_cert_file", "tls_cert_file and tls_key_file go together: set both or neither");
        }
        if self.tls_listen_addr().is_some() && self.tls_cert_file.is_empty() {
            return invalid("tls_listen", "needs tls_cert_file and tls_key_file");
        }
        if self.tls_handshake_timeout_ms == 0 {
            return invalid("tls_handshake_timeout_ms", "must be above 0");
        }
        if self.node_tls_cert_file.is_empty() != self.node_tls_key_file.is_empty() {
            return invalid(
                "node_tls_cert_file",
                "node_tls_cert_file and node_tls_key_file go together: set both or neither",
            );
        }
        let node_tls_set = !(self.node_tls_ca_cert_file.is_empty()
            && self.node_tls_cert_file.is_empty()
            && self.node_tls_server_name.is_empty())
            || self.node_tls_insecure_skip_verify;
        if !self.node_tls && node_tls_set {
            // Otherwise the nodes would be spoken to in clear, unnoticed.
            return invalid("node_tls", "node_tls_* settings are given, but node_tls is false");
        }
        if self.node_tls && self.node_tls_ca_cert_file.is_empty() && !self.node_tls_insecure_skip_verify {
            return invalid("node_tls", "needs node_tls_ca_cert_file, to check the nodes' certificates");
        }
        Ok(())
    }

    /// Where plain clients connect, if anywhere.
    pub fn listen_addr(&self) -> Option<&str> {
        Some(self.listen.as_str()).filter(|addr| !addr.is_empty())
    }

    /// Where TLS clients connect, if anywhere.
    pub fn tls_listen_addr(&self) -> Option<&str> {
        Some(self.tls_listen.as_str()).filter(|addr| !addr.is_empty())
    }

    /// TLS toward clients, its files read, when `tls_listen` is set.
    pub fn client_tls(&self) -> Result<Option<ClientTls>, ConfigError> {
        if self.tls_listen_addr().is_none() {
            return Ok(None);
        }
        let files = ClientTlsFiles {
            cert: self.tls_cert_file.clone().into(),
            key: self.tls_key_file.clone().into(),
            ca: Some(&self.tls_ca_cert_file).filter(|f| !f.is_empty()).map(Into::into),
            auth_clients: self.tls_auth_clients,
            handshake_timeout: Duration::from_millis(self.tls_handshake_timeout_ms),
        };
        ClientTls::load(&files).map(Some).map_err(|cause| ConfigError::Tls { side: "clients", cause })
    }

    /// TLS toward nodes, its files read, when `node_tls` is on.
    pub fn node_tls(&self) -> Result<Option<Arc<NodeTls>>, ConfigError> {
        if !self.node_tls {
            return Ok(None);
        }
        let path = |file: &String| Some(file).filter(|f| !f.is_empty()).map(std::path::PathBuf::from);
        let files = NodeTlsFiles {
            ca: path(&self.node_tls_ca_cert_file),
            client_cert: path(&self.node_tls_cert_file).zip(path(&self.node_tls_key_file)),
            server_name: Some(&self.node_tls_server_name).filter(|n| !n.is_empty()).cloned(),
            insecure_skip_verify: self.node_tls_insecure_skip_verify,
        };
        NodeTls::load(&files).map(|tls| Some(Arc::new(tls))).map_err(|cause| ConfigError::Tls { side: "nodes", cause })
    }

    /// Where to serve metrics and health, if anywhere.
    pub fn metrics_addr(&self) -> Option<&str> {
        Some(self.metrics_listen.as_str()).filter(|addr| !addr.is_empty())
    }

    /// How long a stop waits for clients to get their answers.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    /// Worker threads to start: `threads`, or one per CPU when 0.
    pub fn worker_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The topology task's settings; `tls` from [`Config::node_tls`].
    pub fn topology(&self, tls: Option<Arc<NodeTls>>) -> TopologySettings {
        TopologySettings {
            tls,
            seeds: self.cluster.iter().map(|s| NodeAddr::new(s.as_str())).collect(),
            refresh_interval: Duration::from_millis(self.topology_refresh_ms),
            timeout: Duration::from_millis(self.connect_timeout_ms),
            login: self.node_login(),
        }
    }

    /// How slotgate logs in to the nodes, if they want a password.
    fn node_login(&self) -> Option<NodeLogin> {
        self.node_password.get().map(|password| NodeLogin::new(&self.node_user, password))
    }

    /// The node connections' settings; `tls` from [`Config::node_tls`].
    pub fn backend(&self, tls: Option<Arc<NodeTls>>) -> BackendSettings {
        BackendSettings {
            tls,
            connections_per_node: self.node_connections,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            health_check: Some(Duration::from_millis(self.health_check_ms)).filter(|d| !d.is_zero()),
            read_from: self.read_from,
            metrics: self.metrics_addr().is_some(),
            login: self.node_login(),
            queue_limit: self.node_queue_limit,
        }
    }

    /// The client users, their rules compiled.
    pub fn users(&self) -> Result<Users, ConfigError> {
        let invalid = |error: AclError| ConfigError::Invalid { key: "users", reason: error.to_string() };
        let mut users = Vec::with_capacity(self.users.len());
        for user in &self.users {
            let plain = user.password.get().map(Password::Plain);
            let hashed = user.password_sha256.get().map(Password::Sha256);
            let passwords: Vec<Password> = plain.into_iter().chain(hashed).collect();
            users.push(User::parse(&user.name, user.enabled, &passwords, &user.rules).map_err(invalid)?);
        }
        Users::new(self.requirepass.get(), users).map_err(invalid)
    }

    pub fn session(&self) -> SessionSettings {
        let users = self.users().unwrap_or_else(|error| {
            // validate() refuses such a configuration; one that skipped it
            // fails closed.
            tracing::error!(%error, "no client may log in");
            Users::nobody()
        });
        SessionSettings {
            max_redirects: self.max_redirects,
            retry_timeout: Duration::from_millis(self.retry_timeout_ms),
            max_pipeline: self.max_pipeline,
            max_fanout: self.max_fanout,
            metrics: self.metrics_addr().is_some(),
            users: Arc::new(users),
            output_limit_normal: self.client_output_buffer_limit_normal,
            output_limit_pubsub: self.client_output_buffer_limit_pubsub,
            max_auth_failures: self.max_auth_failures,
            limits: Limits {
                max_bulk_len: self.proto_max_bulk_len,
                max_inline_len: Limits::default().max_inline_len,
                max_query_len: self.client_query_buffer_limit,
            },
        }
    }
}

/// A value given on the command line.
#[derive(Debug, Clone)]
pub enum FlagValue {
    Text(String),
    Number(i64),
    Bool(bool),
    List(Vec<String>),
}

fn check_host_port(addr: &str) -> Result<(), String> {
    let (host, port) = addr.rsplit_once(':').ok_or("expected host:port")?;
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    port.parse::<u16>().map_err(|_| format!("{port:?} is not a port number"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn proxy_toml_documents_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml");
        let loaded = Config::load(Some(&path), HashMap::new(), &[]).unwrap();
        assert_eq!(loaded, Config::default());
        let text = std::fs::read_to_string(&path).unwrap();
        for key in [
            "cluster",
            "listen",
            "metrics_listen",
            "threads",
            "node_connections",
            "connect_timeout_ms",
            "request_timeout_ms",
            "health_check_ms",
            "topology_refresh_ms",
            "read_from",
            "max_redirects",
            "retry_timeout_ms",
            "max_clients",
            "node_queue_limit",
            "max_pipeline",
            "max_fanout",
            "client_output_buffer_limit_normal",
            "client_output_buffer_limit_pubsub",
            "client_idle_timeout_ms",
            "drain_timeout_ms",
            "proto_max_bulk_len",
            "client_query_buffer_limit",
            "log_level",
            "requirepass",
            "max_auth_failures",
            "node_user",
            "node_password",
            "tls_listen",
            "tls_cert_file",
            "tls_key_file",
            "tls_ca_cert_file",
            "tls_auth_clients",
            "tls_handshake_timeout_ms",
            "node_tls",
            "node_tls_ca_cert_file",
            "node_tls_cert_file",
            "node_tls_key_file",
            "node_tls_server_name",
            "node_tls_insecure_skip_verify",
        ] {
            let line = text
                .lines()
                .position(|l| l.starts_with(&format!("{key} =")))
                .unwrap_or_else(|| panic!("{key} missing"));
            let comment = text.lines().nth(line.wrapping_sub(1)).unwrap_or_default();
            assert!(comment.starts_with('#'), "{key} has no comment above it");
        }
    }

    #[test]
    fn the_commented_users_example_in_proxy_toml_works() {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml")).unwrap();
        let start = text.find("# [[users]]").expect("a [[users]] example");
        let example: String = text[start..]
            .lines()
            .map(|line| line.strip_prefix("# ").or_else(|| line.strip_prefix('#')).unwrap_or(line))
            .map(|line| format!("{line}\n"))
            .collect();
        let dir = std::env::temp_dir().join(format!("slotgate-config-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.toml");
        std::fs::write(&file, example).unwrap();
        let config = Config::load(Some(&file), HashMap::new(), &[]).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        let users = config.users().unwrap();
        assert_eq!(config.users.len(), 3);
        assert!(users.log_in(b"reporting", b"reporting-password").is_some_and(|u| !u.may_access(b"other:x")));
        assert!(users.log_in(b"app", b"app-password").is_some_and(|u| u.all_keys()));
        assert!(users.without_auth().is_none() && !users.default_user().enabled);
    }

    #[test]
    fn users_that_cannot_work_are_refused_naming_user_and_rule() {
        let dir = std::env::temp_dir().join(format!("slotgate-config-bad-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.toml");
        let refused = |toml: &str, flags: &[(&str, FlagValue)]| {
            std::fs::write(&file, toml).unwrap();
            match Config::load(Some(&file), HashMap::new(), flags) {
                Err(ConfigError::Invalid { key: "users", reason }) => reason,
                other => panic!("{toml} should be refused: {other:?}"),
            }
        };
        let reason = refused("[[users]]\nname = \"app\"\npassword = \"p\"\nrules = \"+get &news\"\n", &[]);
        assert!(reason.starts_with("user \"app\": rule \"&news\": channels"), "{reason}");
        let default = "[[users]]\nname = \"default\"\npassword = \"p\"\n";
        let reason = refused(default, &[("requirepass", FlagValue::Text("s3cret".into()))]);
        assert!(reason.contains("requirepass must be empty"), "{reason}");
        std::fs::write(&file, "[[users]]\nname = \"app\"\npasword = \"p\"\n").unwrap();
        assert!(Config::load(Some(&file), HashMap::new(), &[]).is_err(), "a misspelt key is refused");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn flags_beat_env_and_env_beats_the_file() {
        let dir = std::env::temp_dir().join(format!("slotgate-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:1111\"\nthreads = 3\nmax_redirects = 7\n").unwrap();
        let env = env(&[
            ("SLOTGATE_LISTEN", "127.0.0.1:2222"),
            ("SLOTGATE_THREADS", "4"),
            ("SLOTGATE_CLUSTER", "a:1,b:2"),
            ("OTHER", "x"),
        ]);
        let flags = [("threads", FlagValue::Number(5))];
        let config = Config::load(Some(&file), env, &flags).unwrap();
        assert_eq!(config.listen, "127.0.0.1:2222");
        assert_eq!(config.threads, 5);
        assert_eq!(config.max_redirects, 7);
        assert_eq!(config.cluster, vec!["a:1".to_string(), "b:2".to_string()]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn slotgate_metrics_names_the_metrics_endpoint() {
        let metrics = Config::load(None, env(&[("SLOTGATE_METRICS", "0.0.0.0:9187")]), &[]).unwrap();
        assert_eq!(metrics.metrics_addr(), Some("0.0.0.0:9187"));
        assert_eq!(Config::default().metrics_addr(), None, "off by default");
        assert!(Config::load(None, env(&[("SLOTGATE_METRICS", "nohost")]), &[]).is_err());
    }

    #[test]
    fn mistakes_are_errors() {
        let dir = std::env::temp_dir().join(format!("slotgate-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.toml");
        std::fs::write(&file, "lisen = \"127.0.0.1:1111\"\n").unwrap();
        assert!(Config::load(Some(&file), HashMap::new(), &[]).is_err(), "a misspelt key is refused");
        std::fs::write(&file, "threads = \"many\"\n").unwrap();
        assert!(Config::load(Some(&file), HashMap::new(), &[]).is_err(), "a wrong type is refused");
        std::fs::remove_dir_all(dir).unwrap();
        let flags = [("cluster", FlagValue::List(vec!["nohost".into()]))];
        assert!(Config::load(None, HashMap::new(), &flags).is_err());
        let flags = [("listen", FlagValue::Text("127.0.0.1:99999".into()))];
        assert!(Config::load(None, HashMap::new(), &flags).is_err());
        assert!(Config::load(None, env(&[("SLOTGATE_NO_SUCH_KEY", "1")]), &[]).is_err());
        let flags = [("max_clients", FlagValue::Number(0))];
        assert!(Config::load(None, HashMap::new(), &flags).is_err(), "no client could connect");
    }

    #[test]
    fn tls_settings_that_cannot_work_are_errors() {
        let refused = |pairs: &[(&str, &str)], key: &str| match Config::load(None, env(pairs), &[]) {
            Err(ConfigError::Invalid { key: said, .. }) => assert_eq!(said, key, "{pairs:?}"),
            other => panic!("{pairs:?} should be refused for {key}: {other:?}"),
        };
        refused(&[("SLOTGATE_TLS_CERT_FILE", "c.pem")], "tls_cert_file");
        refused(&[("SLOTGATE_TLS_LISTEN", "127.0.0.1:6390")], "tls_listen");
        refused(&[("SLOTGATE_LISTEN", "")], "listen");
        refused(&[("SLOTGATE_NODE_TLS", "true")], "node_tls");
        refused(&[("SLOTGATE_NODE_TLS_CA_CERT_FILE", "ca.pem")], "node_tls");
        refused(&[("SLOTGATE_NODE_TLS", "true"), ("SLOTGATE_NODE_TLS_KEY_FILE", "k.pem")], "node_tls_cert_file");
        let tls_only = [
            ("SLOTGATE_LISTEN", ""),
            ("SLOTGATE_TLS_LISTEN", "127.0.0.1:6390"),
            ("SLOTGATE_TLS_CERT_FILE", "/nonexistent/cert.pem"),
            ("SLOTGATE_TLS_KEY_FILE", "/nonexistent/key.pem"),
            ("SLOTGATE_TLS_AUTH_CLIENTS", "optional"),
        ];
        let config = Config::load(None, env(&tls_only), &[]).unwrap();
        assert_eq!((config.listen_addr(), config.tls_auth_clients), (None, AuthClients::Optional));
        // The files are read when slotgate starts; the error names the one missing.
        let error = config.client_tls().unwrap_err().to_string();
        assert!(error.contains("/nonexistent/cert.pem"), "{error}");
        assert!(Config::load(None, env(&[("SLOTGATE_TLS_AUTH_CLIENTS", "maybe")]), &[]).is_err());
    }
}
