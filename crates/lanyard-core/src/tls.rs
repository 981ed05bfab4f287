//! TLS shared by every process: the one rustls crypto provider, and the client side of the
//! channels a process opens to the other services (trusted roots, and the certificate it presents
//! when the peer asks for one).

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Installs ring as the process-wide rustls crypto provider. rustls panics when a process has
/// several providers compiled in and none installed; Lanyard compiles ring only (no aws-lc-rs),
/// and installing it explicitly keeps it so if a dependency ever brings another. Idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is already installed (by an earlier call): nothing to do.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What a client trusts and presents on `https://` channels to the other services: the roots of
/// the system plus those of `LANYARD_TLS_CA_FILE`, and the process's own certificate
/// (`LANYARD_TLS_CERT_FILE`/`KEY_FILE`) for a peer that requires client certificates.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// PEM certificates trusted besides the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain and private key presented when the server asks for one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the server's certificate must carry, when not the URL's host (a probe that
    /// dials `127.0.0.1` of a pod whose certificate names its Service).
    pub server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca_pem.is_some())
            .field("identity", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// A TLS file that cannot be read or holds no usable PEM.
#[derive(Debug, thiserror::Error)]
#[error("{what} ({}): {reason}", path.display())]
pub struct TlsFileError {
    /// The setting that names the file.
    pub what: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Why it cannot be used.
    pub reason: String,
}

/// Reads a PEM file named by setting `what`; refuses a file with no PEM certificate or key in it,
/// so a wrong path fails at start rather than at the first handshake.
pub fn read_pem(what: &'static str, path: &Path, kind: &str) -> Result<Vec<u8>, TlsFileError> {
    let fail = |reason: String| TlsFileError { what, path: path.to_owned(), reason };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains("-----BEGIN ") || !text.contains(kind) {
        return Err(fail(format!("no PEM {kind} in it")));
    }
    Ok(bytes)
}

impl ClientTls {
    /// From the files of the settings (each optional).
    pub fn from_files(
        ca_file: Option<&Path>,
        cert_file: Option<&Path>,
        key_file: Option<&Path>,
    ) -> Result<Self, TlsFileError> {
        let ca_pem = ca_file.map(|p| read_pem("LANYARD_TLS_CA_FILE", p, "CERTIFICATE")).transpose()?;
        let identity = match (cert_file, key_file) {
            (Some(cert), Some(key)) => Some((
                read_pem("LANYARD_TLS_CERT_FILE", cert, "CERTIFICATE")?,
                read_pem("LANYARD_TLS_KEY_FILE", key, "PRIVATE KEY")?,
            )),
            _ => None,
        };
        Ok(Self { ca_pem, identity, server_name: None })
    }

    /// tonic's client configuration: the system roots, the extra roots, the identity.
    pub fn tonic_config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = &self.ca_pem {
            config = config.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        config
    }
}

/// Whether `url` asks for TLS (`https://`, any case).
pub fn is_https(url: &str) -> bool {
    url.get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// An endpoint for `url`: TLS with `tls` for `https://`, plaintext HTTP/2 for `http://`.
pub fn endpoint(url: &str, tls: &ClientTls) -> Result<Endpoint, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(url.to_owned())?;
    if is_https(url) {
        endpoint.tls_config(tls.tonic_config())
    } else {
        Ok(endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_is_recognised_in_any_case() {
        assert!(is_https("https://tenancy:50051"));
        assert!(is_https("HTTPS://tenancy:50051"));
        assert!(!is_https("http://tenancy:50051"));
        assert!(!is_https("htt"));
    }

    #[test]
    fn a_file_without_pem_is_refused_at_once() {
        let dir = std::env::temp_dir().join(format!("lanyard-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let e = ClientTls::from_files(Some(&path), None, None).unwrap_err().to_string();
        assert!(e.contains("LANYARD_TLS_CA_FILE"), "{e}");
        let missing = dir.join("missing.pem");
        assert!(ClientTls::from_files(Some(&missing), None, None).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
