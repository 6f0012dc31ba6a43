//! Blocking commands (BLPOP, BLMOVE, BZPOPMIN, XREAD BLOCK, ...) run on a
//! node connection of the blocked client alone: other clients never wait
//! behind them, timeouts behave as Redis's, and a client that leaves while
//! blocked frees its node connection at once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use redis::{Connection, Value};
use support::shared;

fn client(protocol: &str) -> Connection {
    shared().proxy.client(protocol)
}

#[test]
fn blocked_pops_get_what_another_client_pushes() {
    for protocol in ["resp2", "resp3"] {
        let key = format!("block:pop:{protocol}");
        let waiter = std::thread::spawn({
            let key = key.clone();
            move || {
                let mut con = client(protocol);
                let got: (String, String) = redis::cmd("BLPOP").arg(&key).arg(0).query(&mut con).unwrap();
                // The same connection goes on with ordinary commands.
                let pong: String = redis::cmd("PING").query(&mut con).unwrap();
                (got, pong)
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        let mut pusher = client(protocol);
        let _: i64 = redis::cmd("RPUSH").arg(&key).arg("job").query(&mut pusher).unwrap();
        let (got, pong) = waiter.join().unwrap();
        assert_eq!(got, (key.clone(), "job".to_string()), "{protocol}");
        assert_eq!(pong, "PONG");
    }
}

#[test]
fn timeouts_behave_as_redis() {
    let mut con = client("resp2");
    for args in [
        &["BLPOP", "block:t:list", "0.2"][..],
        &["BRPOP", "block:t:list", "0.2"],
        &["BLMOVE", "block:t:list", "block:t:list", "LEFT", "RIGHT", "0.2"],
        &["BZPOPMIN", "block:t:zset", "0.2"],
        &["BLMPOP", "0.2", "1", "block:t:list", "LEFT"],
        &["XREAD", "BLOCK", "200", "STREAMS", "block:t:stream", "$"],
    ] {
        let start = Instant::now();
        let reply: Value = redis::cmd(args[0]).arg(&args[1..]).query(&mut con).unwrap();
        let waited = start.elapsed();
        assert_eq!(reply, Value::Nil, "{args:?}");
        assert!(waited >= Duration::from_millis(150), "{args:?} returned after {waited:?}");
    }
    // Keys in two slots: Redis Cluster's own error.
    let error = redis::cmd("BLPOP").arg("block:a").arg("block:b").arg(1).query::<Value>(&mut con).unwrap_err();
    assert_eq!(error.code(), Some("CROSSSLOT"));
}

#[test]
fn blocked_clients_do_not_hold_up_the_others() {
    let blocked: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                let mut con = client("resp2");
                let got: (String, String) =
                    redis::cmd("BLPOP").arg(format!("block:many:{i}")).arg(0).query(&mut con).unwrap();
                got.1
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let busy: Vec<_> = (0..50)
        .map(|t| {
            std::thread::spawn(move || {
                let mut con = client("resp2");
                for i in 0..100 {
                    let key = format!("block:busy:{t}:{i}");
                    let _: () = redis::cmd("SET").arg(&key).arg(i).query(&mut con).unwrap();
                    let got: i64 = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
                    assert_eq!(got, i);
                }
            })
        })
        .collect();
    for thread in busy {
        thread.join().unwrap();
    }
    let mut pusher = client("resp2");
    for i in 0..20 {
        let _: i64 =
            redis::cmd("LPUSH").arg(format!("block:many:{i}")).arg(format!("v{i}")).query(&mut pusher).unwrap();
    }
    for (i, thread) in blocked.into_iter().enumerate() {
        assert_eq!(thread.join().unwrap(), format!("v{i}"));
    }
}

#[test]
fn a_client_that_leaves_while_blocked_takes_nothing() {
    let key = "block:gone";
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", shared().proxy.port)).unwrap();
    raw.write_all(b"BLPOP block:gone 0\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(raw);
    // slotgate closes its node connection as soon as the client leaves;
    // the node then forgets the BLPOP. Were it still blocked, it would take
    // the value pushed now.
    std::thread::sleep(Duration::from_millis(500));
    let mut con = client("resp2");
    let _: i64 = redis::cmd("RPUSH").arg(key).arg("kept").query(&mut con).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let left: Option<String> = redis::cmd("LPOP").arg(key).query(&mut con).unwrap();
    assert_eq!(left.as_deref(), Some("kept"), "the departed client's BLPOP took the value");
}

#[test]
fn a_blocked_pop_follows_its_slot_to_a_new_master() {
    let cluster = support::Cluster::start(3, 0);
    let proxy = support::Proxy::start(&cluster.seeds(), &[]);
    proxy.wait_routing();
    let key = "moving-list";
    let slot = support::slot_of(key);
    let url = proxy.url();
    let popper = std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        redis::cmd("BLPOP").arg(key).arg(20).query::<Option<(String, String)>>(&mut c)
    });
    std::thread::sleep(Duration::from_millis(500));
    // The node unblocks it with -MOVED when the slot leaves; slotgate blocks it again there.
    cluster.migrate_slot(slot, cluster.other_master(slot), || {});
    std::thread::sleep(Duration::from_millis(500));
    let _: i64 = redis::cmd("RPUSH").arg(key).arg("after-move").query(&mut proxy.connection()).unwrap();
    let popped = popper.join().unwrap().unwrap();
    assert_eq!(popped, Some((key.to_string(), "after-move".to_string())));
}
