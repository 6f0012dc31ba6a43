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

/// Keys `{tag}:0..count` all in one slot.
fn keys_in_one_slot(tag: &str, count: usize) -> (u16, Vec<String>) {
    let slot = slotgate::cluster::key_slot(tag.as_bytes()).number();
    (slot, (0..count).map(|i| format!("{{{tag}}}:{i}")).collect())
}

#[test]
fn a_slot_migrated_key_by_key_under_traffic_causes_no_client_error() {
    let cluster = Cluster::start(3, 1);
    // A long refresh interval: slotgate must learn the move from redirects alone.
    let proxy = Proxy::start(&cluster.seeds(), &["--topology-refresh-ms", "60000"]);
    proxy.wait_routing();
    let (slot, keys) = keys_in_one_slot("mig", 300);
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
                ops.fetch_add(4, Ordering::Relaxed);
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
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds(), &["--topology-refresh-ms", "60000"]);
    proxy.wait_routing();
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

/// `cmdstat_cluster|shards` calls, summed over the masters.
fn topology_queries(cluster: &Cluster) -> u64 {
    cluster
        .masters()
        .into_iter()
        .map(|port| {
            let info: String =
                redis::cmd("INFO").arg("commandstats").query(&mut cluster.node(port).connection()).unwrap();
            info.lines()
                .find(|l| l.starts_with("cmdstat_cluster|shards:"))
                .and_then(|l| l.split("calls=").nth(1)?.split(',').next()?.parse().ok())
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn a_burst_of_moved_answers_costs_one_topology_refresh() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds(), &["--topology-refresh-ms", "60000"]);
    proxy.wait_routing();
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
    let queries = topology_queries(&cluster);
    assert!((1..=4).contains(&queries), "{queries} topology queries for one burst of MOVED answers");
}
