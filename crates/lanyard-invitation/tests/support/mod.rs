//! Test support: a real tonic server on 127.0.0.1:0 serving TenancyService and InvitationService
//! over a fresh database (a new SQLite directory, or a new Postgres database), typed clients, a
//! test access-token verifier for member callers, and a loopback SMTP receiver.
//!
//! Postgres tests use `LANYARD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). When no server answers they fail if `CI=true`
//! and otherwise print that they were skipped.

#![allow(dead_code)]

pub mod smtp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lanyard::settings::MailTransportKind;
use lanyard::{Application, ServiceName, Settings, Tuning};
use lanyard_core::caller::{AccessTokenVerifier, AuthError, MemberPrincipal};
use lanyard_core::{OrganizationId, Permission, RoleName, UserId};
use lanyard_invitation::{OffsetClock, RateLimit};
use lanyard_proto::invitation::v1 as ipb;
use lanyard_proto::invitation::v1::invitation_service_client::InvitationServiceClient;
use lanyard_proto::tenancy::v1 as tpb;
use lanyard_proto::tenancy::v1::tenancy_service_client::TenancyServiceClient;
use secrecy::SecretString;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use lanyard_testkit::app::init_logs;
pub use lanyard_testkit::app::{Backend, TestDb, OPERATOR_KEY, SERVICE_KEY};

/// The link template of every test server.
pub const LINK: &str = "https://app.example.com/invite?token={token}";

/// How the invitation service reaches tenancy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The local server object, no socket (the all-in-one process).
    InProcess,
    /// A tonic channel over TCP (separate processes).
    Channel,
}

/// How a test app sends mail.
#[derive(Clone, Debug)]
pub enum Mail {
    /// `.eml` files in the test directory.
    Files,
    /// SMTP to this URL.
    Smtp(String),
}

/// Knobs of a test app.
#[derive(Clone, Debug)]
pub struct Options {
    pub transport: Transport,
    pub mail: Mail,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub preview_limit: RateLimit,
    pub max_attempts: u32,
    pub backoff: Duration,
    /// Whether the mailer runs (the sweeper never does on its own: tests call `sweep`).
    pub mailer: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            transport: Transport::InProcess,
            mail: Mail::Files,
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(7 * 24 * 3600),
            preview_limit: RateLimit::off(),
            max_attempts: 8,
            backoff: Duration::from_millis(20),
            mailer: true,
        }
    }
}

/// Member access tokens for tests: `<role>.<user id>.<org id>` (two dots, like a JWT), granting
/// the built-in role's permissions in that organization.
struct TestTokens;

#[async_trait::async_trait]
impl AccessTokenVerifier for TestTokens {
    async fn verify(&self, token: &str) -> Result<MemberPrincipal, AuthError> {
        let mut parts = token.split('.');
        let (Some(role), Some(user), Some(org)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(AuthError::Invalid);
        };
        let permissions: &[&str] = match role {
            "owner" => &["*"],
            "admin" => &["organization:read", "members:*", "invitations:*", "roles:*", "audit:read", "seats:read"],
            "member" => &["organization:read"],
            _ => return Err(AuthError::Invalid),
        };
        Ok(MemberPrincipal {
            user_id: UserId::parse(user).map_err(|_| AuthError::Invalid)?,
            organization_id: OrganizationId::parse(org).map_err(|_| AuthError::Invalid)?,
            roles: vec![RoleName::parse(role).map_err(|_| AuthError::Invalid)?],
            permissions: permissions.iter().map(|p| Permission::parse(p).expect("permission")).collect(),
        })
    }
}

/// A member token for tests.
pub fn member_token(role: &str, user: &str, org: &str) -> String {
    format!("{role}.{user}.{org}")
}

/// A running app: both services on one loopback server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub tenancy: TenancyServiceClient<Channel>,
    pub invitations: InvitationServiceClient<Channel>,
    pub clock: Arc<OffsetClock>,
    pub parts_sweeper: lanyard_invitation::Sweeper,
    pub mailer: lanyard_invitation::Mailer,
    pub mail_dir: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    workers: Option<lanyard_invitation::Workers>,
}

/// Adds `authorization: Bearer <key>`.
pub fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert("authorization", format!("Bearer {key}").parse().expect("ascii"));
    r
}

/// As the operator.
pub fn op<T>(message: T) -> tonic::Request<T> {
    with_key(message, OPERATOR_KEY)
}

/// As the token service (service key).
pub fn svc<T>(message: T) -> tonic::Request<T> {
    with_key(message, SERVICE_KEY)
}

/// The stable reason of a status.
pub fn reason(status: &tonic::Status) -> String {
    lanyard_core::status::reason_of(status).unwrap_or_default()
}

/// Asserts a status's code and reason.
#[track_caller]
pub fn assert_status(status: &tonic::Status, code: tonic::Code, wanted: &str) {
    assert_eq!((status.code(), reason(status).as_str()), (code, wanted), "unexpected status: {status:?}");
}

/// The raw token of a link.
pub fn token_of(link: &str) -> String {
    link.rsplit_once("token=").expect("a link with a token").1.to_owned()
}

impl TestApp {
    /// Starts an app on `db` with default options.
    pub async fn spawn(db: &TestDb) -> Self {
        Self::spawn_with(db, Options::default()).await
    }

    /// Starts an app on `db`: the binary's composition root with the tenancy and invitation
    /// services, in one process or (`Transport::Channel`) in two, as a split deployment runs them.
    pub async fn spawn_with(db: &TestDb, options: Options) -> Self {
        init_logs();
        // These tests verify no domain by DNS: a resolver that reaches nothing is enough.
        let mut settings = lanyard_testkit::app::settings(db, "127.0.0.1:9".parse().expect("address"));
        settings.dns_timeout_ms = 200;
        settings.invitation_link_template = Some(LINK.into());
        if let Mail::Smtp(url) = &options.mail {
            settings.smtp_url = Some(SecretString::from(url.clone()));
            settings.mail_transport = Some(MailTransportKind::Smtp);
        }
        let mail_dir = settings.mail_dir.clone().expect("a mail directory");
        let clock = Arc::new(OffsetClock::new());
        let tuning = {
            let (clock, options) = (clock.clone(), options.clone());
            Tuning::default().member_tokens(Arc::new(TestTokens)).without_background_work().invitation(move |config| {
                config.clock = clock;
                config.min_ttl = options.min_ttl;
                config.max_ttl = options.max_ttl;
                config.preview_rate_limit = options.preview_limit;
                config.operator_inviter_name = "Acme SaaS Ops".into();
                config.mailer.max_attempts = options.max_attempts;
                config.mailer.backoff_base = options.backoff;
                config.mailer.backoff_max = options.backoff * 4;
                config.mailer.poll_interval = Duration::from_millis(50);
            })
        };
        let apps = match options.transport {
            Transport::InProcess => {
                vec![Application::build_tuned(settings, &[ServiceName::Tenancy, ServiceName::Invitation], tuning)
                    .await
                    .expect("the tenancy and invitation process")]
            }
            Transport::Channel => {
                let members = Tuning::default().member_tokens(Arc::new(TestTokens));
                let tenancy = Application::build_tuned(settings.clone(), &[ServiceName::Tenancy], members)
                    .await
                    .expect("the tenancy process");
                let split = Settings { tenancy_url: Some(format!("http://{}", tenancy.local_addr())), ..settings };
                let invitation = Application::build_tuned(split, &[ServiceName::Invitation], tuning)
                    .await
                    .expect("the invitation process");
                vec![tenancy, invitation]
            }
        };
        let addr = apps[0].local_addr();
        let invitation_addr = apps[apps.len() - 1].local_addr();
        let parts = apps[apps.len() - 1].invitation_parts().expect("the invitation service runs");
        let workers = options.mailer.then(|| parts.spawn_mailer());
        let (stop, _) = tokio::sync::watch::channel(false);
        let servers = apps.into_iter().map(|app| lanyard_testkit::app::run(app, &stop)).collect();
        let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect_lazy();
        let invitation_channel = Channel::from_shared(format!("http://{invitation_addr}")).expect("uri").connect_lazy();
        Self {
            addr,
            tenancy: TenancyServiceClient::new(channel),
            invitations: InvitationServiceClient::new(invitation_channel),
            clock,
            parts_sweeper: parts.sweeper.clone(),
            mailer: parts.mailer.clone(),
            mail_dir,
            stop,
            servers,
            workers,
        }
    }

    /// Stops the workers and the servers, as a process shutdown would.
    pub async fn stop(mut self) {
        if let Some(w) = self.workers.take() {
            w.shutdown().await;
        }
        let _ = self.stop.send(true);
        for server in std::mem::take(&mut self.servers) {
            let _ = server.await;
        }
    }

    /// Runs the sweeper once.
    pub async fn sweep(&self) -> lanyard_invitation::sweeper::SweepReport {
        self.parts_sweeper.run_once().await.expect("sweep")
    }

    /// Creates an organization as the operator.
    pub async fn create_org(&self, slug: &str, seats: i32, domains: &[&str]) -> tpb::Organization {
        self.tenancy
            .clone()
            .create_organization(op(tpb::CreateOrganizationRequest {
                slug: slug.into(),
                display_name: format!("{slug} Inc."),
                seat_limit: seats,
                allowed_domains: domains.iter().map(|d| d.to_string()).collect(),
                ..Default::default()
            }))
            .await
            .expect("create organization")
            .into_inner()
            .organization
            .expect("organization")
    }

    /// The user of `email` (created if new). Sign-in never creates users, so the tests make them
    /// members of an organization of their own ("people" of one seat), which nothing else reads.
    pub async fn user(&self, email: &str) -> String {
        let slug = format!("people-{}", uuid::Uuid::new_v4().simple());
        let people = self.create_org(&slug, 1, &[]).await.organization_id;
        self.tenancy
            .clone()
            .add_member(op(tpb::AddMemberRequest {
                organization_id: people,
                email: email.into(),
                display_name: email.split('@').next().unwrap_or_default().into(),
                waive_domain_check: true,
                ..Default::default()
            }))
            .await
            .expect("add member")
            .into_inner()
            .member
            .expect("member")
            .user_id
    }

    /// Invites as the operator, returning the link instead of emailing it.
    pub async fn invite_link(&self, org: &str, email: &str, roles: &[&str]) -> (ipb::Invitation, String) {
        let r = self.invite(op(create_req(org, email, roles, false))).await.expect("create invitation");
        (r.invitation.expect("invitation"), r.invitation_link.expect("link"))
    }

    /// CreateInvitation.
    pub async fn invite(
        &self,
        req: tonic::Request<ipb::CreateInvitationRequest>,
    ) -> Result<ipb::CreateInvitationResponse, tonic::Status> {
        self.invitations.clone().create_invitation(req).await.map(|r| r.into_inner())
    }

    /// AcceptInvitation by the service key for a verified identity.
    pub async fn accept(
        &self,
        token: &str,
        user: &str,
        email: &str,
    ) -> Result<ipb::AcceptInvitationResponse, tonic::Status> {
        self.invitations
            .clone()
            .accept_invitation(svc(accept_req(token, user, email, true)))
            .await
            .map(|r| r.into_inner())
    }

    /// PreviewInvitation with no credential.
    pub async fn preview(&self, token: &str) -> Result<ipb::PreviewInvitationResponse, tonic::Status> {
        self.invitations
            .clone()
            .preview_invitation(ipb::PreviewInvitationRequest { token: token.into() })
            .await
            .map(|r| r.into_inner())
    }

    /// GetInvitation as the operator.
    pub async fn get(&self, org: &str, id: &str) -> ipb::Invitation {
        self.invitations
            .clone()
            .get_invitation(op(ipb::GetInvitationRequest { organization_id: org.into(), invitation_id: id.into() }))
            .await
            .expect("get invitation")
            .into_inner()
            .invitation
            .expect("invitation")
    }

    /// Every invitation of an organization, as the operator.
    pub async fn list(&self, org: &str) -> Vec<ipb::Invitation> {
        self.invitations
            .clone()
            .list_invitations(op(ipb::ListInvitationsRequest { organization_id: org.into(), ..Default::default() }))
            .await
            .expect("list invitations")
            .into_inner()
            .invitations
    }

    /// The actions of an invitation's events, oldest first.
    pub async fn events(&self, org: &str, invitation: &str) -> Vec<String> {
        let mut events = self
            .invitations
            .clone()
            .list_invitation_events(op(ipb::ListInvitationEventsRequest {
                organization_id: org.into(),
                invitation_id: invitation.into(),
                page_size: 500,
                ..Default::default()
            }))
            .await
            .expect("list events")
            .into_inner()
            .events;
        events.reverse();
        events.into_iter().map(|e| e.action).collect()
    }

    /// Seat usage, as the operator.
    pub async fn usage(&self, org: &str) -> tpb::SeatUsage {
        self.tenancy
            .clone()
            .get_seat_usage(op(tpb::GetSeatUsageRequest { organization_id: org.into() }))
            .await
            .expect("seat usage")
            .into_inner()
            .usage
            .expect("usage")
    }

    /// Active members, as the operator.
    pub async fn members(&self, org: &str) -> Vec<tpb::Member> {
        self.tenancy
            .clone()
            .list_members(op(tpb::ListMembersRequest {
                organization_id: org.into(),
                page_size: 500,
                ..Default::default()
            }))
            .await
            .expect("list members")
            .into_inner()
            .members
    }

    /// Waits until `check` holds for the invitation, failing after a generous deadline.
    pub async fn wait_for_invitation(
        &self,
        org: &str,
        id: &str,
        what: &str,
        check: impl Fn(&ipb::Invitation) -> bool,
    ) -> ipb::Invitation {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let inv = self.get(org, id).await;
            if check(&inv) {
                return inv;
            }
            assert!(tokio::time::Instant::now() < deadline, "gave up waiting for {what}: {inv:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `.eml` files written so far.
    pub fn eml_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.mail_dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A CreateInvitationRequest.
pub fn create_req(org: &str, email: &str, roles: &[&str], send_email: bool) -> ipb::CreateInvitationRequest {
    ipb::CreateInvitationRequest {
        organization_id: org.into(),
        email: email.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        send_email,
        ..Default::default()
    }
}

/// An AcceptInvitationRequest.
pub fn accept_req(token: &str, user: &str, email: &str, verified: bool) -> ipb::AcceptInvitationRequest {
    ipb::AcceptInvitationRequest {
        token: token.into(),
        identity: Some(ipb::VerifiedIdentity {
            user_id: user.into(),
            email: email.into(),
            email_verified: verified,
            issuer: "https://idp.example.com".into(),
            subject: format!("sub-{email}"),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

pub use lanyard_testkit::backend_tests;
