//! The settings in force, and their reload (SIGHUP). Each part of slotgate
//! reads its settings through a shared, swappable handle: the sessions', the
//! node connections', the topology task's. A reload validates the new file
//! first, then replaces each part's settings whole; every reader picks up
//! the new ones the next time it looks (a session before its next batch of
//! requests, a node connection at its next health tick or reconnect, the
//! topology task at its next refresh), so no connection is dropped.
//!
//! What only takes effect by binding, reading files or starting threads
//! again (listen addresses, TLS certificates, threads, connections per node)
//! keeps its startup value until a restart; a reload that changes it says so.

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use crate::backend::BackendSettings;
use crate::cluster::TopologySettings;
use crate::config::Config;
use crate::session::SessionSettings;
use crate::tls::NodeTls;

/// Keys whose new value waits for a restart.
pub const NEEDS_RESTART: &[&str] = &[
    "listen",
    "tls_listen",
    "tls_cert_file",
    "tls_key_file",
    "tls_ca_cert_file",
    "tls_auth_clients",
    "tls_handshake_timeout_ms",
    "metrics_listen",
    "threads",
    "node_connections",
    "node_tls",
    "node_tls_ca_cert_file",
    "node_tls_cert_file",
    "node_tls_key_file",
    "node_tls_server_name",
    "node_tls_insecure_skip_verify",
];

/// Sets the log filter (`log_level`); an error says why it cannot.
pub type LogFilter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The settings in force. Readers load a part's current settings; only
/// [`Live::reload`] stores new ones.
pub struct Live {
    /// The whole configuration in force (restart-only keys at their startup
    /// values), for what reads a key or two: the accept loop, the drain.
    pub config: ArcSwap<Config>,
    pub session: Arc<ArcSwap<SessionSettings>>,
    pub backend: Arc<ArcSwap<BackendSettings>>,
    pub topology: Arc<ArcSwap<TopologySettings>>,
    /// TLS toward the nodes, read once at startup (its files need a restart).
    node_tls: Option<Arc<NodeTls>>,
    log_filter: Option<LogFilter>,
    /// Told after each reload (to wake what is idle).
    after_reload: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
    /// One reload at a time.
    reloading: Mutex<()>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("config", &self.config.load()).finish_non_exhaustive()
    }
}

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Keys whose new values are in force now.
    pub applied: Vec<String>,
    /// Keys whose new values wait for a restart (the old ones stay).
    pub need_restart: Vec<String>,
}

impl Live {
    /// The settings of `config`; `node_tls` from [`Config::node_tls`].
    pub fn new(config: Config, node_tls: Option<Arc<NodeTls>>) -> Live {
        Live {
            session: Arc::new(ArcSwap::from_pointee(config.session())),
            backend: Arc::new(ArcSwap::from_pointee(config.backend(node_tls.clone()))),
            topology: Arc::new(ArcSwap::from_pointee(config.topology(node_tls.clone()))),
            config: ArcSwap::from_pointee(config),
            node_tls,
            log_filter: None,
            after_reload: Mutex::default(),
            reloading: Mutex::new(()),
        }
    }

    /// How a reload changes the log filter (the subscriber's reload handle).
    pub fn with_log_filter(mut self, log_filter: LogFilter) -> Live {
        self.log_filter = Some(log_filter);
        self
    }

    /// Calls `then` after each reload, once the new settings are in force.
    pub fn after_reload(&self, then: impl Fn() + Send + Sync + 'static) {
        self.after_reload.lock().unwrap_or_else(PoisonError::into_inner).push(Box::new(then));
    }

    /// Puts `new` (already validated, as [`Config::load`] does) in force,
    /// except the keys of [`NEEDS_RESTART`], which keep their values.
    pub fn reload(&self, new: Config) -> Reloaded {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.config.load_full();
        let (old_table, mut new_table) = (table(&current), table(&new));
        let mut reloaded = Reloaded::default();
        let keys: std::collections::BTreeSet<&String> = old_table.keys().chain(new_table.keys()).collect();
        for key in keys {
            if old_table.get(key) == new_table.get(key) {
                continue;
            }
            match NEEDS_RESTART.contains(&key.as_str()) {
                true => reloaded.need_restart.push(key.clone()),
                false => reloaded.applied.push(key.clone()),
            }
        }
        for key in &reloaded.need_restart {
            match old_table.get(key) {
                Some(old) => new_table.insert(key.clone(), old.clone()),
                None => new_table.remove(key),
            };
        }
        // The old values of valid keys make a valid config again.
        let next: Config = match toml::Value::Table(new_table).try_into() {
            Ok(next) => next,
            Err(error) => {
                tracing::error!(%error, "reload: cannot keep the restart-only settings; nothing changed");
                return Reloaded::default();
            }
        };
        if reloaded.applied.iter().any(|key| key == "log_level")
            && let Some(set) = &self.log_filter
            && let Err(error) = set(&next.log_level)
        {
            tracing::warn!(%error, "reload: log_level not changed");
        }
        // Sessions last: one that sees its new settings takes its routes
        // again, which must then find the new `read_from`.
        self.backend.store(Arc::new(next.backend(self.node_tls.clone())));
        self.topology.store(Arc::new(next.topology(self.node_tls.clone())));
        self.session.store(Arc::new(next.session()));
        self.config.store(Arc::new(next));
        for then in self.after_reload.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            then();
        }
        reloaded
    }
}

/// The config as a TOML table, key by key, to compare.
fn table(config: &Config) -> toml::Table {
    toml::Table::try_from(config).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(changes: impl FnOnce(&mut Config)) -> Config {
        let mut config = Config::default();
        changes(&mut config);
        config.validate().unwrap();
        config
    }

    #[test]
    fn live_keys_apply_and_restart_keys_keep_their_values() {
        let live = Live::new(Config::default(), None);
        let reloaded = live.reload(with(|c| {
            c.max_pipeline = 7;
            c.read_from = crate::backend::ReadFrom::Nearest;
            c.listen = "127.0.0.1:7777".into();
            c.threads = 3;
        }));
        assert_eq!(reloaded.applied, ["max_pipeline", "read_from"]);
        assert_eq!(reloaded.need_restart, ["listen", "threads"]);
        let config = live.config.load();
        assert_eq!((config.max_pipeline, config.listen.as_str(), config.threads), (7, "127.0.0.1:6380", 1));
        assert_eq!(live.session.load().max_pipeline, 7);
        assert_eq!(live.backend.load().read_from, crate::backend::ReadFrom::Nearest);
    }

    #[test]
    fn every_restart_key_is_a_setting() {
        let keys = table(&Config::default());
        for key in NEEDS_RESTART {
            assert!(keys.contains_key(*key), "{key} is not a key of Config");
        }
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let live = Live::new(Config::default(), None);
        assert_eq!(live.reload(Config::default()), Reloaded::default());
    }
}
