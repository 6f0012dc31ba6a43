//! Hash slot cost: slotgate's `key_slot` (crc crate, 16-entry slice table)
//! against the byte-at-a-time `crc16` crate, on a short key, a 64-byte key
//! and a hash-tagged key. Read the ratio between the two lines of a group.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use slotgate::cluster::key_slot;

fn crc16_crate(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(key) & 0x3FFF
}

fn slot(c: &mut Criterion) {
    let long = "user:session:0123456789abcdef0123456789abcdef0123456789abcd";
    for (name, key) in [("short key", "key:000000012345"), ("64-byte key", long), ("hash tag", "{user:1001}:profile")] {
        let mut group = c.benchmark_group(format!("slot of {name}"));
        group.bench_function("slotgate key_slot", |b| b.iter(|| key_slot(black_box(key.as_bytes()))));
        group.bench_function("crc16 crate", |b| b.iter(|| crc16_crate(black_box(key.as_bytes()))));
        group.finish();
    }
}

criterion_group!(benches, slot);
criterion_main!(benches);
