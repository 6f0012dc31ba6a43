//! Failed logins per client address, across workers: an address that gets
//! the password wrong too often in a short time is refused any further
//! attempt for the rest of that time, whatever it tries, so that a password
//! cannot be guessed at network speed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a window lasts, from an address's first failure.
const WINDOW: Duration = Duration::from_secs(10);
/// Addresses tracked at once: past this, new ones go untracked rather than
/// let an attacker with many addresses grow the map.
const MAX_ADDRESSES: usize = 65_536;

/// `max_failures` (`max_auth_failures`) is the failures an address may
/// have in one window; 0: no limit. It is passed in, since a reload may
/// change it.
#[derive(Debug, Default)]
pub struct FailedLogins {
    by_address: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailedLogins {
    /// How long `ip` must still wait before it may try again, if at all.
    pub fn wait(&self, ip: IpAddr, now: Instant, max_failures: u32) -> Option<Duration> {
        if max_failures == 0 {
            return None;
        }
        let by_address = self.lock();
        let &(since, failures) = by_address.get(&ip)?;
        let ends = since + WINDOW;
        (failures >= max_failures && now < ends).then(|| ends - now)
    }

    /// `ip` got the password wrong.
    pub fn failed(&self, ip: IpAddr, now: Instant, max_failures: u32) {
        if max_failures == 0 {
            return;
        }
        let mut by_address = self.lock();
        if by_address.len() >= MAX_ADDRESSES && !by_address.contains_key(&ip) {
            by_address.retain(|_, (since, _)| now < *since + WINDOW);
            if by_address.len() >= MAX_ADDRESSES {
                return;
            }
        }
        let entry = by_address.entry(ip).or_insert((now, 0));
        if now >= entry.0 + WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, u32)>> {
        self.by_address.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_held_off_after_too_many_failures_until_its_window_ends() {
        let logins = FailedLogins::default();
        let (ip, other): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let start = Instant::now();
        for n in 0..10 {
            assert_eq!(logins.wait(ip, start, 10), None, "after {n} failures");
            logins.failed(ip, start, 10);
        }
        let later = start + Duration::from_secs(3);
        assert_eq!(logins.wait(ip, later, 10), Some(WINDOW - Duration::from_secs(3)));
        assert_eq!(logins.wait(other, later, 10), None, "other addresses are not affected");
        assert_eq!(logins.wait(ip, start + WINDOW, 10), None, "a new window");
        logins.failed(ip, start + WINDOW, 10);
        assert_eq!(logins.wait(ip, start + WINDOW, 10), None, "counted afresh");
        let unlimited = FailedLogins::default();
        (0..100).for_each(|_| unlimited.failed(ip, start, 0));
        assert_eq!(unlimited.wait(ip, start, 0), None);
    }
}
