//! The browser's side: `/oauth2/authorize` checks the application's request and sends the
//! browser to the organization's provider; `/oauth2/callback` takes the provider's answer, signs
//! the person in as `ExchangeToken` does, and sends the browser back to the application with a
//! one-time code.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::Response;
use lanyard_core::crypto::{random_token, sha256_hex};
use lanyard_core::{ConnectionId, Timestamp};
use secrecy::ExposeSecret;

use super::pages::{page, Trouble};
use super::store::{AppRequest, Code, Flow, UpstreamSecrets};
use super::{cookie, pkce_shaped, s256, same, see_other, with_query, Params, Provider, CODE_TTL, FLOW_TTL};
use crate::error::TokenError;
use crate::service::ClientInfo;
use crate::upstream::{Redemption, UpstreamError};

/// Random bytes of the state, nonce, verifier and browser cookie Lanyard makes, and of codes.
const SECRET_BYTES: usize = 32;
/// The longest `state` and `nonce` an application may send.
const MAX_APP_VALUE: usize = 1024;

/// The name of the cookie that binds flow `id` to the browser that started it (one per flow, so
/// two tabs signing in at once do not undo each other).
fn cookie_name(id: &str) -> String {
    format!("__Host-lanyard-flow-{}", &id[..16])
}

/// The cookie that carries an invitation from its landing page to the application's
/// authorization request: `<connection id>.<invitation token>`.
pub(super) const INVITATION_COOKIE: &str = "__Host-lanyard-invitation";

/// A `__Host-` cookie: `Secure` (browsers keep it on `http://localhost` too), `HttpOnly`,
/// `SameSite=Lax`, the whole site.
pub(super) fn set_cookie(name: &str, value: &str, max_age: u64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}")).ok()
}

/// Where a refused request goes once its redirect URI is trusted.
enum Stop {
    /// Back to the application with an OAuth error (RFC 6749 4.1.2.1).
    Redirect(&'static str, &'static str),
    /// A Lanyard page.
    Page(Trouble),
    /// The request names no organization: email-first sign-in chooses it.
    SignIn,
}

/// The way back to the application, once its redirect URI matched.
pub(super) struct Back<'a> {
    pub(super) redirect_uri: &'a str,
    pub(super) state: Option<&'a str>,
    pub(super) issuer: &'a str,
}

impl Back<'_> {
    pub(super) fn to(&self, pairs: &[(&str, &str)]) -> Response {
        let mut all: Vec<(&str, &str)> = pairs.to_vec();
        if let Some(state) = self.state {
            all.push(("state", state));
        }
        all.push(("iss", self.issuer));
        match with_query(self.redirect_uri, &all) {
            Some(location) => see_other(&location),
            None => page(Trouble::Internal),
        }
    }

    fn stop(&self, stop: Stop) -> Response {
        match stop {
            Stop::Redirect(error, description) => self.to(&[("error", error), ("error_description", description)]),
            Stop::Page(trouble) => page(trouble),
            // Handled by `authorize_with`, which knows the request.
            Stop::SignIn => page(Trouble::InvalidRequest),
        }
    }
}

fn printable(s: &str) -> bool {
    s.len() <= MAX_APP_VALUE && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// `GET /oauth2/authorize`.
pub(super) async fn authorize(State(p): State<Provider>, uri: Uri, headers: HeaderMap) -> Response {
    let Ok(params) = Params::parse(uri.query()) else { return page(Trouble::InvalidRequest) };
    authorize_with(&p, &params, &headers, uri.query()).await
}

/// An authorization request (from `/oauth2/authorize`, or carried through `/sign-in`); `query`
/// is the raw request, which `/sign-in` carries on when no organization is named.
pub(super) async fn authorize_with(
    p: &Provider,
    params: &Params,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Response {
    // Until the redirect URI matched a registered one exactly, every refusal is a page.
    let client = match p.clients().get(params.get("client_id").unwrap_or_default()).await {
        Ok(Some(client)) => client,
        Ok(None) => return page(Trouble::UnknownClient),
        Err(e) => return internal(e),
    };
    let Some(redirect_uri) = params.get("redirect_uri").filter(|r| client.redirects_to(r)) else {
        return page(Trouble::RedirectUriMismatch);
    };
    let state = params.get("state");
    if state.is_some_and(|s| !printable(s)) {
        return page(Trouble::InvalidRequest);
    }
    let back = Back { redirect_uri, state, issuer: p.issuer() };
    match p.start(params, &client.client_id, redirect_uri, headers).await {
        Ok(response) => response,
        Err(Stop::SignIn) => match query {
            Some(query) => see_other(&format!("{}?{query}", p.sign_in_url())),
            None => page(Trouble::InvalidRequest),
        },
        Err(stop) => back.stop(stop),
    }
}

fn internal(e: TokenError) -> Response {
    tracing::error!(error = %e, "sign-in failed");
    page(Trouble::Internal)
}

impl Provider {
    /// Checks the rest of the request, records the flow and sends the browser to the provider.
    async fn start(
        &self,
        params: &Params,
        client_id: &str,
        redirect_uri: &str,
        headers: &HeaderMap,
    ) -> Result<Response, Stop> {
        use Stop::Redirect;
        if params.get("request").is_some() {
            return Err(Redirect("request_not_supported", "request objects are not supported"));
        }
        if params.get("request_uri").is_some() {
            return Err(Redirect("request_uri_not_supported", "request_uri is not supported"));
        }
        if params.get("response_type") != Some("code") {
            return Err(Redirect("unsupported_response_type", "response_type must be code"));
        }
        let scope = params.get("scope").unwrap_or_default();
        if !scope.split(' ').any(|s| s == "openid") || !printable(scope) {
            return Err(Redirect("invalid_scope", "scope must include openid"));
        }
        if params.get("response_mode").is_some_and(|m| m != "query") {
            return Err(Redirect("invalid_request", "response_mode must be query"));
        }
        match params.get("code_challenge_method") {
            Some("S256") => {}
            Some("plain") => return Err(Redirect("invalid_request", "PKCE plain is not supported: use S256")),
            Some(_) => return Err(Redirect("invalid_request", "code_challenge_method must be S256")),
            None => return Err(Redirect("invalid_request", "PKCE is required: code_challenge_method S256")),
        }
        let challenge = params.get("code_challenge").unwrap_or_default();
        if challenge.len() != 43 || !pkce_shaped(challenge, 43, 43) {
            return Err(Redirect("invalid_request", "code_challenge must be an S256 challenge"));
        }
        let nonce = params.get("nonce");
        if nonce.is_some_and(|n| !printable(n)) {
            return Err(Redirect("invalid_request", "nonce is malformed"));
        }
        if params.get("prompt").is_some_and(|p| p.split(' ').any(|v| v == "none")) {
            // Lanyard keeps no browser session of its own: every sign-in goes to the provider.
            return Err(Redirect("login_required", "sign-in at the organization's provider is required"));
        }
        let login_hint = params.get("login_hint").filter(|h| printable(h) && h.len() <= 320);
        // Lanyard keeps no session of its own, so an application's demand for a fresh sign-in
        // (OIDC Core 3.1.2.1: `prompt=login`, `max_age`) is the provider's to enforce; without
        // it the provider's session answers and the ID token's `auth_time` says "now".
        let reauthenticate = params.get("prompt").is_some_and(|p| p.split(' ').any(|v| v == "login"));
        let max_age = match params.get("max_age") {
            Some(m) if m.len() <= 10 && m.bytes().all(|b| b.is_ascii_digit()) => Some(m),
            Some(_) => return Err(Redirect("invalid_request", "max_age must be a number of seconds")),
            None => None,
        };
        let target = self.target(params, headers, login_hint).await?;
        let org = target.org;
        let wanted = match params.get("connection") {
            Some(raw) => Some(
                ConnectionId::parse(raw)
                    .map_err(|_| Redirect("invalid_request", "connection is not a connection id"))?,
            ),
            None => target.connection,
        };
        let connection = match self.tokens().sign_in_connection(org, wanted).await {
            Ok(c) => c,
            Err(TokenError::NoConnection) => {
                return Err(Redirect("access_denied", "the organization has no enabled SSO connection"))
            }
            Err(e) => return Err(Stop::Page(trouble_of(&e))),
        };
        let endpoints = self.tokens().upstream().endpoints(&connection).await.map_err(|e| {
            tracing::warn!(error = %e, issuer = %connection.issuer, "provider discovery failed");
            Stop::Page(Trouble::ProviderUnavailable)
        })?;

        let (state, browser) = (random_token(SECRET_BYTES), random_token(SECRET_BYTES));
        let upstream = UpstreamSecrets {
            nonce: random_token(SECRET_BYTES),
            code_verifier: random_token(SECRET_BYTES),
            invitation: target.invitation,
        };
        let now = Timestamp::now();
        let flow = Flow {
            id: sha256_hex(state.as_bytes()),
            browser_hash: sha256_hex(browser.as_bytes()),
            app: AppRequest {
                client_id: client_id.to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                state: params.get("state").map(str::to_owned),
                nonce: nonce.map(str::to_owned),
                code_challenge: challenge.to_owned(),
                scope: scope.to_owned(),
                select_account: params.get("prompt").is_some_and(|p| p.split(' ').any(|v| v == "select_account")),
            },
            org,
            connection: connection.id,
            upstream,
            expires_at: now.plus(FLOW_TTL),
        };
        let challenge = s256(&flow.upstream.code_verifier);
        let callback = self.callback_url();
        let mut pairs = vec![
            ("response_type", "code"),
            ("client_id", connection.client_id.as_str()),
            ("redirect_uri", callback.as_str()),
            ("scope", "openid email profile"),
            ("state", state.as_str()),
            ("nonce", flow.upstream.nonce.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        if reauthenticate {
            pairs.push(("prompt", "login"));
        }
        if let Some(max_age) = max_age {
            pairs.push(("max_age", max_age));
        }
        if let Some(hint) = login_hint {
            pairs.push(("login_hint", hint));
        }
        let location = with_query(&endpoints.authorization, &pairs).ok_or(Stop::Page(Trouble::ProviderUnavailable))?;
        self.store().insert_flow(&flow, now).await.map_err(|e| Stop::Page(trouble_of(&e)))?;
        let mut response = see_other(&location);
        if let Some(cookie) = set_cookie(&cookie_name(&flow.id), &browser, FLOW_TTL.as_secs()) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        Ok(response)
    }

    /// What a sign-in is for: the invitation named, or the one this browser brought from its
    /// landing page (unless the request names another organization), or the organization named,
    /// or the one that verified the `login_hint`'s domain; else email-first sign-in asks.
    async fn target(&self, params: &Params, headers: &HeaderMap, login_hint: Option<&str>) -> Result<Target, Stop> {
        let (named, invitation) = (params.get("organization"), params.get("invitation"));
        if invitation.is_some() {
            let org = self.organization(named, invitation).await?;
            return Ok(Target { org, invitation: invitation.map(str::to_owned), connection: None });
        }
        let named = match named {
            Some(_) => Some(self.organization(named, None).await?),
            None => None,
        };
        if let Some((connection, token)) = invitation_cookie(headers) {
            match self.tokens().invitation_organization(token).await {
                Ok(org) if named.is_none_or(|n| n == org) => {
                    return Ok(Target { org, invitation: Some(token.to_owned()), connection: Some(connection) })
                }
                Ok(_) => {}
                Err(e) => tracing::info!(error = %e, "the browser's invitation no longer applies"),
            }
        }
        if let Some(org) = named {
            return Ok(Target { org, invitation: None, connection: None });
        }
        let Some(email) = login_hint.and_then(|h| lanyard_core::Email::parse(h).ok()) else { return Err(Stop::SignIn) };
        match self.tokens().home_organization(&email.domain()).await {
            Ok(Some(org)) => Ok(Target { org, invitation: None, connection: None }),
            Ok(None) => Err(Stop::Page(Trouble::NoOrganization)),
            Err(e) => Err(Stop::Page(trouble_of(&e))),
        }
    }

    /// The organization a sign-in is for: the invitation's, or the one named (by id or slug).
    async fn organization(
        &self,
        named: Option<&str>,
        invitation: Option<&str>,
    ) -> Result<lanyard_core::OrganizationId, Stop> {
        use Stop::Redirect;
        let named = match named {
            Some(key) => match self.tokens().organization_for_sign_in(key).await {
                Ok(org) => Some(org.id),
                Err(TokenError::OrganizationNotFound | TokenError::OrganizationInactive | TokenError::Invalid(_)) => {
                    return Err(Redirect("access_denied", "unknown or inactive organization"))
                }
                Err(e) => return Err(Stop::Page(trouble_of(&e))),
            },
            None => None,
        };
        let invited = match invitation {
            Some(token) => match self.tokens().invitation_organization(token).await {
                Ok(org) => Some(org),
                Err(TokenError::InvitationGrantInvalid(why)) => {
                    tracing::info!(why, "sign-in with an invitation refused");
                    return Err(Redirect("access_denied", "the invitation is not valid"));
                }
                Err(e) => return Err(Stop::Page(trouble_of(&e))),
            },
            None => None,
        };
        match (named, invited) {
            (Some(a), Some(b)) if a != b => Err(Redirect("access_denied", "the invitation is not valid")),
            (_, Some(org)) | (Some(org), None) => Ok(org),
            // `target` asks only with one of them; without either, email-first sign-in chooses.
            (None, None) => Err(Redirect("invalid_request", "organization or invitation is required")),
        }
    }
}

/// What a sign-in is for.
struct Target {
    org: lanyard_core::OrganizationId,
    /// The invitation it accepts.
    invitation: Option<String>,
    /// The connection chosen on the invitation's landing page.
    connection: Option<ConnectionId>,
}

/// The invitation this browser brought from a landing page, and the connection chosen there.
fn invitation_cookie(headers: &HeaderMap) -> Option<(ConnectionId, &str)> {
    let (connection, token) = cookie(headers, INVITATION_COOKIE)?.split_once('.')?;
    let token_shaped = !token.is_empty()
        && token.len() <= 128
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    Some((ConnectionId::parse(connection).ok()?, token)).filter(|_| token_shaped)
}

/// The page for a failed sign-in step.
pub(super) fn trouble_of(e: &TokenError) -> Trouble {
    use TokenError::*;
    match e {
        NotAMember => Trouble::NotAMember,
        IdpUnavailable(_) => Trouble::ProviderUnavailable,
        IdTokenInvalid(_) | IdTokenReplayed => Trouble::ProviderRefused,
        InvitationGrantInvalid(_)
        | NoConnection
        | OrganizationInactive
        | OrganizationNotFound
        | Upstream(_)
        | Invalid(_)
        | InvalidField { .. }
        | ReauthenticationRequired
        | OrganizationRequired => Trouble::SignInRefused,
        other => {
            tracing::error!(error = %other, "sign-in failed");
            Trouble::Internal
        }
    }
}

/// `GET /oauth2/callback`.
pub(super) async fn callback(State(p): State<Provider>, uri: Uri, headers: HeaderMap) -> Response {
    let Ok(params) = Params::parse(uri.query()) else { return page(Trouble::InvalidRequest) };
    let Some(state) = params.get("state") else { return page(Trouble::FlowInvalid) };
    let id = sha256_hex(state.as_bytes());
    let flow = match p.store().flow(&id).await {
        Ok(Some(flow)) => flow,
        Ok(None) => return page(Trouble::FlowInvalid),
        Err(e) => return internal(e),
    };
    let name = cookie_name(&id);
    let from_this_browser =
        cookie(&headers, &name).is_some_and(|c| same(&sha256_hex(c.as_bytes()), &flow.browser_hash));
    // Another browser (or none) holding the state learns nothing and takes nothing.
    if !from_this_browser || flow.expires_at <= Timestamp::now() {
        return page(Trouble::FlowInvalid);
    }
    match p.store().take_flow(&id).await {
        Ok(true) => {}
        Ok(false) => return page(Trouble::FlowInvalid),
        Err(e) => return internal(e),
    }
    let mut response = match p.finish(&flow, &params, &headers).await {
        Ok(response) => response,
        Err(trouble) => page(trouble),
    };
    if let Some(clear) = set_cookie(&name, "", 0) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    // The invitation was tried: another attempt starts from its link again.
    if flow.upstream.invitation.is_some() && cookie(&headers, INVITATION_COOKIE).is_some() {
        if let Some(clear) = super::hosted::clear_invitation_cookie() {
            response.headers_mut().append(header::SET_COOKIE, clear);
        }
    }
    response
}

impl Provider {
    /// The provider's answer to `flow`: redeem its code, sign in, and send the browser back to
    /// the application with a code of ours.
    async fn finish(&self, flow: &Flow, params: &Params, headers: &HeaderMap) -> Result<Response, Trouble> {
        let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
        if let Some(error) = params.get("error") {
            tracing::info!(error, "the organization's provider refused the sign-in");
            return Err(Trouble::ProviderRefused);
        }
        let tokens = self.tokens();
        let connection =
            tokens.sign_in_connection(flow.org, Some(flow.connection)).await.map_err(|e| trouble_of(&e))?;
        // RFC 9207: when the provider names itself, it must be the connection's issuer (a mix-up
        // attack answers with another provider's code).
        if params.get("iss").is_some_and(|iss| !connection.accepts_issuer(iss)) {
            tracing::warn!("the provider's answer names another issuer");
            return Err(Trouble::ProviderRefused);
        }
        let code = params.get("code").ok_or(Trouble::ProviderRefused)?;
        let upstream = tokens.upstream();
        let endpoints = upstream.endpoints(&connection).await.map_err(|e| {
            tracing::warn!(error = %e, "provider discovery failed");
            Trouble::ProviderUnavailable
        })?;
        let secret = tokens.connection_secret(flow.org, connection.id).await.map_err(|e| trouble_of(&e))?;
        let callback = self.callback_url();
        let redemption = Redemption {
            endpoints: &endpoints,
            client_id: &connection.client_id,
            client_secret: secret.as_ref().map(|s| s.expose_secret()),
            code,
            redirect_uri: &callback,
            code_verifier: &flow.upstream.code_verifier,
        };
        let id_token = upstream.redeem_code(&redemption).await.map_err(|e| {
            tracing::warn!(error = %e, issuer = %connection.issuer, "redeeming the provider's code failed");
            match e {
                UpstreamError::Invalid(_) => Trouble::ProviderRefused,
                UpstreamError::Unavailable(_) => Trouble::ProviderUnavailable,
            }
        })?;
        // The sign-in of ExchangeToken, with the rules and the session it makes.
        let client = ClientInfo { user_agent, ip_address: None };
        let nonce = Some(flow.upstream.nonce.as_str());
        let issued = match &flow.upstream.invitation {
            Some(invitation) => tokens.sign_in_with_invitation(invitation, &id_token, nonce, client, "").await,
            None => tokens.sign_in(&id_token, Some(flow.org), nonce, client).await,
        };
        let issued = issued.map_err(|e| {
            tracing::info!(error = %e, "federated sign-in refused");
            trouble_of(&e)
        })?;
        // prompt=select_account and more than one organization to pick from: the picker first.
        let pickable = match flow.app.select_account {
            true => tokens.pickable_organizations(&issued.session).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "listing the organizations to pick from failed: no picker");
                Vec::new()
            }),
            false => Vec::new(),
        };
        let picking = pickable.len() > 1;
        let code = random_token(SECRET_BYTES);
        let now = Timestamp::now();
        let record = Code {
            client_id: flow.app.client_id.clone(),
            redirect_uri: flow.app.redirect_uri.clone(),
            code_challenge: flow.app.code_challenge.clone(),
            nonce: flow.app.nonce.clone(),
            session_id: issued.session.id,
            refresh_token: issued.refresh_token,
            // A code waiting for the pick lives as long as a flow, known only to the browser's
            // HttpOnly cookie; the pick gives it its usual minute.
            expires_at: now.plus(if picking { FLOW_TTL } else { CODE_TTL }),
            used_at: None,
        };
        if let Err(e) = self.store().insert_code(&sha256_hex(code.as_bytes()), &record, now).await {
            // Nobody holds this session's tokens: end it rather than leave it.
            let _ = tokens.end_session_by_id(issued.session.id, "code_not_stored", "system:oauth").await;
            return Err(trouble_of(&e));
        }
        if picking {
            return Ok(super::hosted::picker(&pickable, &code, flow.app.state.as_deref(), headers));
        }
        let back =
            Back { redirect_uri: &flow.app.redirect_uri, state: flow.app.state.as_deref(), issuer: self.issuer() };
        Ok(back.to(&[("code", &code)]))
    }
}
