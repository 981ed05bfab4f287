//! `JwksKeys` against a loopback HTTP server serving a JWKS the test controls (and counting its
//! requests): a published key verifies; an unknown `kid` is refused and costs at most one fetch
//! per `MIN_REFETCH` however often it is presented; a key rotated in is accepted once a refetch is
//! allowed, with concurrent callers sharing that one fetch; keys without `kid` or `alg` are
//! ignored; a server that errs, redirects or answers something other than a JWKS fails the fetch.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use lanyard_authz::{Authorizer, Decision, Facts, Fallback, JwksKeys};
use lanyard_core::cache::Cache;
use serde_json::{json, Value};
use support::{audience, unique_prefix, FakeSource, Member, Signer};
use tokio::sync::Barrier;

/// What the server answers.
#[derive(Clone)]
enum Served {
    Set(Value),
    Status(StatusCode),
    Text(&'static str),
    Redirect,
}

#[derive(Clone)]
struct JwksServer {
    url: String,
    served: Arc<Mutex<Served>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(served: Served) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().expect("address"));
        let server = Self { url, served: Arc::new(Mutex::new(served)), hits: Arc::default() };
        let state = server.clone();
        let router = axum::Router::new()
            .route("/.well-known/jwks.json", axum::routing::get(answer))
            .route("/elsewhere", axum::routing::get(answer))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
        server
    }

    fn serve(&self, served: Served) {
        *self.served.lock().expect("served") = served;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn answer(axum::extract::State(server): axum::extract::State<JwksServer>) -> Response {
    server.hits.fetch_add(1, Ordering::SeqCst);
    let served = server.served.lock().expect("served").clone();
    match served {
        Served::Set(set) => ([(header::CONTENT_TYPE, "application/json")], set.to_string()).into_response(),
        Served::Status(status) => (status, "no").into_response(),
        Served::Text(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Served::Redirect => (StatusCode::FOUND, [(header::LOCATION, "/elsewhere")]).into_response(),
    }
}

fn set(signers: &[&Signer]) -> Served {
    Served::Set(json!({ "keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>() }))
}

/// An authorizer verifying with `keys`, whose fact owner admits `member`.
fn authorizer(keys: JwksKeys, member: &Member) -> Authorizer {
    let source = Arc::new(FakeSource::default());
    source.admit(member);
    Authorizer::new(Arc::new(keys), audience(), Facts::new(Cache::local(&unique_prefix())), Fallback::Source(source))
}

async fn decide(authorizer: &Authorizer, token: &str) -> Decision {
    authorizer.check(token, None, &[]).await.expect("a decision").token
}

#[tokio::test]
async fn a_published_key_verifies_and_unknown_kids_cost_at_most_one_fetch_per_min_refetch() {
    let k1 = Signer::new("k1");
    let server = JwksServer::start(set(&[&k1])).await;
    let started = Instant::now();
    let keys = JwksKeys::fetch(&server.url).await.expect("fetch");
    assert_eq!(server.hits(), 1);
    let m = Member::new(&["projects:read"]);
    let authz = authorizer(keys, &m);
    assert_eq!(decide(&authz, &k1.sign(&m.claims())).await, Decision::Allowed);

    // Many tokens under kids nobody published, some at once.
    let strangers: Vec<String> = (0..8).map(|i| Signer::new(&format!("stranger-{i}")).sign(&m.claims())).collect();
    for token in &strangers {
        assert_eq!(decide(&authz, token).await, Decision::TokenInvalid);
    }
    let barrier = Arc::new(Barrier::new(strangers.len()));
    let tasks: Vec<_> = strangers
        .into_iter()
        .map(|token| {
            let (authz, barrier) = (authz.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                decide(&authz, &token).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task"), Decision::TokenInvalid);
    }
    let windows = started.elapsed().as_secs() / JwksKeys::MIN_REFETCH.as_secs();
    assert!(server.hits() <= 1 + windows as usize, "{} fetches in {windows} refetch windows", server.hits());
    assert_eq!(decide(&authz, &k1.sign(&m.claims())).await, Decision::Allowed, "the known key still verifies");
}

/// Waits out `MIN_REFETCH` once (the rate limit is measured with `std::time::Instant`).
#[tokio::test]
async fn a_rotated_in_key_is_accepted_after_min_refetch_with_one_shared_fetch() {
    let (k1, k2) = (Signer::new("k1"), Signer::new("k2"));
    let server = JwksServer::start(set(&[&k1])).await;
    let keys = JwksKeys::fetch(&server.url).await.expect("fetch");
    let fetched = tokio::time::Instant::now();
    let m = Member::new(&["projects:read"]);
    let authz = authorizer(keys, &m);

    server.serve(set(&[&k1, &k2]));
    let rotated = k2.sign(&m.claims());
    assert_eq!(decide(&authz, &rotated).await, Decision::TokenInvalid, "within MIN_REFETCH of the fetch");
    assert_eq!(server.hits(), 1, "no refetch inside the window");

    tokio::time::sleep_until(fetched + JwksKeys::MIN_REFETCH).await;
    let callers = 8;
    let barrier = Arc::new(Barrier::new(callers));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (authz, barrier, token) = (authz.clone(), barrier.clone(), k2.sign(&m.claims()));
            tokio::spawn(async move {
                barrier.wait().await;
                decide(&authz, &token).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task"), Decision::Allowed, "k2 after the refetch");
    }
    assert_eq!(server.hits(), 2, "concurrent callers shared one refetch");
    assert_eq!(decide(&authz, &rotated).await, Decision::Allowed);
    assert_eq!(decide(&authz, &k1.sign(&m.claims())).await, Decision::Allowed, "k1 still published");
}

#[tokio::test]
async fn keys_without_a_kid_or_alg_are_ignored() {
    let (k1, k2) = (Signer::new("k1"), Signer::new("k2"));
    let mut no_alg = k1.jwk();
    no_alg.as_object_mut().expect("object").remove("alg");
    let mut no_kid = k2.jwk();
    no_kid.as_object_mut().expect("object").remove("kid");
    let k3 = Signer::new("k3");
    let server = JwksServer::start(Served::Set(json!({ "keys": [no_alg, no_kid, k3.jwk()] }))).await;
    let keys = JwksKeys::fetch(&server.url).await.expect("fetch");
    let m = Member::new(&["projects:read"]);
    let authz = authorizer(keys, &m);
    assert_eq!(decide(&authz, &k3.sign(&m.claims())).await, Decision::Allowed, "the complete key");
    assert_eq!(decide(&authz, &k1.sign(&m.claims())).await, Decision::TokenInvalid, "no alg");
    assert_eq!(decide(&authz, &k2.sign(&m.claims())).await, Decision::TokenInvalid, "no kid");
}

#[tokio::test]
async fn a_server_that_errs_redirects_or_answers_no_jwks_fails_the_fetch() {
    let k1 = Signer::new("k1");
    let server = JwksServer::start(Served::Status(StatusCode::INTERNAL_SERVER_ERROR)).await;
    for (what, served) in [
        ("500", Served::Status(StatusCode::INTERNAL_SERVER_ERROR)),
        ("404", Served::Status(StatusCode::NOT_FOUND)),
        ("not JSON", Served::Text("<html>hello</html>")),
        ("JSON but no JWKS", Served::Text(r#"{"issuer":"https://auth.lanyard.test"}"#)),
        ("a redirect", Served::Redirect),
    ] {
        server.serve(served);
        assert!(JwksKeys::fetch(&server.url).await.is_err(), "{what}");
    }
    assert_eq!(server.hits(), 5, "the redirect was not followed");
    server.serve(set(&[&k1]));
    assert!(JwksKeys::fetch(&server.url).await.is_ok(), "the control");

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/.well-known/jwks.json", closed.local_addr().expect("address"));
    drop(closed);
    assert!(JwksKeys::fetch(&url).await.is_err(), "nobody listening");
}
