//! `lanyard keys reencrypt` against real databases, on SQLite and Postgres: a wrong key changes
//! nothing; the services keep working with the new key as primary and the old one as previous
//! while it runs; a run stopped part-way leaves every secret readable and a second run finishes;
//! a run with nothing left changes nothing; afterwards the new key alone opens everything.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use lanyard_core::crypto::SecretBox;
use lanyard_core::db::Database;
use lanyard_core::rekey::SealedColumn;
use lanyard_proto::invitation::v1 as ipb;
use lanyard_proto::token::v1 as tpb;
use lanyard_testkit::app::{op, Backend, TestApp, TestDb, KEK};
use lanyard_testkit::idp::{FakeIdp, Kind};

const BIN: &str = env!("CARGO_BIN_EXE_lanyard");
const NEW_KEK: &str = "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=";
const WRONG_KEK: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// Every sealed column of every service.
fn columns() -> Vec<(&'static str, &'static SealedColumn)> {
    let tenancy = lanyard_tenancy::store::SEALED_COLUMNS.iter().map(|c| ("tenancy", c));
    let invitation = lanyard_invitation::store::SEALED_COLUMNS.iter().map(|c| ("invitation", c));
    let token = lanyard_token::store::SEALED_COLUMNS.iter().map(|c| ("token", c));
    tenancy.chain(invitation).chain(token).collect()
}

/// One stored sealed value: its row, the context it is bound to, the value.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stored {
    context: String,
    value: String,
}

/// Every sealed value in the databases, by `service/table.column/row`.
async fn sealed(db: &TestDb) -> BTreeMap<String, Stored> {
    let mut all = BTreeMap::new();
    for (service, column) in columns() {
        let database = Database::connect(&db.config(service)).await.expect("database");
        let sql = format!(
            "SELECT {keys}, {col} FROM {table} WHERE {col} IS NOT NULL AND {col} <> ''",
            keys = column.keys.join(", "),
            col = column.column,
            table = column.table
        );
        for row in sqlx::query(&sql).fetch_all(&database.pool).await.expect("read sealed values") {
            use sqlx::Row;
            let keys: Vec<String> = (0..column.keys.len()).map(|i| row.get::<String, _>(i)).collect();
            let value: String = row.get(column.keys.len());
            let name = format!("{service}/{}/{}", column.name(), keys.join("/"));
            all.insert(name, Stored { context: (column.context)(&keys), value });
        }
        database.pool.close().await;
    }
    all
}

fn under(secrets: &SecretBox, values: &BTreeMap<String, Stored>) -> usize {
    values.values().filter(|s| s.value.starts_with(&secrets.sealed_prefix())).count()
}

/// Runs `lanyard keys reencrypt` with `LANYARD_ENCRYPTION_KEY` = [`NEW_KEK`] on `db`'s databases.
fn reencrypt(db: &TestDb, previous: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(["keys", "reencrypt"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LANYARD_DATA_DIR", db.dir())
        .env("LANYARD_ENCRYPTION_KEY", NEW_KEK);
    if let Some(previous) = previous {
        command.env("LANYARD_PREVIOUS_ENCRYPTION_KEYS", previous);
    }
    if db.backend == Backend::Postgres {
        command.env("LANYARD_DATABASE_URL", db.config("tenancy").url);
    }
    command.output().expect("runs the binary")
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

#[track_caller]
fn succeeded(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "failed: {}\n{}", text(&o.stdout), text(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("JSON output")
}

async fn kids(app: &TestApp) -> Vec<String> {
    let jwks = app.tokens.clone().get_jwks(tpb::GetJwksRequest {}).await.expect("jwks").into_inner();
    let mut kids: Vec<String> = jwks.keys.into_iter().map(|k| k.kid).collect();
    kids.sort();
    kids
}

async fn client_secret(db: &TestDb, org: &str, connection: &str, secrets: &SecretBox) -> Option<String> {
    let store = lanyard_tenancy::TenancyStore::new(Database::connect(&db.config("tenancy")).await.expect("db"));
    let org = lanyard_core::OrganizationId::parse(org).expect("org id");
    let connection = lanyard_core::ConnectionId::parse(connection).expect("connection id");
    store.sso_client_secret(org, connection, secrets).await.expect("the client secret opens")
}

async fn rotation(backend: Backend) {
    let db = TestDb::new(backend).await;
    let new = SecretBox::from_base64(NEW_KEK).unwrap();
    let rotating = SecretBox::from_base64(NEW_KEK).unwrap().with_previous([KEK]).unwrap();

    // Secrets of every kind, sealed under the old key by services that know only it.
    let app = TestApp::spawn_with_keys(&db, KEK, &[]).await;
    let google = FakeIdp::start(Kind::Google, "acme.com").await;
    let org = app.create_org("acme", &["acme.com"], "it@acme.com").await;
    let first_connection = app.connect(&org, &google).await;
    let sign_in = tpb::ExchangeTokenRequest {
        grant: Some(tpb::exchange_token_request::Grant::IdTokenGrant(tpb::IdTokenGrant {
            id_token: google.id_token("g-it", "it@acme.com"),
            organization_id: org.clone(),
            nonce: None,
        })),
        request_id: "sign-in-1".into(),
        ..Default::default()
    };
    let signed_in = app.tokens.clone().exchange_token(sign_in.clone()).await.expect("sign in").into_inner();
    let invite = ipb::CreateInvitationRequest {
        organization_id: org.clone(),
        email: "bob@acme.com".into(),
        send_email: false,
        request_id: "invite-1".into(),
        ..Default::default()
    };
    let invited = app.invitations.clone().create_invitation(op(invite.clone())).await.expect("invite").into_inner();
    let published = kids(&app).await;
    app.stop().await;
    let before = sealed(&db).await;
    let tables: std::collections::BTreeSet<&str> = before.keys().map(|k| k.split('/').nth(1).unwrap()).collect();
    assert_eq!(
        tables.into_iter().collect::<Vec<_>>(),
        ["idempotency_keys.response", "signing_keys.private_key", "sso_connections.client_secret_sealed"],
        "a secret of every kind exists: {before:#?}"
    );
    assert_eq!(under(&new, &before), 0);

    // A wrong previous key, or none: refused before anything is written.
    for previous in [Some(WRONG_KEK), None] {
        let refused = reencrypt(&db, previous, &["--batch-size", "1"]);
        assert!(!refused.status.success(), "{previous:?} was accepted: {}", text(&refused.stdout));
        let err = text(&refused.stderr);
        assert!(err.contains("open under none of the given keys") && err.contains("nothing was changed"), "{err}");
        assert_eq!(sealed(&db).await, before, "a refused run changed something");
    }

    // The services move to the new key first (old one as previous), and keep serving.
    let app = TestApp::spawn_with_keys(&db, NEW_KEK, &[KEK]).await;
    let okta = FakeIdp::start(Kind::Okta, "acme.com").await;
    let second_connection = app.connect(&org, &okta).await;
    let during = sealed(&db).await;
    assert_eq!(under(&new, &during), 1, "what the services write now is under the new key");

    // Stopped after two batches of one row: part moved, everything still readable.
    let partial = succeeded(&reencrypt(&db, Some(KEK), &["--batch-size", "1", "--max-batches", "2", "--json"]));
    assert_eq!(partial["finished"], false, "{partial}");
    let half = sealed(&db).await;
    assert_eq!(under(&new, &half), under(&new, &during) + 2, "{partial}");
    assert!(under(&new, &half) < half.len());
    for (name, s) in &half {
        assert!(rotating.open(&s.value, &s.context).is_ok(), "{name} does not open during the rotation");
    }
    assert!(half.values().any(|s| new.open(&s.value, &s.context).is_err()), "the old key is still needed");
    let replayed = app.tokens.clone().exchange_token(sign_in.clone()).await.expect("replay").into_inner();
    assert_eq!(replayed.refresh_token, signed_in.refresh_token);
    let replayed = app.invitations.clone().create_invitation(op(invite.clone())).await.expect("replay").into_inner();
    assert_eq!(replayed.invitation_link, invited.invitation_link);

    // Run again: it finishes; and once more: nothing changes.
    let done = succeeded(&reencrypt(&db, Some(KEK), &["--batch-size", "2", "--json"]));
    assert_eq!(done["finished"], true, "{done}");
    let after = sealed(&db).await;
    assert_eq!(after.keys().collect::<Vec<_>>(), half.keys().collect::<Vec<_>>());
    assert_eq!(under(&new, &after), after.len(), "{after:#?}");
    let again = succeeded(&reencrypt(&db, Some(KEK), &["--json"]));
    let resealed: u64 = again["columns"].as_array().unwrap().iter().map(|c| c["resealed"].as_u64().unwrap()).sum();
    assert_eq!((resealed, &again["finished"]), (0, &serde_json::json!(true)), "{again}");
    assert_eq!(sealed(&db).await, after, "a run with nothing to do changed something");
    app.stop().await;

    // The new key alone: signing keys load, replies replay, client secrets open.
    let app = TestApp::spawn_with_keys(&db, NEW_KEK, &[]).await;
    assert_eq!(kids(&app).await.iter().filter(|k| published.contains(k)).count(), published.len());
    let replayed = app.tokens.clone().exchange_token(sign_in).await.expect("replay").into_inner();
    assert_eq!(replayed.refresh_token, signed_in.refresh_token);
    let replayed = app.invitations.clone().create_invitation(op(invite)).await.expect("replay").into_inner();
    assert_eq!(replayed.invitation_link, invited.invitation_link);
    for connection in [&first_connection, &second_connection] {
        assert_eq!(client_secret(&db, &org, connection, &new).await.as_deref(), Some("s3cret"));
    }
    app.stop().await;
}

lanyard_testkit::backend_tests!(a_key_encryption_key_rotates_online_and_resumably => rotation);
