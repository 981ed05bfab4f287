//! What a platform engineer relies on: Prometheus metrics, readiness, and a graceful stop that
//! drops no accepted RPC.

use std::sync::Arc;

use lanyard_core::db::Backend;
use lanyard_proto::tenancy::v1 as pb;
use lanyard_tests::{backend_tests, spawn_app, spawn_app_with};
use tonic::Code;

backend_tests!(metrics_count_rpcs_codes_and_seats, shutdown_under_load_drops_no_accepted_rpc);

async fn metrics_count_rpcs_codes_and_seats(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.metrics_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    let org = app.create_org(1, &["acme.com"]).await;
    app.add_member(&org.organization_id, "a@acme.com", &[]).await;
    let full = app
        .operator()
        .add_member(pb::AddMemberRequest {
            organization_id: org.organization_id.clone(),
            email: "b@acme.com".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(full.unwrap_err().code(), Code::ResourceExhausted);
    let text = app.scrape_metrics().await;
    let has = |needle: &str| text.lines().any(|l| l.starts_with(needle) || (l.contains(needle) && !l.starts_with('#')));
    // gRPC codes by their canonical names, on the counter and on the latency histogram.
    for label in ["method=\"AddMember\"", "code=\"OK\"", "code=\"RESOURCE_EXHAUSTED\""] {
        for metric in ["lanyard_rpc_requests_total{", "lanyard_rpc_duration_seconds_bucket{"] {
            assert!(
                text.lines().any(|l| l.starts_with(metric) && l.contains(label)),
                "no {metric} with {label}:\n{text}"
            );
        }
    }
    assert!(!text.contains("code=\"Ok\""), "codes by their Rust names:\n{text}");
    // Every metric says what it is.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(text.contains(&format!("# HELP {name} ")), "{name} has no HELP line:\n{text}");
    }
    assert!(
        text.lines().any(|l| l.starts_with("lanyard_build_info{")
            && l.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && l.contains("git_sha=\"")
            && l.ends_with(" 1")),
        "no lanyard_build_info:\n{text}"
    );
    for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"] {
        assert!(text.lines().any(|l| l.starts_with(&format!("{name} "))), "no {name}:\n{text}");
    }
    for pool in ["state=\"idle\"", "state=\"in_use\""] {
        assert!(
            text.lines().any(|l| l.starts_with("lanyard_db_pool_connections{")
                && l.contains("service=\"tenancy\"")
                && l.contains(pool)),
            "no pool gauge with {pool}:\n{text}"
        );
    }
    assert!(has("lanyard_db_pool_max_connections{"), "{text}");
    let seats = format!("organization_id=\"{}\"", org.organization_id);
    assert!(
        text.lines().any(|l| l.starts_with("lanyard_org_seats{")
            && l.contains(&seats)
            && l.contains("state=\"active\"")
            && l.ends_with(" 1")),
        "no seat gauge for the organization:\n{text}"
    );
    assert!(text.contains("# HELP lanyard_rpc_requests_total"), "{text}");
}

async fn shutdown_under_load_drops_no_accepted_rpc(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let org = app.create_org(100_000, &["acme.com"]).await;
    let calls = 300;
    let started = Arc::new(tokio::sync::Barrier::new(calls + 1));
    let tasks: Vec<_> = (0..calls)
        .map(|i| {
            let (mut client, started, org) = (app.operator(), started.clone(), org.organization_id.clone());
            tokio::spawn(async move {
                started.wait().await;
                client
                    .add_member(pb::AddMemberRequest {
                        organization_id: org,
                        email: format!("load{i}@acme.com"),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    started.wait().await;
    // Stop while the calls are arriving and in flight.
    tokio::task::yield_now().await;
    app.stop().await;
    let results: Vec<_> = futures::future::join_all(tasks).await.into_iter().map(|r| r.expect("task")).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    for r in &results {
        if let Err(s) = r {
            // Refused at the transport (the server's GOAWAY, or the connection closing under a
            // request not yet accepted): never an answer from a handler that was cut off.
            let transport = matches!(s.code(), Code::Unavailable | Code::Internal | Code::Cancelled | Code::Unknown)
                && lanyard_core::status::reason_of(s).is_none();
            assert!(transport, "an RPC failed otherwise than by being refused: {s:?}");
        }
    }
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE org_id = $1")
        .bind(&org.organization_id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored as usize, ok, "every committed membership was answered, and every answer was committed");
}
