//! Identity safety, black-box over gRPC with two organizations and two OpenID providers on
//! loopback, on both backends: one customer's admin and identity provider cannot take over users
//! of another organization; domains count for identity only once verified (DNS TXT against a DNS
//! server on loopback, or an operator), for one organization; switching organizations needs the
//! target to accept the session's provider; deleting a connection ends its sessions; and a refused
//! sign-in writes nothing.

use std::sync::Arc;

use lanyard::ServiceName;
use lanyard_core::db::Backend;
use lanyard_proto::authz::v1 as apb;
use lanyard_proto::authz::v1::authorization_service_client::AuthorizationServiceClient;
use lanyard_proto::invitation::v1 as ipb;
use lanyard_proto::tenancy::v1 as tpb;
use lanyard_proto::token::v1 as pb;
use lanyard_testkit::idp::{FakeIdp, Kind};
use lanyard_tests::{assert_error, backend_tests, spawn_services, unique_slug, TestApp};
use serde_json::json;
use tonic::Code;

backend_tests!(cross_tenant_takeover_is_refused);
backend_tests!(a_provider_vouches_only_for_its_organizations_verified_domains);
backend_tests!(google_and_entra_tokens_count_only_for_verified_domains);
backend_tests!(domains_are_verified_by_dns_txt);
backend_tests!(one_domain_is_verified_for_one_organization_under_a_race);
backend_tests!(switching_needs_the_target_to_accept_the_provider);
backend_tests!(deleting_a_connection_ends_its_sessions_at_once);
backend_tests!(an_invitation_links_by_the_invited_email);
backend_tests!(members_are_added_inside_the_domains);

async fn all(backend: Backend) -> TestApp {
    spawn_services(backend, &[ServiceName::Tenancy, ServiceName::Invitation, ServiceName::Token], |s| {
        s.allow_http_issuers = true
    })
    .await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// An organization with `domains` (pending), its owner, and an SSO connection to `idp`.
async fn org(app: &TestApp, domains: &[&str], owner: &str, idp: &FakeIdp) -> String {
    let slug = unique_slug();
    let org = app
        .operator()
        .create_organization(tpb::CreateOrganizationRequest {
            slug: slug.clone(),
            display_name: slug,
            seat_limit: 20,
            allowed_domains: domains.iter().map(|d| d.to_string()).collect(),
            owner_email: owner.into(),
            ..Default::default()
        })
        .await
        .expect("create organization")
        .into_inner()
        .organization
        .expect("organization");
    assert!(
        org.domains.iter().all(|d| d.state == tpb::DomainState::Pending as i32),
        "domains start pending: {:?}",
        org.domains
    );
    connect(app, &org.organization_id, idp).await;
    org.organization_id
}

async fn connect(app: &TestApp, org: &str, idp: &FakeIdp) -> String {
    let kind = match idp.kind {
        Kind::Google => tpb::SsoConnectionKind::GoogleWorkspace,
        Kind::Azure => tpb::SsoConnectionKind::AzureAd,
        Kind::Okta => tpb::SsoConnectionKind::Okta,
    };
    app.operator()
        .create_sso_connection(tpb::CreateSsoConnectionRequest {
            organization_id: org.into(),
            kind: kind as i32,
            issuer: idp.issuer.clone(),
            client_id: idp.client_id.clone(),
            hosted_domains: idp.hosted_domain.iter().cloned().collect(),
            tenant_id: idp.tenant_id.clone(),
            ..Default::default()
        })
        .await
        .expect("create SSO connection")
        .into_inner()
        .connection
        .expect("connection")
        .connection_id
}

async fn verify_by_operator(
    app: &TestApp,
    org: &str,
    domain: &str,
) -> Result<tpb::VerifyDomainResponse, tonic::Status> {
    app.operator()
        .verify_domain(tpb::VerifyDomainRequest {
            organization_id: org.into(),
            domain: domain.into(),
            method: tpb::DomainVerificationMethod::Operator as i32,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn verify_by_dns(
    app: &TestApp,
    auth: &str,
    org: &str,
    domain: &str,
) -> Result<tpb::VerifyDomainResponse, tonic::Status> {
    app.client_with(Some(auth))
        .verify_domain(tpb::VerifyDomainRequest {
            organization_id: org.into(),
            domain: domain.into(),
            method: tpb::DomainVerificationMethod::DnsTxt as i32,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// The challenge of a pending domain (adding it again returns it).
async fn challenge(app: &TestApp, org: &str, domain: &str) -> tpb::DomainChallenge {
    app.operator()
        .add_domain(tpb::AddDomainRequest { organization_id: org.into(), domain: domain.into(), ..Default::default() })
        .await
        .expect("add domain")
        .into_inner()
        .challenge
        .expect("a pending domain has a challenge")
}

async fn exchange(app: &TestApp, id_token: String, org: &str) -> Result<pb::ExchangeTokenResponse, tonic::Status> {
    let grant = pb::IdTokenGrant { id_token, organization_id: org.into(), nonce: None };
    app.tokens_with(None)
        .exchange_token(pb::ExchangeTokenRequest {
            grant: Some(pb::exchange_token_request::Grant::IdTokenGrant(grant)),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn switch(app: &TestApp, refresh_token: &str, org: &str) -> Result<pb::RefreshSessionResponse, tonic::Status> {
    app.tokens_with(None)
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: refresh_token.into(),
            organization_id: Some(org.into()),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn authorize(app: &TestApp, token: &str, permission: &str, org: &str) -> apb::AuthorizeResponse {
    AuthorizationServiceClient::new(app.channel())
        .authorize(apb::AuthorizeRequest {
            access_token: token.into(),
            permission: permission.into(),
            organization_id: Some(org.into()),
        })
        .await
        .expect("Authorize answers")
        .into_inner()
}

async fn audit(app: &TestApp, org: &str, action: &str) -> Vec<tpb::AuditEvent> {
    app.operator()
        .list_audit_events(tpb::ListAuditEventsRequest {
            organization_id: org.into(),
            action: action.into(),
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("audit events")
        .into_inner()
        .events
}

/// Everything the token service stores about sessions, to assert a refusal changed nothing.
async fn session_rows(app: &TestApp) -> Vec<String> {
    use sqlx::Row;
    const SESSIONS: &str =
        "SELECT id || '|' || active_org_id || '|' || COALESCE(CAST(revoked_at AS TEXT), '') FROM {table} ORDER BY id";
    let rows = match app.backend {
        // The token service's own file.
        Backend::Sqlite => {
            let url = format!("sqlite://{}?mode=ro", app.data_dir.join("token.db").display());
            let db = lanyard_core::db::Database::connect(&lanyard_core::db::DatabaseConfig {
                url,
                schema: "token".into(),
                max_connections: 1,
            })
            .await
            .expect("token database");
            sqlx::query(&SESSIONS.replace("{table}", "sessions")).fetch_all(&db.pool).await
        }
        // The token service's schema in the same database.
        Backend::Postgres => sqlx::query(&SESSIONS.replace("{table}", "token.sessions")).fetch_all(&app.db.pool).await,
    };
    rows.expect("sessions").iter().map(|r| r.try_get::<String, _>(0).expect("text")).collect()
}

// ----- the reported takeover -----------------------------------------------------------------

async fn cross_tenant_takeover_is_refused(backend: Backend) {
    let app = all(backend).await;
    let globex_idp = FakeIdp::start(Kind::Okta, "globex.test").await;
    let evil_idp = FakeIdp::start(Kind::Okta, "evil.test").await;

    // 1. globex proves globex.test by DNS; its owner signs in once through globex's provider.
    let globex = org(&app, &["globex.test"], "victim@globex.test", &globex_idp).await;
    let record = challenge(&app, &globex, "globex.test").await;
    app.dns.set_txt(&record.record_name, &[&record.record_value]);
    let verified = verify_by_dns(&app, &bearer(lanyard_tests::OPERATOR_KEY), &globex, "globex.test").await.unwrap();
    assert_eq!(verified.domain.unwrap().state, tpb::DomainState::Verified as i32);
    let victim = exchange(&app, globex_idp.id_token("victim-sub", "victim@globex.test"), &globex)
        .await
        .expect("the victim signs in through globex's provider");
    let victim_id = victim.session.as_ref().unwrap().user_id.clone();

    // The other customer, evil, with its own verified domain and provider; its owner signs in.
    let evil = org(&app, &["evil.test"], "boss@evil.test", &evil_idp).await;
    verify_by_operator(&app, &evil, "evil.test").await.unwrap();
    let boss = exchange(&app, evil_idp.id_token("boss-sub", "boss@evil.test"), &evil).await.expect("boss signs in");
    let boss_auth = bearer(&boss.access_token);
    let before = app.snapshot().await;
    let sessions_before = session_rows(&app).await;
    assert_eq!(sessions_before.len(), 2, "the victim's and the boss's sessions");

    // 2. Claiming globex's domain and adding its owner as a member: refused, with reasons.
    let status = app
        .client_with(Some(&boss_auth))
        .add_domain(tpb::AddDomainRequest {
            organization_id: evil.clone(),
            domain: "globex.test".into(),
            ..Default::default()
        })
        .await;
    assert_error(status, Code::AlreadyExists, "DOMAIN_VERIFIED_ELSEWHERE");
    let status = app
        .client_with(Some(&boss_auth))
        .add_member(tpb::AddMemberRequest {
            organization_id: evil.clone(),
            email: "victim@globex.test".into(),
            ..Default::default()
        })
        .await;
    assert_error(status, Code::PermissionDenied, "EMAIL_DOMAIN_NOT_ALLOWED");
    let status = app
        .client_with(Some(&boss_auth))
        .verify_domain(tpb::VerifyDomainRequest {
            organization_id: evil.clone(),
            domain: "globex.test".into(),
            method: tpb::DomainVerificationMethod::Operator as i32,
            ..Default::default()
        })
        .await;
    assert_eq!(status.expect_err("an owner is no operator").code(), Code::PermissionDenied);

    // 3. Evil's provider asserts the victim's email: it vouches only for evil's verified domains.
    let forged = evil_idp.id_token("attacker", "victim@globex.test");
    assert_error(exchange(&app, forged.clone(), &evil).await, Code::PermissionDenied, "EMAIL_DOMAIN_NOT_VERIFIED");
    assert_error(exchange(&app, forged.clone(), &globex).await, Code::FailedPrecondition, "SSO_CONNECTION_NOT_FOUND");
    assert!(exchange(&app, forged.clone(), "").await.is_err(), "no organization takes the forged identity");
    assert_eq!(app.snapshot().await, before, "refused steps wrote nothing to tenancy");
    assert_eq!(session_rows(&app).await, sessions_before, "refused steps started no session");

    // Even with the victim a member of evil (an operator's waiver), the forged identity is refused.
    app.operator()
        .add_member(tpb::AddMemberRequest {
            organization_id: evil.clone(),
            email: "victim@globex.test".into(),
            waive_domain_check: true,
            ..Default::default()
        })
        .await
        .expect("operator adds with a waiver");
    let before = app.snapshot().await;
    assert_error(exchange(&app, forged.clone(), &evil).await, Code::PermissionDenied, "EMAIL_DOMAIN_NOT_VERIFIED");
    assert_eq!(app.snapshot().await, before);

    // 4. The victim's own session, signed in through globex, cannot be carried into evil, nor can
    // a session signed in through evil's provider be carried into globex.
    assert_error(switch(&app, &victim.refresh_token, &evil).await, Code::PermissionDenied, "REAUTHENTICATION_REQUIRED");
    let still = app
        .tokens_with(None)
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: victim.refresh_token.clone(),
            ..Default::default()
        })
        .await
        .expect("a refused switch leaves the refresh token usable")
        .into_inner();
    assert_eq!(still.session.unwrap().active_organization_id, globex);
    app.operator()
        .add_member(tpb::AddMemberRequest {
            organization_id: globex.clone(),
            email: "boss@evil.test".into(),
            roles: vec!["owner".into()],
            waive_domain_check: true,
            ..Default::default()
        })
        .await
        .expect_err("owner is only given by TransferOwnership");
    app.operator()
        .add_member(tpb::AddMemberRequest {
            organization_id: globex.clone(),
            email: "boss@evil.test".into(),
            roles: vec!["admin".into()],
            waive_domain_check: true,
            ..Default::default()
        })
        .await
        .expect("boss is also a member of globex");
    assert_error(switch(&app, &boss.refresh_token, &globex).await, Code::PermissionDenied, "REAUTHENTICATION_REQUIRED");
    let decision = authorize(&app, &boss.access_token, "members:write", &globex).await;
    assert!(!decision.allowed, "evil's token acts in evil only");

    // The victim's memberships, sessions and identities are as they were.
    let members = app
        .operator()
        .list_user_organizations(tpb::ListUserOrganizationsRequest { user_id: victim_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .organizations;
    let mut orgs: Vec<_> = members.iter().map(|o| o.organization.as_ref().unwrap().organization_id.clone()).collect();
    orgs.sort();
    let mut expected = vec![globex.clone(), evil.clone()];
    expected.sort();
    assert_eq!(orgs, expected, "globex (owner) and evil (added by the operator)");
    let identities = app.count("SELECT COUNT(*) FROM external_identities WHERE user_id = $1", &victim_id).await;
    assert_eq!(identities, 1, "only the victim's own identity is linked to the victim");
    let links = audit(&app, &globex, "identity.linked").await;
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(links[0].details.get("basis").map(String::as_str), Some("verified_domain"));
}

// ----- what a provider may assert ---------------------------------------------------------------

async fn a_provider_vouches_only_for_its_organizations_verified_domains(backend: Backend) {
    let app = all(backend).await;
    let globex_idp = FakeIdp::start(Kind::Okta, "globex.test").await;
    let evil_idp = FakeIdp::start(Kind::Okta, "evil.test").await;
    let globex = org(&app, &["globex.test"], "owner@globex.test", &globex_idp).await;
    verify_by_operator(&app, &globex, "globex.test").await.unwrap();
    let evil = org(&app, &["evil.test", "pending.test"], "boss@evil.test", &evil_idp).await;
    verify_by_operator(&app, &evil, "evil.test").await.unwrap();
    for email in ["x@pending.test", "victim@globex.test"] {
        app.operator()
            .add_member(tpb::AddMemberRequest {
                organization_id: evil.clone(),
                email: email.into(),
                waive_domain_check: true,
                ..Default::default()
            })
            .await
            .expect("member");
    }
    let before = app.snapshot().await;
    let sessions_before = session_rows(&app).await;
    let refused: Vec<(&str, Option<bool>, Code, &str)> = vec![
        // evil's own domain, but still pending.
        ("x@pending.test", Some(true), Code::PermissionDenied, "EMAIL_DOMAIN_NOT_VERIFIED"),
        // another organization's verified domain.
        ("victim@globex.test", Some(true), Code::PermissionDenied, "EMAIL_DOMAIN_NOT_VERIFIED"),
        ("VICTIM@Globex.Test", Some(true), Code::PermissionDenied, "EMAIL_DOMAIN_NOT_VERIFIED"),
        // a trailing dot is no email Lanyard takes: as good as none.
        ("victim@globex.test.", Some(true), Code::PermissionDenied, "EMAIL_NOT_VERIFIED"),
        // look-alikes of a verified domain: nothing matches but the exact name.
        ("victim@globex.test.evil.test", Some(true), Code::PermissionDenied, "EMAIL_DOMAIN_NOT_VERIFIED"),
        ("victim@globex-test.test", Some(true), Code::PermissionDenied, "EMAIL_DOMAIN_NOT_VERIFIED"),
        ("victim@evil.test.globex.test", Some(true), Code::PermissionDenied, "EMAIL_DOMAIN_NOT_VERIFIED"),
        // Unicode look-alike (Cyrillic e) of evil.test: not an email Lanyard takes, so unverified.
        ("boss@\u{0435}vil.test", Some(true), Code::PermissionDenied, "EMAIL_NOT_VERIFIED"),
        // evil's verified domain, but the provider did not verify the email (or said nothing).
        ("new@evil.test", Some(false), Code::PermissionDenied, "EMAIL_NOT_VERIFIED"),
        ("new@evil.test", None, Code::PermissionDenied, "EMAIL_NOT_VERIFIED"),
        // evil's verified domain, verified email, but nobody with it is a member.
        ("nobody@evil.test", Some(true), Code::PermissionDenied, "NOT_A_MEMBER"),
    ];
    for (i, (email, verified, code, reason)) in refused.iter().enumerate() {
        let mut claims = evil_idp.claims(&format!("subject-{i}"), email);
        match verified {
            Some(v) => claims["email_verified"] = json!(v),
            None => {
                claims.as_object_mut().unwrap().remove("email_verified");
            }
        }
        let status = exchange(&app, evil_idp.sign(&claims), &evil).await;
        let status = status.expect_err(email);
        assert_eq!(
            (status.code(), lanyard_core::status::reason_of(&status).as_deref()),
            (*code, Some(*reason)),
            "{email}: {status:?}"
        );
    }
    assert_eq!(app.snapshot().await, before, "no refused exchange wrote a user, a link or an event");
    assert_eq!(session_rows(&app).await, sessions_before);

    // The subject refused while its email was unverified signs in once it is verified, and the
    // user records the verified email; the pending domain, once verified, lets x@ in too.
    let mut claims = evil_idp.claims("subject-8", "new@evil.test");
    claims["email_verified"] = json!(false);
    assert!(exchange(&app, evil_idp.sign(&claims), &evil).await.is_err());
    app.operator()
        .add_member(tpb::AddMemberRequest {
            organization_id: evil.clone(),
            email: "new@evil.test".into(),
            ..Default::default()
        })
        .await
        .expect("new member");
    let signed_in =
        exchange(&app, evil_idp.id_token("subject-8", "new@evil.test"), &evil).await.expect("verified sign-in");
    let member = app
        .operator()
        .get_member(tpb::GetMemberRequest {
            organization_id: evil.clone(),
            user_id: signed_in.session.unwrap().user_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(member.email, "new@evil.test");
    assert_error(
        exchange(&app, evil_idp.id_token("subject-0", "x@pending.test"), &evil).await,
        Code::PermissionDenied,
        "EMAIL_DOMAIN_NOT_VERIFIED",
    );
    verify_by_operator(&app, &evil, "pending.test").await.unwrap();
    exchange(&app, evil_idp.id_token("subject-0", "x@pending.test"), &evil).await.expect("verified now");
    // A returning identity signs in as its user, whatever email it now asserts.
    let again =
        exchange(&app, evil_idp.id_token("subject-0", "renamed@elsewhere.test"), &evil).await.expect("returning");
    let first = exchange(&app, evil_idp.id_token("subject-0", "x@pending.test"), &evil).await.unwrap();
    assert_eq!(again.session.unwrap().user_id, first.session.unwrap().user_id);
}

async fn google_and_entra_tokens_count_only_for_verified_domains(backend: Backend) {
    let app = all(backend).await;
    let google = FakeIdp::start(Kind::Google, "hd.test").await;
    let entra = FakeIdp::start(Kind::Azure, "entra.test").await;
    let acme = org(&app, &["hd.test"], "owner@hd.test", &google).await;
    let contoso = org(&app, &["entra.test"], "owner@entra.test", &entra).await;
    let before = app.snapshot().await;
    // hd is the connection's hosted domain, but acme has not verified it.
    assert_error(
        exchange(&app, google.id_token("g-1", "owner@hd.test"), &acme).await,
        Code::PermissionDenied,
        "EMAIL_DOMAIN_NOT_VERIFIED",
    );
    assert_error(
        exchange(&app, entra.id_token("e-1", "owner@entra.test"), &contoso).await,
        Code::PermissionDenied,
        "EMAIL_DOMAIN_NOT_VERIFIED",
    );
    // tid of another tenant: refused by the verifier.
    let mut claims = entra.claims("e-1", "owner@entra.test");
    claims["tid"] = json!(uuid::Uuid::new_v4().to_string());
    assert_error(exchange(&app, entra.sign(&claims), &contoso).await, Code::Unauthenticated, "ID_TOKEN_INVALID");
    assert_eq!(app.snapshot().await, before);
    verify_by_operator(&app, &acme, "hd.test").await.unwrap();
    verify_by_operator(&app, &contoso, "entra.test").await.unwrap();
    exchange(&app, google.id_token("g-1", "owner@hd.test"), &acme).await.expect("Google, verified domain");
    exchange(&app, entra.id_token("e-1", "owner@entra.test"), &contoso).await.expect("Entra ID, verified domain");
}

// ----- domain verification ------------------------------------------------------------------------

async fn domains_are_verified_by_dns_txt(backend: Backend) {
    let app = all(backend).await;
    let idp = FakeIdp::start(Kind::Okta, "acme.test").await;
    let acme = org(&app, &["acme.test"], "owner@acme.test", &idp).await;
    let owner_verify = |domain: &'static str| {
        let app = &app;
        let acme = acme.clone();
        async move {
            // The owner verifies with its own access token, once it can sign in (operator here).
            verify_by_dns(app, &bearer(lanyard_tests::OPERATOR_KEY), &acme, domain).await
        }
    };
    let record = challenge(&app, &acme, "acme.test").await;
    assert_eq!(record.record_name, "_lanyard-challenge.acme.test");
    assert_eq!(record.record_type, "TXT");
    assert!(
        record.record_value.starts_with("lanyard-domain-verification=") && record.record_value.len() > 60,
        "{record:?}"
    );
    assert_eq!(challenge(&app, &acme, "acme.test").await, record, "adding again returns the same challenge");
    let before = app.snapshot().await;
    // absent
    assert_error(owner_verify("acme.test").await, Code::FailedPrecondition, "DOMAIN_CHALLENGE_MISSING");
    // wrong
    app.dns.set_txt(&record.record_name, &["lanyard-domain-verification=not-the-token", "v=spf1 -all"]);
    assert_error(owner_verify("acme.test").await, Code::FailedPrecondition, "DOMAIN_CHALLENGE_MISMATCH");
    // unknown domain of the organization
    assert_error(owner_verify("other.test").await, Code::NotFound, "DOMAIN_NOT_FOUND");
    // DNS failing
    app.dns.set_servfail(true);
    assert_error(owner_verify("acme.test").await, Code::Unavailable, "DNS_UNAVAILABLE");
    app.dns.set_servfail(false);
    assert_eq!(app.snapshot().await, before, "failed verifications wrote nothing");
    // on a CNAME: the domain owner delegated the record
    app.dns.remove(&record.record_name);
    app.dns.set_cname(&record.record_name, "acme.verify.test");
    app.dns.set_txt("acme.verify.test", &[&record.record_value]);
    let verified = owner_verify("acme.test").await.expect("verified through the CNAME");
    let domain = verified.domain.unwrap();
    assert_eq!((domain.state, domain.verification_method.as_str()), (tpb::DomainState::Verified as i32, "dns_txt"));
    assert!(owner_verify("acme.test").await.is_ok(), "verifying again is a no-op");
    assert_eq!(audit(&app, &acme, "domain.verified").await.len(), 1);

    // A member signs in by the verified domain; the domain removed, new links by it stop.
    app.add_member(&acme, "one@acme.test", &[]).await;
    app.add_member(&acme, "two@acme.test", &[]).await;
    exchange(&app, idp.id_token("one", "one@acme.test"), &acme).await.expect("linked by the verified domain");
    app.operator()
        .remove_domain(tpb::RemoveDomainRequest {
            organization_id: acme.clone(),
            domain: "acme.test".into(),
            ..Default::default()
        })
        .await
        .expect("remove domain");
    assert_error(
        exchange(&app, idp.id_token("two", "two@acme.test"), &acme).await,
        Code::PermissionDenied,
        "EMAIL_DOMAIN_NOT_VERIFIED",
    );
    exchange(&app, idp.id_token("one", "one@acme.test"), &acme).await.expect("a linked identity still signs in");
    // ...and another organization may now verify it.
    let other_idp = FakeIdp::start(Kind::Okta, "acme.test").await;
    let other = org(&app, &["acme.test"], "it@acme.test", &other_idp).await;
    verify_by_operator(&app, &other, "acme.test").await.expect("free to verify again");
    let removed = audit(&app, &acme, "domain.removed").await;
    assert_eq!(removed[0].details.get("state").map(String::as_str), Some("verified"));
}

async fn one_domain_is_verified_for_one_organization_under_a_race(backend: Backend) {
    let app = Arc::new(all(backend).await);
    let idp = FakeIdp::start(Kind::Okta, "race.test").await;
    const CONTENDERS: usize = 6;
    const ROUNDS: usize = 8;
    for round in 0..ROUNDS {
        let domain = format!("race{round}.test");
        let mut orgs = Vec::new();
        for _ in 0..CONTENDERS {
            let o = org(&app, &[&domain], "", &idp).await;
            orgs.push(o);
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(CONTENDERS));
        let mut tasks = Vec::new();
        for o in orgs.clone() {
            let (app, barrier, domain) = (app.clone(), barrier.clone(), domain.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                verify_by_operator(&app, &o, &domain).await
            }));
        }
        let mut won = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => won += 1,
                Err(status) => {
                    assert_eq!(
                        lanyard_core::status::reason_of(&status).as_deref(),
                        Some("DOMAIN_VERIFIED_ELSEWHERE"),
                        "{status:?}"
                    )
                }
            }
        }
        assert_eq!(won, 1, "round {round}: exactly one organization verifies {domain}");
        let rows = app
            .count("SELECT COUNT(*) FROM organization_domains WHERE domain = $1 AND state = 'verified'", &domain)
            .await;
        assert_eq!(rows, 1, "round {round}");
    }
}

// ----- sessions --------------------------------------------------------------------------------

async fn switching_needs_the_target_to_accept_the_provider(backend: Backend) {
    let app = all(backend).await;
    let idp = FakeIdp::start(Kind::Okta, "corp.test").await;
    let other_idp = FakeIdp::start(Kind::Okta, "corp.test").await;
    let a = org(&app, &["corp.test"], "owner@corp.test", &idp).await;
    verify_by_operator(&app, &a, "corp.test").await.unwrap();
    let b = org(&app, &["corp.test"], "", &idp).await; // same provider
    let c = org(&app, &["corp.test"], "", &other_idp).await; // another provider
    for o in [&a, &b, &c] {
        app.add_member(o, "pat@corp.test", &[]).await;
    }
    let pat = exchange(&app, idp.id_token("pat", "pat@corp.test"), &a).await.expect("pat signs in to a");
    let sessions_before = session_rows(&app).await;
    assert_error(switch(&app, &pat.refresh_token, &c).await, Code::PermissionDenied, "REAUTHENTICATION_REQUIRED");
    assert_eq!(session_rows(&app).await, sessions_before, "a refused switch leaves the session as it was");
    let in_b = switch(&app, &pat.refresh_token, &b).await.expect("b accepts the session's provider");
    assert_eq!(in_b.session.as_ref().unwrap().active_organization_id, b);
    assert!(authorize(&app, &in_b.access_token, "organization:read", &b).await.allowed);
    let switched = audit(&app, &b, "session.switched").await;
    assert_eq!(switched.len(), 1, "{switched:?}");
    assert_eq!(switched[0].details.get("from_organization_id"), Some(&a));
    // Into c the person signs in again, through c's own provider (the identity is new there: c
    // has not verified corp.test, so it cannot vouch for the email).
    assert_error(
        exchange(&app, other_idp.id_token("pat", "pat@corp.test"), &c).await,
        Code::PermissionDenied,
        "EMAIL_DOMAIN_NOT_VERIFIED",
    );
}

async fn deleting_a_connection_ends_its_sessions_at_once(backend: Backend) {
    let app = all(backend).await;
    let idp = FakeIdp::start(Kind::Okta, "corp.test").await;
    let spare = FakeIdp::start(Kind::Okta, "corp.test").await;
    let a = org(&app, &["corp.test"], "owner@corp.test", &idp).await;
    verify_by_operator(&app, &a, "corp.test").await.unwrap();
    let spare_connection = connect(&app, &a, &spare).await;
    let owner = exchange(&app, idp.id_token("owner", "owner@corp.test"), &a).await.expect("sign in");
    assert!(authorize(&app, &owner.access_token, "members:read", &a).await.allowed);
    let connections = app
        .operator()
        .list_sso_connections(tpb::ListSsoConnectionsRequest { organization_id: a.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .connections;
    let used = connections.iter().find(|c| c.issuer == idp.issuer).unwrap().connection_id.clone();
    assert_ne!(used, spare_connection);
    app.operator()
        .delete_sso_connection(tpb::DeleteSsoConnectionRequest {
            organization_id: a.clone(),
            connection_id: used,
            ..Default::default()
        })
        .await
        .expect("delete connection");
    let decision = authorize(&app, &owner.access_token, "members:read", &a).await;
    assert!(!decision.allowed);
    assert_eq!(decision.reason, apb::Decision::SessionRevoked as i32);
    let status = app
        .client_with(Some(&bearer(&owner.access_token)))
        .list_members(tpb::ListMembersRequest { organization_id: a.clone(), ..Default::default() })
        .await;
    assert_eq!(status.expect_err("the token no longer acts").code(), Code::Unauthenticated);
    let status = app
        .tokens_with(None)
        .refresh_session(pb::RefreshSessionRequest { refresh_token: owner.refresh_token.clone(), ..Default::default() })
        .await;
    assert_error(status, Code::Unauthenticated, "TOKEN_REVOKED");
    let revoked = audit(&app, &a, "session.revoked").await;
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0].details.get("reason").map(String::as_str), Some("connection_deleted"));
    // The spare connection's sign-ins are unaffected.
    let again = exchange(&app, spare.id_token("owner-2", "owner@corp.test"), &a).await.expect("spare provider");
    assert!(authorize(&app, &again.access_token, "members:read", &a).await.allowed);
}

/// The first invitation token the embedded mailer wrote (readiness polling with a bound, not a
/// timing assertion).
async fn mailed(app: &TestApp) -> String {
    for _ in 0..400 {
        if let Some(token) = app.mailed_tokens().pop() {
            return token;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the mailer wrote nothing in {}", app.data_dir.display());
}

// ----- invitations and members -------------------------------------------------------------------

async fn an_invitation_links_by_the_invited_email(backend: Backend) {
    let app = all(backend).await;
    let idp = FakeIdp::start(Kind::Okta, "newco.test").await;
    // newco.test is pending: no sign-in may link by it, but the emailed link proves the mailbox.
    let newco = org(&app, &["newco.test"], "", &idp).await;
    let invite = |email: &'static str| {
        let app = &app;
        let newco = newco.clone();
        async move {
            app.invitations_with(Some(&bearer(lanyard_tests::OPERATOR_KEY)))
                .create_invitation(ipb::CreateInvitationRequest {
                    organization_id: newco,
                    email: email.into(),
                    roles: vec!["admin".into()],
                    send_email: true,
                    ..Default::default()
                })
                .await
                .expect("invitation")
        }
    };
    invite("admin@newco.test").await;
    let token = mailed(&app).await;
    let accept = |id_token: String, token: String| {
        let app = &app;
        async move {
            let grant = pb::InvitationGrant { invitation_token: token, id_token, nonce: None };
            app.tokens_with(None)
                .exchange_token(pb::ExchangeTokenRequest {
                    grant: Some(pb::exchange_token_request::Grant::InvitationGrant(grant)),
                    ..Default::default()
                })
                .await
        }
    };
    let before = app.snapshot().await;
    // The provider asserts another email: refused, nothing written.
    assert_error(
        accept(idp.id_token("adm", "someone@newco.test"), token.clone()).await,
        Code::PermissionDenied,
        "EMAIL_MISMATCH",
    );
    assert_eq!(app.snapshot().await, before, "a refused acceptance writes no user and no link");
    let accepted = accept(idp.id_token("adm", "admin@newco.test"), token.clone()).await.expect("accepted").into_inner();
    let user = accepted.session.unwrap().user_id;
    let links = audit(&app, &newco, "identity.linked").await;
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].details.get("basis").map(String::as_str), Some("invitation"));
    assert_eq!(links[0].target, format!("user:{user}"));
    // The returning identity signs in without any invitation; a colleague's does not link by email.
    exchange(&app, idp.id_token("adm", "admin@newco.test"), &newco).await.expect("returning identity");
    app.add_member(&newco, "peer@newco.test", &[]).await;
    assert_error(
        exchange(&app, idp.id_token("peer", "peer@newco.test"), &newco).await,
        Code::PermissionDenied,
        "EMAIL_DOMAIN_NOT_VERIFIED",
    );
    // A replayed invitation changes nothing.
    let before = app.snapshot().await;
    assert!(accept(idp.id_token("adm", "admin@newco.test"), token).await.is_err());
    assert_eq!(app.snapshot().await, before);
}

async fn members_are_added_inside_the_domains(backend: Backend) {
    let app = all(backend).await;
    let idp = FakeIdp::start(Kind::Okta, "acme.test").await;
    let acme = org(&app, &["acme.test"], "owner@acme.test", &idp).await;
    verify_by_operator(&app, &acme, "acme.test").await.unwrap();
    let owner = exchange(&app, idp.id_token("owner", "owner@acme.test"), &acme).await.expect("owner");
    let before = app.snapshot().await;
    for email in ["a@acme.test.evil.io", "a@acme-test.io", "a@sub.acme.test", "a@acmetest", "a@evil.io"] {
        for auth in [bearer(lanyard_tests::OPERATOR_KEY), bearer(&owner.access_token)] {
            let status = app
                .client_with(Some(&auth))
                .add_member(tpb::AddMemberRequest {
                    organization_id: acme.clone(),
                    email: email.into(),
                    ..Default::default()
                })
                .await;
            let status = status.expect_err(email);
            assert!(
                matches!(
                    lanyard_core::status::reason_of(&status).as_deref(),
                    Some("EMAIL_DOMAIN_NOT_ALLOWED" | "INVALID_ARGUMENT")
                ),
                "{email}: {status:?}"
            );
        }
    }
    let status = app
        .client_with(Some(&bearer(&owner.access_token)))
        .add_member(tpb::AddMemberRequest {
            organization_id: acme.clone(),
            email: "contractor@evil.io".into(),
            waive_domain_check: true,
            ..Default::default()
        })
        .await;
    assert_eq!(status.expect_err("the waiver is the operator's").code(), Code::PermissionDenied);
    assert_eq!(app.snapshot().await, before, "refused additions wrote nothing");
    app.operator()
        .add_member(tpb::AddMemberRequest {
            organization_id: acme.clone(),
            email: "contractor@evil.io".into(),
            waive_domain_check: true,
            ..Default::default()
        })
        .await
        .expect("an operator's waiver");
}
