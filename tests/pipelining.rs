//! Pipelining: replies come back in request order however the requests are
//! spread over nodes and mixed with locally answered commands, and many
//! clients at once share the node connections without mixing replies.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use support::raw::Raw;
use support::{runtime, shared};

#[test]
fn a_pipeline_of_100000_mixed_commands_replies_in_order() {
    runtime().block_on(async {
        let mut connection = support::async_connection(&shared().proxy.url()).await;
        let mut pipe = redis::pipe();
        for i in 0..25_000 {
            // Four nodes' worth of order: a write, a read of it, a local
            // command, and a counter whose running value proves sequencing.
            pipe.set(format!("pipe:{i}"), i)
                .get(format!("pipe:{i}"))
                .cmd("ECHO")
                .arg(i)
                .incr(format!("pipe:ctr:{}", i % 7), 1);
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut connection).await.unwrap();
        assert_eq!(replies.len(), 100_000);
        let mut counters = [0i64; 7];
        for (i, chunk) in replies.chunks(4).enumerate() {
            assert_eq!(chunk[0], redis::Value::Okay, "SET #{i}");
            assert_eq!(redis::from_redis_value_ref::<i64>(&chunk[1]).unwrap(), i as i64, "GET #{i}");
            assert_eq!(redis::from_redis_value_ref::<i64>(&chunk[2]).unwrap(), i as i64, "ECHO #{i}");
            counters[i % 7] += 1;
            assert_eq!(redis::from_redis_value_ref::<i64>(&chunk[3]).unwrap(), counters[i % 7], "INCR #{i}");
        }
    });
}

#[test]
fn raw_pipelined_bytes_come_back_in_exact_order() {
    let port = shared().proxy.port;
    let mut setup = Raw::connect(port);
    let mut expected = Vec::new();
    let mut request = Vec::new();
    for i in 0..2_000 {
        let key = format!("rawpipe:{i}");
        request.extend(
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{i}\r\n", key.len(), i.to_string().len()).bytes(),
        );
        expected.extend(b"+OK\r\n");
        request.extend(format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).bytes());
        expected.extend(format!("${}\r\n{i}\r\n", i.to_string().len()).bytes());
        request.extend(b"PING\r\n");
        expected.extend(b"+PONG\r\n");
    }
    setup.send(&request);
    setup.expect(&expected);
}

#[test]
fn five_hundred_clients_at_once_each_get_their_own_replies() {
    let port = shared().proxy.port;
    runtime().block_on(async move {
        let url = format!("redis://127.0.0.1:{port}/");
        let mut tasks = Vec::new();
        for client_no in 0..500 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = support::async_connection(&url).await;
                for i in 0..20 {
                    let key = format!("many:{client_no}:{i}");
                    let _: () =
                        redis::cmd("SET").arg(&key).arg(client_no * 1000 + i).query_async(&mut c).await.unwrap();
                    let got: i64 = redis::cmd("GET").arg(&key).query_async(&mut c).await.unwrap();
                    assert_eq!(got, client_no * 1000 + i);
                }
                let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut c).await.unwrap();
                id
            }));
        }
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await.unwrap());
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 500, "every client has its own id");
    });
}

#[test]
fn a_client_that_half_closes_still_gets_its_replies() {
    let mut raw = Raw::connect(shared().proxy.port);
    raw.send(b"SET halfclose v\r\nGET halfclose\r\n");
    raw.shutdown_write();
    raw.expect(b"+OK\r\n$1\r\nv\r\n");
    assert!(raw.closed_within(std::time::Duration::from_secs(5)));
}

#[test]
fn a_protocol_switch_never_lets_a_request_overtake_an_earlier_one() {
    let port = shared().proxy.port;
    // Someone already has the RESP3 node connections open.
    let mut resp3 = Raw::connect(port);
    resp3.send(b"HELLO 3\r\nGET switch:warm\r\n");
    assert_eq!(resp3.read_line(), "%7\r\n");
    let mut raw = Raw::connect(port);
    let value = vec![b'x'; 16 * 1024 * 1024];
    let mut request = format!("*3\r\n$3\r\nSET\r\n$10\r\nswitch:big\r\n${}\r\n", value.len()).into_bytes();
    request.extend(&value);
    request.extend(b"\r\nHELLO 3\r\nSTRLEN switch:big\r\n");
    raw.send(&request);
    raw.expect(b"+OK\r\n");
    assert_eq!(raw.read_line(), "%7\r\n");
    for _ in 0..14 {
        let line = raw.read_line();
        if let Some(len) = line.strip_prefix('$') {
            raw.read_exact(len.trim().parse::<usize>().unwrap() + 2);
        }
    }
    assert_eq!(raw.read_line(), format!(":{}\r\n", value.len()), "STRLEN ran before the SET it follows");
}

#[test]
fn large_replies_keep_their_place_among_small_ones() {
    // Replies from 16 KiB on leave from the node's read buffer, not copied
    // with the rest: the bytes and their order must not change.
    let port = shared().proxy.port;
    let mut raw = Raw::connect(port);
    let value =
        |size: usize, seed: u32| -> Vec<u8> { (0..size as u32).map(|i| ((i * 7 + seed) % 251) as u8).collect() };
    let (big, bigger) = (value(16 * 1024, 1), value(3 * 1024 * 1024 + 5, 2));
    let set = |key: &str, v: &[u8]| {
        let mut out = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n", key.len(), v.len()).into_bytes();
        out.extend(v);
        out.extend(b"\r\n");
        out
    };
    raw.send(&[set("order:big", &big), set("order:bigger", &bigger), set("order:small", b"s")].concat());
    raw.expect(b"+OK\r\n+OK\r\n+OK\r\n");
    raw.send(
        b"GET order:small\r\nGET order:big\r\nPING\r\nGET order:bigger\r\nGET order:big\r\nMGET order:small order:big\r\nGET order:small\r\n",
    );
    let bulk = |v: &[u8]| [format!("${}\r\n", v.len()).into_bytes(), v.to_vec(), b"\r\n".to_vec()].concat();
    let want = [
        bulk(b"s"),
        bulk(&big),
        b"+PONG\r\n".to_vec(),
        bulk(&bigger),
        bulk(&big),
        [b"*2\r\n".to_vec(), bulk(b"s"), bulk(&big)].concat(),
        bulk(b"s"),
    ]
    .concat();
    assert_eq!(raw.read_exact(want.len()), want);
}
