//! Server TLS for both listeners: the certificate and key of `LANYARD_TLS_CERT_FILE` and
//! `LANYARD_TLS_KEY_FILE`, reloaded when the files change (cert-manager rotates them in place),
//! and client certificates required on the gRPC listener when `LANYARD_TLS_CLIENT_CA_FILE` is set.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// The server side of TLS: one acceptor per listener over one reloading certificate.
#[derive(Clone)]
pub struct ServerTls {
    /// For the gRPC listener: ALPN `h2`, and client certificates when a client CA is configured.
    pub grpc: TlsAcceptor,
    /// For the HTTP listener (JWKS, OpenID configuration, health): ALPN `http/1.1`, server TLS only.
    pub http: TlsAcceptor,
    certificate: Arc<ReloadingCertificate>,
}

/// Where the server's TLS material comes from.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM roots a gRPC client's certificate must chain to; none means no client certificates.
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// Loads the certificate, key and client CA; any of them unusable is an error (at start the
    /// process refuses to run rather than serve without the TLS it was asked for).
    pub fn load(files: TlsFiles) -> anyhow::Result<Self> {
        lanyard_core::tls::install_crypto_provider();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (key, seen) = read_pair(&files.cert, &files.key, &provider)?;
        let certificate = Arc::new(ReloadingCertificate {
            current: ArcSwap::from_pointee(key),
            files: files.clone(),
            provider: provider.clone(),
            seen: std::sync::Mutex::new(seen),
        });
        let grpc_verifier = match &files.client_ca {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(path)
                    .with_context(|| format!("LANYARD_TLS_CLIENT_CA_FILE ({})", path.display()))?
                {
                    let cert =
                        cert.with_context(|| format!("LANYARD_TLS_CLIENT_CA_FILE ({}): bad PEM", path.display()))?;
                    roots
                        .add(cert)
                        .with_context(|| format!("LANYARD_TLS_CLIENT_CA_FILE ({}): bad certificate", path.display()))?;
                }
                anyhow::ensure!(
                    !roots.is_empty(),
                    "LANYARD_TLS_CLIENT_CA_FILE ({}) holds no certificate",
                    path.display()
                );
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .context("LANYARD_TLS_CLIENT_CA_FILE")?
            }
            None => WebPkiClientVerifier::no_client_auth(),
        };
        let config = |verifier, alpn: &[u8]| -> anyhow::Result<TlsAcceptor> {
            let mut config = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .context("TLS protocol versions")?
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(certificate.clone());
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(TlsAcceptor::from(Arc::new(config)))
        };
        Ok(Self {
            grpc: config(grpc_verifier, b"h2")?,
            http: config(WebPkiClientVerifier::no_client_auth(), b"http/1.1")?,
            certificate,
        })
    }

    /// Checks the files every `interval` (and at once on SIGHUP) until `stop` turns true; a new
    /// pair that loads replaces the served one for new handshakes, a pair that does not is logged
    /// and the old one kept. Open connections keep the session they negotiated.
    pub fn spawn_reloader(&self, interval: Duration, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let certificate = self.certificate.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                #[cfg(unix)]
                let hup = async {
                    match hangup.as_mut() {
                        Some(s) => {
                            s.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                #[cfg(not(unix))]
                let hup = std::future::pending::<()>();
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(interval) => {}
                    _ = hup => tracing::info!("SIGHUP: checking the TLS files"),
                }
                certificate.reload();
            }
        })
    }
}

/// The bytes of a certificate file and a key file.
type PemPair = (Vec<u8>, Vec<u8>);

/// The served certificate, replaced when the files change.
#[derive(Debug)]
struct ReloadingCertificate {
    current: ArcSwap<CertifiedKey>,
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    /// The bytes of the files last looked at, loaded or not: a bad pair is logged once, not at
    /// every check.
    seen: std::sync::Mutex<PemPair>,
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ReloadingCertificate {
    fn reload(&self) {
        let (cert, key) = match (std::fs::read(&self.files.cert), std::fs::read(&self.files.key)) {
            (Ok(cert), Ok(key)) => (cert, key),
            (Err(e), _) | (_, Err(e)) => {
                // Mid-rotation a file may be briefly missing: the next check sees the new pair.
                tracing::debug!(error = %e, "cannot read the TLS files; keeping the served certificate");
                return;
            }
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.0 == cert && seen.1 == key {
            return;
        }
        match certified_key(&cert, &key, &self.provider) {
            Ok(loaded) => {
                self.current.store(Arc::new(loaded));
                tracing::info!(cert = %self.files.cert.display(), "reloaded the TLS certificate");
                metrics::counter!("lanyard_tls_reloads_total", "result" => "ok").increment(1);
            }
            Err(e) => {
                tracing::error!(
                    cert = %self.files.cert.display(),
                    key = %self.files.key.display(),
                    error = %e,
                    "the new TLS certificate or key cannot be used; still serving the previous one"
                );
                metrics::counter!("lanyard_tls_reloads_total", "result" => "error").increment(1);
            }
        }
        *seen = (cert, key);
    }
}

fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<(CertifiedKey, PemPair)> {
    let cert_pem = std::fs::read(cert).with_context(|| format!("LANYARD_TLS_CERT_FILE ({})", cert.display()))?;
    let key_pem = std::fs::read(key).with_context(|| format!("LANYARD_TLS_KEY_FILE ({})", key.display()))?;
    let loaded = certified_key(&cert_pem, &key_pem, provider).with_context(|| {
        format!("LANYARD_TLS_CERT_FILE ({}) and LANYARD_TLS_KEY_FILE ({})", cert.display(), key.display())
    })?;
    Ok((loaded, (cert_pem, key_pem)))
}

/// A certificate chain and its private key, checked to belong together.
fn certified_key(cert_pem: &[u8], key_pem: &[u8], provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("the certificate file is not PEM: {e}"))?;
    anyhow::ensure!(!chain.is_empty(), "the certificate file holds no certificate");
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| anyhow::anyhow!("the key file holds no private key: {e}"))?;
    let signing =
        provider.key_provider.load_private_key(key).map_err(|e| anyhow::anyhow!("unusable private key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(e) => Err(anyhow::anyhow!("the key does not belong to the certificate: {e}")),
    }
}
