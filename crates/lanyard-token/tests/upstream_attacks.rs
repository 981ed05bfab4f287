//! Every way to forge or misuse an identity provider's ID token is refused: `alg: none`, HS256
//! keyed with the provider's public key, a correct `kid` with another key, `kid` tricks,
//! `jku`/`x5u`/`jwk` headers (and no request ever goes to a URL from a token), `crit`, expired,
//! not yet valid, far-future `iat`, wrong `aud`/`iss` (also a trailing slash), several audiences
//! without `azp`, a nonce mismatch, Google without or with another `hd` or an unverified email,
//! Entra ID with another tenant, or a victim's email under another `oid`.

mod support;

use jsonwebtoken::{Algorithm, EncodingKey};
use lanyard_proto::token::v1 as pb;
use serde_json::{json, Value};
use support::idp::{sign_raw, unsigned, FakeIdp, Kind};
use support::*;
use tonic::Code;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

#[track_caller]
fn refused(result: Result<pb::ExchangeTokenResponse, tonic::Status>, what: &str) -> tonic::Status {
    match result {
        Ok(_) => panic!("{what}: signed in with a bad ID token"),
        Err(status) => {
            assert!(
                matches!(status.code(), Code::Unauthenticated | Code::FailedPrecondition | Code::PermissionDenied),
                "{what}: unexpected status {status:?}"
            );
            status
        }
    }
}

async fn google_attacks(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    // A server the attacker controls, publishing the attacker's key.
    let evil = FakeIdp::start(Kind::Google, "acme.com").await;
    evil.publish_second_key();
    let acme = app.create_org("acme", &["acme.com"], "it@acme.com").await;
    app.connect(&acme, &google).await;

    let good = google.claims("g-it", "it@acme.com");
    let ok = app.sign_in(&google.sign(&good), &acme).await.expect("a genuine token signs in");
    let victim = ok.user_id;

    let rs = |kid: &str| json!({ "alg": "RS256", "kid": kid, "typ": "JWT" });
    let real = &google.key.encoding;
    let attacker = &google.other_key.encoding;
    let t = now();
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", unsigned(&json!({"alg": "none", "kid": "key-1", "typ": "JWT"}), &good), "ID_TOKEN_INVALID"),
        (
            "HS256 keyed with the provider's public key",
            sign_raw(
                &json!({"alg": "HS256", "kid": "key-1", "typ": "JWT"}),
                &good,
                &EncodingKey::from_secret(&google.key.public_der),
                Algorithm::HS256,
            ),
            "ID_TOKEN_INVALID",
        ),
        (
            "HS256 keyed with the provider's JWK",
            sign_raw(
                &json!({"alg": "HS256", "kid": "key-1"}),
                &good,
                &EncodingKey::from_secret(google.key.jwk.to_string().as_bytes()),
                Algorithm::HS256,
            ),
            "ID_TOKEN_INVALID",
        ),
        ("correct kid, another key", sign_raw(&rs("key-1"), &good, attacker, Algorithm::RS256), "ID_TOKEN_INVALID"),
        ("kid path trick", sign_raw(&rs("../../../../etc/passwd"), &good, real, Algorithm::RS256), "ID_TOKEN_INVALID"),
        ("kid SQL trick", sign_raw(&rs("key-1' OR '1'='1"), &good, real, Algorithm::RS256), "ID_TOKEN_INVALID"),
        (
            "jku header",
            sign_raw(
                &json!({"alg": "RS256", "kid": "key-2", "jku": format!("{}/keys", evil.issuer)}),
                &good,
                attacker,
                Algorithm::RS256,
            ),
            "ID_TOKEN_INVALID",
        ),
        (
            "x5u header",
            sign_raw(
                &json!({"alg": "RS256", "kid": "key-2", "x5u": format!("{}/cert.pem", evil.issuer)}),
                &good,
                attacker,
                Algorithm::RS256,
            ),
            "ID_TOKEN_INVALID",
        ),
        (
            "jwk header",
            sign_raw(
                &json!({"alg": "RS256", "kid": "key-2", "jwk": google.other_key.jwk}),
                &good,
                attacker,
                Algorithm::RS256,
            ),
            "ID_TOKEN_INVALID",
        ),
        (
            "crit header",
            sign_raw(&json!({"alg": "RS256", "kid": "key-1", "crit": ["exp"]}), &good, real, Algorithm::RS256),
            "ID_TOKEN_INVALID",
        ),
        (
            "an access token's typ",
            sign_raw(&json!({"alg": "RS256", "kid": "key-1", "typ": "at+jwt"}), &good, real, Algorithm::RS256),
            "ID_TOKEN_INVALID",
        ),
        (
            "expired",
            google.sign(&with(with(good.clone(), "exp", json!(t - 3600)), "iat", json!(t - 7200))),
            "ID_TOKEN_INVALID",
        ),
        ("not yet valid", google.sign(&with(good.clone(), "nbf", json!(t + 3600))), "ID_TOKEN_INVALID"),
        ("far-future iat", google.sign(&with(good.clone(), "iat", json!(t + 3600))), "ID_TOKEN_INVALID"),
        ("no iat", google.sign(&without(good.clone(), "iat")), "ID_TOKEN_INVALID"),
        ("no exp", google.sign(&without(good.clone(), "exp")), "ID_TOKEN_INVALID"),
        ("wrong aud", google.sign(&with(good.clone(), "aud", json!("someone-else"))), "ID_TOKEN_INVALID"),
        (
            "several audiences, no azp",
            google.sign(&without(with(good.clone(), "aud", json!([google.client_id, "other"])), "azp")),
            "ID_TOKEN_INVALID",
        ),
        ("azp of another client", google.sign(&with(good.clone(), "azp", json!("other"))), "ID_TOKEN_INVALID"),
        (
            "iss with a trailing slash",
            google.sign(&with(good.clone(), "iss", json!(format!("{}/", google.issuer)))),
            "SSO_CONNECTION_NOT_FOUND",
        ),
        ("another issuer", evil.sign(&with(good.clone(), "iss", json!(evil.issuer))), "SSO_CONNECTION_NOT_FOUND"),
        ("no hd: not a Workspace account", google.sign(&without(good.clone(), "hd")), "ID_TOKEN_INVALID"),
        ("another hd", google.sign(&with(good.clone(), "hd", json!("evil.com"))), "ID_TOKEN_INVALID"),
        ("email not verified", google.sign(&with(good.clone(), "email_verified", json!(false))), "ID_TOKEN_INVALID"),
        ("not a JWT", "not.a.jwt".to_owned(), "ID_TOKEN_INVALID"),
    ];
    for (what, token, wanted) in cases {
        let status = refused(app.sign_in(&token, &acme).await, what);
        assert_eq!(reason(&status), wanted, "{what}: {status:?}");
    }
    assert_eq!(evil.hits(), 0, "a URL from a token was fetched");

    // A nonce the flow set must be in the token.
    let nonce_grant = |token: String, nonce: &str| {
        pb::exchange_token_request::Grant::IdTokenGrant(pb::IdTokenGrant {
            id_token: token,
            organization_id: acme.clone(),
            nonce: Some(nonce.into()),
        })
    };
    let with_nonce = google.sign(&with(good.clone(), "nonce", json!("n-1")));
    app.exchange(nonce_grant(with_nonce.clone(), "n-1")).await.expect("matching nonce");
    refused(app.exchange(nonce_grant(with_nonce, "n-2")).await, "nonce mismatch");
    refused(app.exchange(nonce_grant(google.sign(&good), "n-1")).await, "nonce missing");

    // The provider rotates its keys: an unknown kid makes Lanyard fetch the JWKS again.
    let before = google.jwks_hits();
    google.publish_second_key();
    let rotated =
        sign_raw(&rs("key-2"), &google.claims("g-it", "it@acme.com"), &google.other_key.encoding, Algorithm::RS256);
    let again = app.sign_in(&rotated, &acme).await.expect("the provider's new key is found");
    assert_eq!(again.user_id, victim);
    assert_eq!(google.jwks_hits(), before + 1);
    app.stop().await;
}

backend_tests!(google_workspace_tokens_are_checked => google_attacks);

async fn azure_and_okta(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let azure = FakeIdp::start(Kind::Azure, "contoso.com").await;
    let other_tenant = FakeIdp::start(Kind::Azure, "contoso.com").await;
    let okta = FakeIdp::start(Kind::Okta, "initech.com").await;
    let contoso = app.create_org("contoso", &["contoso.com"], "it@contoso.com").await;
    app.connect(&contoso, &azure).await;
    let initech = app.create_org("initech", &["initech.com"], "it@initech.com").await;
    app.connect(&initech, &okta).await;

    // Entra ID: the admin signs in; the identity is keyed by (tid, oid), not by the pairwise sub.
    let admin = app.sign_in(&azure.id_token("oid-admin", "it@contoso.com"), &contoso).await.expect("Entra sign-in");
    let principal = app.parts.access_tokens.verify(&admin.access_token, lanyard_core::Timestamp::now()).unwrap();
    assert_eq!(principal.user_id.to_string(), admin.user_id);
    let subject = format!("{}:oid-admin", azure.tenant_id);
    let last = app.parts.store.last_org_of_identity(&azure.issuer, &subject).await.unwrap();
    assert_eq!(last.map(|o| o.to_string()), Some(contoso.clone()));

    // Another tenant's claim, in a token signed by our tenant's keys.
    let good = azure.claims("oid-admin", "it@contoso.com");
    let err = refused(
        app.sign_in(&azure.sign(&with(good.clone(), "tid", json!(other_tenant.tenant_id))), &contoso).await,
        "another tid",
    );
    assert_eq!(reason(&err), "ID_TOKEN_INVALID");
    refused(app.sign_in(&azure.sign(&without(good.clone(), "oid")), &contoso).await, "no oid");
    // Another tenant's token altogether: its issuer is no connection of this organization.
    let err = refused(app.sign_in(&other_tenant.id_token("oid-admin", "it@contoso.com"), &contoso).await, "tenant");
    assert_eq!(reason(&err), "SSO_CONNECTION_NOT_FOUND");
    // A victim's email under another oid, not verified by the tenant: a different person.
    let spoof = without(azure.claims("oid-mallory", "it@contoso.com"), "xms_edov");
    let err = refused(app.sign_in(&azure.sign(&spoof), &contoso).await, "victim's email, other oid");
    assert_status(&err, Code::PermissionDenied, "EMAIL_NOT_VERIFIED");
    // Signed in again as the admin: still the admin's user.
    let again = app.sign_in(&azure.id_token("oid-admin", "it@contoso.com"), &contoso).await.expect("admin again");
    assert_eq!(again.user_id, admin.user_id);

    // Okta: the exact issuer.
    app.sign_in(&okta.id_token("okta-it", "it@initech.com"), &initech).await.expect("Okta sign-in");
    let slash = with(okta.claims("okta-it", "it@initech.com"), "iss", json!(format!("{}/", okta.issuer)));
    refused(app.sign_in(&okta.sign(&slash), &initech).await, "Okta issuer with a trailing slash");
    let unverified = with(okta.claims("okta-x", "it@initech.com"), "email_verified", json!(false));
    let err = refused(app.sign_in(&okta.sign(&unverified), &initech).await, "unverified email is not the member");
    assert_status(&err, Code::PermissionDenied, "EMAIL_NOT_VERIFIED");
    app.stop().await;
}

backend_tests!(entra_id_and_okta_tokens_are_checked => azure_and_okta);

/// Unknown kids do not make Lanyard hammer the provider: one fetch per `min_refetch_interval`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_refetch_at_a_bounded_rate() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app =
        TestApp::spawn_with(&db, |c| c.upstream.min_refetch_interval = std::time::Duration::from_secs(3600)).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let acme = app.create_org("acme", &["acme.com"], "it@acme.com").await;
    app.connect(&acme, &google).await;
    app.sign_in(&google.id_token("g-it", "it@acme.com"), &acme).await.expect("sign in");
    let fetched = google.jwks_hits();
    assert_eq!(fetched, 1);
    for i in 0..20 {
        let header = json!({"alg": "RS256", "kid": format!("unknown-{i}"), "typ": "JWT"});
        let token = sign_raw(&header, &google.claims("g-it", "it@acme.com"), &google.key.encoding, Algorithm::RS256);
        refused(app.sign_in(&token, &acme).await, "unknown kid");
    }
    assert_eq!(google.jwks_hits(), fetched, "unknown kids refetched the JWKS");
    // Known keys keep working from the cache.
    app.sign_in(&google.id_token("g-it", "it@acme.com"), &acme).await.expect("cached key");
    app.stop().await;
}

/// Without the setting, an `http` issuer is refused before anything is fetched from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_issuers_need_the_setting() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn_with(&db, |c| c.upstream.allow_http_loopback = false).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let acme = app.create_org("acme", &["acme.com"], "it@acme.com").await;
    app.connect(&acme, &google).await;
    let err = refused(app.sign_in(&google.id_token("g-it", "it@acme.com"), &acme).await, "http issuer");
    assert_eq!(reason(&err), "ID_TOKEN_INVALID");
    assert_eq!(google.hits(), 0);
    app.stop().await;
}

/// Many first sign-ins at once against a cold cache: one fetch, every one of them signed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_sign_ins_share_one_fetch() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app =
        TestApp::spawn_with(&db, |c| c.upstream.min_refetch_interval = std::time::Duration::from_secs(3600)).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let acme = app.create_org("acme", &["acme.com"], "it@acme.com").await;
    app.connect(&acme, &google).await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (barrier, mut tokens, token) =
            (barrier.clone(), app.tokens.clone(), google.id_token("g-it", "it@acme.com"));
        let acme = acme.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let grant = pb::IdTokenGrant { id_token: token, organization_id: acme, nonce: None };
            let req = pb::ExchangeTokenRequest {
                grant: Some(pb::exchange_token_request::Grant::IdTokenGrant(grant)),
                ..Default::default()
            };
            tokens.exchange_token(req).await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("every concurrent first sign-in succeeds");
    }
    assert_eq!(google.jwks_hits(), 1);
    app.stop().await;
}

// ----- Outbound fetches: what an organization admin can make Lanyard connect to, and read -----

mod outbound {
    use std::net::{IpAddr, SocketAddr};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use lanyard_core::roles::SsoKind;
    use lanyard_core::{ConnectionId, Timestamp};
    use lanyard_proto::tenancy::v1 as tpb;
    use lanyard_testkit::dns::FakeDns;
    use lanyard_token::upstream::{Connection, UpstreamConfig, UpstreamError, UpstreamVerifier};
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::support::idp::{FakeIdp, Kind};
    use super::support::*;

    /// The cap on a discovery or JWKS document (the default of `UpstreamConfig`).
    const CAP: usize = 512 * 1024;

    /// A listener that accepts and counts connections and never answers: where a refused fetch
    /// must never arrive.
    struct Counting {
        addr: SocketAddr,
        connections: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Counting {
        async fn bind(ip: IpAddr) -> Self {
            let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.expect("bind counting listener");
            let addr = listener.local_addr().unwrap();
            let connections = Arc::new(AtomicUsize::new(0));
            let counter = connections.clone();
            let task = tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((stream, _)) = listener.accept().await {
                    counter.fetch_add(1, Ordering::SeqCst);
                    held.push(stream);
                }
            });
            Self { addr, connections, task }
        }

        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }
    }

    impl Drop for Counting {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// What the hostile provider answers on a path.
    #[derive(Clone)]
    enum Reply {
        /// A JSON document; `{base}` in it becomes the provider's own URL.
        Json(String),
        /// `200 OK` and a body that never ends, close-delimited (no Content-Length, no chunking).
        Endless,
        /// `200 OK` and a chunked body that never ends.
        EndlessChunked,
        /// `302 Found` to the location.
        Redirect(String),
    }

    /// A provider on loopback, written over raw sockets so it can misbehave. It counts the
    /// body bytes it managed to write before each connection was closed on it.
    struct Hostile {
        base: String,
        written: Arc<AtomicUsize>,
        finished: Arc<AtomicUsize>,
        started: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Hostile {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl Hostile {
        async fn start(route: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let (written, finished, started): (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicUsize>) =
                (Arc::default(), Arc::default(), Arc::default());
            let route = Arc::new(route);
            let state = (Arc::clone(&written), Arc::clone(&finished), Arc::clone(&started), base.clone());
            let task = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (route, state) = (route.clone(), state.clone());
                    tokio::spawn(async move {
                        let (written, finished, started, base) = state;
                        started.fetch_add(1, Ordering::SeqCst);
                        serve(stream, &*route, &base, &written).await;
                        finished.fetch_add(1, Ordering::SeqCst);
                    });
                }
            });
            Self { base, written, finished, started, task }
        }

        /// Waits until every connection ended, then returns the body bytes written.
        async fn written_after_all_closed(&self) -> usize {
            for _ in 0..600 {
                let started = self.started.load(Ordering::SeqCst);
                if started > 0 && self.finished.load(Ordering::SeqCst) == started {
                    return self.written.load(Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the client never closed its connection to the endless provider");
        }
    }

    async fn serve(
        mut stream: TcpStream,
        route: &(dyn Fn(&str) -> Reply + Send + Sync),
        base: &str,
        written: &AtomicUsize,
    ) {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
            if head.len() > 16 * 1024 {
                return;
            }
        }
        let head = String::from_utf8_lossy(&head);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        match route(&path) {
            Reply::Json(doc) => {
                let doc = doc.replace("{base}", base);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{doc}",
                    doc.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            }
            Reply::Redirect(location) => {
                let reply = format!(
                    "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            }
            reply @ (Reply::Endless | Reply::EndlessChunked) => {
                let chunked = matches!(reply, Reply::EndlessChunked);
                let head = if chunked {
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                } else {
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n"
                };
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                // Valid JSON as far as it goes: a key set whose whitespace never ends.
                let body = vec![b' '; 64 * 1024];
                let frame = if chunked {
                    let mut f = format!("{:x}\r\n", body.len()).into_bytes();
                    f.extend_from_slice(&body);
                    f.extend_from_slice(b"\r\n");
                    f
                } else {
                    body.clone()
                };
                let opening = if chunked { b"1\r\n{\r\n".to_vec() } else { b"{".to_vec() };
                if stream.write_all(&opening).await.is_err() {
                    return;
                }
                // Bounded by time too, so the old behaviour (read until the timeout) ends the test.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                while tokio::time::Instant::now() < deadline {
                    if stream.write_all(&frame).await.is_err() {
                        return;
                    }
                    written.fetch_add(body.len(), Ordering::SeqCst);
                }
            }
        }
    }

    /// The answer of a sign-in whose provider documents could not be had: the caller learns
    /// nothing about why (the log does).
    #[track_caller]
    fn unavailable(result: Result<lanyard_proto::token::v1::ExchangeTokenResponse, tonic::Status>, what: &str) {
        match result {
            Ok(_) => panic!("{what}: signed in"),
            Err(status) => assert_status(&status, tonic::Code::Unavailable, "IDP_UNAVAILABLE"),
        }
    }

    fn discovery(jwks_uri: &str) -> Reply {
        Reply::Json(
            json!({ "issuer": "{base}", "jwks_uri": jwks_uri, "id_token_signing_alg_values_supported": ["RS256"] })
                .to_string(),
        )
    }

    /// An organization with an Okta connection at `issuer` and an ID token for it, signed with
    /// `idp`'s key.
    async fn org_with_connection(app: &TestApp, idp: &FakeIdp, slug: &str, issuer: &str) -> (String, String) {
        let org = app.create_org(slug, &["initech.com"], &format!("it@{slug}.initech.com")).await;
        app.tenancy
            .clone()
            .create_sso_connection(op(tpb::CreateSsoConnectionRequest {
                organization_id: org.clone(),
                kind: tpb::SsoConnectionKind::Okta as i32,
                issuer: issuer.into(),
                client_id: idp.client_id.clone(),
                ..Default::default()
            }))
            .await
            .expect("create SSO connection");
        let mut claims = idp.claims("okta-it", "it@initech.com");
        claims["iss"] = json!(issuer);
        (org, idp.sign(&claims))
    }

    /// Issue 14, item 3: a provider streaming a body without Content-Length (or chunked, or as
    /// the JWKS behind a sane discovery document) is cut off at the cap; the server stops reading
    /// there, so the bytes the provider got to write stay near the cap (socket buffers
    /// included), where reading until the timeout took gigabytes.
    async fn endless_documents(reply: Reply, endless_jwks: bool) -> usize {
        let db = TestDb::new(Backend::Sqlite).await;
        let app = TestApp::spawn(&db).await;
        let idp = FakeIdp::start(Kind::Okta, "initech.com").await;
        let hostile = Hostile::start(move |path| {
            if endless_jwks && path.ends_with("/openid-configuration") {
                discovery("{base}/keys")
            } else {
                reply.clone()
            }
        })
        .await;
        let issuer = hostile.base.clone();
        let (org, token) = org_with_connection(&app, &idp, "endless", &issuer).await;
        unavailable(app.sign_in(&token, &org).await, "endless document");
        let written = hostile.written_after_all_closed().await;
        app.stop().await;
        written
    }

    /// Bytes the provider may write beyond the cap before the closed connection stops it: the
    /// kernel's send and receive buffers on loopback.
    const SOCKET_SLACK: usize = 16 * 1024 * 1024;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_endless_discovery_document_is_cut_off_at_the_cap() {
        let written = endless_documents(Reply::Endless, false).await;
        println!("endless discovery (no Content-Length): the provider wrote {written} bytes, cap {CAP}");
        assert!(written <= CAP + SOCKET_SLACK, "read {written} bytes of an endless document");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_endless_chunked_jwks_is_cut_off_at_the_cap() {
        let written = endless_documents(Reply::EndlessChunked, true).await;
        println!("endless chunked JWKS: the provider wrote {written} bytes, cap {CAP}");
        assert!(written <= CAP + SOCKET_SLACK, "read {written} bytes of an endless document");
    }

    fn peak_rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap_or("VmHWM: 0 kB");
        line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// Three endless providers at once (the reproduction took 1.67 GB): each is cut off at the cap.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_endless_providers_at_once_are_each_cut_off() {
        let peak_before = peak_rss_kib();
        let db = TestDb::new(Backend::Sqlite).await;
        let app = TestApp::spawn(&db).await;
        let idp = FakeIdp::start(Kind::Okta, "initech.com").await;
        let mut providers = Vec::new();
        let mut grants = Vec::new();
        for i in 0..3 {
            let hostile = Hostile::start(|_| Reply::Endless).await;
            grants.push(org_with_connection(&app, &idp, &format!("endless-{i}"), &hostile.base.clone()).await);
            providers.push(hostile);
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(grants.len()));
        let tasks: Vec<_> = grants
            .into_iter()
            .map(|(org, token)| {
                let (mut tokens, barrier) = (app.tokens.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let grant =
                        lanyard_proto::token::v1::IdTokenGrant { id_token: token, organization_id: org, nonce: None };
                    let req = lanyard_proto::token::v1::ExchangeTokenRequest {
                        grant: Some(lanyard_proto::token::v1::exchange_token_request::Grant::IdTokenGrant(grant)),
                        ..Default::default()
                    };
                    tokens.exchange_token(req).await.map(tonic::Response::into_inner)
                })
            })
            .collect();
        for task in tasks {
            unavailable(task.await.unwrap(), "one of three endless providers");
        }
        for hostile in &providers {
            let written = hostile.written_after_all_closed().await;
            assert!(written <= CAP + SOCKET_SLACK, "read {written} bytes of an endless document");
        }
        println!(
            "three endless providers: peak RSS of the test process {peak_before} KiB before, {} KiB after",
            peak_rss_kib()
        );
        app.stop().await;
    }

    fn strict_verifier(dns: &FakeDns) -> UpstreamVerifier {
        UpstreamVerifier::new(UpstreamConfig {
            allow_http_loopback: false,
            dns_servers: vec![dns.addr()],
            dns_timeout: Duration::from_secs(2),
            ..UpstreamConfig::default()
        })
        .unwrap()
    }

    fn okta(issuer: &str) -> Connection {
        Connection {
            id: ConnectionId::new(),
            kind: SsoKind::Okta,
            issuer: issuer.into(),
            client_id: "client".into(),
            hosted_domains: vec![],
            tenant_id: String::new(),
        }
    }

    async fn verify(verifier: &UpstreamVerifier, idp: &FakeIdp, issuer: &str) -> Result<(), UpstreamError> {
        let mut claims = idp.claims("okta-it", "it@initech.com");
        claims["iss"] = json!(issuer);
        verifier.verify(&idp.sign(&claims), &okta(issuer), None, Timestamp::now()).await.map(|_| ())
    }

    /// Issue 14, item 4: issuers at metadata, private and loopback addresses (the loopback
    /// development setting off), in every spelling a URL parser accepts, are refused without a
    /// connection being made.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn issuers_at_forbidden_addresses_are_never_connected_to() {
        let dns = FakeDns::start().await;
        let verifier = strict_verifier(&dns);
        let idp = FakeIdp::start(Kind::Okta, "initech.com").await;
        let local = Counting::bind([127, 0, 0, 1].into()).await;
        let port = local.addr.port();
        for issuer in [
            format!("https://127.0.0.1:{port}"),
            format!("https://[::ffff:127.0.0.1]:{port}"),
            format!("https://2130706433:{port}"),
            format!("https://0x7f.0.0.1:{port}"),
            format!("https://localhost:{port}"),
            "https://169.254.169.254/latest".into(),
            "https://10.255.255.1".into(),
            "https://100.100.100.200".into(),
            "https://[fd00:ec2::254]".into(),
            "https://metadata.google.internal".into(),
        ] {
            match verify(&verifier, &idp, &issuer).await {
                Err(UpstreamError::Invalid(why)) => assert!(why.contains("issuer"), "{issuer}: {why}"),
                other => panic!("{issuer}: {other:?}"),
            }
        }
        assert_eq!(local.connections(), 0, "a forbidden issuer was connected to");
    }

    /// A host name that resolves to a forbidden address is refused at resolution, and the
    /// address checked is the one connected to: with loopback allowed, the same name reaches
    /// exactly the address the DNS server gave.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn names_resolving_to_forbidden_addresses_are_refused() {
        let dns = FakeDns::start().await;
        let verifier = strict_verifier(&dns);
        let idp = FakeIdp::start(Kind::Okta, "initech.com").await;
        let local = Counting::bind([127, 0, 0, 1].into()).await;
        let port = local.addr.port();
        dns.set_a("idp.rebind.example", &[[127, 0, 0, 1].into()]);
        dns.set_a("meta.attacker.example", &[[169, 254, 169, 254].into()]);
        dns.set_a("private.attacker.example", &[[10, 0, 0, 7].into()]);
        dns.set_a("mixed.attacker.example", &[[8, 8, 8, 8].into(), [127, 0, 0, 1].into()]);
        for host in
            ["idp.rebind.example", "meta.attacker.example", "private.attacker.example", "mixed.attacker.example"]
        {
            let issuer = format!("https://{host}:{port}");
            match verify(&verifier, &idp, &issuer).await {
                Err(UpstreamError::Unavailable(why)) => assert!(why.contains("refusing"), "{issuer}: {why}"),
                other => panic!("{issuer}: {other:?}"),
            }
        }
        assert!(dns.queries() >= 4, "the names were not resolved through the configured DNS server");
        assert_eq!(local.connections(), 0, "a name resolving to a forbidden address was connected to");

        // Loopback allowed (development): the name leads to the address the DNS server gave.
        let dev = UpstreamVerifier::new(UpstreamConfig {
            allow_http_loopback: true,
            dns_servers: vec![dns.addr()],
            dns_timeout: Duration::from_secs(2),
            http_timeout: Duration::from_secs(1),
            min_refetch_interval: Duration::ZERO,
            ..UpstreamConfig::default()
        })
        .unwrap();
        let issuer = format!("https://idp.rebind.example:{port}");
        let result = verify(&dev, &idp, &issuer).await;
        assert!(matches!(result, Err(UpstreamError::Unavailable(_))), "{result:?}");
        assert_eq!(local.connections(), 1, "the checked address is the one connected to");
        dns.set_a("idp.rebind.example", &[[10, 0, 0, 7].into()]);
        let result = verify(&dev, &idp, &issuer).await;
        assert!(matches!(result, Err(UpstreamError::Unavailable(ref why)) if why.contains("refusing")), "{result:?}");
        assert_eq!(local.connections(), 1, "a name that moved to a private address was connected to");
    }

    /// An address of this machine that is not public (on test machines, a private or
    /// documentation address of the default route), to listen on where loopback does not count.
    fn local_forbidden_address() -> Option<IpAddr> {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        socket.connect("10.255.255.1:9").or_else(|_| socket.connect("192.0.2.1:9")).ok()?;
        let ip = socket.local_addr().ok()?.ip();
        let forbidden = lanyard_core::outbound::AddressPolicy::default().check(ip).is_err();
        (forbidden && !ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
    }

    /// Issue 14, item 4: a discovery document's `jwks_uri` aimed at a non-public address (the
    /// reproduction reached Redis on 127.0.0.1:6379) is refused at fetch time: no connection is
    /// made, and the sign-in answers as for an unreachable provider.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_jwks_uri_at_a_forbidden_address_is_never_connected_to() {
        let db = TestDb::new(Backend::Sqlite).await;
        let app = TestApp::spawn(&db).await;
        let idp = FakeIdp::start(Kind::Okta, "initech.com").await;
        let target = match local_forbidden_address() {
            Some(ip) => Some(Counting::bind(ip).await),
            None => {
                println!("no non-public, non-loopback address on this machine: the counted case is skipped");
                None
            }
        };
        let mut uris: Vec<String> = vec![
            "https://169.254.169.254/latest/meta-data".into(),
            "https://10.255.255.1:6379/".into(),
            "https://[::ffff:10.0.0.1]/keys".into(),
            "http://192.168.0.1/keys".into(),
        ];
        if let Some(t) = &target {
            uris.insert(0, format!("https://{}/keys", t.addr));
        }
        for (i, uri) in uris.iter().enumerate() {
            let hostile = Hostile::start({
                let uri = uri.clone();
                move |_| discovery(&uri)
            })
            .await;
            let (org, token) = org_with_connection(&app, &idp, &format!("jwks-{i}"), &hostile.base).await;
            unavailable(app.sign_in(&token, &org).await, uri);
        }
        if let Some(t) = &target {
            assert_eq!(t.connections(), 0, "a jwks_uri at {} was connected to", t.addr);
        }
        app.stop().await;
    }

    /// Redirects are not followed: a discovery document that redirects to an internal address
    /// leads nowhere.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redirects_are_not_followed() {
        let db = TestDb::new(Backend::Sqlite).await;
        let app = TestApp::spawn(&db).await;
        let idp = FakeIdp::start(Kind::Okta, "initech.com").await;
        let local = Counting::bind([127, 0, 0, 1].into()).await;
        let location = format!("http://{}/.well-known/openid-configuration", local.addr);
        let hostile = Hostile::start(move |_| Reply::Redirect(location.clone())).await;
        let (org, token) = org_with_connection(&app, &idp, "redirects", &hostile.base).await;
        unavailable(app.sign_in(&token, &org).await, "redirected discovery");
        assert_eq!(local.connections(), 0, "a redirect was followed");
        app.stop().await;
    }
}
