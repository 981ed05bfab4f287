//! The one way a Lanyard service calls another: [`TenancyClient`] and [`InvitationClient`], the
//! generated tonic clients over [`lanyard_core::transport::GrpcTransport`] (the other service's
//! server object in the all-in-one process, a channel across processes — one code path, two
//! transports, both carrying the caller's trace context), with the service key on every call.
//!
//! Callers see domain values only (`lanyard_core` values and the small types of [`values`]);
//! protobuf stays inside this crate (`convert`). Every failure is a [`ClientError`], which keeps
//! the gRPC code and the stable reason (`ErrorInfo.reason`) so that each service maps it into
//! its own error enum. Every listing drains its pages through [`paginate`].
//!
//! ```ignore
//! let tenancy = TenancyClient::in_process(tenancy_server, &service_key)?;                 // all-in-one
//! let tenancy = TenancyClient::connect_lazy("http://tenancy:50051", timeout, &service_key)?; // across processes
//! ```

use std::future::Future;
use std::time::Duration;

use lanyard_core::transport::GrpcTransport;
use secrecy::{ExposeSecret, SecretString};
use tonic::body::Body;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::Code;

mod convert;
mod invitation;
mod tenancy;
pub mod values;

pub use invitation::InvitationClient;
pub use tenancy::TenancyClient;
pub use values::*;

/// How many items one page of a listing asks for.
pub const PAGE_SIZE: i32 = 500;

/// The most pages one listing reads: a server whose page tokens never end cannot keep its caller
/// looping (at [`PAGE_SIZE`], half a million items).
pub const MAX_PAGES: usize = 1_000;

/// Why a call to another service failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service refused the call for a reason of its own (a business error: invalid argument,
    /// not found, already exists, permission denied, failed precondition, resource exhausted,
    /// out of range). The status is kept whole, details and all, so a caller may pass it on.
    #[error("refused: {}", .0.message())]
    Rejected(tonic::Status),
    /// The service failed or could not be reached (unavailable, deadline, internal, a
    /// misconfigured service key...): nothing the end caller did wrong.
    #[error("failed: {0}")]
    Failed(tonic::Status),
    /// The answer lacked what the call promises, held a value that does not parse, or a listing
    /// did not end.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

impl ClientError {
    /// Classifies a status: business errors are rejections, the rest failures.
    pub fn from_status(status: tonic::Status) -> Self {
        match status.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::ResourceExhausted
            | Code::OutOfRange => Self::Rejected(status),
            _ => Self::Failed(status),
        }
    }

    /// The gRPC code the service answered with (`INTERNAL` for a malformed answer).
    pub fn code(&self) -> Code {
        match self {
            Self::Rejected(s) | Self::Failed(s) => s.code(),
            Self::Malformed(_) => Code::Internal,
        }
    }

    /// The stable reason (`ErrorInfo.reason`) of a rejection; `None` for anything else.
    pub fn reason(&self) -> Option<String> {
        match self {
            Self::Rejected(s) => lanyard_core::status::reason_of(s),
            _ => None,
        }
    }

    /// Whether the service refused the call's arguments as malformed (`INVALID_ARGUMENT`).
    pub fn is_invalid_argument(&self) -> bool {
        self.code() == Code::InvalidArgument
    }

    /// Whether this is a rejection with the stable reason `reason`.
    pub fn is(&self, reason: &str) -> bool {
        self.reason().as_deref() == Some(reason)
    }
}

/// A listing that did not end within [`MAX_PAGES`] pages.
#[derive(Debug, thiserror::Error)]
#[error("the listing did not end within {MAX_PAGES} pages")]
pub struct TooManyPages;

impl From<TooManyPages> for ClientError {
    fn from(e: TooManyPages) -> Self {
        Self::Malformed(e.to_string())
    }
}

/// Drains a paged listing: `page(token)` fetches the page at `token` (empty for the first) and
/// returns its items and the next token (empty after the last page). Stops with
/// [`TooManyPages`] after [`MAX_PAGES`] pages.
pub async fn paginate<T, E, F, Fut>(mut page: F) -> Result<Vec<T>, E>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String), E>>,
    E: From<TooManyPages>,
{
    let mut all = Vec::new();
    let mut token = String::new();
    for _ in 0..MAX_PAGES {
        let (items, next) = page(token).await?;
        all.extend(items);
        if next.is_empty() {
            return Ok(all);
        }
        token = next;
    }
    Err(TooManyPages.into())
}

/// A client that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    InvalidKey(#[from] lanyard_core::transport::InvalidKey),
    #[error("the service URL is not usable: {0}")]
    Url(#[from] tonic::transport::Error),
}

/// A service's tonic server object in this process (`XServiceServer<…>`), called without a socket.
pub trait LocalServer:
    tower::Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> LocalServer for S where
    S: tower::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// The transport and the service key every call presents.
#[derive(Clone)]
struct Link {
    transport: GrpcTransport,
    authorization: MetadataValue<Ascii>,
}

impl Link {
    fn new(transport: GrpcTransport, service_key: &SecretString) -> Result<Self, SetupError> {
        let authorization = lanyard_core::transport::bearer(service_key.expose_secret())?;
        Ok(Self { transport, authorization })
    }

    fn in_process(server: impl LocalServer, service_key: &SecretString) -> Result<Self, SetupError> {
        Self::new(lanyard_core::transport::in_process(server), service_key)
    }

    fn connect_lazy(url: &str, timeout: Duration, service_key: &SecretString) -> Result<Self, SetupError> {
        Self::new(lanyard_core::transport::connect_lazy(url, timeout)?, service_key)
    }

    /// `message` as a request that presents the service key.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", self.authorization.clone());
        request
    }
}

/// Reads an outcome.
fn answer<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Result<T, ClientError> {
    r.map(tonic::Response::into_inner).map_err(ClientError::from_status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanyard_core::status::Problem;

    #[test]
    fn business_errors_are_rejections_with_their_reason() {
        let e =
            ClientError::from_status(Problem::new(Code::ResourceExhausted, "SEATS_EXHAUSTED", "full").into_status());
        assert!(matches!(e, ClientError::Rejected(_)));
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(e.is("SEATS_EXHAUSTED"));
        let e = ClientError::from_status(Problem::new(Code::Unavailable, "DATABASE_BUSY", "busy").into_status());
        assert!(matches!(e, ClientError::Failed(_)));
        assert_eq!(e.code(), Code::Unavailable);
        assert_eq!(e.reason(), None, "only a rejection has a reason to react to");
        assert_eq!(ClientError::Malformed("x".into()).code(), Code::Internal);
    }

    #[tokio::test]
    async fn paginate_drains_every_page_in_order() {
        let pages = |token: String| async move {
            Ok::<_, ClientError>(match token.as_str() {
                "" => (vec![1, 2], "a".to_owned()),
                "a" => (vec![3], "b".to_owned()),
                _ => (vec![4], String::new()),
            })
        };
        assert_eq!(paginate(pages).await.unwrap(), vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn paginate_stops_a_listing_that_never_ends() {
        let mut calls = 0;
        let endless = |_token: String| {
            calls += 1;
            async { Ok::<_, ClientError>((vec![0u8], "again".to_owned())) }
        };
        let err = paginate(endless).await.unwrap_err();
        assert!(matches!(err, ClientError::Malformed(_)), "{err:?}");
        assert_eq!(calls, MAX_PAGES);
    }

    #[tokio::test]
    async fn paginate_stops_at_the_first_error() {
        let failing = |token: String| async move {
            if token.is_empty() {
                Ok((vec![1], "next".to_owned()))
            } else {
                Err(ClientError::Malformed("boom".into()))
            }
        };
        assert!(paginate(failing).await.is_err());
    }
}
