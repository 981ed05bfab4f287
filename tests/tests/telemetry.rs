//! Telemetry as a platform engineer sees it: one trace across services, received by an OTLP
//! collector on loopback, and logs of a whole story that never contain a key, a secret or a token.
//! One test per process: telemetry is installed process-wide.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lanyard::settings::LogFormat;
use lanyard::ServiceName;
use lanyard_core::db::Backend;
use lanyard_proto::invitation::v1 as ipb;
use lanyard_proto::tenancy::v1 as pb;
use lanyard_tests::{spawn_services, OPERATOR_KEY, SERVICE_KEY};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::Span;

/// An OTLP/gRPC trace collector that keeps every span it receives.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Captured log output.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_crosses_services_and_logs_keep_no_secrets() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = collector.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(server))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    // SAFETY of the environment change: set before any other thread of this test binary reads it.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
    std::env::set_var("RUST_LOG", "debug,h2=info,hyper=info,tower=info,sqlx=info");
    let logs = Logs::default();
    let telemetry = lanyard::telemetry::init_with_writer(LogFormat::Json, logs.clone());

    // Two processes' worth of services: invitation calls tenancy over a socket.
    let tenancy = spawn_services(Backend::Sqlite, &[ServiceName::Tenancy], |_| {}).await;
    let url = tenancy.endpoint.clone();
    let invitation =
        spawn_services(Backend::Sqlite, &[ServiceName::Invitation], move |s| s.tenancy_url = Some(url)).await;

    let org = tenancy.create_org(3, &["acme.com"]).await;
    let operator = format!("Bearer {OPERATOR_KEY}");
    invitation
        .invitations_with(Some(&operator))
        .create_invitation(ipb::CreateInvitationRequest {
            organization_id: org.organization_id.clone(),
            email: "it@acme.com".into(),
            roles: vec!["admin".into()],
            send_email: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut token = None;
    for _ in 0..400 {
        if let Some(t) = invitation.mailed_tokens().pop() {
            token = Some(t);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let token = token.expect("the invitation email was written");
    invitation
        .invitations_with(None)
        .preview_invitation(ipb::PreviewInvitationRequest { token: token.clone() })
        .await
        .unwrap();
    let secret = "client-secret-that-must-stay-sealed";
    let connection = tenancy
        .operator()
        .create_sso_connection(pb::CreateSsoConnectionRequest {
            organization_id: org.organization_id.clone(),
            kind: pb::SsoConnectionKind::Okta as i32,
            issuer: "https://acme.okta.com".into(),
            client_id: "okta-client".into(),
            client_secret: secret.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .connection
        .unwrap();
    invitation
        .invitations_with(Some(&format!("Bearer {SERVICE_KEY}")))
        .accept_invitation(ipb::AcceptInvitationRequest {
            token: token.clone(),
            identity: Some(ipb::VerifiedIdentity {
                user_id: String::new(),
                email: "it@acme.com".into(),
                email_verified: true,
                issuer: "https://acme.okta.com".into(),
                subject: "it".into(),
                connection_id: connection.connection_id,
                display_name: "IT".into(),
            }),
            request_id: String::new(),
        })
        .await
        .unwrap();

    // A call the process does not serve: a server-side error by OpenTelemetry's conventions.
    let wrong = tonic::transport::Channel::from_shared(invitation.endpoint.clone()).unwrap().connect().await.unwrap();
    let refused = pb::tenancy_service_client::TenancyServiceClient::new(wrong)
        .get_organization(pb::GetOrganizationRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented);

    // Export what is buffered (the exporter blocks, so off the async workers).
    let telemetry = tokio::task::spawn_blocking(move || {
        telemetry.flush();
        telemetry
    })
    .await
    .unwrap();

    let spans = collector.0.lock().unwrap().clone();
    let by_id: HashMap<Vec<u8>, &Span> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    let create =
        spans.iter().find(|s| s.name == "/lanyard.invitation.v1.InvitationService/CreateInvitation").unwrap_or_else(
            || panic!("no CreateInvitation span among {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>()),
        );
    let reserve = spans
        .iter()
        .find(|s| s.name == "/lanyard.tenancy.v1.TenancyService/ReserveSeat")
        .expect("tenancy's ReserveSeat span");
    assert_eq!(reserve.trace_id, create.trace_id, "the tenancy call belongs to the invitation request's trace");
    // Walk up from tenancy's server span: it descends from the invitation server span.
    let mut cursor = reserve;
    let mut hops = 0;
    while cursor.span_id != create.span_id {
        cursor = by_id.get(&cursor.parent_span_id).unwrap_or_else(|| panic!("broken parent chain at {}", cursor.name));
        hops += 1;
        assert!(hops < 20, "no path from ReserveSeat to CreateInvitation");
    }
    assert!(hops >= 1);

    // The invitation process's call to tenancy is a CLIENT span, the parent of tenancy's server span.
    let client = by_id.get(&reserve.parent_span_id).expect("ReserveSeat's server span has a parent");
    let client_kind = opentelemetry_proto::tonic::trace::v1::span::SpanKind::Client as i32;
    assert_eq!((client.kind, client.name.as_str()), (client_kind, "/lanyard.tenancy.v1.TenancyService/ReserveSeat"));

    // OpenTelemetry's rpc.* attributes, and the error status only for a server-side failure.
    let attribute = |span: &Span, key: &str| {
        span.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.clone()).and_then(|v| v.value).map(|v| {
            use opentelemetry_proto::tonic::common::v1::any_value::Value;
            match v {
                Value::StringValue(s) => s,
                Value::IntValue(i) => i.to_string(),
                other => format!("{other:?}"),
            }
        })
    };
    let expect = [
        ("rpc.system", "grpc"),
        ("rpc.service", "lanyard.invitation.v1.InvitationService"),
        ("rpc.method", "CreateInvitation"),
        ("rpc.grpc.status_code", "0"),
        ("code", "OK"),
    ];
    for (key, value) in expect {
        assert_eq!(attribute(create, key).as_deref(), Some(value), "{key} of {:?}", create.attributes);
    }
    assert_eq!(attribute(client, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(attribute(client, "rpc.method").as_deref(), Some("ReserveSeat"));
    let error = opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32;
    assert_ne!(create.status.as_ref().map(|s| s.code), Some(error), "a successful call is no error");
    // (tenancy's own GetOrganization spans, called by invitation, are OK.)
    let unserved = spans
        .iter()
        .find(|s| {
            s.name == "/lanyard.tenancy.v1.TenancyService/GetOrganization"
                && attribute(s, "rpc.grpc.status_code").as_deref() == Some("12")
        })
        .expect("the refused call's span, with UNIMPLEMENTED's code");
    assert_eq!(attribute(unserved, "code").as_deref(), Some("UNIMPLEMENTED"));
    assert_eq!(unserved.status.as_ref().map(|s| s.code), Some(error), "UNIMPLEMENTED is a server error");

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("CreateInvitation"), "the logs were captured");
    // Log lines inside a call name its trace and span, as exported.
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    for needle in
        [format!("\"trace_id\":\"{}\"", hex(&create.trace_id)), format!("\"span_id\":\"{}\"", hex(&create.span_id))]
    {
        assert!(text.contains(&needle), "no log line with {needle}");
    }
    for (what, needle) in [
        ("operator key", OPERATOR_KEY),
        ("service key", SERVICE_KEY),
        ("invitation token", token.as_str()),
        ("SSO client secret", secret),
        ("encryption key", lanyard_tests::KEK),
    ] {
        assert!(!text.contains(needle), "the logs contain the {what}");
    }
    assert!(!text.contains("token=") && !text.contains("/invite/"), "the logs contain an invitation link");
    drop(telemetry);
}
