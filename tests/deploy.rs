//! The deployment files, checked without a Docker engine: docker-compose.yml through
//! `docker-compose config` and against every file it names, deploy/Dockerfile against
//! Cargo.toml and the compose file, the Prometheus and Grafana provisioning against the
//! compose services, and deploy/kubernetes/ against what slotgate listens on.
//!
//! This file holds what the checks share; tests/deploy/ holds them, one module per file
//! checked. `DEPLOY_TEST_ROOT=DIR` runs them on another tree (e.g. a copy with one file
//! broken, to see a check fail); by default they read this repository.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

#[path = "deploy/compose.rs"]
mod compose;
#[path = "deploy/dockerfile.rs"]
mod dockerfile;
#[path = "deploy/kubernetes.rs"]
mod kubernetes;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;

const COMPOSE: &str = "docker-compose.yml";
const DOCKERFILE: &str = "deploy/Dockerfile";
const NODES: std::ops::RangeInclusive<u16> = 1..=6;

fn root() -> PathBuf {
    std::env::var_os("DEPLOY_TEST_ROOT").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

fn read(path: &str) -> String {
    let full = root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

/// A one-document YAML file, with `<<` merge keys applied (compose's `x-` anchors).
fn yaml(path: &str) -> Value {
    let mut doc: Value = serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"));
    doc.apply_merge().unwrap_or_else(|e| panic!("{path}: bad merge key: {e}"));
    doc
}

/// The value at a dotted path (`a.b.c`), if every step is there.
fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

/// A scalar as text: YAML writes ports and counts as numbers or as strings.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn text_at(value: &Value, path: &str, file: &str) -> String {
    at(value, path).and_then(text).unwrap_or_else(|| panic!("{file}: `{path}` is missing or not a scalar"))
}

fn seq(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_sequence).map_or(&[], Vec::as_slice)
}

fn port_of(addr: &str) -> u16 {
    let port = addr.rsplit_once(':').map_or(addr, |(_, port)| port);
    port.parse().unwrap_or_else(|_| panic!("no port in {addr:?}"))
}

fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or("", |(host, _)| host.trim_matches(['[', ']']))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.starts_with("127.") || host == "::1"
}

/// Cargo's targets of one kind (`bin`, `bench`, ...) as (name, source path in the repo).
fn cargo_targets(kind: &str) -> Vec<(String, String)> {
    let cargo = std::env::var("CARGO").unwrap_or("cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--no-deps", "--offline", "--format-version", "1", "--manifest-path"])
        .arg(root().join("Cargo.toml"))
        .output()
        .expect("cannot run cargo metadata");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let root = std::fs::canonicalize(root()).unwrap();
    let targets = metadata["packages"][0]["targets"].as_array().unwrap();
    targets
        .iter()
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == kind))
        .map(|t| {
            let path = Path::new(t["src_path"].as_str().unwrap());
            let relative = path.strip_prefix(&root).unwrap_or(path).to_str().unwrap().to_string();
            (t["name"].as_str().unwrap().to_string(), relative)
        })
        .collect()
}

/// The one binary Cargo.toml builds.
fn cargo_binary() -> String {
    let bins = cargo_targets("bin");
    assert_eq!(bins.len(), 1, "Cargo.toml builds {bins:?}: which one goes in the image?");
    bins[0].0.clone()
}
