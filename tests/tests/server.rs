//! The server around the services: gRPC health, reflection, unimplemented services, shutdown.

use lanyard::ServiceName;
use lanyard_core::db::Backend;
use lanyard_tests::{backend_tests, spawn_app, spawn_services};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

backend_tests!(health_reports_each_service, reflection_lists_the_api, later_services_answer_unimplemented);

async fn health_reports_each_service(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mut health = HealthClient::new(app.channel());
    let status = |s: &str| HealthCheckRequest { service: s.to_owned() };
    let serving = health.check(status("lanyard.tenancy.v1.TenancyService")).await.unwrap().into_inner();
    assert_eq!(serving.status, ServingStatus::Serving as i32);
    let overall = health.check(status("")).await.unwrap().into_inner();
    assert_eq!(overall.status, ServingStatus::Serving as i32);
    let unknown = health.check(status("lanyard.nope.v1.Nope")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    // Health needs no credentials; stopping the server ends cleanly.
    app.stop().await;
}

/// The services reflection lists on a process running `services`.
async fn listed(backend: Backend, services: &[ServiceName]) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let app = spawn_services(backend, services, |_| {}).await;
    let mut client = ServerReflectionClient::new(app.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client.server_reflection_info(futures::stream::iter(vec![request])).await.unwrap().into_inner();
    let response = responses.message().await.unwrap().expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response {response:?}");
    };
    list.service.into_iter().map(|s| s.name).collect()
}

async fn reflection_lists_the_api(backend: Backend) {
    let all = [
        "lanyard.tenancy.v1.TenancyService",
        "lanyard.invitation.v1.InvitationService",
        "lanyard.token.v1.TokenService",
        "lanyard.authz.v1.AuthorizationService",
        "grpc.health.v1.Health",
    ];
    let names = listed(backend, &ServiceName::ALL).await;
    for expected in all {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    // A process of a split deployment lists what it serves, and nothing it would answer
    // UNIMPLEMENTED.
    let names = listed(backend, &[ServiceName::Tenancy]).await;
    for expected in ["lanyard.tenancy.v1.TenancyService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    for absent in &all[1..4] {
        assert!(!names.iter().any(|n| n == absent), "{absent} listed by a tenancy-only process: {names:?}");
    }
}

async fn later_services_answer_unimplemented(backend: Backend) {
    use lanyard_proto::authz::v1::authorization_service_client::AuthorizationServiceClient;
    use lanyard_proto::authz::v1::AuthorizeRequest;

    let app = spawn_app(backend).await;
    let mut authz = AuthorizationServiceClient::new(app.channel());
    let status = authz
        .authorize(AuthorizeRequest {
            access_token: "x".into(),
            permission: "members:read".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}
