//! A fake OpenID provider on loopback, one per kind: it serves discovery and JWKS over HTTP at
//! the paths the real ones use relative to their issuers (Google's issuer is the host, Entra ID's
//! is `/<tenant>/v2.0`, Okta's `/oauth2/default`), counts every request it gets, and signs ID
//! tokens shaped like theirs with its own RSA keys.
//!
//! It also signs people in by the authorization code flow: `/authorize` answers at once for the
//! person set with [`FakeIdp::sign_in_next`] (or with the error set by
//! [`FakeIdp::fail_next_authorization`]), and `/token` redeems the code once, checking the client
//! secret (Basic or in the form), the redirect URI and the PKCE S256 verifier, and returns an ID
//! token with the nonce of the authorization request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const RSA_1: &str = include_str!("../keys/idp-rsa-1.pem");
const RSA_2: &str = include_str!("../keys/idp-rsa-2.pem");

/// Which provider it imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Google,
    Azure,
    Okta,
}

/// One RSA key of the provider.
#[derive(Clone)]
pub struct IdpKey {
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: Value,
    /// The public key as PKCS#1 DER: what an attacker would try as an HMAC secret.
    pub public_der: Vec<u8>,
}

impl IdpKey {
    fn from_pem(kid: &str, pem: &str) -> Self {
        use rsa::pkcs1::EncodeRsaPublicKey;
        let private = rsa::RsaPrivateKey::from_pkcs1_pem(pem).expect("RSA key");
        let public = private.to_public_key();
        let jwk = json!({
            "kty": "RSA",
            "kid": kid,
            "use": "sig",
            "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        });
        Self {
            kid: kid.into(),
            encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).expect("encoding key"),
            jwk,
            public_der: public.to_pkcs1_der().expect("der").as_bytes().to_vec(),
        }
    }
}

/// The provider's claims, as its handlers need them.
#[derive(Clone)]
struct Profile {
    kind: Kind,
    issuer: String,
    client_id: String,
    client_secret: String,
    hosted_domain: Option<String>,
    tenant_id: String,
}

/// A code the provider issued and not yet redeemed.
struct PendingCode {
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    subject: String,
    email: String,
}

struct IdpState {
    issuer_path: String,
    issuer: String,
    base: String,
    published: Vec<Value>,
    hits: HashMap<String, usize>,
    profile: Profile,
    key: IdpKey,
    /// Who signs in at the next authorization request.
    next_user: Option<(String, String)>,
    /// The error the next authorization request is answered with.
    next_error: Option<String>,
    /// Claims merged into the ID tokens the token endpoint returns.
    patch: Option<Value>,
    codes: HashMap<String, PendingCode>,
}

/// A running fake provider.
pub struct FakeIdp {
    pub kind: Kind,
    pub issuer: String,
    pub client_id: String,
    /// The secret its token endpoint expects of `client_id`.
    pub client_secret: String,
    pub hosted_domain: Option<String>,
    pub tenant_id: String,
    pub key: IdpKey,
    /// A second key, not published until [`FakeIdp::publish_second_key`].
    pub other_key: IdpKey,
    state: Arc<Mutex<IdpState>>,
    task: JoinHandle<()>,
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    State(state): State<Arc<Mutex<IdpState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = state.lock().unwrap();
    let path = uri.path().to_owned();
    *s.hits.entry(path.clone()).or_default() += 1;
    if path == "/authorize" && method == Method::GET {
        return authorize(&mut s, uri.query().unwrap_or_default());
    }
    if path == "/token" && method == Method::POST {
        return token(&mut s, &headers, &body);
    }
    if path == format!("{}/.well-known/openid-configuration", s.issuer_path) {
        let doc = json!({
            "issuer": s.issuer,
            "authorization_endpoint": format!("{}/authorize", s.base),
            "token_endpoint": format!("{}/token", s.base),
            "jwks_uri": format!("{}/keys", s.base),
            "response_types_supported": ["code", "id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        });
        (StatusCode::OK, doc.to_string()).into_response()
    } else if path == "/keys" {
        (StatusCode::OK, json!({ "keys": s.published }).to_string()).into_response()
    } else {
        (StatusCode::NOT_FOUND, String::new()).into_response()
    }
}

fn form(raw: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

fn redirect(location: String) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(base).expect("redirect_uri");
    url.query_pairs_mut().extend_pairs(pairs);
    url.to_string()
}

fn authorize(s: &mut IdpState, query: &str) -> Response {
    let q = form(query.as_bytes());
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("client_id") != s.profile.client_id || get("response_type") != "code" {
        return (StatusCode::BAD_REQUEST, "unknown client or response type").into_response();
    }
    let state = get("state");
    if let Some(error) = s.next_error.take() {
        return redirect(with_query(&get("redirect_uri"), &[("error", &error), ("state", &state)]));
    }
    if get("code_challenge_method") != "S256" || get("code_challenge").is_empty() {
        return (StatusCode::BAD_REQUEST, "PKCE S256 required").into_response();
    }
    let Some((subject, email)) = s.next_user.take() else {
        return (StatusCode::BAD_REQUEST, "nobody signs in").into_response();
    };
    let code = uuid::Uuid::new_v4().simple().to_string();
    s.codes.insert(
        code.clone(),
        PendingCode {
            redirect_uri: get("redirect_uri"),
            code_challenge: get("code_challenge"),
            nonce: q.get("nonce").cloned(),
            subject,
            email,
        },
    );
    redirect(with_query(&get("redirect_uri"), &[("code", &code), ("state", &state)]))
}

fn token(s: &mut IdpState, headers: &HeaderMap, body: &[u8]) -> Response {
    let f = form(body);
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let (id, secret) = match basic {
        Some(pair) => {
            let (id, secret) = pair.split_once(':').unwrap_or_default();
            let decode = |v: &str| form(format!("v={v}").as_bytes()).remove("v").unwrap_or_default();
            (decode(id), decode(secret))
        }
        None => (get("client_id"), get("client_secret")),
    };
    let refuse = |status: StatusCode, error: &str| (status, json!({ "error": error }).to_string()).into_response();
    if id != s.profile.client_id || secret != s.profile.client_secret {
        return refuse(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let Some(pending) = s.codes.remove(&get("code")) else { return refuse(StatusCode::BAD_REQUEST, "invalid_grant") };
    let challenge = URL_SAFE_NO_PAD.encode(<sha2::Sha256 as sha2::Digest>::digest(get("code_verifier").as_bytes()));
    if pending.redirect_uri != get("redirect_uri") || pending.code_challenge != challenge {
        return refuse(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let mut claims = claims_of(&s.profile, &pending.subject, &pending.email);
    if let Some(nonce) = pending.nonce {
        claims["nonce"] = json!(nonce);
    }
    if let Some(Value::Object(patch)) = s.patch.clone() {
        for (k, v) in patch {
            claims[k] = v;
        }
    }
    let header = json!({ "alg": "RS256", "kid": s.key.kid, "typ": "JWT" });
    let id_token = sign_raw(&header, &claims, &s.key.encoding, Algorithm::RS256);
    let body = json!({ "id_token": id_token, "access_token": "upstream-access", "token_type": "Bearer" });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

impl FakeIdp {
    /// Starts a provider of `kind`; `domain` is Google's hosted domain (and the email domain).
    pub async fn start(kind: Kind, domain: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind idp");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let tenant_id = uuid::Uuid::new_v4().to_string();
        let issuer_path = match kind {
            Kind::Google => String::new(),
            Kind::Azure => format!("/{tenant_id}/v2.0"),
            Kind::Okta => "/oauth2/default".into(),
        };
        let issuer = format!("{base}{issuer_path}");
        let key = IdpKey::from_pem("key-1", RSA_1);
        let other_key = IdpKey::from_pem("key-2", RSA_2);
        let profile = Profile {
            kind,
            issuer: issuer.clone(),
            client_id: format!("client-{}", uuid::Uuid::new_v4().simple()),
            client_secret: "s3cret".into(),
            hosted_domain: (kind == Kind::Google).then(|| domain.to_owned()),
            tenant_id,
        };
        let state = Arc::new(Mutex::new(IdpState {
            issuer_path,
            issuer: issuer.clone(),
            base,
            published: vec![key.jwk.clone()],
            hits: HashMap::new(),
            profile: profile.clone(),
            key: key.clone(),
            next_user: None,
            next_error: None,
            patch: None,
            codes: HashMap::new(),
        }));
        let app = Router::new().fallback(serve).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            kind,
            issuer,
            client_id: profile.client_id,
            client_secret: profile.client_secret,
            hosted_domain: profile.hosted_domain,
            tenant_id: profile.tenant_id,
            key,
            other_key,
            state,
            task,
        }
    }

    /// Publishes the second key beside the first (a key rotation at the provider).
    pub fn publish_second_key(&self) {
        self.state.lock().unwrap().published.push(self.other_key.jwk.clone());
    }

    /// Requests served so far, all paths.
    pub fn hits(&self) -> usize {
        self.state.lock().unwrap().hits.values().sum()
    }

    /// Requests for the JWKS so far.
    pub fn jwks_hits(&self) -> usize {
        self.state.lock().unwrap().hits.get("/keys").copied().unwrap_or(0)
    }

    /// The claims of a typical ID token of this provider for `email` (subject `subject`).
    pub fn claims(&self, subject: &str, email: &str) -> Value {
        claims_of(&self.state.lock().unwrap().profile, subject, email)
    }

    /// Who signs in at the next authorization request (the code flow).
    pub fn sign_in_next(&self, subject: &str, email: &str) {
        self.state.lock().unwrap().next_user = Some((subject.to_owned(), email.to_owned()));
    }

    /// Answers the next authorization request with `error` (`access_denied`, say).
    pub fn fail_next_authorization(&self, error: &str) {
        self.state.lock().unwrap().next_error = Some(error.to_owned());
    }

    /// Merges `patch` into every ID token the token endpoint returns from now on (a wrong
    /// nonce, another audience...).
    pub fn patch_id_tokens(&self, patch: Value) {
        self.state.lock().unwrap().patch = Some(patch);
    }

    /// Signs `claims` as this provider does (RS256 with its published key).
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({ "alg": "RS256", "kid": self.key.kid, "typ": "JWT" });
        sign_raw(&header, claims, &self.key.encoding, Algorithm::RS256)
    }

    /// An ID token for `email`.
    pub fn id_token(&self, subject: &str, email: &str) -> String {
        self.sign(&self.claims(subject, email))
    }
}

/// The claims of a typical ID token of the provider `p` for `email` (subject `subject`).
fn claims_of(p: &Profile, subject: &str, email: &str) -> Value {
    let t = now();
    let mut c = json!({
        "iss": p.issuer,
        "aud": p.client_id,
        "sub": subject,
        "iat": t,
        "exp": t + 3600,
        "email": email,
        "name": format!("User {subject}"),
        // Real providers give every token its own id: two tokens of one second differ.
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    match p.kind {
        Kind::Google => {
            c["azp"] = json!(p.client_id);
            c["email_verified"] = json!(true);
            c["hd"] = json!(p.hosted_domain.clone().unwrap_or_default());
        }
        Kind::Azure => {
            // Entra ID v2: sub is pairwise per app; oid is the user's id in the tenant.
            c["tid"] = json!(p.tenant_id);
            c["oid"] = json!(subject);
            c["sub"] = json!(format!("pairwise-{subject}"));
            c["ver"] = json!("2.0");
            c["preferred_username"] = json!(email);
            c["xms_edov"] = json!(true);
            c["nbf"] = json!(t);
        }
        Kind::Okta => {
            c["email_verified"] = json!(true);
            c["ver"] = json!(1);
            c["auth_time"] = json!(t);
        }
    }
    c
}

/// Signs any header and claims with any key: the tool of every forgery test.
pub fn sign_raw(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let message =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("sign");
    format!("{message}.{signature}")
}

/// A token with `header` and `claims` and no signature at all.
pub fn unsigned(header: &Value, claims: &Value) -> String {
    format!("{}.{}.", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()))
}
