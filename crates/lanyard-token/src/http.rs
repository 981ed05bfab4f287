//! The token service's small HTTP surface for JWT consumers that do not speak gRPC (Envoy's
//! `jwt_authn`, Istio's `RequestAuthentication`, ordinary JWT libraries):
//! `/.well-known/jwks.json` and `/.well-known/openid-configuration`, with cache headers. The
//! OpenID Provider's endpoints (`crate::provider`) are served beside them.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use lanyard_core::Timestamp;

use crate::keys::KeyRing;

#[derive(Clone)]
struct Wellknown {
    ring: KeyRing,
    issuer: String,
    max_age: Duration,
}

/// The router; serve it with `axum::serve` on the token service's HTTP listener.
///
/// `max_age` is how long consumers may cache the documents. It must stay below the time a `next`
/// key is published before it signs (the rotation interval), so every consumer sees a key before
/// tokens signed with it arrive.
pub fn router(ring: KeyRing, issuer: String, max_age: Duration) -> Router {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(openid_configuration))
        .with_state(Wellknown { ring, issuer, max_age })
}

fn json(body: String, max_age: Duration) -> Response {
    let cache = format!("public, max-age={}", max_age.as_secs());
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, HeaderValue::from_str(&cache).unwrap_or(HeaderValue::from_static("no-cache"))),
        ],
        body,
    )
        .into_response()
}

async fn jwks(State(w): State<Wellknown>) -> Response {
    json(w.ring.jwks_json(Timestamp::now()), w.max_age)
}

async fn openid_configuration(State(w): State<Wellknown>) -> Response {
    let issuer = w.issuer.trim_end_matches('/');
    let mut algs: Vec<String> = w.ring.jwks(Timestamp::now()).into_iter().map(|k| k.alg).collect();
    algs.sort();
    algs.dedup();
    let mut doc = serde_json::json!({
        "issuer": w.issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
    });
    // The OpenID Provider endpoints (crate::provider).
    if let (Some(doc), serde_json::Value::Object(provider)) = (doc.as_object_mut(), crate::provider::discovery(issuer))
    {
        doc.extend(provider);
    }
    json(doc.to_string(), w.max_age)
}
