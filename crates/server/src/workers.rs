//! Report connections served on one single-threaded runtime per core.
//!
//! Why not the shared multi-threaded runtime: a gRPC connection's streams each run as a task
//! that wakes the connection's task when its reply is ready. On a work-stealing runtime the
//! woken task runs next (its "LIFO slot"), so every reply is written with a syscall of its
//! own; on a single-threaded runtime the replies of all the requests one read brought in are
//! ready before the connection task runs again, and go out in one write (the gain, largest
//! with one request per call, is measured in BENCHMARKS.md). Connections are handed to the
//! runtimes in turn as they are accepted.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use meshmeter_wire::MixerServer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::conn;
use crate::ingest::Ingest;
use crate::limits::{ConnSlot, Port};
use crate::server::ServerError;

/// How many runtimes serve reports when the options leave it to us: one per core this
/// process may run on (which respects `taskset` and cgroup CPU limits).
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// An accepted connection and its place under the connection cap.
type Handed = (std::net::TcpStream, ConnSlot);

/// The threads serving report connections, each with its own runtime.
pub(crate) struct Workers {
    senders: Vec<mpsc::UnboundedSender<Handed>>,
    done: Vec<oneshot::Receiver<Result<(), tonic::transport::Error>>>,
}

impl Workers {
    /// Starts `threads` runtimes serving `server`; they stop when `stop` turns true and their
    /// calls in flight are finished, or at once (closing their connections) when `force` does.
    pub(crate) fn start(
        threads: usize,
        server: &MixerServer<Ingest>,
        port: &Arc<Port>,
        stop: &watch::Receiver<bool>,
        force: &watch::Receiver<bool>,
    ) -> Result<Self, ServerError> {
        let mut senders = Vec::with_capacity(threads);
        let mut done = Vec::with_capacity(threads);
        for i in 0..threads.max(1) {
            let (tx, rx) = mpsc::unbounded_channel::<Handed>();
            let (done_tx, done_rx) = oneshot::channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(ServerError::Thread)?;
            let server = server.clone();
            let port = Arc::clone(port);
            let stop = stop.clone();
            let mut force = force.clone();
            std::thread::Builder::new()
                .name(format!("meshmeter-ingest-{i}"))
                .spawn(move || {
                    // Past the drain deadline the serving future is dropped, and with it
                    // (with the runtime) every connection this runtime still holds.
                    runtime.block_on(async move {
                        tokio::select! {
                            () = run_connections(rx, server, port, stop) => {}
                            _ = force.wait_for(|f| *f) => {}
                        }
                    });
                    drop(runtime);
                    let _ = done_tx.send(Ok(()));
                })
                .map_err(ServerError::Thread)?;
            senders.push(tx);
            done.push(done_rx);
        }
        Ok(Workers { senders, done })
    }

    /// Accepts connections on `listener` until `stopped` completes, handing them to the
    /// runtimes in turn, then waits for every runtime to finish.
    pub(crate) async fn serve(
        self,
        listener: TcpListener,
        port: Arc<Port>,
        stopped: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let Workers { senders, done } = self;
        let senders = Arc::new(senders);
        tokio::pin!(stopped);
        let mut next = 0usize;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut stopped => break,
            };
            match accepted {
                Ok((stream, _)) => {
                    // Over the cap: closed at once (dropped), counted.
                    let Some(slot) = port.admit() else {
                        tracing::debug!("report connection refused: too many open");
                        continue;
                    };
                    let mut stream = match hand_over(stream) {
                        Ok(s) => (s, slot),
                        Err(e) => {
                            tracing::debug!(error = %e, "connection failed before it was served");
                            continue;
                        }
                    };
                    // In turn, passing over any runtime whose thread has ended.
                    let mut delivered = false;
                    for _ in 0..senders.len() {
                        let sender = &senders[next % senders.len()];
                        next = next.wrapping_add(1);
                        match sender.send(stream) {
                            Ok(()) => {
                                delivered = true;
                                break;
                            }
                            Err(mpsc::error::SendError(back)) => stream = back,
                        }
                    }
                    if !delivered {
                        // Every runtime is gone: stop (the server reports the failure) rather
                        // than accept connections nobody serves.
                        return Err(ServerError::NoRuntime);
                    }
                }
                Err(e) if is_connection_error(&e) => {
                    tracing::debug!(error = %e, "connection failed before it was served");
                }
                Err(e) => {
                    // Out of file descriptors or memory: back off instead of spinning.
                    tracing::warn!(error = %e, "cannot accept report connections; retrying in 100ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        drop(listener);
        drop(senders);
        let mut result = Ok(());
        for rx in done {
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(ServerError::Grpc(e)),
                Err(_) => tracing::error!("a report runtime thread ended without a result"),
            }
        }
        result
    }
}

/// Serves the connections handed to this runtime, each in a task of its own, until `stop`
/// turns true; then waits for them to finish their calls (they were sent GOAWAY).
async fn run_connections(
    mut rx: mpsc::UnboundedReceiver<Handed>,
    server: MixerServer<Ingest>,
    port: Arc<Port>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    let each = stop.clone();
    loop {
        tokio::select! {
            handed = rx.recv() => match handed {
                Some((stream, slot)) => {
                    // A connection moves to this runtime's reactor here.
                    let stream = match tokio::net::TcpStream::from_std(stream) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(error = %e, "cannot serve a report connection");
                            continue;
                        }
                    };
                    tasks.spawn(conn::serve(stream, server.clone(), Arc::clone(&port), slot, each.clone()));
                }
                None => break,
            },
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = tasks.join_next() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Readies an accepted connection for another runtime: replies are small and must not wait
/// for the client's delayed ACK (~40 ms), hence `TCP_NODELAY`.
fn hand_over(stream: tokio::net::TcpStream) -> io::Result<std::net::TcpStream> {
    stream.set_nodelay(true)?;
    stream.into_std()
}

/// Errors of one connection (the client gave up), as opposed to the listener's.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::NotConnected
            | io::ErrorKind::InvalidInput
    )
}
