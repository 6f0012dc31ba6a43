//! The Python examples in examples/, run as a user runs them after
//! `./scripts/redis-cluster.sh start`, against a real cluster and slotgate on
//! free ports (`REDIS_HOST`, `REDIS_PORT`, `REDIS_CLUSTER_NODES`). Each must
//! exit 0, print its checks and leave no keys behind; each must fail when its
//! server is not there; and their key_slot must agree with `slotgate slot`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::process::{Command, Output};

use support::{Cluster, free_port, shared};

/// Runs `python3 args...` in the repository's top folder, as the examples'
/// docstrings say, with `env` added.
fn python(args: &[&str], env: &[(&str, String)]) -> Output {
    Command::new("python3")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .envs(env.iter().map(|(name, value)| (name, value)))
        .output()
        .expect("python3 must be installed (scripts/test.sh installs redis-py)")
}

/// What `output` printed, stdout then stderr.
fn printed(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Runs `examples/<name>` against slotgate on `slotgate_port` and the nodes `cluster_nodes`.
fn example(name: &str, slotgate_port: u16, cluster_nodes: &str) -> Output {
    let env = [
        ("REDIS_HOST", "127.0.0.1".to_string()),
        ("REDIS_PORT", slotgate_port.to_string()),
        ("REDIS_CLUSTER_NODES", cluster_nodes.to_string()),
    ];
    python(&[&format!("examples/{name}")], &env)
}

/// Runs `examples/<name>` against the shared cluster and slotgate; asserts
/// that it passed, printed each of `lines`, and left no key under `prefix`.
fn example_passes(name: &str, prefix: &str, lines: &[&str]) {
    let shared = shared();
    let output = example(name, shared.proxy.port, &shared.cluster.seeds());
    let report = printed(&output);
    eprintln!("{report}");
    assert!(output.status.success(), "{name} failed:\n{report}\nslotgate log:\n{}", shared.proxy.log());
    for line in lines.iter().chain(&["All checks passed."]) {
        assert!(report.contains(line), "{name} did not print {line:?}:\n{report}");
    }
    let left: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query(&mut shared.proxy.connection()).unwrap();
    assert!(left.is_empty(), "{name} left keys behind: {left:?}");
}

#[test]
fn basic_usage_passes_through_slotgate() {
    let port = shared().proxy.port;
    example_passes(
        "basic_usage.py",
        "example:basic:",
        &[
            &format!("Connected to slotgate at 127.0.0.1:{port} with a plain redis.Redis: PING -> True"),
            "HGETALL: {'name': 'Ada', 'email': 'ada@example.com', 'logins': '3'}",
            "ZREVRANGE 0 -1 WITHSCORES: [('bob', 105.0), ('alice', 100.0), ('carol', 92.0)]",
            "MSET/MGET of 10 keys in 10 slots, one command each",
            "INFO proxy: cluster_slots_served: 16384",
            &format!("INFO proxy: slotgate {}, 3 masters", env!("CARGO_PKG_VERSION")),
            "slot of '{user:1001}:profile', here and by CLUSTER KEYSLOT: 5712",
            "`slotgate slot KEY`",
            "Cleanup: deleted 7 keys",
        ],
    );
}

#[test]
fn advanced_usage_passes_through_slotgate() {
    example_passes(
        "advanced_usage.py",
        "example:advanced:",
        &[
            "through a pool of up to 20 connections: PING -> True",
            "SETs answered OK: 1000",
            "values read back right by one MGET: 1000",
            "MSETNX of the two gets CROSSSLOT",
            "EXEC: [1, True, True, ['1', '2025-06-01T12:00:00Z']]",
            "balances of alice and bob: ['0', '100']",
            "messages received: ['cluster up', 'slot 42 moved', 'all good']",
        ],
    );
}

#[test]
fn official_demo_passes_against_the_nodes() {
    example_passes(
        "official_demo.py",
        "example:official:",
        &[
            "MSET raises",
            "mset_nonatomic: one MSET per slot",
            "MSET of {user:1001} keys, one slot: True",
            "slot of 'a{b}c{d}', here and by CLUSTER KEYSLOT",
        ],
    );
}

/// The examples' key_slot and `slotgate slot` agree, hash tags and their corner cases included.
#[test]
fn python_key_slot_agrees_with_slotgate_slot() {
    let mut keys: Vec<String> =
        ["", "foo", "{user:1001}:profile", "{}foo", "foo{}{bar}", "{{bar}}", "a{b}c{d}", "{", "}{x}", "ключ:{é}"]
            .map(String::from)
            .into();
    keys.extend((0..200).map(|i| format!("user:{i}")));
    keys.extend((0..200).map(|i| format!("x{{tag:{i}}}y")));
    let args: Vec<&str> = keys.iter().map(String::as_str).collect();

    let code = "import sys; sys.path.insert(0, 'examples'); from slots import key_slot; \
                print(*(key_slot(key) for key in sys.argv[1:]), sep='\\n')";
    let from_python = python(&[&["-c", code], &args[..]].concat(), &[]);
    assert!(from_python.status.success(), "{}", printed(&from_python));
    let from_slotgate = Command::new(env!("CARGO_BIN_EXE_slotgate")).arg("slot").args(&args).output().unwrap();
    assert!(from_slotgate.status.success(), "{}", printed(&from_slotgate));

    let python_slots = String::from_utf8(from_python.stdout).unwrap();
    let slotgate_slots = String::from_utf8(from_slotgate.stdout).unwrap();
    assert_eq!(python_slots.lines().count(), keys.len());
    for ((key, python), slotgate) in keys.iter().zip(python_slots.lines()).zip(slotgate_slots.lines()) {
        assert_eq!(python, slotgate, "slot of {key:?}: key_slot says {python}, slotgate slot says {slotgate}");
    }
}

/// With nothing listening, each example says what to do and exits non-zero.
#[test]
fn examples_fail_clearly_when_the_server_is_not_there() {
    let nowhere = free_port();
    for name in ["basic_usage.py", "advanced_usage.py"] {
        let output = example(name, nowhere, "unused");
        let report = printed(&output);
        assert_eq!(output.status.code(), Some(1), "{name}:\n{report}");
        let hint =
            format!("cannot reach slotgate at 127.0.0.1:{nowhere}: start it with ./scripts/redis-cluster.sh start");
        assert!(report.contains(&hint), "{name} did not say {hint:?}:\n{report}");
    }
    let output = example("official_demo.py", nowhere, &format!("127.0.0.1:{nowhere}"));
    let report = printed(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(report.contains(&format!("cannot reach the cluster nodes 127.0.0.1:{nowhere}")), "{report}");
}

/// Pointed at a cluster node instead of slotgate, basic_usage fails where
/// slotgate makes the difference: even a node that owns every slot refuses
/// the MSET of keys in different slots, which slotgate splits.
#[test]
fn basic_usage_fails_on_a_node_without_slotgate() {
    let node = Cluster::start(1, 0);
    let output = example("basic_usage.py", node.nodes[0].port, "unused");
    let report = printed(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(report.contains("Sorted sets"), "the single-key steps work on a node that owns every slot:\n{report}");
    assert!(report.contains("ClusterCrossSlotError"), "{report}");
    assert!(!report.contains("All checks passed."), "{report}");
}
