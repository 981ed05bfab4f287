//! The hosted pages: the invitation landing (`/invite/{token}`, the default invitation link)
//! and email-first sign-in (`/sign-in`, home-realm discovery by verified domain).
//!
//! Neither page starts a sign-in on its own: a sign-in is always an application's authorization
//! request, so its result has somewhere to go. Reached from an application (`/oauth2/authorize`
//! without an organization sends the browser to `/sign-in` with the request), the page continues
//! that request. Reached without one (an invitation email, `/sign-in` typed in), the page sends
//! the browser to the application's login route (`application_login_url`, OpenID Connect's
//! third-party-initiated login, with `iss` and `login_hint`), and the application's ordinary
//! request then finds the invitation in a `__Host-` cookie: the invitation token never travels in
//! another URL, and no unsolicited code reaches an application.
//!
//! The organization picker (`prompt=select_account`) comes after the provider signed the person
//! in, never before: it lists only organizations the authenticated person belongs to whose
//! connections accept the provider they used (a switch's rule), and a pick switches the session
//! through `Tokens::refresh`, which checks both again. The code waits for the pick in an HttpOnly
//! cookie, not in the page.
//!
//! Every form carries a CSRF token, double-submitted in a `__Host-` cookie; a form without the
//! matching pair is refused before anything else runs. Nothing here writes to a database.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use lanyard_core::crypto::{random_token, sha256_hex};
use lanyard_core::{ConnectionId, Email, OrganizationId, Timestamp};

use super::authorize::{authorize_with, set_cookie, trouble_of, Back, INVITATION_COOKIE};
use super::pages::{self, page, Csrf, Trouble};
use super::{cookie, same, see_other, with_query, Params, Provider, CODE_TTL, FLOW_TTL};
use crate::error::TokenError;
use crate::service::Landing;

/// The cookie holding this browser's CSRF token.
const CSRF_COOKIE: &str = "__Host-lanyard-csrf";
/// How long a page's form stays usable.
const CSRF_MAX_AGE_SECONDS: u64 = 3600;
/// The application's authorization parameters that `/sign-in` carries through its form.
const CARRIED: [&str; 10] = [
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "response_mode",
    "prompt",
];
/// The longest invitation token looked up (they are 43 characters).
const MAX_TOKEN_LEN: usize = 128;

/// This browser's CSRF token, made (with its cookie) when it has none.
fn csrf(headers: &HeaderMap) -> Csrf {
    match cookie(headers, CSRF_COOKIE).filter(|v| v.len() == 43 && v.bytes().all(url_safe)) {
        Some(token) => Csrf { token: token.to_owned(), set_cookie: None },
        None => {
            let token = random_token(32);
            let set_cookie = set_cookie(CSRF_COOKIE, &token, CSRF_MAX_AGE_SECONDS);
            Csrf { token, set_cookie }
        }
    }
}

/// Whether a form came from this browser's page: the cookie and the field, both present and
/// equal.
fn csrf_ok(headers: &HeaderMap, form: &Params) -> bool {
    match (cookie(headers, CSRF_COOKIE), form.get("csrf")) {
        (Some(cookie), Some(field)) => cookie.len() == 43 && same(cookie, field),
        _ => false,
    }
}

fn url_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// A posted form, as the authorization parameters are parsed, once its CSRF field matches the
/// browser's cookie (else `FormExpired`, before anything else runs).
fn form(headers: &HeaderMap, body: &str) -> Result<Params, Trouble> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(Trouble::InvalidRequest);
    }
    let form = Params::parse(Some(body)).map_err(|_| Trouble::InvalidRequest)?;
    if !csrf_ok(headers, &form) {
        return Err(Trouble::FormExpired);
    }
    Ok(form)
}

impl Provider {
    /// The invitation behind `token`, or the one neutral page (whatever was wrong with it).
    async fn landing(&self, token: &str) -> Result<Landing, Response> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN || !token.bytes().all(url_safe) {
            return Err(page(Trouble::InvitationInvalid));
        }
        match self.tokens().invitation_landing(token).await {
            Ok(landing) => Ok(landing),
            Err(TokenError::InvitationGrantInvalid(why)) => {
                tracing::info!(why, "invitation landing refused");
                Err(page(Trouble::InvitationInvalid))
            }
            Err(e) => {
                tracing::error!(error = %e, "invitation landing failed");
                Err(page(Trouble::Internal))
            }
        }
    }

    /// Sends a browser that came without an application to the application's login route.
    fn to_application(&self, login_hint: &str) -> Response {
        let Some(login) = self.login_url() else { return page(Trouble::NoApplication) };
        match with_query(login, &[("iss", self.issuer()), ("login_hint", login_hint)]) {
            Some(location) => see_other(&location),
            None => page(Trouble::Internal),
        }
    }
}

/// `GET /invite/{token}`.
pub(super) async fn invitation(State(p): State<Provider>, Path(token): Path<String>, headers: HeaderMap) -> Response {
    match p.landing(&token).await {
        Ok(landing) => pages::invitation(&landing, &csrf(&headers)),
        Err(response) => response,
    }
}

/// `POST /invite/{token}`: the button of one connection. Binds the invitation and the chosen
/// connection to this browser, then on to the application, which comes back through
/// `/oauth2/authorize`.
pub(super) async fn accept_invitation(
    State(p): State<Provider>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let form = match form(&headers, &body) {
        Ok(form) => form,
        Err(trouble) => return page(trouble),
    };
    let landing = match p.landing(&token).await {
        Ok(landing) => landing,
        Err(response) => return response,
    };
    let chosen = form.get("connection").and_then(|c| ConnectionId::parse(c).ok());
    let Some(connection) = chosen.filter(|c| landing.connections.iter().any(|known| known.id == *c)) else {
        return page(Trouble::InvalidRequest);
    };
    if p.login_url().is_none() {
        return page(Trouble::NoApplication);
    }
    let mut response = p.to_application(&landing.email);
    let value = format!("{connection}.{token}");
    if let Some(cookie) = set_cookie(INVITATION_COOKIE, &value, FLOW_TTL.as_secs()) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// `GET /sign-in`: the form, carrying the application's request when there is one.
pub(super) async fn sign_in_form(uri: Uri, headers: HeaderMap) -> Response {
    let Ok(params) = Params::parse(uri.query()) else { return page(Trouble::InvalidRequest) };
    pages::sign_in(&csrf(&headers), &carried(&params), false)
}

fn carried(params: &Params) -> Vec<(&'static str, &str)> {
    CARRIED.iter().filter_map(|&k| params.get(k).map(|v| (k, v))).collect()
}

/// `POST /sign-in`: the email's verified domain names the organization (at most one holds a
/// domain verified); its provider is next. An unknown, merely claimed (pending) or inactive
/// domain all get the same page.
pub(super) async fn sign_in(State(p): State<Provider>, headers: HeaderMap, body: String) -> Response {
    let form = match form(&headers, &body) {
        Ok(form) => form,
        Err(trouble) => return page(trouble),
    };
    let Some(email) = form.get("email").and_then(|e| Email::parse(e).ok()) else {
        return pages::sign_in(&csrf(&headers), &carried(&form), true);
    };
    let org = match p.tokens().home_organization(&email.domain()).await {
        Ok(Some(org)) => org,
        Ok(None) => return page(Trouble::NoOrganization),
        Err(e) => {
            tracing::error!(error = %e, "home-realm discovery failed");
            return page(Trouble::Internal);
        }
    };
    if form.get("client_id").is_none() {
        return p.to_application(email.as_str());
    }
    // The application's request, now with its organization and the person's email as the hint.
    let mut params = Params::default();
    for (k, v) in carried(&form) {
        params.0.insert(k.to_owned(), v.to_owned());
    }
    params.0.insert("organization".into(), org.to_string());
    params.0.insert("login_hint".into(), email.to_string());
    authorize_with(&p, &params, &headers, None).await
}

/// The cookie that holds a code while its person picks an organization:
/// `<code>.<the application's state, base64url>`.
const PICK_COOKIE: &str = "__Host-lanyard-pick";

/// The picker page for a signed-in person, the code (and the application's state) in its cookie.
pub(super) fn picker(
    organizations: &[(OrganizationId, String)],
    code: &str,
    state: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    let mut response = pages::picker(organizations, &csrf(headers));
    let value = format!("{code}.{}", URL_SAFE_NO_PAD.encode(state.unwrap_or_default()));
    if let Some(cookie) = set_cookie(PICK_COOKIE, &value, FLOW_TTL.as_secs()) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// `POST /oauth2/select`: the organization picked. The session switches to it under the
/// token service's rules (an active member, and the organization accepts the session's provider;
/// a refusal changes nothing and the picker stays usable), then the code goes to the application.
pub(super) async fn select(State(p): State<Provider>, headers: HeaderMap, body: String) -> Response {
    let form = match form(&headers, &body) {
        Ok(form) => form,
        Err(trouble) => return page(trouble),
    };
    let waiting = cookie(&headers, PICK_COOKIE).and_then(|v| v.split_once('.'));
    let Some((code, state)) = waiting else { return page(Trouble::FlowInvalid) };
    let Some(state) = URL_SAFE_NO_PAD.decode(state).ok().and_then(|b| String::from_utf8(b).ok()) else {
        return page(Trouble::FlowInvalid);
    };
    let Some(org) = form.get("organization").and_then(|o| OrganizationId::parse(o).ok()) else {
        return page(Trouble::InvalidRequest);
    };
    let hash = sha256_hex(code.as_bytes());
    let now = Timestamp::now();
    let record = match p.store().code(&hash).await {
        Ok(Some(record)) if record.used_at.is_none() && record.expires_at > now => record,
        Ok(_) => return page(Trouble::FlowInvalid),
        Err(e) => {
            tracing::error!(error = %e, "reading a code waiting for its pick failed");
            return page(Trouble::Internal);
        }
    };
    let issued = match p.tokens().refresh(&record.refresh_token, Some(org), Some(&record.client_id)).await {
        Ok(issued) => issued,
        Err(TokenError::ReauthenticationRequired) => return page(Trouble::ProviderRequired),
        Err(
            TokenError::RefreshTokenInvalid
            | TokenError::RefreshTokenExpired
            | TokenError::RefreshTokenReused
            | TokenError::SessionRevoked,
        ) => return page(Trouble::FlowInvalid),
        Err(e) => {
            tracing::info!(error = %e, "organization pick refused");
            return page(trouble_of(&e));
        }
    };
    match p.store().picked(&hash, &issued.refresh_token, now.plus(CODE_TTL)).await {
        Ok(true) => {}
        Ok(false) => return page(Trouble::FlowInvalid),
        Err(e) => {
            tracing::error!(error = %e, "recording a pick failed");
            return page(Trouble::Internal);
        }
    }
    let state = Some(state.as_str()).filter(|s| !s.is_empty());
    let back = Back { redirect_uri: &record.redirect_uri, state, issuer: p.issuer() };
    let mut response = back.to(&[("code", code)]);
    if let Some(clear) = set_cookie(PICK_COOKIE, "", 0) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    response
}

/// Drops the invitation cookie once its invitation was used.
pub(super) fn clear_invitation_cookie() -> Option<HeaderValue> {
    set_cookie(INVITATION_COOKIE, "", 0)
}
