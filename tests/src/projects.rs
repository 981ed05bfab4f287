//! The example projects service (examples/projects), started in the test process behind
//! `lanyard-authz`, verifying tokens against a running Lanyard's JWKS over HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use lanyard_authz::{Audience, Authorizer, Facts, Fallback, JwksKeys};
use lanyard_core::cache::Cache;
use lanyard_example_projects::pb::project_service_client::ProjectServiceClient;
use lanyard_proto::authz::v1::authorization_service_client::AuthorizationServiceClient;
use tokio::sync::{oneshot, watch};
use tonic::transport::Channel;

use crate::TestApp;

/// A running projects service.
pub struct ProjectsApp {
    pub addr: SocketAddr,
    pub facts: Facts,
    stop: Option<oneshot::Sender<()>>,
    _subscription: (watch::Sender<bool>, tokio::task::JoinHandle<()>),
}

impl ProjectsApp {
    /// Starts it with `cache` (Redis shared with `lanyard`, or the in-process cache), asking
    /// `token_service` (an endpoint of Lanyard's token service) when the cache cannot answer.
    pub async fn start(lanyard: &TestApp, cache: Cache, token_service: &str) -> Self {
        let http = lanyard.http_addr.expect("the token service serves HTTP");
        let keys = JwksKeys::fetch(&format!("http://{http}/.well-known/jwks.json")).await.expect("JWKS");
        let facts = Facts::new(cache);
        let (subscription, stopped) = watch::channel(false);
        let subscribed = facts.subscribe(stopped);
        let channel = Channel::from_shared(token_service.to_owned()).expect("endpoint").connect_lazy();
        let audience = Audience { issuer: "http://127.0.0.1:50052".into(), audience: "lanyard".into() };
        let authorizer = Authorizer::new(
            Arc::new(keys),
            audience,
            facts.clone(),
            Fallback::Remote(AuthorizationServiceClient::new(channel)),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(lanyard_example_projects::serve(listener, authorizer, async move {
            let _ = stopped.await;
        }));
        Self { addr, facts, stop: Some(stop), _subscription: (subscription, subscribed) }
    }

    /// A client of it.
    pub fn client(&self) -> ProjectServiceClient<Channel> {
        ProjectServiceClient::new(
            Channel::from_shared(format!("http://{}", self.addr)).expect("endpoint").connect_lazy(),
        )
    }
}

impl Drop for ProjectsApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A request carrying `authorization: Bearer <token>` (or nothing).
pub fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    }
    request
}
