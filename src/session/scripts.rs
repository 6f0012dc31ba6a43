//! Scripts seen through slotgate (EVAL, SCRIPT LOAD), by SHA1. A node that
//! never saw a script (it was EVALed on another master, or the node is new
//! after a failover) answers EVALSHA with NOSCRIPT; slotgate then loads the
//! script there and sends the EVALSHA again, once, on the same connection.
//! NOSCRIPT proves the script did not run, so nothing runs twice.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

/// Remember at most this many scripts: applications that EVAL a new script
/// per call (an anti-pattern) must not grow slotgate's memory without bound.
const MAX_SCRIPTS: usize = 10_000;
/// Scripts larger than this are not remembered.
const MAX_SCRIPT_LEN: usize = 1024 * 1024;

#[derive(Debug, Default)]
pub struct Scripts {
    bodies: Mutex<HashMap<[u8; 40], Bytes>>,
}

impl Scripts {
    /// Remembers `body` under its SHA1, as Redis names it. The body is
    /// copied: a slice of the request would keep its whole read buffer alive.
    pub fn remember(&self, body: &[u8]) {
        if body.len() > MAX_SCRIPT_LEN {
            return;
        }
        let mut sha = [0u8; 40];
        sha.copy_from_slice(sha1_smol::Sha1::from(body).digest().to_string().as_bytes());
        let mut bodies = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
        if !bodies.contains_key(&sha) && bodies.len() < MAX_SCRIPTS {
            bodies.insert(sha, Bytes::copy_from_slice(body));
        }
    }

    /// The script whose SHA1 is `sha` (hex, any case), if seen.
    pub fn body(&self, sha: &[u8]) -> Option<Bytes> {
        let sha: [u8; 40] = sha.to_ascii_lowercase().try_into().ok()?;
        self.bodies.lock().unwrap_or_else(PoisonError::into_inner).get(&sha).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_found_by_redis_sha1() {
        let scripts = Scripts::default();
        scripts.remember(b"return 1");
        // SCRIPT LOAD "return 1" answers this SHA.
        let sha = b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db";
        assert_eq!(scripts.body(sha).as_deref(), Some(&b"return 1"[..]));
        assert_eq!(scripts.body(&sha.to_ascii_uppercase()).as_deref(), Some(&b"return 1"[..]));
        assert_eq!(scripts.body(b"0000"), None);
    }
}
