//! The Authorizer's decision and its fail-closed ladder over the in-process cache (the embedded
//! mode): each revocation fact maps to its decision, a written fact is seen by the very next
//! check, a repeated check is answered from the caches, a cached fact never answers for another
//! user or organization, and when neither the cache nor the owner (or the remote token service)
//! can answer, the check is `Unavailable`, never allowed.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use lanyard_authz::facts::value;
use lanyard_authz::{Authorizer, Decision, FactKey, Facts, Fallback};
use lanyard_core::cache::{Cache, Versioned};
use lanyard_core::OrganizationId;
use lanyard_proto::authz::v1 as apb;
use lanyard_proto::authz::v1::authorization_service_client::AuthorizationServiceClient;
use lanyard_proto::authz::v1::authorization_service_server::{AuthorizationService, AuthorizationServiceServer};
use support::{audience, fact, incoming, listen, perms, unique_prefix, Harness, Member, StaticKeys};
use tonic::{Request, Response, Status};

#[tokio::test]
async fn another_organization_is_org_mismatch_and_its_own_is_allowed() {
    let h = Harness::new();
    let (m, token) = h.member(&["projects:read"]);
    let asked = perms(&["projects:read", "projects:write"]);
    let other = h.authorizer.check(&token, Some(OrganizationId::new()), &asked).await.expect("a decision");
    assert_eq!(other.token, Decision::OrgMismatch);
    assert_eq!(other.permissions, [Decision::OrgMismatch, Decision::OrgMismatch]);
    assert_eq!(other.principal, None);
    let own = h.authorizer.check(&token, Some(m.org_id), &asked[..1]).await.expect("a decision");
    assert!(own.all_allowed(), "{own:?}");
}

#[tokio::test]
async fn each_permission_gets_its_own_decision_in_the_order_asked() {
    let h = Harness::new();
    let (_, token) = h.member(&["projects:read", "billing:*"]);
    let asked = perms(&["projects:write", "projects:read", "billing:refund", "members:read"]);
    let outcome = h.authorizer.check(&token, None, &asked).await.expect("a decision");
    assert_eq!(outcome.token, Decision::Allowed);
    assert_eq!(
        outcome.permissions,
        [Decision::PermissionMissing, Decision::Allowed, Decision::Allowed, Decision::PermissionMissing]
    );
    assert!(!outcome.all_allowed());
    assert!(outcome.principal.is_some(), "a valid token keeps its principal when a permission is missing");
}

/// Which of a member's facts.
type FactOf = fn(&Member) -> FactKey;

#[tokio::test]
async fn each_revocation_fact_maps_to_its_decision() {
    // (what, which fact, its state at the owner, the decision)
    let cases: [(&str, FactOf, Versioned, Decision); 9] = [
        ("session revoked", Member::session, fact(1, value::SESSION_REVOKED), Decision::SessionRevoked),
        ("organization suspended", Member::org, fact(2, value::ORG_SUSPENDED), Decision::OrgSuspended),
        ("organization deleted", Member::org, fact(2, value::ORG_DELETED), Decision::OrgSuspended),
        ("member removed", Member::membership, fact(4, value::MEMBER_REMOVED), Decision::NotAMember),
        (
            "roles changed since the token",
            Member::membership,
            fact(4, value::MEMBER_ACTIVE),
            Decision::MembershipChanged,
        ),
        ("membership at the token's version", Member::membership, fact(3, value::MEMBER_ACTIVE), Decision::Allowed),
        ("an unknown session", Member::session, fact(1, "something-new"), Decision::SessionRevoked),
        (
            "its SSO connection deleted",
            Member::connection,
            fact(1, value::CONNECTION_DELETED),
            Decision::SessionRevoked,
        ),
        ("its SSO connection unknown", Member::connection, fact(1, "something-new"), Decision::SessionRevoked),
    ];
    for (what, key, state, expected) in cases {
        let h = Harness::new();
        let (m, token) = h.member(&["projects:read"]);
        assert_eq!(m.mv, 3);
        h.source.set(key(&m), state);
        let outcome = h.authorizer.check(&token, None, &perms(&["projects:read", "x:y"])).await.expect("a decision");
        assert_eq!(outcome.token, expected, "{what}");
        if expected != Decision::Allowed {
            assert_eq!(outcome.permissions, [expected, expected], "{what}");
            assert_eq!(outcome.principal, None, "{what}");
        }
    }
}

#[tokio::test]
async fn a_revoked_session_wins_over_every_other_fact() {
    let h = Harness::new();
    let (m, token) = h.member(&["projects:read"]);
    h.source.set(m.session(), fact(1, value::SESSION_REVOKED));
    h.source.set(m.org(), fact(2, value::ORG_SUSPENDED));
    h.source.set(m.membership(), fact(4, value::MEMBER_REMOVED));
    assert_eq!(h.decide(&token).await, Decision::SessionRevoked);
}

#[tokio::test]
async fn a_written_fact_is_seen_by_the_very_next_check_and_an_older_one_never_undoes_it() {
    let h = Harness::new();
    let (m, token) = h.member(&["projects:read"]);
    let facts = h.authorizer.facts();
    assert_eq!(h.decide(&token).await, Decision::Allowed, "facts cached from the owner");

    facts.write(&m.membership(), &fact(m.mv + 1, value::MEMBER_ACTIVE)).await.expect("write");
    assert_eq!(h.decide(&token).await, Decision::MembershipChanged);
    // A slow writer arriving with the token's version does not bring it back.
    facts.write(&m.membership(), &fact(m.mv, value::MEMBER_ACTIVE)).await.expect("write");
    assert_eq!(h.decide(&token).await, Decision::MembershipChanged);

    let (m2, token2) = h.member(&["projects:read"]);
    assert_eq!(h.decide(&token2).await, Decision::Allowed);
    facts.write(&m2.session(), &fact(1, value::SESSION_REVOKED)).await.expect("write");
    assert_eq!(h.decide(&token2).await, Decision::SessionRevoked);

    let (m3, token3) = h.member(&["projects:read"]);
    assert_eq!(h.decide(&token3).await, Decision::Allowed);
    facts.write(&m3.org(), &fact(2, value::ORG_SUSPENDED)).await.expect("write");
    assert_eq!(h.decide(&token3).await, Decision::OrgSuspended);
    facts.write(&m3.org(), &fact(3, value::ORG_ACTIVE)).await.expect("write");
    assert_eq!(h.decide(&token3).await, Decision::Allowed, "reactivated");
}

#[tokio::test]
async fn a_repeated_check_is_answered_from_the_caches() {
    let h = Harness::new();
    let (m, token) = h.member(&["projects:read"]);
    assert_eq!(h.decide(&token).await, Decision::Allowed);
    assert_eq!(h.source.calls(), 4, "session, connection, organization and membership fetched once each");
    let lookups = h.keys.lookups.load(Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(h.decide(&token).await, Decision::Allowed);
    }
    assert_eq!(h.source.calls(), 4, "no fact fetched again");
    assert_eq!(h.keys.lookups.load(Ordering::SeqCst), lookups, "the token is not verified again");

    // A cache that missed a write holds an older membership than the token: the owner is asked.
    let newer = Member { mv: m.mv + 2, ..m.clone() };
    h.source.set(m.membership(), fact(newer.mv, value::MEMBER_ACTIVE));
    assert_eq!(h.decide(&h.signer.sign(&newer.claims())).await, Decision::Allowed);
    assert_eq!(h.source.calls_for(&m.membership()), 2);
    assert_eq!(h.decide(&token).await, Decision::MembershipChanged, "the old token now sees the newer version");
}

#[tokio::test]
async fn an_owner_that_fails_or_hangs_with_nothing_cached_is_unavailable_never_allowed() {
    let h = Harness::new();
    let (_, token) = h.member(&["projects:read"]);
    h.source.fail(true);
    assert!(h.authorizer.check(&token, None, &perms(&["projects:read"])).await.is_err(), "owner down");
    let status = tonic::Status::from(h.authorizer.check(&token, None, &[]).await.expect_err("owner down"));
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(lanyard_core::status::reason_of(&status).as_deref(), Some("AUTHORIZATION_UNAVAILABLE"));

    h.source.fail(false);
    assert_eq!(h.decide(&token).await, Decision::Allowed, "the owner is back");
    h.source.fail(true);
    assert_eq!(h.decide(&token).await, Decision::Allowed, "cached facts answer while the owner is down");

    let (_, fresh) = h.member(&["projects:read"]);
    h.source.hang();
    assert!(h.authorizer.check(&fresh, None, &[]).await.is_err(), "an owner that never answers");
}

#[tokio::test]
async fn facts_cached_for_one_user_or_org_never_answer_for_another() {
    let h = Harness::new();
    let (u, u_token) = h.member(&["projects:read"]);
    assert_eq!(h.decide(&u_token).await, Decision::Allowed, "warm every cache as U in org A");

    // V: same organization, a session the owner knows, no membership.
    let v = u.colleague();
    h.source.set(v.session(), fact(0, value::SESSION_ACTIVE));
    assert_eq!(h.decide(&h.signer.sign(&v.claims())).await, Decision::NotAMember);
    // V with U's session id in the token (a session fact is the session's, whoever carries it).
    let v_in_u_session = lanyard_authz::AccessClaims { sid: u.session_id.to_string(), ..v.claims() };
    assert_eq!(h.decide(&h.signer.sign(&v_in_u_session)).await, Decision::NotAMember);

    // U in other organizations, same user and session: their own organization and membership
    // facts decide.
    let u_in_b = u.in_org(OrganizationId::new());
    assert_eq!(h.decide(&h.signer.sign(&u_in_b.claims())).await, Decision::OrgSuspended, "B unknown: deleted");
    let u_in_c = u.in_org(OrganizationId::new());
    h.source.set(u_in_c.org(), fact(1, value::ORG_ACTIVE));
    assert_eq!(h.decide(&h.signer.sign(&u_in_c.claims())).await, Decision::NotAMember, "no membership in C");

    assert_eq!(h.decide(&u_token).await, Decision::Allowed, "U in A unaffected");
}

/// A stand-in for the token service's `BatchAuthorize`, answering a set decision.
struct RemoteTokenService {
    decision: Arc<Mutex<Decision>>,
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl AuthorizationService for RemoteTokenService {
    async fn authorize(&self, _: Request<apb::AuthorizeRequest>) -> Result<Response<apb::AuthorizeResponse>, Status> {
        Err(Status::unimplemented("only BatchAuthorize"))
    }

    async fn batch_authorize(
        &self,
        request: Request<apb::BatchAuthorizeRequest>,
    ) -> Result<Response<apb::BatchAuthorizeResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        assert!(!request.get_ref().access_token.is_empty());
        let decision = *self.decision.lock().expect("decision");
        Ok(Response::new(apb::BatchAuthorizeResponse { decision: decision as i32, ..Default::default() }))
    }
}

#[tokio::test]
async fn the_remote_fallback_decides_when_the_facts_are_not_cached_and_never_allows_when_unreachable() {
    let decision = Arc::new(Mutex::new(Decision::Allowed));
    let calls = Arc::new(AtomicUsize::new(0));
    let service = RemoteTokenService { decision: decision.clone(), calls: calls.clone() };
    let (listener, addr) = listen().await;
    let router = tonic::transport::Server::builder().add_service(AuthorizationServiceServer::new(service));
    tokio::spawn(router.serve_with_incoming(incoming(listener)));
    let client = AuthorizationServiceClient::connect(format!("http://{addr}")).await.expect("connect");
    let h = Harness::new();
    let facts = Facts::new(Cache::local(&unique_prefix()));
    let remote = Authorizer::new(h.keys.clone(), audience(), facts.clone(), Fallback::Remote(client));
    let (m, token) = h.member(&["projects:read"]);
    let asked = perms(&["projects:read", "projects:write"]);

    let outcome = remote.check(&token, None, &asked).await.expect("a decision");
    assert_eq!(outcome.token, Decision::Allowed);
    assert_eq!(outcome.permissions, [Decision::Allowed, Decision::PermissionMissing], "from the token's roles");
    assert_eq!(outcome.principal.expect("principal").user_id, m.user_id);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    for (answered, expected) in [
        (Decision::NotAMember, Decision::NotAMember),
        (Decision::SessionRevoked, Decision::SessionRevoked),
        (Decision::Unspecified, Decision::TokenInvalid),
    ] {
        *decision.lock().expect("decision") = answered;
        let outcome = remote.check(&token, None, &asked).await.expect("a decision");
        assert_eq!((outcome.token, outcome.principal), (expected, None), "remote said {answered:?}");
    }

    // With every fact cached the token service is not asked.
    let before = calls.load(Ordering::SeqCst);
    for (key, state) in [
        (m.session(), fact(0, value::SESSION_ACTIVE)),
        (m.connection(), fact(0, value::CONNECTION_ACTIVE)),
        (m.org(), fact(1, value::ORG_ACTIVE)),
        (m.membership(), fact(m.mv, value::MEMBER_ACTIVE)),
    ] {
        facts.fill(&key, &state).await.expect("fill");
    }
    let outcome = remote.check(&token, None, &asked[..1]).await.expect("a decision");
    assert!(outcome.all_allowed());
    assert_eq!(calls.load(Ordering::SeqCst), before);

    // A token service that does not answer: unavailable.
    let dead = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
    let unreachable = Authorizer::new(
        StaticKeys::of(&[&h.signer]),
        audience(),
        Facts::new(Cache::local(&unique_prefix())),
        Fallback::Remote(AuthorizationServiceClient::new(dead)),
    );
    assert!(unreachable.check(&token, None, &asked).await.is_err());
}
