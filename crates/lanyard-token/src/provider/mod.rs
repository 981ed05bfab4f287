//! Lanyard as an OpenID Provider for the product's applications, on the token service's HTTP
//! listener: authorization code with PKCE (S256 only) at `/oauth2/authorize` and
//! `/oauth2/token`, federated to the organization's own provider (code flow with PKCE, state and
//! nonce, the connection's sealed client secret) through `/oauth2/callback`, and
//! `/oauth2/revoke` (RFC 7009), `/oauth2/userinfo`, `/oauth2/logout` (RP-initiated logout).
//!
//! The sign-in itself is the token service's ([`Tokens::sign_in`], the rules `ExchangeToken`
//! applies): this module only carries the browser there and back. `clients` holds the registered
//! applications, `store` the flows and codes, `authorize` the browser's side, `token` the
//! application's side, `pages` what a person sees when something stops.
//!
//! Rules kept here: a redirect URI is trusted only after it matched a registered one byte for
//! byte, and errors before that are pages, never redirects; flows are single use, expire in
//! [`FLOW_TTL`] and belong to the browser holding their `__Host-` cookie; codes are single use,
//! live [`CODE_TTL`], and are bound to the client, the redirect URI and the PKCE challenge, and a
//! second use ends the session the first one started; a refused request writes nothing.

mod authorize;
pub mod clients;
mod hosted;
mod pages;
pub mod store;
mod text;
mod token;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::service::Tokens;
pub use clients::{ClientType, Clients, NewClient, OAuthClient, Registered};
use lanyard_core::limit::{PeerLimiter, PeerRule};
pub use pages::Trouble;
pub use store::ProviderStore;

/// How long a sign-in may stay at the organization's provider.
pub const FLOW_TTL: Duration = Duration::from_secs(600);
/// How long an authorization code lives.
pub const CODE_TTL: Duration = Duration::from_secs(60);
/// The most parameters one request may carry, and the longest value.
const MAX_PARAMS: usize = 40;
const MAX_VALUE_LEN: usize = 4096;

/// The provider's endpoints. Cheap to clone.
#[derive(Clone)]
pub struct Provider {
    inner: Arc<Inner>,
}

struct Inner {
    tokens: Tokens,
    /// Requests per peer to every endpoint here, before anything else runs.
    limiter: PeerLimiter,
    peer_rule: PeerRule,
    clients: Clients,
    store: ProviderStore,
    /// The issuer exactly as configured: `iss` of every token and of every authorization
    /// response, as in the discovery document.
    issuer: String,
    /// The issuer without a trailing slash, the base of the endpoints' URLs.
    base: String,
    /// The application's login route, for hosted pages reached without an application.
    login_url: Option<String>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("issuer", &self.inner.issuer).finish_non_exhaustive()
    }
}

impl Provider {
    /// The provider of `issuer` over the token service; `login_url` is the application's
    /// login route for hosted pages reached without an application; `limit` counts every
    /// request per peer (the peer found by its rule from the connection's
    /// `ConnectInfo<SocketAddr>`).
    pub fn new(
        tokens: Tokens,
        clients: Clients,
        store: ProviderStore,
        (issuer, login_url): (&str, Option<String>),
        (limiter, peer_rule): (PeerLimiter, PeerRule),
    ) -> Self {
        let base = issuer.trim_end_matches('/').to_owned();
        let issuer = issuer.to_owned();
        Self { inner: Arc::new(Inner { tokens, limiter, peer_rule, clients, store, issuer, base, login_url }) }
    }

    /// The routes, each answer with the security headers; merge into the token service's HTTP
    /// router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/oauth2/authorize", get(authorize::authorize))
            .route("/oauth2/callback", get(authorize::callback))
            .route("/oauth2/token", post(token::token))
            .route("/oauth2/revoke", post(token::revoke))
            .route("/oauth2/userinfo", get(token::userinfo).post(token::userinfo))
            .route("/oauth2/logout", get(token::logout))
            .route("/invite/{token}", get(hosted::invitation).post(hosted::accept_invitation))
            .route("/sign-in", get(hosted::sign_in_form).post(hosted::sign_in))
            .route("/oauth2/select", post(hosted::select))
            .route(pages::STYLESHEET_PATH, get(pages::stylesheet))
            .route_layer(axum::middleware::from_fn_with_state(self.clone(), limit))
            .layer(axum::middleware::map_response(security_headers))
            .with_state(self.clone())
    }

    /// The flows, codes and client bindings (tests read their counts).
    pub fn store(&self) -> &ProviderStore {
        &self.inner.store
    }

    /// The registered applications.
    pub fn clients(&self) -> &Clients {
        &self.inner.clients
    }

    fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }

    fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The application's login route, if configured.
    fn login_url(&self) -> Option<&str> {
        self.inner.login_url.as_deref()
    }

    /// Email-first sign-in.
    fn sign_in_url(&self) -> String {
        format!("{}/sign-in", self.inner.base)
    }

    /// Where the organization's provider sends the browser back.
    fn callback_url(&self) -> String {
        format!("{}/oauth2/callback", self.inner.base)
    }
}

/// The discovery fields of the provider, merged into `/.well-known/openid-configuration`.
pub fn discovery(issuer: &str) -> serde_json::Value {
    let issuer = issuer.trim_end_matches('/');
    serde_json::json!({
        "authorization_endpoint": format!("{issuer}/oauth2/authorize"),
        "token_endpoint": format!("{issuer}/oauth2/token"),
        "revocation_endpoint": format!("{issuer}/oauth2/revoke"),
        "userinfo_endpoint": format!("{issuer}/oauth2/userinfo"),
        "end_session_endpoint": format!("{issuer}/oauth2/logout"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        // What /oauth2/token takes (ExchangeToken's grants are gRPC's).
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "email", "profile"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "sid", "email", "name",
                             "org_id", "org_slug", "roles"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
    })
}

/// Takes one request of the peer from the limiter before anything else runs: `429` with
/// `Retry-After` past it (a page for a browser, JSON for an application).
async fn limit(State(p): State<Provider>, request: Request, next: Next) -> Response {
    let remote = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let forwarded = request.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let peer = p.inner.peer_rule.peer(remote, forwarded);
    let Err(limited) = p.inner.limiter.check(peer) else { return next.run(request).await };
    let path = request.uri().path();
    let mut response = if path == "/oauth2/token" || path == "/oauth2/revoke" || path == "/oauth2/userinfo" {
        let body = serde_json::json!({ "error": "temporarily_unavailable", "error_description": "too many requests" });
        json_response(StatusCode::TOO_MANY_REQUESTS, body.to_string())
    } else {
        pages::page(Trouble::RateLimited)
    };
    let wait = limited.retry_after.as_secs().max(1).to_string();
    if let Ok(v) = HeaderValue::from_str(&wait) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// `Content-Security-Policy` (unless a page with forms set its own), `X-Content-Type-Options`
/// and `Referrer-Policy` on every answer.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
        );
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The parameters of a query or a form body: each at most once (RFC 6749 3.1), bounded.
#[derive(Debug, Default)]
struct Params(HashMap<String, String>);

impl Params {
    fn parse(raw: Option<&str>) -> Result<Self, &'static str> {
        let mut map = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            if map.len() >= MAX_PARAMS || v.len() > MAX_VALUE_LEN {
                return Err("too many or too long parameters");
            }
            if map.insert(k.into_owned(), v.into_owned()).is_some() {
                return Err("a parameter is repeated");
            }
        }
        Ok(Self(map))
    }

    /// A parameter; an empty one counts as absent.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }
}

/// A cookie of the request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Equal, in constant time.
fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The PKCE S256 challenge of `verifier` (RFC 7636).
fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `s` is a PKCE verifier (43 to 128 unreserved characters) or an S256 challenge (43).
fn pkce_shaped(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// An OAuth error answer (RFC 6749 5.2), never cached.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = serde_json::json!({ "error": error, "error_description": description });
    let mut response = json_response(status, body.to_string());
    if status == StatusCode::UNAUTHORIZED {
        let challenge = if error == "invalid_token" {
            HeaderValue::from_static("Bearer error=\"invalid_token\"")
        } else {
            HeaderValue::from_static("Basic realm=\"lanyard\"")
        };
        response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}

/// A JSON answer that no cache keeps (it holds tokens, or an error about them).
fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// A `303 See Other` to `location`.
fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v), (header::CACHE_CONTROL, no_store())]).into_response(),
        Err(_) => pages::page(Trouble::Internal),
    }
}

fn no_store() -> HeaderValue {
    HeaderValue::from_static("no-store")
}

/// `uri` (a registered URI, or the provider's endpoint) with `pairs` added to its query.
fn with_query(uri: &str, pairs: &[(&str, &str)]) -> Option<String> {
    let mut url = url::Url::parse(uri).ok()?;
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in pairs {
            query.append_pair(k, v);
        }
    }
    Some(url.to_string())
}

/// The client credentials of a token-endpoint request (RFC 6749 2.3.1).
struct Credentials {
    client_id: Option<String>,
    secret: Option<String>,
    basic: bool,
}

fn credentials(headers: &HeaderMap, form: &Params) -> Result<Credentials, &'static str> {
    let form_id = form.get("client_id");
    let form_secret = form.get("client_secret");
    let basic = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("basic").then(|| rest.trim().to_owned())
    });
    let Some(basic) = basic else {
        return Ok(Credentials {
            client_id: form_id.map(str::to_owned),
            secret: form_secret.map(str::to_owned),
            basic: false,
        });
    };
    if form_secret.is_some() {
        return Err("use one client authentication method");
    }
    let decoded = STANDARD.decode(basic).map_err(|_| "malformed Basic credentials")?;
    let decoded = String::from_utf8(decoded).map_err(|_| "malformed Basic credentials")?;
    let (id, secret) = decoded.split_once(':').ok_or("malformed Basic credentials")?;
    let unescape = |s: &str| -> String {
        url::form_urlencoded::parse(format!("x={s}").as_bytes()).map(|(_, v)| v.into_owned()).collect()
    };
    let (id, secret) = (unescape(id), unescape(secret));
    if form_id.is_some_and(|f| f != id) {
        return Err("client_id differs from the authenticated client");
    }
    Ok(Credentials { client_id: Some(id), secret: Some(secret), basic: true })
}

impl Provider {
    /// The client a token-endpoint request authenticates as: a confidential client by its
    /// secret (Basic or in the form), a public client by its id alone. Anything else is the
    /// answer to send (`invalid_client`, 401).
    async fn authenticate_client(&self, headers: &HeaderMap, form: &Params) -> Result<OAuthClient, Response> {
        let creds =
            credentials(headers, form).map_err(|why| oauth_error(StatusCode::BAD_REQUEST, "invalid_request", why))?;
        let refused = || oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed");
        let Some(id) = creds.client_id.as_deref() else { return Err(refused()) };
        let client = match self.clients().get(id).await {
            Ok(Some(c)) => c,
            Ok(None) => return Err(refused()),
            Err(e) => return Err(self.server_error(e)),
        };
        let ok = match (client.client_type, creds.secret.as_deref()) {
            (ClientType::Confidential, Some(secret)) => client.secret_matches(secret),
            (ClientType::Public, None) => !creds.basic,
            _ => false,
        };
        if ok {
            Ok(client)
        } else {
            tracing::info!(client_id = id, "OAuth client authentication failed");
            Err(refused())
        }
    }

    /// `server_error`, the cause logged.
    fn server_error(&self, e: crate::error::TokenError) -> Response {
        tracing::error!(error = %e, "OAuth endpoint failed");
        oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_refuse_repeats() {
        assert!(Params::parse(Some("a=1&b=2")).is_ok());
        assert!(Params::parse(Some("a=1&a=1")).is_err());
        assert_eq!(Params::parse(Some("a=&b=x")).unwrap().get("a"), None);
    }

    #[test]
    fn s256_is_rfc7636() {
        // RFC 7636, appendix B.
        assert_eq!(s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn cookies_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; __Host-x=2"));
        assert_eq!(cookie(&h, "__Host-x"), Some("2"));
        assert_eq!(cookie(&h, "x"), None);
    }
}
