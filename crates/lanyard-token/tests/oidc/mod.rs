//! An application signing people in through Lanyard's OpenID Provider endpoints over real HTTP,
//! the way a browser and an OIDC client library would, with every redirect followed by hand and
//! cookies carried by hand (so each test sees, and may tamper with, every hop).

#![allow(dead_code)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use lanyard_proto::token::v1 as pb;
use lanyard_testkit::app::{op, TestApp, ISSUER};
use lanyard_testkit::idp::FakeIdp;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row;

/// Where the test application wants people back.
pub const REDIRECT_URI: &str = "https://app.example/callback";

/// A registered application.
pub struct Rp {
    pub http: reqwest::Client,
    /// `http://127.0.0.1:<port>`: where Lanyard's HTTP listener really is (the issuer is
    /// `https://lanyard.test`).
    pub base: String,
    pub client_id: String,
    pub secret: Option<String>,
}

/// One authorization request's secrets, as the application keeps them.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub verifier: String,
    pub state: String,
    pub nonce: String,
}

impl Attempt {
    pub fn new() -> Self {
        let r = || URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes().repeat(2));
        Self { verifier: r(), state: r(), nonce: r() }
    }

    pub fn challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.verifier.as_bytes()))
    }
}

/// An HTTP answer: status, Location, the cookies it sets (`name=value`), body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub location: Option<String>,
    pub cookies: Vec<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    /// The stable code of a Lanyard page.
    pub fn page(&self) -> Option<&str> {
        self.headers.get("x-lanyard-error").and_then(|v| v.to_str().ok())
    }

    /// A query parameter of the Location.
    pub fn param(&self, name: &str) -> Option<String> {
        let url = url::Url::parse(self.location.as_deref()?).ok()?;
        url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status();
    let headers = resp.headers().clone();
    let location = headers.get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let cookies = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_owned)
        .collect();
    Answer { status, location, cookies, headers, body: resp.text().await.unwrap_or_default() }
}

impl Rp {
    /// Registers an application (operator) with the test redirect URI.
    pub async fn register(app: &TestApp, confidential: bool) -> Self {
        let client_type = if confidential { pb::ClientType::Confidential } else { pb::ClientType::Public };
        let resp = app
            .tokens
            .clone()
            .register_client(op(pb::RegisterClientRequest {
                display_name: "Test application".into(),
                client_type: client_type as i32,
                redirect_uris: vec![REDIRECT_URI.into(), "https://app.example/other?tenant=a".into()],
                post_logout_redirect_uris: vec!["https://app.example/bye".into()],
                request_id: String::new(),
            }))
            .await
            .expect("register client")
            .into_inner();
        let client = resp.client.expect("client");
        Self {
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client"),
            base: format!("http://{}", app.http_addr),
            client_id: client.client_id,
            secret: (!resp.client_secret.is_empty()).then_some(resp.client_secret),
        }
    }

    /// A URL of Lanyard's (the issuer's) as the test reaches it.
    pub fn local(&self, url: &str) -> String {
        url.replacen(ISSUER, &self.base, 1)
    }

    /// `GET url` with `cookies`.
    pub async fn get(&self, url: &str, cookies: &[String]) -> Answer {
        let mut req = self.http.get(self.local(url));
        if !cookies.is_empty() {
            req = req.header(COOKIE, cookies.join("; "));
        }
        answer(req.send().await.expect("GET")).await
    }

    /// `POST url` with a form.
    pub async fn post(&self, path: &str, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> Answer {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        answer(req.send().await.expect("POST")).await
    }

    /// `POST path` with a form and `cookies`: a browser submitting a page's form.
    pub async fn submit(&self, path: &str, form: &[(&str, &str)], cookies: &[String]) -> Answer {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(form);
        if !cookies.is_empty() {
            req = req.header(COOKIE, cookies.join("; "));
        }
        answer(req.send().await.expect("POST")).await
    }

    /// The authorization request's query, with `changes` applied (a value of `None` removes).
    pub fn authorize_url(&self, attempt: &Attempt, org: &str, changes: &[(&str, Option<&str>)]) -> String {
        let challenge = attempt.challenge();
        let mut params: Vec<(String, String)> = [
            ("response_type", "code"),
            ("client_id", self.client_id.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "openid email profile"),
            ("state", attempt.state.as_str()),
            ("nonce", attempt.nonce.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("organization", org),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in changes {
            params.retain(|(name, _)| name != k);
            if let Some(v) = v {
                params.push((k.to_string(), v.to_string()));
            }
        }
        let mut url = url::Url::parse(&format!("{}/oauth2/authorize", self.base)).unwrap();
        url.query_pairs_mut().extend_pairs(params);
        url.to_string()
    }

    /// Authorize, then through the provider (which signs `subject`/`email` in) back to
    /// Lanyard's callback: returns the callback's answer.
    pub async fn through_provider(&self, idp: &FakeIdp, url: &str, subject: &str, email: &str) -> Answer {
        let started = self.get(url, &[]).await;
        assert_eq!(started.status, StatusCode::SEE_OTHER, "authorize: {started:?}");
        let to_idp = started.location.clone().expect("location");
        let origin = url::Url::parse(&idp.issuer).unwrap().origin().ascii_serialization();
        assert!(to_idp.starts_with(&format!("{origin}/")), "to the organization's provider: {to_idp}");
        idp.sign_in_next(subject, email);
        let at_idp = self.get(&to_idp, &[]).await;
        let back = at_idp.location.clone().unwrap_or_else(|| panic!("the provider answered {at_idp:?}"));
        assert!(back.starts_with(&format!("{ISSUER}/oauth2/callback?")), "{back}");
        self.get(&back, &started.cookies).await
    }

    /// The whole browser side of a sign-in: the code the application receives.
    pub async fn code(&self, idp: &FakeIdp, attempt: &Attempt, org: &str, subject: &str, email: &str) -> String {
        let url = self.authorize_url(attempt, org, &[]);
        let done = self.through_provider(idp, &url, subject, email).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "callback: {done:?}");
        let location = done.location.clone().unwrap();
        assert!(location.starts_with(&format!("{REDIRECT_URI}?")), "{location}");
        assert_eq!(done.param("state").as_deref(), Some(attempt.state.as_str()));
        assert_eq!(done.param("iss").as_deref(), Some(ISSUER));
        done.param("code").expect("code")
    }

    /// Redeems `code` with `verifier`, authenticating as this application.
    pub async fn redeem(&self, code: &str, verifier: &str) -> Answer {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", verifier),
        ];
        self.token_request(&form).await
    }

    /// A token-endpoint request authenticated as this application (Basic for a confidential
    /// client, `client_id` in the form for a public one).
    pub async fn token_request(&self, form: &[(&str, &str)]) -> Answer {
        self.authenticated("/oauth2/token", form).await
    }

    pub async fn authenticated(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        match &self.secret {
            Some(secret) => self.post(path, form, Some((&self.client_id, secret))).await,
            None => {
                let mut form = form.to_vec();
                form.push(("client_id", &self.client_id));
                self.post(path, &form, None).await
            }
        }
    }
}

/// The claims of a JWT, unverified.
pub fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("JSON")
}

/// Rows of the token service: (sessions, refresh tokens, flows, codes, client bindings).
pub async fn rows(app: &TestApp) -> (i64, i64, i64, i64, i64) {
    let pool = &app.parts.store.database().pool;
    let count = |table: &'static str| async move {
        sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
            .fetch_one(pool)
            .await
            .and_then(|r| r.try_get::<i64, _>("n"))
            .expect("count")
    };
    let (flows, codes, sessions) = app.parts.provider.store().counts().await.expect("counts");
    (count("sessions").await, count("refresh_tokens").await, flows, codes, sessions)
}

/// Whether `access_token` is allowed `members:read` in its organization by `Authorize`.
pub async fn authorized(app: &TestApp, access_token: &str) -> bool {
    let req = lanyard_proto::authz::v1::AuthorizeRequest {
        access_token: access_token.into(),
        permission: "members:read".into(),
        organization_id: None,
    };
    app.authz.clone().authorize(req).await.expect("Authorize").into_inner().allowed
}

/// `acme` with a Google connection and alice (admin), and a registered confidential application.
pub struct Fixture {
    pub app: TestApp,
    pub idp: FakeIdp,
    pub org: String,
    pub rp: Rp,
    // Dropped last: the app's databases.
    pub db: lanyard_testkit::app::TestDb,
}

impl Fixture {
    pub async fn new(backend: lanyard_testkit::app::Backend) -> Self {
        Self::with(backend, |_| {}).await
    }

    /// As [`Fixture::new`], with `tune` adjusting the token service's configuration.
    pub async fn with(
        backend: lanyard_testkit::app::Backend,
        tune: impl FnOnce(&mut lanyard_token::TokenConfig) + Send + 'static,
    ) -> Self {
        let db = lanyard_testkit::app::TestDb::new(backend).await;
        let app = TestApp::spawn_with(&db, tune).await;
        let idp = FakeIdp::start(lanyard_testkit::idp::Kind::Google, "acme.com").await;
        let org = app.create_org("acme", &["acme.com"], "").await;
        app.connect(&org, &idp).await;
        app.add_member(&org, "alice@acme.com", &["admin"]).await;
        let rp = Rp::register(&app, true).await;
        Self { app, idp, org, rp, db }
    }

    /// Alice's code and the attempt that got it.
    pub async fn code(&self) -> (String, Attempt) {
        let attempt = Attempt::new();
        let code = self.rp.code(&self.idp, &attempt, &self.org, "alice-sub", "alice@acme.com").await;
        (code, attempt)
    }
}

/// Asserts an OAuth error answer from the token endpoint.
#[track_caller]
pub fn assert_oauth_error(answer: &Answer, status: StatusCode, error: &str) {
    assert_eq!((answer.status, answer.json()["error"].as_str()), (status, Some(error)), "{answer:?}");
    assert_eq!(answer.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
}

/// Asserts a Lanyard page with `code`, and no redirect.
#[track_caller]
pub fn assert_page(answer: &Answer, code: &str) {
    assert_eq!(answer.page(), Some(code), "{answer:?}");
    assert!(answer.location.is_none(), "a page, not a redirect: {answer:?}");
    assert!(!answer.body.contains("panicked") && answer.body.contains("<h1>"), "{}", answer.body);
}

/// The forms of a hosted page: each form's hidden inputs, in order (values unescaped).
pub fn forms(body: &str) -> Vec<Vec<(String, String)>> {
    let unescape = |v: &str| {
        v.replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    };
    let attr = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        Some(unescape(&tag[start..start + tag[start..].find('"')?]))
    };
    body.split("<form")
        .skip(1)
        .map(|form| {
            let form = form.split("</form>").next().unwrap_or_default();
            form.split("<input")
                .skip(1)
                .filter_map(|tag| {
                    let tag = tag.split('>').next()?;
                    tag.contains("type=\"hidden\"").then(|| Some((attr(tag, "name")?, attr(tag, "value")?))).flatten()
                })
                .collect()
        })
        .collect()
}

/// A hidden value of a form.
pub fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {name} in {form:?}"))
}
