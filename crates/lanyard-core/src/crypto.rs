//! Encryption at rest (AES-256-GCM) for secrets such as SSO client secrets, and the
//! key-encryption key it needs.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The key is not base64 of 32 bytes.
    #[error("the encryption key must be base64 of 32 bytes")]
    BadKey,
    /// The ciphertext is damaged, or was sealed under another key or context.
    #[error("ciphertext cannot be opened with this key")]
    Open,
    /// The ciphertext names the key that sealed it, and the box does not hold that key.
    #[error("sealed under key {0}, which is not among the configured keys")]
    UnknownKey(String),
    /// The key file could not be read or written.
    #[error("key file: {0}")]
    Io(#[from] std::io::Error),
}

/// One key-encryption key and its id.
#[derive(Clone)]
struct Kek {
    id: String,
    cipher: Aes256Gcm,
}

impl Kek {
    fn from_base64(key: &str) -> Result<Self, CryptoError> {
        let bytes = STANDARD.decode(key.trim()).map_err(|_| CryptoError::BadKey)?;
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| CryptoError::BadKey)?;
        // A digest of the key under a label of its own: it names the key in ciphertexts and logs
        // and tells nothing about it.
        let mut digest = Sha256::new();
        digest.update(b"lanyard key-encryption key id\0");
        digest.update(&bytes);
        let id = digest.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self { id, cipher })
    }

    fn open(&self, body: &str, context: &str) -> Result<String, CryptoError> {
        let bytes = STANDARD.decode(body).map_err(|_| CryptoError::Open)?;
        if bytes.len() < 12 {
            return Err(CryptoError::Open);
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: context.as_bytes() })
            .map_err(|_| CryptoError::Open)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Open)
    }
}

/// Seals and opens small secrets with AES-256-GCM under a primary key, and opens what previous
/// keys sealed (during a rotation of the key-encryption key: `lanyard keys reencrypt`).
///
/// Sealed forms: `v2:<key id>:<base64(nonce | ciphertext)>` names its key; `v1:<base64>`, the
/// form before keys had ids, is opened by trying each key. A box that holds only its primary key
/// still seals `v1`, so a release that reads only `v1` keeps reading what this one writes until
/// a rotation is configured.
#[derive(Clone)]
pub struct SecretBox {
    primary: Kek,
    previous: Vec<Kek>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

const V1: &str = "v1:";
const V2: &str = "v2:";

impl SecretBox {
    /// From base64 of a 32-byte key.
    pub fn from_base64(key: &str) -> Result<Self, CryptoError> {
        Ok(Self { primary: Kek::from_base64(key)?, previous: Vec::new() })
    }

    /// Also opens what these keys (base64 of 32 bytes each) sealed; it never seals with them.
    /// The primary key, or a key given twice, is kept once.
    pub fn with_previous<'a>(mut self, keys: impl IntoIterator<Item = &'a str>) -> Result<Self, CryptoError> {
        for key in keys {
            let kek = Kek::from_base64(key)?;
            if kek.id != self.primary.id && self.previous.iter().all(|k| k.id != kek.id) {
                self.previous.push(kek);
            }
        }
        Ok(self)
    }

    /// The id of the key that seals (a digest of it, safe to print).
    pub fn key_id(&self) -> &str {
        &self.primary.id
    }

    /// The ids of the keys that only open.
    pub fn previous_key_ids(&self) -> Vec<&str> {
        self.previous.iter().map(|k| k.id.as_str()).collect()
    }

    /// The prefix of every value sealed under the primary key in the `v2` form.
    pub fn sealed_prefix(&self) -> String {
        format!("{V2}{}:", self.primary.id)
    }

    /// Reads the key file, or creates it with a fresh random key readable by the owner only.
    pub fn load_or_create(path: &Path) -> Result<Self, CryptoError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                // An older version, or a hand-made file, may have left it readable by others.
                crate::fs::make_private(path)?;
                Self::from_base64(&text)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                let encoded = STANDARD.encode(key);
                write_private(path, &encoded)?;
                Self::from_base64(&encoded)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Seals `plaintext`, bound to `context` (e.g. the row it belongs to) so a ciphertext cannot
    /// be moved to another row.
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .primary
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext.as_bytes(), aad: context.as_bytes() })
            .expect("AES-GCM encryption of a small buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        if self.previous.is_empty() {
            format!("{V1}{}", STANDARD.encode(out))
        } else {
            format!("{}{}", self.sealed_prefix(), STANDARD.encode(out))
        }
    }

    /// Opens what [`SecretBox::seal`] produced with the same context, under any key of the box.
    pub fn open(&self, sealed: &str, context: &str) -> Result<String, CryptoError> {
        if let Some(rest) = sealed.strip_prefix(V2) {
            let (id, body) = rest.split_once(':').ok_or(CryptoError::Open)?;
            let key = self.keys().find(|k| k.id == id).ok_or_else(|| CryptoError::UnknownKey(id.to_owned()))?;
            return key.open(body, context);
        }
        let body = sealed.strip_prefix(V1).ok_or(CryptoError::Open)?;
        // No key id: the primary first (what is written now), then the older ones.
        self.keys().find_map(|k| k.open(body, context).ok()).ok_or(CryptoError::Open)
    }

    /// `sealed` sealed again under the primary key, or `None` when it already is (then nothing
    /// needs to change). Fails as [`SecretBox::open`] does.
    pub fn reseal(&self, sealed: &str, context: &str) -> Result<Option<String>, CryptoError> {
        let prefix = self.sealed_prefix();
        if let Some(body) = sealed.strip_prefix(&prefix) {
            // Opened all the same: a damaged value is reported now, not at its next use.
            self.primary.open(body, context)?;
            return Ok(None);
        }
        if sealed.strip_prefix(V1).is_some_and(|body| self.primary.open(body, context).is_ok()) {
            return Ok(None);
        }
        // Not under the primary key, yet it opens: under a previous key, so the box has one and
        // seals in the form that names its key.
        let plain = self.open(sealed, context)?;
        Ok(Some(self.seal(&plain, context)))
    }

    fn keys(&self) -> impl Iterator<Item = &Kek> {
        std::iter::once(&self.primary).chain(&self.previous)
    }
}

/// Writes a new file readable and writable by its owner only, in a private directory.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    // A bare file name has an empty parent: the working directory, which is not ours to tighten.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::fs::create_private_dir(dir)?;
    }
    let mut file = crate::fs::open_private(path, std::fs::OpenOptions::new().write(true).create_new(true))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// A random URL-safe token of `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_in_context() {
        let key = STANDARD.encode([7u8; 32]);
        let b = SecretBox::from_base64(&key).unwrap();
        let sealed = b.seal("s3cret", "conn:1");
        assert!(!sealed.contains("s3cret"));
        assert_eq!(b.open(&sealed, "conn:1").unwrap(), "s3cret");
        assert!(b.open(&sealed, "conn:2").is_err());
        let other = SecretBox::from_base64(&STANDARD.encode([8u8; 32])).unwrap();
        assert!(other.open(&sealed, "conn:1").is_err());
        assert!(SecretBox::from_base64("short").is_err());
    }

    fn key(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    #[test]
    fn a_box_with_previous_keys_opens_both_and_seals_under_the_primary() {
        let old = SecretBox::from_base64(&key(1)).unwrap();
        let v1 = old.seal("s3cret", "c");
        assert!(v1.starts_with("v1:"), "without previous keys the form older releases read: {v1}");
        let rotating = SecretBox::from_base64(&key(2)).unwrap().with_previous([key(1).as_str()]).unwrap();
        assert_ne!(rotating.key_id(), old.key_id());
        assert_eq!(rotating.previous_key_ids(), [old.key_id()]);
        assert_eq!(rotating.open(&v1, "c").unwrap(), "s3cret");
        let v2 = rotating.seal("s3cret", "c");
        assert!(v2.starts_with(&format!("v2:{}:", rotating.key_id())), "{v2}");
        // The old key alone cannot open it, and says which key it would need.
        assert!(matches!(old.open(&v2, "c"), Err(CryptoError::UnknownKey(id)) if id == rotating.key_id()));
        let new_only = SecretBox::from_base64(&key(2)).unwrap();
        assert_eq!(new_only.open(&v2, "c").unwrap(), "s3cret");
        // Old ciphertexts under a previous key that names itself open too.
        let old_v2 = SecretBox::from_base64(&key(1)).unwrap().with_previous([key(3).as_str()]).unwrap().seal("x", "c");
        assert_eq!(rotating.open(&old_v2, "c").unwrap(), "x");
        assert!(rotating.open(&old_v2, "other context").is_err());
        // A key id that names a key of the box does not make another key's body open.
        let forged = format!("v2:{}:{}", rotating.key_id(), old_v2.rsplit(':').next().unwrap());
        assert!(matches!(rotating.open(&forged, "c"), Err(CryptoError::Open)));
    }

    #[test]
    fn reseal_moves_values_to_the_primary_once() {
        let old = SecretBox::from_base64(&key(1)).unwrap();
        let rotating = SecretBox::from_base64(&key(2)).unwrap().with_previous([key(1).as_str()]).unwrap();
        let moved = rotating.reseal(&old.seal("s", "c"), "c").unwrap().expect("re-sealed");
        assert!(moved.starts_with(&rotating.sealed_prefix()));
        assert_eq!(SecretBox::from_base64(&key(2)).unwrap().open(&moved, "c").unwrap(), "s");
        assert_eq!(rotating.reseal(&moved, "c").unwrap(), None, "already under the primary");
        let v1_under_primary = SecretBox::from_base64(&key(2)).unwrap().seal("s", "c");
        assert_eq!(rotating.reseal(&v1_under_primary, "c").unwrap(), None);
        // A wrong previous key: refused, whatever the form.
        let wrong = SecretBox::from_base64(&key(2)).unwrap().with_previous([key(9).as_str()]).unwrap();
        assert!(matches!(wrong.reseal(&old.seal("s", "c"), "c"), Err(CryptoError::Open)));
        let named = SecretBox::from_base64(&key(1)).unwrap().with_previous([key(3).as_str()]).unwrap().seal("s", "c");
        assert!(matches!(wrong.reseal(&named, "c"), Err(CryptoError::UnknownKey(_))));
        // Damage under the primary's own prefix is reported, not passed over.
        let mut damaged = moved.clone();
        damaged.pop();
        damaged.push(if moved.ends_with('A') { 'B' } else { 'A' });
        assert!(rotating.reseal(&damaged, "c").is_err());
        assert!(SecretBox::from_base64(&key(2)).unwrap().with_previous(["short"]).is_err());
    }

    #[test]
    fn creates_a_private_key_file_once() {
        let dir = std::env::temp_dir().join(format!("lanyard-key-{}", uuid::Uuid::new_v4()));
        let path = dir.join("kek");
        let a = SecretBox::load_or_create(&path).unwrap();
        let b = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(b.open(&a.seal("x", "c"), "c").unwrap(), "x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn tightens_a_loose_key_file_it_reads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("lanyard-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kek");
        std::fs::write(&path, STANDARD.encode([7u8; 32])).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        SecretBox::load_or_create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
