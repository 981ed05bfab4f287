//! TokenService's errors: what can go wrong, in the domain's words (their API form is `grpc::status`).

use lanyard_clients::ClientError;

// The variants every service's errors share (values, authentication, permission, the database,
// replays, internal failures) and their helpers come from the macro.
lanyard_core::service_errors! {
    /// Everything a token operation can fail with.
    pub enum TokenError {
        /// The upstream ID token failed verification; the detail goes to the log only.
        #[error("the ID token is not valid for this organization")]
        IdTokenInvalid(String),
        /// The ID token was already exchanged for a session.
        #[error("the ID token was already used; sign in again")]
        IdTokenReplayed,
        /// An invitation grant failed on the invitation token or on the ID token; which one goes to
        /// the log only, so the answer says nothing about whether the invitation exists.
        #[error("the invitation token or the ID token is not valid")]
        InvitationGrantInvalid(String),
        /// Too many calls from this peer.
        #[error("too many {what} from this address")]
        RateLimited { what: &'static str, limited: lanyard_core::limit::Limited },
        /// The identity provider could not be reached (discovery or JWKS).
        #[error("the identity provider is unavailable: {0}")]
        IdpUnavailable(String),
        #[error("the organization has no enabled SSO connection for this identity provider")]
        NoConnection,
        #[error("organization_id is required: this identity has not signed in before")]
        OrganizationRequired,
        #[error("the refresh token is not valid")]
        RefreshTokenInvalid,
        #[error("the refresh token has expired")]
        RefreshTokenExpired,
        #[error("the session was revoked")]
        SessionRevoked,
        #[error("the refresh token was already used; the session has been revoked")]
        RefreshTokenReused,
        #[error("the user is not an active member of the organization")]
        NotAMember,
        #[error("the organization is suspended or deleted")]
        OrganizationInactive,
        #[error(
            "the organization does not accept this session's identity provider; sign in through one of its SSO connections"
        )]
        ReauthenticationRequired,
        #[error("the next signing key has been published for too short a time; retry in {retry_after_secs} s or force")]
        NextKeyTooNew { retry_after_secs: u64 },
        #[error("session not found")]
        SessionNotFound,
        #[error("OAuth client not found")]
        ClientNotFound,
        #[error("organization not found")]
        OrganizationNotFound,
        #[error("an invitation grant needs the invitation service, which this process does not reach")]
        InvitationsUnavailable,
        /// A business error of the tenancy or invitation service, passed through to the caller with its
        /// code, reason and details.
        #[error("upstream: {0}")]
        Upstream(ClientError),
        /// Tenancy or invitation failed unexpectedly (unreachable, misconfigured key, internal).
        #[error("a dependency failed: {0}")]
        DependencyUnavailable(ClientError),
    }
}

impl TokenError {
    /// The stable reason of a passed-through status, if this is one.
    pub fn upstream_reason(&self) -> Option<String> {
        match self {
            Self::Upstream(e) => e.reason(),
            _ => None,
        }
    }

    /// An invitation grant's failure as its caller sees it. Whether the invitation exists, has
    /// expired, was revoked or accepted, whether its organization is active, and whether the ID token
    /// fits that organization's connections, all answer `INVITATION_GRANT_INVALID`: otherwise the
    /// answer to a guessed token would tell a real invitation from none. The detail goes to the log.
    /// What needs a valid invitation *and* an ID token its organization's provider vouches for
    /// (`EMAIL_MISMATCH`, seats) is answered as it is.
    pub(crate) fn hide_invitation(self) -> Self {
        match self {
            // A malformed token is told as such: its form is no secret.
            TokenError::Upstream(e) if !e.is_invalid_argument() => TokenError::InvitationGrantInvalid(e.to_string()),
            TokenError::IdTokenInvalid(why) => TokenError::InvitationGrantInvalid(format!("ID token: {why}")),
            e @ (TokenError::NoConnection | TokenError::OrganizationInactive | TokenError::OrganizationNotFound) => {
                TokenError::InvitationGrantInvalid(e.to_string())
            }
            other => other,
        }
    }
}

/// A failed call to tenancy or invitation: their business errors pass through to the caller with
/// their code, reason and details; the rest is unavailability.
impl From<ClientError> for TokenError {
    fn from(e: ClientError) -> Self {
        match e {
            e @ ClientError::Rejected(_) => Self::Upstream(e),
            e @ ClientError::Failed(_) => Self::DependencyUnavailable(e),
            ClientError::Malformed(what) => Self::Internal(format!("a dependency: {what}")),
        }
    }
}

/// A failed organization lookup: an unknown organization is [`TokenError::OrganizationNotFound`].
pub(crate) fn organization_lookup(e: ClientError) -> TokenError {
    if e.is("ORGANIZATION_NOT_FOUND") {
        TokenError::OrganizationNotFound
    } else {
        e.into()
    }
}
