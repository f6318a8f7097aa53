//! Serving a router on a listener with limits a slow or hostile client cannot
//! get around: a deadline for each request's headers (which also bounds how
//! long an idle keep-alive connection is held), a cap on connections, and
//! capped header sizes. `axum::serve` has none of these: its connections wait
//! for headers forever.
//!
//! It must keep accepting while at the cap (a connection over the cap is
//! closed at once, so the backlog never fills with connections nobody
//! serves), and must not spin when the process runs out of file descriptors.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What one listener allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request's headers must arrive within this; it is also how long an
    /// idle keep-alive connection waits for the next request.
    pub header_timeout: Duration,
    /// Connections served at once; more are closed as soon as accepted.
    pub max_connections: usize,
}

/// The largest request head (request line and headers) read.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Request headers allowed.
const MAX_HEADERS: usize = 64;
/// How long an accept loop rests after an accept error (out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

impl ConnectionLimits {
    /// These limits, with `max_connections` lowered to `share` of the
    /// process's open-file limit when that is lower: connections held by
    /// slow clients must never take the descriptors the rest of the daemon
    /// (the other listener, the journal, outbound calls) needs.
    pub fn within_open_files(self, share: f64, what: &str) -> Self {
        let Some(limit) = open_files_limit() else {
            return self;
        };
        let fits = ((limit as f64 * share) as usize).max(1);
        if fits >= self.max_connections {
            return self;
        }
        tracing::warn!(
            listener = what,
            configured = self.max_connections,
            max_connections = fits,
            open_files_limit = limit,
            "lowering the connection limit to fit the open-file limit (raise LimitNOFILE / ulimit -n)"
        );
        Self {
            max_connections: fits,
            ..self
        }
    }
}

/// The soft limit on open files (Linux, from `/proc/self/limits`).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Serves `router` until `stop` is cancelled, then lets open connections
/// finish their request and close.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let http = Arc::new(http);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let mut refused = 0u64;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Typically EMFILE: every descriptor is in use. Rest rather than spin.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    refused,
                    max_connections = limits.max_connections,
                    "connection limit reached; closing new connections"
                );
            }
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let (http, stop) = (http.clone(), stop.clone());
        connections.spawn(async move {
            let conn = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}
