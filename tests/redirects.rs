//! Redirects: a slot migrated key by key while clients keep reading and
//! writing costs them no error and no wrong value (ASK, TRYAGAIN, then
//! MOVED are followed inside slotgate), and a slot reassigned with
//! `CLUSTER SETSLOT ... NODE` is followed on the first MOVED.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use support::{Cluster, Proxy, runtime};

/// A cluster and a slotgate that must learn every move from redirects
/// alone (its periodic topology refresh is a minute away).
fn cluster_behind_slotgate(cluster: Cluster) -> (Cluster, Proxy) {
    let proxy = Proxy::start(&cluster.seeds(), &["--topology-refresh-ms", "60000"]);
    proxy.wait_routing();
    (cluster, proxy)
}

/// Keys `{tag}:0..count` all in one slot.
fn keys_in_one_slot(tag: &str, count: usize) -> (u16, Vec<String>) {
    let slot = slotgate::cluster::key_slot(tag.as_bytes()).number();
    (slot, (0..count).map(|i| format!("{{{tag}}}:{i}")).collect())
}

#[test]
fn a_slot_migrated_key_by_key_under_traffic_causes_no_client_error() {
    let (cluster, proxy) = cluster_behind_slotgate(Cluster::start(3, 1));
    let (slot, keys) = keys_in_one_slot("mig", 300);
    // A key per worker in another slot of the migrating slot's master: an
    // MSET or MGET of it and a key of the migrating slot goes to that
    // master as one run of two parts, each following its own redirect.
    let source = cluster.owner(slot);
    let neighbours: Vec<String> = (0..)
        .map(|n| format!("neighbour:{n}"))
        .filter(|key| support::slot_of(key) != slot && cluster.owner(support::slot_of(key)) == source)
        .take(4)
        .collect();
    let mut c = proxy.connection();
    for (i, key) in keys.iter().enumerate() {
        let _: () = redis::cmd("SET").arg(key).arg(i).query(&mut c).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let increments = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let ops = Arc::new(AtomicU64::new(0));
    let rt = runtime();
    let mut workers = Vec::new();
    for worker in 0..4u64 {
        let (stop, increments, errors, ops, keys, url) =
            (stop.clone(), increments.clone(), errors.clone(), ops.clone(), keys.clone(), proxy.url());
        let neighbour = neighbours[worker as usize].clone();
        workers.push(rt.spawn(async move {
            let mut c = support::async_connection(&url).await;
            let mut i = worker as usize;
            while !stop.load(Ordering::Relaxed) {
                let key = &keys[i % keys.len()];
                let fail = |what: String| {
                    eprintln!("worker {worker}: {what}");
                    errors.fetch_add(1, Ordering::Relaxed);
                };
                match redis::cmd("GET").arg(key).query_async::<Option<usize>>(&mut c).await {
                    Ok(Some(v)) if v == i % keys.len() => {}
                    other => fail(format!("GET {key}: {other:?}")),
                }
                match redis::cmd("INCR").arg("{mig}:counter").query_async::<u64>(&mut c).await {
                    Ok(_) => {
                        increments.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => fail(format!("INCR: {e}")),
                }
                let new_key = format!("{{mig}}:new:{worker}:{i}");
                match redis::cmd("SET").arg(&new_key).arg("x").query_async::<()>(&mut c).await {
                    Ok(()) => {}
                    Err(e) => fail(format!("SET {new_key}: {e}")),
                }
                // Two keys of the migrating slot: TRYAGAIN while they are split.
                match redis::cmd("MGET")
                    .arg(key)
                    .arg(&keys[(i + 1) % keys.len()])
                    .query_async::<Vec<Option<usize>>>(&mut c)
                    .await
                {
                    Ok(v) if v == vec![Some(i % keys.len()), Some((i + 1) % keys.len())] => {}
                    other => fail(format!("MGET: {other:?}")),
                }
                let paired = format!("{{mig}}:paired:{worker}:{i}");
                let pair = [(paired.as_str(), i), (neighbour.as_str(), i)];
                match redis::cmd("MSET").arg(&pair).query_async::<()>(&mut c).await {
                    Ok(()) => {}
                    Err(e) => fail(format!("MSET {paired} {neighbour}: {e}")),
                }
                match redis::cmd("MGET").arg(&paired).arg(&neighbour).query_async::<Vec<Option<usize>>>(&mut c).await {
                    Ok(v) if v == vec![Some(i), Some(i)] => {}
                    other => fail(format!("MGET {paired} {neighbour}: {other:?}")),
                }
                ops.fetch_add(6, Ordering::Relaxed);
                i += 4;
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(200));
    let target = cluster.other_master(slot);
    cluster.migrate_slot(slot, target, || std::thread::sleep(Duration::from_millis(2)));
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for worker in workers {
            worker.await.unwrap();
        }
    });
    assert!(ops.load(Ordering::Relaxed) > 1_000, "traffic kept flowing: {} ops", ops.load(Ordering::Relaxed));
    assert_eq!(errors.load(Ordering::Relaxed), 0, "client-visible errors during the migration");
    let counter: u64 = redis::cmd("GET").arg("{mig}:counter").query(&mut c).unwrap();
    assert_eq!(counter, increments.load(Ordering::Relaxed), "every acknowledged INCR ran exactly once");
    assert_eq!(cluster.owner(slot), target);
    let moved: i64 = redis::cmd("DBSIZE").query(&mut cluster.node(target).connection()).unwrap();
    assert!(moved >= keys.len() as i64);
}

#[test]
fn moved_after_setslot_node_is_followed_transparently() {
    let (cluster, proxy) = cluster_behind_slotgate(Cluster::start(3, 0));
    let (slot, keys) = keys_in_one_slot("moved", 20);
    let mut c = proxy.connection();
    for key in &keys {
        let _: () = redis::cmd("SET").arg(key).arg(key).query(&mut c).unwrap();
    }
    let target = cluster.other_master(slot);
    // Moved behind slotgate's back: its map still points at the old owner.
    cluster.migrate_slot(slot, target, || {});
    for key in &keys {
        let value: String = redis::cmd("GET").arg(key).query(&mut c).unwrap();
        assert_eq!(&value, key);
    }
    let _: () = redis::cmd("SET").arg(&keys[0]).arg("after").query(&mut c).unwrap();
    let direct: String = redis::cmd("GET").arg(&keys[0]).query(&mut cluster.node(target).connection()).unwrap();
    assert_eq!(direct, "after");
}

/// `cmdstat_cluster|nodes` calls, summed over the masters.
fn topology_queries(cluster: &Cluster) -> u64 {
    cluster
        .masters()
        .into_iter()
        .map(|port| {
            let info: String =
                redis::cmd("INFO").arg("commandstats").query(&mut cluster.node(port).connection()).unwrap();
            info.lines()
                .find(|l| l.starts_with("cmdstat_cluster|nodes:"))
                .and_then(|l| l.split("calls=").nth(1)?.split(',').next()?.parse().ok())
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn a_burst_of_moved_answers_costs_one_topology_refresh() {
    let (cluster, proxy) = cluster_behind_slotgate(Cluster::start(3, 0));
    let (slot, keys) = keys_in_one_slot("burst", 1);
    let _: () = redis::cmd("SET").arg(&keys[0]).arg("v").query(&mut proxy.connection()).unwrap();
    cluster.migrate_slot(slot, cluster.other_master(slot), || {});
    for port in cluster.masters() {
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut cluster.node(port).connection()).unwrap();
    }
    // 200 clients hit the moved slot at once: 200 MOVED answers.
    runtime().block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let (url, key) = (proxy.url(), keys[0].clone());
            tasks.push(tokio::spawn(async move {
                let mut c = support::async_connection(&url).await;
                let value: String = redis::cmd("GET").arg(&key).query_async(&mut c).await.unwrap();
                assert_eq!(value, "v");
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    // A refresh asks the three masters at once.
    let queries = topology_queries(&cluster);
    assert!((1..=4 * 3).contains(&queries), "{queries} topology queries for one burst of MOVED answers");
}

#[test]
fn a_scripts_error_that_reads_like_a_redirect_is_not_followed() {
    let (cluster, proxy) = cluster_behind_slotgate(Cluster::start(3, 0));
    let (slot, keys) = keys_in_one_slot("script", 2);
    let mut c = proxy.connection();
    let _: () = redis::cmd("SET").arg(&keys[1]).arg("real").query(&mut c).unwrap();
    let other = cluster.other_master(slot);
    for fake in [
        "TRYAGAIN not really".to_string(),
        format!("MOVED {slot} 127.0.0.1:{other}"),
        format!("ASK {slot} 127.0.0.1:{other}"),
    ] {
        let script = format!("redis.call('INCR', KEYS[1]); return redis.error_reply('{fake}')");
        let err = redis::cmd("EVAL").arg(&script).arg(1).arg(&keys[0]).query::<redis::Value>(&mut c).unwrap_err();
        let kind = fake.split(' ').next().unwrap();
        assert!(
            format!("{err:?}").to_uppercase().contains(kind),
            "{fake}: the script's own error reaches the client: {err:?}"
        );
    }
    // Each script ran once: it was never sent again, nor to another node.
    let count: i64 = redis::cmd("GET").arg(&keys[0]).query(&mut c).unwrap();
    assert_eq!(count, 3);
    let elsewhere: Option<i64> =
        redis::cmd("GET").arg(&keys[0]).query(&mut cluster.node(other).connection()).unwrap_or(None);
    assert_eq!(elsewhere, None);
    // And nobody else was redirected by it.
    for _ in 0..50 {
        let value: String = redis::cmd("GET").arg(&keys[1]).query(&mut proxy.connection()).unwrap();
        assert_eq!(value, "real");
    }
}

#[test]
fn a_host_less_moved_goes_to_the_answering_nodes_host() {
    // Nodes that do not know their endpoint answer "MOVED <slot> :<port>".
    let (cluster, proxy) =
        cluster_behind_slotgate(Cluster::start_with(3, 0, &["--cluster-preferred-endpoint-type", "unknown-endpoint"]));
    let (slot, keys) = keys_in_one_slot("hostless", 1);
    let mut c = proxy.connection();
    let _: () = redis::cmd("SET").arg(&keys[0]).arg("v").query(&mut c).unwrap();
    cluster.migrate_slot(slot, cluster.other_master(slot), || {});
    let value: String = redis::cmd("GET").arg(&keys[0]).query(&mut c).unwrap();
    assert_eq!(value, "v");
}

#[test]
fn a_retried_request_never_runs_after_a_later_one() {
    let (cluster, proxy) = cluster_behind_slotgate(Cluster::start(3, 0));
    let slot = slotgate::cluster::key_slot(b"t").number();
    let mut c = proxy.connection();
    let _: () = redis::cmd("MSET").arg("{t}a").arg("old").arg("{t}b").arg("old").query(&mut c).unwrap();
    // The slot is half migrated: {t}b moved, {t}a not yet. MSET of both gets TRYAGAIN.
    let to = cluster.other_master(slot);
    let from = cluster.begin_migration(slot, to);
    let _: () = redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(to)
        .arg("{t}b")
        .arg(0)
        .arg(5000)
        .query(&mut cluster.node(from).connection())
        .unwrap();
    let mut raw = support::raw::Raw::connect(proxy.port);
    raw.send(b"*5\r\n$4\r\nMSET\r\n$4\r\n{t}a\r\n$3\r\nnew\r\n$4\r\n{t}b\r\n$3\r\nnew\r\n*2\r\n$3\r\nGET\r\n$4\r\n{t}b\r\n*2\r\n$3\r\nGET\r\n$4\r\n{t}a\r\n");
    // The migration is abandoned while slotgate would still be retrying the
    // MSET: a late retry would now succeed, after the GETs that follow it.
    std::thread::sleep(Duration::from_millis(300));
    for node in [from, to] {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("STABLE")
            .query(&mut cluster.node(node).connection())
            .unwrap();
    }
    let mset = raw.read_line();
    let (b, a) = (read_bulk(&mut raw), read_bulk(&mut raw));
    if mset == "+OK\r\n" {
        assert_eq!((b.as_str(), a.as_str()), ("new", "new"), "the MSET ran before the GETs after it");
    } else {
        assert!(mset.starts_with("-TRYAGAIN"), "{mset}");
        assert_eq!((b.as_str(), a.as_str()), ("old", "old"), "a refused MSET left both keys as they were");
    }
}

fn read_bulk(raw: &mut support::raw::Raw) -> String {
    let header = raw.read_line();
    let len: usize = header.trim_start_matches('$').trim().parse().unwrap_or_else(|_| panic!("not a bulk: {header}"));
    let data = raw.read_exact(len + 2);
    String::from_utf8_lossy(&data[..len]).into_owned()
}

#[test]
fn a_hung_node_costs_only_its_own_requests_a_timeout() {
    let mut cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds(), &["--request-timeout-ms", "500", "--retry-timeout-ms", "200"]);
    proxy.wait_routing();
    let (hung_slot, hung_keys) = keys_in_one_slot("hung", 1);
    let hung = cluster.owner(hung_slot);
    let healthy_key = (0..)
        .map(|i| format!("healthy:{i}"))
        .find(|k| cluster.owner(slotgate::cluster::key_slot(k.as_bytes()).number()) != hung)
        .unwrap();
    let mut c = proxy.connection();
    let _: () = redis::cmd("SET").arg(&hung_keys[0]).arg("v").query(&mut c).unwrap();
    cluster.node(hung).pause();
    let started = std::time::Instant::now();
    let err = redis::cmd("GET").arg(&hung_keys[0]).query::<Option<String>>(&mut c).unwrap_err();
    let waited = started.elapsed();
    assert!(err.to_string().contains("no reply within 500 ms"), "{err}");
    assert!(waited < Duration::from_secs(3), "the timeout took {waited:?}");
    // Other masters' slots answer at once meanwhile.
    let mut other = proxy.connection();
    for _ in 0..20 {
        let started = std::time::Instant::now();
        let _: () = redis::cmd("SET").arg(&healthy_key).arg("x").query(&mut other).unwrap();
        assert!(started.elapsed() < Duration::from_millis(200));
    }
    cluster.node_mut(hung).resume();
    support::wait_for("the node to answer through slotgate again", Duration::from_secs(10), || {
        redis::cmd("GET").arg(&hung_keys[0]).query::<Option<String>>(&mut c).is_ok_and(|v| v.as_deref() == Some("v"))
    });
}

#[test]
fn a_hung_node_times_out_transactions_and_blocking_commands_but_not_a_long_block() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds(), &["--request-timeout-ms", "300"]);
    proxy.wait_routing();
    // A block longer than the request timeout is no timeout.
    let mut c = proxy.client("resp2");
    let started = std::time::Instant::now();
    let popped: Option<(String, String)> = redis::cmd("BLPOP").arg("hung:list").arg(1).query(&mut c).unwrap();
    assert_eq!(popped, None);
    assert!(started.elapsed() >= Duration::from_millis(900), "BLPOP returned after {:?}", started.elapsed());

    let (slot, keys) = keys_in_one_slot("hungtx", 1);
    let node = cluster.owner(slot);
    let mut tx = proxy.client("resp2");
    let _: () = redis::cmd("MULTI").query(&mut tx).unwrap();
    let _: () = redis::cmd("SET").arg(&keys[0]).arg("v").query(&mut tx).unwrap();
    let mut blocked = proxy.client("resp2");
    cluster.node(node).pause();
    let started = std::time::Instant::now();
    let err = redis::cmd("EXEC").query::<redis::Value>(&mut tx).unwrap_err();
    assert!(err.to_string().contains("no reply within 300 ms"), "{err}");
    let err = redis::cmd("BLPOP").arg(&keys[0]).arg(1).query::<redis::Value>(&mut blocked).unwrap_err();
    assert!(err.to_string().contains("no reply within 300 ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "the timeouts took {:?}", started.elapsed());
    cluster.node(node).resume();
}
