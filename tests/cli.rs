//! The `slotgate` command line: `slot KEY`, `--help`, `check-config`, and the
//! precedence of flags over environment over file, on the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::process::{Command, Output};

fn slotgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slotgate"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn slot_prints_the_hash_slot_of_each_key() {
    let out = slotgate(&["slot", "foo", "{user1000}.following", "user1000", ""], &[]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "12182\n3443\n3443\n0\n");
}

#[test]
fn help_explains_every_setting() {
    let out = slotgate(&["--help"], &[]);
    assert!(out.status.success());
    let help = stdout(&out);
    for flag in [
        "--cluster",
        "--listen",
        "--config",
        "--threads",
        "--node-connections",
        "--connect-timeout-ms",
        "--topology-refresh-ms",
        "--max-redirects",
        "--request-timeout-ms",
        "--retry-timeout-ms",
        "--max-clients",
        "--max-pipeline",
        "--max-fanout",
        "--drain-timeout-ms",
        "--client-idle-timeout-ms",
        "--client-output-buffer-limit-pubsub",
        "--max-auth-failures",
        "--node-queue-limit",
        "--proto-max-bulk-len",
        "--client-query-buffer-limit",
        "--log-level",
        "--tls-listen",
        "--tls-cert-file",
        "--tls-key-file",
        "--tls-ca-cert-file",
        "--tls-auth-clients",
        "--tls-handshake-timeout-ms",
        "--node-tls",
        "--node-tls-ca-cert-file",
        "--node-tls-cert-file",
        "--node-tls-key-file",
        "--node-tls-server-name",
        "--node-tls-insecure-skip-verify",
        "slot",
        "check-config",
        "SLOTGATE_",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}:\n{help}");
    }
}

#[test]
fn flags_beat_environment_which_beats_the_file() {
    let out = slotgate(&["check-config", "--config", "proxy.toml"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("\"127.0.0.1:6380\""));
    let env = [("SLOTGATE_LISTEN", "127.0.0.1:7777"), ("SLOTGATE_CLUSTER", "10.0.0.1:7001,10.0.0.2:7001")];
    let out = slotgate(&["check-config", "--config", "proxy.toml"], &env);
    assert!(stdout(&out).contains("\"127.0.0.1:7777\""), "{}", stdout(&out));
    assert!(stdout(&out).contains("\"10.0.0.2:7001\""), "{}", stdout(&out));
    let out = slotgate(&["check-config", "--config", "proxy.toml", "--listen", "127.0.0.1:8888"], &env);
    assert!(stdout(&out).contains("\"127.0.0.1:8888\""), "{}", stdout(&out));
}

#[test]
fn a_bad_setting_is_refused_with_its_name() {
    let out = slotgate(&["check-config", "--listen", "nowhere"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen"), "{err}");
    let out = slotgate(&["check-config"], &[("SLOTGATE_THREDS", "2")]);
    assert!(!out.status.success(), "a misspelt variable is an error, not ignored");
    let out = slotgate(&["check-config", "--config", "/nonexistent/proxy.toml"], &[]);
    assert!(!out.status.success());
}
