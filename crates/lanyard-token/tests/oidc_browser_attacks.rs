//! Attacks on the browser's side of sign-in (`/oauth2/authorize`, `/oauth2/callback`): each is
//! refused, and the refusal writes nothing (no flow, session, refresh token or code) and issues
//! nothing.

mod oidc;
mod support;

use oidc::*;
use reqwest::StatusCode;
use support::idp::{FakeIdp, Kind};
use support::*;

/// Errors before the redirect URI is trusted are pages; the URI must match a registered one
/// byte for byte.
async fn redirect_uri_mismatch(backend: Backend) {
    let f = Fixture::new(backend).await;
    let attempt = Attempt::new();
    for bad in [
        None,
        Some("https://app.example/callbac"),
        Some("https://app.example/callback/"),
        Some("https://app.example/callback/x"),
        Some("https://app.example/Callback"),
        Some("https://APP.example/callback"),
        Some("https://app.example/%63allback"),
        Some("https://app.example/callback?x=1"),
        Some("https://app.example/callback#x"),
        Some("https://app.example/other"),
        Some("https://app.example/other?tenant=a&x=1"),
        Some("http://app.example/callback"),
        Some("https://app.example.evil.test/callback"),
        Some("https://evil.test/?https://app.example/callback"),
    ] {
        let url = f.rp.authorize_url(&attempt, &f.org, &[("redirect_uri", bad)]);
        let answer = f.rp.get(&url, &[]).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_page(&answer, "redirect_uri_mismatch");
    }
    // A repeated redirect_uri is refused as a whole, before anything is trusted.
    let url = f.rp.authorize_url(&attempt, &f.org, &[]) + "&redirect_uri=https%3A%2F%2Fevil.test%2F";
    assert_page(&f.rp.get(&url, &[]).await, "invalid_request");
    assert_eq!(rows(&f.app).await, (0, 0, 0, 0, 0));

    // The other registered URI works, but a code is redeemed only with the URI it was issued for.
    let (code, attempt) = f.code().await;
    let other = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "https://app.example/other?tenant=a"),
        ("code_verifier", attempt.verifier.as_str()),
    ];
    assert_oauth_error(&f.rp.token_request(&other).await, StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(f.rp.redeem(&code, &attempt.verifier).await.status, StatusCode::OK, "the code was not spent");
}

/// An application nobody registered gets a page, never a redirect, and the token endpoint
/// refuses it.
async fn unregistered_client(backend: Backend) {
    let f = Fixture::new(backend).await;
    let attempt = Attempt::new();
    for client in [Some("lc_unknown"), None, Some("")] {
        let url = f.rp.authorize_url(&attempt, &f.org, &[("client_id", client)]);
        assert_page(&f.rp.get(&url, &[]).await, "unknown_client");
    }
    let form = [("grant_type", "authorization_code"), ("code", "x"), ("client_id", "lc_unknown")];
    assert_oauth_error(&f.rp.post("/oauth2/token", &form, None).await, StatusCode::UNAUTHORIZED, "invalid_client");
    assert_eq!(rows(&f.app).await, (0, 0, 0, 0, 0));
}

/// PKCE S256 is required: a missing or `plain` method, or a malformed challenge, is refused
/// with a redirect that carries the error, the state and the issuer; nothing is written.
async fn pkce_required(backend: Backend) {
    let f = Fixture::new(backend).await;
    let attempt = Attempt::new();
    let cases: [&[(&str, Option<&str>)]; 5] = [
        &[("code_challenge_method", None)],
        &[("code_challenge_method", Some("plain")), ("code_challenge", Some(attempt.verifier.as_str()))],
        &[("code_challenge", None)],
        &[("code_challenge", Some("short"))],
        &[("code_challenge_method", Some("s256"))],
    ];
    for changes in cases {
        let answer = f.rp.get(&f.rp.authorize_url(&attempt, &f.org, changes), &[]).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{changes:?}");
        assert!(answer.location.as_deref().unwrap().starts_with(REDIRECT_URI));
        assert_eq!(answer.param("error").as_deref(), Some("invalid_request"), "{changes:?}");
        assert_eq!(answer.param("state").as_deref(), Some(attempt.state.as_str()));
        assert_eq!(answer.param("iss").as_deref(), Some(ISSUER));
        assert!(answer.param("code").is_none());
    }
    let no_openid = f.rp.get(&f.rp.authorize_url(&attempt, &f.org, &[("scope", Some("email"))]), &[]).await;
    assert_eq!(no_openid.param("error").as_deref(), Some("invalid_scope"));
    let token = f.rp.get(&f.rp.authorize_url(&attempt, &f.org, &[("response_type", Some("token"))]), &[]).await;
    assert_eq!(token.param("error").as_deref(), Some("unsupported_response_type"));
    assert_eq!(rows(&f.app).await, (0, 0, 0, 0, 0));

    // At the token endpoint: a missing or wrong verifier is refused and spends nothing.
    let (code, attempt) = f.code().await;
    let before = rows(&f.app).await;
    let missing = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", REDIRECT_URI)];
    assert_oauth_error(&f.rp.token_request(&missing).await, StatusCode::BAD_REQUEST, "invalid_request");
    let other = Attempt::new();
    assert_oauth_error(&f.rp.redeem(&code, &other.verifier).await, StatusCode::BAD_REQUEST, "invalid_grant");
    // The challenge itself is not a verifier (a `plain` downgrade).
    assert_oauth_error(&f.rp.redeem(&code, &attempt.challenge()).await, StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(rows(&f.app).await, before, "refusals wrote nothing");
    assert_eq!(f.rp.redeem(&code, &attempt.verifier).await.status, StatusCode::OK);
}

/// The callback needs the state Lanyard sent and the cookie of the browser that started the
/// sign-in; without both it takes nothing, and the right browser can still finish.
async fn state_and_browser_binding(backend: Backend) {
    let f = Fixture::new(backend).await;
    let attempt = Attempt::new();
    let started = f.rp.get(&f.rp.authorize_url(&attempt, &f.org, &[]), &[]).await;
    f.idp.sign_in_next("alice-sub", "alice@acme.com");
    let back = f.rp.get(started.location.as_deref().unwrap(), &[]).await.location.unwrap();
    let callback = url::Url::parse(&back).unwrap();
    let code = callback.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let with = |pairs: &[(&str, &str)]| {
        let mut url = url::Url::parse(&format!("{ISSUER}/oauth2/callback")).unwrap();
        url.query_pairs_mut().extend_pairs(pairs);
        url.to_string()
    };
    let state = callback.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let before = rows(&f.app).await;
    // No state; a wrong state; the right state from another browser (no cookie, or another
    // flow's cookie); the right cookie under another name.
    let stranger = f.rp.get(&f.rp.authorize_url(&Attempt::new(), &f.org, &[]), &[]).await.cookies;
    let forged = vec![format!("{}=x", started.cookies[0].split('=').next().unwrap())];
    for (url, cookies) in [
        (with(&[("code", &code)]), started.cookies.clone()),
        (with(&[("code", &code), ("state", "forged")]), started.cookies.clone()),
        (with(&[("code", &code), ("state", &state)]), vec![]),
        (with(&[("code", &code), ("state", &state)]), stranger),
        (with(&[("code", &code), ("state", &state)]), forged),
    ] {
        let answer = f.rp.get(&url, &cookies).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_page(&answer, "sign_in_expired");
    }
    let (sessions, refresh, _, codes, bindings) = rows(&f.app).await;
    assert_eq!((sessions, refresh, codes, bindings), (before.0, before.1, before.3, before.4), "nothing written");
    // The browser that started it finishes it, once.
    let done = f.rp.get(&back, &started.cookies).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{done:?}");
    assert!(done.cookies.iter().any(|c| c.ends_with('=')), "the flow cookie is cleared");
    assert_page(&f.rp.get(&back, &started.cookies).await, "sign_in_expired");
    assert_eq!(rows(&f.app).await.0, 1, "one session");
}

/// The provider's ID token must carry the nonce Lanyard sent it.
async fn upstream_nonce_mismatch(backend: Backend) {
    let f = Fixture::new(backend).await;
    f.idp.patch_id_tokens(serde_json::json!({ "nonce": "someone-elses" }));
    let url = f.rp.authorize_url(&Attempt::new(), &f.org, &[]);
    let answer = f.rp.through_provider(&f.idp, &url, "alice-sub", "alice@acme.com").await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_page(&answer, "provider_refused");
    let (sessions, refresh, _, codes, bindings) = rows(&f.app).await;
    assert_eq!((sessions, refresh, codes, bindings), (0, 0, 0, 0));
}

/// The provider refusing, or unreachable, ends on a page with a stable message.
async fn upstream_error(backend: Backend) {
    let f = Fixture::new(backend).await;
    let attempt = Attempt::new();
    let started = f.rp.get(&f.rp.authorize_url(&attempt, &f.org, &[]), &[]).await;
    f.idp.fail_next_authorization("access_denied");
    let back = f.rp.get(started.location.as_deref().unwrap(), &[]).await.location.unwrap();
    let answer = f.rp.get(&back, &started.cookies).await;
    assert_page(&answer, "provider_refused");
    assert!(answer.body.contains("did not sign you in"), "{}", answer.body);
    let (sessions, refresh, _, codes, _) = rows(&f.app).await;
    assert_eq!((sessions, refresh, codes), (0, 0, 0));

    // A provider that is gone: discovery fails, a page says so.
    let gone = FakeIdp::start(Kind::Okta, "gone.io").await;
    let org = f.app.create_org("gone", &["gone.io"], "").await;
    f.app.connect(&org, &gone).await;
    drop(gone);
    let answer = f.rp.get(&f.rp.authorize_url(&attempt, &org, &[]), &[]).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_page(&answer, "provider_unavailable");
    assert!(!answer.body.contains("127.0.0.1"), "no detail leaks: {}", answer.body);

    // A provider whose discovery sends the code redemption to an internal address: refused before
    // any redirect, on a page, with no flow written.
    let inward = ["https://169.254.169.254/latest/token", "https://10.0.0.1/token", "http://192.168.0.1/token"];
    for (i, endpoint) in inward.into_iter().enumerate() {
        let issuer = discovery_naming_token_endpoint(endpoint).await;
        let org = f.app.create_org(&format!("inward-{i}"), &[], "").await;
        f.app
            .tenancy
            .clone()
            .create_sso_connection(op(lanyard_proto::tenancy::v1::CreateSsoConnectionRequest {
                organization_id: org.clone(),
                kind: lanyard_proto::tenancy::v1::SsoConnectionKind::Okta as i32,
                issuer: issuer.clone(),
                client_id: "lanyard".into(),
                ..Default::default()
            }))
            .await
            .expect("create SSO connection");
        let answer = f.rp.get(&f.rp.authorize_url(&attempt, &org, &[]), &[]).await;
        assert_page(&answer, "provider_unavailable");
        assert!(answer.location.is_none(), "{endpoint}: redirected to {:?}", answer.location);
        let (sessions, refresh, flows, codes, _) = rows(&f.app).await;
        assert_eq!((sessions, refresh, flows, codes), (0, 0, 0, 0), "{endpoint}");
    }
}

/// A loopback provider whose discovery document is sound except for its `token_endpoint`; returns
/// its issuer. It answers every request with the document.
async fn discovery_naming_token_endpoint(token_endpoint: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let body = serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": token_endpoint,
        "jwks_uri": format!("{issuer}/keys"),
        "id_token_signing_alg_values_supported": ["RS256"],
    })
    .to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(format!("{head}{body}").as_bytes()).await;
        }
    });
    issuer
}

backend_tests!(
    redirect_uri_mismatch,
    unregistered_client,
    pkce_required,
    state_and_browser_binding,
    upstream_nonce_mismatch,
    upstream_error
);
