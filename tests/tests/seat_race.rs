//! The seat invariant under concurrency: active members + unexpired reservations ≤ seat limit,
//! always. Many calls are released at once behind a barrier, for many rounds, on each backend,
//! and the database is checked afterwards.

use std::sync::Arc;

use lanyard_core::db::Backend;
use lanyard_proto::tenancy::v1 as pb;
use lanyard_tests::{backend_tests, spawn_app, TestApp};
use tokio::sync::Barrier;
use tonic::Code;

backend_tests!(
    last_seats_are_never_oversold,
    mixed_adds_and_reservations_share_the_seats,
    concurrent_claims_of_one_reservation_take_one_seat
);

const CALLERS: usize = 200;
const ROUNDS: usize = 20;
const FREE: usize = 10;
const ALREADY: usize = 5;

/// An organization with `ALREADY` members and `FREE` free seats.
async fn org_with_free_seats(app: &TestApp) -> String {
    let org = app.create_org((ALREADY + FREE) as i32, &["acme.com"]).await;
    for i in 0..ALREADY {
        app.add_member(&org.organization_id, &format!("existing{i}@acme.com"), &[]).await;
    }
    org.organization_id
}

async fn assert_full(app: &TestApp, org: &str) {
    let active = app.count("SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND status = 'active'", org).await;
    let held = app.count("SELECT COUNT(*) FROM seat_reservations WHERE org_id = $1 AND state = 'held'", org).await;
    let limit = app.count("SELECT seat_limit FROM organizations WHERE id = $1", org).await;
    assert_eq!(active + held, limit, "active {active} + held {held} must fill the limit {limit} exactly");
    let usage = app.usage(org).await;
    assert_eq!((usage.available, usage.active as i64, usage.reserved as i64), (0, active, held));
}

fn count_outcomes(results: Vec<Result<(), tonic::Status>>) -> usize {
    let mut ok = 0;
    for r in results {
        match r {
            Ok(()) => ok += 1,
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "only SEATS_EXHAUSTED may refuse: {s:?}");
                assert_eq!(lanyard_core::status::reason_of(&s).as_deref(), Some("SEATS_EXHAUSTED"));
            }
        }
    }
    ok
}

async fn last_seats_are_never_oversold(backend: Backend) {
    let app = spawn_app(backend).await;
    for round in 0..ROUNDS {
        let org = org_with_free_seats(&app).await;
        let barrier = Arc::new(Barrier::new(CALLERS));
        let tasks: Vec<_> = (0..CALLERS)
            .map(|i| {
                let (mut client, barrier, org) = (app.operator(), barrier.clone(), org.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    client
                        .add_member(pb::AddMemberRequest {
                            organization_id: org,
                            email: format!("racer{i}-round{round}@acme.com"),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ())
                })
            })
            .collect();
        let results = futures::future::join_all(tasks).await.into_iter().map(|r| r.expect("task")).collect();
        assert_eq!(count_outcomes(results), FREE, "round {round}");
        assert_full(&app, &org).await;
    }
}

async fn mixed_adds_and_reservations_share_the_seats(backend: Backend) {
    let app = spawn_app(backend).await;
    for round in 0..ROUNDS {
        let org = org_with_free_seats(&app).await;
        let barrier = Arc::new(Barrier::new(CALLERS));
        let tasks: Vec<_> = (0..CALLERS)
            .map(|i| {
                let (mut op, mut svc, barrier, org) = (app.operator(), app.service(), barrier.clone(), org.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    if i % 2 == 0 {
                        op.add_member(pb::AddMemberRequest {
                            organization_id: org,
                            email: format!("racer{i}-round{round}@acme.com"),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ())
                    } else {
                        svc.reserve_seat(pb::ReserveSeatRequest { organization_id: org, ..Default::default() })
                            .await
                            .map(|_| ())
                    }
                })
            })
            .collect();
        let results = futures::future::join_all(tasks).await.into_iter().map(|r| r.expect("task")).collect();
        assert_eq!(count_outcomes(results), FREE, "round {round}");
        assert_full(&app, &org).await;
    }
}

async fn concurrent_claims_of_one_reservation_take_one_seat(backend: Backend) {
    let app = spawn_app(backend).await;
    let claimers = 50;
    for round in 0..ROUNDS {
        let org = org_with_free_seats(&app).await;
        let home = app.create_org(1, &["acme.com"]).await;
        let user = app.add_member(&home.organization_id, &format!("claimer{round}@acme.com"), &[]).await.user_id;
        let reservation = app
            .service()
            .reserve_seat(pb::ReserveSeatRequest { organization_id: org.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .reservation
            .unwrap()
            .reservation_id;
        let barrier = Arc::new(Barrier::new(claimers));
        let tasks: Vec<_> = (0..claimers)
            .map(|_| {
                let (mut svc, barrier) = (app.service(), barrier.clone());
                let req = pb::ClaimSeatRequest {
                    organization_id: org.clone(),
                    reservation_id: reservation.clone(),
                    user_id: user.clone(),
                    ..Default::default()
                };
                tokio::spawn(async move {
                    barrier.wait().await;
                    svc.claim_seat(req).await.map(|r| r.into_inner().already_claimed)
                })
            })
            .collect();
        let outcomes: Vec<bool> = futures::future::join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.expect("task").expect("every claim succeeds"))
            .collect();
        assert_eq!(
            outcomes.iter().filter(|already| !**already).count(),
            1,
            "round {round}: exactly one claim is the first"
        );
        let active = app.count("SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND status = 'active'", &org).await;
        assert_eq!(active as usize, ALREADY + 1);
        let usage = app.usage(&org).await;
        assert_eq!((usage.active as usize, usage.reserved), (ALREADY + 1, 0));
    }
}
