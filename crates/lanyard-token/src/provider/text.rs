//! Every sentence a person reads on Lanyard's pages, in one place (one language today: the
//! pages declare it with `<html lang>`). Names that come from data (an organization's display
//! name, an invited email) are the only text not written here, and are escaped where shown.

use lanyard_core::roles::SsoKind;

use super::pages::Trouble;

/// The language of every page.
pub const LANG: &str = "en";
/// Appended to every page title.
pub const PRODUCT: &str = "Lanyard";

/// The invitation landing page.
pub mod invitation {
    /// The title, before the organization's name.
    pub const TITLE: &str = "Join";
    /// Before the invited email.
    pub const FOR_EMAIL: &str = "This invitation is for";
    /// Above the buttons.
    pub const CHOOSE: &str = "Sign in with your organization's account to accept it.";
    /// When the organization has no enabled connection yet.
    pub const NO_CONNECTION: &str =
        "Your organization has not set up sign-in yet. Ask the person who invited you to add one, then open this \
         link again.";
}

/// The email-first sign-in page.
pub mod sign_in {
    pub const TITLE: &str = "Sign in";
    pub const INTRO: &str = "Enter your work email. We will send you to your organization's sign-in.";
    pub const EMAIL_LABEL: &str = "Work email";
    pub const SUBMIT: &str = "Continue";
    /// Shown above the form when the email did not parse.
    pub const EMAIL_INVALID: &str = "Enter an email address such as name@company.com.";
}

/// The organization picker.
pub mod picker {
    pub const TITLE: &str = "Choose an organization";
    pub const INTRO: &str =
        "You belong to several organizations. Choose the one to continue with; you can switch later.";
}

/// The label of the button that signs in through a connection of `kind`.
pub fn continue_with(kind: SsoKind) -> &'static str {
    match kind {
        SsoKind::GoogleWorkspace => "Continue with Google Workspace",
        SsoKind::Okta => "Continue with Okta",
        SsoKind::AzureAd => "Continue with Microsoft",
        SsoKind::Oidc => "Continue with your organization's sign-in",
    }
}

/// The title and the sentence of the page for `trouble`.
pub fn trouble(trouble: Trouble) -> (&'static str, &'static str) {
    match trouble {
        Trouble::InvalidRequest => ("This sign-in link is not valid", "Go back to the application and sign in again."),
        Trouble::UnknownClient => {
            ("Unknown application", "This application is not registered to sign people in with Lanyard.")
        }
        Trouble::RedirectUriMismatch => (
            "Unknown return address",
            "This application asked to return to an address it has not registered, so the sign-in stopped here.",
        ),
        Trouble::FlowInvalid => (
            "This sign-in has expired",
            "It was already used, took too long, or was started in another browser. Go back to the application \
             and sign in again.",
        ),
        Trouble::ProviderUnavailable => (
            "Your identity provider is unavailable",
            "Your organization's identity provider could not be reached. Try again in a moment.",
        ),
        Trouble::ProviderRefused => {
            ("Sign-in did not complete", "Your organization's identity provider did not sign you in.")
        }
        Trouble::NotAMember => (
            "No access to this organization",
            "You are not a member of this organization. Ask its administrator for an invitation.",
        ),
        Trouble::SignInRefused => {
            ("Sign-in refused", "This account cannot sign in to this organization. Ask its administrator for help.")
        }
        Trouble::LogoutUriMismatch => {
            ("Unknown return address", "This application asked to return to an address it has not registered.")
        }
        Trouble::SignedOut => ("Signed out", "You are signed out. You may close this window."),
        Trouble::RateLimited => {
            ("Too many attempts", "Too many sign-in attempts from your network. Wait a minute and try again.")
        }
        Trouble::InvitationInvalid => (
            "This invitation link cannot be used",
            "It may have expired, been used already, or been withdrawn. Ask the person who invited you to send a \
             new one.",
        ),
        Trouble::FormExpired => (
            "This page has expired",
            "The form was not sent from this browser's page, or the page is too old. Go back, reload the page and \
             try again.",
        ),
        Trouble::NoOrganization => (
            "We could not find your organization",
            "No organization signs in with this email address yet. Use the link in your invitation email, or ask \
             your administrator how to sign in.",
        ),
        Trouble::NoApplication => (
            "Open the application to continue",
            "This page was opened without an application to return to. Open the application you want to use and \
             sign in from there.",
        ),
        Trouble::ProviderRequired => (
            "Sign in through that organization",
            "That organization signs people in with its own identity provider. Go back to the application and \
             sign in to it directly.",
        ),
        Trouble::Internal => ("Something went wrong", "Something went wrong on our side. Try again in a moment."),
    }
}
