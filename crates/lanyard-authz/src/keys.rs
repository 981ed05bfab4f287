//! Where verifying keys come from: the token service's own key ring in its process, or the
//! published JWKS over HTTP everywhere else ([`JwksKeys`]): cached, refreshed periodically, and
//! refetched when a token names an unknown `kid` (at most once per [`JwksKeys::MIN_REFETCH`], with
//! concurrent callers sharing one fetch).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use lanyard_core::Timestamp;

use crate::token::VerifyingKey;

/// A source of verifying keys by `kid`.
#[async_trait::async_trait]
pub trait KeySource: Send + Sync + 'static {
    /// The published key `kid`, if known now.
    fn key(&self, kid: &str, now: Timestamp) -> Option<VerifyingKey>;

    /// Called when a token names a `kid` that [`KeySource::key`] does not know: refetch if the
    /// source can (rate-limited by the source). Returns once any refetch has finished.
    async fn refresh(&self) {}
}

/// Why the JWKS could not be fetched.
#[derive(Debug, thiserror::Error)]
#[error("fetching the JWKS: {0}")]
pub struct JwksError(String);

#[derive(Default)]
struct Fetched {
    keys: HashMap<String, VerifyingKey>,
    /// When the set was last fetched.
    at: Option<Instant>,
    /// When a fetch was last attempted, successful or not.
    attempted: Option<Instant>,
}

/// The token service's published keys, fetched from its `/.well-known/jwks.json`.
#[derive(Clone)]
pub struct JwksKeys {
    url: String,
    http: reqwest::Client,
    fetched: Arc<RwLock<Fetched>>,
    fetching: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for JwksKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksKeys").field("url", &self.url).finish_non_exhaustive()
    }
}

impl JwksKeys {
    /// The shortest time between two refetches for unknown `kid`s.
    pub const MIN_REFETCH: Duration = Duration::from_secs(10);
    /// How old a fetched set may grow before it is refreshed in the background of a request.
    pub const MAX_AGE: Duration = Duration::from_secs(300);

    /// Fetches the set at `url` (`https://auth.example.com/.well-known/jwks.json`) once, so a
    /// service that starts while the token service is down fails early.
    pub async fn fetch(url: &str) -> Result<Self, JwksError> {
        let keys = Self::lazy(url)?;
        keys.load().await?;
        Ok(keys)
    }

    /// The set at `url`, fetched when a token first names a key: for a process that may start
    /// before the token service does (the first tokens wait for that fetch).
    pub fn lazy(url: &str) -> Result<Self, JwksError> {
        Self::lazy_trusting(url, None)
    }

    /// As [`JwksKeys::lazy`]; an `https://` URL is also trusted when its certificate chains to
    /// one of the PEM certificates of `ca_pem` (a private CA), besides the usual roots.
    pub fn lazy_trusting(url: &str, ca_pem: Option<&[u8]>) -> Result<Self, JwksError> {
        let mut builder =
            reqwest::Client::builder().timeout(Duration::from_secs(5)).redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = ca_pem {
            for certificate in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| JwksError(e.to_string()))? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().map_err(|e| JwksError(e.to_string()))?;
        Ok(Self { url: url.to_owned(), http, fetched: Arc::default(), fetching: Arc::default() })
    }

    async fn load(&self) -> Result<(), JwksError> {
        let response = self.http.get(&self.url).send().await.map_err(|e| JwksError(e.to_string()))?;
        if !response.status().is_success() {
            return Err(JwksError(format!("status {}", response.status())));
        }
        let set: JwkSet = response.json().await.map_err(|e| JwksError(e.to_string()))?;
        let keys = parse_set(&set);
        tracing::debug!(url = %self.url, keys = keys.len(), "JWKS fetched");
        let now = Some(Instant::now());
        *self.fetched.write().unwrap_or_else(|p| p.into_inner()) = Fetched { keys, at: now, attempted: now };
        Ok(())
    }

    /// Whether a fetch was attempted less than [`Self::MIN_REFETCH`] ago.
    fn recently_attempted(&self) -> bool {
        self.fetched
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .attempted
            .is_some_and(|t| t.elapsed() < Self::MIN_REFETCH)
    }
}

/// The keys of a set that name their `kid` and `alg` and that parse; the rest are ignored.
pub fn parse_set(set: &JwkSet) -> HashMap<String, VerifyingKey> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let algorithm = Algorithm::from_str(&jwk.common.key_algorithm?.to_string()).ok()?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((kid, VerifyingKey { algorithm, key: Arc::new(key) }))
        })
        .collect()
}

#[async_trait::async_trait]
impl KeySource for JwksKeys {
    fn key(&self, kid: &str, _now: Timestamp) -> Option<VerifyingKey> {
        let fetched = self.fetched.read().unwrap_or_else(|p| p.into_inner());
        let key = fetched.keys.get(kid).cloned();
        let stale = fetched.at.is_none_or(|t| t.elapsed() > Self::MAX_AGE)
            && fetched.attempted.is_none_or(|t| t.elapsed() > Self::MIN_REFETCH);
        drop(fetched);
        if stale {
            let this = self.clone();
            tokio::spawn(async move { this.refresh().await });
        }
        key
    }

    async fn refresh(&self) {
        let Ok(_one_at_a_time) = self.fetching.try_lock() else {
            // Someone is fetching: wait for that fetch instead of starting another.
            let _ = self.fetching.lock().await;
            return;
        };
        if self.recently_attempted() {
            return;
        }
        self.fetched.write().unwrap_or_else(|p| p.into_inner()).attempted = Some(Instant::now());
        if let Err(e) = self.load().await {
            metrics::counter!("lanyard_authz_jwks_errors_total").increment(1);
            tracing::warn!(error = %e, url = %self.url, "refreshing the JWKS; keeping the keys we have");
        }
    }
}
