//! The HTTP server: axum's router on hyper's HTTP/1 connections, with the limits a public
//! listener needs. `axum::serve` keeps a connection for as long as the client likes: 19,950
//! sockets that sent a request line and then nothing held the API's file descriptors and
//! 1.9 GB for minutes. Here:
//!
//! - a connection must send a request's headers within `header_timeout` of opening, or of
//!   its previous answer (so an idle keep-alive connection closes after it too);
//! - an answer the client stops reading fails after `STALLED_WRITE`;
//! - at most `max_connections` are open at once; past it a new one is closed at once rather
//!   than left waiting, and the process's open-file limit is raised to fit (see
//!   `raise_open_files`).
//!
//! A request's body and handling are bounded by the request timeout (`with_deadline`).

use std::{pin::Pin, sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;

/// How long a write may wait on a client that reads nothing.
const STALLED_WRITE: Duration = Duration::from_secs(30);
/// How long a graceful stop waits for connections to finish their answers.
const DRAIN: Duration = Duration::from_secs(30);
/// File descriptors kept out of the connection cap: the database pool, the broker, logs.
const RESERVED_FDS: u64 = 256;

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// Raises the process's open-file limit to its hard limit (where the soft one is lower, as
/// it often is: 1024) and returns the connections that fit under it.
pub fn raise_open_files(wanted: usize) -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let fit = limit.saturating_sub(RESERVED_FDS).max(1) as usize;
    if fit < wanted {
        tracing::warn!(
            wanted,
            open_files = limit,
            "CONVEYOR_MAX_CONNECTIONS is over what the open-file limit allows; capping at {fit}"
        );
    }
    wanted.min(fit)
}

/// Serves `app` on `listener` until `shutdown`, then lets open connections finish their
/// answers (at most `DRAIN`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: do not spin, and keep serving what is open.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Over the cap: closed at once, so the client learns it and no socket waits.
            conveyor_core::metrics::http_connection_refused();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(STALLED_WRITE));
        let io = TokioIo::new(Box::pin(stream) as Pin<Box<TimeoutStream<tokio::net::TcpStream>>>);
        let conn = graceful.watch(http.serve_connection(io, TowerToHyperService::new(app.clone())));
        tokio::spawn(async move {
            let _open = conveyor_core::metrics::http_connection_opened();
            // An error here is the client's (gone, too slow): nothing to do but close.
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN:?}; stopping anyway");
    }
    Ok(())
}
