//! The wire, byte for byte: malformed and oversized input gets Redis's
//! protocol error and a closed connection without disturbing anyone else;
//! inline commands and 1-byte writes work; HELLO and RESP3 replies are what
//! Redis 7 sends, passed through unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::time::Duration;

use support::raw::Raw;
use support::{runtime, shared};

fn port() -> u16 {
    shared().proxy.port
}

/// Sends `input`, expects `reply` and then a closed connection.
fn expect_error_and_close(input: &[u8], reply: &[u8]) {
    let mut raw = Raw::connect(port());
    raw.send(input);
    raw.expect(reply);
    assert!(
        raw.closed_within(Duration::from_secs(5)),
        "connection left open after {:?}",
        String::from_utf8_lossy(input)
    );
}

#[test]
fn malformed_requests_get_redis_protocol_errors_and_are_closed() {
    let cases: &[(&[u8], &[u8])] = &[
        (b"*abc\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n$-5\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n:5\r\n", b"-ERR Protocol error: expected '$', got ':'\r\n"),
        (b"*1\r\n$x\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"SET \"unbalanced\r\n", b"-ERR Protocol error: unbalanced quotes in request\r\n"),
        // Replies to what came before the error are delivered first.
        (
            b"PING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n*x\r\n",
            b"+PONG\r\n$2\r\nhi\r\n-ERR Protocol error: invalid multibulk length\r\n",
        ),
    ];
    for (input, reply) in cases {
        expect_error_and_close(input, reply);
    }
}

#[test]
fn oversized_lengths_are_refused_without_allocating_them() {
    expect_error_and_close(b"*1\r\n$536870913\r\n", b"-ERR Protocol error: invalid bulk length\r\n");
    expect_error_and_close(b"*2147483648\r\n", b"-ERR Protocol error: invalid multibulk length\r\n");
    let long_header = [&b"*"[..], &vec![b'9'; 70_000][..]].concat();
    expect_error_and_close(&long_header, b"-ERR Protocol error: too big mbulk count string\r\n");
    let long_inline = vec![b'a'; 70_000];
    expect_error_and_close(&long_inline, b"-ERR Protocol error: too big inline request\r\n");
    // Lengths that are allowed but never sent are not reserved up front.
    let before = rss_kb(shared().proxy.pid());
    let mut holders = Vec::new();
    for _ in 0..20 {
        let mut raw = Raw::connect(port());
        raw.send(b"*2147483647\r\n*1\r\n");
        let mut raw2 = Raw::connect(port());
        raw2.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870912\r\nabc");
        holders.push(raw);
        holders.push(raw2);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kb(shared().proxy.pid());
    assert!(after < before + 50_000, "RSS grew from {before} kB to {after} kB");
    // Everyone else is served meanwhile.
    let mut other = Raw::connect(port());
    other.send(b"PING\r\n");
    other.expect(b"+PONG\r\n");
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

#[test]
fn inline_commands_work_like_telnet() {
    let mut raw = Raw::connect(port());
    raw.send(b"SET inline:k \"two words\"\r\nGET inline:k\r\nPING\nECHO 'it\\'s'\r\n\r\n");
    raw.expect(b"+OK\r\n$9\r\ntwo words\r\n+PONG\r\n$4\r\nit's\r\n");
}

#[test]
fn one_byte_at_a_time_is_parsed_correctly() {
    let mut raw = Raw::connect(port());
    let input = b"*3\r\n$3\r\nSET\r\n$8\r\nslowly:k\r\n$5\r\nvalue\r\n*2\r\n$3\r\nGET\r\n$8\r\nslowly:k\r\n";
    for byte in input {
        raw.send(&[*byte]);
        std::thread::sleep(Duration::from_millis(1));
    }
    raw.expect(b"+OK\r\n$5\r\nvalue\r\n");
}

#[test]
fn a_misbehaving_client_does_not_disturb_its_neighbours() {
    let mut neighbour = Raw::connect(port());
    for _ in 0..50 {
        let mut bad = Raw::connect(port());
        bad.send(b"*1\r\n$-5\r\n\x00\xff garbage");
    }
    for i in 0..100 {
        neighbour.send(format!("*2\r\n$4\r\nECHO\r\n${}\r\n{i}\r\n", i.to_string().len()).as_bytes());
        neighbour.expect(format!("${}\r\n{i}\r\n", i.to_string().len()).as_bytes());
    }
}

#[test]
fn hello_answers_with_the_map_redis_sends() {
    // Without a version HELLO answers in the current protocol and changes nothing.
    let mut raw = Raw::connect(port());
    raw.send(b"HELLO\r\n");
    assert_eq!(raw.read_line(), "*14\r\n");
    let fields: Vec<String> = (0..14).map(|_| read_value(&mut raw)).collect();
    assert_eq!(fields[4..6], ["proto".to_string(), ":2".to_string()]);
    let mut raw = Raw::connect(port());
    raw.send(b"HELLO 3\r\n");
    assert_eq!(raw.read_line(), "%7\r\n");
    let fields: Vec<String> = (0..14).map(|_| read_value(&mut raw)).collect();
    assert_eq!(fields[0], "server");
    assert_eq!(fields[1], "redis");
    assert_eq!(fields[2], "version");
    assert!(fields[3].starts_with("7."), "{}", fields[3]);
    assert_eq!(fields[4..6], ["proto".to_string(), ":3".to_string()]);
    assert_eq!(fields[6], "id");
    assert_eq!(fields[8..14], ["mode", "standalone", "role", "master", "modules", "*0"].map(String::from));
    // From now on replies are RESP3: a null is `_`.
    raw.send(b"GET hello:missing\r\n");
    raw.expect(b"_\r\n");
    raw.send(b"HELLO 4\r\nHELLO x\r\nHELLO 3 FOO\r\nHELLO 2 SETNAME app\r\nCLIENT GETNAME\r\nGET hello:missing\r\n");
    raw.expect(b"-NOPROTO unsupported protocol version\r\n");
    raw.expect(b"-ERR Protocol version is not an integer or out of range\r\n");
    raw.expect(b"-ERR Syntax error in HELLO option 'FOO'\r\n");
    assert_eq!(raw.read_line(), "*14\r\n");
    for _ in 0..14 {
        read_value(&mut raw);
    }
    raw.expect(b"$3\r\napp\r\n$-1\r\n");
    raw.send(b"HELLO 3 AUTH default anything\r\nHELLO 3 AUTH nobody x\r\nAUTH x\r\n");
    assert_eq!(raw.read_line(), "%7\r\n");
    for _ in 0..14 {
        read_value(&mut raw);
    }
    raw.expect(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n");
    raw.expect(b"-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n");
}

/// One simple value of a HELLO reply: a bulk string's text, or the raw line.
fn read_value(raw: &mut Raw) -> String {
    let line = raw.read_line();
    if let Some(len) = line.strip_prefix('$') {
        let len: usize = len.trim().parse().unwrap();
        let text = raw.read_exact(len + 2);
        String::from_utf8_lossy(&text[..len]).into_owned()
    } else {
        line.trim_end().to_string()
    }
}

/// A RESP multibulk request.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n{arg}\r\n", arg.len()).bytes());
    }
    out
}

fn hello3(raw: &mut Raw) {
    raw.send(b"HELLO 3\r\n");
    assert_eq!(raw.read_line(), "%7\r\n");
    for _ in 0..14 {
        read_value(raw);
    }
}

#[test]
fn resp3_replies_pass_through_byte_for_byte() {
    let shared = shared();
    let mut proxy = Raw::connect(port());
    hello3(&mut proxy);
    for setup in [
        &["HSET", "r3b:{h}", "f", "v", "g", "w"][..],
        &["ZADD", "r3b:{h}z", "1.5", "m", "2", "n"],
        &["SADD", "r3b:{h}s", "m"],
        &["XADD", "r3b:{h}x", "1-1", "f", "v"],
    ] {
        proxy.send(&encode(setup));
        read_frame(&mut proxy);
    }
    let slot = slotgate::cluster::key_slot(b"r3b:{h}").number();
    let mut direct = Raw::connect(shared.cluster.owner(slot));
    hello3(&mut direct);
    for query in [
        &["HGETALL", "r3b:{h}"][..],
        &["ZSCORE", "r3b:{h}z", "m"],
        &["ZRANGE", "r3b:{h}z", "0", "-1", "WITHSCORES"],
        &["SMEMBERS", "r3b:{h}s"],
        &["GET", "r3b:{h}missing"],
        &["HEXISTS", "r3b:{h}", "f"],
        &["XINFO", "STREAM", "r3b:{h}x"],
        &["OBJECT", "ENCODING", "r3b:{h}"],
    ] {
        direct.send(&encode(query));
        let want = read_frame(&mut direct);
        proxy.send(&encode(query));
        let got = read_frame(&mut proxy);
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want), "{query:?}");
    }
}

/// Reads one complete reply frame (of the simple shapes used above).
fn read_frame(raw: &mut Raw) -> Vec<u8> {
    let line = raw.read_line();
    let mut frame = line.clone().into_bytes();
    let count = |l: &str| l[1..].trim().parse::<i64>().unwrap();
    match line.as_bytes()[0] {
        b'$' | b'=' | b'!' if count(&line) >= 0 => frame.extend(raw.read_exact(count(&line) as usize + 2)),
        b'*' | b'~' | b'>' => (0..count(&line).max(0)).for_each(|_| frame.extend(read_frame(raw))),
        b'|' => (0..2 * count(&line) + 1).for_each(|_| frame.extend(read_frame(raw))),
        b'%' => (0..2 * count(&line)).for_each(|_| frame.extend(read_frame(raw))),
        _ => {}
    }
    frame
}

#[test]
fn quit_answers_ok_then_closes() {
    let mut raw = Raw::connect(port());
    raw.send(b"PING\r\nQUIT\r\nPING\r\n");
    raw.expect(b"+PONG\r\n+OK\r\n");
    assert!(raw.closed_within(Duration::from_secs(5)));
}

#[test]
fn large_values_round_trip() {
    runtime().block_on(async {
        let mut c = support::async_connection(&shared().proxy.url()).await;
        let value: Vec<u8> = (0..8 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
        let _: () = redis::cmd("SET").arg("big:value").arg(&value).query_async(&mut c).await.unwrap();
        let back: Vec<u8> = redis::cmd("GET").arg("big:value").query_async(&mut c).await.unwrap();
        assert!(back == value, "8 MB value came back changed");
    });
}

/// CLIENT LIST, INFO, KILL, REPLY and NO-EVICT answer about slotgate's own
/// clients, the way Redis answers about its own.
#[test]
fn client_commands_are_about_slotgate_clients() {
    let proxy = &shared().proxy;
    let mut a = proxy.connection();
    let mut b = proxy.connection();
    let _: () = redis::cmd("CLIENT").arg("SETNAME").arg("alpha").query(&mut a).unwrap();
    let b_id: u64 = redis::cmd("CLIENT").arg("ID").query(&mut b).unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut a).unwrap();
    assert!(list.lines().any(|l| l.contains(" name=alpha ") && l.contains(" cmd=client|list ")), "{list}");
    assert!(list.lines().any(|l| l.starts_with(&format!("id={b_id} "))), "{list}");
    let only_b: String = redis::cmd("CLIENT").arg("LIST").arg("ID").arg(b_id).query(&mut a).unwrap();
    assert_eq!(only_b.lines().count(), 1, "{only_b}");
    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut b).unwrap();
    assert!(info.starts_with(&format!("id={b_id} ")) && info.contains(" resp=2 "), "{info}");
    let _: () = redis::cmd("CLIENT").arg("NO-EVICT").arg("on").query(&mut a).unwrap();
    // KILL ends the other client's connection at once.
    let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(b_id).query(&mut a).unwrap();
    assert_eq!(killed, 1);
    assert!(redis::cmd("PING").query::<String>(&mut b).is_err(), "the killed client's connection is closed");
    let error = redis::cmd("CLIENT").arg("KILL").arg("127.0.0.1:1").query::<redis::Value>(&mut a).unwrap_err();
    assert_eq!(error.detail(), Some("No such client"));
    // REPLY OFF and SKIP silence replies; the commands still run.
    let mut raw = Raw::connect(proxy.port);
    raw.send(b"CLIENT REPLY OFF\r\nSET reply:k 1\r\nCLIENT REPLY ON\r\nGET reply:k\r\nCLIENT REPLY SKIP\r\nINCR reply:k\r\nGET reply:k\r\n");
    raw.expect(b"+OK\r\n$1\r\n1\r\n$1\r\n2\r\n");
}
