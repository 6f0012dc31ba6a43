//! WAIT through slotgate: the client's writes went over node connections
//! it shares with others, so the node's own WAIT (counted from a
//! connection's last write) would not be about them. slotgate instead
//! reads the master's replication offset once the client's writes are
//! answered, then asks `INFO replication` until enough replicas report
//! that offset, or the timeout passes. Replicas report every second, so a
//! WAIT through slotgate may take up to about a second longer than on the
//! node itself; it never answers before the writes are replicated.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::pending::{Entry, Target, Wait};
use super::{Resend, Session};
use crate::error::ClientError;
use crate::resp::{Request, parse_i64, value, write};

/// How often the replicas' offsets are asked for.
const POLL: Duration = Duration::from_millis(50);

impl Session {
    /// WAIT numreplicas timeout, after everything in flight is answered.
    pub(super) fn wait(&mut self, request: Request) {
        let Some(replicas) = request.arg(1).and_then(parse_i64) else {
            return self.reply_error(ClientError::NotAnInteger);
        };
        let timeout = match request.arg(2).and_then(parse_i64) {
            None => return self.reply_error(ClientError::NotAnInteger),
            Some(ms) if ms < 0 => return self.reply_error(ClientError::NegativeTimeout),
            Some(ms) => ms,
        };
        if self.in_flight > 0 {
            self.parked = Some(request);
            return;
        }
        let Some(slot) = self.last_write.or_else(|| self.routes.first_slots().first().copied()) else {
            return self.reply_error(ClientError::NoTopology(self.ctx.pool.topology().last_error()));
        };
        let deadline = (timeout > 0).then(|| Instant::now() + Duration::from_millis(timeout as u64));
        let mut entry = Entry::new(Target::Slot(slot), false);
        entry.wait = Some(Box::new(Wait { replicas, deadline, offset: None }));
        let seq = self.pending.push(entry);
        let routes = self.routes.clone();
        self.send(seq, Request::from_args(&["INFO", "replication"]).into_frame(), Target::Slot(slot), &routes);
    }

    /// The master's `INFO replication` for the WAIT of entry `seq`.
    pub(super) fn wait_progress(&mut self, seq: u64, frame: Bytes, reply: Bytes) {
        let Some(entry) = self.pending.get_mut(seq) else { return };
        let Some(wait) = entry.wait.as_mut() else { return };
        let Some(text) = value::text(&reply).and_then(|t| std::str::from_utf8(t).ok()) else {
            // An error (the node is loading, say): the client gets it.
            entry.reply = Some(reply);
            return;
        };
        let (master, offsets) = replication(text);
        let target = *wait.offset.get_or_insert(master);
        let acked = offsets.iter().filter(|&&offset| offset >= target).count() as i64;
        let now = Instant::now();
        if acked >= wait.replicas || wait.deadline.is_some_and(|deadline| now >= deadline) {
            let mut out = bytes::BytesMut::new();
            write::integer(&mut out, acked);
            entry.reply = Some(out.freeze());
            return;
        }
        // Asked again shortly, in request order with any other retry.
        entry.retrying = true;
        let at = wait.deadline.map_or(now + POLL, |deadline| deadline.min(now + POLL));
        let place = self.retries.partition_point(|resend| resend.seq < seq);
        self.retries.insert(place, Resend { at, seq, frame });
    }
}

/// `master_repl_offset`, and the offsets of the replicas that are online.
fn replication(text: &str) -> (u64, Vec<u64>) {
    let mut master = 0;
    let mut offsets = Vec::new();
    for line in text.lines() {
        if let Some(offset) = line.strip_prefix("master_repl_offset:") {
            master = offset.trim().parse().unwrap_or(0);
        } else if line.starts_with("slave") && line.contains("state=online") {
            let offset = line.split(',').find_map(|kv| kv.strip_prefix("offset=")?.parse::<u64>().ok());
            offsets.extend(offset);
        }
    }
    (master, offsets)
}

#[cfg(test)]
mod tests {
    use super::replication;

    #[test]
    fn replica_offsets_are_read_from_info() {
        let text = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
                    slave0:ip=127.0.0.1,port=7004,state=online,offset=120,lag=0\r\n\
                    slave1:ip=127.0.0.1,port=7005,state=wait_bgsave,offset=0,lag=0\r\n\
                    master_repl_offset:130\r\n";
        assert_eq!(replication(text), (130, vec![120]));
    }
}
