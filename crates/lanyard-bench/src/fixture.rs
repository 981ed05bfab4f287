//! The system under test: tenancy, invitation and token on one loopback tonic server over fresh
//! SQLite files, a fake Google Workspace, and an organization whose members have all signed in
//! through `ExchangeToken`, each holding its own access token. Revocation facts live in Redis
//! (as in production) when one answers at the URL given, else in the in-process cache of the
//! embedded default.

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use lanyard_authz::Facts;
use lanyard_core::cache::Cache;
use lanyard_proto::tenancy::v1 as tpb;
use lanyard_testkit::app::{op, Backend, TestApp, TestDb};
use lanyard_testkit::idp::{FakeIdp, Kind};
use tokio::sync::watch;

/// The email domain of the organization and of its identity provider.
const DOMAIN: &str = "acme.com";
/// A custom role that grants exactly the permission the benchmark checks.
const ROLE: &str = "directory-reader";
/// How many setup calls are in flight at once: enough to overlap round trips, few enough not to
/// queue on SQLite's single writer.
const SETUP_CONCURRENCY: usize = 8;

/// Where the revocation facts live.
#[derive(Clone, Debug)]
pub enum FactStore {
    /// Redis at `url`, every key under `prefix` (unique to the run).
    Redis { url: String, prefix: String },
    /// The in-process cache of the embedded default (no Redis answered).
    Embedded,
}

impl FactStore {
    /// A cache on this store: a new connection to Redis, or `None` for the embedded default
    /// (whose cache exists once per process, in the token service's [`Facts`]).
    pub async fn connect(&self) -> Option<Cache> {
        match self {
            Self::Redis { url, prefix } => Some(Cache::redis(url, prefix).await.expect("Redis answered a moment ago")),
            Self::Embedded => None,
        }
    }

    /// How the report names it.
    pub fn describe(&self) -> String {
        match self {
            Self::Redis { url, prefix } => format!("Redis at {url}, keys under {prefix}:"),
            Self::Embedded => "the in-process cache of the embedded default".into(),
        }
    }
}

/// Facts subscribed to their invalidation channel until dropped.
pub struct Subscribed {
    pub facts: Facts,
    _stop: watch::Sender<bool>,
}

impl Subscribed {
    /// Subscribes `facts` and waits until its near cache is trusted (at once for the in-process
    /// cache, which has no channel).
    pub async fn start(facts: Facts) -> Self {
        let (stop, stopped) = watch::channel(false);
        facts.subscribe(stopped);
        if facts.cache().redis_client().is_some() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !facts.subscribed() {
                assert!(Instant::now() < deadline, "the invalidation subscription did not come up within 10 s");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Self { facts, _stop: stop }
    }
}

/// A running Lanyard with signed-in members.
pub struct Fixture {
    /// The three services; their gRPC address is `app.addr`, the JWKS is at `app.http_addr`.
    pub app: TestApp,
    /// The identity provider the organization's SSO connection trusts.
    pub idp: FakeIdp,
    /// The organization every member belongs to.
    pub organization_id: String,
    /// One access token per member, all distinct and valid for `permission`.
    pub access_tokens: Vec<String>,
    /// The members' user ids, in the order of `access_tokens`.
    pub user_ids: Vec<String>,
    /// Where the revocation facts live.
    pub store: FactStore,
    /// The token service's (and tenancy's) facts.
    pub facts: Subscribed,
    /// How long adding the members took (AddMember, operator).
    pub add_members: Duration,
    /// How long signing them all in took (ExchangeToken with an ID token).
    pub sign_ins: Duration,
    // Dropped last: the server must stop before its database directory goes.
    _db: TestDb,
}

impl Fixture {
    /// Starts Lanyard with its facts in Redis at `redis_url` (or in-process when it does not
    /// answer) and signs `members` members in; each may `permission` in the organization.
    pub async fn start(members: usize, permission: &str, redis_url: &str) -> Self {
        let (store, cache) = fact_store(redis_url).await;
        let facts = Subscribed::start(Facts::new(cache)).await;
        let db = TestDb::new(Backend::Sqlite).await;
        // Access tokens outlive any run the flags can ask for, so expiry never turns into denials.
        let shared = facts.facts.clone();
        let app = TestApp::spawn_with(&db, move |config| {
            config.lifetimes.access = Duration::from_secs(3600);
            config.facts = shared;
        })
        .await;
        let idp = FakeIdp::start(Kind::Google, DOMAIN).await;

        let seats = i32::try_from(members.max(1000)).expect("a seat limit fits in i32");
        let organization_id = app.create_org_with_seats("bench", &[DOMAIN], "", seats).await;
        app.tenancy
            .clone()
            .create_role(op(tpb::CreateRoleRequest {
                organization_id: organization_id.clone(),
                name: ROLE.into(),
                description: "Reads the member directory.".into(),
                permissions: vec![permission.into()],
                ..Default::default()
            }))
            .await
            .expect("create role");
        app.connect(&organization_id, &idp).await;

        let started = Instant::now();
        let user_ids: Vec<String> = stream::iter(0..members)
            .map(|i| {
                let (app, org) = (&app, &organization_id);
                async move { app.add_member(org, &email(i), &[ROLE]).await }
            })
            .buffered(SETUP_CONCURRENCY)
            .collect()
            .await;
        let add_members = started.elapsed();

        let started = Instant::now();
        let access_tokens: Vec<String> = stream::iter(0..members)
            .map(|i| {
                let (app, idp, org) = (&app, &idp, &organization_id);
                async move {
                    let id_token = idp.id_token(&format!("google-{i}"), &email(i));
                    app.sign_in(&id_token, org).await.map(|signed_in| signed_in.access_token)
                }
            })
            .buffered(SETUP_CONCURRENCY)
            .try_collect()
            .await
            .expect("every member signs in");
        let sign_ins = started.elapsed();

        let distinct: std::collections::HashSet<&String> = access_tokens.iter().collect();
        assert_eq!(distinct.len(), members, "every member holds an access token of their own");

        Self { app, idp, organization_id, access_tokens, user_ids, store, facts, add_members, sign_ins, _db: db }
    }
}

impl Fixture {
    /// Deletes the run's keys from Redis (they would expire within the hour anyway).
    pub async fn clean_up(&self) {
        let FactStore::Redis { prefix, .. } = &self.store else { return };
        let Some(client) = self.facts.facts.cache().redis_client() else { return };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return };
        let mut cursor = 0u64;
        loop {
            let Ok((next, keys)) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}:*"))
                .arg("COUNT")
                .arg(10_000)
                .query_async::<(u64, Vec<String>)>(&mut conn)
                .await
            else {
                return;
            };
            if !keys.is_empty() {
                let _ = redis::cmd("UNLINK").arg(&keys).query_async::<i64>(&mut conn).await;
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}

/// Redis at `url` with a prefix unique to this run and a cache on it, if it answers within a
/// second; else the in-process cache.
async fn fact_store(url: &str) -> (FactStore, Cache) {
    let prefix = format!("lanyard-bench-{}-{}", std::process::id(), lanyard_core::Timestamp::now().0);
    let answered = tokio::time::timeout(Duration::from_secs(1), async {
        let cache = Cache::redis(url, &prefix).await.ok()?;
        cache.ping().await.ok().map(|()| cache)
    })
    .await;
    match answered {
        Ok(Some(cache)) => (FactStore::Redis { url: url.to_owned(), prefix }, cache),
        _ => {
            eprintln!("no Redis answered at {url}: facts stay in the in-process cache; propagation is not measured");
            (FactStore::Embedded, Cache::local("lanyard"))
        }
    }
}

fn email(i: usize) -> String {
    format!("member-{i:05}@{DOMAIN}")
}
