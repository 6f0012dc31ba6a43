//! Asking one node what the cluster looks like: `CLUSTER SHARDS` (Redis 7),
//! or `CLUSTER SLOTS` where SHARDS is unknown, over a short-lived connection
//! of the topology task's own. Replies are framed by our bounded scanner
//! before redis-protocol decodes them, so a hostile node cannot make the
//! decoder recurse without limit or buffer without end.

use std::time::Duration;

use bytes::BytesMut;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::cluster::slotmap::{NodeAddr, Shard, SlotMap};
use crate::resp::{ReplyScanner, Request};

/// Topology replies of a large cluster stay far below this.
const MAX_REPLY: usize = 64 * 1024 * 1024;

/// What one node told us.
#[derive(Debug)]
pub(super) struct Found {
    pub map: SlotMap,
    pub redis_version: Option<String>,
}

/// Asks `addr` for the slot layout (and, if `want_version`, its Redis version).
pub(super) async fn ask(addr: &NodeAddr, limit: Duration, want_version: bool) -> Result<Found, String> {
    let stream = timeout(limit, TcpStream::connect(addr.as_str()))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let mut conn = Conn { stream, buf: BytesMut::with_capacity(16 * 1024), limit };
    let map = match conn.call(&["CLUSTER", "SHARDS"]).await? {
        OwnedFrame::Error(e) if e.contains("unknown subcommand") || e.contains("Unknown subcommand") => {
            parse_slots(&conn.call(&["CLUSTER", "SLOTS"]).await?, addr)?
        }
        reply => parse_shards(&reply, addr)?,
    };
    if map.served_slots() == 0 {
        return Err("the node serves no slots (not part of a cluster yet?)".into());
    }
    let redis_version = if want_version {
        match conn.call(&["INFO", "server"]).await? {
            OwnedFrame::BulkString(info) => info_field(&info, "redis_version"),
            _ => None,
        }
    } else {
        None
    };
    Ok(Found { map, redis_version })
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    limit: Duration,
}

impl Conn {
    async fn call(&mut self, args: &[&str]) -> Result<OwnedFrame, String> {
        let request = Request::from_args(args);
        timeout(self.limit, self.round_trip(request.frame()))
            .await
            .map_err(|_| format!("{} timed out", args.join(" ")))?
    }

    async fn round_trip(&mut self, request: &[u8]) -> Result<OwnedFrame, String> {
        self.stream.write_all(request).await.map_err(|e| e.to_string())?;
        let mut scanner = ReplyScanner::default();
        loop {
            if let Some(frame) = scanner.scan(&self.buf).map_err(|e| e.to_string())? {
                let bytes = self.buf.split_to(frame.len);
                return match decode(&bytes) {
                    Ok(Some((reply, _))) => Ok(reply),
                    Ok(None) => Err("incomplete reply".into()),
                    Err(e) => Err(format!("undecodable reply: {e:?}")),
                };
            }
            if self.buf.len() > MAX_REPLY {
                return Err("reply too large".into());
            }
            self.buf.reserve(16 * 1024);
            if self.stream.read_buf(&mut self.buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("connection closed".into());
            }
        }
    }
}

/// `CLUSTER SHARDS`: per shard, `slots` (pairs of bounds) and `nodes` (field
/// lists with ip, endpoint, port, role, health).
fn parse_shards(reply: &OwnedFrame, asked: &NodeAddr) -> Result<SlotMap, String> {
    let OwnedFrame::Array(shards) = reply else {
        return Err(unexpected("CLUSTER SHARDS", reply));
    };
    let mut ranges = Vec::new();
    for shard in shards {
        let fields = pairs(shard).ok_or("malformed shard")?;
        let slots = field(&fields, "slots").and_then(integers).ok_or("shard without slots")?;
        let nodes = match field(&fields, "nodes") {
            Some(OwnedFrame::Array(nodes)) => nodes,
            _ => return Err("shard without nodes".into()),
        };
        let mut master = None;
        let mut replicas = Vec::new();
        for node in nodes {
            let node = pairs(node).ok_or("malformed node")?;
            let Some(addr) = shard_node_addr(&node, asked) else { continue };
            let healthy = field(&node, "health").and_then(text).is_none_or(|h| h == "online");
            match field(&node, "role").and_then(text) {
                Some("master") if master.is_none() => master = Some(addr),
                Some("replica") if healthy => replicas.push(addr),
                _ => {}
            }
        }
        // A shard with slots but no master (failover in progress) serves nothing yet.
        let Some(master) = master else { continue };
        let shard = Shard { master, replicas };
        for bounds in slots.chunks_exact(2) {
            let (first, last) = (slot_bound(bounds[0])?, slot_bound(bounds[1])?);
            ranges.push((first, last, shard.clone()));
        }
    }
    Ok(SlotMap::from_ranges(ranges))
}

fn shard_node_addr(node: &[(&str, &OwnedFrame)], asked: &NodeAddr) -> Option<NodeAddr> {
    let port = field(node, "port").and_then(integer)?;
    let port = u16::try_from(port).ok().filter(|p| *p > 0)?;
    let host = [field(node, "endpoint"), field(node, "ip")]
        .into_iter()
        .flatten()
        .filter_map(text)
        .find(|h| !h.is_empty() && *h != "?")
        .unwrap_or(asked.host());
    Some(NodeAddr::from_parts(host, port))
}

/// `CLUSTER SLOTS`: `[first, last, [ip, port, id, ...], replicas...]` per range.
fn parse_slots(reply: &OwnedFrame, asked: &NodeAddr) -> Result<SlotMap, String> {
    let OwnedFrame::Array(ranges_in) = reply else {
        return Err(unexpected("CLUSTER SLOTS", reply));
    };
    let mut ranges = Vec::new();
    for range in ranges_in {
        let OwnedFrame::Array(items) = range else { return Err("malformed slot range".into()) };
        let [first, last, master, replicas @ ..] = items.as_slice() else {
            return Err("short slot range".into());
        };
        let first = integer(first).ok_or("bad slot")?;
        let last = integer(last).ok_or("bad slot")?;
        let master = slots_node_addr(master, asked).ok_or("bad master entry")?;
        let replicas = replicas.iter().filter_map(|r| slots_node_addr(r, asked)).collect();
        ranges.push((slot_bound(first)?, slot_bound(last)?, Shard { master, replicas }));
    }
    Ok(SlotMap::from_ranges(ranges))
}

fn slots_node_addr(node: &OwnedFrame, asked: &NodeAddr) -> Option<NodeAddr> {
    let OwnedFrame::Array(items) = node else { return None };
    let host = items.first().and_then(text).filter(|h| !h.is_empty() && *h != "?").unwrap_or(asked.host());
    let port = u16::try_from(items.get(1).and_then(integer)?).ok()?;
    Some(NodeAddr::from_parts(host, port))
}

fn slot_bound(n: i64) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|n| usize::from(*n) < crate::cluster::SLOT_COUNT)
        .ok_or(format!("slot {n} out of range"))
}

/// A flat `[name, value, name, value, ...]` array as pairs.
fn pairs(frame: &OwnedFrame) -> Option<Vec<(&str, &OwnedFrame)>> {
    let OwnedFrame::Array(items) = frame else { return None };
    items.chunks_exact(2).map(|kv| Some((text(&kv[0])?, &kv[1]))).collect()
}

fn field<'a>(fields: &[(&str, &'a OwnedFrame)], name: &str) -> Option<&'a OwnedFrame> {
    fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

fn text(frame: &OwnedFrame) -> Option<&str> {
    match frame {
        OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

fn integer(frame: &OwnedFrame) -> Option<i64> {
    match frame {
        OwnedFrame::Integer(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

fn integers(frame: &OwnedFrame) -> Option<Vec<i64>> {
    let OwnedFrame::Array(items) = frame else { return None };
    items.iter().map(integer).collect()
}

fn unexpected(command: &str, reply: &OwnedFrame) -> String {
    match reply {
        OwnedFrame::Error(e) => format!("{command}: {e}"),
        _ => format!("{command}: unexpected reply"),
    }
}

/// One `field:value` line of an INFO reply.
fn info_field(info: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(info).ok()?;
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')).map(|v| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> OwnedFrame {
        OwnedFrame::BulkString(s.as_bytes().to_vec())
    }

    fn node(ip: &str, endpoint: &str, port: i64, role: &str, health: &str) -> OwnedFrame {
        OwnedFrame::Array(vec![
            bulk("id"),
            bulk("abc"),
            bulk("port"),
            OwnedFrame::Integer(port),
            bulk("ip"),
            bulk(ip),
            bulk("endpoint"),
            bulk(endpoint),
            bulk("role"),
            bulk(role),
            bulk("health"),
            bulk(health),
        ])
    }

    #[test]
    fn shards_reply_becomes_a_map() {
        let shard = |slots: Vec<i64>, nodes: Vec<OwnedFrame>| {
            OwnedFrame::Array(vec![
                bulk("slots"),
                OwnedFrame::Array(slots.into_iter().map(OwnedFrame::Integer).collect()),
                bulk("nodes"),
                OwnedFrame::Array(nodes),
            ])
        };
        let reply = OwnedFrame::Array(vec![
            shard(
                vec![0, 8000],
                vec![
                    node("10.0.0.1", "10.0.0.1", 7001, "master", "online"),
                    node("10.0.0.4", "?", 7004, "replica", "online"),
                ],
            ),
            shard(vec![8001, 16383], vec![node("10.0.0.2", "", 7002, "master", "online")]),
            shard(vec![], vec![node("10.0.0.3", "10.0.0.3", 7003, "master", "online")]),
        ]);
        let map = parse_shards(&reply, &NodeAddr::new("10.0.0.9:7009")).unwrap();
        assert_eq!(map.served_slots(), 16384);
        assert_eq!(map.shards()[0].master.as_str(), "10.0.0.1:7001");
        assert_eq!(map.shards()[0].replicas, vec![NodeAddr::new("10.0.0.4:7004")]);
        assert_eq!(map.shards()[1].master.as_str(), "10.0.0.2:7002");
    }

    #[test]
    fn slots_reply_becomes_a_map() {
        let entry = |ip: &str, port: i64| OwnedFrame::Array(vec![bulk(ip), OwnedFrame::Integer(port), bulk("id")]);
        let reply = OwnedFrame::Array(vec![
            OwnedFrame::Array(vec![
                OwnedFrame::Integer(0),
                OwnedFrame::Integer(100),
                entry("", 7001),
                entry("h", 7004),
            ]),
            OwnedFrame::Array(vec![OwnedFrame::Integer(101), OwnedFrame::Integer(16383), entry("h2", 7002)]),
        ]);
        let map = parse_slots(&reply, &NodeAddr::new("seed:7001")).unwrap();
        assert_eq!(map.shards()[0].master.as_str(), "seed:7001");
        assert_eq!(map.shards()[0].replicas[0].as_str(), "h:7004");
        assert_eq!(map.served_slots(), 16384);
    }

    #[test]
    fn info_fields_are_found() {
        assert_eq!(
            info_field(b"# Server\r\nredis_version:7.0.15\r\nx:1\r\n", "redis_version").as_deref(),
            Some("7.0.15")
        );
    }
}
