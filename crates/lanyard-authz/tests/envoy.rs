//! Envoy's ext_authz `Check` called directly, for what the workspace test (tests/tests/authz_layer.rs,
//! against a running token service) does not cover: every upstream header with its overwrite
//! action and several permissions at once; revocations and expiry as 401 with their reason; the
//! scheme case; a request without attributes; and no decision possible as the gRPC status
//! UNAVAILABLE, which Envoy treats as a denial.

mod support;

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::{Authorization, HeaderAppendAction};
use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use envoy_types::pb::envoy::service::auth::v3 as envoy;
use lanyard_authz::envoy::{ExtAuthz, PERMISSION_EXTENSION, UPSTREAM_HEADERS};
use lanyard_authz::AccessClaims;
use lanyard_core::status::reason_of;
use support::{now_secs, Harness, REVOCATIONS};
use tonic::{Code, Request};

fn check(authorization: Option<&str>, permissions: Option<&str>) -> envoy::CheckRequest {
    let mut headers = HashMap::from([(":path".to_owned(), "/projects".to_owned())]);
    if let Some(value) = authorization {
        headers.insert("authorization".into(), value.into());
    }
    let context_extensions =
        permissions.map(|p| HashMap::from([(PERMISSION_EXTENSION.to_owned(), p.to_owned())])).unwrap_or_default();
    envoy::CheckRequest {
        attributes: Some(envoy::AttributeContext {
            request: Some(envoy::attribute_context::Request {
                http: Some(envoy::attribute_context::HttpRequest { headers, ..Default::default() }),
                ..Default::default()
            }),
            context_extensions,
            ..Default::default()
        }),
    }
}

fn headers(list: &[HeaderValueOption]) -> HashMap<String, (String, i32)> {
    list.iter().filter_map(|h| h.header.as_ref().map(|v| (v.key.clone(), (v.value.clone(), h.append_action)))).collect()
}

/// The denial's HTTP status and `x-lanyard-reason`, or the panic of an allow.
fn denial(response: &envoy::CheckResponse) -> (i32, String) {
    match &response.http_response {
        Some(envoy::check_response::HttpResponse::DeniedResponse(denied)) => {
            let reason = headers(&denied.headers).remove("x-lanyard-reason").expect("a reason").0;
            (denied.status.as_ref().expect("an HTTP status").code, reason)
        }
        other => panic!("not denied: {other:?}"),
    }
}

async fn ask(ext: &ExtAuthz, request: envoy::CheckRequest) -> envoy::CheckResponse {
    ext.check(Request::new(request)).await.expect("a decision").into_inner()
}

#[tokio::test]
async fn an_allowed_request_goes_upstream_with_every_principal_header_overwritten() {
    let h = Harness::new();
    let ext = ExtAuthz::new(h.authorizer.clone());
    let (m, token) = h.member(&["projects:read", "projects:write"]);
    for authorization in [format!("Bearer {token}"), format!("bearer {token}")] {
        let response = ask(&ext, check(Some(&authorization), Some("projects:read, projects:write"))).await;
        assert_eq!(response.status.as_ref().map(|s| s.code), Some(0), "{response:?}");
        let Some(envoy::check_response::HttpResponse::OkResponse(ok)) = &response.http_response else {
            panic!("not allowed: {response:?}");
        };
        let upstream = headers(&ok.headers);
        let overwrite = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;
        let expected =
            [m.user_id.to_string(), m.org_id.to_string(), "acme".into(), "engineer".into(), m.session_id.to_string()];
        for (name, value) in UPSTREAM_HEADERS.iter().zip(expected) {
            assert_eq!(upstream.get(*name), Some(&(value, overwrite)), "{name}");
        }
    }
}

#[tokio::test]
async fn revocations_and_expiry_are_401_with_their_reason() {
    let h = Harness::new();
    let ext = ExtAuthz::new(h.authorizer.clone());
    let facts = h.authorizer.facts();
    let mut cases = Vec::new();
    for revocation in REVOCATIONS {
        let (m, token) = h.member(&["projects:read"]);
        let (key, state) = (revocation.fact)(&m);
        facts.write(&key, &state).await.expect("write");
        cases.push((token, revocation.reason));
    }
    let (m, _) = h.member(&["projects:read"]);
    let now = now_secs();
    cases.push((
        h.signer.sign(&AccessClaims { iat: now - 900, nbf: now - 900, exp: now - 300, ..m.claims() }),
        "TOKEN_EXPIRED",
    ));

    for (token, reason) in cases {
        let response = ask(&ext, check(Some(&format!("Bearer {token}")), Some("projects:read"))).await;
        assert_eq!(denial(&response), (401, reason.to_owned()));
        assert_eq!(response.status.map(|s| s.code), Some(Code::Unauthenticated as i32), "{reason}");
    }
}

#[tokio::test]
async fn a_request_without_attributes_is_401_credentials_missing() {
    let h = Harness::new();
    let ext = ExtAuthz::new(h.authorizer.clone());
    let response = ask(&ext, envoy::CheckRequest { attributes: None }).await;
    assert_eq!(denial(&response), (401, "CREDENTIALS_MISSING".to_owned()));
}

#[tokio::test]
async fn no_decision_is_the_grpc_status_unavailable_never_ok() {
    let h = Harness::new();
    let ext = ExtAuthz::new(h.authorizer.clone());
    let (_, token) = h.member(&["projects:read"]);
    h.source.fail(true);
    let status = ext
        .check(Request::new(check(Some(&format!("Bearer {token}")), Some("projects:read"))))
        .await
        .expect_err("no decision");
    assert_eq!((status.code(), reason_of(&status).as_deref()), (Code::Unavailable, Some("AUTHORIZATION_UNAVAILABLE")));
}
