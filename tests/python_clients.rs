//! redis-py, the client most legacy Python applications use, against a real
//! cluster through slotgate: its default protocol (RESP3 in redis-py 8) and
//! `protocol=2`. The Python tests live in tests/python/; this test starts
//! the cluster and slotgate and runs them with pytest.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::process::Command;

use support::Shared;

#[test]
fn redis_py_works_through_slotgate() {
    let shared = Shared::start();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python");
    let output = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "--color=no", "--durations=8"])
        .arg(&dir)
        .env("SLOTGATE_PORT", shared.proxy.port.to_string())
        .env("CLUSTER_NODES", shared.cluster.seeds())
        .output()
        .expect("python3 must be installed (scripts/test.sh installs the Python packages)");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    eprintln!("{report}");
    assert!(output.status.success(), "pytest failed:\n{report}\nslotgate log:\n{}", shared.proxy.log());
    assert!(report.contains("passed"), "pytest ran no tests:\n{report}");
}
