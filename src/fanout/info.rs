//! INFO as one server would answer it: the first master's text, with the
//! counts that add up across masters summed (keyspace, stats, memory used),
//! the cluster hidden (`redis_mode:standalone`, `cluster_enabled:0`, so that
//! clients stay in standalone mode), and a `# Proxy` section about slotgate.

use std::collections::HashMap;
use std::fmt::Write;

use bytes::{Bytes, BytesMut};

use crate::error::ClientError;
use crate::resp::{Protocol, value, write};

/// slotgate's own section, and whether the client asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyInfo {
    pub included: bool,
    pub fields: Vec<(&'static str, String)>,
}

impl ProxyInfo {
    /// Whether `INFO <sections>` includes the proxy section: no section
    /// named, or `proxy`, `default`, `all` or `everything` among them.
    pub fn wanted<'a>(mut sections: impl Iterator<Item = &'a [u8]>) -> bool {
        let mut any = false;
        let wanted = sections.any(|s| {
            any = true;
            ["proxy", "default", "all", "everything"].iter().any(|w| w.as_bytes().eq_ignore_ascii_case(s))
        });
        wanted || !any
    }
}

pub(super) fn merge(proxy: &ProxyInfo, replies: &[Bytes], protocol: Protocol, out: &mut BytesMut) {
    let Some(texts) =
        replies.iter().map(|r| value::text(r).and_then(|t| std::str::from_utf8(t).ok())).collect::<Option<Vec<_>>>()
    else {
        return match replies.iter().find(|r| value::is_error(r)) {
            Some(error) => out.extend_from_slice(error),
            None => ClientError::Unmergeable("a node's INFO reply is unreadable").write(out),
        };
    };
    write::verbatim(out, protocol, &combine(proxy, &texts));
}

/// Fields summed across masters; the rest is the first master's.
fn summed(section: &str, field: &str) -> bool {
    match section {
        "Stats" => !matches!(field, "latest_fork_usec" | "total_forks") && !field.ends_with("_perc"),
        "Memory" => field.starts_with("used_memory") || field == "maxmemory",
        "Clients" => field == "blocked_clients",
        _ => false,
    }
}

fn combine(proxy: &ProxyInfo, texts: &[&str]) -> String {
    let fields: Vec<HashMap<&str, &str>> =
        texts.iter().map(|t| t.lines().filter_map(|line| line.split_once(':')).collect()).collect();
    let mut out = String::new();
    let mut section = "";
    for line in texts.first().map_or("", |t| t).lines() {
        if let Some(name) = line.strip_prefix("# ") {
            section = name.trim();
            out.push_str(line);
            out.push_str("\r\n");
            if section == "Keyspace" {
                keyspace(texts, &mut out);
            }
            continue;
        }
        let Some((field, value)) = line.split_once(':') else {
            out.push_str(line);
            out.push_str("\r\n");
            continue;
        };
        if section == "Keyspace" {
            continue;
        }
        let value = match (field, value) {
            ("redis_mode", _) => "standalone".to_string(),
            ("cluster_enabled", _) => "0".to_string(),
            _ if field.ends_with("_human") => {
                let base = field.trim_end_matches("_human");
                match sum(&fields, section, base) {
                    Some(bytes) if summed(section, base) => human_bytes(bytes),
                    _ => value.to_string(),
                }
            }
            _ if summed(section, field) => sum(&fields, section, field).map_or(value.to_string(), |n| n.to_string()),
            _ => value.to_string(),
        };
        let _ = write!(out, "{field}:{value}\r\n");
    }
    if proxy.included {
        if !out.is_empty() && !out.ends_with("\r\n\r\n") {
            out.push_str("\r\n");
        }
        out.push_str("# Proxy\r\n");
        for (field, value) in &proxy.fields {
            let _ = write!(out, "{field}:{value}\r\n");
        }
    }
    out
}

/// The sum of an integer field over every master.
fn sum(fields: &[HashMap<&str, &str>], section: &str, field: &str) -> Option<i64> {
    if !summed(section, field) {
        return None;
    }
    fields.iter().map(|f| f.get(field).and_then(|v| v.parse::<i64>().ok())).try_fold(0i64, |sum, n| sum.checked_add(n?))
}

/// `dbN:keys=K,expires=E,avg_ttl=T` lines summed over every master (a master
/// without keys has no line); the average TTL is weighted by expires.
fn keyspace(texts: &[&str], out: &mut String) {
    let mut dbs: Vec<(String, [i64; 3])> = Vec::new();
    for text in texts {
        let Some(start) = text.find("# Keyspace") else { continue };
        for line in text[start..].lines().skip(1) {
            let Some((db, stats)) = line.split_once(':') else { break };
            let stat = |name: &str| {
                stats.split(',').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse::<i64>().ok())
            };
            let (keys, expires, ttl) =
                (stat("keys").unwrap_or(0), stat("expires").unwrap_or(0), stat("avg_ttl").unwrap_or(0));
            let index = match dbs.iter().position(|(name, _)| name == db) {
                Some(index) => index,
                None => {
                    dbs.push((db.to_string(), [0; 3]));
                    dbs.len() - 1
                }
            };
            let total = &mut dbs[index].1;
            total[0] = total[0].saturating_add(keys);
            total[1] = total[1].saturating_add(expires);
            total[2] = total[2].saturating_add(ttl.saturating_mul(expires));
        }
    }
    for (db, [keys, expires, ttl_weight]) in dbs {
        let avg_ttl = if expires > 0 { ttl_weight / expires } else { 0 };
        let _ = write!(out, "{db}:keys={keys},expires={expires},avg_ttl={avg_ttl}\r\n");
    }
}

/// Bytes the way Redis's `bytesToHuman` writes them.
fn human_bytes(n: i64) -> String {
    let n = n as f64;
    let units =
        [(1024f64.powi(5), "P"), (1024f64.powi(4), "T"), (1024f64.powi(3), "G"), (1024f64.powi(2), "M"), (1024.0, "K")];
    match units.iter().find(|(size, _)| n >= *size) {
        Some((size, unit)) => format!("{:.2}{unit}", n / size),
        None => format!("{n}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "# Server\r\nredis_version:7.0.15\r\nredis_mode:cluster\r\n\r\n# Memory\r\nused_memory:1000\r\nused_memory_human:1000B\r\n\r\n# Stats\r\ntotal_commands_processed:5\r\n\r\n# Cluster\r\ncluster_enabled:1\r\n\r\n# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=100\r\n";
    const B: &str = "# Server\r\nredis_version:7.0.15\r\nredis_mode:cluster\r\n\r\n# Memory\r\nused_memory:2000\r\nused_memory_human:1.95K\r\n\r\n# Stats\r\ntotal_commands_processed:7\r\n\r\n# Cluster\r\ncluster_enabled:1\r\n\r\n# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=300\r\n";

    #[test]
    fn counts_add_up_and_the_cluster_is_hidden() {
        let proxy = ProxyInfo { included: true, fields: vec![("slotgate_version", "1.0".into())] };
        let text = combine(&proxy, &[A, B]);
        for line in [
            "redis_mode:standalone",
            "used_memory:3000",
            "used_memory_human:2.93K",
            "total_commands_processed:12",
            "cluster_enabled:0",
            "db0:keys=5,expires=2,avg_ttl=200",
            "# Proxy\r\nslotgate_version:1.0",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        assert!(text.contains("redis_version:7.0.15"));
        assert_eq!(text.matches("db0:").count(), 1);
    }

    #[test]
    fn an_empty_first_master_still_shows_the_keyspace() {
        let empty = "# Keyspace\r\n";
        let text = combine(&ProxyInfo { included: false, fields: vec![] }, &[empty, B]);
        assert_eq!(text, "# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=300\r\n");
    }

    #[test]
    fn the_proxy_section_is_shown_when_asked_for() {
        let wanted = |args: &[&str]| ProxyInfo::wanted(args.iter().map(|a| a.as_bytes()));
        assert!(wanted(&[]));
        assert!(wanted(&["PROXY"]));
        assert!(wanted(&["server", "all"]));
        assert!(!wanted(&["server"]));
    }
}
