//! The signing-key lifecycle: bootstrap, rotation (operator and scheduled) and pruning, over the
//! store, with the in-memory [`KeyRing`] reloaded after every change.
//!
//! Publish before sign: a process always holds one `next` key beside the `active` one, and a
//! rotation promotes the *existing* `next` key (published since the previous rotation) and creates
//! a new `next` one. Other replicas reload the keys every [`crate::TokenConfig::key_reload_interval`],
//! so as long as rotations are further apart than that, every replica has published a key before
//! any replica signs with it. A retired key stays published for the access-token lifetime plus
//! the leeway, until every token it signed has expired.

use std::sync::Arc;
use std::time::Duration;

use lanyard_core::crypto::{random_token, SecretBox};
use lanyard_core::db::DbErrorKind;
use lanyard_core::Timestamp;

use crate::access::ACCESS_TOKEN_LEEWAY;
use crate::error::TokenError;
use crate::keys::{generate, KeyRing, KeyState, LoadedKey, SigningAlgorithm};
use crate::store::{Event, TokenStore};

type Result<T, E = TokenError> = std::result::Result<T, E>;

/// Retired keys are deleted this long after they left the JWKS.
const PRUNE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Manages the keys.
#[derive(Clone, Debug)]
pub struct KeyManager {
    store: TokenStore,
    secrets: SecretBox,
    ring: KeyRing,
    default_algorithm: SigningAlgorithm,
    /// How long a retired key stays published: the access-token lifetime plus the leeway.
    retire_publish: Duration,
    /// How long a next key must have been published before it may sign: the longest time a JWKS
    /// consumer caches the key set, or a replica goes without reloading the keys.
    min_publish: Duration,
    /// Reloads of this process one at a time, so that the ring is replaced in the order the keys
    /// were read: a reload that read the table before a rotation never replaces the ring after the
    /// rotation's own reload (which would hide the new next key, or bring back the retired one as
    /// active, until the next reload).
    reloading: Arc<tokio::sync::Mutex<()>>,
}

impl KeyManager {
    /// Over the store; new keys use `default_algorithm` unless a rotation names another.
    pub fn new(
        store: TokenStore,
        secrets: SecretBox,
        ring: KeyRing,
        default_algorithm: SigningAlgorithm,
        access_ttl: Duration,
        min_publish: Duration,
    ) -> Self {
        Self {
            store,
            secrets,
            ring,
            default_algorithm,
            retire_publish: access_ttl + ACCESS_TOKEN_LEEWAY,
            min_publish,
            reloading: Arc::default(),
        }
    }

    /// The ring it keeps current.
    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    /// Reads the keys again (other replicas may have rotated).
    pub async fn reload(&self) -> Result<()> {
        let _one_at_a_time = self.reloading.lock().await;
        let keys = self.store.load_keys(&self.secrets).await?;
        self.ring.replace(keys);
        Ok(())
    }

    async fn create(&self, alg: SigningAlgorithm, state: KeyState, now: Timestamp) -> Result<String> {
        let kid = random_token(16);
        let der = tokio::task::spawn_blocking(move || generate(alg))
            .await
            .map_err(TokenError::failed("the key generation task failed"))?
            .map_err(|e| TokenError::Internal(format!("generating a {alg:?} key: {e}")))?;
        self.store.insert_key(&kid, alg, &der, state, &self.secrets, now).await?;
        Ok(kid)
    }

    /// Makes sure there is an active key and a next one. On a fresh database the first key signs
    /// at once: nothing can have cached a key set that lacks it.
    pub async fn bootstrap(&self) -> Result<()> {
        let now = Timestamp::now();
        if self.store.active_key().await?.is_none() {
            if self.store.count_next().await? > 0 {
                self.store.promote_next(None, now, now).await?;
            } else {
                match self.create(self.default_algorithm, KeyState::Active, now).await {
                    Ok(_) => {}
                    // Another replica created the first key at the same moment.
                    Err(e) if e.db_kind() == Some(DbErrorKind::UniqueViolation) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if self.store.count_next().await? == 0 {
            self.create(self.default_algorithm, KeyState::Next, now).await?;
        }
        self.reload().await
    }

    /// Rotates: the next key signs from now on, the active one retires (still published until its
    /// tokens expire), and a new next key of `algorithm` (default: the configured one) is created
    /// and published. Returns the new next key. Unless `force`d, the next key must have been
    /// published for `min_publish` ([`TokenError::NextKeyTooNew`] otherwise).
    pub async fn rotate(&self, algorithm: Option<SigningAlgorithm>, actor: &str, force: bool) -> Result<LoadedKey> {
        let now = Timestamp::now();
        let active = self.store.active_key().await?.map(|(kid, _)| kid);
        match self.store.oldest_next().await? {
            Some(created) if force || created.plus(self.min_publish) <= now => {}
            Some(created) => {
                let wait = created.plus(self.min_publish).0.saturating_sub(now.0) / 1_000_000 + 1;
                return Err(TokenError::NextKeyTooNew { retry_after_secs: u64::try_from(wait).unwrap_or(1) });
            }
            None if force => {
                self.create(self.default_algorithm, KeyState::Next, now).await?;
            }
            None => {
                self.create(self.default_algorithm, KeyState::Next, now).await?;
                self.reload().await?;
                return Err(TokenError::NextKeyTooNew { retry_after_secs: self.min_publish.as_secs() + 1 });
            }
        }
        self.store.promote_next(active.as_deref(), now.plus(self.retire_publish), now).await?;
        let kid = self.create(algorithm.unwrap_or(self.default_algorithm), KeyState::Next, now).await?;
        let event = Event {
            org: None,
            actor,
            action: "signing_key.rotated",
            target: format!("signing_key:{kid}"),
            details: Default::default(),
        };
        self.store.record(&event, now).await?;
        metrics::counter!("lanyard_token_key_rotations_total").increment(1);
        self.reload().await?;
        self.ring
            .snapshot()
            .iter()
            .find(|k| k.kid == kid)
            .cloned()
            .ok_or_else(|| TokenError::Internal("the new key vanished".into()))
    }

    /// Rotates when the active key has signed for `interval` or longer; reloads either way; prunes
    /// keys that left the JWKS a day ago, replies past their replay window, and used ID tokens
    /// that could no longer be accepted anyway.
    pub async fn rotate_if_due(&self, interval: Duration) -> Result<bool> {
        let now = Timestamp::now();
        let next_published = self.store.oldest_next().await?.is_some_and(|t| t.plus(self.min_publish) <= now);
        let due = match self.store.active_key().await? {
            Some((_, activated)) => activated.plus(interval) <= now && next_published,
            None => true,
        };
        if due {
            self.rotate(None, "system:key-rotation", false).await?;
        } else {
            self.reload().await?;
        }
        self.store.prune_keys(Timestamp(now.0 - i64::try_from(PRUNE_AFTER.as_micros()).unwrap_or(0))).await?;
        self.store.prune_used_id_tokens(now).await?;
        Ok(due)
    }
}
