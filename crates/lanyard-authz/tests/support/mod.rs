//! What the black-box tests of `lanyard-authz` share: a P-256 signing key and its JWK, access
//! tokens signed with it under any header and claims, a key source and a fact owner the test
//! controls (counting what they are asked, switchable to fail), an authorizer wired to them over
//! the in-process cache, loopback gRPC serving, and Redis-backed facts.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use lanyard_authz::facts::value;
use lanyard_authz::{
    AccessClaims, Audience, Authorizer, Decision, FactKey, FactSource, Facts, Fallback, KeySource, SourceError,
    VerifyingKey,
};
use lanyard_core::cache::{Cache, Versioned};
use lanyard_core::{ConnectionId, OrganizationId, Permission, Timestamp, UserId};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

pub const ISSUER: &str = "https://auth.lanyard.test";
pub const AUDIENCE: &str = "lanyard";

/// The issuer and audience every test token is minted for.
pub fn audience() -> Audience {
    Audience { issuer: ISSUER.into(), audience: AUDIENCE.into() }
}

/// Seconds since the epoch, as JWT times are written.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn perms(list: &[&str]) -> Vec<Permission> {
    list.iter().map(|p| Permission::parse(p).expect("permission")).collect()
}

/// An ES256 key pair under a `kid`, as the token service holds one.
#[derive(Clone)]
pub struct Signer {
    pub kid: String,
    key: SigningKey,
}

impl Signer {
    pub fn new(kid: &str) -> Self {
        Self { kid: kid.to_owned(), key: SigningKey::random(&mut rand::rngs::OsRng) }
    }

    /// Its public half as a JWKS entry.
    pub fn jwk(&self) -> Value {
        let point = self.key.verifying_key().to_encoded_point(false);
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y")),
        })
    }

    /// Its public half as a verifier uses it.
    pub fn verifying(&self) -> VerifyingKey {
        let jwk = self.jwk();
        let key = DecodingKey::from_ec_components(jwk["x"].as_str().expect("x"), jwk["y"].as_str().expect("y"))
            .expect("decoding key");
        VerifyingKey { algorithm: Algorithm::ES256, key: Arc::new(key) }
    }

    /// The public key's SEC1 bytes: what an attacker would try as an HMAC secret.
    pub fn public_bytes(&self) -> Vec<u8> {
        self.key.verifying_key().to_encoded_point(false).as_bytes().to_vec()
    }

    /// The header the token service writes.
    pub fn header(&self) -> Value {
        json!({ "alg": "ES256", "typ": "at+jwt", "kid": self.kid })
    }

    /// A token as the token service mints it.
    pub fn sign(&self, claims: &AccessClaims) -> String {
        self.sign_with(&self.header(), claims)
    }

    /// A token with any header and payload, with a valid ES256 signature over exactly those.
    pub fn sign_with(&self, header: &Value, claims: &impl Serialize) -> String {
        let json = |v: Vec<u8>| b64(&v);
        let input = format!(
            "{}.{}",
            json(serde_json::to_vec(header).expect("header")),
            json(serde_json::to_vec(claims).expect("claims"))
        );
        let signature: Signature = self.key.sign(input.as_bytes());
        // As the token service does: the low-S form, the only one verifiers accept.
        let signature = signature.normalize_s().unwrap_or(signature);
        format!("{input}.{}", b64(&signature.to_bytes()))
    }

    /// The same token with the other valid ECDSA signature (`s` replaced by `n - s`).
    pub fn high_s_twin(&self, token: &str) -> String {
        use base64::Engine;
        let (input, sig) = token.rsplit_once('.').expect("a JWS");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).expect("base64url");
        let (r, s) = Signature::from_slice(&bytes).expect("a signature").split_scalars();
        let twin = Signature::from_scalars(r, -*s).expect("scalars");
        format!("{input}.{}", b64(&twin.to_bytes()))
    }
}

/// Someone a token is minted for.
#[derive(Clone, Debug)]
pub struct Member {
    pub user_id: UserId,
    pub org_id: OrganizationId,
    pub session_id: lanyard_core::SessionId,
    /// The membership version the token carries.
    pub mv: i64,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    /// The SSO connection the session signed in through (`idp`).
    pub connection: ConnectionId,
}

impl Member {
    pub fn new(permissions: &[&str]) -> Self {
        Self {
            user_id: UserId::new(),
            org_id: OrganizationId::new(),
            session_id: lanyard_core::SessionId::new(),
            mv: 3,
            roles: vec!["engineer".into()],
            permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
            connection: ConnectionId::new(),
        }
    }

    /// The same user and session in organization `org`.
    pub fn in_org(&self, org: OrganizationId) -> Self {
        Self { org_id: org, ..self.clone() }
    }

    /// Another user of the same organization.
    pub fn colleague(&self) -> Self {
        Self { user_id: UserId::new(), session_id: lanyard_core::SessionId::new(), ..self.clone() }
    }

    /// The claims the token service writes for them, valid for five minutes from now.
    pub fn claims(&self) -> AccessClaims {
        let now = now_secs();
        AccessClaims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: self.user_id.to_string(),
            exp: now + 300,
            iat: now,
            nbf: now,
            jti: Uuid::now_v7().to_string(),
            sid: self.session_id.to_string(),
            org_id: self.org_id.to_string(),
            org_slug: "acme".into(),
            roles: self.roles.clone(),
            permissions: self.permissions.clone(),
            mv: self.mv,
            idp: Some(self.connection.to_string()),
        }
    }

    pub fn session(&self) -> FactKey {
        FactKey::Session(self.session_id)
    }

    pub fn org(&self) -> FactKey {
        FactKey::Organization(self.org_id)
    }

    pub fn membership(&self) -> FactKey {
        FactKey::Membership(self.org_id, self.user_id)
    }

    pub fn connection(&self) -> FactKey {
        FactKey::Connection(self.connection)
    }
}

pub fn fact(version: i64, value: &str) -> Versioned {
    Versioned { version, value: value.to_owned() }
}

/// A change that revokes a member's token: the fact written, and the stable reason it is refused with.
pub struct Revocation {
    pub reason: &'static str,
    pub fact: fn(&Member) -> (FactKey, Versioned),
}

/// Every kind of revocation, written at a version newer than the member's.
pub const REVOCATIONS: [Revocation; 4] = [
    Revocation { reason: "SESSION_REVOKED", fact: |m| (m.session(), fact(1, value::SESSION_REVOKED)) },
    Revocation { reason: "ORG_SUSPENDED", fact: |m| (m.org(), fact(2, value::ORG_SUSPENDED)) },
    Revocation { reason: "MEMBERSHIP_CHANGED", fact: |m| (m.membership(), fact(m.mv + 1, value::MEMBER_ACTIVE)) },
    Revocation { reason: "NOT_A_MEMBER", fact: |m| (m.membership(), fact(m.mv + 1, value::MEMBER_REMOVED)) },
];

/// Keys the test publishes by hand; `refresh` publishes the keys queued with `publish_at_refresh`.
#[derive(Default)]
pub struct StaticKeys {
    keys: Mutex<HashMap<String, VerifyingKey>>,
    at_refresh: Mutex<Vec<Signer>>,
    pub lookups: AtomicUsize,
    pub refreshes: AtomicUsize,
}

impl StaticKeys {
    pub fn of(signers: &[&Signer]) -> Arc<Self> {
        let keys = Self::default();
        for s in signers {
            keys.keys.lock().expect("keys").insert(s.kid.clone(), s.verifying());
        }
        Arc::new(keys)
    }

    /// Publishes `signer` only when a verifier next asks for a refresh (a rotation it has not seen).
    pub fn publish_at_refresh(&self, signer: &Signer) {
        self.at_refresh.lock().expect("keys").push(signer.clone());
    }
}

#[async_trait::async_trait]
impl KeySource for StaticKeys {
    fn key(&self, kid: &str, _now: Timestamp) -> Option<VerifyingKey> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.keys.lock().expect("keys").get(kid).cloned()
    }

    async fn refresh(&self) {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        for s in self.at_refresh.lock().expect("keys").drain(..) {
            self.keys.lock().expect("keys").insert(s.kid.clone(), s.verifying());
        }
    }
}

/// The system of record for facts, as the test sets it; counts every fetch.
#[derive(Default)]
pub struct FakeSource {
    facts: Mutex<HashMap<FactKey, Versioned>>,
    calls: Mutex<Vec<FactKey>>,
    failing: AtomicBool,
    hanging: AtomicBool,
}

impl FakeSource {
    pub fn set(&self, key: FactKey, fact: Versioned) {
        self.facts.lock().expect("facts").insert(key, fact);
    }

    /// An active session, an active organization, and a membership active at the token's version.
    pub fn admit(&self, m: &Member) {
        self.set(m.session(), fact(0, value::SESSION_ACTIVE));
        self.set(m.org(), fact(1, value::ORG_ACTIVE));
        self.set(m.membership(), fact(m.mv, value::MEMBER_ACTIVE));
        self.set(m.connection(), fact(0, value::CONNECTION_ACTIVE));
    }

    /// Every fetch fails from now on (or succeeds again).
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Every fetch never answers from now on.
    pub fn hang(&self) {
        self.hanging.store(true, Ordering::SeqCst);
    }

    pub fn calls(&self) -> usize {
        self.calls.lock().expect("calls").len()
    }

    pub fn calls_for(&self, key: &FactKey) -> usize {
        self.calls.lock().expect("calls").iter().filter(|k| *k == key).count()
    }
}

#[async_trait::async_trait]
impl FactSource for FakeSource {
    async fn fetch(&self, key: &FactKey) -> Result<Versioned, SourceError> {
        self.calls.lock().expect("calls").push(*key);
        if self.hanging.load(Ordering::SeqCst) {
            futures::future::pending::<()>().await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(SourceError("the owner is down".into()));
        }
        // What an owner answers for something it does not know (see `FactSource::fetch`).
        let absent = match key {
            FactKey::Membership(..) => fact(0, value::MEMBER_REMOVED),
            FactKey::Organization(_) => fact(0, value::ORG_DELETED),
            FactKey::Session(_) => fact(1, value::SESSION_REVOKED),
            FactKey::Connection(_) => fact(1, value::CONNECTION_DELETED),
        };
        Ok(self.facts.lock().expect("facts").get(key).cloned().unwrap_or(absent))
    }
}

/// An authorizer over [`StaticKeys`], in-process facts and a [`FakeSource`].
pub struct Harness {
    pub signer: Signer,
    pub keys: Arc<StaticKeys>,
    pub source: Arc<FakeSource>,
    pub authorizer: Authorizer,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_facts(Facts::new(Cache::local(&unique_prefix())))
    }

    pub fn with_facts(facts: Facts) -> Self {
        let signer = Signer::new("k1");
        let keys = StaticKeys::of(&[&signer]);
        let source = Arc::new(FakeSource::default());
        let authorizer = Authorizer::new(keys.clone(), audience(), facts, Fallback::Source(source.clone()));
        Self { signer, keys, source, authorizer }
    }

    /// A member the owner knows as active, and their token.
    pub fn member(&self, permissions: &[&str]) -> (Member, String) {
        let m = Member::new(permissions);
        self.source.admit(&m);
        let token = self.signer.sign(&m.claims());
        (m, token)
    }

    /// The token's decision for its own organization, asking no permission.
    pub async fn decide(&self, token: &str) -> Decision {
        self.authorizer.check(token, None, &[]).await.expect("a decision").token
    }
}

pub fn unique_prefix() -> String {
    format!("lanyard-authz-test-{}", Uuid::new_v4().simple())
}

/// A fresh loopback listener and its address, for a server the test spawns with
/// `serve_with_incoming(incoming(listener))`.
pub async fn listen() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    (listener, addr)
}

/// The connections `listener` accepts, as tonic's `serve_with_incoming` takes them.
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move { Some((l.accept().await.map(|(s, _)| s), l)) })
}

/// Waits until `condition` holds, failing the test after ten seconds.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The Redis database these tests use (one nobody else flushes).
pub const REDIS_DB: u8 = 11;

/// `LANYARD_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`), database [`REDIS_DB`].
pub fn redis_url() -> String {
    format!("redis://{}/{REDIS_DB}", redis_authority())
}

/// Where Redis listens (`127.0.0.1:6379`, or the authority of `LANYARD_TEST_REDIS_URL`).
pub fn redis_authority() -> String {
    let base = std::env::var("LANYARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let rest = base.split_once("://").map_or(base.as_str(), |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// One process's facts on Redis under `prefix`, subscribed to invalidations until `stop` is sent.
pub struct RedisFacts {
    pub facts: Facts,
    pub stop: watch::Sender<bool>,
    pub subscription: tokio::task::JoinHandle<()>,
}

impl RedisFacts {
    /// Facts on Redis that never subscribe: they always read Redis.
    pub async fn unsubscribed(prefix: &str) -> Facts {
        Facts::new(Cache::redis(&redis_url(), prefix).await.expect("Redis answers"))
    }

    /// Facts on Redis whose subscription is up when this returns.
    pub async fn subscribed(prefix: &str) -> Self {
        Self::subscribed_at(&redis_url(), prefix).await
    }

    /// The same, on the Redis at `url`.
    pub async fn subscribed_at(url: &str, prefix: &str) -> Self {
        let facts = Facts::new(Cache::redis(url, prefix).await.expect("Redis answers"));
        let (stop, stop_rx) = watch::channel(false);
        let subscription = facts.subscribe(stop_rx);
        wait_until("the subscription is up", || facts.subscribed()).await;
        Self { facts, stop, subscription }
    }

    pub async fn stop(self) {
        self.stop.send(true).expect("subscription running");
        self.subscription.await.expect("subscription ends");
    }
}

/// Deletes everything under `prefix` (facts also expire on their own).
pub async fn forget(prefix: &str) {
    let client = redis::Client::open(redis_url()).expect("Redis url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("Redis answers");
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut conn).await.expect("KEYS");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.expect("DEL");
    }
}
