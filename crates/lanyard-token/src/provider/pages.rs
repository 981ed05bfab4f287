//! What a person sees: the hosted pages (invitation landing, email-first sign-in) and the page
//! for each reason a sign-in stops, each with a stable code (`data-error`, and the
//! `X-Lanyard-Error` header) that tests and support can rely on. Server-rendered, no script; the
//! words are in `text`; data shown (an organization's name, an email) is escaped, and nothing
//! else from the request is reflected.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::text;

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
    /// An invitation link that cannot be used: unknown, expired, revoked, used or malformed,
    /// all alike (one status, one text: no oracle).
    InvitationInvalid,
    /// A form without the CSRF token of this browser's page.
    FormExpired,
    /// Email-first sign-in found no organization that verified the email's domain.
    NoOrganization,
    /// A hosted page has no application to send the browser to.
    NoApplication,
    /// The organization picked does not accept the provider the person signed in with.
    ProviderRequired,
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
            Self::InvitationInvalid => "invitation_invalid",
            Self::FormExpired => "form_expired",
            Self::NoOrganization => "no_organization",
            Self::NoApplication => "no_application",
            Self::ProviderRequired => "reauthentication_required",
            Self::Internal => "internal",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Self::ProviderUnavailable => StatusCode::BAD_GATEWAY,
            Self::NotAMember | Self::SignInRefused | Self::ProviderRefused | Self::ProviderRequired => {
                StatusCode::FORBIDDEN
            }
            Self::SignedOut => StatusCode::OK,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::InvitationInvalid | Self::NoOrganization => StatusCode::NOT_FOUND,
            Self::FormExpired => StatusCode::FORBIDDEN,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The title and the sentence shown.
    pub fn text(self) -> (&'static str, &'static str) {
        text::trouble(self)
    }
}

/// The page for `trouble`, not cached.
pub fn page(trouble: Trouble) -> Response {
    let (title, sentence) = trouble.text();
    let main = format!("<main data-error=\"{}\"><h1>{title}</h1><p>{sentence}</p></main>", trouble.code());
    let mut response = html(trouble.status(), &document(title, &main), None);
    response.headers_mut().insert(HeaderName::from_static("x-lanyard-error"), HeaderValue::from_static(trouble.code()));
    response
}

/// Where the pages' stylesheet is served (a file of our own: `default-src 'self'` refuses
/// inline styles).
pub const STYLESHEET_PATH: &str = "/assets/lanyard.css";

/// Readable without it; with it: a narrow column, large targets, a focus ring that shows, and
/// text and buttons above WCAG AA contrast (#1f2328 on white is 15:1, white on #0b57d0 is 6:1).
const STYLESHEET: &str = "\
body{margin:0;font:16px/1.5 system-ui,sans-serif;color:#1f2328;background:#fff}\
main{max-width:28rem;margin:4rem auto;padding:0 1rem}\
h1{font-size:1.5rem;line-height:1.25}\
label{display:block;font-weight:600;margin-bottom:.25rem}\
input{box-sizing:border-box;width:100%;padding:.6rem;font:inherit;border:1px solid #59636e;border-radius:6px}\
button{display:block;width:100%;margin:.75rem 0;padding:.7rem 1rem;font:inherit;font-weight:600;color:#fff;\
background:#0b57d0;border:0;border-radius:6px;cursor:pointer}\
:focus-visible{outline:3px solid #1f2328;outline-offset:2px}\
.alert{padding:.75rem;border-left:4px solid #b3261e;background:#fdf1f0}\
";

/// `GET` the stylesheet.
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// `s` safe inside HTML text and double-quoted attributes.
pub use lanyard_core::values::escape_html as escape;

/// A whole document around `main` (already escaped).
fn document(title: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} – {product}</title><link rel=\"stylesheet\" href=\"{STYLESHEET_PATH}\"></head>\
         <body>{main}</body></html>\n",
        lang = text::LANG,
        product = text::PRODUCT,
    )
}

/// An HTML answer, not cached; `set_cookie` when the page hands out a form's CSRF cookie.
fn html(status: StatusCode, body: &str, set_cookie: Option<HeaderValue>) -> Response {
    let mut response = (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body.to_owned(),
    )
        .into_response();
    if let Some(cookie) = set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// A page with forms: its CSRF token, and the cookie that carries it when new. Its policy has no
/// `form-action`: browsers apply that to the redirects after a submission too, and these forms
/// end at the organization's provider or the application, on origins of their own.
fn form_page(status: StatusCode, kind: &'static str, title: &str, main: &str, csrf: &Csrf) -> Response {
    let mut response = html(status, &document(title, main), csrf.set_cookie.clone());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(FORM_PAGE_POLICY));
    headers.insert(HeaderName::from_static("x-lanyard-page"), HeaderValue::from_static(kind));
    response
}

/// The policy of pages with forms.
pub const FORM_PAGE_POLICY: &str = "default-src 'self'; frame-ancestors 'none'";

/// A form's CSRF token (double-submit: the same value in a `__Host-` cookie and in the form).
pub struct Csrf {
    pub token: String,
    /// The cookie to set when this browser had none.
    pub set_cookie: Option<HeaderValue>,
}

fn hidden(name: &str, value: &str) -> String {
    format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", escape(name), escape(value))
}

/// The invitation landing page: the organization, the invited email, a button per connection
/// (each its own form, posted back to the page's own address so the link's token is not
/// repeated in the page).
pub fn invitation(landing: &crate::service::Landing, csrf: &Csrf) -> Response {
    use text::invitation as t;
    let org = escape(&landing.organization_name);
    let title = format!("{} {org}", t::TITLE);
    let mut main = format!(
        "<main data-page=\"invitation\"><h1>{title}</h1><p>{} <strong>{}</strong>.</p>",
        t::FOR_EMAIL,
        escape(&landing.email)
    );
    if landing.connections.is_empty() {
        main.push_str(&format!("<p>{}</p>", t::NO_CONNECTION));
    } else {
        main.push_str(&format!("<p>{}</p>", t::CHOOSE));
    }
    for c in &landing.connections {
        main.push_str(&format!(
            "<form method=\"post\">{}{}<button type=\"submit\">{}</button></form>",
            hidden("csrf", &csrf.token),
            hidden("connection", &c.id.to_string()),
            text::continue_with(c.kind)
        ));
    }
    main.push_str("</main>");
    form_page(StatusCode::OK, "invitation", &title, &main, csrf)
}

/// The email-first sign-in page; `carried` are the application's authorization parameters, sent
/// back with the email.
pub fn sign_in(csrf: &Csrf, carried: &[(&str, &str)], invalid_email: bool) -> Response {
    use text::sign_in as t;
    let mut main = format!("<main data-page=\"sign_in\"><h1>{}</h1>", t::TITLE);
    if invalid_email {
        main.push_str(&format!("<p class=\"alert\" role=\"alert\" id=\"email-error\">{}</p>", t::EMAIL_INVALID));
    }
    main.push_str(&format!("<p>{}</p><form method=\"post\" action=\"/sign-in\">", t::INTRO));
    main.push_str(&hidden("csrf", &csrf.token));
    for (k, v) in carried {
        main.push_str(&hidden(k, v));
    }
    let described = if invalid_email { " aria-describedby=\"email-error\" aria-invalid=\"true\"" } else { "" };
    main.push_str(&format!(
        "<label for=\"email\">{}</label><input id=\"email\" name=\"email\" type=\"email\" \
         autocomplete=\"email\" required maxlength=\"320\"{described}><button type=\"submit\">{}</button></form></main>",
        t::EMAIL_LABEL,
        t::SUBMIT
    ));
    let status = if invalid_email { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    form_page(status, "sign_in", t::TITLE, &main, csrf)
}

/// The organization picker: one button per organization (each its own form); the code waits in
/// an HttpOnly cookie, never in the page.
pub fn picker(organizations: &[(lanyard_core::OrganizationId, String)], csrf: &Csrf) -> Response {
    use text::picker as t;
    let mut main = format!("<main data-page=\"picker\"><h1>{}</h1><p>{}</p>", t::TITLE, t::INTRO);
    for (id, name) in organizations {
        main.push_str(&format!(
            "<form method=\"post\" action=\"/oauth2/select\">{}{}<button type=\"submit\">{}</button></form>",
            hidden("csrf", &csrf.token),
            hidden("organization", &id.to_string()),
            escape(name)
        ));
    }
    main.push_str("</main>");
    form_page(StatusCode::OK, "picker", t::TITLE, &main, csrf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_hidden_characters() {
        assert_eq!(
            escape("<a href=\"x\">O'Brien & co\u{202e}</a>"),
            "&lt;a href=&quot;x&quot;&gt;O&#39;Brien &amp; co&lt;/a&gt;"
        );
    }
}
