//! Request parsing cost: slotgate's zero-copy parser against redis-protocol's
//! decoder (the reference it is checked against), on a pipeline of 16 GETs
//! and on one 10-key MSET. Compare the two lines of each group: the ratio is
//! what matters on this noisy machine, not the absolute time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use slotgate::resp::{Limits, Request, RequestParser};

fn pipeline(requests: &[Vec<&str>]) -> Vec<u8> {
    requests.iter().flat_map(|args| Request::from_args(args).frame().to_vec()).collect()
}

fn bench(c: &mut Criterion, name: &str, input: &[u8], count: u64) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(count));
    group.bench_function("slotgate", |b| {
        let mut parser = RequestParser::new(Limits::default());
        b.iter(|| {
            let mut buf = BytesMut::from(input);
            let mut n = 0;
            while let Some(req) = parser.parse(&mut buf).unwrap() {
                n += req.argc();
            }
            n
        });
    });
    group.bench_function("redis-protocol", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(input);
            let mut n = 0;
            while let Some((frame, _, _)) = redis_protocol::resp2::decode::decode_bytes_mut(&mut buf).unwrap() {
                if let redis_protocol::resp2::types::BytesFrame::Array(items) = frame {
                    n += items.len();
                }
            }
            n
        });
    });
    group.finish();
}

fn parser(c: &mut Criterion) {
    let gets: Vec<Vec<&str>> = (0..16).map(|_| vec!["GET", "key:000000012345"]).collect();
    bench(c, "parse 16 GETs", &pipeline(&gets), 16);
    let mset = vec![vec![
        "MSET", "k:1", "v1", "k:2", "v2", "k:3", "v3", "k:4", "v4", "k:5", "v5", "k:6", "v6", "k:7", "v7", "k:8", "v8",
        "k:9", "v9", "k:10", "v10",
    ]];
    bench(c, "parse MSET of 10 keys", &pipeline(&mset), 1);
}

criterion_group!(benches, parser);
criterion_main!(benches);
