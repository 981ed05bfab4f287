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

use lanyard_authz::Facts;
use lanyard_clients::TenancyClient;
use lanyard_core::cache::Cache;
use lanyard_core::caller::{AccessTokenVerifier, AuthError, MemberPrincipal};
use lanyard_core::crypto::SecretBox;
use lanyard_core::db::Database;
use lanyard_core::{ApiKeys, Authenticator, OrganizationId, Permission, RoleName, UserId};
use lanyard_invitation::{InvitationConfig, MailTransport, MailerConfig, OffsetClock, RateLimit};
use lanyard_proto::invitation::v1 as ipb;
use lanyard_proto::invitation::v1::invitation_service_client::InvitationServiceClient;
use lanyard_proto::tenancy::v1 as tpb;
use lanyard_proto::tenancy::v1::tenancy_service_client::TenancyServiceClient;
use lanyard_tenancy::{Tenancy, TenancyGrpc, TenancyStore};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use lanyard_testkit::app::{init_logs, KEK};
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
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
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

    /// Starts an app on `db`.
    pub async fn spawn_with(db: &TestDb, options: Options) -> Self {
        init_logs();
        let keys = ApiKeys::new([OPERATOR_KEY], [SERVICE_KEY]).expect("keys");
        let auth = Authenticator::new(keys).with_access_tokens(Arc::new(TestTokens));
        let secrets = SecretBox::from_base64(KEK).expect("kek");

        let tenancy_db = Database::connect(&db.config("tenancy")).await.expect("tenancy database");
        let store = TenancyStore::new(tenancy_db);
        store.migrate().await.expect("tenancy migrations");
        // These tests verify no domain by DNS: a resolver that reaches nothing is enough.
        let dns = lanyard_tenancy::dns::DomainVerifier::new(&lanyard_tenancy::dns::DnsConfig {
            servers: vec!["127.0.0.1:9".parse().expect("address")],
            timeout: Duration::from_millis(200),
        })
        .expect("DNS resolver");
        let tenancy_grpc = TenancyGrpc::new(
            Tenancy::new(store, secrets.clone(), dns, Facts::new(Cache::local("lanyard"))),
            auth.clone(),
        );

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let key = SecretString::from(SERVICE_KEY.to_owned());
        let tenancy_client = match options.transport {
            Transport::InProcess => TenancyClient::in_process(tenancy_grpc.clone().into_server(), &key),
            Transport::Channel => TenancyClient::connect_lazy(&format!("http://{addr}"), Duration::from_secs(30), &key),
        }
        .expect("tenancy client");

        let mail_dir = db.dir().join("mail");
        let transport = match &options.mail {
            Mail::Files => MailTransport::Files { dir: mail_dir.clone() },
            Mail::Smtp(url) => MailTransport::Smtp { url: SecretString::from(url.clone()) },
        };
        let mut mailer = MailerConfig::new(transport, "Lanyard <no-reply@lanyard.example>");
        mailer.max_attempts = options.max_attempts;
        mailer.backoff_base = options.backoff;
        mailer.backoff_max = options.backoff * 4;
        mailer.poll_interval = Duration::from_millis(50);
        let mut config = InvitationConfig::new(db.config("invitation"), LINK, secrets, mailer);
        let clock = Arc::new(OffsetClock::new());
        config.clock = clock.clone();
        config.min_ttl = options.min_ttl;
        config.max_ttl = options.max_ttl;
        config.preview_rate_limit = options.preview_limit;
        config.operator_inviter_name = "Acme SaaS Ops".into();
        let parts =
            lanyard_invitation::build(config, tenancy_client, auth).await.expect("build the invitation service");
        let workers = options.mailer.then(|| parts.spawn_mailer());

        let (stop, stopped) = oneshot::channel::<()>();
        let router = tonic::transport::Server::builder()
            .add_service(tenancy_grpc.into_server())
            .add_service(parts.server.clone());
        let server = tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .expect("server");
        });
        let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect_lazy();
        Self {
            addr,
            tenancy: TenancyServiceClient::new(channel.clone()),
            invitations: InvitationServiceClient::new(channel),
            clock,
            parts_sweeper: parts.sweeper.clone(),
            mailer: parts.mailer.clone(),
            mail_dir,
            stop: Some(stop),
            server: Some(server),
            workers,
        }
    }

    /// Stops the workers and the server, as a process shutdown would.
    pub async fn stop(mut self) {
        if let Some(w) = self.workers.take() {
            w.shutdown().await;
        }
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
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
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
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
