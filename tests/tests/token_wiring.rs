//! The token service as `lanyard serve` wires it: beside tenancy and invitation in one process,
//! JWKS over gRPC and HTTP, key rotation, Authorize, and the other services refusing forged
//! access tokens. (Sign-in with real ID tokens is tested in `crates/lanyard-token`.)

use lanyard::ServiceName;
use lanyard_core::db::Backend;
use lanyard_proto::authz::v1 as apb;
use lanyard_proto::authz::v1::authorization_service_client::AuthorizationServiceClient;
use lanyard_proto::tenancy::v1 as pb;
use lanyard_proto::token::v1 as tpb;
use lanyard_tests::{assert_error, backend_tests, http_get, spawn_services, TestApp, OPERATOR_KEY};
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;

backend_tests!(all_three_services_serve_together);

async fn all(backend: Backend) -> TestApp {
    spawn_services(backend, &[ServiceName::Tenancy, ServiceName::Invitation, ServiceName::Token], |s| {
        s.metrics_addr = Some("127.0.0.1:0".parse().unwrap())
    })
    .await
}

async fn all_three_services_serve_together(backend: Backend) {
    let app = all(backend).await;
    let mut health = HealthClient::new(app.channel());
    for service in [
        "lanyard.tenancy.v1.TenancyService",
        "lanyard.invitation.v1.InvitationService",
        "lanyard.token.v1.TokenService",
    ] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest { service: service.into() })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "{service}");
    }

    // JWKS needs no credentials, over gRPC and over HTTP, and both agree.
    let jwks = app.tokens_with(None).get_jwks(tpb::GetJwksRequest::default()).await.unwrap().into_inner();
    assert!(!jwks.keys.is_empty());
    assert!(jwks.keys.iter().all(|k| k.kty == "EC" && k.alg == "ES256"));
    assert!(!jwks.jwks_json.contains("\"d\""), "a published key carries no private part: {}", jwks.jwks_json);
    let http = app.http_addr.expect("the token service serves HTTP");
    let document = http_get(http, "/.well-known/jwks.json").await;
    assert!(document.to_ascii_lowercase().contains("cache-control"), "{document}");
    for key in &jwks.keys {
        assert!(document.contains(&key.kid), "{} missing from {document}", key.kid);
    }
    let discovery = http_get(http, "/.well-known/openid-configuration").await;
    assert!(discovery.contains("\"jwks_uri\"") && discovery.contains("/.well-known/jwks.json"), "{discovery}");

    // Rotation is the operator's; a key is published before it signs.
    let operator = format!("Bearer {OPERATOR_KEY}");
    assert_error(
        app.tokens_with(None).rotate_signing_key(tpb::RotateSigningKeyRequest::default()).await,
        Code::Unauthenticated,
        "CREDENTIALS_MISSING",
    );
    // A fresh next key has not been published long enough for JWKS caches to know it.
    assert_error(
        app.tokens_with(Some(&operator)).rotate_signing_key(tpb::RotateSigningKeyRequest::default()).await,
        Code::FailedPrecondition,
        "SIGNING_KEY_NOT_PUBLISHED",
    );
    let rotated = app
        .tokens_with(Some(&operator))
        .rotate_signing_key(tpb::RotateSigningKeyRequest { force: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let after = app.tokens_with(None).get_jwks(tpb::GetJwksRequest::default()).await.unwrap().into_inner();
    assert!(after.keys.iter().any(|k| k.kid == rotated.kid), "the new key is published");

    // A forged token authorizes nothing and is no caller.
    let forged = "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.eyJzdWIiOiJ4In0.";
    let decision = AuthorizationServiceClient::new(app.channel())
        .authorize(apb::AuthorizeRequest {
            access_token: forged.into(),
            permission: "members:read".into(),
            organization_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!decision.allowed);
    assert_eq!(decision.reason, apb::Decision::TokenInvalid as i32);
    assert!(decision.principal.is_none());
    let metrics = app.scrape_metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("lanyard_authorize_decisions_total{") && l.contains("DECISION_TOKEN_INVALID")),
        "Authorize decisions are counted by reason:\n{metrics}"
    );
    assert_error(
        app.client_with(Some(&format!("Bearer {forged}")))
            .list_organizations(pb::ListOrganizationsRequest::default())
            .await,
        Code::Unauthenticated,
        "CREDENTIALS_INVALID",
    );
}
