//! The shared cache: Redis in production, an in-process map in the embedded default. It only ever
//! holds what can be rebuilt from the database; every reader falls back to the database when the
//! cache misses or fails.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why the cache could not answer.
#[derive(Debug, thiserror::Error)]
#[error("cache unavailable: {0}")]
pub struct CacheError(String);

/// A value with a version: a write wins only over an older version, so writers racing each other
/// never leave an older value behind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The version; higher is newer.
    pub version: i64,
    /// The value.
    pub value: String,
}

#[derive(Clone)]
enum Backend {
    // Boxed: with TLS support the client carries its TLS configuration.
    Redis(redis::aio::ConnectionManager, Box<redis::Client>),
    Local(Arc<Mutex<HashMap<String, (Versioned, Instant)>>>),
}

/// A key-value cache with expiring, versioned entries.
#[derive(Clone)]
pub struct Cache {
    backend: Backend,
    prefix: String,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.backend {
            Backend::Redis(..) => "redis",
            Backend::Local(_) => "local",
        };
        f.debug_struct("Cache").field("backend", &kind).field("prefix", &self.prefix).finish()
    }
}

/// Sets KEYS[1] to ARGV[2] (version ARGV[1]) for ARGV[3] ms unless it holds a newer version.
const SET_IF_NEWER: &str = r"
local current = redis.call('HGET', KEYS[1], 'version')
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'value', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

impl Cache {
    /// Redis at `url`, with every key under `prefix:`.
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, CacheError> {
        Self::redis_tls(url, prefix, None).await
    }

    /// As [`Cache::redis`]; a `rediss://` URL is reached over TLS trusting `ca_pem` (PEM roots,
    /// instead of the system's) when given. A `redis://` URL stays plaintext whatever `ca_pem`.
    pub async fn redis_tls(url: &str, prefix: &str, ca_pem: Option<&[u8]>) -> Result<Self, CacheError> {
        let client = match ca_pem {
            Some(ca) if url.get(..9).is_some_and(|s| s.eq_ignore_ascii_case("rediss://")) => {
                let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(ca.to_vec()) };
                redis::Client::build_with_tls(url, certificates)
            }
            _ => redis::Client::open(url),
        }
        .map_err(|e| CacheError(e.to_string()))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        let manager = redis::aio::ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| CacheError(e.to_string()))?;
        Ok(Self { backend: Backend::Redis(manager, Box::new(client)), prefix: prefix.to_owned() })
    }

    /// The in-process cache of the embedded default.
    pub fn local(prefix: &str) -> Self {
        Self { backend: Backend::Local(Arc::default()), prefix: prefix.to_owned() }
    }

    /// The full key of `key`.
    pub fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.prefix)
    }

    /// The Redis client, for a subscription of its own; `None` for the in-process cache.
    pub fn redis_client(&self) -> Option<&redis::Client> {
        match &self.backend {
            Backend::Redis(_, client) => Some(client.as_ref()),
            Backend::Local(_) => None,
        }
    }

    /// Publishes `message` on the channel `prefix:channel`; returns how many subscribers received
    /// it (always 0 for the in-process cache, which has no channel).
    pub async fn publish(&self, channel: &str, message: &str) -> Result<i64, CacheError> {
        match &self.backend {
            Backend::Redis(conn, _) => {
                let mut conn = conn.clone();
                redis::cmd("PUBLISH")
                    .arg(self.key(channel))
                    .arg(message)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| CacheError(e.to_string()))
            }
            Backend::Local(_) => Ok(0),
        }
    }

    /// Whether the cache answers.
    pub async fn ping(&self) -> Result<(), CacheError> {
        match &self.backend {
            Backend::Redis(conn, _) => {
                let mut conn = conn.clone();
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .map(|_| ())
                    .map_err(|e| CacheError(e.to_string()))
            }
            Backend::Local(_) => Ok(()),
        }
    }

    /// The live entry under `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Versioned>, CacheError> {
        let key = self.key(key);
        match &self.backend {
            Backend::Redis(conn, _) => {
                let mut conn = conn.clone();
                let (version, value): (Option<i64>, Option<String>) = redis::cmd("HMGET")
                    .arg(&key)
                    .arg("version")
                    .arg("value")
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| CacheError(e.to_string()))?;
                Ok(version.zip(value).map(|(version, value)| Versioned { version, value }))
            }
            Backend::Local(map) => {
                let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
                match map.get(&key) {
                    Some((v, until)) if *until > Instant::now() => Ok(Some(v.clone())),
                    Some(_) => {
                        map.remove(&key);
                        Ok(None)
                    }
                    None => Ok(None),
                }
            }
        }
    }

    /// Stores `value` for `ttl` unless the entry holds a newer version. Returns whether it was stored.
    pub async fn set_if_newer(&self, key: &str, value: &Versioned, ttl: Duration) -> Result<bool, CacheError> {
        let key = self.key(key);
        let ttl_ms = ttl.as_millis().max(1) as u64;
        match &self.backend {
            Backend::Redis(conn, _) => {
                let mut conn = conn.clone();
                let stored: i64 = redis::Script::new(SET_IF_NEWER)
                    .key(&key)
                    .arg(value.version)
                    .arg(&value.value)
                    .arg(ttl_ms)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| CacheError(e.to_string()))?;
                Ok(stored == 1)
            }
            Backend::Local(map) => {
                let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                if let Some((current, until)) = map.get(&key) {
                    if *until > now && current.version > value.version {
                        return Ok(false);
                    }
                }
                map.insert(key, (value.clone(), now + ttl));
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_entries_expire_and_keep_the_newest_version() {
        let cache = Cache::local("t");
        let v = |version, value: &str| Versioned { version, value: value.to_owned() };
        assert!(cache.set_if_newer("k", &v(2, "two"), Duration::from_secs(60)).await.unwrap());
        assert!(!cache.set_if_newer("k", &v(1, "one"), Duration::from_secs(60)).await.unwrap());
        assert_eq!(cache.get("k").await.unwrap(), Some(v(2, "two")));
        assert!(cache.set_if_newer("k", &v(3, "three"), Duration::from_millis(1)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(cache.get("k").await.unwrap(), None);
    }
}
