//! The command line: `serve`, `migrate`, and operator commands that call the gRPC API and print
//! tables (or JSON with `--json`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use lanyard_clients::{paginate, PAGE_SIZE};
use lanyard_core::OrganizationId;
use lanyard_proto::invitation::v1 as ipb;
use lanyard_proto::invitation::v1::invitation_service_client::InvitationServiceClient;
use lanyard_proto::tenancy::v1 as pb;
use lanyard_proto::tenancy::v1::tenancy_service_client::TenancyServiceClient;
use serde_json::json;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::app::{ServiceName, OPERATOR_KEY_FILE};

mod clients;
pub mod keys;
pub mod org_admin;
mod output;
pub mod roles;
pub mod sessions;
pub mod sso;

use output::*;

/// Lanyard: organizations, seats, invitations and session tokens for B2B SaaS.
#[derive(Debug, Parser)]
#[command(name = "lanyard", version, about)]
pub struct Cli {
    /// A settings file (TOML); `LANYARD_*` variables override it.
    #[arg(long, global = true, env = "LANYARD_CONFIG_FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the services (all three unless `--service` narrows it).
    Serve {
        /// Run only these services (repeatable).
        #[arg(long = "service", value_enum)]
        services: Vec<ServiceName>,
    },
    /// Run database migrations and exit.
    Migrate {
        /// Migrate only these services (repeatable).
        #[arg(long = "service", value_enum)]
        services: Vec<ServiceName>,
    },
    /// Manage organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Manage members.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Show seat usage.
    #[command(subcommand)]
    Seats(SeatsCommand),
    /// Manage an organization's email domains and their verification.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Manage invitations.
    #[command(subcommand)]
    Invitation(InvitationCommand),
    /// Manage the applications that sign people in through Lanyard (OpenID Provider clients).
    #[command(subcommand)]
    Client(clients::ClientCommand),
    /// Manage an organization's roles.
    #[command(subcommand)]
    Role(roles::RoleCommand),
    /// Manage an organization's SSO connections.
    #[command(subcommand)]
    Sso(sso::SsoCommand),
    /// Read an organization's audit log.
    #[command(subcommand)]
    Audit(org_admin::AuditCommand),
    /// List and revoke sign-in sessions.
    #[command(subcommand)]
    Session(sessions::SessionCommand),
    /// Rotate the signing key and the key-encryption key.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Ask a server's gRPC health service whether it serves (no key needed): exit 0 when it
    /// answers SERVING, 1 otherwise. For a container HEALTHCHECK or a script waiting for start-up.
    Health {
        /// The service to ask about; empty for the whole server.
        #[arg(long, value_enum)]
        service: Option<ServiceName>,
        /// The server's gRPC address.
        #[arg(long, env = "LANYARD_ENDPOINT", default_value = "http://127.0.0.1:50051")]
        endpoint: String,
        /// How long to wait for the answer, in milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
        #[command(flatten)]
        tls: TlsArgs,
    },
}

/// How the CLI speaks TLS to an `https://` endpoint.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// PEM certificates to trust besides the system's roots (a private CA).
    #[arg(long, env = "LANYARD_TLS_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for a server that requires one (`LANYARD_TLS_CLIENT_CA_FILE`).
    #[arg(long, env = "LANYARD_CLIENT_CERT_FILE", global = true, requires = "client_key_file")]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `--client-cert-file`.
    #[arg(long, env = "LANYARD_CLIENT_KEY_FILE", global = true, requires = "client_cert_file")]
    pub client_key_file: Option<PathBuf>,
    /// The name the server's certificate must carry, when the endpoint's host is not it (a
    /// probe dialing 127.0.0.1 of a pod whose certificate names its Service).
    #[arg(long, global = true)]
    pub tls_server_name: Option<String>,
}

impl TlsArgs {
    fn client(&self) -> anyhow::Result<lanyard_core::tls::ClientTls> {
        let mut tls = lanyard_core::tls::ClientTls::from_files(
            self.ca_file.as_deref(),
            self.client_cert_file.as_deref(),
            self.client_key_file.as_deref(),
        )?;
        tls.server_name = self.tls_server_name.clone();
        Ok(tls)
    }

    /// An endpoint for `url`: TLS for `https://`.
    fn endpoint(&self, url: &str) -> anyhow::Result<tonic::transport::Endpoint> {
        lanyard_core::tls::install_crypto_provider();
        lanyard_core::tls::endpoint(url, &self.client()?).with_context(|| format!("invalid --endpoint {url}"))
    }
}

/// Whether `endpoint` names a loopback host (127.0.0.0/8, ::1, `localhost`): traffic that never
/// leaves the machine (a port-forward, a local server).
pub fn is_loopback_endpoint(endpoint: &str) -> bool {
    let Ok(uri) = endpoint.parse::<http::Uri>() else { return false };
    let Some(host) = uri.host() else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `lanyard health`: the server's (or one service's) gRPC health status.
async fn health(
    service: Option<ServiceName>,
    endpoint: &str,
    tls: &TlsArgs,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let ask = async {
        // Health carries no key: plaintext to any host is fine.
        let channel = tls.endpoint(endpoint)?.connect().await?;
        let request =
            tonic_health::pb::HealthCheckRequest { service: service.map(|s| s.grpc_name()).unwrap_or("").into() };
        anyhow::Ok(tonic_health::pb::health_client::HealthClient::new(channel).check(request).await?.into_inner())
    };
    let answer = tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| anyhow::anyhow!("{endpoint} did not answer within {} ms", timeout.as_millis()))?
        .with_context(|| format!("asking {endpoint} for its health"))?;
    let status = ServingStatus::try_from(answer.status).unwrap_or(ServingStatus::Unknown);
    println!("{}", status.as_str_name());
    anyhow::ensure!(status == ServingStatus::Serving, "{endpoint} is not serving");
    Ok(())
}

/// `lanyard invitation ...`
#[derive(Debug, Subcommand)]
pub enum InvitationCommand {
    /// Invite an email to an organization (sends the registration link by email).
    Create {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        /// The invitee's email.
        #[arg(long)]
        email: String,
        /// Role (repeatable; default member).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Send no email; print the link, for a manual email (operator only).
        #[arg(long)]
        print_link: bool,
        /// Allow an email outside the organization's domains (operator only; for the first admin).
        #[arg(long)]
        waive_domain_check: bool,
        /// Hours until the link expires (default 24).
        #[arg(long)]
        ttl_hours: Option<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List invitations.
    List {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        /// Only this status: pending, accepted, revoked or expired.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a pending invitation (frees its seat).
    Revoke {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        /// The invitation id.
        #[arg(long)]
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Issue a new link (the old one stops working) and send it again.
    Resend {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        /// The invitation id.
        #[arg(long)]
        id: String,
        /// Send no email; print the new link.
        #[arg(long)]
        print_link: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

/// How operator commands reach the server.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// The server's gRPC address.
    #[arg(long, env = "LANYARD_ENDPOINT", default_value = "http://127.0.0.1:50051", global = true)]
    pub endpoint: String,
    /// An operator API key; defaults to the embedded default's generated key in the data directory.
    #[arg(long, env = "LANYARD_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Send the API key over a plaintext `http://` endpoint that is not loopback (refused
    /// otherwise: anyone on the path could read it).
    #[arg(long, global = true)]
    pub insecure_cleartext: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// `lanyard org ...`
#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization.
    Create {
        /// Unique slug, lowercase [a-z0-9-]{2,63}.
        #[arg(long)]
        slug: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Seat limit.
        #[arg(long)]
        seats: i32,
        /// Allowed email domain (repeatable).
        #[arg(long = "domain")]
        domains: Vec<String>,
        /// Make this email the owner.
        #[arg(long)]
        owner_email: Option<String>,
        /// Verify every --domain as the operator (you checked the customer owns them): its SSO
        /// connections may then vouch for emails in them.
        #[arg(long)]
        verify_domains: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one organization (by id or slug).
    Show {
        /// Id or slug.
        org: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List organizations.
    List {
        /// Include deleted organizations.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        remote: Remote,
    },
    #[command(flatten)]
    Lifecycle(org_admin::OrgLifecycleCommand),
}

/// `lanyard member ...`
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Add a member by email.
    Add {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        /// The member's email.
        #[arg(long)]
        email: String,
        /// Role (repeatable; default member).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Add an email outside the organization's domains.
        #[arg(long)]
        waive_domain_check: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// List members.
    List {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove a member.
    Remove {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        /// The member's user id.
        #[arg(long)]
        user: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// `lanyard domain ...`
#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Add a domain (pending) and print the DNS TXT record that verifies it.
    Add {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        /// The domain.
        #[arg(long)]
        domain: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Verify a domain by its DNS TXT record, or with --operator by your word.
    Verify {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        /// The domain.
        #[arg(long)]
        domain: String,
        /// Mark it verified without a DNS lookup (you checked the customer owns it).
        #[arg(long)]
        operator: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// List an organization's domains with their state.
    List {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove a domain (and its verification).
    Remove {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        /// The domain.
        #[arg(long)]
        domain: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// `lanyard seats ...`
#[derive(Debug, Subcommand)]
pub enum SeatsCommand {
    /// Show seat usage of an organization.
    Show {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        #[command(flatten)]
        remote: Remote,
    },
}

type Client = TenancyServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

type Invitations = InvitationServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

async fn connect(remote: &Remote, data_dir: &std::path::Path) -> anyhow::Result<Client> {
    let (channel, bearer) = channel(remote, data_dir).await?;
    Ok(TenancyServiceClient::with_interceptor(channel, bearer))
}

async fn connect_both(remote: &Remote, data_dir: &std::path::Path) -> anyhow::Result<(Client, Invitations)> {
    let (channel, bearer) = channel(remote, data_dir).await?;
    Ok((
        TenancyServiceClient::with_interceptor(channel.clone(), bearer.clone()),
        InvitationServiceClient::with_interceptor(channel, bearer),
    ))
}

async fn channel(remote: &Remote, data_dir: &std::path::Path) -> anyhow::Result<(Channel, Bearer)> {
    // Checked before anything is read or connected: the key never leaves in cleartext for a
    // network the operator did not explicitly accept.
    if !lanyard_core::tls::is_https(&remote.endpoint)
        && !is_loopback_endpoint(&remote.endpoint)
        && !remote.insecure_cleartext
    {
        anyhow::bail!(
            "refusing to send the API key in cleartext to {}: use https:// (with --ca-file for a private CA), a \
             loopback address (a port-forward), or pass --insecure-cleartext",
            remote.endpoint
        );
    }
    let key = match &remote.api_key {
        Some(k) => k.clone(),
        None => std::fs::read_to_string(data_dir.join(OPERATOR_KEY_FILE)).map(|k| k.trim().to_owned()).with_context(
            || {
                format!(
                    "no API key: pass --api-key or set LANYARD_API_KEY (the embedded default writes one to {})",
                    data_dir.join(OPERATOR_KEY_FILE).display()
                )
            },
        )?,
    };
    let channel = remote
        .tls
        .endpoint(&remote.endpoint)?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", remote.endpoint))?;
    let header = MetadataValue::try_from(format!("Bearer {key}")).context("the API key is not valid header text")?;
    Ok((channel, Bearer(header)))
}

async fn resolve_org(client: &mut Client, org: &str) -> anyhow::Result<String> {
    if OrganizationId::parse(org).is_ok() {
        return Ok(org.to_owned());
    }
    let found = client
        .get_organization(pb::GetOrganizationRequest {
            key: Some(pb::get_organization_request::Key::Slug(org.to_owned())),
        })
        .await
        .map_err(status_error)?;
    Ok(found.into_inner().organization.map(|o| o.organization_id).unwrap_or_default())
}

async fn verify_domain(
    c: &mut Client,
    organization_id: &str,
    domain: &str,
    operator: bool,
) -> anyhow::Result<(pb::Organization, pb::OrganizationDomain)> {
    let method = if operator { pb::DomainVerificationMethod::Operator } else { pb::DomainVerificationMethod::DnsTxt };
    let r = c
        .verify_domain(pb::VerifyDomainRequest {
            organization_id: organization_id.to_owned(),
            domain: domain.to_owned(),
            method: method as i32,
            ..Default::default()
        })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok((r.organization.unwrap_or_default(), r.domain.unwrap_or_default()))
}

async fn run_domain(command: DomainCommand, data_dir: &std::path::Path) -> anyhow::Result<()> {
    match command {
        DomainCommand::Add { org, domain, remote } => {
            let mut c = connect(&remote, data_dir).await?;
            let organization_id = resolve_org(&mut c, &org).await?;
            let r = c
                .add_domain(pb::AddDomainRequest { organization_id, domain: domain.clone(), ..Default::default() })
                .await
                .map_err(status_error)?
                .into_inner();
            let ch = r.challenge.unwrap_or_default();
            let value = json!({
                "domain": domain, "record_name": ch.record_name, "record_type": ch.record_type,
                "record_value": ch.record_value,
            });
            let headers = ["domain", "record", "type", "value"];
            print(&remote, value, &headers, vec![vec![domain, ch.record_name, ch.record_type, ch.record_value]]);
        }
        DomainCommand::Verify { org, domain, operator, remote } => {
            let mut c = connect(&remote, data_dir).await?;
            let organization_id = resolve_org(&mut c, &org).await?;
            let (_, d) = verify_domain(&mut c, &organization_id, &domain, operator).await?;
            print(&remote, domain_json(&d), &DOMAIN_HEADERS, vec![domain_row(&d)]);
        }
        DomainCommand::List { org, remote } => {
            let mut c = connect(&remote, data_dir).await?;
            let organization_id = resolve_org(&mut c, &org).await?;
            let key = pb::get_organization_request::Key::OrganizationId(organization_id);
            let o = c
                .get_organization(pb::GetOrganizationRequest { key: Some(key) })
                .await
                .map_err(status_error)?
                .into_inner()
                .organization
                .unwrap_or_default();
            let value = serde_json::Value::Array(o.domains.iter().map(domain_json).collect());
            print(&remote, value, &DOMAIN_HEADERS, o.domains.iter().map(domain_row).collect());
        }
        DomainCommand::Remove { org, domain, remote } => {
            let mut c = connect(&remote, data_dir).await?;
            let organization_id = resolve_org(&mut c, &org).await?;
            let o = c
                .remove_domain(pb::RemoveDomainRequest { organization_id, domain, ..Default::default() })
                .await
                .map_err(status_error)?
                .into_inner()
                .organization
                .unwrap_or_default();
            let value = serde_json::Value::Array(o.domains.iter().map(domain_json).collect());
            print(&remote, value, &DOMAIN_HEADERS, o.domains.iter().map(domain_row).collect());
        }
    }
    Ok(())
}

/// Runs an operator command.
pub async fn run_operator(command: Command, data_dir: &std::path::Path) -> anyhow::Result<()> {
    match command {
        Command::Org(OrgCommand::Create { slug, name, seats, domains, owner_email, verify_domains, remote }) => {
            let mut c = connect(&remote, data_dir).await?;
            let mut org = c
                .create_organization(pb::CreateOrganizationRequest {
                    slug,
                    display_name: name,
                    seat_limit: seats,
                    allowed_domains: domains,
                    owner_email: owner_email.unwrap_or_default(),
                    ..Default::default()
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .organization
                .unwrap_or_default();
            if verify_domains {
                for domain in org.allowed_domains.clone() {
                    org = verify_domain(&mut c, &org.organization_id, &domain, true).await?.0;
                }
            }
            print(&remote, org_json(&org), &ORG_HEADERS, vec![org_row(&org)]);
        }
        Command::Org(OrgCommand::Show { org, remote }) => {
            let mut c = connect(&remote, data_dir).await?;
            let key = if OrganizationId::parse(&org).is_ok() {
                pb::get_organization_request::Key::OrganizationId(org)
            } else {
                pb::get_organization_request::Key::Slug(org)
            };
            let org = c
                .get_organization(pb::GetOrganizationRequest { key: Some(key) })
                .await
                .map_err(status_error)?
                .into_inner()
                .organization
                .unwrap_or_default();
            print(&remote, org_json(&org), &ORG_HEADERS, vec![org_row(&org)]);
        }
        Command::Org(OrgCommand::List { all, remote }) => {
            let c = connect(&remote, data_dir).await?;
            let orgs = paginate(|page_token| {
                let mut c = c.clone();
                async move {
                    let req = pb::ListOrganizationsRequest { page_size: PAGE_SIZE, page_token, show_deleted: all };
                    let page = c.list_organizations(req).await.map_err(status_error)?.into_inner();
                    anyhow::Ok((page.organizations, page.next_page_token))
                }
            })
            .await?;
            let value = serde_json::Value::Array(orgs.iter().map(org_json).collect());
            print(&remote, value, &ORG_HEADERS, orgs.iter().map(org_row).collect());
        }
        Command::Member(MemberCommand::Add { org, email, roles, waive_domain_check, remote }) => {
            let mut c = connect(&remote, data_dir).await?;
            let organization_id = resolve_org(&mut c, &org).await?;
            let m = c
                .add_member(pb::AddMemberRequest {
                    organization_id,
                    email,
                    roles,
                    waive_domain_check,
                    ..Default::default()
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .member
                .unwrap_or_default();
            print(&remote, member_json(&m), &MEMBER_HEADERS, vec![member_row(&m)]);
        }
        Command::Member(MemberCommand::List { org, remote }) => {
            let mut c = connect(&remote, data_dir).await?;
            let organization_id = resolve_org(&mut c, &org).await?;
            let members = paginate(|page_token| {
                let mut c = c.clone();
                let req = pb::ListMembersRequest {
                    organization_id: organization_id.clone(),
                    page_size: PAGE_SIZE,
                    page_token,
                    show_removed: false,
                };
                async move {
                    let page = c.list_members(req).await.map_err(status_error)?.into_inner();
                    anyhow::Ok((page.members, page.next_page_token))
                }
            })
            .await?;
            let value = serde_json::Value::Array(members.iter().map(member_json).collect());
            print(&remote, value, &MEMBER_HEADERS, members.iter().map(member_row).collect());
        }
        Command::Member(MemberCommand::Remove { org, user, remote }) => {
            let mut c = connect(&remote, data_dir).await?;
            let organization_id = resolve_org(&mut c, &org).await?;
            let m = c
                .remove_member(pb::RemoveMemberRequest { organization_id, user_id: user, ..Default::default() })
                .await
                .map_err(status_error)?
                .into_inner()
                .member
                .unwrap_or_default();
            print(&remote, member_json(&m), &MEMBER_HEADERS, vec![member_row(&m)]);
        }
        Command::Seats(SeatsCommand::Show { org, remote }) => {
            let mut c = connect(&remote, data_dir).await?;
            let organization_id = resolve_org(&mut c, &org).await?;
            let u = c
                .get_seat_usage(pb::GetSeatUsageRequest { organization_id })
                .await
                .map_err(status_error)?
                .into_inner()
                .usage
                .unwrap_or_default();
            let value = json!({"organization_id": u.organization_id, "seat_limit": u.seat_limit,
                "active": u.active, "reserved": u.reserved, "available": u.available});
            print(
                &remote,
                value,
                &["limit", "active", "reserved", "available"],
                vec![vec![
                    u.seat_limit.to_string(),
                    u.active.to_string(),
                    u.reserved.to_string(),
                    u.available.to_string(),
                ]],
            );
        }
        Command::Invitation(command) => run_invitation(command, data_dir).await?,
        Command::Domain(command) => run_domain(command, data_dir).await?,
        Command::Client(command) => clients::run(command, data_dir).await?,
        Command::Org(OrgCommand::Lifecycle(command)) => org_admin::run_org(command, data_dir).await?,
        Command::Role(command) => roles::run(command, data_dir).await?,
        Command::Sso(command) => sso::run(command, data_dir).await?,
        Command::Audit(command) => org_admin::run_audit(command, data_dir).await?,
        Command::Session(command) => sessions::run(command, data_dir).await?,
        Command::Keys(keys::KeysCommand::RotateSigning { algorithm, force, remote }) => {
            keys::rotate_signing(algorithm, force, &remote, data_dir).await?
        }
        Command::Health { service, endpoint, timeout_ms, tls } => {
            health(service, &endpoint, &tls, std::time::Duration::from_millis(timeout_ms)).await?
        }
        Command::Serve { .. } | Command::Migrate { .. } | Command::Keys(keys::KeysCommand::Reencrypt(_)) => {
            unreachable!("handled by main")
        }
    }
    Ok(())
}

const INVITATION_HEADERS: [&str; 6] = ["id", "email", "roles", "status", "email_delivery", "expires"];

async fn run_invitation(command: InvitationCommand, data_dir: &std::path::Path) -> anyhow::Result<()> {
    match command {
        InvitationCommand::Create { org, email, roles, print_link, waive_domain_check, ttl_hours, remote } => {
            let (mut t, mut c) = connect_both(&remote, data_dir).await?;
            let organization_id = resolve_org(&mut t, &org).await?;
            let ttl = ttl_hours
                .map(|h| prost_types::Duration { seconds: i64::try_from(h * 3600).unwrap_or(i64::MAX), nanos: 0 });
            let r = c
                .create_invitation(ipb::CreateInvitationRequest {
                    organization_id,
                    email,
                    roles,
                    ttl,
                    send_email: !print_link,
                    waive_domain_check,
                    request_id: String::new(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_invitation(&remote, &r.invitation.unwrap_or_default(), r.invitation_link.as_deref());
        }
        InvitationCommand::List { org, status, remote } => {
            let (mut t, c) = connect_both(&remote, data_dir).await?;
            let organization_id = resolve_org(&mut t, &org).await?;
            let status = match status.as_deref() {
                None => ipb::InvitationStatus::Unspecified,
                Some("pending") => ipb::InvitationStatus::Pending,
                Some("accepted") => ipb::InvitationStatus::Accepted,
                Some("revoked") => ipb::InvitationStatus::Revoked,
                Some("expired") => ipb::InvitationStatus::Expired,
                Some(other) => anyhow::bail!("unknown status {other:?}: use pending, accepted, revoked or expired"),
            };
            let all = paginate(|page_token| {
                let mut c = c.clone();
                let req = ipb::ListInvitationsRequest {
                    organization_id: organization_id.clone(),
                    status: status as i32,
                    page_size: PAGE_SIZE,
                    page_token,
                };
                async move {
                    let page = c.list_invitations(req).await.map_err(status_error)?.into_inner();
                    anyhow::Ok((page.invitations, page.next_page_token))
                }
            })
            .await?;
            let value = serde_json::Value::Array(all.iter().map(|i| invitation_json(i, None)).collect());
            print(&remote, value, &INVITATION_HEADERS, all.iter().map(invitation_row).collect());
        }
        InvitationCommand::Revoke { org, id, remote } => {
            let (mut t, mut c) = connect_both(&remote, data_dir).await?;
            let organization_id = resolve_org(&mut t, &org).await?;
            let r = c
                .revoke_invitation(ipb::RevokeInvitationRequest {
                    organization_id,
                    invitation_id: id,
                    request_id: String::new(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_invitation(&remote, &r.invitation.unwrap_or_default(), None);
        }
        InvitationCommand::Resend { org, id, print_link, remote } => {
            let (mut t, mut c) = connect_both(&remote, data_dir).await?;
            let organization_id = resolve_org(&mut t, &org).await?;
            let r = c
                .resend_invitation(ipb::ResendInvitationRequest {
                    organization_id,
                    invitation_id: id,
                    send_email: !print_link,
                    ttl: None,
                    request_id: String::new(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_invitation(&remote, &r.invitation.unwrap_or_default(), r.invitation_link.as_deref());
        }
    }
    Ok(())
}
