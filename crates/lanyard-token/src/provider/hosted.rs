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
//! Every form carries a CSRF token, double-submitted in a `__Host-` cookie; a form without the
//! matching pair is refused before anything else runs. Nothing here writes to a database.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::Response;
use lanyard_core::crypto::random_token;
use lanyard_core::{ConnectionId, Email};

use super::authorize::{authorize_with, set_cookie, INVITATION_COOKIE};
use super::pages::{self, page, Csrf, Trouble};
use super::{cookie, same, see_other, with_query, Params, Provider, FLOW_TTL};
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

/// A form body, as the authorization parameters are parsed.
fn form(headers: &HeaderMap, body: &str) -> Result<Params, Trouble> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(Trouble::InvalidRequest);
    }
    Params::parse(Some(body)).map_err(|_| Trouble::InvalidRequest)
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
    if !csrf_ok(&headers, &form) {
        return page(Trouble::FormExpired);
    }
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
    if !csrf_ok(&headers, &form) {
        return page(Trouble::FormExpired);
    }
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

/// Drops the invitation cookie once its invitation was used.
pub(super) fn clear_invitation_cookie() -> Option<HeaderValue> {
    set_cookie(INVITATION_COOKIE, "", 0)
}
