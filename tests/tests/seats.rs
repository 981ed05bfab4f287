//! The internal seat and identity RPCs over gRPC, on SQLite and Postgres.

use lanyard_core::db::Backend;
use lanyard_proto::tenancy::v1 as pb;
use lanyard_tests::{assert_error, backend_tests, spawn_app};
use tonic::Code;

backend_tests!(
    reserve_claim_release,
    an_expired_reservation_frees_its_seat_without_a_sweeper,
    internal_rpcs_need_a_service_key,
    identities_resolve_by_issuer_and_subject,
);

fn reserve(org: &str) -> pb::ReserveSeatRequest {
    pb::ReserveSeatRequest { organization_id: org.to_owned(), ..Default::default() }
}

async fn reserve_claim_release(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org(2, &["acme.com"]).await;
    let id = org.organization_id.clone();
    let mut svc = app.service();

    let held = svc.reserve_seat(reserve(&id)).await.unwrap().into_inner().reservation.unwrap();
    assert_eq!(held.state, pb::SeatReservationState::Held as i32);
    let usage = app.usage(&id).await;
    assert_eq!((usage.active, usage.reserved, usage.available), (0, 1, 1));

    // A caller-chosen id makes ReserveSeat retry-safe.
    let chosen = uuid::Uuid::now_v7().to_string();
    let first = svc
        .reserve_seat(pb::ReserveSeatRequest { reservation_id: chosen.clone(), ..reserve(&id) })
        .await
        .unwrap()
        .into_inner();
    let again = svc
        .reserve_seat(pb::ReserveSeatRequest { reservation_id: chosen.clone(), ..reserve(&id) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    assert_eq!(app.usage(&id).await.reserved, 2);
    assert_error(svc.reserve_seat(reserve(&id)).await, Code::ResourceExhausted, "SEATS_EXHAUSTED");

    // Claim turns the reservation into a membership; a retry changes nothing.
    let user =
        app.add_member(&app.create_org(1, &["acme.com"]).await.organization_id, "pat@acme.com", &[]).await.user_id;
    let claim = pb::ClaimSeatRequest {
        organization_id: id.clone(),
        reservation_id: held.reservation_id.clone(),
        user_id: user.clone(),
        roles: vec!["admin".into()],
        invited_by: "user:someone".into(),
        ..Default::default()
    };
    let claimed = svc.claim_seat(claim.clone()).await.unwrap().into_inner();
    assert!(!claimed.already_claimed);
    let member = claimed.member.unwrap();
    assert_eq!(
        (member.user_id.as_str(), member.roles.clone(), member.invited_by.as_str()),
        (user.as_str(), vec!["admin".to_string()], "user:someone")
    );
    let retried = svc.claim_seat(claim.clone()).await.unwrap().into_inner();
    assert!(retried.already_claimed);
    let usage = app.usage(&id).await;
    assert_eq!((usage.active, usage.reserved), (1, 1));

    let other_user =
        app.add_member(&app.create_org(1, &["acme.com"]).await.organization_id, "sam@acme.com", &[]).await.user_id;
    assert_error(
        svc.claim_seat(pb::ClaimSeatRequest { user_id: other_user, ..claim.clone() }).await,
        Code::FailedPrecondition,
        "RESERVATION_CLAIMED",
    );
    assert_error(
        svc.release_seat(pb::ReleaseSeatRequest {
            organization_id: id.clone(),
            reservation_id: held.reservation_id.clone(),
        })
        .await,
        Code::FailedPrecondition,
        "RESERVATION_CLAIMED",
    );

    let released = svc
        .release_seat(pb::ReleaseSeatRequest { organization_id: id.clone(), reservation_id: chosen.clone() })
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(released.state, pb::SeatReservationState::Released as i32);
    // Releasing again is not an error, and claiming a released reservation is.
    svc.release_seat(pb::ReleaseSeatRequest { organization_id: id.clone(), reservation_id: chosen.clone() })
        .await
        .unwrap();
    assert_error(
        svc.claim_seat(pb::ClaimSeatRequest { reservation_id: chosen.clone(), ..claim.clone() }).await,
        Code::FailedPrecondition,
        "RESERVATION_RELEASED",
    );
    assert_eq!(app.usage(&id).await.available, 1);

    // A reservation of another organization is, from this one, not there.
    let elsewhere = app.create_org(1, &[]).await;
    assert_error(
        svc.release_seat(pb::ReleaseSeatRequest { organization_id: elsewhere.organization_id, reservation_id: chosen })
            .await,
        Code::NotFound,
        "RESERVATION_NOT_FOUND",
    );
}

async fn an_expired_reservation_frees_its_seat_without_a_sweeper(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org(1, &["acme.com"]).await;
    let id = org.organization_id.clone();
    let held = app.service().reserve_seat(reserve(&id)).await.unwrap().into_inner().reservation.unwrap();
    assert_error(app.service().reserve_seat(reserve(&id)).await, Code::ResourceExhausted, "SEATS_EXHAUSTED");
    // Let time pass for this reservation only: move its expiry into the past.
    sqlx::query("UPDATE seat_reservations SET expires_at = expires_at - 86400000001 WHERE id = $1")
        .bind(&held.reservation_id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    // Seat checks read the database: the expired reservation holds nothing, so the last seat is
    // free. (GetSeatUsage may still serve its cached copy here: in real time a cached usage never
    // outlives the next expiry, but this test moved the expiry behind the cache's back.)
    app.add_member(&id, "late@acme.com", &[]).await;
    let user = app.add_member(&app.create_org(1, &["acme.com"]).await.organization_id, "x@acme.com", &[]).await.user_id;
    assert_error(
        app.service()
            .claim_seat(pb::ClaimSeatRequest {
                organization_id: id.clone(),
                reservation_id: held.reservation_id.clone(),
                user_id: user,
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "RESERVATION_EXPIRED",
    );
    let usage = app.usage(&id).await;
    assert_eq!((usage.active, usage.reserved, usage.available), (1, 0, 0));
}

async fn internal_rpcs_need_a_service_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org(1, &[]).await;
    let mut op = app.operator();
    let before = app.snapshot().await;
    assert_error(op.reserve_seat(reserve(&org.organization_id)).await, Code::PermissionDenied, "SERVICE_ONLY");
    assert_error(
        op.release_seat(pb::ReleaseSeatRequest {
            organization_id: org.organization_id.clone(),
            reservation_id: uuid::Uuid::now_v7().to_string(),
        })
        .await,
        Code::PermissionDenied,
        "SERVICE_ONLY",
    );
    assert_error(
        op.claim_seat(pb::ClaimSeatRequest {
            organization_id: org.organization_id.clone(),
            reservation_id: uuid::Uuid::now_v7().to_string(),
            user_id: uuid::Uuid::now_v7().to_string(),
            ..Default::default()
        })
        .await,
        Code::PermissionDenied,
        "SERVICE_ONLY",
    );
    assert_error(
        op.resolve_identity(pb::ResolveIdentityRequest {
            issuer: "https://idp.example".into(),
            subject: "s".into(),
            connection_id: uuid::Uuid::now_v7().to_string(),
            organization_id: org.organization_id.clone(),
            ..Default::default()
        })
        .await,
        Code::PermissionDenied,
        "SERVICE_ONLY",
    );
    assert_eq!(app.snapshot().await, before);
}

async fn identities_resolve_by_issuer_and_subject(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org(3, &["acme.com"]).await;
    let id = org.organization_id.clone();
    let kim = app.add_member(&id, "kim@acme.com", &[]).await;
    let okta = "https://acme.okta.com";
    let connection = app
        .operator()
        .create_sso_connection(pb::CreateSsoConnectionRequest {
            organization_id: id.clone(),
            kind: pb::SsoConnectionKind::Okta as i32,
            issuer: okta.into(),
            client_id: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .connection
        .unwrap()
        .connection_id;
    let mut svc = app.service();
    let req = |subject: &str, email: &str, verified: bool| pb::ResolveIdentityRequest {
        issuer: okta.into(),
        subject: subject.into(),
        email: email.into(),
        email_verified: verified,
        display_name: "Kim".into(),
        connection_id: connection.clone(),
        organization_id: id.clone(),
        dry_run: false,
    };

    // Refusals write nothing: an unverified email never links, nor does a pending domain.
    let before = app.snapshot().await;
    assert_error(
        svc.resolve_identity(req("attacker", "kim@acme.com", false)).await,
        Code::PermissionDenied,
        "EMAIL_NOT_VERIFIED",
    );
    assert_error(
        svc.resolve_identity(req("00u1", "kim@acme.com", true)).await,
        Code::PermissionDenied,
        "EMAIL_DOMAIN_NOT_VERIFIED",
    );
    assert_eq!(app.snapshot().await, before);
    app.operator()
        .verify_domain(pb::VerifyDomainRequest {
            organization_id: id.clone(),
            domain: "acme.com".into(),
            method: pb::DomainVerificationMethod::Operator as i32,
            ..Default::default()
        })
        .await
        .expect("operator verifies");

    // A dry run decides and writes nothing.
    let before = app.snapshot().await;
    let dry =
        svc.resolve_identity(pb::ResolveIdentityRequest { dry_run: true, ..req("00u1", "Kim@acme.com", true) }).await;
    let dry = dry.unwrap().into_inner();
    assert!(dry.identity_linked && !dry.user_created);
    assert_eq!(dry.user.unwrap().user_id, kim.user_id);
    assert_eq!(app.snapshot().await, before, "a dry run writes nothing");
    // Nobody with the email exists or is a member: refused, nothing written.
    assert_error(svc.resolve_identity(req("00u9", "nobody@acme.com", true)).await, Code::NotFound, "NOT_A_MEMBER");
    assert_eq!(app.snapshot().await, before);

    // A verified email in a verified domain links the identity to the member of that email.
    let linked = svc.resolve_identity(req("00u1", "Kim@acme.com", true)).await.unwrap().into_inner();
    assert!(!linked.user_created && linked.identity_linked);
    let user = linked.user.unwrap();
    assert_eq!((user.user_id.as_str(), user.email_verified), (kim.user_id.as_str(), true));

    // Later sign-ins find the user by (issuer, subject), whatever the email claim says now.
    let again = svc.resolve_identity(req("00u1", "someone-else@acme.com", false)).await.unwrap().into_inner();
    assert!(!again.user_created && !again.identity_linked);
    assert_eq!(again.user.unwrap().user_id, kim.user_id);

    // The identity must come through a connection of the organization, with its issuer.
    let other = app.create_org(1, &[]).await;
    let wrong_org = pb::ResolveIdentityRequest {
        organization_id: other.organization_id.clone(),
        ..req("00u1", "kim@acme.com", true)
    };
    assert_error(svc.resolve_identity(wrong_org).await, Code::NotFound, "CONNECTION_NOT_FOUND");
    let wrong_issuer =
        pb::ResolveIdentityRequest { issuer: "https://x.okta.com".into(), ..req("00u1", "kim@acme.com", true) };
    assert_error(svc.resolve_identity(wrong_issuer).await, Code::NotFound, "CONNECTION_NOT_FOUND");

    for bad in [
        pb::ResolveIdentityRequest { issuer: String::new(), ..req("s", "", false) },
        req("", "", false),
        req(&"s".repeat(1025), "", false),
        req("s", "not-an-email", true),
        pb::ResolveIdentityRequest { connection_id: "nope".into(), ..req("s", "", false) },
        pb::ResolveIdentityRequest { connection_id: String::new(), ..req("s", "", false) },
        pb::ResolveIdentityRequest { organization_id: "nope".into(), ..req("s", "", false) },
    ] {
        assert_error(svc.resolve_identity(bad).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    }
}
