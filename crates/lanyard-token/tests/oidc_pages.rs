//! The hosted pages over real HTTP: the invitation landing (`/invite/{token}`) and email-first
//! sign-in (`/sign-in`), each page's way through to the application's code, the one neutral page
//! for every unusable invitation, CSRF refusals that write nothing, home-realm discovery that only
//! a verified domain drives, and the per-peer limit.

mod oidc;
mod support;

use lanyard_proto::invitation::v1 as ipb;
use oidc::*;
use reqwest::StatusCode;
use support::idp::{FakeIdp, Kind};
use support::*;

/// The application's login route (OpenID Connect third-party-initiated login).
const LOGIN: &str = "https://app.example/login";

async fn fixture(backend: Backend) -> Fixture {
    Fixture::with(backend, |c| c.application_login_url = Some(LOGIN.into())).await
}

/// The cookie `name=value` among `cookies`.
fn cookie_named(cookies: &[String], name: &str) -> String {
    cookies
        .iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .cloned()
        .unwrap_or_else(|| panic!("{name}: {cookies:?}"))
}

/// A `Set-Cookie` header of `answer` for `name`, whole.
fn set_cookie_header(answer: &Answer, name: &str) -> String {
    answer
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie: {answer:?}"))
        .to_owned()
}

/// The landing page of `token`, its first button's form and the browser's CSRF cookie.
async fn landing(f: &Fixture, token: &str) -> (Answer, Vec<(String, String)>, String) {
    let page = f.rp.get(&format!("{}/invite/{token}", f.rp.base), &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    let form = forms(&page.body).into_iter().next().expect("a button");
    let csrf = cookie_named(&page.cookies, "__Host-lanyard-csrf");
    (page, form, csrf)
}

/// The browser, from the application's redirect to Lanyard (with `cookies`) through the provider
/// (signing `subject`/`email` in) back to Lanyard's callback: the callback's answer.
async fn via_provider(f: &Fixture, url: &str, cookies: &[String], subject: &str, email: &str) -> Answer {
    let started = f.rp.get(url, cookies).await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{started:?}");
    let origin = url::Url::parse(&f.idp.issuer).unwrap().origin().ascii_serialization();
    let to_idp = started.location.clone().unwrap();
    assert!(to_idp.starts_with(&format!("{origin}/")), "to the organization's provider: {to_idp}");
    f.idp.sign_in_next(subject, email);
    let back = f.rp.get(&to_idp, &[]).await.location.expect("back from the provider");
    let mut all = cookies.to_vec();
    all.extend(started.cookies.iter().cloned());
    f.rp.get(&back, &all).await
}

/// Redeems the code of a callback's answer and returns the ID token's claims and the access token.
async fn redeemed(f: &Fixture, done: &Answer, attempt: &Attempt) -> (serde_json::Value, String) {
    let code = done.param("code").unwrap_or_else(|| panic!("no code: {done:?}"));
    let body = f.rp.redeem(&code, &attempt.verifier).await.json();
    (claims(body["id_token"].as_str().expect("an ID token")), body["access_token"].as_str().unwrap().to_owned())
}

/// The seed's story through the landing page: the link shows the organization, the invited email
/// and the provider's button; the button hands the browser to the application's login route with
/// the email as a hint (the token stays in an HttpOnly cookie); the application's ordinary request
/// comes back, the invited person signs in at the provider and the application holds an admin's
/// access token. The link is then used: it shows the neutral page.
async fn invitation_landing_signs_in(backend: Backend) {
    let f = fixture(backend).await;
    let token = f.app.invitation_token(OPERATOR_KEY, &f.org, "it@acme.com", &["admin"]).await;
    let (page, form, csrf) = landing(&f, &token).await;
    assert_eq!(page.headers["x-lanyard-page"], "invitation");
    assert_eq!(page.headers["content-security-policy"], "default-src 'self'; frame-ancestors 'none'");
    assert!(page.body.starts_with("<!doctype html>\n<html lang=\"en\">"), "{}", page.body);
    assert!(page.body.contains("Join acme") && page.body.contains("it@acme.com"), "{}", page.body);
    assert!(page.body.contains("Continue with Google Workspace"), "{}", page.body);
    assert!(!page.body.contains(&token), "the token is not repeated in the page");
    let set = set_cookie_header(&page, "__Host-lanyard-csrf");
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(set.contains(attribute), "{set}");
    }
    let css = f.rp.get(&format!("{}/assets/lanyard.css", f.rp.base), &[]).await;
    assert!(css.status == StatusCode::OK && css.body.contains(":focus-visible"), "{css:?}");

    let fields = [("csrf", field(&form, "csrf")), ("connection", field(&form, "connection"))];
    let chosen = f.rp.submit(&format!("/invite/{token}"), &fields, std::slice::from_ref(&csrf)).await;
    assert_eq!(chosen.status, StatusCode::SEE_OTHER, "{chosen:?}");
    let to_app = chosen.location.clone().unwrap();
    assert!(to_app.starts_with(&format!("{LOGIN}?")), "{to_app}");
    assert_eq!(
        (chosen.param("iss").as_deref(), chosen.param("login_hint").as_deref()),
        (Some(ISSUER), Some("it@acme.com"))
    );
    assert!(!to_app.contains(&token), "the token travels in no other URL: {to_app}");
    let invitation = cookie_named(&chosen.cookies, "__Host-lanyard-invitation");
    assert!(set_cookie_header(&chosen, "__Host-lanyard-invitation").contains("HttpOnly"));
    assert_eq!(rows(&f.app).await, (0, 0, 0, 0, 0), "choosing writes nothing");

    // The application starts an ordinary request, naming no organization.
    let attempt = Attempt::new();
    let url = f.rp.authorize_url(&attempt, "", &[("organization", None), ("login_hint", Some("it@acme.com"))]);
    let done = via_provider(&f, &url, &[invitation], "it-sub", "it@acme.com").await;
    assert!(done.location.as_deref().unwrap_or_default().starts_with(REDIRECT_URI), "{done:?}");
    let cleared = set_cookie_header(&done, "__Host-lanyard-invitation");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let (id, access) = redeemed(&f, &done, &attempt).await;
    assert_eq!((id["org_id"].as_str(), id["roles"].clone()), (Some(f.org.as_str()), serde_json::json!(["admin"])));
    assert!(authorized(&f.app, &access).await);

    let used = f.rp.get(&format!("{}/invite/{token}", f.rp.base), &[]).await;
    assert_page(&used, "invitation_invalid");
}

/// Unknown, malformed, expired, revoked and used links, and links of a suspended organization, all show one page: same status, same
/// bytes; posting to them the same. Nothing is written.
async fn unusable_invitations_look_alike(backend: Backend) {
    let f = fixture(backend).await;
    let invite = |email: &'static str| f.app.invitation_token(OPERATOR_KEY, &f.org, email, &["member"]);
    let (expired, revoked, used) =
        (invite("exp@acme.com").await, invite("rev@acme.com").await, invite("used@acme.com").await);
    // Expired: its time passed (the invitation service's own table).
    let db = lanyard_core::db::Database::connect(&f.db.config("invitation")).await.expect("invitation database");
    sqlx::query("UPDATE invitations SET expires_at = 1 WHERE email = 'exp@acme.com'").execute(&db.pool).await.unwrap();
    db.pool.close().await;
    // Revoked by the operator.
    let listed = f
        .app
        .invitations
        .clone()
        .list_invitations(op(ipb::ListInvitationsRequest { organization_id: f.org.clone(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    let id = listed.invitations.iter().find(|i| i.email == "rev@acme.com").unwrap().invitation_id.clone();
    let revoke =
        ipb::RevokeInvitationRequest { organization_id: f.org.clone(), invitation_id: id, ..Default::default() };
    f.app.invitations.clone().revoke_invitation(op(revoke)).await.expect("revoke");
    // Used, through the application's request.
    let url = f.rp.authorize_url(&Attempt::new(), "", &[("organization", None), ("invitation", Some(&used))]);
    let done = f.rp.through_provider(&f.idp, &url, "used-sub", "used@acme.com").await;
    assert!(done.param("code").is_some(), "{done:?}");
    // Pending, but its organization is suspended.
    let sus = f.app.create_org("sus", &["sus.io"], "").await;
    f.app.connect(&sus, &f.idp).await;
    let suspended = f.app.invitation_token(OPERATOR_KEY, &sus, "kim@sus.io", &["member"]).await;
    let suspend = lanyard_proto::tenancy::v1::UpdateOrganizationRequest {
        organization: Some(lanyard_proto::tenancy::v1::Organization {
            organization_id: sus.clone(),
            status: lanyard_proto::tenancy::v1::OrganizationStatus::Suspended as i32,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["status".into()] }),
        request_id: String::new(),
    };
    f.app.tenancy.clone().update_organization(op(suspend)).await.expect("suspend");
    let before = rows(&f.app).await;

    let unknown = "A".repeat(43);
    let mut pages = Vec::new();
    for token in [unknown.as_str(), "not-a-token", &expired, &revoked, &used, &suspended] {
        let answer = f.rp.get(&format!("{}/invite/{token}", f.rp.base), &[]).await;
        assert_page(&answer, "invitation_invalid");
        pages.push((answer.status, answer.body));
    }
    assert_eq!(pages[0].0, StatusCode::NOT_FOUND);
    assert!(pages.iter().all(|p| *p == pages[0]), "one page for every unusable link: {pages:?}");
    // Posting a button to them: the same page, no cookie handed out.
    let (_, form, csrf) = landing(&f, &invite("ok@acme.com").await).await;
    let fields = [("csrf", field(&form, "csrf")), ("connection", field(&form, "connection"))];
    for token in [unknown.as_str(), &expired, &revoked, &used] {
        let answer = f.rp.submit(&format!("/invite/{token}"), &fields, std::slice::from_ref(&csrf)).await;
        assert_eq!((answer.status, &answer.body), (pages[0].0, &pages[0].1));
        assert!(answer.cookies.is_empty(), "{answer:?}");
    }
    assert_eq!(rows(&f.app).await, before);
}

/// A form without this browser's CSRF pair (no cookie, no field, another browser's token) is
/// refused before anything runs: no invitation cookie, no flow, no redirect; the invitation is
/// still open.
async fn forms_without_csrf_are_refused(backend: Backend) {
    let f = fixture(backend).await;
    let token = f.app.invitation_token(OPERATOR_KEY, &f.org, "it@acme.com", &["admin"]).await;
    let (_, form, csrf) = landing(&f, &token).await;
    let (_, _, other_browser) = landing(&f, &token).await;
    let connection = field(&form, "connection");
    let good = field(&form, "csrf");
    let path = format!("/invite/{token}");
    type Form<'a> = &'a [(&'a str, &'a str)];
    let attempts: [(Form, Vec<String>); 4] = [
        (&[("connection", connection)], vec![csrf.clone()]),
        (&[("csrf", good), ("connection", connection)], vec![]),
        (&[("csrf", good), ("connection", connection)], vec![other_browser.clone()]),
        (&[("csrf", "x"), ("connection", connection)], vec![csrf.clone()]),
    ];
    for (fields, cookies) in &attempts {
        let answer = f.rp.submit(&path, fields, cookies).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{answer:?}");
        assert_page(&answer, "form_expired");
        assert!(answer.cookies.is_empty(), "{answer:?}");
    }
    // /sign-in alike.
    let page = f.rp.get(&format!("{}/sign-in", f.rp.base), &[]).await;
    let csrf = cookie_named(&page.cookies, "__Host-lanyard-csrf");
    let good = field(&forms(&page.body)[0], "csrf").to_owned();
    let refused = [
        f.rp.submit("/sign-in", &[("email", "alice@acme.com")], std::slice::from_ref(&csrf)).await,
        f.rp.submit("/sign-in", &[("csrf", &good), ("email", "alice@acme.com")], &[]).await,
        f.rp.submit("/sign-in", &[("csrf", &good), ("email", "alice@acme.com")], &[other_browser]).await,
    ];
    for answer in &refused {
        assert_page(answer, "form_expired");
    }
    assert_eq!(rows(&f.app).await, (0, 0, 0, 0, 0));
    assert_eq!(f.idp.hits(), 0, "nobody was sent to the provider");
    let still = f.rp.get(&format!("{}/invite/{token}", f.rp.base), &[]).await;
    assert_eq!(still.status, StatusCode::OK, "the invitation is still open");
}

/// An application's request that names no organization lands on email-first sign-in, which
/// carries the request through its form; a work email whose domain acme verified goes straight
/// to acme's provider and ends with acme's code.
async fn email_first_with_a_verified_domain(backend: Backend) {
    let f = fixture(backend).await;
    let attempt = Attempt::new();
    let url = f.rp.authorize_url(&attempt, "", &[("organization", None)]);
    let asked = f.rp.get(&url, &[]).await;
    let to_sign_in = asked.location.clone().unwrap_or_else(|| panic!("{asked:?}"));
    assert!(to_sign_in.starts_with(&format!("{ISSUER}/sign-in?")), "{to_sign_in}");
    let page = f.rp.get(&to_sign_in, &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    assert_eq!(page.headers["x-lanyard-page"], "sign_in");
    assert!(page.body.contains("<label for=\"email\">") && page.body.contains("id=\"email\""), "{}", page.body);
    let csrf = cookie_named(&page.cookies, "__Host-lanyard-csrf");
    let form = &forms(&page.body)[0];
    assert_eq!(field(form, "state"), attempt.state);
    let mut fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // A malformed email: the form again, with the request still carried.
    fields.push(("email", "not an email"));
    let again = f.rp.submit("/sign-in", &fields, std::slice::from_ref(&csrf)).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(again.body.contains("role=\"alert\"") && forms(&again.body)[0] == *form, "{}", again.body);
    fields.pop();
    fields.push(("email", "Alice@ACME.com"));
    let sent = f.rp.submit("/sign-in", &fields, std::slice::from_ref(&csrf)).await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{sent:?}");
    let to_idp = sent.location.clone().unwrap();
    assert!(to_idp.starts_with(&url::Url::parse(&f.idp.issuer).unwrap().origin().ascii_serialization()), "{to_idp}");
    assert_eq!(sent.param("login_hint").as_deref(), Some("alice@acme.com"));
    f.idp.sign_in_next("alice-sub", "alice@acme.com");
    let back = f.rp.get(&to_idp, &[]).await.location.unwrap();
    let done = f.rp.get(&back, &sent.cookies).await;
    assert_eq!(done.param("state").as_deref(), Some(attempt.state.as_str()), "{done:?}");
    let (id, _) = redeemed(&f, &done, &attempt).await;
    assert_eq!(id["org_id"].as_str(), Some(f.org.as_str()));

    // Opened directly, it hands the person to the application's login route with the hint, and
    // the application's request with that hint goes straight to the provider.
    let direct = f.rp.get(&format!("{}/sign-in", f.rp.base), &[]).await;
    let csrf = cookie_named(&direct.cookies, "__Host-lanyard-csrf");
    let direct_forms = forms(&direct.body);
    let form = [("csrf", field(&direct_forms[0], "csrf")), ("email", "alice@acme.com")];
    let handed = f.rp.submit("/sign-in", &form, std::slice::from_ref(&csrf)).await;
    assert!(handed.location.as_deref().unwrap_or_default().starts_with(&format!("{LOGIN}?")), "{handed:?}");
    assert_eq!(handed.param("login_hint").as_deref(), Some("alice@acme.com"));
    let attempt = Attempt::new();
    let url = f.rp.authorize_url(&attempt, "", &[("organization", None), ("login_hint", Some("alice@acme.com"))]);
    let done = via_provider(&f, &url, &[], "alice-sub", "alice@acme.com").await;
    assert_eq!(redeemed(&f, &done, &attempt).await.0["org_id"].as_str(), Some(f.org.as_str()));
}

/// A hostile organization with its own provider claims acme.com (and globex.com, which nobody
/// verified): a claim is pending, and pending domains drive nothing. acme's people still go to
/// acme's provider; globex people, an unknown domain, and a domain of an organization without a
/// connection get one "no organization" page; nothing is written and the hostile provider never
/// sees anyone.
async fn email_first_ignores_unverified_claims(backend: Backend) {
    let f = fixture(backend).await;
    let evil_idp = FakeIdp::start(Kind::Okta, "evil.example").await;
    let evil = f.app.create_org("evil", &["evil.example"], "").await;
    f.app.connect(&evil, &evil_idp).await;
    for domain in ["acme.com", "globex.com"] {
        let add = lanyard_proto::tenancy::v1::AddDomainRequest {
            organization_id: evil.clone(),
            domain: domain.into(),
            ..Default::default()
        };
        f.app.tenancy.clone().add_domain(op(add)).await.expect("a pending claim");
    }
    // acme.com cannot be verified for evil: acme holds it (the helper leaves it pending).
    f.app.verify_domain(&evil, "acme.com").await;
    // bare verified bare.io but has no connection.
    f.app.create_org("bare", &["bare.io"], "").await;

    let page = f.rp.get(&format!("{}/sign-in", f.rp.base), &[]).await;
    let csrf = cookie_named(&page.cookies, "__Host-lanyard-csrf");
    let token = field(&forms(&page.body)[0], "csrf").to_owned();
    let send = |email: &'static str| {
        let (csrf, token) = (csrf.clone(), token.clone());
        let rp = &f.rp;
        async move { rp.submit("/sign-in", &[("csrf", &token), ("email", email)], &[csrf]).await }
    };
    let acme = send("bob@acme.com").await;
    assert!(acme.location.as_deref().unwrap_or_default().starts_with(LOGIN), "{acme:?}");
    let attempt = Attempt::new();
    let url = f.rp.authorize_url(&attempt, "", &[("organization", None), ("login_hint", Some("alice@acme.com"))]);
    let started = f.rp.get(&url, &[]).await;
    let origin = url::Url::parse(&f.idp.issuer).unwrap().origin().ascii_serialization();
    assert!(started.location.as_deref().unwrap_or_default().starts_with(&origin), "acme's own provider: {started:?}");

    let mut nobody = Vec::new();
    for email in ["carol@unknown-domain.example", "dan@globex.com", "erin@bare.io"] {
        let answer = send(email).await;
        assert_page(&answer, "no_organization");
        nobody.push((answer.status, answer.body));
    }
    assert!(nobody.iter().all(|n| *n == nobody[0]), "{nobody:?}");
    assert_eq!(nobody[0].0, StatusCode::NOT_FOUND);
    let hinted = f.rp.authorize_url(&Attempt::new(), "", &[("organization", None), ("login_hint", Some("x@bare.io"))]);
    assert_page(&f.rp.get(&hinted, &[]).await, "no_organization");
    assert_eq!(evil_idp.hits(), 0, "the hostile provider saw nobody");
    let (sessions, refresh, _, codes, bindings) = rows(&f.app).await;
    assert_eq!((sessions, refresh, codes, bindings), (0, 0, 0, 0));
}

/// `prompt=select_account` for a person in several organizations: once the provider signed them
/// in, a picker lists acme and beta (both accept that provider) but not gamma (another provider)
/// nor delta (not a member); the code is in no page. Picking gamma or delta anyway, or without
/// the CSRF pair, is refused and writes nothing; picking beta switches the session, and the
/// application's code is for beta.
async fn picker_switches_within_the_rules(backend: Backend) {
    let f = fixture(backend).await;
    let beta = f.app.create_org("beta", &["beta.io"], "").await;
    f.app.connect(&beta, &f.idp).await;
    f.app.add_member(&beta, "alice@acme.com", &["admin"]).await;
    let okta = FakeIdp::start(Kind::Okta, "gamma.io").await;
    let gamma = f.app.create_org("gamma", &["gamma.io"], "").await;
    f.app.connect(&gamma, &okta).await;
    f.app.add_member(&gamma, "alice@acme.com", &["member"]).await;
    let delta = f.app.create_org("delta", &["delta.io"], "").await;
    f.app.connect(&delta, &f.idp).await;

    // One organization to pick from: no picker.
    let single = f.app.create_org("solo", &["solo.io"], "").await;
    let solo_idp = FakeIdp::start(Kind::Google, "solo.io").await;
    f.app.connect(&single, &solo_idp).await;
    f.app.add_member(&single, "sam@solo.io", &["member"]).await;
    let url = f.rp.authorize_url(&Attempt::new(), &single, &[("prompt", Some("select_account"))]);
    let straight = f.rp.through_provider(&solo_idp, &url, "sam-sub", "sam@solo.io").await;
    assert!(straight.param("code").is_some(), "{straight:?}");

    let attempt = Attempt::new();
    let url = f.rp.authorize_url(&attempt, &f.org, &[("prompt", Some("select_account"))]);
    let shown = f.rp.through_provider(&f.idp, &url, "alice-sub", "alice@acme.com").await;
    assert_eq!(shown.status, StatusCode::OK, "{shown:?}");
    assert_eq!(shown.headers["x-lanyard-page"], "picker");
    let offered: Vec<String> = forms(&shown.body).iter().map(|form| field(form, "organization").to_owned()).collect();
    assert_eq!(offered, vec![f.org.clone(), beta.clone()]);
    let pick = cookie_named(&shown.cookies, "__Host-lanyard-pick");
    let code = pick.split_once('=').unwrap().1.split('.').next().unwrap().to_owned();
    assert!(code.len() >= 43 && !shown.body.contains(&code), "the code is not in the page");
    assert!(set_cookie_header(&shown, "__Host-lanyard-pick").contains("HttpOnly"));
    let csrf = cookie_named(&shown.cookies, "__Host-lanyard-csrf");
    let token = field(&forms(&shown.body)[0], "csrf").to_owned();
    let cookies = [csrf, pick];
    let before = rows(&f.app).await;
    for (org, refused) in [(&gamma, "reauthentication_required"), (&delta, "not_a_member")] {
        let answer = f.rp.submit("/oauth2/select", &[("csrf", &token), ("organization", org)], &cookies).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{answer:?}");
        assert_page(&answer, refused);
    }
    let no_csrf = f.rp.submit("/oauth2/select", &[("organization", &beta)], &cookies).await;
    assert_page(&no_csrf, "form_expired");
    assert_eq!(rows(&f.app).await, before, "refused picks write nothing");

    let picked = f.rp.submit("/oauth2/select", &[("csrf", &token), ("organization", &beta)], &cookies).await;
    assert!(picked.location.as_deref().unwrap_or_default().starts_with(REDIRECT_URI), "{picked:?}");
    assert_eq!(picked.param("state").as_deref(), Some(attempt.state.as_str()));
    assert_eq!(picked.param("code").as_deref(), Some(code.as_str()));
    let (id, access) = redeemed(&f, &picked, &attempt).await;
    assert_eq!((id["org_id"].as_str(), id["roles"].clone()), (Some(beta.as_str()), serde_json::json!(["admin"])));
    assert!(authorized(&f.app, &access).await);
    let again = f.rp.submit("/oauth2/select", &[("csrf", &token), ("organization", &f.org)], &cookies).await;
    assert_page(&again, "sign_in_expired");
}

/// A hostile owner names the organization with markup: the landing page and the picker show it
/// as text.
async fn hostile_names_are_text(backend: Backend) {
    let f = fixture(backend).await;
    let name = "Evil <script>alert(1)</script> & \"Co\" <a href=//evil.example>sign in here</a>";
    let created = f
        .app
        .tenancy
        .clone()
        .create_organization(op(lanyard_proto::tenancy::v1::CreateOrganizationRequest {
            slug: "evil".into(),
            display_name: name.into(),
            seat_limit: 5,
            allowed_domains: vec!["evil.example".into()],
            ..Default::default()
        }))
        .await
        .expect("create organization")
        .into_inner();
    let evil = created.organization.unwrap().organization_id;
    f.app.connect(&evil, &f.idp).await;
    let token = f.app.invitation_token(OPERATOR_KEY, &evil, "pat@evil.example", &["member"]).await;
    let (page, _, _) = landing(&f, &token).await;
    assert!(!page.body.contains("<script>") && !page.body.contains("<a href"), "{}", page.body);
    assert!(
        page.body
            .contains("Evil &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;Co&quot; &lt;a href=//evil.example&gt;"),
        "{}",
        page.body
    );
}

/// Without an application login route, a page reached without an application says to open the
/// application and hands out nothing; an organization without a connection shows no button.
async fn pages_without_an_application(backend: Backend) {
    let f = Fixture::new(backend).await;
    let token = f.app.invitation_token(OPERATOR_KEY, &f.org, "it@acme.com", &["admin"]).await;
    let (_, form, csrf) = landing(&f, &token).await;
    let fields = [("csrf", field(&form, "csrf")), ("connection", field(&form, "connection"))];
    let answer = f.rp.submit(&format!("/invite/{token}"), &fields, std::slice::from_ref(&csrf)).await;
    assert_page(&answer, "no_application");
    assert!(answer.cookies.is_empty(), "{answer:?}");
    let page = f.rp.get(&format!("{}/sign-in", f.rp.base), &[]).await;
    let csrf = cookie_named(&page.cookies, "__Host-lanyard-csrf");
    let token_field = field(&forms(&page.body)[0], "csrf").to_owned();
    let sent = [("csrf", token_field.as_str()), ("email", "alice@acme.com")];
    assert_page(&f.rp.submit("/sign-in", &sent, &[csrf]).await, "no_application");

    let bare = f.app.create_org("bare", &["bare.io"], "").await;
    let invited = f.app.invitation_token(OPERATOR_KEY, &bare, "pat@bare.io", &["member"]).await;
    let page = f.rp.get(&format!("{}/invite/{invited}", f.rp.base), &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("has not set up sign-in yet") && forms(&page.body).is_empty(), "{}", page.body);
    assert_eq!(rows(&f.app).await, (0, 0, 0, 0, 0));
}

/// `/sign-in` and the landing page count against the per-peer limit like every sign-in endpoint.
async fn sign_in_is_rate_limited(backend: Backend) {
    let f = Fixture::with(backend, |c| c.rate_limits.sign_in = lanyard_token::RateLimit::new(3, 1)).await;
    let url = format!("{}/sign-in", f.rp.base);
    for _ in 0..3 {
        assert_eq!(f.rp.get(&url, &[]).await.status, StatusCode::OK);
    }
    let limited = f.rp.get(&url, &[]).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_page(&limited, "rate_limited");
    assert!(limited.headers.get("retry-after").is_some());
    let posted = f.rp.submit("/sign-in", &[("csrf", "x"), ("email", "a@acme.com")], &[]).await;
    assert_eq!(posted.status, StatusCode::TOO_MANY_REQUESTS);
    let landing = f.rp.get(&format!("{}/invite/{}", f.rp.base, "A".repeat(43)), &[]).await;
    assert_eq!(landing.status, StatusCode::TOO_MANY_REQUESTS);
}

backend_tests!(
    invitation_landing_signs_in,
    unusable_invitations_look_alike,
    forms_without_csrf_are_refused,
    email_first_with_a_verified_domain,
    email_first_ignores_unverified_claims,
    picker_switches_within_the_rules,
    pages_without_an_application,
    hostile_names_are_text,
    sign_in_is_rate_limited
);
