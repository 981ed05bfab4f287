//! The operator commands over the rest of the API — `keys rotate-signing`, `session`, `role`,
//! `sso`, `audit`, `org suspend|resume|delete` — run as the binary against the real services on
//! SQLite and Postgres: each does what it says, and each refusal (wrong or weaker key, a member's
//! token, unknown organization, malformed input) exits non-zero with the reason and changes nothing.

use std::process::{Command, Output};

use lanyard_proto::authz::v1 as apb;
use lanyard_proto::tenancy::v1 as pb;
use lanyard_testkit::app::{op, Backend, TestApp, TestDb, OPERATOR_KEY};
use lanyard_testkit::idp::{FakeIdp, Kind};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_lanyard");

/// Runs `lanyard <args>` against `app` with `key` as the API key.
fn cli(app: &TestApp, key: &str, args: &[&str]) -> Output {
    let endpoint = format!("http://{}", app.addr);
    tokio::task::block_in_place(|| {
        Command::new(BIN)
            .args(args)
            .args(["--endpoint", &endpoint, "--api-key", key])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .expect("runs the binary")
    })
}

#[track_caller]
fn json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON output")
}

/// Asserts a refusal: a non-zero exit whose message names `reason`.
#[track_caller]
fn refused(o: &Output, reason: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "succeeded: {}", String::from_utf8_lossy(&o.stdout));
    assert!(err.starts_with("error:") && err.contains(reason), "wanted {reason}: {err}");
}

struct World {
    app: TestApp,
    _db: TestDb,
    google: FakeIdp,
    acme: String,
    globex: String,
}

async fn world(backend: Backend) -> World {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let acme = app.create_org("acme", &["acme.com"], "it@acme.com").await;
    let globex = app.create_org("globex", &["globex.com"], "it@globex.com").await;
    app.connect(&acme, &google).await;
    World { app, _db: db, google, acme, globex }
}

impl World {
    /// Signs `email` (a member of acme with `roles`) in; returns (user id, session id, access token).
    async fn sign_in(&self, email: &str, roles: &[&str]) -> (String, String, String) {
        self.app.add_member(&self.acme, email, roles).await;
        self.sign_in_member(email).await
    }

    /// Signs an existing member of acme in.
    async fn sign_in_member(&self, email: &str) -> (String, String, String) {
        let token = self.google.id_token(&format!("g-{email}"), email);
        let r = self.app.sign_in(&token, &self.acme).await.expect("sign in");
        (r.user_id, r.session.expect("session").session_id, r.access_token)
    }

    async fn allowed(&self, access_token: &str) -> bool {
        let req = apb::AuthorizeRequest {
            access_token: access_token.into(),
            permission: "organization:read".into(),
            ..Default::default()
        };
        let r = self.app.authz.clone().authorize(req).await.expect("authorize").into_inner();
        r.allowed
    }

    async fn status(&self, org: &str) -> i32 {
        let key = pb::get_organization_request::Key::OrganizationId(org.into());
        let req = op(pb::GetOrganizationRequest { key: Some(key) });
        self.app.tenancy.clone().get_organization(req).await.unwrap().into_inner().organization.unwrap().status
    }
}

async fn signing_keys(backend: Backend) {
    let w = world(backend).await;
    // A fresh server's next key has not been published long enough for JWKS caches to know it.
    let early = cli(&w.app, OPERATOR_KEY, &["keys", "rotate-signing", "--algorithm", "eddsa"]);
    refused(&early, "SIGNING_KEY_NOT_PUBLISHED");
    let rotated =
        json(&cli(&w.app, OPERATOR_KEY, &["keys", "rotate-signing", "--algorithm", "eddsa", "--force", "--json"]));
    assert_eq!((&rotated["state"], &rotated["algorithm"]), (&Value::from("next"), &Value::from("EdDSA")));
    let jwks = w.app.tokens.clone().get_jwks(lanyard_proto::token::v1::GetJwksRequest {}).await.unwrap();
    let kid = rotated["kid"].as_str().unwrap();
    assert!(jwks.into_inner().keys.iter().any(|k| k.kid == kid), "the new key is published before it signs");

    // Only an API key rotates (operator; a service key has operator rights too): not a member,
    // even the owner, and not a guess.
    let (_, _, owner) = w.sign_in_member("it@acme.com").await;
    for args in [
        &["keys", "rotate-signing", "--algorithm", "eddsa"][..],
        &["keys", "rotate-signing", "--algorithm", "eddsa", "--force"],
    ] {
        refused(&cli(&w.app, &owner, args), "PermissionDenied");
        refused(&cli(&w.app, "not-the-operator-key-at-all", args), "CREDENTIALS_INVALID");
    }
    let jwks = w.app.tokens.clone().get_jwks(lanyard_proto::token::v1::GetJwksRequest {}).await.unwrap();
    assert_eq!(jwks.into_inner().keys.iter().filter(|k| k.alg == "EdDSA").count(), 1, "a refusal made a key");
}

async fn sessions(backend: Backend) {
    let w = world(backend).await;
    let (alice, sid, access) = w.sign_in("alice@acme.com", &["member"]).await;
    let listed = json(&cli(&w.app, OPERATOR_KEY, &["session", "list", "--user", &alice, "--org", "acme", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(
        (&listed[0]["session_id"], &listed[0]["active_organization_id"]),
        (&sid.clone().into(), &w.acme.clone().into())
    );
    let none = json(&cli(&w.app, OPERATOR_KEY, &["session", "list", "--user", &alice, "--org", "globex", "--json"]));
    assert_eq!(none, Value::Array(vec![]));

    // Another organization's admin cannot see or revoke her sessions.
    let globex_admin = {
        let google = FakeIdp::start(Kind::Google, "globex.com").await;
        w.app.connect(&w.globex, &google).await;
        w.app.add_member(&w.globex, "admin@globex.com", &["admin"]).await;
        let token = google.id_token("g-admin", "admin@globex.com");
        w.app.sign_in(&token, &w.globex).await.expect("sign in").access_token
    };
    refused(&cli(&w.app, &globex_admin, &["session", "list", "--user", &alice, "--json"]), "WRONG_ORGANIZATION");
    refused(&cli(&w.app, &globex_admin, &["session", "revoke", "--id", &sid]), "WRONG_ORGANIZATION");
    assert!(w.allowed(&access).await, "a refused revoke revoked");

    let revoked = json(&cli(&w.app, OPERATOR_KEY, &["session", "revoke", "--id", &sid, "--json"]));
    assert!(!revoked["revoked"].as_str().unwrap().is_empty(), "{revoked}");
    assert!(!w.allowed(&access).await, "a revoked session's token still works");
    let all = json(&cli(&w.app, OPERATOR_KEY, &["session", "list", "--user", &alice, "--all", "--json"]));
    assert_eq!(all.as_array().unwrap().len(), 1);
    refused(&cli(&w.app, OPERATOR_KEY, &["session", "list", "--user", "not-a-uuid"]), "INVALID_ARGUMENT");
    refused(&cli(&w.app, OPERATOR_KEY, &["session", "list", "--user", &alice, "--org", "nope"]), "NotFound");
    refused(&cli(&w.app, OPERATOR_KEY, &["session", "revoke", "--id", &uuid_v7()]), "NotFound");
}

fn uuid_v7() -> String {
    uuid::Uuid::now_v7().to_string()
}

async fn roles(backend: Backend) {
    let w = world(backend).await;
    let list = |key: &str| cli(&w.app, key, &["role", "list", "--org", "acme", "--json"]);
    let names =
        |v: &Value| v.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(names(&json(&list(OPERATOR_KEY))), ["owner", "admin", "member"]);
    let created = json(&cli(
        &w.app,
        OPERATOR_KEY,
        &["role", "create", "--org", "acme", "--name", "auditor", "--permission", "audit:read", "--json"],
    ));
    assert_eq!(
        (&created["built_in"], &created["permissions"]),
        (&Value::Bool(false), &serde_json::json!(["audit:read"]))
    );
    let updated = json(&cli(
        &w.app,
        OPERATOR_KEY,
        &[
            "role",
            "update",
            "--org",
            "acme",
            "--name",
            "auditor",
            "--permission",
            "audit:read",
            "--permission",
            "seats:read",
            "--description",
            "reads",
            "--json",
        ],
    ));
    assert_eq!(
        (&updated["permissions"], &updated["description"]),
        (&serde_json::json!(["audit:read", "seats:read"]), &Value::from("reads"))
    );

    // Refusals change nothing.
    let (_, _, member) = w.sign_in("alice@acme.com", &["member"]).await;
    let attempts: [(&str, &[&str], &str); 6] = [
        (
            member.as_str(),
            &["role", "create", "--org", "acme", "--name", "x", "--permission", "a:b"],
            "PermissionDenied",
        ),
        (OPERATOR_KEY, &["role", "create", "--org", "acme", "--name", "admin", "--permission", "a:b"], "ROLE_EXISTS"),
        (
            OPERATOR_KEY,
            &["role", "create", "--org", "acme", "--name", "y", "--permission", "nocolon"],
            "INVALID_ARGUMENT",
        ),
        (OPERATOR_KEY, &["role", "create", "--org", "nope", "--name", "y", "--permission", "a:b"], "NotFound"),
        (OPERATOR_KEY, &["role", "update", "--org", "acme", "--name", "auditor"], "nothing to change"),
        (OPERATOR_KEY, &["role", "delete", "--org", "acme", "--name", "owner"], "ROLE_BUILT_IN"),
    ];
    for (key, args, reason) in attempts {
        refused(&cli(&w.app, key, args), reason);
    }
    assert_eq!(names(&json(&list(OPERATOR_KEY))), ["owner", "admin", "member", "auditor"]);

    json(&cli(&w.app, OPERATOR_KEY, &["role", "delete", "--org", "acme", "--name", "auditor", "--json"]));
    assert_eq!(names(&json(&list(OPERATOR_KEY))), ["owner", "admin", "member"]);
}

async fn sso_connections(backend: Backend) {
    let w = world(backend).await;
    let okta = FakeIdp::start(Kind::Okta, "acme.com").await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, "okta-client-secret\n").unwrap();
    let secret = secret_file.to_str().unwrap();
    let create = |key: &str, org: &str, issuer: &str, secret: &str| {
        cli(
            &w.app,
            key,
            &[
                "sso",
                "create",
                "--org",
                org,
                "--kind",
                "okta",
                "--issuer",
                issuer,
                "--client-id",
                "lanyard-app",
                "--client-secret-file",
                secret,
                "--json",
            ],
        )
    };
    let created = create(OPERATOR_KEY, "acme", &okta.issuer, secret);
    assert!(!String::from_utf8_lossy(&created.stdout).contains("okta-client-secret"), "the secret was printed");
    let created = json(&created);
    assert_eq!((&created["kind"], &created["has_client_secret"]), (&Value::from("okta"), &Value::Bool(true)));
    let id = created["connection_id"].as_str().unwrap().to_owned();
    let list = || json(&cli(&w.app, OPERATOR_KEY, &["sso", "list", "--org", "acme", "--json"]));
    assert_eq!(list().as_array().unwrap().len(), 2, "the fixture's Google connection and this one");

    let (_, _, member) = w.sign_in("alice@acme.com", &["member"]).await;
    refused(&create(&member, "acme", &okta.issuer, secret), "PermissionDenied");
    refused(&create(OPERATOR_KEY, "acme", "https://10.0.0.1/", secret), "ISSUER_ADDRESS_FORBIDDEN");
    refused(&create(OPERATOR_KEY, "nope", &okta.issuer, secret), "NotFound");
    refused(
        &create(OPERATOR_KEY, "acme", &okta.issuer, dir.path().join("missing").to_str().unwrap()),
        "reading the client secret",
    );
    refused(&cli(&w.app, OPERATOR_KEY, &["sso", "delete", "--org", "globex", "--id", &id]), "NotFound");
    assert_eq!(list().as_array().unwrap().len(), 2, "a refusal changed the connections");

    json(&cli(&w.app, OPERATOR_KEY, &["sso", "delete", "--org", "acme", "--id", &id, "--json"]));
    assert_eq!(list().as_array().unwrap().len(), 1);
}

async fn audit_log(backend: Backend) {
    let w = world(backend).await;
    for email in ["a@acme.com", "b@acme.com"] {
        w.app.add_member(&w.acme, email, &["member"]).await;
    }
    let page = |args: &[&str]| {
        let mut all = vec!["audit", "list", "--org", "acme", "--json"];
        all.extend_from_slice(args);
        json(&cli(&w.app, OPERATOR_KEY, &all))
    };
    let everything = page(&["--all"]);
    let events = everything["events"].as_array().unwrap();
    assert!(events.iter().filter(|e| e["action"] == "member.added").count() >= 2, "{everything}");
    assert!(events.iter().all(|e| e["organization_id"] == w.acme.as_str()), "another org's events");

    // One page at a time, following the token, gives the same events in the same order.
    let mut token = String::new();
    let mut paged = Vec::new();
    loop {
        let p = if token.is_empty() {
            page(&["--page-size", "1"])
        } else {
            page(&["--page-size", "1", "--page-token", &token])
        };
        assert!(p["events"].as_array().unwrap().len() <= 1);
        paged.extend(p["events"].as_array().unwrap().iter().map(|e| e["event_id"].clone()));
        token = p["next_page_token"].as_str().unwrap().to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(paged, events.iter().map(|e| e["event_id"].clone()).collect::<Vec<_>>());
    let added = page(&["--action", "member.added", "--all"]);
    assert!(added["events"].as_array().unwrap().iter().all(|e| e["action"] == "member.added"));

    // A member without audit:read, and another organization's admin, read nothing.
    let (_, _, member) = w.sign_in("c@acme.com", &["member"]).await;
    refused(&cli(&w.app, &member, &["audit", "list", "--org", "acme"]), "PermissionDenied");
    let (_, _, admin) = w.sign_in("d@acme.com", &["admin"]).await;
    json(&cli(&w.app, &admin, &["audit", "list", "--org", "acme", "--json"]));
    refused(&cli(&w.app, &admin, &["audit", "list", "--org", &w.globex]), "PermissionDenied");
    refused(&cli(&w.app, OPERATOR_KEY, &["audit", "list", "--org", "nope"]), "NotFound");
    refused(
        &cli(&w.app, OPERATOR_KEY, &["audit", "list", "--org", "acme", "--page-token", "garbage"]),
        "INVALID_ARGUMENT",
    );
    refused(&cli(&w.app, OPERATOR_KEY, &["audit", "list", "--org", "acme", "--page-size", "0"]), "page-size");
}

async fn organization_lifecycle(backend: Backend) {
    let w = world(backend).await;
    let (_, _, access) = w.sign_in("alice@acme.com", &["member"]).await;
    let (_, _, owner) = w.sign_in_member("it@acme.com").await;
    let suspended = json(&cli(&w.app, OPERATOR_KEY, &["org", "suspend", "acme", "--json"]));
    assert_eq!(suspended["status"], "suspended");
    assert!(!w.allowed(&access).await, "a suspended organization still authorizes");
    let resumed = json(&cli(&w.app, OPERATOR_KEY, &["org", "resume", &w.acme, "--json"]));
    assert_eq!(resumed["status"], "active");
    assert!(w.allowed(&access).await);

    refused(&cli(&w.app, OPERATOR_KEY, &["org", "delete", "acme"]), "without --yes");
    refused(&cli(&w.app, &access, &["org", "suspend", "acme"]), "PermissionDenied");
    refused(&cli(&w.app, &owner, &["org", "delete", "globex", "--yes"]), "PermissionDenied");
    refused(&cli(&w.app, OPERATOR_KEY, &["org", "suspend", "nope"]), "NotFound");
    assert_eq!(w.status(&w.acme).await, pb::OrganizationStatus::Active as i32, "a refusal changed acme");
    assert_eq!(w.status(&w.globex).await, pb::OrganizationStatus::Active as i32, "a refusal changed globex");

    let deleted = json(&cli(&w.app, OPERATOR_KEY, &["org", "delete", "acme", "--yes", "--json"]));
    assert_eq!(deleted["status"], "deleted");
    assert!(!w.allowed(&access).await, "a deleted organization still authorizes");
}

lanyard_testkit::backend_tests!(signing_keys, sessions, roles, sso_connections, audit_log, organization_lifecycle);
