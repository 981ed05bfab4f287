//! The application's side: `/oauth2/token` (authorization code with PKCE, refresh token),
//! `/oauth2/revoke` (RFC 7009), `/oauth2/userinfo` and `/oauth2/logout` (RP-initiated logout),
//! and the ID token Lanyard signs for the application.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::Response;
use lanyard_core::crypto::sha256_hex;
use lanyard_core::{OrganizationId, SessionId, Timestamp};
use serde::{Deserialize, Serialize};

use super::pages::{page, Trouble};
use super::{
    json_response, oauth_error, pkce_shaped, s256, same, see_other, with_query, OAuthClient, Params, Provider,
};
use crate::error::TokenError;
use crate::service::Issued;

/// The claims of an ID token Lanyard signs for an application.
#[derive(Debug, Serialize, Deserialize)]
struct IdClaims {
    iss: String,
    sub: String,
    aud: String,
    azp: String,
    exp: u64,
    iat: u64,
    auth_time: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
    sid: String,
    org_id: String,
    org_slug: String,
    roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

fn secs(t: Timestamp) -> u64 {
    u64::try_from(t.0 / 1_000_000).unwrap_or_default()
}

fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

/// The form of a POST body; a refusal is `invalid_request` with the reason.
fn form(body: &Bytes) -> Result<Params, &'static str> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8")?;
    Params::parse(Some(text))
}

fn bad_form(why: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", why)
}

/// `POST /oauth2/token`.
pub(super) async fn token(State(p): State<Provider>, headers: HeaderMap, body: Bytes) -> Response {
    let params = match form(&body) {
        Ok(params) => params,
        Err(why) => return bad_form(why),
    };
    let client = match p.authenticate_client(&headers, &params).await {
        Ok(client) => client,
        Err(response) => return response,
    };
    match params.get("grant_type") {
        Some("authorization_code") => p.redeem(&client, &params).await,
        Some("refresh_token") => p.refresh(&client, &params).await,
        Some(_) => {
            oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "authorization_code or refresh_token")
        }
        None => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "grant_type is required"),
    }
}

/// A refusal of the token service as an OAuth answer.
fn grant_error(p: &Provider, e: TokenError) -> Response {
    use TokenError::*;
    match e {
        RefreshTokenInvalid | RefreshTokenExpired | SessionRevoked | RefreshTokenReused | SessionNotFound => {
            invalid_grant("the grant is not valid")
        }
        NotAMember => invalid_grant("not an active member of the organization"),
        ReauthenticationRequired => {
            invalid_grant("the organization does not accept this session's identity provider; sign in again")
        }
        OrganizationInactive | OrganizationNotFound | NoConnection => {
            invalid_grant("the organization is not available")
        }
        Invalid(_) | InvalidField { .. } => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
        DependencyUnavailable(_) | IdpUnavailable(_) => {
            oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "retry in a moment")
        }
        other => p.server_error(other),
    }
}

impl Provider {
    /// The authorization code grant.
    async fn redeem(&self, client: &OAuthClient, params: &Params) -> Response {
        let (Some(code), Some(redirect_uri), Some(verifier)) =
            (params.get("code"), params.get("redirect_uri"), params.get("code_verifier"))
        else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "code, redirect_uri and code_verifier are required",
            );
        };
        if !pkce_shaped(verifier, 43, 128) {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "code_verifier is malformed");
        }
        let hash = sha256_hex(code.as_bytes());
        let record = match self.store().code(&hash).await {
            Ok(Some(record)) => record,
            Ok(None) => return invalid_grant("the code is not valid"),
            Err(e) => return self.server_error(e),
        };
        // Another client presenting the code learns nothing and spoils nothing.
        if record.client_id != client.client_id {
            return invalid_grant("the code is not valid");
        }
        let now = Timestamp::now();
        if record.used_at.is_some() {
            return self.code_reused(record.session_id).await;
        }
        if record.expires_at <= now {
            return invalid_grant("the code has expired");
        }
        if record.redirect_uri != redirect_uri {
            return invalid_grant("redirect_uri differs from the authorization request's");
        }
        if !same(&s256(verifier), &record.code_challenge) {
            return invalid_grant("code_verifier does not match the code_challenge");
        }
        match self.store().use_code(&hash, now).await {
            Ok(true) => {}
            Ok(false) => return self.code_reused(record.session_id).await,
            Err(e) => return self.server_error(e),
        }
        // The session's first refresh token, rotated: the application gets a fresh access token
        // and a refresh token that was never stored anywhere but as a hash.
        match self.tokens().refresh(&record.refresh_token, None, Some(&client.client_id)).await {
            Ok(issued) => self.tokens_response(client, issued, record.nonce, now).await,
            Err(e) => grant_error(self, e),
        }
    }

    /// A code used twice: whoever holds it is not the application alone, so the session the
    /// first use started ends.
    async fn code_reused(&self, session: SessionId) -> Response {
        tracing::warn!(session_id = %session, "authorization code used twice: ending its session");
        if let Err(e) = self.tokens().end_session_by_id(session, "authorization_code_reused", "system:oauth").await {
            return self.server_error(e);
        }
        invalid_grant("the code was already used")
    }

    /// The refresh token grant, optionally switching the organization (`organization`, by id or
    /// slug), under the token service's rules.
    async fn refresh(&self, client: &OAuthClient, params: &Params) -> Response {
        let Some(refresh_token) = params.get("refresh_token") else {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "refresh_token is required");
        };
        // The token's session must have signed in for this client; nothing is used otherwise.
        match self.session_of_refresh_token(refresh_token).await {
            Ok(Some((_, owner))) if owner == client.client_id => {}
            Ok(_) => return invalid_grant("the grant is not valid"),
            Err(e) => return self.server_error(e),
        }
        let org = match params.get("organization") {
            Some(key) => match self.organization_id(key).await {
                Ok(org) => Some(org),
                Err(e) => return grant_error(self, e),
            },
            None => None,
        };
        match self.tokens().refresh(refresh_token, org, Some(&client.client_id)).await {
            Ok(issued) => self.tokens_response(client, issued, None, Timestamp::now()).await,
            Err(e) => grant_error(self, e),
        }
    }

    async fn organization_id(&self, key: &str) -> Result<OrganizationId, TokenError> {
        match OrganizationId::parse(key) {
            Ok(id) => Ok(id),
            Err(_) => Ok(self.tokens().organization_for_sign_in(key).await?.id),
        }
    }

    /// The session of a refresh token and the client it signed in for.
    async fn session_of_refresh_token(&self, token: &str) -> Result<Option<(SessionId, String)>, TokenError> {
        if token.len() > 256 {
            return Ok(None);
        }
        let Some(record) = self.tokens().store().refresh_token(&sha256_hex(token.as_bytes())).await? else {
            return Ok(None);
        };
        let owner = self.store().session_client(record.session_id).await?;
        Ok(owner.map(|(client, _)| (record.session_id, client)))
    }

    async fn tokens_response(
        &self,
        client: &OAuthClient,
        issued: Issued,
        nonce: Option<String>,
        now: Timestamp,
    ) -> Response {
        let id_token = match self.id_token(client, &issued, nonce, now).await {
            Ok(t) => t,
            Err(e) => return self.server_error(e),
        };
        let expires_in = secs(issued.access_expires_at).saturating_sub(secs(now));
        let body = serde_json::json!({
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "refresh_token": issued.refresh_token,
            "id_token": id_token,
            "scope": "openid email profile",
        });
        json_response(StatusCode::OK, body.to_string())
    }

    /// The ID token for `client`: who signed in, into which organization, with which roles.
    async fn id_token(
        &self,
        client: &OAuthClient,
        issued: &Issued,
        nonce: Option<String>,
        now: Timestamp,
    ) -> Result<String, TokenError> {
        let tokens = self.tokens();
        let session = &issued.session;
        let m = &issued.membership;
        let auth_time = self.store().session_client(session.id).await?.map_or(session.created_at, |(_, t)| t);
        let profile = tokens.member_profile(m.organization_id, session.user_id).await?;
        let iat = secs(now);
        let claims = IdClaims {
            iss: self.issuer().to_owned(),
            sub: session.user_id.to_string(),
            aud: client.client_id.clone(),
            azp: client.client_id.clone(),
            exp: iat + tokens.access_tokens().ttl().as_secs(),
            iat,
            auth_time: secs(auth_time),
            nonce,
            sid: session.id.to_string(),
            org_id: m.organization_id.to_string(),
            org_slug: m.organization_slug.clone(),
            roles: m.roles.clone(),
            email: profile.as_ref().map(|p| p.email.clone()).filter(|e| !e.is_empty()),
            name: profile.map(|p| p.display_name).filter(|n| !n.is_empty()),
        };
        let key = tokens.keys().ring().active().ok_or_else(|| TokenError::Internal("no active signing key".into()))?;
        key.sign("JWT", &claims).map_err(|e| TokenError::Internal(e.0))
    }

    /// The session and audience of one of our ID tokens, signature and issuer checked, its
    /// expiry not (a logout hint may be old).
    fn id_token_hint(&self, token: &str) -> Option<(SessionId, String)> {
        let header = crate::jose::parse_header(token, &[]).ok()?;
        if !header.typ.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("JWT")) {
            return None;
        }
        let key = self.tokens().keys().ring().published(&header.kid, Timestamp::now())?;
        let mut validation = jsonwebtoken::Validation::new(key.algorithm.jwt());
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_issuer(&[self.issuer()]);
        validation.set_required_spec_claims(&["iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<IdClaims>(token, key.decoding(), &validation).ok()?.claims;
        Some((SessionId::parse(&claims.sid).ok()?, claims.aud))
    }
}

/// `POST /oauth2/revoke` (RFC 7009): a refresh token or an access token of the client ends its
/// session. An unknown token is answered as revoked.
pub(super) async fn revoke(State(p): State<Provider>, headers: HeaderMap, body: Bytes) -> Response {
    let params = match form(&body) {
        Ok(params) => params,
        Err(why) => return bad_form(why),
    };
    let client = match p.authenticate_client(&headers, &params).await {
        Ok(client) => client,
        Err(response) => return response,
    };
    let Some(token) = params.get("token") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "token is required");
    };
    let session = match p.session_of_refresh_token(token).await {
        Ok(Some((session, owner))) => Some((session, owner)),
        Ok(None) => match p.tokens().access_tokens().verify(token, Timestamp::now()) {
            Ok(principal) => match p.store().session_client(principal.session_id).await {
                Ok(owner) => owner.map(|(owner, _)| (principal.session_id, owner)),
                Err(e) => return p.server_error(e),
            },
            Err(_) => None,
        },
        Err(e) => return p.server_error(e),
    };
    match session {
        Some((session, owner)) if owner == client.client_id => {
            if let Err(e) = p.tokens().end_session_by_id(session, "revoked", &format!("client:{owner}")).await {
                return p.server_error(e);
            }
        }
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                "the token was not issued to this client",
            )
        }
        None => {}
    }
    json_response(StatusCode::OK, "{}".into())
}

/// `GET` or `POST /oauth2/userinfo` with a Bearer access token: who it signs in, in which
/// organization, with which roles. Revocations apply, as for `Authorize`.
pub(super) async fn userinfo(State(p): State<Provider>, headers: HeaderMap) -> Response {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    let refused = || oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", "the access token is not valid");
    let Some(token) = bearer else { return refused() };
    let principal = match p.tokens().authorizer().allowed_principal(token).await {
        Ok(principal) => principal,
        Err(lanyard_core::caller::AuthError::Unavailable) => {
            return oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "retry in a moment")
        }
        Err(_) => return refused(),
    };
    let profile = match p.tokens().member_profile(principal.organization_id, principal.user_id).await {
        Ok(profile) => profile,
        Err(e) => return p.server_error(e),
    };
    let mut body = serde_json::json!({
        "sub": principal.user_id.to_string(),
        "org_id": principal.organization_id.to_string(),
        "org_slug": principal.organization_slug,
        "roles": principal.roles.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
    });
    if let Some(m) = profile {
        body["email"] = serde_json::json!(m.email);
        body["name"] = serde_json::json!(m.display_name);
    }
    json_response(StatusCode::OK, body.to_string())
}

/// `GET /oauth2/logout` (OpenID Connect RP-Initiated Logout): with an `id_token_hint` of ours,
/// ends its session, then returns to `post_logout_redirect_uri` only when the token's client
/// registered it exactly; otherwise shows that the person is signed out.
pub(super) async fn logout(State(p): State<Provider>, uri: Uri) -> Response {
    let Ok(params) = Params::parse(uri.query()) else { return page(Trouble::InvalidRequest) };
    let hint = params.get("id_token_hint").and_then(|t| p.id_token_hint(t));
    let client_id = match (&hint, params.get("client_id")) {
        (Some((_, aud)), Some(id)) if aud != id => return page(Trouble::InvalidRequest),
        (Some((_, aud)), _) => Some(aud.clone()),
        (None, id) => id.map(str::to_owned),
    };
    let client = match client_id {
        Some(id) => match p.clients().get(&id).await {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "logout failed");
                return page(Trouble::Internal);
            }
        },
        None => None,
    };
    let back = params.get("post_logout_redirect_uri");
    if let Some(uri) = back {
        if !client.as_ref().is_some_and(|c| c.logs_out_to(uri)) {
            return page(Trouble::LogoutUriMismatch);
        }
    }
    if let (Some((session, aud)), Some(client)) = (&hint, &client) {
        let owner = match p.store().session_client(*session).await {
            Ok(owner) => owner,
            Err(e) => {
                tracing::error!(error = %e, "logout failed");
                return page(Trouble::Internal);
            }
        };
        if owner.is_some_and(|(owner, _)| &owner == aud && owner == client.client_id) {
            if let Err(e) = p.tokens().end_session_by_id(*session, "logged_out", &format!("client:{aud}")).await {
                tracing::error!(error = %e, "logout failed");
                return page(Trouble::Internal);
            }
        }
    }
    match back {
        Some(uri) => {
            let state: Vec<(&str, &str)> = params.get("state").map(|s| ("state", s)).into_iter().collect();
            match with_query(uri, &state) {
                Some(location) => see_other(&location),
                None => page(Trouble::Internal),
            }
        }
        None => page(Trouble::SignedOut),
    }
}
