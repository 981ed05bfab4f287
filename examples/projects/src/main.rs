//! Runs the example projects service next to a running Lanyard:
//!
//! ```text
//! LANYARD_TOKEN_URL=http://127.0.0.1:50051 \
//! LANYARD_JWKS_URL=http://127.0.0.1:50052/.well-known/jwks.json \
//! LANYARD_TOKEN_ISSUER=http://127.0.0.1:50052 \
//! LANYARD_REDIS_URL=redis://127.0.0.1:6379 \
//! PROJECTS_ADDR=127.0.0.1:50061 cargo run -p lanyard-example-projects
//! ```
//!
//! With `LANYARD_REDIS_URL` (the token service's Redis and `LANYARD_REDIS_KEY_PREFIX`) decisions
//! come from memory and Redis, revocations arrive through the invalidation channel; without it,
//! every decision not in memory is asked of the token service.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lanyard_authz::{Audience, Authorizer, Facts, Fallback, JwksKeys};
use lanyard_core::cache::Cache;
use lanyard_proto::authz::v1::authorization_service_client::AuthorizationServiceClient;

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let jwks = var("LANYARD_JWKS_URL", "http://127.0.0.1:50052/.well-known/jwks.json");
    let keys = JwksKeys::fetch(&jwks).await.context("fetching the JWKS")?;
    let prefix = var("LANYARD_REDIS_KEY_PREFIX", "lanyard");
    let cache = match std::env::var("LANYARD_REDIS_URL") {
        Ok(url) => Cache::redis(&url, &prefix).await.context("connecting to Redis")?,
        Err(_) => Cache::local(&prefix),
    };
    let facts = Facts::new(cache);
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let _subscription = facts.subscribe(stopped);
    let endpoint = tonic::transport::Endpoint::from_shared(var("LANYARD_TOKEN_URL", "http://127.0.0.1:50051"))?
        .connect_timeout(Duration::from_secs(2));
    let token_service = AuthorizationServiceClient::new(endpoint.connect_lazy());
    let audience = Audience {
        issuer: var("LANYARD_TOKEN_ISSUER", "http://127.0.0.1:50052"),
        audience: var("LANYARD_TOKEN_AUDIENCE", "lanyard"),
    };
    let authorizer = Authorizer::new(Arc::new(keys), audience, facts, Fallback::Remote(token_service));
    let addr = var("PROJECTS_ADDR", "127.0.0.1:50061");
    let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "projects service is serving");
    lanyard_example_projects::serve(listener, authorizer, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
