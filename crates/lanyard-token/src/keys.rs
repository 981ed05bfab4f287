//! Lanyard's signing keys: generation (ES256, EdDSA, RS256), their public JWK form, and the
//! in-memory key ring that signs with the active key and verifies with any published one.
//! Private keys leave this module only sealed (see `store`).
//!
//! ES256, the default, signs through ring (the process's crypto provider, several times faster
//! than RustCrypto's P-256); EdDSA and RS256 keys, chosen only by an operator's rotation, still
//! sign through jsonwebtoken. Every algorithm verifies through ring (`lanyard_authz::token`).

use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use lanyard_core::Timestamp;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
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
    /// An ES256 key's ring form, parsed once: what [`LoadedKey::sign`] signs with.
    es256: Option<Arc<EcdsaKeyPair>>,
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
        let mut es256 = None;
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
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der.0, &SystemRandom::new())
                    .map_err(|e| bad(&e))?;
                es256 = Some(Arc::new(pair));
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
            es256,
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

    /// A compact JWS of `claims` under a header naming this key's algorithm and kid and `typ`.
    /// ES256 signs through ring, and the signature is put in its low-S form: ECDSA signers pick
    /// either of the two valid `s`, and verifiers accept only the low one (one text per token).
    pub fn sign(&self, typ: &str, claims: &impl Serialize) -> Result<String, KeyError> {
        let bad = |e: &dyn std::fmt::Display| KeyError(format!("{}: {e}", self.kid));
        let mut header = jsonwebtoken::Header::new(self.algorithm.jwt());
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.kid.clone());
        let Some(pair) = &self.es256 else {
            return jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| bad(&e));
        };
        // The same text jsonwebtoken writes: base64url of the header's and the claims' JSON.
        let json = |value: serde_json::Result<Vec<u8>>| value.map(|bytes| b64(&bytes)).map_err(|e| bad(&e));
        let signed = format!("{}.{}", json(serde_json::to_vec(&header))?, json(serde_json::to_vec(claims))?);
        let signature = pair.sign(&SystemRandom::new(), signed.as_bytes()).map_err(|e| bad(&e))?;
        let token = format!("{signed}.{}", b64(signature.as_ref()));
        lanyard_authz::jose::es256_low_s(&token).ok_or_else(|| bad(&"an ES256 signature that does not parse"))
    }

    /// What jsonwebtoken signs with (EdDSA and RS256 keys; tests sign ES256 tokens with it too).
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

    use base64::engine::general_purpose::STANDARD;
    use lanyard_authz::token::{self, AccessClaims, Audience};

    /// A 2048-bit RSA key (PKCS#1 DER, base64) made with `openssl genrsa` for these tests only:
    /// generating one in a debug build takes too long.
    const TEST_RSA_PKCS1: &str = concat!(
        "MIIEogIBAAKCAQEAt8cJuhgLS/XXRnk5udDQyLSI0md9/YPVsMMNYWf9DUHbTcgTgY+JpvsKYdBojJnp3oGuHmHW70/10VGP",
        "9IqAhcoZpcsJ/gNj4Z/HmTrhYQWKbucRBCQIdqEfksOHk3jpWK7HNES5El/3pqU7rJudVLFCGQubqRz7RdcH7XFEgdDeQMMA",
        "Iiu77RDXGlrOT1akQH20nMQO5ZyrVPKnPiny1SrlXCIY89xtAEBZKepRHfj1mV/n+hmBBNH7Ybq23Wfzf2CYPQ99cw06cgxx",
        "pdEzAX6sYzSQynh3KMwpSzWXfZ7Zgx0lG5XFagfTGojNlk0KCwN6oP40eKFDUqcXC8sytwIDAQABAoIBABPIkmx9ECJCOcV1",
        "YVh2eTNR8/SqfW6gFY3swXD978jQkRojcq4c1JWsKqby935DR2DTlvngUHH8qpq47AVIL6O3aOFnJRE6LjNoruT46LA4F3nu",
        "1+8ZLewPVkXHVL30YzJPxlQDHeUzfYZr/SuMqPgoCNSHYl9nJkmTZ2ARNG3A7j7fHEKTcgOVq46sXOfruaw+eZ6D5xEO2A0W",
        "HjUJ4JDA6btz1pE3EPvQkjXzfJDtsVVHIxYUZ56JMJa3XSqe0Vu/4xb8NdXYbAl2iujW4WItSqlSB1Fie8qSzeUt1TkPnPGc",
        "NZ29rcmgZhfPccynyIunnt8MU7LYpQQXRedmlLkCgYEA98lZnK0D+Olx0QSzEumEv6ejfBSLNxnh/lbgLFXAJsg+co7eUfTM",
        "1r4OivlikEkd4ugDggU6zLr6VtosueW0D5inu+Js8l6s6ZaNFxlWo8dGuzCjTkToLlft1f7HlUhrwdyuNyAfmK+bhP04IMdn",
        "KD2bUl3vgF4YzM7eLy2d3bsCgYEAvd6GRIRMIrM432QSpZRQ6OqQWMp/izus/enaxRuS7ID8eCivgr1lXFBKMFyFMcaV+XBI",
        "UZePW2Oc0WtKEH19reL5yGa1F5QFrUhocYpYcTdvrw/Hs9Q0CcjT26B6jJJHqqNOoGdnGMJ4zDz5PTlgjw28ikiHi9HNhVRG",
        "h3eKsTUCgYAMNGKxkOQNMpJklTKsz8u2FO+8gNaKlD/JY0YPaPnZ7ysEQX051DDystHMjpQIP1G1h3AEy3Ul+F+0P3LMhT/l",
        "NMOuQWzUU015A+1XIexejMYzGiYxCLvW7IXOcIosFDEaj2AVXwOvZZbnagGFu8yc8svftrjBPeFC1T2kXT7VWQKBgHkaWteO",
        "7qTfXXIW+VHFVQoKusD3f/yFtqRJqbE5EjBpYR8fDDs+pE0KJRfNm2MRQA1WkboBCn4G/joQza/Q6v2jHSC2aeE9F5Xb7kol",
        "LJ4h9slZLk5EFmD7SC34oNHSZ4WuHfNvoLGJMNVMOsjTNQRphY1KD7KdwhG9nDLBi6PVAoGAN64eVEP1VH46hgn2DgMTmHRd",
        "BLgWvJL86sQuNgA+6Cd6tGqZXHP+IOYsLQgl57qg69T4/lAzkmAT2OI+BmjPArRwo+NCsynQymt2lEwU+5gGyMV7SSFVZ9A1",
        "wnpayr1na1TdRmXNTcMeF06rPnwzB19CI1dHqoLb8+Fz71d9B+M=",
    );

    fn test_key(alg: SigningAlgorithm) -> LoadedKey {
        let der = match alg {
            SigningAlgorithm::Rs256 => PrivateDer(STANDARD.decode(TEST_RSA_PKCS1).unwrap()),
            _ => generate(alg).unwrap(),
        };
        LoadedKey::load(format!("k-{}", alg.as_str()), alg, KeyState::Active, Timestamp(0), None, &der).unwrap()
    }

    fn claims(jti: usize) -> AccessClaims {
        let now = u64::try_from(Timestamp::now().0 / 1_000_000).unwrap();
        AccessClaims {
            iss: "https://auth.lanyard.test".into(),
            aud: "lanyard".into(),
            sub: lanyard_core::UserId::new().to_string(),
            exp: now + 300,
            iat: now,
            nbf: now,
            jti: format!("jti-{jti}"),
            sid: lanyard_core::SessionId::new().to_string(),
            org_id: lanyard_core::OrganizationId::new().to_string(),
            org_slug: "acme".into(),
            roles: vec!["member".into()],
            permissions: vec!["members:read".into()],
            mv: 1,
            idp: None,
        }
    }

    fn audience() -> Audience {
        Audience { issuer: "https://auth.lanyard.test".into(), audience: "lanyard".into() }
    }

    /// Tokens the key signs (ES256 through ring) verify through `token::verify` (ring) and through
    /// jsonwebtoken with RustCrypto, the outside reference; tokens jsonwebtoken signs with the same
    /// key, as the token service did before, verify through `token::verify`.
    #[test]
    fn signed_tokens_cross_verify_with_jsonwebtoken() {
        for alg in [SigningAlgorithm::Es256, SigningAlgorithm::EdDsa, SigningAlgorithm::Rs256] {
            let key = test_key(alg);
            let mut reference = jsonwebtoken::Validation::new(alg.jwt());
            reference.set_audience(&["lanyard"]);
            for i in 0..8 {
                let claims = claims(i);
                let ours = key.sign("at+jwt", &claims).unwrap();
                let header = jsonwebtoken::decode_header(&ours).unwrap();
                assert_eq!(
                    (header.alg, header.kid.as_deref(), header.typ.as_deref()),
                    (alg.jwt(), Some(key.kid.as_str()), Some("at+jwt"))
                );
                let decoded = jsonwebtoken::decode::<AccessClaims>(&ours, key.decoding(), &reference).unwrap();
                assert_eq!(decoded.claims, claims, "{alg:?}: jsonwebtoken verifies ours");
                let p = token::verify(&ours, &audience(), Timestamp::now(), |_| Some(key.verifying())).unwrap();
                assert_eq!(p.user_id.to_string(), claims.sub, "{alg:?}: ring verifies ours");

                let mut old_header = jsonwebtoken::Header::new(alg.jwt());
                old_header.typ = Some("at+jwt".into());
                old_header.kid = Some(key.kid.clone());
                let old = jsonwebtoken::encode(&old_header, &claims, key.encoding()).unwrap();
                let old = match alg {
                    SigningAlgorithm::Es256 => lanyard_authz::jose::es256_low_s(&old).unwrap(),
                    _ => old,
                };
                assert_eq!(old.rsplit_once('.').unwrap().0, ours.rsplit_once('.').unwrap().0, "the same signed text");
                assert!(
                    token::verify(&old, &audience(), Timestamp::now(), |_| Some(key.verifying())).is_ok(),
                    "{alg:?}: ring verifies jsonwebtoken's"
                );
            }
        }
    }

    /// ring's ECDSA signatures are high-S about half of the time; every ES256 token leaves `sign`
    /// in the low-S form, the only one verifiers accept.
    #[test]
    fn es256_tokens_are_always_low_s() {
        let key = test_key(SigningAlgorithm::Es256);
        for i in 0..64 {
            let token = key.sign("at+jwt", &claims(i)).unwrap();
            assert!(lanyard_authz::jose::es256_is_low_s(&token), "token {i}");
        }
    }

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
