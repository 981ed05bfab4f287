//! How a service calls another: the generated tonic client over a type-erased transport, which is
//! a channel to another process or the other service's server object in this process — one code
//! path, two transports — carrying the caller's trace context either way.

use std::time::Duration;

use tonic::body::Body;
use tonic::metadata::{Ascii, MetadataValue};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

use crate::tls::ClientTls;
use crate::trace::PropagateTraceLayer;

/// A gRPC transport: anything that turns HTTP/2 gRPC requests into responses.
pub type GrpcTransport = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, TransportError>;

/// A transport failure (connection refused, reset, timeout...). A concrete type rather than a
/// boxed trait object, so the futures of the generated clients stay provably `Send`.
#[derive(Debug)]
pub struct TransportError(tonic::codegen::StdError);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// A transport to a service of this process: requests go through its tonic server code
/// (decoding, authentication, error details) without a socket.
pub fn in_process<S>(server: S) -> GrpcTransport
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(PropagateTraceLayer.layer(server).map_err(|never| match never {}))
}

/// A transport over `channel` to a service in another process.
pub fn over_channel(channel: tonic::transport::Channel) -> GrpcTransport {
    BoxCloneSyncService::new(PropagateTraceLayer.layer(channel).map_err(|e| TransportError(Box::new(e))))
}

/// A transport to a service in another process, connected lazily to `url`, with a per-call
/// timeout. An `https://` URL is reached over TLS trusting the system's roots only; see
/// [`connect_lazy_tls`] for a private CA or a client certificate.
pub fn connect_lazy(url: &str, timeout: Duration) -> Result<GrpcTransport, tonic::transport::Error> {
    connect_lazy_tls(url, timeout, &ClientTls::default())
}

/// As [`connect_lazy`]; an `https://` URL is reached over TLS with `tls` (extra roots, and the
/// certificate presented when the peer requires one).
pub fn connect_lazy_tls(
    url: &str,
    timeout: Duration,
    tls: &ClientTls,
) -> Result<GrpcTransport, tonic::transport::Error> {
    let channel =
        crate::tls::endpoint(url, tls)?.connect_timeout(Duration::from_secs(5)).timeout(timeout).connect_lazy();
    Ok(over_channel(channel))
}

/// The `authorization` value that presents a service key.
pub fn bearer(service_key: &str) -> Result<MetadataValue<Ascii>, InvalidKey> {
    format!("Bearer {service_key}").parse().map_err(|_| InvalidKey)
}

/// A key that cannot travel in a header.
#[derive(Debug, thiserror::Error)]
#[error("the service key must be printable ASCII")]
pub struct InvalidKey;
