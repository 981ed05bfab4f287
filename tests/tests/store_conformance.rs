//! The storage conformance suite: the same expectations of `TenancyStore`, run against SQLite and
//! Postgres, below the gRPC layer.

use std::sync::Arc;
use std::time::Duration;

use lanyard_core::crypto::SecretBox;
use lanyard_core::db::Backend;
use lanyard_core::page::Page;
use lanyard_core::status::ServiceError;
use lanyard_core::{DisplayName, Domain, Email, OrgSlug, ReservationId, RoleName, Timestamp};
use lanyard_tenancy::domain::{
    DomainState, ExternalIdentity, NewOrganization, NewSsoConnection, ReservationState, SsoKind, VerificationMethod,
};
use lanyard_tenancy::store::Change;
use lanyard_tenancy::{TenancyError, TenancyStore};
use lanyard_tests::{backend_tests, fresh_store, unique_slug};

backend_tests!(
    migrations_are_idempotent,
    reservations_expire_by_time_alone,
    concurrent_first_sign_ins_link_once,
    a_domain_is_verified_for_one_organization,
    audit_events_page_newest_first,
    slugs_are_unique,
    unknown_stored_kinds_are_errors_not_defaults,
);

fn new_org(seats: u32) -> NewOrganization {
    NewOrganization {
        slug: OrgSlug::parse(&unique_slug()).unwrap(),
        display_name: DisplayName::parse("Acme", "display_name").unwrap(),
        seat_limit: seats,
        allowed_domains: vec![Domain::parse("acme.com").unwrap()],
        metadata: Default::default(),
        owner_email: None,
    }
}

fn change() -> Change {
    Change::by("operator:test")
}

async fn migrations_are_idempotent(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    store.migrate().await.expect("a second migration run is a no-op");
    store.create_organization(&new_org(1), &change()).await.unwrap();
}

async fn reservations_expire_by_time_alone(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let org = store.create_organization(&new_org(2), &change()).await.unwrap();
    let now = Timestamp::now();
    // One reservation that is already past its expiry, one that is not.
    let stale = store.reserve_seat(org.id, ReservationId::new(), Timestamp(now.0 - 1), &change()).await.unwrap();
    assert_eq!(stale.state, ReservationState::Held);
    store.reserve_seat(org.id, ReservationId::new(), now.plus(Duration::from_secs(3600)), &change()).await.unwrap();
    let usage = store.seat_usage(org.id).await.unwrap();
    assert_eq!((usage.reserved, usage.available()), (1, 1));
    store.add_member(org.id, &Email::parse("a@acme.com").unwrap(), "", &[], true, &change()).await.unwrap();
    let full = store.add_member(org.id, &Email::parse("b@acme.com").unwrap(), "", &[], true, &change()).await;
    assert!(matches!(full, Err(TenancyError::SeatsExhausted { limit: 2, used: 2 })), "{full:?}");
    // Re-reserving the expired id shows its state, and takes nothing.
    let again = store.reserve_seat(org.id, stale.id, now.plus(Duration::from_secs(60)), &change()).await.unwrap();
    assert_eq!(again.state, ReservationState::Expired);
}

async fn concurrent_first_sign_ins_link_once(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let org = store.create_organization(&new_org(20), &change()).await.unwrap();
    let acme = Domain::parse("acme.com").unwrap();
    store.verify_domain(org.id, &acme, VerificationMethod::Operator, &change()).await.unwrap();
    let secrets = SecretBox::from_base64(&base64_key()).unwrap();
    let connection = NewSsoConnection {
        kind: SsoKind::Okta,
        issuer: "https://acme.okta.com".into(),
        client_id: "acme".into(),
        client_secret: None,
        hosted_domains: Vec::new(),
        tenant_id: String::new(),
    };
    let connection = store.create_sso_connection(org.id, &connection, 10, &secrets, &change()).await.unwrap().id;
    let store = Arc::new(store);
    for round in 0..10 {
        let email = Email::parse(&format!("person{round}@acme.com")).unwrap();
        let (member, _) = store.add_member(org.id, &email, "", &[], true, &change()).await.unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(16));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (store, barrier, email) = (store.clone(), barrier.clone(), email.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let identity = ExternalIdentity {
                        issuer: "https://acme.okta.com".into(),
                        subject: format!("subject-{round}"),
                        email: Some(email),
                        email_verified: true,
                        display_name: String::new(),
                        connection_id: connection,
                    };
                    store
                        .resolve_identity(&identity, org.id, false, &change())
                        .await
                        .map(|r| (r.user.id, r.identity_linked))
                })
            })
            .collect();
        let results: Vec<_> = futures::future::join_all(tasks).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
        assert!(results.iter().all(|(id, _)| *id == member.user_id), "round {round}: one identity, the member's user");
        assert_eq!(results.iter().filter(|(_, linked)| *linked).count(), 1, "round {round}: linked once");
    }
    let (links, _) =
        store.list_audit_events(org.id, &Page::parse(500, "").unwrap(), Some("identity.linked")).await.unwrap();
    assert_eq!(links.len(), 10, "one audit event per link");
}

async fn a_domain_is_verified_for_one_organization(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let a = store.create_organization(&new_org(1), &change()).await.unwrap();
    let b = store.create_organization(&new_org(1), &change()).await.unwrap();
    let acme = Domain::parse("acme.com").unwrap();
    assert!(a.domains.iter().all(|d| d.state == DomainState::Pending && d.challenge.len() >= 43));
    assert_ne!(a.domains[0].challenge, b.domains[0].challenge, "every challenge is its own");
    let (_, verified) = store.verify_domain(a.id, &acme, VerificationMethod::DnsTxt, &change()).await.unwrap();
    assert_eq!((verified.state, verified.method.as_deref()), (DomainState::Verified, Some("dns_txt")));
    let taken = store.verify_domain(b.id, &acme, VerificationMethod::Operator, &change()).await;
    assert!(matches!(taken, Err(TenancyError::DomainVerifiedElsewhere)), "{taken:?}");
    let other = Domain::parse("acme.io").unwrap();
    let (_, pending) = store.add_domain(b.id, &acme, false, &change()).await.expect("its own pending domain, again");
    assert_eq!((pending.state, &pending.challenge), (DomainState::Pending, &b.domains[0].challenge));
    let c = store
        .create_organization(&NewOrganization { allowed_domains: vec![other], ..new_org(1) }, &change())
        .await
        .unwrap();
    let refused = store.add_domain(c.id, &acme, false, &change()).await;
    assert!(matches!(refused, Err(TenancyError::DomainVerifiedElsewhere)), "{refused:?}");
    store.add_domain(c.id, &acme, true, &change()).await.expect("an operator may add it pending");
    store.remove_domain(a.id, &acme, &change()).await.unwrap();
    store.verify_domain(b.id, &acme, VerificationMethod::Operator, &change()).await.expect("free again");
}

fn base64_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
}

async fn audit_events_page_newest_first(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let org = store.create_organization(&new_org(10), &change()).await.unwrap();
    for i in 0..5 {
        store
            .add_member(
                org.id,
                &Email::parse(&format!("u{i}@acme.com")).unwrap(),
                "",
                &[RoleName::member()],
                true,
                &change(),
            )
            .await
            .unwrap();
    }
    let mut all = Vec::new();
    let mut page = Page::parse(2, "").unwrap();
    loop {
        let (events, next) = store.list_audit_events(org.id, &page, None).await.unwrap();
        all.extend(events);
        if next.is_empty() {
            break;
        }
        page = Page::parse(2, &next).unwrap();
    }
    assert_eq!(all.len(), 6);
    assert_eq!(all.last().unwrap().action, "organization.created");
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    let (added, _) = store.list_audit_events(org.id, &Page::parse(0, "").unwrap(), Some("member.added")).await.unwrap();
    assert_eq!(added.len(), 5);
}

async fn slugs_are_unique(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let new = new_org(1);
    store.create_organization(&new, &change()).await.unwrap();
    let again = store.create_organization(&new, &change()).await;
    assert!(matches!(again, Err(TenancyError::SlugTaken)), "{again:?}");
    let _: &TenancyStore = &store;
}

/// A connection whose stored kind is none of the known ones is a corrupt row: reading it fails
/// (`INTERNAL`), where it used to be read as plain OIDC and so skip the Google and Entra checks.
async fn unknown_stored_kinds_are_errors_not_defaults(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let org = store.create_organization(&new_org(10), &change()).await.unwrap();
    let new = lanyard_tenancy::domain::NewSsoConnection {
        kind: lanyard_tenancy::domain::SsoKind::GoogleWorkspace,
        issuer: "https://accounts.google.com".into(),
        client_id: "client".into(),
        client_secret: None,
        hosted_domains: vec![Domain::parse("acme.com").unwrap()],
        tenant_id: String::new(),
    };
    let secrets = SecretBox::from_base64(&base64_key()).unwrap();
    let connection = store.create_sso_connection(org.id, &new, 10, &secrets, &change()).await.unwrap();
    let read = store.get_sso_connection(org.id, connection.id).await.unwrap().unwrap();
    assert_eq!(read.kind, lanyard_tenancy::domain::SsoKind::GoogleWorkspace);
    sqlx::query("UPDATE sso_connections SET kind = 'google'").execute(&store.database().pool).await.unwrap();
    let err = store.get_sso_connection(org.id, connection.id).await.unwrap_err();
    assert!(matches!(err, TenancyError::Corrupt(_)), "{err:?}");
    assert_eq!(err.to_problem().reason(), "INTERNAL");
}
