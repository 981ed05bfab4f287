//! Who is calling: API keys from settings (operator and service) and, later, Lanyard access
//! tokens. Keys are held only as SHA-256 digests and compared in constant time.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use lanyard_types::caller::{Caller, Denied, MemberPrincipal};

/// Why credentials were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` metadata.
    #[error("missing credentials: send `authorization: Bearer <key>`")]
    Missing,
    /// Not a `Bearer` credential, or not valid text.
    #[error("malformed authorization header: expected `Bearer <key>`")]
    Malformed,
    /// Unknown key or invalid token.
    #[error("invalid credentials")]
    Invalid,
    /// The token could not be checked against revocations (the shared cache and the token
    /// service are both unreachable): never taken as valid.
    #[error("credentials cannot be checked right now")]
    Unavailable,
}

/// The configured API keys, as digests.
#[derive(Clone, Default)]
pub struct ApiKeys {
    operators: Vec<[u8; 32]>,
    services: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("operators", &self.operators.len())
            .field("services", &self.services.len())
            .finish()
    }
}

/// The shortest API key accepted in settings.
pub const MIN_API_KEY_LEN: usize = 16;

impl ApiKeys {
    /// Builds the key set; keys shorter than [`MIN_API_KEY_LEN`] are refused.
    pub fn new<'a>(
        operators: impl IntoIterator<Item = &'a str>,
        services: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, String> {
        let digest_all = |keys: Vec<&str>| -> Result<Vec<[u8; 32]>, String> {
            keys.into_iter()
                .map(|k| {
                    if k.len() < MIN_API_KEY_LEN {
                        Err(format!("API keys must be at least {MIN_API_KEY_LEN} characters"))
                    } else {
                        Ok(digest(k))
                    }
                })
                .collect()
        };
        Ok(Self {
            operators: digest_all(operators.into_iter().collect())?,
            services: digest_all(services.into_iter().collect())?,
        })
    }

    /// Finds the caller a key belongs to. Every configured digest is compared, in constant time,
    /// so the time taken does not reveal which key (or how much of one) matched.
    pub fn lookup(&self, key: &str) -> Option<Caller> {
        let d = digest(key);
        let mut found = None;
        for k in &self.services {
            if bool::from(k.ct_eq(&d)) {
                found = Some(Caller::Service { key_id: key_id(&d) });
            }
        }
        for k in &self.operators {
            if bool::from(k.ct_eq(&d)) && found.is_none() {
                found = Some(Caller::Operator { key_id: key_id(&d) });
            }
        }
        found
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn key_id(d: &[u8; 32]) -> String {
    d[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Verifies Lanyard access tokens; the token service provides the implementation.
#[async_trait::async_trait]
pub trait AccessTokenVerifier: Send + Sync + 'static {
    /// The principal of a valid, unrevoked token, or why it is refused.
    async fn verify(&self, token: &str) -> Result<MemberPrincipal, AuthError>;
}

/// Turns request metadata into a [`Caller`].
#[derive(Clone, Default)]
pub struct Authenticator {
    keys: ApiKeys,
    tokens: Option<Arc<dyn AccessTokenVerifier>>,
}

impl Authenticator {
    /// API keys only.
    pub fn new(keys: ApiKeys) -> Self {
        Self { keys, tokens: None }
    }

    /// Also accepts access tokens through `verifier`.
    pub fn with_access_tokens(mut self, verifier: Arc<dyn AccessTokenVerifier>) -> Self {
        self.tokens = Some(verifier);
        self
    }

    /// Authenticates the value of an `authorization` header.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let (scheme, credential) = header.split_once(' ').ok_or(AuthError::Malformed)?;
        let credential = credential.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || credential.is_empty() {
            return Err(AuthError::Malformed);
        }
        if let Some(caller) = self.keys.lookup(credential) {
            return Ok(caller);
        }
        match &self.tokens {
            // A JWT has two dots; an API key never needs any.
            Some(v) if credential.matches('.').count() == 2 => v.verify(credential).await.map(Caller::Member),
            _ => Err(AuthError::Invalid),
        }
    }
}

/// Authentication as a layer around a gRPC service: every request gets its [`Credential`] in its
/// extensions, and a handler asks for the caller with [`caller_of`] instead of authenticating
/// itself. The credential is checked when asked, so RPCs that need no caller (previews, sign-in)
/// pay nothing for it.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S> Authenticated<S> {
    /// Authenticates the callers of `inner` with `auth`.
    pub fn new(auth: Authenticator, inner: S) -> Self {
        Self { inner, auth: Arc::new(auth) }
    }

    /// The same service, its callers authenticated with `auth` instead: a process serves a
    /// service with the authenticator it has once every service is built, while its in-process
    /// clients (which present API keys) already use it.
    pub fn authenticate_with(self, auth: Authenticator) -> Self {
        Self { inner: self.inner, auth: Arc::new(auth) }
    }

    /// Adjusts the wrapped service (its message size limits, for example).
    pub fn map(self, adjust: impl FnOnce(S) -> S) -> Self {
        Self { inner: adjust(self.inner), auth: self.auth }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for Authenticated<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let header = request.headers().get(http::header::AUTHORIZATION).cloned();
        request.extensions_mut().insert(Credential { auth: self.auth.clone(), header });
        self.inner.call(request)
    }
}

/// What a request presented as its credential, with the authenticator that checks it; put into
/// every request's extensions by [`Authenticated`].
#[derive(Clone)]
pub struct Credential {
    auth: Arc<Authenticator>,
    header: Option<http::HeaderValue>,
}

impl Credential {
    /// The caller, and records its kind on the current span (the per-RPC span declares a
    /// `caller` field).
    pub async fn caller(&self) -> Result<Caller, AuthError> {
        let header = match self.header.as_ref().map(|v| v.to_str()) {
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => return Err(AuthError::Malformed),
            None => None,
        };
        let caller = self.auth.authenticate(header).await?;
        tracing::Span::current().record("caller", caller.kind());
        Ok(caller)
    }
}

/// The caller of a request served behind [`Authenticated`]. A request that did not pass through
/// the layer has no credential, and is refused as one without credentials would be.
pub async fn caller_of<T>(request: &tonic::Request<T>) -> Result<Caller, AuthError> {
    match request.extensions().get::<Credential>() {
        Some(credential) => credential.caller().await,
        None => {
            tracing::error!("a request reached a handler without passing the authentication layer");
            Err(AuthError::Missing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OP: &str = "operator-key-0123456789";
    const SVC: &str = "service-key-0123456789";

    fn auth() -> Authenticator {
        Authenticator::new(ApiKeys::new([OP], [SVC]).unwrap())
    }

    #[tokio::test]
    async fn recognizes_keys() {
        let a = auth();
        let (op, svc) = (format!("Bearer {OP}"), format!("bearer {SVC}"));
        assert!(matches!(a.authenticate(Some(&op)).await, Ok(Caller::Operator { .. })));
        assert!(matches!(a.authenticate(Some(&svc)).await, Ok(Caller::Service { .. })));
        assert_eq!(a.authenticate(None).await, Err(AuthError::Missing));
        assert_eq!(a.authenticate(Some(OP)).await, Err(AuthError::Malformed));
        assert_eq!(a.authenticate(Some(&format!("Basic {OP}"))).await, Err(AuthError::Malformed));
        assert_eq!(a.authenticate(Some("Bearer ")).await, Err(AuthError::Malformed));
        assert_eq!(a.authenticate(Some("Bearer operator-key-012345678X")).await, Err(AuthError::Invalid));
    }

    #[test]
    fn refuses_short_keys() {
        assert!(ApiKeys::new(["short"], []).is_err());
    }
}
