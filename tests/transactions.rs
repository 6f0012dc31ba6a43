//! MULTI/EXEC/DISCARD/WATCH/UNWATCH through slotgate: a transaction runs on
//! the client's own connection to the master of its keys' slot, exactly as
//! it would on that node; keys in another slot abort it like a cluster node
//! does; a client that leaves mid-transaction leaves nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::io::Write;
use std::time::Duration;

use redis::{Connection, Value};
use support::shared;

fn client(protocol: &str) -> Connection {
    shared().proxy.client(protocol)
}

#[test]
fn a_transaction_on_hash_tagged_keys_runs_atomically() {
    for protocol in ["resp2", "resp3"] {
        let mut con = client(protocol);
        let (a, b) = (format!("{{tx:{protocol}}}a"), format!("{{tx:{protocol}}}b"));
        let (set, incr, get): (String, i64, Vec<Option<String>>) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&a)
            .arg(1)
            .cmd("INCRBY")
            .arg(&b)
            .arg(5)
            .cmd("MGET")
            .arg(&a)
            .arg(&b)
            .query(&mut con)
            .unwrap();
        assert_eq!((set.as_str(), incr), ("OK", 5), "{protocol}");
        assert_eq!(get, vec![Some("1".into()), Some("5".into())]);
        // Keyless commands before the first key, and PING, are queued too.
        let replies: Vec<Value> =
            redis::pipe().atomic().cmd("PING").cmd("TIME").cmd("GET").arg(&a).query(&mut con).unwrap();
        assert_eq!(replies.len(), 3, "{protocol}: {replies:?}");
        assert_eq!(replies[2], Value::BulkString(b"1".to_vec()));
    }
}

#[test]
fn watch_aborts_when_another_client_writes() {
    let mut con = client("resp2");
    let mut other = client("resp2");
    let key = "{tx:watch}counter";
    let _: () = redis::cmd("SET").arg(key).arg(10).query(&mut con).unwrap();
    let _: () = redis::cmd("WATCH").arg(key).query(&mut con).unwrap();
    let value: i64 = redis::cmd("GET").arg(key).query(&mut con).unwrap();
    let _: () = redis::cmd("SET").arg(key).arg(99).query(&mut other).unwrap();
    let _: () = redis::cmd("MULTI").query(&mut con).unwrap();
    let queued: String = redis::cmd("SET").arg(key).arg(value + 1).query(&mut con).unwrap();
    assert_eq!(queued, "QUEUED");
    let exec: Value = redis::cmd("EXEC").query(&mut con).unwrap();
    assert_eq!(exec, Value::Nil, "EXEC fails: the watched key changed");
    let now: i64 = redis::cmd("GET").arg(key).query(&mut con).unwrap();
    assert_eq!(now, 99);
    // Without interference, the same sequence commits.
    let _: () = redis::cmd("WATCH").arg(key).query(&mut con).unwrap();
    let _: () = redis::cmd("MULTI").query(&mut con).unwrap();
    let _: String = redis::cmd("INCR").arg(key).query(&mut con).unwrap();
    let exec: Vec<i64> = redis::cmd("EXEC").query(&mut con).unwrap();
    assert_eq!(exec, vec![100]);
    // UNWATCH forgets the watch.
    let _: () = redis::cmd("WATCH").arg(key).query(&mut con).unwrap();
    let _: () = redis::cmd("UNWATCH").query(&mut con).unwrap();
    let _: () = redis::cmd("SET").arg(key).arg(1).query(&mut other).unwrap();
    let exec: Vec<i64> = redis::pipe().atomic().cmd("INCR").arg(key).query(&mut con).unwrap();
    assert_eq!(exec, vec![2]);
}

#[test]
fn keys_in_another_slot_abort_the_transaction_like_a_cluster_node() {
    let mut con = client("resp2");
    let (a, b) = ("{tx:cross1}k", "{tx:cross2}k");
    let _: () = redis::cmd("MULTI").query(&mut con).unwrap();
    let _: String = redis::cmd("SET").arg(a).arg(1).query(&mut con).unwrap();
    let error = redis::cmd("SET").arg(b).arg(1).query::<Value>(&mut con).unwrap_err();
    assert_eq!(error.code(), Some("CROSSSLOT"));
    let error = redis::cmd("EXEC").query::<Value>(&mut con).unwrap_err();
    assert_eq!(error.code(), Some("EXECABORT"), "{error}");
    let exists: i64 = redis::cmd("EXISTS").arg(a).arg(b).query(&mut con).unwrap();
    assert_eq!(exists, 0, "nothing of the aborted transaction ran");
    // A command Redis refuses while queuing aborts it too.
    let _: () = redis::cmd("MULTI").query(&mut con).unwrap();
    let _: Value = redis::cmd("SET").arg(a).arg(1).query(&mut con).unwrap();
    assert!(redis::cmd("NOSUCHCOMMAND").query::<Value>(&mut con).is_err());
    let error = redis::cmd("EXEC").query::<Value>(&mut con).unwrap_err();
    assert_eq!(error.code(), Some("EXECABORT"));
    // WATCH on keys in two slots.
    let error = redis::cmd("WATCH").arg(a).arg(b).query::<Value>(&mut con).unwrap_err();
    assert_eq!(error.code(), Some("CROSSSLOT"));
    // Runtime errors are returned in EXEC's results; the rest runs.
    let _: () = redis::cmd("SET").arg(a).arg("text").query(&mut con).unwrap();
    let _: () = redis::cmd("MULTI").query(&mut con).unwrap();
    let _: String = redis::cmd("INCR").arg(a).query(&mut con).unwrap();
    let _: String = redis::cmd("SET").arg(a).arg(7).query(&mut con).unwrap();
    let _ = redis::cmd("EXEC").query::<Value>(&mut con);
    let now: i64 = redis::cmd("GET").arg(a).query(&mut con).unwrap();
    assert_eq!(now, 7);
    // DISCARD and the errors of a single server.
    let _: () = redis::cmd("MULTI").query(&mut con).unwrap();
    let _: String = redis::cmd("INCR").arg(a).query(&mut con).unwrap();
    let _: () = redis::cmd("DISCARD").query(&mut con).unwrap();
    let now: i64 = redis::cmd("GET").arg(a).query(&mut con).unwrap();
    assert_eq!(now, 7);
    for (command, message) in [("EXEC", "EXEC without MULTI"), ("DISCARD", "DISCARD without MULTI")] {
        let error = redis::cmd(command).query::<Value>(&mut con).unwrap_err();
        assert_eq!(error.detail(), Some(message));
    }
    let _: () = redis::cmd("MULTI").query(&mut con).unwrap();
    let error = redis::cmd("MULTI").query::<Value>(&mut con).unwrap_err();
    assert_eq!(error.detail(), Some("MULTI calls can not be nested"));
    let _: () = redis::cmd("DISCARD").query(&mut con).unwrap();
}

#[test]
fn a_client_that_leaves_mid_transaction_leaves_nothing_queued() {
    let key = "{tx:gone}k";
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", shared().proxy.port)).unwrap();
    raw.write_all(b"MULTI\r\nSET {tx:gone}k 1\r\n").unwrap();
    let mut reply = [0u8; 64];
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"+QUEUED\r\n") {
        let n = std::io::Read::read(&mut raw, &mut reply).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&reply[..n]);
    }
    drop(raw);
    std::thread::sleep(Duration::from_millis(200));
    let mut con = client("resp2");
    let value: Option<String> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
    assert_eq!(value, None);
    // The same key in a fresh transaction works (nothing was left locked or queued).
    let replies: Vec<String> = redis::pipe().atomic().cmd("SET").arg(key).arg(2).query(&mut con).unwrap();
    assert_eq!(replies, vec!["OK"]);
}

/// Sends `input` in one write and reads until `replies` complete replies came back.
fn pipelined(input: &[u8], replies: usize) -> Vec<Value> {
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", shared().proxy.port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(input).unwrap();
    let mut parser = redis::Parser::new();
    let mut reader = std::io::BufReader::new(raw);
    (0..replies).map(|_| parser.parse_value(&mut reader).unwrap()).collect()
}

#[test]
fn pipelined_transactions_keep_the_order_of_a_single_server() {
    // The client's own write after WATCH, still in flight when MULTI
    // arrives, must reach the node first: EXEC then fails, as on one server.
    let replies = pipelined(
        b"SET {tx:pipe}k 1\r\nWATCH {tx:pipe}k\r\nSET {tx:pipe}k 2\r\nMULTI\r\nINCR {tx:pipe}k\r\nEXEC\r\nGET {tx:pipe}k\r\n",
        7,
    );
    assert_eq!(replies[5], Value::Nil, "EXEC after the client's own write to a watched key: {replies:?}");
    assert_eq!(replies[6], Value::BulkString(b"2".to_vec()));
    // UNWATCH inside MULTI is queued, as on one server.
    let replies = pipelined(b"MULTI\r\nSET {tx:pipe}u 1\r\nUNWATCH\r\nEXEC\r\n", 4);
    assert_eq!(replies[2], Value::SimpleString("QUEUED".into()), "{replies:?}");
    assert_eq!(replies[3], Value::Array(vec![Value::Okay, Value::Okay]), "{replies:?}");
    // RESET waits for a blocking command sent before it.
    let replies = pipelined(b"BLPOP {tx:pipe}none 0.2\r\nRESET\r\nPING\r\n", 3);
    assert_eq!(replies, vec![Value::Nil, Value::SimpleString("RESET".into()), Value::SimpleString("PONG".into())]);
}
