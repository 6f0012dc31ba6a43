//! redis-cli, the tool operators reach for first, through slotgate: plain
//! commands, RESP3 (`-3`), and `--pipe` mass insertion.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::Shared;

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out =
        Command::new("redis-cli").arg("-p").arg(port.to_string()).args(args).output().expect("redis-cli installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn redis_cli_works_through_slotgate() {
    let shared = Shared::start();
    let port = shared.proxy.port;
    assert_eq!(redis_cli(port, &["set", "cli:a", "1"]), "OK\n");
    assert_eq!(redis_cli(port, &["--no-raw", "get", "cli:a"]), "\"1\"\n");
    assert_eq!(redis_cli(port, &["-3", "--no-raw", "hset", "cli:h", "f", "v"]), "(integer) 1\n");
    assert_eq!(redis_cli(port, &["-3", "--no-raw", "hgetall", "cli:h"]), "1# \"f\" => \"v\"\n");
    assert_eq!(redis_cli(port, &["-3", "--no-raw", "get", "cli:missing"]), "(nil)\n");

    // Mass insertion, as the Redis docs teach it: 20,000 SETs in raw RESP.
    let mut input = Vec::new();
    for i in 0..20_000 {
        let (key, value) = (format!("cli:mass:{i}"), i.to_string());
        input.extend(format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n", key.len(), value.len()).bytes());
    }
    let mut child = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("errors: 0, replies: 20000"), "{report}");
    assert_eq!(redis_cli(port, &["get", "cli:mass:19999"]), "19999\n");
}
