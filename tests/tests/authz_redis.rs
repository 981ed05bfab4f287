//! The authorization fast path across processes sharing Redis: two token services (A runs all
//! three services; B runs only the token service and reaches tenancy over gRPC) on one Postgres
//! database and one Redis. Every test is named `redis::<name>::postgres`: it needs both servers.
//!
//! - A removal, a role change, a revoked session through A: the very next Authorize on B denies,
//!   for many rounds, with Authorize calls in flight on B during the change (every call that
//!   started after the change returned is denied).
//! - Redis cut mid-run (a TCP proxy in front of it): revoked stays denied, valid is allowed via the
//!   owners; Redis and tenancy both cut: UNAVAILABLE, zero allows. Redis flushed: same decisions,
//!   facts rebuilt.
//! - Cache keys: warming as user U in org X never answers for user V or org Y.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lanyard::ServiceName;
use lanyard_example_projects::pb::ListProjectsRequest;
use lanyard_proto::authz::v1 as apb;
use lanyard_proto::authz::v1::authorization_service_client::AuthorizationServiceClient;
use lanyard_proto::authz::v1::Decision;
use lanyard_proto::tenancy::v1 as tpb;
use lanyard_proto::token::v1 as pb;
use lanyard_testkit::idp::FakeIdp;
use lanyard_tests::projects::{with_token, ProjectsApp};
use lanyard_tests::{redis_url, spawn_services, sso, SharedDatabase, TcpProxy, TestApp};
use tonic::transport::Channel;

/// The Redis database these tests use (one nobody else flushes).
const REDIS_DB: u8 = 7;

macro_rules! redis_postgres_tests {
    ($($name:ident),* $(,)?) => {
        mod redis {
            $(
                mod $name {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn postgres() {
                        super::super::$name().await
                    }
                }
            )*
        }
    };
}

redis_postgres_tests!(
    removal_is_immediate_across_processes,
    role_change_is_immediate_across_processes,
    revoked_session_is_immediate_across_processes,
    redis_down_falls_back_to_the_owners_and_never_allows_on_error,
    flushed_redis_is_rebuilt_with_the_same_decisions,
    cached_facts_never_answer_for_another_user_or_org,
    example_service_on_redis_sees_revocations_at_once,
);

struct Cluster {
    a: TestApp,
    b: TestApp,
    idp: FakeIdp,
    redis_proxy: TcpProxy,
    tenancy_proxy: TcpProxy,
    redis_db_url: String,
    prefix: String,
    _db: SharedDatabase,
}

fn redis_host_port() -> String {
    let url = redis_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or("127.0.0.1:6379").to_owned()
}

impl Cluster {
    async fn start() -> Self {
        let db = SharedDatabase::create().await;
        let redis_proxy = TcpProxy::start(redis_host_port()).await;
        let redis_db_url = format!("redis://{}/{REDIS_DB}", redis_proxy.addr);
        let prefix = format!("lanyard-test-{}", uuid::Uuid::new_v4().simple());
        let (url, rurl, pfx) = (db.url.clone(), redis_db_url.clone(), prefix.clone());
        let a = spawn_services(
            lanyard_core::db::Backend::Sqlite,
            &[ServiceName::Tenancy, ServiceName::Invitation, ServiceName::Token],
            |s| {
                s.database_url = Some(url.clone().into());
                s.redis_url = Some(rurl.clone().into());
                s.redis_key_prefix = pfx.clone();
                s.allow_http_issuers = true;
            },
        )
        .await;
        let tenancy_proxy = TcpProxy::start(a.endpoint.trim_start_matches("http://").to_owned()).await;
        let tenancy_url = format!("http://{}", tenancy_proxy.addr);
        let b = spawn_services(lanyard_core::db::Backend::Sqlite, &[ServiceName::Token], |s| {
            s.database_url = Some(url.into());
            s.redis_url = Some(rurl.into());
            s.redis_key_prefix = pfx;
            s.allow_http_issuers = true;
            s.tenancy_url = Some(tenancy_url);
        })
        .await;
        let idp = sso::provider().await;
        let cluster = Self { a, b, idp, redis_proxy, tenancy_proxy, redis_db_url, prefix, _db: db };
        cluster.wait_subscribed().await;
        cluster
    }

    /// Both processes' subscriptions are up once an invalidation is acknowledged by two processes.
    async fn wait_subscribed(&self) {
        let client = ::redis::Client::open(redis_url_db()).expect("redis client");
        let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
        for _ in 0..200 {
            let receivers: i64 = ::redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(format!("{}:authz:invalidate", self.prefix))
                .query_async::<(String, i64)>(&mut conn)
                .await
                .expect("PUBSUB NUMSUB")
                .1;
            if receivers >= 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the two processes never subscribed");
    }

    fn authz(app: &TestApp) -> AuthorizationServiceClient<Channel> {
        AuthorizationServiceClient::new(app.channel())
    }

    async fn org(&self) -> String {
        sso::org(&self.a, &self.idp).await
    }

    async fn member(&self, org: &str, email: &str, roles: &[&str]) -> (String, pb::ExchangeTokenResponse) {
        sso::member(&self.a, &self.idp, org, email, roles).await
    }

    async fn sign_in(&self, org: &str, email: &str) -> pb::ExchangeTokenResponse {
        sso::sign_in(&self.a, &self.idp, org, email).await
    }

    async fn remove(&self, org: &str, user: &str) {
        sso::remove(&self.a, org, user).await
    }
}

fn redis_url_db() -> String {
    format!("redis://{}/{REDIS_DB}", redis_host_port())
}

async fn authorize(
    app: &TestApp,
    token: &str,
    permission: &str,
    org: Option<&str>,
) -> Result<apb::AuthorizeResponse, tonic::Status> {
    let req = apb::AuthorizeRequest {
        access_token: token.into(),
        permission: permission.into(),
        organization_id: org.map(str::to_owned),
    };
    Cluster::authz(app).authorize(req).await.map(tonic::Response::into_inner)
}

async fn decision(app: &TestApp, token: &str, permission: &str) -> Decision {
    let r = authorize(app, token, permission, None).await.expect("Authorize answers");
    assert_eq!(r.allowed, r.reason == Decision::Allowed as i32);
    Decision::try_from(r.reason).expect("a decision")
}

const ROUNDS: usize = 12;
const IN_FLIGHT: usize = 8;

/// Runs `change` (through A) while IN_FLIGHT tasks call Authorize on B in a loop; asserts the
/// very next Authorize on B after the change returned is `expected`, and that no call that started
/// after the change returned was allowed.
async fn change_under_load<F, Fut>(c: &Cluster, token: &str, permission: &str, expected: Decision, change: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    assert_eq!(decision(&c.b, token, permission).await, Decision::Allowed, "warm: allowed before the change");
    let changed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let late_allows = Arc::new(AtomicUsize::new(0));
    let late_calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(IN_FLIGHT + 1));
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (client, token, permission) = (Cluster::authz(&c.b), token.to_owned(), permission.to_owned());
        let (changed, stop, late_allows, late_calls, barrier) =
            (changed.clone(), stop.clone(), late_allows.clone(), late_calls.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            while !stop.load(Ordering::SeqCst) {
                let started_after = changed.load(Ordering::SeqCst);
                let req = apb::AuthorizeRequest {
                    access_token: token.clone(),
                    permission: permission.clone(),
                    organization_id: None,
                };
                let r = client.clone().authorize(req).await.expect("Authorize answers").into_inner();
                if started_after {
                    late_calls.fetch_add(1, Ordering::SeqCst);
                    if r.allowed {
                        late_allows.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    barrier.wait().await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    change().await;
    changed.store(true, Ordering::SeqCst);
    assert_eq!(decision(&c.b, token, permission).await, expected, "the very next Authorize on B");
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("authorize task");
    }
    assert!(late_calls.load(Ordering::SeqCst) > 0, "calls were in flight after the change");
    assert_eq!(late_allows.load(Ordering::SeqCst), 0, "an Authorize that started after the change was allowed");
    assert_eq!(decision(&c.a, token, permission).await, expected, "A agrees");
}

async fn removal_is_immediate_across_processes() {
    let c = Cluster::start().await;
    let org = c.org().await;
    for round in 0..ROUNDS {
        let (user, session) = c.member(&org, &format!("removed-{round}@acme.test"), &["member"]).await;
        change_under_load(&c, &session.access_token, "organization:read", Decision::NotAMember, || {
            c.remove(&org, &user)
        })
        .await;
    }
}

async fn role_change_is_immediate_across_processes() {
    let c = Cluster::start().await;
    let org = c.org().await;
    for round in 0..ROUNDS {
        let (user, session) = c.member(&org, &format!("demoted-{round}@acme.test"), &["admin"]).await;
        let demote = || async {
            let req = tpb::UpdateMemberRolesRequest {
                organization_id: org.clone(),
                user_id: user.clone(),
                roles: vec!["member".into()],
                ..Default::default()
            };
            c.a.operator().update_member_roles(req).await.expect("update roles");
        };
        change_under_load(&c, &session.access_token, "members:write", Decision::MembershipChanged, demote).await;
        // A fresh token carries the new roles: the old permission is gone, reading still works.
        let fresh = c.sign_in(&org, &format!("demoted-{round}@acme.test")).await;
        assert_eq!(decision(&c.b, &fresh.access_token, "members:write").await, Decision::PermissionMissing);
        assert_eq!(decision(&c.b, &fresh.access_token, "organization:read").await, Decision::Allowed);
    }
}

async fn revoked_session_is_immediate_across_processes() {
    let c = Cluster::start().await;
    let org = c.org().await;
    for round in 0..ROUNDS {
        let (_, session) = c.member(&org, &format!("signed-out-{round}@acme.test"), &["member"]).await;
        let other = c.sign_in(&org, &format!("signed-out-{round}@acme.test")).await;
        let session_id = session.session.as_ref().expect("session").session_id.clone();
        let revoke = || async {
            let req = pb::RevokeSessionRequest { session_id: session_id.clone(), ..Default::default() };
            c.a.tokens_with(Some(&format!("Bearer {}", lanyard_tests::OPERATOR_KEY)))
                .revoke_session(req)
                .await
                .expect("revoke session");
        };
        change_under_load(&c, &session.access_token, "organization:read", Decision::SessionRevoked, revoke).await;
        // The same user's other session is untouched.
        assert_eq!(decision(&c.b, &other.access_token, "organization:read").await, Decision::Allowed);
    }
}

async fn redis_down_falls_back_to_the_owners_and_never_allows_on_error() {
    let c = Cluster::start().await;
    let org = c.org().await;
    let (_, valid) = c.member(&org, "stays@acme.test", &["member"]).await;
    let (removed_user, removed) = c.member(&org, "leaves@acme.test", &["member"]).await;
    for app in [&c.a, &c.b] {
        assert_eq!(decision(app, &valid.access_token, "organization:read").await, Decision::Allowed);
        assert_eq!(decision(app, &removed.access_token, "organization:read").await, Decision::Allowed);
    }

    // Redis goes away; the removal cannot reach it and still takes effect everywhere.
    c.redis_proxy.cut();
    c.remove(&org, &removed_user).await;
    for _ in 0..20 {
        for app in [&c.a, &c.b] {
            assert_eq!(decision(app, &removed.access_token, "organization:read").await, Decision::NotAMember);
            assert_eq!(decision(app, &valid.access_token, "organization:read").await, Decision::Allowed);
        }
    }

    // Tenancy unreachable from B as well: B cannot decide, and says so; it never allows.
    c.tenancy_proxy.cut();
    for _ in 0..20 {
        for token in [&valid.access_token, &removed.access_token] {
            let status = authorize(&c.b, token, "organization:read", None).await.expect_err("no decision possible");
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert_eq!(lanyard_core::status::reason_of(&status).as_deref(), Some("AUTHORIZATION_UNAVAILABLE"));
        }
    }

    // Both back: decisions as before, from Redis again (the removal that Redis missed was
    // written when the writer's subscription came back).
    c.tenancy_proxy.restore();
    c.redis_proxy.restore();
    c.wait_subscribed().await;
    for app in [&c.a, &c.b] {
        assert_eq!(decision(app, &removed.access_token, "organization:read").await, Decision::NotAMember);
        assert_eq!(decision(app, &valid.access_token, "organization:read").await, Decision::Allowed);
    }
}

async fn flushed_redis_is_rebuilt_with_the_same_decisions() {
    let c = Cluster::start().await;
    let org = c.org().await;
    let (valid_user, valid) = c.member(&org, "stays@acme.test", &["member"]).await;
    let (removed_user, removed) = c.member(&org, "leaves@acme.test", &["member"]).await;
    c.remove(&org, &removed_user).await;
    for app in [&c.a, &c.b] {
        assert_eq!(decision(app, &valid.access_token, "organization:read").await, Decision::Allowed);
        assert_eq!(decision(app, &removed.access_token, "organization:read").await, Decision::NotAMember);
    }
    let client = ::redis::Client::open(c.redis_db_url.replace(&c.redis_proxy.addr.to_string(), &redis_host_port()))
        .expect("redis client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
    let keys = |conn: &mut ::redis::aio::MultiplexedConnection| {
        let pattern = format!("{}:authz:*", c.prefix);
        let mut conn = conn.clone();
        async move { ::redis::cmd("KEYS").arg(pattern).query_async::<Vec<String>>(&mut conn).await.expect("KEYS") }
    };
    assert!(!keys(&mut conn).await.is_empty(), "facts are in Redis");
    // A Redis restart: every connection drops and the data is gone.
    c.redis_proxy.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ::redis::cmd("FLUSHDB").query_async::<()>(&mut conn).await.expect("FLUSHDB");
    assert!(keys(&mut conn).await.is_empty());
    c.redis_proxy.restore();
    c.wait_subscribed().await;
    for _ in 0..5 {
        for app in [&c.a, &c.b] {
            assert_eq!(decision(app, &valid.access_token, "organization:read").await, Decision::Allowed);
            assert_eq!(decision(app, &removed.access_token, "organization:read").await, Decision::NotAMember);
        }
    }
    let found = keys(&mut conn).await;
    assert!(found.iter().any(|k| k.contains(":authz:mv:")), "memberships rebuilt: {found:?}");
    assert!(found.iter().any(|k| k.contains(":authz:session:")), "sessions rebuilt: {found:?}");
    assert!(found.iter().any(|k| k.contains(":authz:org:")), "organizations rebuilt: {found:?}");
    // A change after the flush still reaches everyone at once.
    c.remove(&org, &valid_user).await;
    for app in [&c.a, &c.b] {
        assert_eq!(decision(app, &valid.access_token, "organization:read").await, Decision::NotAMember);
    }
}

async fn cached_facts_never_answer_for_another_user_or_org() {
    let c = Cluster::start().await;
    let (x, y) = (c.org().await, c.org().await);
    let (u, u_in_x) = c.member(&x, "u@acme.test", &["admin"]).await;
    let (_, v_in_x) = c.member(&x, "v@acme.test", &["member"]).await;
    let (_, u_in_y) = c.member(&y, "u@acme.test", &["member"]).await;
    // Warm every cache as U in X.
    for app in [&c.a, &c.b] {
        for _ in 0..3 {
            assert_eq!(decision(app, &u_in_x.access_token, "members:write").await, Decision::Allowed);
        }
    }
    for app in [&c.a, &c.b] {
        // V in X gets V's own roles, not U's.
        let r = authorize(app, &v_in_x.access_token, "members:write", None).await.expect("answers");
        assert_eq!(Decision::try_from(r.reason), Ok(Decision::PermissionMissing));
        assert_ne!(r.principal.as_ref().expect("principal").user_id, u);
        // U in Y has Y's roles; U's X token does not act in Y.
        assert_eq!(decision(app, &u_in_y.access_token, "members:write").await, Decision::PermissionMissing);
        let r = authorize(app, &u_in_x.access_token, "organization:read", Some(&y)).await.expect("answers");
        assert_eq!(Decision::try_from(r.reason), Ok(Decision::OrgMismatch));
        assert!(r.principal.is_none());
    }
    // Removing U from X leaves U in Y and V in X alone.
    c.remove(&x, &u).await;
    for app in [&c.a, &c.b] {
        assert_eq!(decision(app, &u_in_x.access_token, "organization:read").await, Decision::NotAMember);
        assert_eq!(decision(app, &u_in_y.access_token, "organization:read").await, Decision::Allowed);
        assert_eq!(decision(app, &v_in_x.access_token, "organization:read").await, Decision::Allowed);
    }
}

async fn example_service_on_redis_sees_revocations_at_once() {
    let c = Cluster::start().await;
    let org = c.org().await;
    sso::role(&c.a, &org, "viewer", &["projects:read"]).await;
    let cache = lanyard_core::cache::Cache::redis(&c.redis_db_url, &c.prefix).await.expect("redis");
    // Its fallback is B's token service.
    let projects = ProjectsApp::start(&c.a, cache, &c.b.endpoint).await;
    for _ in 0..200 {
        if projects.facts.subscribed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(projects.facts.subscribed(), "the example subscribed to invalidations");
    let mut client = projects.client();
    let list = |token: &str| with_token(ListProjectsRequest {}, Some(token));
    for round in 0..ROUNDS {
        let (user, viewer) = c.member(&org, &format!("viewer-{round}@acme.test"), &["viewer"]).await;
        for _ in 0..3 {
            client.list_projects(list(&viewer.access_token)).await.expect("a viewer lists");
        }
        c.remove(&org, &user).await;
        let status =
            client.list_projects(list(&viewer.access_token)).await.expect_err("removed: the next call is refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(lanyard_core::status::reason_of(&status).as_deref(), Some("NOT_A_MEMBER"));
    }
}
