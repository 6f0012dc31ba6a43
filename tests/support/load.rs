//! Background traffic through slotgate for the fault tests, and what it saw.
//!
//! Writers INCR counters spread over every slot range; readers GET values
//! that never change, and MGET them across slots (split by slotgate, each
//! master's parts sent to it as one run). Every request's outcome is logged with when it was
//! sent and when it was answered, and each writer counts the INCRs it sent
//! per counter, so a test can tell which requests failed and when, whether
//! the answers were right, and whether any write ran twice (a counter above
//! the INCRs sent for it) or an acknowledged one was lost (below the acked).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::Connection;

/// Counters the writers increment: enough for every master of a test cluster
/// to own several.
const COUNTERS: usize = 96;
/// Keys the readers read, set once before the traffic starts.
const FIXED: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Incr,
    Get,
    /// An MGET of the fixed keys of one [`mget_group`].
    Mget,
}

/// Fixed keys an MGET reads together: `group`, `group + 8`, ... (spread
/// over the masters: 4 slots, on every master of a 3-master cluster most
/// of the time).
pub fn mget_group(group: usize) -> impl Iterator<Item = usize> {
    (group % 8..FIXED).step_by(8)
}

/// What one request got.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub op: Op,
    /// The counter or fixed key's index, or the MGET's group.
    pub key: usize,
    pub sent: Instant,
    pub done: Instant,
    /// The error the client saw, or a wrong value read.
    pub error: Option<String>,
}

/// Traffic running against slotgate until [`Load::stop`].
pub struct Load {
    pub counters: Vec<String>,
    pub fixed: Vec<String>,
    url: String,
    stop: Arc<AtomicBool>,
    writers: Vec<JoinHandle<(Vec<Outcome>, Vec<u64>)>>,
    readers: Vec<JoinHandle<(Vec<Outcome>, Vec<u64>)>>,
    /// `redis-benchmark` pressing on slotgate meanwhile, when
    /// `SLOTGATE_CHAOS_BENCH` is set (scripts/chaos.sh).
    benchmark: Option<Child>,
}

impl Load {
    /// Starts `writers` + `readers` threads, each with its own connection to
    /// slotgate at `url`, against a fresh cluster (counters start at 0).
    /// The cluster may still be down: readers set the fixed keys first, as
    /// soon as slotgate takes writes.
    pub fn start(url: &str, writers: usize, readers: usize) -> Load {
        let counters: Vec<String> = (0..COUNTERS).map(|i| format!("load:counter:{i}")).collect();
        let fixed: Vec<String> = (0..FIXED).map(|i| format!("load:fixed:{i}")).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let spawn = |worker: usize, op: Op| {
            let (stop, url, counters, fixed) = (stop.clone(), url.to_string(), counters.clone(), fixed.clone());
            std::thread::spawn(move || run(worker, op, &url, &counters, &fixed, &stop))
        };
        let writer_handles = (0..writers).map(|w| spawn(w, Op::Incr)).collect();
        let reader_handles = (0..readers).map(|r| spawn(r, Op::Get)).collect();
        let benchmark = std::env::var_os("SLOTGATE_CHAOS_BENCH").map(|_| benchmark(url));
        Load {
            counters,
            fixed,
            url: url.to_string(),
            stop,
            writers: writer_handles,
            readers: reader_handles,
            benchmark,
        }
    }

    /// Stops the traffic and reads every counter's final value, waiting (up
    /// to `settle`) for slotgate to answer again if the cluster is still
    /// recovering.
    pub fn stop(mut self, settle: Duration) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(mut benchmark) = self.benchmark.take() {
            let _ = benchmark.kill();
            let _ = benchmark.wait();
        }
        let mut outcomes = Vec::new();
        let mut sent = vec![0u64; self.counters.len()];
        let threads = std::mem::take(&mut self.writers).into_iter().chain(std::mem::take(&mut self.readers));
        for handle in threads {
            let (seen, counts) = handle.join().expect("load thread");
            outcomes.extend(seen);
            for (total, n) in sent.iter_mut().zip(counts) {
                *total += n;
            }
        }
        outcomes.sort_by_key(|o| o.sent);
        let mut finals = None;
        let started = Instant::now();
        while finals.is_none() {
            let read = redis::Client::open(self.url.as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
                .and_then(|mut c| redis::cmd("MGET").arg(&self.counters).query::<Vec<Option<u64>>>(&mut c));
            match read {
                Ok(values) => finals = Some(values.into_iter().map(Option::unwrap_or_default).collect()),
                Err(e) => {
                    assert!(started.elapsed() < settle, "counters unreadable through slotgate: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        Report { outcomes, sent, finals: finals.unwrap_or_default() }
    }
}

/// SET and GET over 100,000 keys from 20 pipelining clients, for ever.
fn benchmark(url: &str) -> Child {
    let port = url.trim_end_matches('/').rsplit(':').next().expect("url with a port");
    Command::new("redis-benchmark")
        .args(["-p", port, "-t", "set,get", "-c", "20", "-P", "8", "-r", "100000", "-n", "100000000", "-q"])
        .arg("-l")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-benchmark must be installed (apt-get install -y redis-tools)")
}

impl Drop for Load {
    /// A test that fails midway leaves no traffic behind.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(mut benchmark) = self.benchmark.take() {
            let _ = benchmark.kill();
            let _ = benchmark.wait();
        }
    }
}

fn value(i: usize) -> String {
    format!("fixed-value-{i}")
}

fn open(url: &str) -> Connection {
    let c =
        redis::Client::open(url).expect("url").get_connection_with_timeout(Duration::from_secs(5)).expect("connect");
    // Longer than any retry window slotgate may spend on one request.
    c.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    c
}

/// One load thread: returns what it saw and, for a writer, the INCRs it
/// sent per counter (sent means written to the socket, answered or not).
fn run(
    worker: usize,
    role: Op,
    url: &str,
    counters: &[String],
    fixed: &[String],
    stop: &AtomicBool,
) -> (Vec<Outcome>, Vec<u64>) {
    let mut outcomes = Vec::new();
    let mut sent = vec![0u64; counters.len()];
    let mut c = open(url);
    let mut i = worker * 7;
    let mut fixed_set = role == Op::Incr;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let started = Instant::now();
        // A reader's every other request is an MGET.
        let op = if role == Op::Get && i % 2 == 0 { Op::Mget } else { role };
        let (key, error, broken) = match op {
            Op::Get | Op::Mget if !fixed_set => {
                let mut set = redis::pipe();
                for (n, key) in fixed.iter().enumerate() {
                    set.cmd("SET").arg(key).arg(value(n)).ignore();
                }
                match set.query::<()>(&mut c) {
                    Ok(()) => {
                        fixed_set = true;
                        continue;
                    }
                    Err(e) => (0, Some(format!("setting the fixed keys: {e}")), e.is_io_error() || e.is_timeout()),
                }
            }
            Op::Incr => {
                let key = i % counters.len();
                sent[key] += 1;
                match redis::cmd("INCR").arg(&counters[key]).query::<u64>(&mut c) {
                    Ok(_) => (key, None, false),
                    Err(e) => (key, Some(e.to_string()), e.is_io_error() || e.is_timeout()),
                }
            }
            Op::Mget => {
                let group = i / 2 % 8;
                let keys: Vec<&String> = mget_group(group).map(|key| &fixed[key]).collect();
                let expected: Vec<Option<String>> = mget_group(group).map(|key| Some(value(key))).collect();
                match redis::cmd("MGET").arg(&keys).query::<Vec<Option<String>>>(&mut c) {
                    Ok(values) if values == expected => (group, None, false),
                    // Keys gone (a cluster replaced by an empty one), each
                    // part answered by whichever was up: told apart from a
                    // wrong or misplaced value.
                    Ok(values) if values.iter().zip(&expected).all(|(v, e)| v.is_none() || v == e) => {
                        (group, Some(format!("missing values {values:?}")), false)
                    }
                    Ok(other) => (group, Some(format!("wrong values {other:?}")), false),
                    Err(e) => (group, Some(e.to_string()), e.is_io_error() || e.is_timeout()),
                }
            }
            Op::Get => {
                let key = i / 2 % fixed.len();
                match redis::cmd("GET").arg(&fixed[key]).query::<Option<String>>(&mut c) {
                    Ok(Some(v)) if v == value(key) => (key, None, false),
                    Ok(other) => (key, Some(format!("wrong value {other:?}")), false),
                    Err(e) => (key, Some(e.to_string()), e.is_io_error() || e.is_timeout()),
                }
            }
        };
        let failed = error.is_some();
        outcomes.push(Outcome { op, key, sent: started, done: Instant::now(), error });
        if failed {
            // A client backs off a little after an error.
            std::thread::sleep(Duration::from_millis(10));
        }
        if broken {
            // The connection to slotgate itself broke: a new one.
            std::thread::sleep(Duration::from_millis(20));
            if let Ok(fresh) = redis::Client::open(url).and_then(|cl| cl.get_connection()) {
                let _ = fresh.set_read_timeout(Some(Duration::from_secs(30)));
                c = fresh;
            }
        }
    }
    (outcomes, sent)
}

/// Everything the traffic saw, and the counters afterwards.
#[derive(Debug)]
pub struct Report {
    /// In the order the requests were sent.
    pub outcomes: Vec<Outcome>,
    /// INCRs sent per counter.
    pub sent: Vec<u64>,
    /// Each counter's value at the end.
    pub finals: Vec<u64>,
}

impl Report {
    pub fn requests(&self) -> usize {
        self.outcomes.len()
    }

    pub fn errors(&self) -> Vec<&Outcome> {
        self.outcomes.iter().filter(|o| o.error.is_some()).collect()
    }

    /// Acknowledged INCRs per counter.
    pub fn acked(&self) -> Vec<u64> {
        let mut acked = vec![0u64; self.sent.len()];
        for o in self.outcomes.iter().filter(|o| o.op == Op::Incr && o.error.is_none()) {
            acked[o.key] += 1;
        }
        acked
    }

    /// Increments that ran more often than they were sent: double execution.
    pub fn over_counts(&self) -> u64 {
        self.finals.iter().zip(&self.sent).map(|(&fin, &sent)| fin.saturating_sub(sent)).sum()
    }

    /// Acknowledged increments missing from the counters afterwards.
    pub fn lost_writes(&self) -> u64 {
        self.finals.iter().zip(self.acked()).map(|(&fin, acked)| acked.saturating_sub(fin)).sum()
    }

    /// The longest time between two successful writes (anywhere in the run).
    pub fn longest_write_gap(&self) -> Duration {
        let mut done: Vec<Instant> =
            self.outcomes.iter().filter(|o| o.op == Op::Incr && o.error.is_none()).map(|o| o.done).collect();
        done.sort_unstable();
        done.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
    }

    /// When the first write to a counter matching `which` succeeded after `since`.
    pub fn first_write_after(&self, since: Instant, which: impl Fn(usize) -> bool) -> Option<Instant> {
        self.outcomes
            .iter()
            .filter(|o| o.op == Op::Incr && o.error.is_none() && o.sent >= since && which(o.key))
            .map(|o| o.done)
            .min()
    }

    /// Requests sent or answered in `[from, to]`.
    pub fn answered_between(&self, from: Instant, to: Instant) -> usize {
        self.outcomes.iter().filter(|o| o.done >= from && o.done <= to && o.error.is_none()).count()
    }

    /// A table row for the chaos script and test logs; `lag` is how long
    /// after the cluster's own recovery writes succeeded again.
    pub fn summary(&self, scenario: &str, lag: Option<Duration>) -> String {
        let lag = lag.map_or("-".to_string(), |lag| format!("{} ms", lag.as_millis()));
        format!(
            "| {scenario} | {} | {} | {} ms | {lag} | {} | {} |",
            self.requests(),
            self.errors().len(),
            self.longest_write_gap().as_millis(),
            self.lost_writes(),
            self.over_counts()
        )
    }
}

/// The header of [`Report::summary`] rows.
pub const SUMMARY_HEADER: &str = "| scenario | requests | client-visible errors | longest gap with no successful write | writes back after the cluster recovered | acknowledged writes missing | INCR over-counts |\n|---|---|---|---|---|---|---|";
