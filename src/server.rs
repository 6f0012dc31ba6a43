//! The listeners and the workers. The accept loop enforces `max_clients` and
//! hands each new client to a worker thread in turn; a worker is a
//! single-threaded event loop with its own node connections, so a client's
//! requests and replies never cross threads. Clients of `tls_listen` go
//! the same way and shake hands on their worker, so a slow handshake holds
//! up no accept. The topology task runs beside the accept loop. On
//! shutdown, clients are drained: what they sent is answered before they
//! are closed, for at most `drain_timeout_ms`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::{TcpListener, TcpStream};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backend::Pool;
use crate::cluster::Topology;
use crate::error::ClientError;
use crate::live::Live;
use crate::session::{self, Clients, Context, FailedLogins, Scripts};
use crate::tls::ClientTls;

/// Where clients connect: `listen`, `tls_listen`, or both.
#[derive(Debug)]
pub struct Listeners {
    pub plain: Option<TcpListener>,
    /// With what its clients' handshakes need.
    pub tls: Option<(TcpListener, ClientTls)>,
}

/// Serves clients from `listeners` until `shutdown` is cancelled, then
/// drains: every client's requests already received are answered, then it is
/// closed; after `drain_timeout_ms` the rest are closed as they are.
pub async fn run(listeners: Listeners, live: Arc<Live>, shutdown: CancellationToken) -> io::Result<()> {
    let config = live.config.load_full();
    let topology = Topology::start(live.topology.clone());
    // The metrics endpoint outlives the drain, so that it can be watched.
    let stopped = CancellationToken::new();
    let _stop_metrics = stopped.clone().drop_guard();
    if let Some(addr) = config.metrics_addr() {
        let metrics = TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("metrics endpoint {addr}: {e}")))?;
        tracing::info!(listen = %metrics.local_addr()?, "serving /metrics, /healthz, /readyz");
        tokio::spawn(crate::metrics::serve(metrics, topology.clone(), stopped.clone()));
    }
    let clients = Arc::new(Clients::default());
    live.after_reload({
        let clients = clients.clone();
        move || clients.reloaded()
    });
    let scripts = Arc::new(Scripts::default());
    let failed_logins = Arc::new(FailedLogins::default());
    // Workers end when their queue closes, as `workers` is dropped on return.
    let client_tls = listeners.tls.as_ref().map(|(_, tls)| tls.clone());
    let workers = (0..config.worker_threads())
        .map(|index| {
            let shared = (clients.clone(), scripts.clone(), failed_logins.clone());
            spawn_worker(index, &live, topology.clone(), shared, client_tls.clone())
        })
        .collect::<io::Result<Vec<_>>>()?;
    tokio::spawn(close_idle_clients(clients.clone(), live.clone(), stopped.clone()));
    let max_clients = clients_that_fit(config.max_clients);
    let plain = listeners.plain;
    let tls = listeners.tls.map(|(listener, _)| listener);
    let addr = |listener: &Option<TcpListener>| listener.as_ref().and_then(|l| l.local_addr().ok());
    tracing::info!(
        listen = ?addr(&plain),
        tls_listen = ?addr(&tls),
        node_tls = config.node_tls,
        workers = workers.len(),
        max_clients,
        seeds = ?config.cluster,
        "slotgate ready"
    );
    let served = accept([plain.as_ref(), tls.as_ref()], &workers, &live, &shutdown).await;
    drop((plain, tls));
    drain(&clients, live.config.load().drain_timeout()).await;
    served
}

/// File descriptors kept back from clients: listeners, shared node
/// connections, topology queries, the runtime's own.
const RESERVED_FILES: u64 = 256;

/// `max_clients`, or fewer when the process may not open that many files,
/// as Redis lowers its `maxclients`: past the limit, new clients would wait
/// unanswered in the accept queue. The open-files limit is first raised as
/// far as needed and the hard limit allows.
fn clients_that_fit(max_clients: usize) -> usize {
    let wanted = max_clients as u64 + RESERVED_FILES;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) if limit < wanted => {
            let fit = limit.saturating_sub(RESERVED_FILES).max(1) as usize;
            tracing::warn!(
                max_clients,
                open_files_limit = limit,
                now = fit,
                "max_clients lowered to fit the open-files limit; raise it (ulimit -n, LimitNOFILE=) to allow more"
            );
            fit
        }
        Ok(_) => max_clients,
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the open-files limit");
            max_clients
        }
    }
}

/// Hands each new client of the plain and the TLS listener (either may be
/// off) to a worker in turn, until `shutdown`; refuses those past
/// `max_clients`, as the settings in force say.
async fn accept(
    [plain, tls]: [Option<&TcpListener>; 2],
    workers: &[mpsc::UnboundedSender<NewClient>],
    live: &Live,
    shutdown: &CancellationToken,
) -> io::Result<()> {
    // Clients open now: counted up here (the only place), down by their
    // sessions as they end, so a check and its count cannot be overtaken.
    let open = Arc::new(AtomicUsize::new(0));
    let mut config = live.config.load_full();
    let mut max_clients = clients_that_fit(config.max_clients);
    let mut refusing = false;
    let mut next = 0;
    loop {
        let (accepted, tls) = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            accepted = accept_on(plain) => (accepted, false),
            accepted = accept_on(tls) => (accepted, true),
        };
        match accepted {
            Ok((stream, peer)) => {
                if !Arc::ptr_eq(&config, &live.config.load()) {
                    let reloaded = live.config.load_full();
                    if reloaded.max_clients != config.max_clients {
                        max_clients = clients_that_fit(reloaded.max_clients);
                    }
                    config = reloaded;
                }
                if open.load(Ordering::Relaxed) >= max_clients {
                    if !std::mem::replace(&mut refusing, true) {
                        tracing::warn!(%peer, max_clients, "max_clients reached: refusing new clients");
                    }
                    refuse(&stream, tls);
                    continue;
                }
                refusing = false;
                let stream = stream.into_std()?;
                if workers[next % workers.len()].send(NewClient { stream, place: Place::taken(&open), tls }).is_err() {
                    tracing::error!(worker = next % workers.len(), "worker stopped; shutting down");
                    return Err(io::Error::other("a worker thread stopped"));
                }
                next = next.wrapping_add(1);
            }
            Err(error) => {
                // Out of file descriptors, usually: wait instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The next client of `listener`; never, when it is off.
async fn accept_on(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Closes clients idle for `client_idle_timeout_ms` (when set), looking
/// every second, or twice per limit when it is shorter.
async fn close_idle_clients(clients: Arc<Clients>, live: Arc<Live>, stopped: CancellationToken) {
    loop {
        let limit = Duration::from_millis(live.config.load().client_idle_timeout_ms);
        let every = Some(limit / 2)
            .filter(|half| !half.is_zero())
            .map_or(Duration::from_secs(1), |half| half.min(Duration::from_secs(1)));
        if stopped.run_until_cancelled(tokio::time::sleep(every)).await.is_none() {
            return;
        }
        if !limit.is_zero() {
            clients.close_idle(limit);
        }
    }
}

/// Tells every client to finish and waits, at most `limit`, until all have.
async fn drain(clients: &Clients, limit: Duration) {
    if clients.is_empty() {
        return;
    }
    tracing::info!(
        clients = clients.len(),
        limit_ms = limit.as_millis() as u64,
        "stopping: answering what clients sent"
    );
    clients.drain();
    let deadline = tokio::time::Instant::now() + limit;
    while !clients.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !clients.is_empty() {
        tracing::warn!(clients = clients.len(), "drain timeout: closing the clients still waiting");
    }
}

/// Answers a client past `max_clients` as Redis does, then closes it. The
/// line fits any socket buffer, so one non-blocking write is enough. A TLS
/// client is closed without a word: it could not read a plain one.
fn refuse(stream: &TcpStream, tls: bool) {
    crate::metrics::get().clients_rejected.inc();
    if tls {
        return;
    }
    let mut line = bytes::BytesMut::new();
    ClientError::MaxClients.write(&mut line);
    let _ = stream.try_write(&line);
}

/// An open client's place under `max_clients`, counted in the metrics from
/// its accept to its close.
struct Place(Arc<AtomicUsize>);

impl Place {
    fn taken(open: &Arc<AtomicUsize>) -> Place {
        open.fetch_add(1, Ordering::Relaxed);
        let metrics = crate::metrics::get();
        metrics.clients_accepted.inc();
        metrics.clients.inc();
        Place(open.clone())
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        // Free first: once the gauge says a place is free, it is.
        self.0.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::get().clients.dec();
    }
}

/// A client socket and its place.
struct NewClient {
    stream: std::net::TcpStream,
    place: Place,
    /// It came through `tls_listen`: the handshake comes first.
    tls: bool,
}

/// Starts worker thread `index`; returns the queue that feeds it clients.
fn spawn_worker(
    index: usize,
    live: &Live,
    topology: Arc<Topology>,
    (registry, scripts, failed_logins): (Arc<Clients>, Arc<Scripts>, Arc<FailedLogins>),
    client_tls: Option<ClientTls>,
) -> io::Result<mpsc::UnboundedSender<NewClient>> {
    let (clients, mut incoming) = mpsc::unbounded_channel::<NewClient>();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (backend, settings) = (live.backend.clone(), live.session.clone());
    std::thread::Builder::new().name(format!("slotgate-worker-{index}")).spawn(move || {
        runtime.block_on(async move {
            let mut changes = topology.changes();
            let pool = Pool::new(topology, backend);
            let ctx = Arc::new(Context { pool, settings, clients: registry, scripts, failed_logins });
            loop {
                tokio::select! {
                    // Routes follow the map even while no client asks: nodes
                    // that left the cluster get their connections closed.
                    Ok(()) = changes.changed() => drop(ctx.pool.routes()),
                    client = incoming.recv() => {
                        let Some(NewClient { stream, place, tls }) = client else { return };
                        let stream = match TcpStream::from_std(stream) {
                            Ok(stream) => stream,
                            Err(error) => {
                                tracing::warn!(%error, "cannot adopt client socket");
                                continue;
                            }
                        };
                        let ctx = ctx.clone();
                        // Two tasks, not one with a match: a task is as big as
                        // its largest state, and a TLS session's is several KB
                        // more than a plain one's (10,000 idle clients: 35 MB).
                        match client_tls.clone().filter(|_| tls) {
                            None => tokio::spawn(async move {
                                session::run(stream, ctx).await;
                                drop(place);
                            }),
                            Some(tls) => tokio::spawn(async move {
                                if let Some(stream) = tls.handshake(stream).await {
                                    session::run_tls(stream, ctx).await;
                                }
                                drop(place);
                            }),
                        };
                    }
                }
            }
        });
    })?;
    Ok(clients)
}
