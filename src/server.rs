//! The listener and the workers. The accept loop enforces `max_clients` and
//! hands each new client to a worker thread in turn; a worker is a
//! single-threaded event loop with its own node connections, so a client's
//! requests and replies never cross threads. The topology task runs beside
//! the accept loop.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::backend::Pool;
use crate::cluster::Topology;
use crate::config::Config;
use crate::error::ClientError;
use crate::session::{self, Clients, Context, Scripts};

/// Serves clients from `listener` until `shutdown` is cancelled.
pub async fn run(listener: TcpListener, config: Config, shutdown: CancellationToken) -> io::Result<()> {
    let topology = Topology::start(config.topology());
    if let Some(addr) = config.metrics_addr() {
        let metrics = TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("metrics endpoint {addr}: {e}")))?;
        tracing::info!(listen = %metrics.local_addr()?, "serving /metrics, /healthz, /readyz");
        tokio::spawn(crate::metrics::serve(metrics, topology.clone(), shutdown.clone()));
    }
    let clients = Arc::new(Clients::default());
    let scripts = Arc::new(Scripts::default());
    let workers = (0..config.worker_threads())
        .map(|index| spawn_worker(index, &config, topology.clone(), clients.clone(), scripts.clone(), shutdown.clone()))
        .collect::<io::Result<Vec<_>>>()?;
    tracing::info!(listen = %listener.local_addr()?, workers = workers.len(), seeds = ?config.cluster, "slotgate ready");
    // One permit per open client, held by its session until it ends.
    let open = Arc::new(Semaphore::new(config.max_clients));
    let mut refusing = false;
    let mut next = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = open.clone().try_acquire_owned() else {
                        if !std::mem::replace(&mut refusing, true) {
                            tracing::warn!(%peer, max_clients = config.max_clients, "max_clients reached: refusing new clients");
                        }
                        refuse(&stream);
                        continue;
                    };
                    refusing = false;
                    let stream = stream.into_std()?;
                    if workers[next % workers.len()].send((stream, Place::taken(permit))).is_err() {
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
            },
        }
    }
}

/// Answers a client past `max_clients` as Redis does, then closes it. The
/// line fits any socket buffer, so one non-blocking write is enough.
fn refuse(stream: &TcpStream) {
    crate::metrics::get().clients_rejected.inc();
    let mut line = bytes::BytesMut::new();
    ClientError::MaxClients.write(&mut line);
    let _ = stream.try_write(&line);
}

/// An open client's place under `max_clients`, counted in the metrics from
/// its accept to its close.
struct Place(Option<OwnedSemaphorePermit>);

impl Place {
    fn taken(permit: OwnedSemaphorePermit) -> Place {
        let metrics = crate::metrics::get();
        metrics.clients_accepted.inc();
        metrics.clients.inc();
        Place(Some(permit))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        // Free first: once the gauge says a place is free, it is.
        drop(self.0.take());
        crate::metrics::get().clients.dec();
    }
}

/// A client socket and its place.
type NewClient = (std::net::TcpStream, Place);

/// Starts worker thread `index`; returns the queue that feeds it clients.
fn spawn_worker(
    index: usize,
    config: &Config,
    topology: Arc<Topology>,
    registry: Arc<Clients>,
    scripts: Arc<Scripts>,
    shutdown: CancellationToken,
) -> io::Result<mpsc::UnboundedSender<NewClient>> {
    let (clients, mut incoming) = mpsc::unbounded_channel::<NewClient>();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let backend = config.backend();
    let settings = config.session();
    std::thread::Builder::new().name(format!("slotgate-worker-{index}")).spawn(move || {
        runtime.block_on(async move {
            let mut changes = topology.changes();
            let ctx = Arc::new(Context { pool: Pool::new(topology, backend), settings, clients: registry, scripts });
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    // Routes follow the map even while no client asks: nodes
                    // that left the cluster get their connections closed.
                    Ok(()) = changes.changed() => drop(ctx.pool.routes()),
                    client = incoming.recv() => match client.map(|(stream, place)| (TcpStream::from_std(stream), place)) {
                        Some((Ok(stream), place)) => {
                            let ctx = ctx.clone();
                            tokio::spawn(async move {
                                session::run(stream, ctx).await;
                                drop(place);
                            });
                        }
                        Some((Err(error), _)) => tracing::warn!(%error, "cannot adopt client socket"),
                        None => return,
                    },
                }
            }
        });
    })?;
    Ok(clients)
}
