//! Seat usage cached in Redis: written through on every seat change, rebuilt from the database when
//! the cache loses it, and read from the database while Redis is away (readiness stays, the
//! metric `lanyard_redis_up` says Redis is down). The database stays the authority: seat checks
//! never read the cache. On SQLite and Postgres, with a real Redis.

use lanyard_core::db::Backend;
use lanyard_proto::tenancy::v1 as pb;
use lanyard_tests::{backend_tests, redis_url, spawn_app_with, TcpProxy};
use secrecy::SecretString;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

backend_tests!(seat_usage_is_cached_in_redis, seat_usage_survives_redis_going_away);

async fn redis() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis_url()).unwrap();
    client.get_multiplexed_async_connection().await.expect("Redis-backed tests need a Redis (LANYARD_TEST_REDIS_URL)")
}

fn prefix() -> String {
    format!("lanyard-test-{}", uuid::Uuid::new_v4().simple())
}

async fn seat_usage_is_cached_in_redis(backend: Backend) {
    let prefix = prefix();
    let p = prefix.clone();
    let app = spawn_app_with(backend, move |s| {
        s.redis_url = Some(SecretString::from(redis_url()));
        s.redis_key_prefix = p;
    })
    .await;
    let mut conn = redis().await;
    let org = app.create_org(4, &["acme.com"]).await;
    app.add_member(&org.organization_id, "a@acme.com", &[]).await;
    app.add_member(&org.organization_id, "b@acme.com", &[]).await;
    app.service()
        .reserve_seat(pb::ReserveSeatRequest { organization_id: org.organization_id.clone(), ..Default::default() })
        .await
        .unwrap();
    let key = format!("{prefix}:tenancy:seats:{}", org.organization_id);
    // Written through by the change itself, before anyone asked.
    let cached: Option<String> = redis::cmd("HGET").arg(&key).arg("value").query_async(&mut conn).await.unwrap();
    assert_eq!(cached.as_deref(), Some("4:2:1"));
    let version: i64 = redis::cmd("HGET").arg(&key).arg("version").query_async(&mut conn).await.unwrap();
    let epoch = app.count("SELECT seat_epoch FROM organizations WHERE id = $1", &org.organization_id).await;
    assert_eq!(version, epoch);
    let ttl_ms: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
    assert!(ttl_ms > 0 && ttl_ms <= 60_000, "the cached usage expires ({ttl_ms} ms)");

    let usage = app.usage(&org.organization_id).await;
    assert_eq!((usage.seat_limit, usage.active, usage.reserved, usage.available), (4, 2, 1, 1));

    // Lost (flushed, restarted): rebuilt from the database on the next read.
    let _: i64 = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
    let usage = app.usage(&org.organization_id).await;
    assert_eq!((usage.active, usage.reserved), (2, 1));
    let rebuilt: Option<String> = redis::cmd("HGET").arg(&key).arg("value").query_async(&mut conn).await.unwrap();
    assert_eq!(rebuilt.as_deref(), Some("4:2:1"));

    // A writer that lost a race cannot put an older usage back.
    let _: i64 = redis::cmd("HSET")
        .arg(&key)
        .arg("version")
        .arg(version + 100)
        .arg("value")
        .arg("4:2:1")
        .query_async(&mut conn)
        .await
        .unwrap();
    app.add_member(&org.organization_id, "c@acme.com", &[]).await;
    let kept: Option<String> = redis::cmd("HGET").arg(&key).arg("value").query_async(&mut conn).await.unwrap();
    assert_eq!(kept.as_deref(), Some("4:2:1"), "an older epoch does not overwrite a newer one");
    let _: i64 = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
    assert_eq!(app.usage(&org.organization_id).await.active, 3);
}

async fn seat_usage_survives_redis_going_away(backend: Backend) {
    let upstream = redis_url().trim_start_matches("redis://").trim_end_matches('/').to_owned();
    let proxy = TcpProxy::start(upstream).await;
    let url = format!("redis://{}", proxy.addr);
    let app = spawn_app_with(backend, move |s| {
        s.redis_url = Some(SecretString::from(url));
        s.redis_key_prefix = prefix();
        s.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let org = app.create_org(2, &["acme.com"]).await;
    app.add_member(&org.organization_id, "a@acme.com", &[]).await;
    assert_eq!(app.usage(&org.organization_id).await.active, 1);

    proxy.cut();
    // Seat changes still happen (the database is the authority) and reads fall back to it.
    app.add_member(&org.organization_id, "b@acme.com", &[]).await;
    let usage = app.usage(&org.organization_id).await;
    assert_eq!((usage.active, usage.available), (2, 0));
    let full = app
        .operator()
        .add_member(pb::AddMemberRequest {
            organization_id: org.organization_id.clone(),
            email: "c@acme.com".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(full.unwrap_err().code(), tonic::Code::ResourceExhausted);

    // Readiness does not follow Redis: calls still succeed without it (above), so the pods stay
    // in their Services. Once the cache probe has seen Redis gone, the metric says so and the
    // service is still SERVING.
    loop {
        if app.scrape_metrics().await.lines().any(|l| l == "lanyard_redis_up 0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut health = HealthClient::new(app.channel());
    let status = health
        .check(HealthCheckRequest { service: "lanyard.tenancy.v1.TenancyService".into() })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
}
