//! Asking one node what the cluster looks like, over a short-lived
//! connection of the topology task's own: `CLUSTER NODES`, which every
//! cluster version answers and which, unlike `CLUSTER SHARDS`, says each
//! master's config epoch (what [`super::merge`] needs to tell a stale view
//! from a current one). Replies are framed by our bounded scanner before
//! redis-protocol decodes them, so a hostile node cannot make the decoder
//! recurse without limit or buffer without end.

use std::time::Duration;

use bytes::BytesMut;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use crate::cluster::slotmap::NodeAddr;
use crate::cluster::{NodeLogin, SLOT_COUNT};
use crate::resp::{ReplyScanner, Request};
use crate::tls::{NodeStream, NodeTls};

/// Topology replies of a large cluster stay far below this.
const MAX_REPLY: usize = 64 * 1024 * 1024;

/// The cluster as one node sees it.
#[derive(Debug)]
pub(super) struct View {
    pub nodes: Vec<ClusterNode>,
    pub redis_version: Option<String>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClusterNode {
    pub id: String,
    pub addr: NodeAddr,
    /// For a replica, its master's id.
    pub master_id: Option<String>,
    pub is_master: bool,
    /// Flagged `fail` or `fail?` by the node asked.
    pub failing: bool,
    pub epoch: u64,
    /// Slot ranges served, both bounds included (masters only).
    pub slots: Vec<(u16, u16)>,
}

/// Asks `addr` for its view of the cluster (and, if `want_version`, its Redis
/// version), over TLS when `tls` is given, logging in first when the nodes
/// want a password.
pub(super) async fn ask(
    addr: &NodeAddr,
    limit: Duration,
    login: Option<&NodeLogin>,
    tls: Option<&NodeTls>,
    want_version: bool,
) -> Result<View, String> {
    let stream = NodeStream::connect(addr.as_str(), tls, limit).await?;
    let mut conn = Conn { stream, buf: BytesMut::with_capacity(16 * 1024), limit };
    if let Some(login) = login {
        if let OwnedFrame::Error(e) = conn.send(&login.auth(), "AUTH").await? {
            return Err(format!("AUTH refused: {e}"));
        }
    }
    let nodes = match conn.call(&["CLUSTER", "NODES"]).await? {
        OwnedFrame::BulkString(text) => parse_nodes(&String::from_utf8_lossy(&text), addr)?,
        OwnedFrame::Error(e) => return Err(format!("CLUSTER NODES: {e}")),
        _ => return Err("CLUSTER NODES: unexpected reply".into()),
    };
    if !nodes.iter().any(|n| n.is_master && !n.slots.is_empty()) {
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
    Ok(View { nodes, redis_version })
}

struct Conn {
    stream: NodeStream,
    buf: BytesMut,
    limit: Duration,
}

impl Conn {
    async fn call(&mut self, args: &[&str]) -> Result<OwnedFrame, String> {
        self.send(&Request::from_args(args), &args.join(" ")).await
    }

    /// Sends `request` (called `name` in errors) and reads its reply.
    async fn send(&mut self, request: &Request, name: &str) -> Result<OwnedFrame, String> {
        timeout(self.limit, self.round_trip(request.frame())).await.map_err(|_| format!("{name} timed out"))?
    }

    async fn round_trip(&mut self, request: &[u8]) -> Result<OwnedFrame, String> {
        self.stream.write_all(request).await.map_err(|e| e.to_string())?;
        // TLS holds what was written until flushed.
        self.stream.flush().await.map_err(|e| e.to_string())?;
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

/// `CLUSTER NODES`: a line per node,
/// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`.
/// Nodes without a usable address (`noaddr`, `handshake`) are left out; a
/// node that does not know its own IP yet is reached at the host we asked.
fn parse_nodes(text: &str, asked: &NodeAddr) -> Result<Vec<ClusterNode>, String> {
    let mut nodes = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let [id, address, flags, master, _ping, _pong, epoch, _link, slots @ ..] = fields.as_slice() else {
            return Err(format!("malformed CLUSTER NODES line: {}", line.chars().take(200).collect::<String>()));
        };
        let flags: Vec<&str> = flags.split(',').collect();
        if flags.iter().any(|f| matches!(*f, "noaddr" | "handshake")) {
            continue;
        }
        let Some(addr) = node_addr(address, asked) else { continue };
        let is_master = flags.contains(&"master");
        let mut ranges = Vec::new();
        // Migration markers (`[slot->-id]`, `[slot-<-id]`) are not ownership.
        for range in slots.iter().filter(|s| !s.starts_with('[')) {
            let (first, last) = range.split_once('-').unwrap_or((range, range));
            let (first, last) = (slot_bound(first)?, slot_bound(last)?);
            if first > last {
                return Err(format!("slot range {range} runs backwards"));
            }
            ranges.push((first, last));
        }
        nodes.push(ClusterNode {
            id: (*id).to_string(),
            addr,
            master_id: Some(*master).filter(|m| *m != "-").map(str::to_string),
            is_master,
            failing: flags.iter().any(|f| f.starts_with("fail")),
            epoch: epoch.parse().map_err(|_| format!("bad config epoch {epoch}"))?,
            slots: if is_master { ranges } else { Vec::new() },
        });
    }
    Ok(nodes)
}

/// `ip:port@cport[,hostname]` as an address to connect to: the hostname
/// when the node announces one (`cluster-announce-hostname`, which goes
/// with `cluster-preferred-endpoint-type hostname`: MOVED names it too),
/// else the IP, else the host we asked.
fn node_addr(field: &str, asked: &NodeAddr) -> Option<NodeAddr> {
    let (endpoint, hostname) = match field.split_once(',') {
        Some((endpoint, hostname)) => (endpoint, Some(hostname).filter(|h| !h.is_empty())),
        None => (field, None),
    };
    let endpoint = endpoint.split('@').next()?;
    let (ip, port) = endpoint.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    let host = hostname.unwrap_or(if ip.is_empty() || ip == "?" { asked.host() } else { ip });
    Some(NodeAddr::from_parts(host, port))
}

fn slot_bound(text: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .ok()
        .filter(|n| usize::from(*n) < SLOT_COUNT)
        .ok_or_else(|| format!("slot {} out of range", text.chars().take(20).collect::<String>()))
}

/// One `field:value` line of an INFO reply.
fn info_field(info: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(info).ok()?;
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')).map(|v| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
07c3 10.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-8000 [8001->-0a2b]
0a2b :7002@17002 master - 0 1 2 connected 8001-16383
4f1c 10.0.0.4:7004@17004,node-4 slave 07c3 0 1 1 connected
5d2e 10.0.0.5:7005@17005 slave,fail 0a2b 0 1 2 disconnected
9e9e 10.0.0.9:7009@17009 handshake - 0 0 0 connected
";

    #[test]
    fn nodes_reply_becomes_a_view() {
        let nodes = parse_nodes(NODES, &NodeAddr::new("seed:7002")).unwrap();
        assert_eq!(nodes.len(), 4, "the handshake node is left out");
        assert_eq!(nodes[0].addr.as_str(), "10.0.0.1:7001");
        assert_eq!(nodes[0].slots, vec![(0, 8000)], "a migration marker is not ownership");
        assert_eq!((nodes[0].epoch, nodes[1].epoch), (1, 2));
        assert_eq!(nodes[1].addr.as_str(), "seed:7002", "an unknown IP is the host asked");
        assert_eq!(nodes[2].addr.as_str(), "node-4:7004", "an announced hostname is preferred");
        assert_eq!(nodes[2].master_id.as_deref(), Some("07c3"));
        assert!(!nodes[2].is_master && !nodes[2].failing);
        assert!(nodes[3].failing);
    }

    #[test]
    fn hostile_lines_are_errors_not_panics() {
        let asked = NodeAddr::new("seed:1");
        assert!(parse_nodes("short line", &asked).is_err());
        assert!(parse_nodes("a b:1@2 master - 0 0 x connected", &asked).is_err());
        assert!(parse_nodes("a b:1@2 master - 0 0 1 connected 0-99999", &asked).is_err());
        assert!(parse_nodes("a b:1@2 master - 0 0 1 connected 500-100", &asked).is_err());
        assert!(parse_nodes("a b:0@2 master - 0 0 1 connected 0-5", &asked).unwrap().is_empty());
    }

    #[test]
    fn info_fields_are_found() {
        assert_eq!(
            info_field(b"# Server\r\nredis_version:7.0.15\r\nx:1\r\n", "redis_version").as_deref(),
            Some("7.0.15")
        );
    }
}
