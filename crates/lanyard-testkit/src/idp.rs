//! A fake OpenID provider on loopback, one per kind: it serves discovery and JWKS over HTTP at
//! the paths the real ones use relative to their issuers (Google's issuer is the host, Entra ID's
//! is `/<tenant>/v2.0`, Okta's `/oauth2/default`), counts every request it gets, and signs ID
//! tokens shaped like theirs with its own RSA keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
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

struct IdpState {
    issuer_path: String,
    issuer: String,
    base: String,
    published: Vec<Value>,
    hits: HashMap<String, usize>,
}

/// A running fake provider.
pub struct FakeIdp {
    pub kind: Kind,
    pub issuer: String,
    pub client_id: String,
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

async fn serve(State(state): State<Arc<Mutex<IdpState>>>, uri: Uri) -> impl IntoResponse {
    let mut s = state.lock().unwrap();
    let path = uri.path().to_owned();
    *s.hits.entry(path.clone()).or_default() += 1;
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
        (StatusCode::OK, doc.to_string())
    } else if path == "/keys" {
        (StatusCode::OK, json!({ "keys": s.published }).to_string())
    } else {
        (StatusCode::NOT_FOUND, String::new())
    }
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
        let state = Arc::new(Mutex::new(IdpState {
            issuer_path,
            issuer: issuer.clone(),
            base,
            published: vec![key.jwk.clone()],
            hits: HashMap::new(),
        }));
        let app = Router::new().fallback(serve).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            kind,
            issuer,
            client_id: format!("client-{}", uuid::Uuid::new_v4().simple()),
            hosted_domain: (kind == Kind::Google).then(|| domain.to_owned()),
            tenant_id,
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
        let t = now();
        let mut c = json!({
            "iss": self.issuer,
            "aud": self.client_id,
            "sub": subject,
            "iat": t,
            "exp": t + 3600,
            "email": email,
            "name": format!("User {subject}"),
            // Real providers give every token its own id: two tokens of one second differ.
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        match self.kind {
            Kind::Google => {
                c["azp"] = json!(self.client_id);
                c["email_verified"] = json!(true);
                c["hd"] = json!(self.hosted_domain.clone().unwrap_or_default());
            }
            Kind::Azure => {
                // Entra ID v2: sub is pairwise per app; oid is the user's id in the tenant.
                c["tid"] = json!(self.tenant_id);
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
