//! The services' configurations from settings: what each `LANYARD_*` setting becomes in the
//! token and invitation services, with the bounds a setting must keep (checked at start-up, so a
//! wrong value stops the process with its name instead of misbehaving later).

use std::time::Duration;

use anyhow::Context;
use lanyard_authz::Facts;
use lanyard_core::limit::{PeerRule, RateLimit};
use lanyard_invitation::{InvitationConfig, MailTransport, MailerConfig};

use crate::app::{database_config, secret_box, ServiceName};
use crate::settings::{MailTransportKind, Settings};

/// The token service's configuration from settings.
pub fn token_config(settings: &Settings, facts: &Facts) -> anyhow::Result<lanyard_token::TokenConfig> {
    let database = database_config(settings, ServiceName::Token);
    let mut config =
        lanyard_token::TokenConfig::new(database, secret_box(settings)?, token_issuer(settings)?, facts.clone());
    config.upstream.allow_http_loopback = settings.allow_http_issuers;
    config.upstream.issuer_allowlist = issuer_allowlist(settings)?;
    config.upstream.dns_servers = settings.dns_servers.clone();
    config.upstream.dns_timeout = Duration::from_millis(settings.dns_timeout_ms);
    config.upstream.max_token_age = Duration::from_secs(settings.id_token_max_age_seconds);
    config.rate_limits = lanyard_token::RateLimits {
        exchange: RateLimit::new(settings.rate_limit_exchange_burst, settings.rate_limit_exchange_per_minute),
        invitation_grant: invitation_rate_limit(settings),
        sign_in: RateLimit::new(settings.rate_limit_sign_in_burst, settings.rate_limit_sign_in_per_minute),
    };
    config.peer_rule = PeerRule { trust_forwarded_for: settings.trust_forwarded_for };
    config.application_login_url = settings.application_login_url.clone();
    config.audience = token_audience(settings)?;
    config.lifetimes = token_lifetimes(settings)?;
    config.signing_algorithm =
        lanyard_token::SigningAlgorithm::parse(&settings.signing_algorithm).with_context(|| {
            format!("LANYARD_SIGNING_ALGORITHM={:?}: use ES256, EdDSA or RS256", settings.signing_algorithm)
        })?;
    Ok(config)
}

/// `iss` of access tokens, the base URL of the OpenID configuration: an absolute URL with no query
/// or fragment, and with a production database `https://` (OpenID Discovery requires it, and
/// tokens keep their issuer for good) unless it names this machine (development, tests).
fn token_issuer(settings: &Settings) -> anyhow::Result<String> {
    let issuer = &settings.token_issuer;
    let uri: http::Uri = issuer.parse().with_context(|| format!("LANYARD_TOKEN_ISSUER={issuer:?}: not a URL"))?;
    let host = uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let well_formed = matches!(uri.scheme_str(), Some("https" | "http"))
        && !host.is_empty()
        && uri.query().is_none()
        && !issuer.contains('#');
    if !well_formed {
        anyhow::bail!("LANYARD_TOKEN_ISSUER={issuer:?}: an https:// URL with no query or fragment");
    }
    if uri.scheme_str() == Some("http") && !loopback && !settings.is_embedded() {
        anyhow::bail!(
            "LANYARD_TOKEN_ISSUER={issuer:?}: with a database URL the issuer is the public https:// URL of the \
             token service (tokens keep it, verifiers fetch its JWKS); http:// is for loopback only"
        );
    }
    Ok(issuer.clone())
}

/// `aud` of access tokens: printable ASCII, no spaces, at most 128 bytes.
fn token_audience(settings: &Settings) -> anyhow::Result<String> {
    let audience = &settings.token_audience;
    if audience.is_empty() || audience.len() > 128 || !audience.bytes().all(|b| b.is_ascii_graphic()) {
        anyhow::bail!("LANYARD_TOKEN_AUDIENCE={audience:?}: 1 to 128 printable ASCII characters, no spaces");
    }
    Ok(audience.clone())
}

/// The token lifetimes, within what keeps revocation and rotation meaningful: an access token
/// lives 30 s to 1 h, a refresh token at most as long as its session, a session at most a year.
fn token_lifetimes(settings: &Settings) -> anyhow::Result<lanyard_token::Lifetimes> {
    let (access, refresh, session) =
        (settings.access_token_ttl_seconds, settings.refresh_token_ttl_seconds, settings.session_ttl_seconds);
    if !(30..=3600).contains(&access) {
        anyhow::bail!("LANYARD_ACCESS_TOKEN_TTL_SECONDS={access}: from 30 to 3600");
    }
    if session > 365 * 24 * 3600 || session < access {
        anyhow::bail!("LANYARD_SESSION_TTL_SECONDS={session}: from the access token's lifetime to 365 days");
    }
    if refresh < access || refresh > session {
        anyhow::bail!(
            "LANYARD_REFRESH_TOKEN_TTL_SECONDS={refresh}: from the access token's lifetime ({access}) to the \
             session's ({session})"
        );
    }
    Ok(lanyard_token::Lifetimes {
        access: Duration::from_secs(access),
        refresh: Duration::from_secs(refresh),
        session: Duration::from_secs(session),
    })
}

/// The operator's SSO issuer allowlist (`LANYARD_SSO_ISSUER_ALLOWLIST`).
pub(crate) fn issuer_allowlist(settings: &Settings) -> anyhow::Result<lanyard_core::outbound::IssuerAllowlist> {
    lanyard_core::outbound::IssuerAllowlist::parse(&settings.sso_issuer_allowlist)
        .map_err(|e| anyhow::anyhow!(e))
        .context("LANYARD_SSO_ISSUER_ALLOWLIST")
}

/// The per-peer limit of calls that take an invitation token.
fn invitation_rate_limit(settings: &Settings) -> RateLimit {
    RateLimit::new(settings.rate_limit_invitation_burst, settings.rate_limit_invitation_per_minute)
}

/// The invitation service's configuration from settings.
pub fn invitation_config(settings: &Settings) -> anyhow::Result<InvitationConfig> {
    let database = database_config(settings, ServiceName::Invitation);
    let transport = match (settings.mail_transport().map_err(anyhow::Error::msg)?, &settings.smtp_url) {
        (MailTransportKind::Smtp, Some(url)) => MailTransport::Smtp { url: url.clone() },
        (MailTransportKind::Smtp, None) => anyhow::bail!("LANYARD_MAIL_TRANSPORT=smtp needs LANYARD_SMTP_URL"),
        (MailTransportKind::Files, _) => {
            MailTransport::Files { dir: settings.mail_dir.clone().unwrap_or_else(|| settings.data_dir.join("mail")) }
        }
    };
    let mut config = InvitationConfig::new(
        database,
        settings.invitation_link_template(),
        secret_box(settings)?,
        MailerConfig::new(transport, settings.mail_from.clone()),
    );
    config.preview_rate_limit = invitation_rate_limit(settings);
    config.peer_rule = PeerRule { trust_forwarded_for: settings.trust_forwarded_for };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(env: &[(&str, &str)]) -> Settings {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load_from(None, env).expect("settings")
    }

    #[test]
    fn token_lifetimes_keep_their_bounds() {
        let ok = token_lifetimes(&settings(&[])).unwrap();
        assert_eq!(ok.access, Duration::from_secs(300));
        for (key, value) in [
            ("LANYARD_ACCESS_TOKEN_TTL_SECONDS", "5"),
            ("LANYARD_ACCESS_TOKEN_TTL_SECONDS", "86400"),
            ("LANYARD_SESSION_TTL_SECONDS", "40000000"),
            ("LANYARD_REFRESH_TOKEN_TTL_SECONDS", "10"),
            // A refresh token outliving its session would be refused at its first use anyway.
            ("LANYARD_REFRESH_TOKEN_TTL_SECONDS", "99999999"),
        ] {
            let err = token_lifetimes(&settings(&[(key, value)])).unwrap_err().to_string();
            assert!(err.contains(key), "{key}={value}: {err}");
        }
    }

    #[test]
    fn a_production_issuer_is_https() {
        let production = [("LANYARD_DATABASE_URL", "postgres://db.internal/lanyard")];
        for ok in [
            "https://auth.example.com",
            "https://auth.example.com/tenant",
            "http://127.0.0.1:8080",
            "http://localhost:8080",
        ] {
            let mut env = production.to_vec();
            env.push(("LANYARD_TOKEN_ISSUER", ok));
            assert_eq!(token_issuer(&settings(&env)).unwrap(), ok);
        }
        for bad in [
            "http://lanyard-token:8080",
            "http://auth.example.com",
            "ftp://x",
            "https://a.example/?x=1",
            "https://a.example/#f",
            "auth",
        ] {
            let mut env = production.to_vec();
            env.push(("LANYARD_TOKEN_ISSUER", bad));
            let err = token_issuer(&settings(&env)).unwrap_err().to_string();
            assert!(err.contains("LANYARD_TOKEN_ISSUER"), "{bad}: {err}");
        }
        // The embedded default (development) may name any host over http.
        assert!(token_issuer(&settings(&[("LANYARD_TOKEN_ISSUER", "http://lanyard.local:8080")])).is_ok());
    }

    #[test]
    fn the_audience_is_one_printable_word() {
        assert_eq!(token_audience(&settings(&[])).unwrap(), "lanyard");
        for bad in ["", "two words", "tab\there", "é"] {
            assert!(token_audience(&settings(&[("LANYARD_TOKEN_AUDIENCE", bad)])).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_token_service_gets_what_the_settings_say() {
        let s = settings(&[
            ("LANYARD_TOKEN_AUDIENCE", "acme"),
            ("LANYARD_ACCESS_TOKEN_TTL_SECONDS", "60"),
            ("LANYARD_SIGNING_ALGORITHM", "EdDSA"),
            ("LANYARD_RATE_LIMIT_SIGN_IN_PER_MINUTE", "30"),
            ("LANYARD_RATE_LIMIT_SIGN_IN_BURST", "5"),
            ("LANYARD_ENCRYPTION_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
            ("LANYARD_DATA_DIR", std::env::temp_dir().to_str().unwrap()),
        ]);
        let facts = Facts::new(lanyard_core::cache::Cache::local("test"));
        let config = token_config(&s, &facts).unwrap();
        assert_eq!(config.audience, "acme");
        assert_eq!(config.lifetimes.access, Duration::from_secs(60));
        assert_eq!(config.signing_algorithm, lanyard_token::SigningAlgorithm::EdDsa);
        assert_eq!(config.rate_limits.sign_in, RateLimit::new(5, 30));
        let bad = settings(&[
            ("LANYARD_SIGNING_ALGORITHM", "HS256"),
            ("LANYARD_ENCRYPTION_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
        ]);
        let err = token_config(&bad, &facts).unwrap_err().to_string();
        assert!(err.contains("LANYARD_SIGNING_ALGORITHM"), "{err}");
    }
}
