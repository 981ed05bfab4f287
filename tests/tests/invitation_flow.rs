//! The customer's story across services, through the `lanyard` binary's own wiring: the operator
//! invites the customer's IT admin, the email goes out, the admin signs in with it and becomes the
//! owner. Once with both services in one process (the local tenancy server called directly), once
//! as two processes talking gRPC over a socket; on SQLite and Postgres.

use lanyard::ServiceName;
use lanyard_core::db::Backend;
use lanyard_proto::invitation::v1 as ipb;
use lanyard_proto::tenancy::v1 as pb;
use lanyard_tests::{assert_error, spawn_services, TestApp, OPERATOR_KEY, SERVICE_KEY};
use tonic::Code;

mod all_in_one {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let app = spawn_services(Backend::Sqlite, &[ServiceName::Tenancy, ServiceName::Invitation], |_| {}).await;
        story(&app, &app).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let app = spawn_services(Backend::Postgres, &[ServiceName::Tenancy, ServiceName::Invitation], |_| {}).await;
        story(&app, &app).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_by_a_service_key_are_not_rate_limited() {
    let app = spawn_services(Backend::Sqlite, &[ServiceName::Tenancy, ServiceName::Invitation], |s| {
        s.rate_limit_invitation_per_minute = 20;
    })
    .await;
    let unknown = ipb::PreviewInvitationRequest { token: "A".repeat(43) };
    // The token service previews for every sign-in it handles, all from one address.
    let mut service = app.invitations_with(Some(&format!("Bearer {SERVICE_KEY}")));
    for _ in 0..50 {
        assert_error(service.preview_invitation(unknown.clone()).await, Code::NotFound, "INVITATION_NOT_FOUND");
    }
    // Anyone else is limited per address.
    let mut anonymous = app.invitations_with(None);
    let mut limited = false;
    for _ in 0..50 {
        if let Err(s) = anonymous.preview_invitation(unknown.clone()).await {
            if lanyard_core::status::reason_of(&s).as_deref() == Some("RATE_LIMITED") {
                limited = true;
                break;
            }
        }
    }
    assert!(limited, "50 anonymous previews from one address are rate limited");
}

mod separate_processes {
    use super::*;

    async fn run(backend: Backend) {
        let tenancy = spawn_services(backend, &[ServiceName::Tenancy], |_| {}).await;
        let url = tenancy.endpoint.clone();
        let invitation = spawn_services(backend, &[ServiceName::Invitation], move |s| s.tenancy_url = Some(url)).await;
        story(&tenancy, &invitation).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        run(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        run(Backend::Postgres).await;
    }
}

/// Waits until the mailer has written `n` messages (readiness polling with a bound, not a timing
/// assertion).
async fn wait_for_mail(app: &TestApp, n: usize) -> Vec<String> {
    for _ in 0..400 {
        let tokens = app.mailed_tokens();
        if tokens.len() >= n {
            return tokens;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the mailer did not write {n} message(s) in {}", app.data_dir.display());
}

async fn story(tenancy: &TestApp, invitation: &TestApp) {
    let operator = format!("Bearer {OPERATOR_KEY}");
    let service = format!("Bearer {SERVICE_KEY}");
    let org = tenancy.create_org(2, &["acme.com"]).await;
    let mut invitations = invitation.invitations_with(Some(&operator));
    let created = invitations
        .create_invitation(ipb::CreateInvitationRequest {
            organization_id: org.organization_id.clone(),
            email: "IT@acme.com".into(),
            roles: vec!["owner".into()],
            send_email: true,
            ..Default::default()
        })
        .await
        .expect("CreateInvitation")
        .into_inner();
    assert!(created.invitation_link.is_none(), "the link travels by email only");
    let usage = tenancy.usage(&org.organization_id).await;
    assert_eq!((usage.active, usage.reserved), (0, 1), "the invitation holds a seat");

    let token = wait_for_mail(invitation, 1).await.remove(0);
    let preview = invitation
        .invitations_with(None)
        .preview_invitation(ipb::PreviewInvitationRequest { token: token.clone() })
        .await
        .expect("PreviewInvitation needs no credentials")
        .into_inner();
    assert_eq!(preview.email, "it@acme.com");
    assert_eq!(preview.organization_slug, org.slug);

    // The identity arrives through the organization's connection; tenancy creates its user and
    // links it with the seat claim (the token service's way).
    let connection = tenancy
        .operator()
        .create_sso_connection(pb::CreateSsoConnectionRequest {
            organization_id: org.organization_id.clone(),
            kind: pb::SsoConnectionKind::Okta as i32,
            issuer: "https://acme.okta.com".into(),
            client_id: "acme-client".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .connection
        .unwrap();
    let identity = ipb::VerifiedIdentity {
        user_id: String::new(),
        email: "it@acme.com".into(),
        email_verified: true,
        issuer: "https://acme.okta.com".into(),
        subject: "00u-it".into(),
        connection_id: connection.connection_id.clone(),
        display_name: "IT".into(),
    };
    let mut internal = invitation.invitations_with(Some(&service));
    // The wrong person changes nothing.
    let stranger = ipb::VerifiedIdentity { email: "someone@acme.com".into(), ..identity.clone() };
    assert_error(
        internal
            .accept_invitation(ipb::AcceptInvitationRequest {
                token: token.clone(),
                identity: Some(stranger),
                request_id: String::new(),
            })
            .await,
        Code::PermissionDenied,
        "EMAIL_MISMATCH",
    );
    let accepted = internal
        .accept_invitation(ipb::AcceptInvitationRequest {
            token: token.clone(),
            identity: Some(identity.clone()),
            request_id: String::new(),
        })
        .await
        .expect("AcceptInvitation")
        .into_inner();
    let membership = accepted.membership.unwrap();
    assert_eq!(membership.roles, vec!["owner".to_string()]);
    let member = tenancy
        .operator()
        .get_member(pb::GetMemberRequest {
            organization_id: org.organization_id.clone(),
            email: "it@acme.com".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(member.user_id, membership.user_id, "the invited email's user was created and linked");
    assert_error(
        internal
            .accept_invitation(ipb::AcceptInvitationRequest {
                token,
                identity: Some(identity),
                request_id: String::new(),
            })
            .await,
        Code::FailedPrecondition,
        "INVITATION_ALREADY_ACCEPTED",
    );

    let usage = tenancy.usage(&org.organization_id).await;
    assert_eq!((usage.active, usage.reserved), (1, 0), "the reserved seat became the membership");
    let org_now = tenancy
        .operator()
        .get_organization(pb::GetOrganizationRequest {
            key: Some(pb::get_organization_request::Key::OrganizationId(org.organization_id.clone())),
        })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    assert_eq!(org_now.owner_user_id, membership.user_id);
}
