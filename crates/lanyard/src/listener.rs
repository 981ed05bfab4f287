//! The accept loops of both listeners: a cap on open connections, a deadline for a new
//! connection's handshake (its TLS handshake included), closing gRPC connections left idle, and a
//! back-off while the process is out of file descriptors, so that hostile or broken clients cannot
//! starve the others.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long the accept loop waits after an accept error such as `EMFILE` before trying again:
/// the pending connection stays queued, so trying at once would spin.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The length of the HTTP/2 client connection preface: the fixed 24 bytes and the header of the
/// SETTINGS frame that must follow them (RFC 9113, section 3.4).
pub const HTTP2_PREFACE_BYTES: usize = 24 + 9;

/// The limits of one listener.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Open connections at most; a connection beyond is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Bytes a new connection must send within `handshake_timeout` (after its TLS handshake,
    /// when the listener has TLS); zero for no such deadline.
    pub handshake_bytes: usize,
    /// How long a new connection has, from its accept, to complete its TLS handshake and send
    /// its first `handshake_bytes`; zero for no deadline.
    pub handshake_timeout: Duration,
    /// Close a connection that had no request in flight for this long (gRPC only: requests are
    /// counted by [`ActivityLayer`]).
    pub idle_timeout: Option<Duration>,
}

/// Accepts connections of one listener within its [`ConnectionLimits`].
pub struct Acceptor {
    listener: TcpListener,
    name: &'static str,
    limits: ConnectionLimits,
    permits: Arc<Semaphore>,
    /// Server TLS, when the listener has it: each connection's handshake runs in its own task.
    tls: Option<TlsAcceptor>,
    /// Accept errors and refusals in the current burst: each burst is logged once.
    failed: u64,
    refused: u64,
}

impl Acceptor {
    /// Accepts on `listener`; `name` labels its logs and metrics (`grpc`, `http`).
    pub fn new(listener: TcpListener, name: &'static str, limits: ConnectionLimits) -> Self {
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        Self { listener, name, limits, permits, tls: None, failed: 0, refused: 0 }
    }

    /// Serves TLS with `tls` on each accepted connection (none: plaintext).
    pub fn with_tls(mut self, tls: Option<TlsAcceptor>) -> Self {
        self.tls = tls;
        self
    }

    /// The next connection within the limits, before its TLS handshake. Connections beyond the
    /// cap are closed; accept errors (`EMFILE`, `ENFILE`, `ENOBUFS`) are waited out.
    pub async fn accept(&mut self) -> Accepted {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                // The peer gave up before we accepted: nothing to do with the listener.
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    if self.failed == 0 {
                        tracing::error!(listener = self.name, error = %e, backoff_ms = ACCEPT_BACKOFF.as_millis() as u64, "cannot accept connections; retrying");
                    }
                    self.failed += 1;
                    metrics::counter!("lanyard_accept_errors_total", "listener" => self.name).increment(1);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            if self.failed > 0 {
                tracing::warn!(listener = self.name, failed = self.failed, "accepting connections again");
                self.failed = 0;
            }
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                if self.refused == 0 {
                    tracing::warn!(
                        listener = self.name,
                        max_connections = self.limits.max_connections,
                        "connection limit reached; closing new connections"
                    );
                }
                self.refused += 1;
                metrics::counter!("lanyard_connections_refused_total", "listener" => self.name).increment(1);
                drop(stream);
                continue;
            };
            if self.refused > 0 {
                tracing::info!(listener = self.name, refused = self.refused, "below the connection limit again");
                self.refused = 0;
            }
            // Each response goes out at once: without TCP_NODELAY small replies wait on delayed ACKs.
            let _ = stream.set_nodelay(true);
            return Accepted {
                stream,
                permit,
                limits: self.limits.clone(),
                accepted_at: Instant::now(),
                tls: self.tls.clone(),
                name: self.name,
            };
        }
    }

    /// The established connections as a stream, for tonic. Dropping it closes the listener.
    /// With TLS, handshakes run concurrently, each in its own task within the handshake
    /// deadline, so a peer that never finishes one delays nobody else.
    pub fn into_stream(self) -> Pin<Box<dyn futures::Stream<Item = io::Result<Connection>> + Send>> {
        if self.tls.is_none() {
            return Box::pin(futures::stream::unfold(self, |mut acceptor| async move {
                let connection = acceptor.accept().await.establish().await;
                Some((connection, acceptor))
            }));
        }
        let (tx, rx) = mpsc::channel::<io::Result<Connection>>(16);
        let mut acceptor = self;
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = tx.closed() => return,
                    accepted = acceptor.accept() => accepted,
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok(connection) = accepted.establish().await {
                        let _ = tx.send(Ok(connection)).await;
                    }
                });
            }
        });
        Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }))
    }
}

/// A connection accepted within the cap (it holds its place) whose TLS handshake, if any, is
/// still to come.
pub struct Accepted {
    stream: TcpStream,
    permit: OwnedSemaphorePermit,
    limits: ConnectionLimits,
    accepted_at: Instant,
    tls: Option<TlsAcceptor>,
    name: &'static str,
}

impl Accepted {
    /// Completes the TLS handshake, when the listener has TLS, within the handshake deadline;
    /// an error (late, or not TLS) closes the connection and frees its place.
    pub async fn establish(self) -> io::Result<Connection> {
        let Self { stream, permit, limits, accepted_at, tls, name } = self;
        let tcp = stream.connect_info();
        let deadline = (!limits.handshake_timeout.is_zero()).then(|| accepted_at + limits.handshake_timeout);
        let io = match tls {
            None => Io::Plain(stream),
            Some(tls) => {
                let handshake = tls.accept(stream);
                let result = match deadline {
                    Some(deadline) => tokio::time::timeout_at(deadline, handshake)
                        .await
                        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no TLS handshake in time"))),
                    None => handshake.await,
                };
                match result {
                    Ok(tls) => Io::Tls(Box::new(tls)),
                    Err(e) => {
                        tracing::debug!(listener = name, peer = ?tcp.remote_addr(), error = %e, "TLS handshake failed");
                        metrics::counter!("lanyard_tls_handshake_failures_total", "listener" => name).increment(1);
                        return Err(e);
                    }
                }
            }
        };
        Ok(Connection::new(io, tcp, permit, &limits, deadline))
    }
}

/// The byte stream of a connection: TCP, or TLS over TCP.
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Errors of one connection that came and went before it was accepted.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Requests in flight on one connection, and since when it has had none.
#[derive(Debug)]
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `start` when the last request ended.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self { start: Instant::now(), in_flight: AtomicUsize::new(0), idle_since_ms: AtomicU64::new(0) }
    }

    /// When the connection becomes idle for `timeout`, or `None` while a request is in flight.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.start + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire)) + timeout)
    }
}

/// A request in flight: the connection is not idle until it is dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = self.0.start.elapsed().as_millis() as u64;
        self.0.idle_since_ms.fetch_max(now, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An established connection: it holds its place under the cap until dropped, fails its reads
/// when the handshake is late or the connection stays idle, and is otherwise the TCP (or TLS)
/// stream.
pub struct Connection {
    stream: Io,
    tcp: TcpConnectInfo,
    _permit: OwnedSemaphorePermit,
    /// Handshake bytes still expected, and by when.
    handshake: Option<(usize, Pin<Box<Sleep>>)>,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    activity: Arc<Activity>,
}

impl Connection {
    fn new(
        stream: Io,
        tcp: TcpConnectInfo,
        permit: OwnedSemaphorePermit,
        limits: &ConnectionLimits,
        deadline: Option<Instant>,
    ) -> Self {
        let handshake = match deadline {
            Some(deadline) if limits.handshake_bytes > 0 => {
                Some((limits.handshake_bytes, Box::pin(tokio::time::sleep_until(deadline))))
            }
            _ => None,
        };
        let idle = limits.idle_timeout.map(|t| (t, Box::pin(tokio::time::sleep(t))));
        Self { stream, tcp, _permit: permit, handshake, idle, activity: Arc::new(Activity::new()) }
    }

    /// Whether a deadline has passed; registers the waker for the next one otherwise.
    fn poll_deadlines(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if let Some((_, deadline)) = &mut self.handshake {
            if deadline.as_mut().poll(cx).is_ready() {
                return Some(io::Error::new(io::ErrorKind::TimedOut, "no handshake in time"));
            }
        }
        if let Some((timeout, sleep)) = &mut self.idle {
            while sleep.as_mut().poll(cx).is_ready() {
                match self.activity.idle_deadline(*timeout) {
                    None => sleep.as_mut().reset(Instant::now() + *timeout),
                    Some(deadline) if deadline <= Instant::now() => {
                        return Some(io::Error::new(io::ErrorKind::TimedOut, "idle connection"));
                    }
                    Some(deadline) => sleep.as_mut().reset(deadline),
                }
            }
        }
        None
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Some((left, _)) = &mut this.handshake {
                    let read = buf.filled().len() - before;
                    if read == 0 || read >= *left {
                        this.handshake = None;
                    } else {
                        *left -= read;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.poll_deadlines(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// What tonic puts in each request's extensions for a [`Connection`]; [`ActivityLayer`] turns it
/// back into the usual [`TcpConnectInfo`].
#[derive(Clone)]
pub struct ConnectionInfo {
    tcp: TcpConnectInfo,
    activity: Arc<Activity>,
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo { tcp: self.tcp.clone(), activity: self.activity.clone() }
    }
}

/// Counts each request as in flight on its connection until its response body is dropped (so a
/// stream keeps its connection busy), and exposes the peer address as `Request::remote_addr`
/// expects it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ActivityLayer;

impl<S> tower::Layer<S> for ActivityLayer {
    type Service = ActivityService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ActivityService { inner }
    }
}

/// See [`ActivityLayer`].
#[derive(Clone, Debug)]
pub struct ActivityService<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for ActivityService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    RB::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let info = req.extensions().get::<ConnectionInfo>().cloned();
        let in_flight = info.map(|info| {
            req.extensions_mut().insert(info.tcp);
            InFlight::new(info.activity)
        });
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| match in_flight {
                Some(in_flight) => tonic::body::Body::new(body.map_frame(move |frame| {
                    let _busy = &in_flight;
                    frame
                })),
                None => tonic::body::Body::new(body),
            }))
        })
    }
}

/// Serves `app` over HTTP/1.1 on `acceptor`'s connections until `stopping` turns true, then lets
/// each connection finish its request. A request's headers must arrive within
/// `header_read_timeout`, and a keep-alive connection waiting for its next request is closed after
/// as long.
pub async fn serve_http(
    mut acceptor: Acceptor,
    app: axum::Router,
    header_read_timeout: Duration,
    stopping: watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(header_read_timeout);
    let stop = stopped(stopping.clone());
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => return,
            accepted = acceptor.accept() => accepted,
        };
        let app = app.clone();
        let builder = builder.clone();
        let stop = stopped(stopping.clone());
        tokio::spawn(async move {
            // The TLS handshake, if any, runs here: a slow peer holds up only its own task.
            let Ok(connection) = accepted.establish().await else { return };
            // Handlers that count requests per peer (the OpenID Provider's) read the peer here.
            let remote = connection.tcp.remote_addr();
            let app = tower::ServiceExt::map_request(app, move |mut req: http::Request<hyper::body::Incoming>| {
                if let Some(addr) = remote {
                    req.extensions_mut().insert(axum::extract::ConnectInfo(addr));
                }
                req
            });
            let service = hyper_util::service::TowerToHyperService::new(app);
            let serving = builder.serve_connection(hyper_util::rt::TokioIo::new(connection), service);
            tokio::pin!(serving);
            tokio::pin!(stop);
            let result = tokio::select! {
                result = serving.as_mut() => result,
                () = &mut stop => {
                    serving.as_mut().graceful_shutdown();
                    serving.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        });
    }
}

/// Completes once `stopping` turns true (or its sender is gone).
async fn stopped(mut stopping: watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}
