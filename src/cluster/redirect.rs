//! Node answers that mean "not here" or "not now": MOVED, ASK, TRYAGAIN and
//! CLUSTERDOWN. A node gives them before running the command, so the command
//! may be sent again (to the new owner, or later).

use super::slot::Slot;
use super::slotmap::NodeAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// The slot now lives at `addr`, for good.
    Moved { slot: Slot, addr: NodeAddr },
    /// The slot is migrating; this one command goes to `addr`, after ASKING.
    Ask { slot: Slot, addr: NodeAddr },
    /// A multi-key command during a migration: retry shortly.
    TryAgain,
    /// The cluster cannot serve the slot right now.
    ClusterDown,
}

impl Redirect {
    /// Recognises a redirect in a reply frame (`-MOVED 3999 127.0.0.1:6381\r\n`)
    /// from the node at `answered_by`, whose host stands in for an unknown
    /// one (Redis sends `:7002` or `?:7002` when it does not know its endpoint).
    pub fn parse(reply: &[u8], answered_by: Option<&NodeAddr>) -> Option<Redirect> {
        let line = reply.strip_prefix(b"-")?;
        let line = line.strip_suffix(b"\r\n").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"MOVED ") {
            let (slot, addr) = slot_and_addr(rest, answered_by)?;
            return Some(Redirect::Moved { slot, addr });
        }
        if let Some(rest) = line.strip_prefix(b"ASK ") {
            let (slot, addr) = slot_and_addr(rest, answered_by)?;
            return Some(Redirect::Ask { slot, addr });
        }
        if line.starts_with(b"TRYAGAIN") {
            return Some(Redirect::TryAgain);
        }
        if line.starts_with(b"CLUSTERDOWN") {
            return Some(Redirect::ClusterDown);
        }
        None
    }
}

fn slot_and_addr(rest: &[u8], answered_by: Option<&NodeAddr>) -> Option<(Slot, NodeAddr)> {
    let text = std::str::from_utf8(rest).ok()?;
    let (slot, addr) = text.split_once(' ')?;
    let slot = Slot::new(slot.parse().ok()?)?;
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
    if host.is_empty() || host == "?" {
        return Some((slot, NodeAddr::from_parts(answered_by?.host(), port)));
    }
    Some((slot, NodeAddr::new(addr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_are_recognised() {
        assert_eq!(
            Redirect::parse(b"-MOVED 3999 127.0.0.1:6381\r\n", None),
            Some(Redirect::Moved { slot: Slot::new(3999).unwrap(), addr: NodeAddr::new("127.0.0.1:6381") })
        );
        assert_eq!(
            Redirect::parse(b"-ASK 1 10.0.0.1:7000\r\n", None),
            Some(Redirect::Ask { slot: Slot::new(1).unwrap(), addr: NodeAddr::new("10.0.0.1:7000") })
        );
        assert_eq!(
            Redirect::parse(b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n", None),
            Some(Redirect::TryAgain)
        );
        assert_eq!(Redirect::parse(b"-CLUSTERDOWN The cluster is down\r\n", None), Some(Redirect::ClusterDown));
    }

    #[test]
    fn other_replies_are_not_redirects() {
        for reply in [&b"+OK\r\n"[..], b"-ERR x\r\n", b"-MOVED x y\r\n", b"-MOVED 99999 a:1\r\n", b"$5\r\nMOVED\r\n"] {
            assert_eq!(Redirect::parse(reply, None), None);
        }
    }

    #[test]
    fn an_unknown_host_is_the_answering_nodes() {
        let asked = NodeAddr::new("10.0.0.5:7001");
        let want = Some(Redirect::Moved { slot: Slot::new(7).unwrap(), addr: NodeAddr::new("10.0.0.5:7002") });
        assert_eq!(Redirect::parse(b"-MOVED 7 :7002\r\n", Some(&asked)), want);
        assert_eq!(Redirect::parse(b"-MOVED 7 ?:7002\r\n", Some(&asked)), want);
        assert_eq!(Redirect::parse(b"-MOVED 7 :7002\r\n", None), None);
    }
}
