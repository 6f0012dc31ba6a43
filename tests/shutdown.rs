//! Stopping: on SIGTERM slotgate refuses new clients, answers what its
//! clients have already sent, closes them, and exits; `drain_timeout_ms`
//! bounds the wait, and a second signal ends it at once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::raw::Raw;
use support::{Proxy, shared, wait_for};

/// A slotgate of its own (it is stopped) in front of the shared cluster.
fn proxy(extra: &[&str]) -> Proxy {
    let proxy = Proxy::start(&shared().cluster.seeds(), extra);
    proxy.wait_routing();
    proxy
}

#[test]
fn sigterm_answers_what_clients_sent_then_closes_them_and_exits() {
    let mut proxy = proxy(&[]);
    let port = proxy.port;
    let mut idle = Raw::connect(port);
    idle.send(b"PING\r\n");
    idle.expect(b"+PONG\r\n");
    // In flight when the signal comes: answered (nil after its 1 s timeout),
    // and so are the commands pipelined behind it.
    let mut blocked = Raw::connect(port);
    blocked.send(b"SET shutdown:k v\r\nBLPOP shutdown:list 1\r\nGET shutdown:k\r\n");
    blocked.expect(b"+OK\r\n");
    std::thread::sleep(Duration::from_millis(100));
    let signalled = Instant::now();
    proxy.signal("TERM");

    assert!(idle.closed_within(Duration::from_secs(2)), "an idle client is closed at once");
    wait_for("new clients to be refused", Duration::from_secs(2), || TcpStream::connect(("127.0.0.1", port)).is_err());
    blocked.expect(b"*-1\r\n$1\r\nv\r\n");
    assert!(signalled.elapsed() >= Duration::from_millis(700), "the BLPOP ran its course");
    assert!(blocked.closed_within(Duration::from_secs(2)), "closed once answered");
    let status = proxy.exit_within(Duration::from_secs(5)).expect("slotgate exits once drained");
    assert!(status.success(), "{status:?}\n{}", proxy.log());
    assert!(proxy.log().contains("stopping: answering what clients sent"), "{}", proxy.log());
}

#[test]
fn the_drain_timeout_bounds_the_wait_and_a_second_signal_ends_it() {
    let mut proxy = proxy(&["--drain-timeout-ms", "300"]);
    let mut forever = Raw::connect(proxy.port);
    forever.send(b"BLPOP shutdown:never 0\r\n");
    std::thread::sleep(Duration::from_millis(100));
    let signalled = Instant::now();
    proxy.signal("TERM");
    assert!(proxy.exit_within(Duration::from_secs(5)).is_some(), "exits after the drain timeout");
    assert!(signalled.elapsed() >= Duration::from_millis(300));
    assert!(forever.closed_within(Duration::from_secs(2)));
    assert!(proxy.log().contains("drain timeout: closing the clients still waiting"), "{}", proxy.log());

    let mut proxy = self::proxy(&["--drain-timeout-ms", "60000"]);
    let mut forever = Raw::connect(proxy.port);
    forever.send(b"BLPOP shutdown:never 0\r\n");
    std::thread::sleep(Duration::from_millis(100));
    proxy.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(proxy.exit_within(Duration::from_millis(100)).is_none(), "still draining");
    proxy.signal("INT");
    let status = proxy.exit_within(Duration::from_secs(5)).expect("a second signal stops it at once");
    assert!(!status.success());
    assert!(forever.closed_within(Duration::from_secs(2)));
}
