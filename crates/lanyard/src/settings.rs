//! Typed settings: defaults, then an optional file (`LANYARD_CONFIG_FILE` or `--config`), then
//! `LANYARD_*` environment variables. Secret fields are wrapped so they never print.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Log output format.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable text, for development.
    #[default]
    Text,
    /// One JSON object per line, for production.
    Json,
}

/// How invitation emails leave the invitation service.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MailTransportKind {
    /// Through the SMTP server of `LANYARD_SMTP_URL`.
    Smtp,
    /// As `.eml` files in the mail directory: nobody receives them unless someone collects them.
    Files,
}

/// Every setting of the `lanyard` binary.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// gRPC listen address (`LANYARD_LISTEN_ADDR`).
    pub listen_addr: SocketAddr,
    /// Where the embedded default keeps its SQLite files and generated keys (`LANYARD_DATA_DIR`).
    pub data_dir: PathBuf,
    /// `postgres://...` for production; unset means SQLite files in `data_dir` (`LANYARD_DATABASE_URL`).
    pub database_url: Option<SecretString>,
    /// `redis://...`; unset means the in-process cache (`LANYARD_REDIS_URL`).
    pub redis_url: Option<SecretString>,
    /// The prefix of every key Lanyard writes to Redis (`LANYARD_REDIS_KEY_PREFIX`).
    pub redis_key_prefix: String,
    /// Operator API keys, comma-separated in the environment (`LANYARD_OPERATOR_KEYS`).
    pub operator_keys: Vec<SecretString>,
    /// Service API keys, comma-separated in the environment (`LANYARD_SERVICE_KEYS`).
    pub service_keys: Vec<SecretString>,
    /// Base64 of the 32-byte key-encryption key (`LANYARD_ENCRYPTION_KEY`); the embedded default
    /// creates one in `data_dir`.
    pub encryption_key: Option<SecretString>,
    /// Earlier key-encryption keys, comma-separated in the environment
    /// (`LANYARD_PREVIOUS_ENCRYPTION_KEYS`): they open what they sealed and never seal, so the
    /// services keep reading every secret while `lanyard keys reencrypt` moves them to
    /// `encryption_key`.
    pub previous_encryption_keys: Vec<SecretString>,
    /// `text` or `json` (`LANYARD_LOG_FORMAT`).
    pub log_format: LogFormat,
    /// Accept SSO issuers, and fetch discovery and JWKS documents, on loopback (`http://` too):
    /// local development and tests only (`LANYARD_ALLOW_HTTP_ISSUERS`).
    pub allow_http_issuers: bool,
    /// When set, the only SSO issuers accepted: exact issuers (`https://accounts.google.com`)
    /// or host suffixes (`okta.com`), comma-separated in the environment
    /// (`LANYARD_SSO_ISSUER_ALLOWLIST`). Empty accepts any public https issuer.
    pub sso_issuer_allowlist: Vec<String>,
    /// The most SSO connections one organization may have (`LANYARD_MAX_SSO_CONNECTIONS_PER_ORG`).
    pub max_sso_connections_per_org: u32,
    /// Pool size per service database.
    pub database_max_connections: u32,
    /// How long start-up waits, retrying with backoff, for Postgres and Redis to answer before
    /// the process gives up, in seconds (`LANYARD_STARTUP_RETRY_SECONDS`).
    pub startup_retry_seconds: u64,
    /// How long in-flight RPCs may take to finish after SIGTERM, in seconds.
    pub shutdown_grace_seconds: u64,
    /// Address of the tenancy service, when it runs in another process (`LANYARD_TENANCY_URL`).
    pub tenancy_url: Option<String>,
    /// Address of the invitation service, when it runs in another process (`LANYARD_INVITATION_URL`).
    pub invitation_url: Option<String>,
    /// gRPC address of the token service, when it runs in another process (`LANYARD_TOKEN_URL`).
    /// With `token_jwks_url`, this process accepts Lanyard access tokens as member callers, with
    /// the same checks as the token service (its `BatchAuthorize` answers when the revocation
    /// facts cannot be read here).
    pub token_url: Option<String>,
    /// The token service's published keys (`LANYARD_TOKEN_JWKS_URL`,
    /// `http://lanyard-token:8080/.well-known/jwks.json`), fetched when a token first names a key.
    pub token_jwks_url: Option<String>,
    /// Prometheus metrics address (`LANYARD_METRICS_ADDR`), when enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// The token service's HTTP address for `/.well-known/jwks.json` and
    /// `/.well-known/openid-configuration` (`LANYARD_HTTP_ADDR`).
    pub http_addr: Option<SocketAddr>,
    /// `iss` of Lanyard's access tokens and the base URL of its OpenID configuration
    /// (`LANYARD_TOKEN_ISSUER`).
    pub token_issuer: String,
    /// `aud` of Lanyard's access tokens (`LANYARD_TOKEN_AUDIENCE`): every verifier of this
    /// deployment (split processes, embedded `lanyard-authz`) must expect the same.
    pub token_audience: String,
    /// How long an access token lives, in seconds (`LANYARD_ACCESS_TOKEN_TTL_SECONDS`, 30 to 3600).
    pub access_token_ttl_seconds: u64,
    /// How long one refresh token lives, in seconds; each refresh issues a new one
    /// (`LANYARD_REFRESH_TOKEN_TTL_SECONDS`, at most the session's lifetime).
    pub refresh_token_ttl_seconds: u64,
    /// How long a session lives however often it is refreshed, in seconds
    /// (`LANYARD_SESSION_TTL_SECONDS`, at most 365 days).
    pub session_ttl_seconds: u64,
    /// The algorithm new signing keys use: `ES256`, `EdDSA` or `RS256` (`LANYARD_SIGNING_ALGORITHM`).
    pub signing_algorithm: String,
    /// The settings file that was read, if any (`LANYARD_CONFIG_FILE`).
    pub config_file: Option<PathBuf>,
    /// The registration link sent in invitations; `{token}` marks where the token goes
    /// (`LANYARD_INVITATION_LINK_TEMPLATE`). Unset: the token service's invitation landing page,
    /// `<LANYARD_TOKEN_ISSUER>/invite/{token}`.
    pub invitation_link_template: Option<String>,
    /// The product application's login route (OpenID Connect's `initiate_login_uri`): where the
    /// hosted pages send a browser that came without an application (an invitation link, `/sign-in`
    /// opened directly), with `iss` and `login_hint`, so that the application starts an ordinary
    /// authorization request (`LANYARD_APPLICATION_LOGIN_URL`; unset: such pages say to open the
    /// application).
    pub application_login_url: Option<String>,
    /// `smtp://user:pass@host:587?tls=required`, `smtps://...` or `smtp://host:25`; unset means the
    /// embedded default: `.eml` files in `mail_dir` (`LANYARD_SMTP_URL`).
    pub smtp_url: Option<SecretString>,
    /// How invitation emails leave (`LANYARD_MAIL_TRANSPORT`): unset means SMTP when `smtp_url`
    /// is set, else files in the embedded default; with a database URL, files must be asked for.
    pub mail_transport: Option<MailTransportKind>,
    /// The `From` of invitation emails (`LANYARD_MAIL_FROM`).
    pub mail_from: String,
    /// Where the embedded default writes `.eml` files; default `<data_dir>/mail` (`LANYARD_MAIL_DIR`).
    pub mail_dir: Option<PathBuf>,
    /// DNS servers that check domain challenges and resolve identity-provider hosts, as
    /// `ip:port` (`LANYARD_DNS_SERVERS`, comma-separated); empty means the system's resolver
    /// configuration (`/etc/resolv.conf`).
    pub dns_servers: Vec<SocketAddr>,
    /// How long one DNS lookup may take, in milliseconds (`LANYARD_DNS_TIMEOUT_MS`).
    pub dns_timeout_ms: u64,
    /// `ExchangeToken` and `RefreshSession` calls per peer address and minute; 0 turns the limit
    /// off (`LANYARD_RATE_LIMIT_EXCHANGE_PER_MINUTE`).
    pub rate_limit_exchange_per_minute: u32,
    /// Of those, how many may come at once (`LANYARD_RATE_LIMIT_EXCHANGE_BURST`).
    pub rate_limit_exchange_burst: u32,
    /// `PreviewInvitation` calls, and `ExchangeToken` calls with an invitation grant, per peer
    /// address and minute; 0 turns the limit off (`LANYARD_RATE_LIMIT_INVITATION_PER_MINUTE`).
    pub rate_limit_invitation_per_minute: u32,
    /// Of those, how many may come at once (`LANYARD_RATE_LIMIT_INVITATION_BURST`).
    pub rate_limit_invitation_burst: u32,
    /// Requests to the hosted sign-in (the OpenID Provider's `/oauth2/*`, `/sign-in`,
    /// `/invite/*`) per peer address and minute; 0 turns the limit off
    /// (`LANYARD_RATE_LIMIT_SIGN_IN_PER_MINUTE`).
    pub rate_limit_sign_in_per_minute: u32,
    /// Of those, how many may come at once (`LANYARD_RATE_LIMIT_SIGN_IN_BURST`).
    pub rate_limit_sign_in_burst: u32,
    /// Count rate limits against the last address of `x-forwarded-for` instead of the TCP peer:
    /// only behind a proxy that sets it (`LANYARD_TRUST_FORWARDED_FOR`).
    pub trust_forwarded_for: bool,
    /// The oldest upstream ID token accepted, by its `iat`, in seconds (`LANYARD_ID_TOKEN_MAX_AGE_SECONDS`).
    pub id_token_max_age_seconds: u64,
    /// Open gRPC connections at most; connections beyond are closed as they are accepted
    /// (`LANYARD_GRPC_MAX_CONNECTIONS`).
    pub grpc_max_connections: usize,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`: requests in flight on one HTTP/2 connection
    /// (`LANYARD_GRPC_MAX_CONCURRENT_STREAMS`).
    pub grpc_max_concurrent_streams: u32,
    /// Requests in flight in the whole process; beyond, requests are refused at once with
    /// `RESOURCE_EXHAUSTED` (`LANYARD_GRPC_MAX_CONCURRENT_REQUESTS`).
    pub grpc_max_concurrent_requests: usize,
    /// The largest request message, in bytes, of the services whose requests are small by nature:
    /// invitation, token, authorization, health and reflection (`LANYARD_GRPC_MAX_REQUEST_BYTES`).
    pub grpc_max_request_bytes: usize,
    /// The largest tenancy request message, in bytes: an organization carries up to 64 metadata
    /// entries of 1 KiB (`LANYARD_GRPC_MAX_TENANCY_REQUEST_BYTES`).
    pub grpc_max_tenancy_request_bytes: usize,
    /// The largest Envoy `ext_authz` `Check` request, in bytes: it carries the checked request's
    /// headers (`LANYARD_GRPC_MAX_EXT_AUTHZ_REQUEST_BYTES`).
    pub grpc_max_ext_authz_request_bytes: usize,
    /// How long a new gRPC connection has to send the HTTP/2 connection preface, in milliseconds
    /// (`LANYARD_GRPC_HANDSHAKE_TIMEOUT_MS`).
    pub grpc_handshake_timeout_ms: u64,
    /// How long a gRPC connection may send nothing before it is pinged, in seconds
    /// (`LANYARD_GRPC_KEEPALIVE_INTERVAL_SECONDS`).
    pub grpc_keepalive_interval_seconds: u64,
    /// How long a ping may go unanswered before the connection is closed, in seconds
    /// (`LANYARD_GRPC_KEEPALIVE_TIMEOUT_SECONDS`).
    pub grpc_keepalive_timeout_seconds: u64,
    /// How long a gRPC connection may stay open with no request in flight, in seconds
    /// (`LANYARD_GRPC_IDLE_TIMEOUT_SECONDS`).
    pub grpc_idle_timeout_seconds: u64,
    /// How long a gRPC connection may live, however busy, in seconds; then the server sends
    /// GOAWAY and the client reconnects, through the Service, possibly to a newer pod: without it
    /// pods that an autoscaler adds get no traffic from long-lived clients. 0: forever
    /// (`LANYARD_GRPC_MAX_CONNECTION_AGE_SECONDS`).
    pub grpc_max_connection_age_seconds: u64,
    /// How long calls in flight on a connection past its age may take to finish before it is
    /// closed, in seconds (`LANYARD_GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS`).
    pub grpc_max_connection_age_grace_seconds: u64,
    /// Open connections to the HTTP address at most (`LANYARD_HTTP_MAX_CONNECTIONS`).
    pub http_max_connections: usize,
    /// How long the HTTP listener waits for a request's headers, in milliseconds; an idle
    /// keep-alive connection is closed after as long (`LANYARD_HTTP_HEADER_READ_TIMEOUT_MS`).
    pub http_header_read_timeout_ms: u64,
    /// PEM certificate chain both listeners serve TLS with (`LANYARD_TLS_CERT_FILE`); with
    /// `tls_key_file`, or neither (plaintext). Also presented as this process's client
    /// certificate on `https://` channels to the other services.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file` (`LANYARD_TLS_KEY_FILE`).
    pub tls_key_file: Option<PathBuf>,
    /// PEM roots a gRPC client's certificate must chain to: when set, the gRPC listener requires
    /// one (the HTTP listener does not) (`LANYARD_TLS_CLIENT_CA_FILE`).
    pub tls_client_ca_file: Option<PathBuf>,
    /// PEM roots trusted, besides the system's, on `https://` channels to the other services and
    /// the token service's JWKS; for `rediss://` they replace the system's (`LANYARD_TLS_CA_FILE`).
    pub tls_ca_file: Option<PathBuf>,
    /// How often the certificate and key files are checked for a new pair, in milliseconds
    /// (`LANYARD_TLS_RELOAD_INTERVAL_MS`); SIGHUP checks at once.
    pub tls_reload_interval_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("data"),
            database_url: None,
            redis_url: None,
            redis_key_prefix: "lanyard".to_owned(),
            operator_keys: Vec::new(),
            service_keys: Vec::new(),
            encryption_key: None,
            previous_encryption_keys: Vec::new(),
            log_format: LogFormat::Text,
            allow_http_issuers: false,
            sso_issuer_allowlist: Vec::new(),
            max_sso_connections_per_org: lanyard_tenancy::service::DEFAULT_MAX_SSO_CONNECTIONS,
            database_max_connections: 10,
            startup_retry_seconds: 60,
            shutdown_grace_seconds: 20,
            tenancy_url: None,
            invitation_url: None,
            token_url: None,
            token_jwks_url: None,
            metrics_addr: None,
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 50052))),
            token_issuer: "http://127.0.0.1:50052".to_owned(),
            token_audience: lanyard_token::ACCESS_TOKEN_AUDIENCE.to_owned(),
            access_token_ttl_seconds: 5 * 60,
            refresh_token_ttl_seconds: 14 * 24 * 3600,
            session_ttl_seconds: 30 * 24 * 3600,
            signing_algorithm: "ES256".to_owned(),
            config_file: None,
            invitation_link_template: None,
            application_login_url: None,
            smtp_url: None,
            mail_transport: None,
            mail_from: "Lanyard <no-reply@lanyard.localhost>".to_owned(),
            mail_dir: None,
            dns_servers: Vec::new(),
            dns_timeout_ms: 5000,
            rate_limit_exchange_per_minute: 60,
            rate_limit_exchange_burst: 60,
            rate_limit_invitation_per_minute: 20,
            rate_limit_invitation_burst: 20,
            rate_limit_sign_in_per_minute: 300,
            rate_limit_sign_in_burst: 300,
            trust_forwarded_for: false,
            id_token_max_age_seconds: 600,
            grpc_max_connections: 512,
            grpc_max_concurrent_streams: 100,
            grpc_max_concurrent_requests: 1000,
            grpc_max_request_bytes: 64 * 1024,
            grpc_max_tenancy_request_bytes: 128 * 1024,
            grpc_max_ext_authz_request_bytes: 1024 * 1024,
            grpc_handshake_timeout_ms: 5000,
            grpc_keepalive_interval_seconds: 30,
            grpc_keepalive_timeout_seconds: 10,
            grpc_idle_timeout_seconds: 600,
            grpc_max_connection_age_seconds: 0,
            grpc_max_connection_age_grace_seconds: 30,
            http_max_connections: 128,
            http_header_read_timeout_ms: 5000,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            tls_ca_file: None,
            tls_reload_interval_ms: 5000,
        }
    }
}

/// `LANYARD_*` variables that belong to the command-line client and the build and test scripts,
/// not to the server's settings.
const NOT_SETTINGS: [&str; 7] = [
    "LANYARD_ENDPOINT",
    "LANYARD_API_KEY",
    "LANYARD_CLIENT_CERT_FILE",
    "LANYARD_CLIENT_KEY_FILE",
    "LANYARD_TOOLS_DIR",
    "LANYARD_DEPLOY_CACHE",
    "LANYARD_RENDER_DIR",
];

/// The secret settings: each may instead be read from the file that `LANYARD_<NAME>_FILE` names
/// (as Kubernetes mounts a Secret), never both.
const SECRET_KEYS: [&str; 7] = [
    "DATABASE_URL",
    "REDIS_URL",
    "OPERATOR_KEYS",
    "SERVICE_KEYS",
    "ENCRYPTION_KEY",
    "PREVIOUS_ENCRYPTION_KEYS",
    "SMTP_URL",
];

/// The environment variables read as comma-separated lists.
const LIST_KEYS: [&str; 5] =
    ["operator_keys", "service_keys", "previous_encryption_keys", "dns_servers", "sso_issuer_allowlist"];

impl Settings {
    /// Loads defaults, then the file (explicit, or `LANYARD_CONFIG_FILE`), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, config::ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, config::ConfigError> {
        let mut env: std::collections::HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| {
                k.starts_with("LANYARD_") && !k.starts_with("LANYARD_TEST_") && !NOT_SETTINGS.contains(&k.as_str())
            })
            .collect();
        secrets_from_files(&mut env)?;
        let file = file.map(Path::to_path_buf).or_else(|| env.get("LANYARD_CONFIG_FILE").map(PathBuf::from));
        let mut builder = config::Config::builder();
        if let Some(path) = &file {
            builder = builder.add_source(config::File::from(path.as_path()).required(true));
        }
        let mut environment =
            config::Environment::with_prefix("LANYARD").try_parsing(true).list_separator(",").source(Some(env));
        for key in LIST_KEYS {
            environment = environment.with_list_parse_key(key);
        }
        let mut settings: Settings = builder.add_source(environment).build()?.try_deserialize()?;
        settings.config_file = file;
        Ok(settings)
    }

    /// The registration link of invitation emails: the configured template, else the token
    /// service's landing page.
    pub fn invitation_link_template(&self) -> String {
        self.invitation_link_template
            .clone()
            .unwrap_or_else(|| format!("{}/invite/{{token}}", self.token_issuer.trim_end_matches('/')))
    }

    /// How invitation emails leave: explicit, or SMTP when configured, or files in the embedded
    /// default. With a database URL and no SMTP server, files must be asked for: emails written
    /// into a pod's scratch directory would otherwise be lost without anyone noticing.
    pub fn mail_transport(&self) -> Result<MailTransportKind, String> {
        match (self.mail_transport, &self.smtp_url) {
            (Some(MailTransportKind::Smtp), None) => {
                Err("LANYARD_MAIL_TRANSPORT=smtp needs LANYARD_SMTP_URL (or LANYARD_SMTP_URL_FILE)".into())
            }
            (Some(MailTransportKind::Files), Some(_)) => {
                Err("LANYARD_MAIL_TRANSPORT=files and LANYARD_SMTP_URL contradict each other: unset one".into())
            }
            (Some(kind), _) => Ok(kind),
            (None, Some(_)) => Ok(MailTransportKind::Smtp),
            (None, None) if self.is_embedded() => Ok(MailTransportKind::Files),
            (None, None) => Err("with LANYARD_DATABASE_URL, invitation emails need LANYARD_SMTP_URL (or \
                                 LANYARD_SMTP_URL_FILE); set LANYARD_MAIL_TRANSPORT=files to write them as \
                                 .eml files instead"
                .into()),
        }
    }

    /// The server's TLS files: both the certificate and the key, or neither (plaintext); a client
    /// CA without them is refused too, as it would silently require nothing.
    pub fn server_tls(&self) -> Result<Option<crate::tls::TlsFiles>, String> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Ok(Some(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca_file.clone(),
            })),
            (None, None) if self.tls_client_ca_file.is_some() => Err("LANYARD_TLS_CLIENT_CA_FILE needs \
                                                                      LANYARD_TLS_CERT_FILE and LANYARD_TLS_KEY_FILE: \
                                                                      client certificates are checked only over TLS"
                .into()),
            (None, None) => Ok(None),
            (Some(_), None) => Err("LANYARD_TLS_CERT_FILE is set without LANYARD_TLS_KEY_FILE: set both to serve \
                                    TLS, or neither"
                .into()),
            (None, Some(_)) => Err("LANYARD_TLS_KEY_FILE is set without LANYARD_TLS_CERT_FILE: set both to serve \
                                    TLS, or neither"
                .into()),
        }
    }

    /// What this process trusts and presents on `https://` channels to the other services.
    pub fn client_tls(&self) -> Result<lanyard_core::tls::ClientTls, lanyard_core::tls::TlsFileError> {
        lanyard_core::tls::ClientTls::from_files(
            self.tls_ca_file.as_deref(),
            self.tls_cert_file.as_deref(),
            self.tls_key_file.as_deref(),
        )
    }

    /// Whether this runs on the embedded default (SQLite, no server installed).
    pub fn is_embedded(&self) -> bool {
        self.database_url.is_none()
    }

    /// The database URL of one service: the configured Postgres URL, or its own SQLite file.
    pub fn database_url_for(&self, service: &str) -> String {
        match &self.database_url {
            Some(url) => url.expose_secret().to_owned(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join(format!("{service}.db")).display()),
        }
    }
}

/// Replaces each `LANYARD_<SECRET>_FILE` by `LANYARD_<SECRET>` holding the file's content (one
/// trailing line break removed, as `echo` and editors leave one).
fn secrets_from_files(env: &mut std::collections::HashMap<String, String>) -> Result<(), config::ConfigError> {
    for name in SECRET_KEYS {
        let var = format!("LANYARD_{name}");
        let Some(path) = env.remove(&format!("{var}_FILE")) else { continue };
        if env.contains_key(&var) {
            return Err(config::ConfigError::Message(format!("{var} and {var}_FILE are both set: set one")));
        }
        let content = std::fs::read_to_string(&path)
            .map_err(|e| config::ConfigError::Message(format!("{var}_FILE: reading {path}: {e}")))?;
        let content = content.strip_suffix('\n').map(|c| c.strip_suffix('\r').unwrap_or(c)).unwrap_or(&content);
        if content.is_empty() {
            return Err(config::ConfigError::Message(format!("{var}_FILE: {path} is empty")));
        }
        env.insert(var, content.to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_then_environment() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.listen_addr.port(), 50051);
        assert!(s.is_embedded());
        assert!(s.database_url_for("tenancy").ends_with("tenancy.db?mode=rwc"));
        let s = Settings::load_from(
            None,
            env(&[
                ("LANYARD_LISTEN_ADDR", "0.0.0.0:6000"),
                ("LANYARD_OPERATOR_KEYS", "aaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbb"),
                ("LANYARD_DATABASE_URL", "postgres://u:pw@db/lanyard"),
                ("LANYARD_LOG_FORMAT", "json"),
                ("OTHER_VAR", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(s.listen_addr.port(), 6000);
        assert_eq!(s.operator_keys.len(), 2);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.database_url_for("tenancy"), "postgres://u:pw@db/lanyard");
    }

    #[test]
    fn invitation_links_land_on_the_token_service_by_default() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.invitation_link_template(), "http://127.0.0.1:50052/invite/{token}");
        assert_eq!(s.application_login_url, None);
        let s = Settings::load_from(None, env(&[("LANYARD_TOKEN_ISSUER", "https://auth.example.com/")])).unwrap();
        assert_eq!(s.invitation_link_template(), "https://auth.example.com/invite/{token}");
        let s = Settings::load_from(
            None,
            env(&[
                ("LANYARD_INVITATION_LINK_TEMPLATE", "https://app.example.com/join?t={token}"),
                ("LANYARD_APPLICATION_LOGIN_URL", "https://app.example.com/login"),
            ]),
        )
        .unwrap();
        assert_eq!(s.invitation_link_template(), "https://app.example.com/join?t={token}");
        assert_eq!(s.application_login_url.as_deref(), Some("https://app.example.com/login"));
    }

    #[test]
    fn server_limits_are_on_by_default_and_configurable() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.grpc_max_concurrent_streams, 100);
        assert_eq!(s.grpc_max_request_bytes, 64 * 1024);
        assert!(s.grpc_max_connections > 0 && s.http_max_connections > 0);
        assert!(s.grpc_handshake_timeout_ms > 0 && s.http_header_read_timeout_ms > 0);
        let s = Settings::load_from(
            None,
            env(&[("LANYARD_GRPC_MAX_CONNECTIONS", "20"), ("LANYARD_HTTP_HEADER_READ_TIMEOUT_MS", "1000")]),
        )
        .unwrap();
        assert_eq!(s.grpc_max_connections, 20);
        assert_eq!(s.http_header_read_timeout_ms, 1000);
    }

    #[test]
    fn secrets_never_print() {
        let s = Settings::load_from(
            None,
            env(&[
                ("LANYARD_DATABASE_URL", "postgres://u:hunter2@db/x"),
                ("LANYARD_OPERATOR_KEYS", "topsecretkey12345"),
            ]),
        )
        .unwrap();
        let printed = format!("{s:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("topsecretkey12345"), "{printed}");
    }

    #[test]
    fn outbound_settings() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert!(s.sso_issuer_allowlist.is_empty());
        assert_eq!(s.max_sso_connections_per_org, 10);
        let s = Settings::load_from(
            None,
            env(&[
                ("LANYARD_SSO_ISSUER_ALLOWLIST", "okta.com,https://accounts.google.com"),
                ("LANYARD_MAX_SSO_CONNECTIONS_PER_ORG", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(s.sso_issuer_allowlist, ["okta.com", "https://accounts.google.com"]);
        assert_eq!(s.max_sso_connections_per_org, 3);
    }

    #[test]
    fn rate_limits_and_token_age_from_the_environment() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!((s.rate_limit_exchange_per_minute, s.rate_limit_invitation_burst), (60, 20));
        assert_eq!((s.rate_limit_sign_in_per_minute, s.rate_limit_sign_in_burst), (300, 300));
        assert!(!s.trust_forwarded_for);
        assert_eq!(s.id_token_max_age_seconds, 600);
        let s = Settings::load_from(
            None,
            env(&[
                ("LANYARD_RATE_LIMIT_EXCHANGE_PER_MINUTE", "0"),
                ("LANYARD_RATE_LIMIT_SIGN_IN_PER_MINUTE", "30"),
                ("LANYARD_RATE_LIMIT_SIGN_IN_BURST", "5"),
                ("LANYARD_TRUST_FORWARDED_FOR", "true"),
                ("LANYARD_ID_TOKEN_MAX_AGE_SECONDS", "120"),
            ]),
        )
        .unwrap();
        assert_eq!(s.rate_limit_exchange_per_minute, 0);
        assert_eq!((s.rate_limit_sign_in_per_minute, s.rate_limit_sign_in_burst), (30, 5));
        assert!(s.trust_forwarded_for);
        assert_eq!(s.id_token_max_age_seconds, 120);
    }

    #[test]
    fn token_settings_from_the_environment() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.token_audience, "lanyard");
        assert_eq!((s.access_token_ttl_seconds, s.signing_algorithm.as_str()), (300, "ES256"));
        let s = Settings::load_from(
            None,
            env(&[
                ("LANYARD_TOKEN_AUDIENCE", "acme-products"),
                ("LANYARD_ACCESS_TOKEN_TTL_SECONDS", "120"),
                ("LANYARD_REFRESH_TOKEN_TTL_SECONDS", "3600"),
                ("LANYARD_SESSION_TTL_SECONDS", "86400"),
                ("LANYARD_SIGNING_ALGORITHM", "EdDSA"),
            ]),
        )
        .unwrap();
        assert_eq!(s.token_audience, "acme-products");
        assert_eq!(
            (s.access_token_ttl_seconds, s.refresh_token_ttl_seconds, s.session_ttl_seconds),
            (120, 3600, 86400)
        );
        assert_eq!(s.signing_algorithm, "EdDSA");
    }

    #[test]
    fn unknown_settings_are_refused() {
        assert!(Settings::load_from(None, env(&[("LANYARD_LISTEN_ADRESS", "x")])).is_err());
    }

    #[test]
    fn client_and_test_variables_are_not_settings() {
        let s = Settings::load_from(
            None,
            env(&[
                ("LANYARD_API_KEY", "k"),
                ("LANYARD_ENDPOINT", "http://x"),
                ("LANYARD_TEST_POSTGRES_URL", "postgres://x/y"),
            ]),
        );
        assert!(s.is_ok(), "{s:?}");
    }

    #[test]
    fn reads_a_file_under_the_environment() {
        let dir = std::env::temp_dir().join(format!("lanyard-settings-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lanyard.toml");
        std::fs::write(&path, "listen_addr = \"127.0.0.1:7000\"\ndata_dir = \"/var/lib/lanyard\"\n").unwrap();
        let s = Settings::load_from(Some(&path), env(&[("LANYARD_LISTEN_ADDR", "127.0.0.1:7001")])).unwrap();
        assert_eq!(s.listen_addr.port(), 7001);
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/lanyard"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn secrets_are_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("database-url");
        std::fs::write(&url, "postgres://u:hunter2@db/x\n").unwrap();
        let keys = dir.path().join("operator-keys");
        std::fs::write(&keys, "aaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbb").unwrap();
        let s = Settings::load_from(
            None,
            env(&[
                ("LANYARD_DATABASE_URL_FILE", url.to_str().unwrap()),
                ("LANYARD_OPERATOR_KEYS_FILE", keys.to_str().unwrap()),
            ]),
        )
        .unwrap();
        assert_eq!(s.database_url_for("tenancy"), "postgres://u:hunter2@db/x");
        assert_eq!(s.operator_keys.len(), 2);
        assert_eq!(s.operator_keys[1].expose_secret(), "bbbbbbbbbbbbbbbb");
        let previous = dir.path().join("previous-encryption-keys");
        std::fs::write(&previous, "a2V5LW9uZQ==,a2V5LXR3bw==\n").unwrap();
        let s =
            Settings::load_from(None, env(&[("LANYARD_PREVIOUS_ENCRYPTION_KEYS_FILE", previous.to_str().unwrap())]))
                .unwrap();
        let keys: Vec<&str> = s.previous_encryption_keys.iter().map(|k| k.expose_secret()).collect();
        assert_eq!(keys, ["a2V5LW9uZQ==", "a2V5LXR3bw=="]);
        assert!(!format!("{s:?}").contains("a2V5LW9uZQ"), "previous keys never print");
    }

    #[test]
    fn a_secret_set_twice_or_from_a_missing_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("encryption-key");
        std::fs::write(&key, "c2VjcmV0").unwrap();
        let both = Settings::load_from(
            None,
            env(&[("LANYARD_ENCRYPTION_KEY", "c2VjcmV0"), ("LANYARD_ENCRYPTION_KEY_FILE", key.to_str().unwrap())]),
        )
        .unwrap_err()
        .to_string();
        assert!(both.contains("LANYARD_ENCRYPTION_KEY and LANYARD_ENCRYPTION_KEY_FILE"), "{both}");
        let missing = dir.path().join("nothing-here");
        let err = Settings::load_from(None, env(&[("LANYARD_SMTP_URL_FILE", missing.to_str().unwrap())]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("LANYARD_SMTP_URL_FILE"), "{err}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(Settings::load_from(None, env(&[("LANYARD_REDIS_URL_FILE", empty.to_str().unwrap())])).is_err());
        // Only secret settings have a file form.
        assert!(Settings::load_from(None, env(&[("LANYARD_LISTEN_ADDR_FILE", key.to_str().unwrap())])).is_err());
    }

    #[test]
    fn production_mail_needs_smtp_or_an_explicit_files_transport() {
        let embedded = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(embedded.mail_transport(), Ok(MailTransportKind::Files));
        let db = ("LANYARD_DATABASE_URL", "postgres://u@db/x");
        let err = Settings::load_from(None, env(&[db])).unwrap().mail_transport().unwrap_err();
        assert!(err.contains("LANYARD_MAIL_TRANSPORT=files"), "{err}");
        let files = Settings::load_from(None, env(&[db, ("LANYARD_MAIL_TRANSPORT", "files")])).unwrap();
        assert_eq!(files.mail_transport(), Ok(MailTransportKind::Files));
        let smtp = Settings::load_from(None, env(&[db, ("LANYARD_SMTP_URL", "smtp://mail:25")])).unwrap();
        assert_eq!(smtp.mail_transport(), Ok(MailTransportKind::Smtp));
        let contradiction = Settings::load_from(
            None,
            env(&[("LANYARD_SMTP_URL", "smtp://mail:25"), ("LANYARD_MAIL_TRANSPORT", "files")]),
        )
        .unwrap();
        assert!(contradiction.mail_transport().is_err());
        let smtp_without_url = Settings::load_from(None, env(&[("LANYARD_MAIL_TRANSPORT", "smtp")])).unwrap();
        assert!(smtp_without_url.mail_transport().is_err());
        assert!(Settings::load_from(None, env(&[("LANYARD_MAIL_TRANSPORT", "pigeon")])).is_err());
    }

    #[test]
    fn tls_needs_both_files_and_a_client_ca_needs_tls() {
        let plain = Settings::load_from(None, env(&[])).unwrap();
        assert!(plain.server_tls().unwrap().is_none());
        let cert_only = Settings::load_from(None, env(&[("LANYARD_TLS_CERT_FILE", "/tls/tls.crt")])).unwrap();
        let e = cert_only.server_tls().unwrap_err();
        assert!(e.contains("without LANYARD_TLS_KEY_FILE"), "{e}");
        let key_only = Settings::load_from(None, env(&[("LANYARD_TLS_KEY_FILE", "/tls/tls.key")])).unwrap();
        assert!(key_only.server_tls().unwrap_err().contains("without LANYARD_TLS_CERT_FILE"));
        let ca_only = Settings::load_from(None, env(&[("LANYARD_TLS_CLIENT_CA_FILE", "/tls/ca.crt")])).unwrap();
        assert!(ca_only.server_tls().unwrap_err().contains("LANYARD_TLS_CLIENT_CA_FILE"));
        let both = Settings::load_from(
            None,
            env(&[
                ("LANYARD_TLS_CERT_FILE", "/tls/tls.crt"),
                ("LANYARD_TLS_KEY_FILE", "/tls/tls.key"),
                ("LANYARD_TLS_CLIENT_CA_FILE", "/tls/ca.crt"),
                ("LANYARD_TLS_RELOAD_INTERVAL_MS", "250"),
            ]),
        )
        .unwrap();
        let files = both.server_tls().unwrap().unwrap();
        assert_eq!(files.cert, PathBuf::from("/tls/tls.crt"));
        assert_eq!(files.client_ca, Some(PathBuf::from("/tls/ca.crt")));
        assert_eq!(both.tls_reload_interval_ms, 250);
        // The CLI's client certificate variables are not server settings.
        assert!(Settings::load_from(None, env(&[("LANYARD_CLIENT_CERT_FILE", "/c.pem")])).is_ok());
    }

    #[test]
    fn settings_nothing_reads_are_refused() {
        // No setting has this name: a typo or a setting from another version is a mistake.
        assert!(Settings::load_from(None, env(&[("LANYARD_TOKEN_ENDPOINT", "http://lanyard-token:50051")])).is_err());
        let s = Settings::load_from(None, env(&[("LANYARD_STARTUP_RETRY_SECONDS", "5")])).unwrap();
        assert_eq!(s.startup_retry_seconds, 5);
    }
}
