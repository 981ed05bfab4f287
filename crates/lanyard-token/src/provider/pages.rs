//! What a person sees when a sign-in cannot go on: every text in one place, each page with a
//! stable code (`data-error`, and the `X-Lanyard-Error` header) that tests and support can rely
//! on. Server-rendered, no script, nothing from the request reflected.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Why a sign-in stopped on a Lanyard page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trouble {
    /// The request is malformed (a parameter repeated, too long, missing before the redirect
    /// URI could be trusted).
    InvalidRequest,
    /// `client_id` names no registered application.
    UnknownClient,
    /// `redirect_uri` is not one the application registered, exactly.
    RedirectUriMismatch,
    /// The callback's state is unknown, expired, used, or from another browser.
    FlowInvalid,
    /// The organization's provider could not be reached, or answered nonsense.
    ProviderUnavailable,
    /// The organization's provider refused, or its answer did not verify.
    ProviderRefused,
    /// The identity is not an active member of the organization.
    NotAMember,
    /// The identity rules refused the sign-in (an unverified email, a domain the organization
    /// does not hold, an invitation that does not fit).
    SignInRefused,
    /// A post-logout URI that the application did not register.
    LogoutUriMismatch,
    /// Signed out.
    SignedOut,
    /// Too many requests from this address.
    RateLimited,
    /// Lanyard failed; the cause is in the log.
    Internal,
}

impl Trouble {
    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::UnknownClient => "unknown_client",
            Self::RedirectUriMismatch => "redirect_uri_mismatch",
            Self::FlowInvalid => "sign_in_expired",
            Self::ProviderUnavailable => "provider_unavailable",
            Self::ProviderRefused => "provider_refused",
            Self::NotAMember => "not_a_member",
            Self::SignInRefused => "sign_in_refused",
            Self::LogoutUriMismatch => "post_logout_redirect_uri_mismatch",
            Self::SignedOut => "signed_out",
            Self::RateLimited => "rate_limited",
            Self::Internal => "internal",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Self::ProviderUnavailable => StatusCode::BAD_GATEWAY,
            Self::NotAMember | Self::SignInRefused | Self::ProviderRefused => StatusCode::FORBIDDEN,
            Self::SignedOut => StatusCode::OK,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The title and the sentence shown.
    pub fn text(self) -> (&'static str, &'static str) {
        match self {
            Self::InvalidRequest => ("This sign-in link is not valid", "Go back to the application and sign in again."),
            Self::UnknownClient => {
                ("Unknown application", "This application is not registered to sign people in with Lanyard.")
            }
            Self::RedirectUriMismatch => (
                "Unknown return address",
                "This application asked to return to an address it has not registered, so the sign-in stopped here.",
            ),
            Self::FlowInvalid => (
                "This sign-in has expired",
                "It was already used, took too long, or was started in another browser. Go back to the \
                 application and sign in again.",
            ),
            Self::ProviderUnavailable => (
                "Your identity provider is unavailable",
                "Your organization's identity provider could not be reached. Try again in a moment.",
            ),
            Self::ProviderRefused => {
                ("Sign-in did not complete", "Your organization's identity provider did not sign you in.")
            }
            Self::NotAMember => (
                "No access to this organization",
                "You are not a member of this organization. Ask its administrator for an invitation.",
            ),
            Self::SignInRefused => {
                ("Sign-in refused", "This account cannot sign in to this organization. Ask its administrator for help.")
            }
            Self::LogoutUriMismatch => {
                ("Unknown return address", "This application asked to return to an address it has not registered.")
            }
            Self::SignedOut => ("Signed out", "You are signed out. You may close this window."),
            Self::RateLimited => {
                ("Too many attempts", "Too many sign-in attempts from your network. Wait a minute and try again.")
            }
            Self::Internal => ("Something went wrong", "Something went wrong on our side. Try again in a moment."),
        }
    }
}

/// The page for `trouble`, not cached.
pub fn page(trouble: Trouble) -> Response {
    let (title, sentence) = trouble.text();
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title} – Lanyard</title></head>\
         <body><main data-error=\"{code}\"><h1>{title}</h1><p>{sentence}</p></main></body></html>\n",
        code = trouble.code()
    );
    (
        trouble.status(),
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::HeaderName::from_static("x-lanyard-error"), HeaderValue::from_static(trouble.code())),
        ],
        body,
    )
        .into_response()
}
