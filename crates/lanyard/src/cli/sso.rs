//! `lanyard sso ...`: an organization's SSO connections over TenancyService. The client secret
//! is read from a file (or stdin), never from the command line, where `ps` and shell history
//! would keep it.

use std::io::Read;

use clap::Subcommand;

use super::*;

/// `lanyard sso ...`
#[derive(Debug, Subcommand)]
pub enum SsoCommand {
    /// Connect an identity provider to an organization.
    Create {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        /// The provider.
        #[arg(long, value_enum)]
        kind: SsoKind,
        /// The exact issuer URL (https, a public host).
        #[arg(long)]
        issuer: String,
        /// The OAuth client id (the audience of its ID tokens).
        #[arg(long)]
        client_id: String,
        /// A file holding the OAuth client secret (`-` for stdin; one trailing line break ignored).
        #[arg(long)]
        client_secret_file: Option<PathBuf>,
        /// Google Workspace hosted domain (repeatable; required for google-workspace).
        #[arg(long = "hosted-domain")]
        hosted_domains: Vec<String>,
        /// Entra ID tenant id (required for azure-ad).
        #[arg(long, default_value = "")]
        tenant_id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List an organization's SSO connections (secrets are never shown).
    List {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a connection: the sessions signed in through it are revoked at once.
    Delete {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        /// The connection id.
        #[arg(long)]
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// An identity provider kind.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SsoKind {
    /// Google Workspace.
    GoogleWorkspace,
    /// Okta.
    Okta,
    /// Microsoft Entra ID (Azure AD).
    AzureAd,
    /// Any other OpenID Connect provider.
    Oidc,
}

fn kind_name(kind: i32) -> &'static str {
    match pb::SsoConnectionKind::try_from(kind) {
        Ok(pb::SsoConnectionKind::GoogleWorkspace) => "google-workspace",
        Ok(pb::SsoConnectionKind::Okta) => "okta",
        Ok(pb::SsoConnectionKind::AzureAd) => "azure-ad",
        Ok(pb::SsoConnectionKind::Oidc) => "oidc",
        _ => "unknown",
    }
}

const SSO_HEADERS: [&str; 6] = ["id", "kind", "issuer", "client_id", "secret", "enabled"];

fn sso_json(s: &pb::SsoConnection) -> serde_json::Value {
    json!({
        "connection_id": s.connection_id, "organization_id": s.organization_id, "kind": kind_name(s.kind),
        "issuer": s.issuer, "client_id": s.client_id, "hosted_domains": s.hosted_domains, "tenant_id": s.tenant_id,
        "enabled": s.enabled, "has_client_secret": s.has_client_secret, "created": time(s.create_time.as_ref()),
    })
}

fn sso_row(s: &pb::SsoConnection) -> Vec<String> {
    let secret = if s.has_client_secret { "stored" } else { "none" };
    vec![
        s.connection_id.clone(),
        kind_name(s.kind).to_owned(),
        s.issuer.clone(),
        s.client_id.clone(),
        secret.to_owned(),
        s.enabled.to_string(),
    ]
}

fn read_secret(path: &std::path::Path) -> anyhow::Result<String> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).context("reading the client secret from stdin")?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the client secret from {}", path.display()))?;
    }
    let secret = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    anyhow::ensure!(!secret.is_empty(), "the client secret file {} is empty", path.display());
    Ok(secret.to_owned())
}

/// Runs `lanyard sso ...`.
pub(super) async fn run(command: SsoCommand, data_dir: &std::path::Path) -> anyhow::Result<()> {
    match command {
        SsoCommand::Create { org, kind, issuer, client_id, client_secret_file, hosted_domains, tenant_id, remote } => {
            let client_secret = client_secret_file.as_deref().map(read_secret).transpose()?.unwrap_or_default();
            let kind = match kind {
                SsoKind::GoogleWorkspace => pb::SsoConnectionKind::GoogleWorkspace,
                SsoKind::Okta => pb::SsoConnectionKind::Okta,
                SsoKind::AzureAd => pb::SsoConnectionKind::AzureAd,
                SsoKind::Oidc => pb::SsoConnectionKind::Oidc,
            };
            let mut c = connect(&remote, data_dir).await?;
            let organization_id = resolve_org(&mut c, &org).await?;
            let s = c
                .create_sso_connection(pb::CreateSsoConnectionRequest {
                    organization_id,
                    kind: kind as i32,
                    issuer,
                    client_id,
                    client_secret,
                    hosted_domains,
                    tenant_id,
                    request_id: String::new(),
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .connection
                .unwrap_or_default();
            print(&remote, sso_json(&s), &SSO_HEADERS, vec![sso_row(&s)]);
        }
        SsoCommand::List { org, remote } => {
            let mut c = connect(&remote, data_dir).await?;
            let organization_id = resolve_org(&mut c, &org).await?;
            let all = paginate(|page_token| {
                let mut c = c.clone();
                let req = pb::ListSsoConnectionsRequest {
                    organization_id: organization_id.clone(),
                    page_size: PAGE_SIZE,
                    page_token,
                };
                async move {
                    let page = c.list_sso_connections(req).await.map_err(status_error)?.into_inner();
                    anyhow::Ok((page.connections, page.next_page_token))
                }
            })
            .await?;
            let value = serde_json::Value::Array(all.iter().map(sso_json).collect());
            print(&remote, value, &SSO_HEADERS, all.iter().map(sso_row).collect());
        }
        SsoCommand::Delete { org, id, remote } => {
            let mut c = connect(&remote, data_dir).await?;
            let organization_id = resolve_org(&mut c, &org).await?;
            c.delete_sso_connection(pb::DeleteSsoConnectionRequest {
                organization_id,
                connection_id: id.clone(),
                request_id: String::new(),
            })
            .await
            .map_err(status_error)?;
            print_deleted(&remote, "connection_id", id);
        }
    }
    Ok(())
}
