//! The accept loop: HTTP/1.1 connections served by hyper under the edge limits
//! ([`Limits`]) that `axum::serve` does not offer, and the graceful shutdown.
//!
//! - **Connections**: at most [`Limits::max_connections`] at once. At the cap the loop stops
//!   accepting: a new connection waits in the kernel's backlog until one closes, and the
//!   connections already open are not touched.
//! - **Header read**: once a request's first bytes arrive, its headers must be complete
//!   within [`Limits::header_read_timeout`], or the connection is dropped (a slowloris
//!   client, however steadily it trickles bytes).
//! - **Idle**: a connection with no request in flight, nothing coming in and nothing going
//!   out for [`Limits::idle_timeout`] is dropped (a fresh connection that sends nothing, or a
//!   keep-alive one between requests).
//! - **Body read**: a request body must arrive within [`Limits::body_read_timeout`] of its
//!   headers (enforced by the router's body deadline, see `body.rs`; a late body is a 408).
//! - **Shutdown**: when `shutdown` resolves, the listener is closed at once (new connections
//!   are refused), idle connections are closed, requests in flight are finished and their
//!   connections closed after the answer, for up to [`Limits::drain_timeout`]; what is still
//!   open after that is dropped.

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

/// The server's connection limits. Each default is what `plinth serve` uses without the
/// matching flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long a client has to send a request's headers (default 10 s,
    /// `--header-read-timeout`).
    pub header_read_timeout: Duration,
    /// How long a client has to send a request's body, from the end of its headers (default
    /// 60 s, `--body-read-timeout`).
    pub body_read_timeout: Duration,
    /// How long a keep-alive connection may stay idle between requests (default 60 s,
    /// `--idle-timeout`).
    pub idle_timeout: Duration,
    /// How many connections may be open at once (default 10,000, `--max-connections`).
    pub max_connections: u32,
    /// How long a shutdown waits for requests in flight (default 30 s, `--drain-timeout`).
    pub drain_timeout: Duration,
}

impl Limits {
    /// Default [`Limits::header_read_timeout`].
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default [`Limits::body_read_timeout`].
    pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
    /// Default [`Limits::idle_timeout`].
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// Default [`Limits::max_connections`].
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
    /// Default [`Limits::drain_timeout`].
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: Self::DEFAULT_BODY_READ_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            drain_timeout: Self::DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// Serve `app` on `listener` under `limits` until `shutdown` resolves, then drain (see the
/// module header). Returns once every connection is closed or the drain deadline passed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max as usize));
    let (stop, stopped) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper's own header timer also runs on an idle keep-alive connection, which would make
    // the idle timeout the header timeout: both are kept here instead, per connection.
    http.header_read_timeout(None).keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            http: http.clone(),
            app: app.clone(),
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            stopped: stopped.clone(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                // The handshake is bounded by the header-read timeout, as a request's head is.
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(connection.header_read_timeout, handshake).await {
                        Ok(Ok(stream)) => connection.run(stream).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => connection.run(stream).await,
            }
            tracing::trace!(%peer, "connection closed");
            drop(slot);
        });
    }
    drop(listener);
    let open = max as usize - slots.available_permits();
    tracing::info!(
        connections = open,
        drain_timeout = ?limits.drain_timeout,
        "stopped accepting connections; finishing the requests in flight"
    );
    let _ = stop.send(true);
    let drained = tokio::time::timeout(limits.drain_timeout, slots.acquire_many(max)).await;
    match drained {
        Ok(_) => tracing::info!("every connection closed"),
        Err(_) => tracing::warn!(
            connections = max as usize - slots.available_permits(),
            "drain deadline passed: closing the connections still open"
        ),
    }
}

/// One accepted connection and what it needs.
struct Connection {
    http: hyper::server::conn::http1::Builder,
    app: Router,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    stopped: watch::Receiver<bool>,
}

impl Connection {
    async fn run<S>(mut self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let app = self.app;
        let seen = activity.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let busy = seen.begin();
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(axum::body::Body::new)).await;
                drop(busy);
                response
            }
        });
        let io = Watched {
            stream,
            activity: activity.clone(),
        };
        let connection = self.http.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut closing = *self.stopped.borrow();
        if closing {
            connection.as_mut().graceful_shutdown();
        }
        let recheck = self.header_read_timeout.min(self.idle_timeout);
        let mut check = tokio::time::Instant::now() + recheck;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                changed = self.stopped.changed(), if !closing => {
                    if changed.is_err() || *self.stopped.borrow() {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
                () = tokio::time::sleep_until(check) => {
                    match activity.deadline(self.header_read_timeout, self.idle_timeout) {
                        Some((deadline, why)) if deadline <= Instant::now() => {
                            // No request is in flight: dropping the connection loses nothing.
                            tracing::debug!("closing a connection: {why}");
                            return;
                        }
                        Some((deadline, _)) => check = deadline.into(),
                        None => check = tokio::time::Instant::now() + recheck,
                    }
                }
            }
        }
    }
}

/// A connection's timing between requests: whether one is in flight, since when the
/// connection has been quiet, and when the next request's first bytes arrived.
struct Activity {
    in_flight: AtomicUsize,
    between: Mutex<Between>,
}

/// Between two requests (or before the first).
struct Between {
    /// The last request's end, or the last response bytes written since, or the accept.
    quiet_since: Instant,
    /// When the first bytes of the next request arrived (its headers are being read).
    head_started: Option<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            between: Mutex::new(Between {
                quiet_since: Instant::now(),
                head_started: None,
            }),
        }
    }

    fn between(&self) -> std::sync::MutexGuard<'_, Between> {
        self.between.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request starts (its headers are in); it ends when the guard is dropped.
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// Bytes came in.
    fn read(&self) {
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            self.between().head_started.get_or_insert_with(Instant::now);
        }
    }

    /// Bytes went out (a response still being written is not idleness).
    fn wrote(&self) {
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            self.between().quiet_since = Instant::now();
        }
    }

    /// When the connection is to be closed, and why: headers begun and not finished within
    /// `header_read_timeout`, or nothing at all within `idle_timeout`. `None` while a request
    /// is in flight (its body has its own deadline).
    fn deadline(
        &self,
        header_read_timeout: Duration,
        idle_timeout: Duration,
    ) -> Option<(Instant, &'static str)> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let between = self.between();
        Some(match between.head_started {
            Some(started) => (
                started + header_read_timeout,
                "the request headers did not arrive within the header-read timeout",
            ),
            None => (
                between.quiet_since + idle_timeout,
                "idle for the idle timeout",
            ),
        })
    }
}

/// A request in flight on a connection.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut between = self.0.between();
        between.quiet_since = Instant::now();
        between.head_started = None;
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection's socket (TCP, or TLS over it), telling its [`Activity`] when bytes come
/// and go.
struct Watched<S> {
    stream: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
