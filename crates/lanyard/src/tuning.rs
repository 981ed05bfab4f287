//! What a program embedding Lanyard may adjust beyond the settings, before the services are
//! built: the token and invitation configurations the settings produced, the verifier of member
//! callers in a process without the token service, and whether background work starts.
//!
//! The binary passes `Tuning::default()` (nothing adjusted); the testkit uses it to run the real
//! composition root with a test's clock, limits or fact store, so tests and production assemble
//! the services in one place.

use std::sync::Arc;

use lanyard_core::caller::AccessTokenVerifier;
use lanyard_invitation::InvitationConfig;
use lanyard_token::TokenConfig;

type Adjust<T> = Box<dyn FnOnce(&mut T) + Send>;

/// Adjustments to the configuration the settings produce; see the module documentation.
pub struct Tuning {
    pub(crate) token: Option<Adjust<TokenConfig>>,
    pub(crate) invitation: Option<Adjust<InvitationConfig>>,
    pub(crate) member_tokens: Option<Arc<dyn AccessTokenVerifier>>,
    pub(crate) background_work: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Self { token: None, invitation: None, member_tokens: None, background_work: true }
    }
}

impl std::fmt::Debug for Tuning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tuning")
            .field("token", &self.token.is_some())
            .field("invitation", &self.invitation.is_some())
            .field("member_tokens", &self.member_tokens.is_some())
            .field("background_work", &self.background_work)
            .finish()
    }
}

impl Tuning {
    /// Adjusts the token service's configuration after the settings produced it.
    pub fn token(mut self, adjust: impl FnOnce(&mut TokenConfig) + Send + 'static) -> Self {
        self.token = Some(Box::new(adjust));
        self
    }

    /// Adjusts the invitation service's configuration after the settings produced it.
    pub fn invitation(mut self, adjust: impl FnOnce(&mut InvitationConfig) + Send + 'static) -> Self {
        self.invitation = Some(Box::new(adjust));
        self
    }

    /// Verifies member callers' access tokens with `verifier` in a process that runs neither the
    /// token service nor a remote verifier (`LANYARD_TOKEN_URL`); ignored otherwise, so it can
    /// never replace the token service's own keys.
    pub fn member_tokens(mut self, verifier: Arc<dyn AccessTokenVerifier>) -> Self {
        self.member_tokens = Some(verifier);
        self
    }

    /// Starts no background work (invitation mail delivery and sweeping, signing-key reloads and
    /// rotation): the embedding program drives it itself. The revocation-fact subscription and
    /// the TLS reloader are not background work in this sense and always run.
    pub fn without_background_work(mut self) -> Self {
        self.background_work = false;
        self
    }
}
