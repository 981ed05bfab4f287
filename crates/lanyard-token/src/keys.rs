//! Lanyard's signing keys: generation (ES256, EdDSA, RS256), their public JWK form, and the
//! in-memory key ring that signs with the active key and verifies with any published one.
//! Private keys leave this module only sealed (see `store`).

use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use lanyard_core::Timestamp;
use serde::Serialize;

/// A signing algorithm Lanyard signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    /// ECDSA P-256 with SHA-256 (the default).
    Es256,
    /// Ed25519.
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys.
    Rs256,
}

impl SigningAlgorithm {
    /// The JOSE name, also the stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Rs256 => "RS256",
        }
    }

    /// From the JOSE name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            "RS256" => Some(Self::Rs256),
            _ => None,
        }
    }

    /// The jsonwebtoken algorithm.
    pub fn jwt(self) -> Algorithm {
        match self {
            Self::Es256 => Algorithm::ES256,
            Self::EdDsa => Algorithm::EdDSA,
            Self::Rs256 => Algorithm::RS256,
        }
    }
}

/// A key's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Published, not yet signing.
    Next,
    /// Published and signing.
    Active,
    /// Published until its tokens expire; signs nothing.
    Retired,
}

impl KeyState {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Active => "active",
            Self::Retired => "retired",
        }
    }

    /// From the stored form; an unknown one is a corrupt row.
    pub fn from_db(s: &str) -> Result<Self, lanyard_core::stored::UnknownStored> {
        lanyard_core::stored::decode("signing key state", s, &[Self::Next, Self::Active, Self::Retired], Self::as_str)
    }
}

/// A public key in JWK form (RFC 7517), as published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublicJwk {
    pub kty: String,
    pub kid: String,
    #[serde(rename = "use")]
    pub use_: String,
    pub alg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub crv: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub x: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub y: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub n: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub e: String,
}

/// A key's private material in its DER form: PKCS#8 for ES256 and EdDSA, PKCS#1 for RS256
/// (the forms jsonwebtoken signs with).
pub struct PrivateDer(pub Vec<u8>);

impl std::fmt::Debug for PrivateDer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateDer(..)")
    }
}

/// Why key material could not be used.
#[derive(Debug, thiserror::Error)]
#[error("signing key: {0}")]
pub struct KeyError(pub String);

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Generates a fresh private key.
pub fn generate(alg: SigningAlgorithm) -> Result<PrivateDer, KeyError> {
    let mut rng = rand::rngs::OsRng;
    let der = match alg {
        SigningAlgorithm::Es256 => {
            use p256::pkcs8::EncodePrivateKey;
            let key = p256::ecdsa::SigningKey::random(&mut rng);
            key.to_pkcs8_der().map_err(|e| KeyError(e.to_string()))?.as_bytes().to_vec()
        }
        SigningAlgorithm::EdDsa => {
            use ed25519_dalek::pkcs8::EncodePrivateKey;
            let key = ed25519_dalek::SigningKey::generate(&mut rng);
            key.to_pkcs8_der().map_err(|e| KeyError(e.to_string()))?.as_bytes().to_vec()
        }
        SigningAlgorithm::Rs256 => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(|e| KeyError(e.to_string()))?;
            key.to_pkcs1_der().map_err(|e| KeyError(e.to_string()))?.as_bytes().to_vec()
        }
    };
    Ok(PrivateDer(der))
}

/// A usable key: what signs and what verifies, and its published form.
#[derive(Clone)]
pub struct LoadedKey {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    pub state: KeyState,
    pub created_at: Timestamp,
    /// For a retired key: when it leaves the JWKS.
    pub publish_until: Option<Timestamp>,
    pub jwk: PublicJwk,
    encoding: EncodingKey,
    decoding: std::sync::Arc<DecodingKey>,
}

impl std::fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl LoadedKey {
    /// Builds the signing and verifying forms from the private key.
    pub fn load(
        kid: String,
        algorithm: SigningAlgorithm,
        state: KeyState,
        created_at: Timestamp,
        publish_until: Option<Timestamp>,
        der: &PrivateDer,
    ) -> Result<Self, KeyError> {
        let bad = |e: &dyn std::fmt::Display| KeyError(format!("{kid}: {e}"));
        let mut jwk = PublicJwk {
            kty: String::new(),
            kid: kid.clone(),
            use_: "sig".into(),
            alg: algorithm.as_str().into(),
            crv: String::new(),
            x: String::new(),
            y: String::new(),
            n: String::new(),
            e: String::new(),
        };
        let (encoding, decoding) = match algorithm {
            SigningAlgorithm::Es256 => {
                use p256::pkcs8::DecodePrivateKey;
                let key = p256::ecdsa::SigningKey::from_pkcs8_der(&der.0).map_err(|e| bad(&e))?;
                let point = key.verifying_key().to_encoded_point(false);
                let (x, y) = (point.x().ok_or_else(|| bad(&"no x"))?, point.y().ok_or_else(|| bad(&"no y"))?);
                jwk.kty = "EC".into();
                jwk.crv = "P-256".into();
                jwk.x = b64(x);
                jwk.y = b64(y);
                let decoding = DecodingKey::from_ec_components(&jwk.x, &jwk.y).map_err(|e| bad(&e))?;
                (EncodingKey::from_ec_der(&der.0), decoding)
            }
            SigningAlgorithm::EdDsa => {
                use ed25519_dalek::pkcs8::DecodePrivateKey;
                let key = ed25519_dalek::SigningKey::from_pkcs8_der(&der.0).map_err(|e| bad(&e))?;
                jwk.kty = "OKP".into();
                jwk.crv = "Ed25519".into();
                jwk.x = b64(key.verifying_key().as_bytes());
                let decoding = DecodingKey::from_ed_components(&jwk.x).map_err(|e| bad(&e))?;
                (EncodingKey::from_ed_der(&der.0), decoding)
            }
            SigningAlgorithm::Rs256 => {
                use rsa::pkcs1::DecodeRsaPrivateKey;
                use rsa::traits::PublicKeyParts;
                let key = rsa::RsaPrivateKey::from_pkcs1_der(&der.0).map_err(|e| bad(&e))?;
                jwk.kty = "RSA".into();
                jwk.n = b64(&key.n().to_bytes_be());
                jwk.e = b64(&key.e().to_bytes_be());
                let decoding = DecodingKey::from_rsa_components(&jwk.n, &jwk.e).map_err(|e| bad(&e))?;
                (EncodingKey::from_rsa_der(&der.0), decoding)
            }
        };
        Ok(Self {
            kid,
            algorithm,
            state,
            created_at,
            publish_until,
            jwk,
            encoding,
            decoding: std::sync::Arc::new(decoding),
        })
    }

    /// Whether it is in the JWKS at `now`.
    pub fn published(&self, now: Timestamp) -> bool {
        match self.state {
            KeyState::Next | KeyState::Active => true,
            KeyState::Retired => self.publish_until.is_some_and(|t| t > now),
        }
    }

    /// What signs.
    pub fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }

    /// What verifies.
    pub fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    /// What verifies, as the authorization crate takes it.
    pub fn verifying(&self) -> lanyard_authz::VerifyingKey {
        lanyard_authz::VerifyingKey { algorithm: self.algorithm.jwt(), key: self.decoding.clone() }
    }
}

/// The keys this process knows, swapped whole when they change.
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    keys: Arc<RwLock<Arc<Vec<LoadedKey>>>>,
}

/// The JWKS document.
#[derive(Serialize)]
struct JwkSet<'a> {
    keys: Vec<&'a PublicJwk>,
}

impl KeyRing {
    /// Replaces the keys.
    pub fn replace(&self, keys: Vec<LoadedKey>) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
    }

    /// The current keys.
    pub fn snapshot(&self) -> Arc<Vec<LoadedKey>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The key that signs now.
    pub fn active(&self) -> Option<LoadedKey> {
        self.snapshot().iter().find(|k| k.state == KeyState::Active).cloned()
    }

    /// A published key by kid.
    pub fn published(&self, kid: &str, now: Timestamp) -> Option<LoadedKey> {
        self.snapshot().iter().find(|k| k.kid == kid && k.published(now)).cloned()
    }

    /// The verifying form of the published key `kid`.
    pub fn verifying(&self, kid: &str, now: Timestamp) -> Option<lanyard_authz::VerifyingKey> {
        self.snapshot().iter().find(|k| k.kid == kid && k.published(now)).map(LoadedKey::verifying)
    }

    /// The published keys, newest first.
    pub fn jwks(&self, now: Timestamp) -> Vec<PublicJwk> {
        let keys = self.snapshot();
        let mut published: Vec<&LoadedKey> = keys.iter().filter(|k| k.published(now)).collect();
        published.sort_by_key(|k| std::cmp::Reverse(k.created_at));
        published.into_iter().map(|k| k.jwk.clone()).collect()
    }

    /// The published keys as the JSON document of `/.well-known/jwks.json`.
    pub fn jwks_json(&self, now: Timestamp) -> String {
        let jwks = self.jwks(now);
        serde_json::to_string(&JwkSet { keys: jwks.iter().collect() }).unwrap_or_else(|_| r#"{"keys":[]}"#.into())
    }
}

/// The token service verifies its own tokens with the keys in memory (reloaded by the key worker).
#[async_trait::async_trait]
impl lanyard_authz::KeySource for KeyRing {
    fn key(&self, kid: &str, now: Timestamp) -> Option<lanyard_authz::VerifyingKey> {
        self.verifying(kid, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_verify() {
        for alg in [SigningAlgorithm::Es256, SigningAlgorithm::EdDsa] {
            let der = generate(alg).unwrap();
            let key = LoadedKey::load("k1".into(), alg, KeyState::Active, Timestamp(0), None, &der).unwrap();
            let header = jsonwebtoken::Header::new(alg.jwt());
            let claims = serde_json::json!({"sub": "x", "exp": 4_000_000_000u64});
            let token = jsonwebtoken::encode(&header, &claims, key.encoding()).unwrap();
            let mut v = jsonwebtoken::Validation::new(alg.jwt());
            v.validate_aud = false;
            jsonwebtoken::decode::<serde_json::Value>(&token, key.decoding(), &v).unwrap();
        }
    }
}
