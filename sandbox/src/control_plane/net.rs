//! The control plane's listening socket, which can really go away: a
//! `Refuse` outage drops the listener (new connections are refused) and cuts
//! every open connection (in-flight calls fail like a crashed server's);
//! coming back re-binds the same port, so the base URL stays stable.
//!
//! It must not hold its lock across an `.await`, and must never cut the
//! connection that asked for the outage before its answer is written.

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::SandboxError;

/// The socket and the token that cuts the connections accepted on it.
pub(crate) struct Socket {
    addr: SocketAddr,
    runtime: tokio::runtime::Handle,
    /// `None` while refusing.
    listener: Option<TcpListener>,
    /// The accept loop, parked while there is no listener.
    waker: Option<Waker>,
    /// Cancelled when the connections accepted so far must die.
    cut: CancellationToken,
    root: CancellationToken,
}

/// Shared between the control plane (which switches it) and the accept loop.
pub(crate) struct Net {
    inner: Mutex<Socket>,
}

fn bind_std(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    // std sets SO_REUSEADDR on Unix, so the port can be bound again right
    // after its previous connections were cut (TIME_WAIT).
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

impl Net {
    /// Binds 127.0.0.1:0. Must run inside a tokio runtime.
    pub(crate) fn bind(root: CancellationToken) -> Result<Net, SandboxError> {
        let err = |source| SandboxError::Bind {
            service: "control plane",
            source,
        };
        let runtime = tokio::runtime::Handle::current();
        let std = bind_std(SocketAddr::from(([127, 0, 0, 1], 0))).map_err(err)?;
        let addr = std.local_addr().map_err(err)?;
        let listener = {
            let _rt = runtime.enter();
            TcpListener::from_std(std).map_err(err)?
        };
        Ok(Net {
            inner: Mutex::new(Socket {
                addr,
                runtime,
                listener: Some(listener),
                waker: None,
                cut: root.child_token(),
                root,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Socket> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.lock().addr
    }

    /// The runtime the control plane started on (for work started from
    /// outside it, e.g. a knob switched from a plain thread).
    pub(crate) fn runtime(&self) -> tokio::runtime::Handle {
        self.lock().runtime.clone()
    }

    /// The token that fires when connections open now must be cut.
    pub(crate) fn cut_token(&self) -> CancellationToken {
        self.lock().cut.clone()
    }

    /// Stops listening and cuts every open connection (except exempt ones).
    pub(crate) fn refuse(&self) {
        let mut s = self.lock();
        s.listener = None;
        s.cut.cancel();
        s.cut = s.root.child_token();
    }

    /// Listens again on the same port (no-op when listening).
    pub(crate) fn listen(&self) -> Result<(), SandboxError> {
        let mut s = self.lock();
        if s.listener.is_some() {
            return Ok(());
        }
        let err = |source| SandboxError::Bind {
            service: "control plane (re-bind after a refuse outage)",
            source,
        };
        let std = bind_std(s.addr).map_err(err)?;
        let listener = {
            let _rt = s.runtime.enter();
            TcpListener::from_std(std).map_err(err)?
        };
        s.listener = Some(listener);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
        Ok(())
    }

    /// Stops for good: no listener, every connection cut.
    pub(crate) fn shut(&self) {
        let mut s = self.lock();
        s.listener = None;
        s.cut.cancel();
        s.root.cancel();
    }

    fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(TcpStream, SocketAddr, CancellationToken)>> {
        let mut guard = self.lock();
        let s = &mut *guard;
        // Always keep the latest waker: after a refuse outage the old
        // listener (and its registration) is gone, and `listen` must wake
        // the accept loop parked on it.
        if s.waker.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        match &s.listener {
            Some(l) => l
                .poll_accept(cx)
                .map_ok(|(stream, addr)| (stream, addr, s.cut.clone())),
            None => Poll::Pending,
        }
    }
}

/// The [`Listener`] axum serves from: accepts from whatever socket [`Net`]
/// holds, waiting (not failing) while there is none.
pub(crate) struct Gate(pub(crate) Arc<Net>);

impl Listener for Gate {
    type Io = CutStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CutStream, SocketAddr) {
        loop {
            match poll_fn(|cx| self.0.poll_accept(cx)).await {
                Ok((stream, addr, cut)) => return (CutStream::new(stream, cut), addr),
                Err(e) => {
                    tracing::debug!(error = %e, "control-plane sandbox: accept failed");
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) {
                        // Out of file descriptors and the like: back off
                        // instead of spinning (as axum's own listener does).
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.0.addr())
    }
}

/// A connection that fails (reads and writes error) once its cut token
/// fires, unless it was made exempt.
pub(crate) struct CutStream {
    inner: TcpStream,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
    exempt: Arc<AtomicBool>,
}

impl CutStream {
    fn new(inner: TcpStream, cut: CancellationToken) -> Self {
        Self {
            inner,
            cut: Box::pin(cut.cancelled_owned()),
            exempt: Arc::new(AtomicBool::new(false)),
        }
    }

    fn is_cut(&mut self, cx: &mut Context<'_>) -> bool {
        !self.exempt.load(Ordering::Acquire) && self.cut.as_mut().poll(cx).is_ready()
    }
}

fn cut_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "control-plane sandbox: connection cut by a refuse outage",
    )
}

impl AsyncRead for CutStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.is_cut(cx) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CutStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.is_cut(cx) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_cut(cx) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Handed to handlers (as axum `ConnectInfo`) so the admin call that starts a
/// refuse outage can keep its own connection long enough to answer.
#[derive(Clone, Debug)]
pub(crate) struct ConnHandle(Arc<AtomicBool>);

impl ConnHandle {
    pub(crate) fn exempt_from_cuts(&self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Connected<IncomingStream<'_, Gate>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, Gate>) -> Self {
        ConnHandle(stream.io().exempt.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuse_drops_the_socket_and_listen_rebinds_the_same_port() {
        let net = Net::bind(CancellationToken::new()).expect("bind");
        let addr = net.addr();
        TcpStream::connect(addr).await.expect("listening");
        net.refuse();
        let err = TcpStream::connect(addr).await.expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        net.listen().expect("re-bind");
        net.listen().expect("idempotent");
        TcpStream::connect(addr).await.expect("listening again");
        assert_eq!(net.addr(), addr);
        net.shut();
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
