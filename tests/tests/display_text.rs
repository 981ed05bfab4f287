//! Text that reaches people, black-box through the `lanyard` binary's wiring on both backends:
//! organization names that would display as something else (bidi overrides, zero-width and
//! separator characters) are refused and write nothing, and a name an identity provider sends
//! with a line separator never reaches an invitation email's Subject.

use std::time::Duration;

use lanyard::ServiceName;
use lanyard_core::db::Backend;
use lanyard_proto::invitation::v1 as ipb;
use lanyard_proto::tenancy::v1 as tpb;
use lanyard_proto::token::v1 as pb;
use lanyard_testkit::idp::{FakeIdp, Kind};
use lanyard_tests::{assert_error, backend_tests, spawn_services, unique_slug, TestApp};
use serde_json::json;
use tonic::Code;

backend_tests!(a_bidi_override_organization_name_is_refused_and_nothing_written);
backend_tests!(an_identity_provider_name_with_a_line_separator_does_not_reach_a_subject);

const SPOOFS: [&str; 5] = [
    "Acme\u{202E}exe.pdf",
    "Acme\u{2028}Urgent: wire transfer",
    "Acme\u{2029}Bank",
    "Ac\u{200B}me",
    "Acme\u{2066}Bank\u{2069}",
];

async fn a_bidi_override_organization_name_is_refused_and_nothing_written(backend: Backend) {
    let app = spawn_services(backend, &[ServiceName::Tenancy], |_| {}).await;
    let existing = app.create_org(5, &["acme.com"]).await;
    let before = app.snapshot().await;
    for name in SPOOFS {
        let created = app
            .operator()
            .create_organization(tpb::CreateOrganizationRequest {
                slug: unique_slug(),
                display_name: name.into(),
                seat_limit: 5,
                ..Default::default()
            })
            .await;
        assert_error(created, Code::InvalidArgument, "INVALID_ARGUMENT");
        let updated = app
            .operator()
            .update_organization(tpb::UpdateOrganizationRequest {
                organization: Some(tpb::Organization {
                    organization_id: existing.organization_id.clone(),
                    display_name: name.into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["display_name".into()] }),
                request_id: String::new(),
            })
            .await;
        assert_error(updated, Code::InvalidArgument, "INVALID_ARGUMENT");
    }
    assert_eq!(app.snapshot().await, before, "a refused name writes nothing");
}

/// The `.eml` files the embedded mailer wrote, waiting (boundedly) until there are `n`.
async fn emails(app: &TestApp, n: usize) -> Vec<String> {
    for _ in 0..400 {
        let dir = app.data_dir.join("mail");
        let files: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().filter_map(|e| std::fs::read_to_string(e.path()).ok()).collect())
            .unwrap_or_default();
        if files.len() >= n {
            return files;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the mailer wrote fewer than {n} emails");
}

async fn an_identity_provider_name_with_a_line_separator_does_not_reach_a_subject(backend: Backend) {
    let app = spawn_services(backend, &[ServiceName::Tenancy, ServiceName::Invitation, ServiceName::Token], |s| {
        s.allow_http_issuers = true
    })
    .await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let org = app
        .operator()
        .create_organization(tpb::CreateOrganizationRequest {
            slug: unique_slug(),
            display_name: "Acme".into(),
            seat_limit: 5,
            allowed_domains: vec!["acme.com".into()],
            owner_email: "it@acme.com".into(),
            ..Default::default()
        })
        .await
        .expect("create organization")
        .into_inner()
        .organization
        .expect("organization")
        .organization_id;
    app.operator()
        .verify_domain(tpb::VerifyDomainRequest {
            organization_id: org.clone(),
            domain: "acme.com".into(),
            method: tpb::DomainVerificationMethod::Operator as i32,
            ..Default::default()
        })
        .await
        .expect("verify domain");
    app.operator()
        .create_sso_connection(tpb::CreateSsoConnectionRequest {
            organization_id: org.clone(),
            kind: tpb::SsoConnectionKind::GoogleWorkspace as i32,
            issuer: google.issuer.clone(),
            client_id: google.client_id.clone(),
            hosted_domains: vec!["acme.com".into()],
            ..Default::default()
        })
        .await
        .expect("create SSO connection");

    // The inviter's provider says their name is two lines, the second one a fake header.
    let mut claims = google.claims("g-it", "it@acme.com");
    claims["name"] = json!("Mallory\u{2028}Subject: Wire the money today\u{202E}");
    let signed_in = app
        .tokens_with(None)
        .exchange_token(pb::ExchangeTokenRequest {
            grant: Some(pb::exchange_token_request::Grant::IdTokenGrant(pb::IdTokenGrant {
                id_token: google.sign(&claims),
                organization_id: org.clone(),
                nonce: None,
            })),
            ..Default::default()
        })
        .await
        .expect("the owner signs in")
        .into_inner();
    let member = app
        .operator()
        .get_member(tpb::GetMemberRequest {
            organization_id: org.clone(),
            user_id: signed_in.user_id.clone(),
            ..Default::default()
        })
        .await
        .expect("get member")
        .into_inner()
        .member
        .expect("member");
    assert!(!member.display_name.contains(['\u{2028}', '\u{202E}']), "{:?}", member.display_name);

    app.invitations_with(Some(&format!("Bearer {}", signed_in.access_token)))
        .create_invitation(ipb::CreateInvitationRequest {
            organization_id: org.clone(),
            email: "bob@acme.com".into(),
            send_email: true,
            ..Default::default()
        })
        .await
        .expect("the owner invites bob");
    let mail = emails(&app, 1).await.remove(0);
    let subject: String = mail
        .lines()
        .skip_while(|l| !l.starts_with("Subject:"))
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with([' ', '\t']))
        .map(|(_, l)| l)
        .collect();
    assert_eq!(subject, "Subject: Invitation to join \"Acme\"", "{mail}");
    for hidden in ["\u{2028}", "=E2=80=A8", "\u{202E}", "=E2=80=AE"] {
        assert!(!mail.contains(hidden), "{hidden:?} reached the email: {mail}");
    }
    assert_eq!(mail.matches("Subject:").count(), 1, "one Subject header and no injected one: {mail}");
}
