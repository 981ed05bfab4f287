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
    /// The key file could not be read or written.
    #[error("key file: {0}")]
    Io(#[from] std::io::Error),
}

/// Seals and opens small secrets with AES-256-GCM under one key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

const VERSION: &str = "v1";

impl SecretBox {
    /// From base64 of a 32-byte key.
    pub fn from_base64(key: &str) -> Result<Self, CryptoError> {
        let bytes = STANDARD.decode(key.trim()).map_err(|_| CryptoError::BadKey)?;
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| CryptoError::BadKey)?;
        Ok(Self { cipher })
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
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext.as_bytes(), aad: context.as_bytes() })
            .expect("AES-GCM encryption of a small buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!("{VERSION}:{}", STANDARD.encode(out))
    }

    /// Opens what [`SecretBox::seal`] produced with the same context.
    pub fn open(&self, sealed: &str, context: &str) -> Result<String, CryptoError> {
        let body = sealed.strip_prefix("v1:").ok_or(CryptoError::Open)?;
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
