//! Signing people in through a fake OpenID provider, for tests that need real access tokens:
//! an organization with an SSO connection to the provider, members added by the operator, and
//! `ExchangeToken` with the provider's ID tokens.

use lanyard_proto::tenancy::v1 as tpb;
use lanyard_proto::token::v1 as pb;
use lanyard_testkit::idp::{FakeIdp, Kind};

use crate::TestApp;

/// The email domain of everyone the provider signs in.
pub const DOMAIN: &str = "acme.test";

/// A fake Okta on loopback (the app must allow http issuers).
pub async fn provider() -> FakeIdp {
    FakeIdp::start(Kind::Okta, DOMAIN).await
}

/// Creates an organization of 500 seats with an SSO connection to `idp`; returns its id.
pub async fn org(app: &TestApp, idp: &FakeIdp) -> String {
    let slug = crate::unique_slug();
    let org = app
        .operator()
        .create_organization(tpb::CreateOrganizationRequest {
            slug: slug.clone(),
            display_name: slug,
            seat_limit: 500,
            allowed_domains: vec![DOMAIN.into()],
            owner_email: format!("owner@{DOMAIN}"),
            ..Default::default()
        })
        .await
        .expect("create organization")
        .into_inner()
        .organization
        .expect("organization")
        .organization_id;
    let verify = tpb::VerifyDomainRequest {
        organization_id: org.clone(),
        domain: DOMAIN.into(),
        method: tpb::DomainVerificationMethod::Operator as i32,
        ..Default::default()
    };
    // The first organization of a test verifies the domain; later ones sign in identities that
    // were linked through it (a domain is verified for one organization only).
    if let Err(status) = app.operator().verify_domain(verify).await {
        assert_eq!(
            lanyard_core::status::reason_of(&status).as_deref(),
            Some("DOMAIN_VERIFIED_ELSEWHERE"),
            "{status:?}"
        );
    }
    app.operator()
        .create_sso_connection(tpb::CreateSsoConnectionRequest {
            organization_id: org.clone(),
            kind: tpb::SsoConnectionKind::Okta as i32,
            issuer: idp.issuer.clone(),
            client_id: idp.client_id.clone(),
            client_secret: "s3cret".into(),
            ..Default::default()
        })
        .await
        .expect("create SSO connection");
    org
}

/// Adds `email` to `org` with `roles` and signs them in there; returns (user id, tokens).
pub async fn member(
    app: &TestApp,
    idp: &FakeIdp,
    org: &str,
    email: &str,
    roles: &[&str],
) -> (String, pb::ExchangeTokenResponse) {
    let member = app.add_member(org, email, roles).await;
    (member.user_id, sign_in(app, idp, org, email).await)
}

/// Signs `email` in to `org`.
pub async fn sign_in(app: &TestApp, idp: &FakeIdp, org: &str, email: &str) -> pb::ExchangeTokenResponse {
    let id_token = idp.id_token(&format!("sub-{email}"), email);
    let grant = pb::IdTokenGrant { id_token, organization_id: org.into(), nonce: None };
    let request = pb::ExchangeTokenRequest {
        grant: Some(pb::exchange_token_request::Grant::IdTokenGrant(grant)),
        ..Default::default()
    };
    app.tokens_with(None).exchange_token(request).await.expect("sign in").into_inner()
}

/// Removes a member (operator).
pub async fn remove(app: &TestApp, org: &str, user: &str) {
    let req = tpb::RemoveMemberRequest { organization_id: org.into(), user_id: user.into(), ..Default::default() };
    app.operator().remove_member(req).await.expect("remove member");
}

/// Creates a custom role granting `permissions` (operator).
pub async fn role(app: &TestApp, org: &str, name: &str, permissions: &[&str]) {
    let req = tpb::CreateRoleRequest {
        organization_id: org.into(),
        name: name.into(),
        description: "test role".into(),
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    };
    app.operator().create_role(req).await.expect("create role");
}
