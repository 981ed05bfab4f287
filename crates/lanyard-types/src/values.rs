//! Parsed domain values. Each is built only through `parse`, so once a value exists it is valid
//! everywhere: normalized, bounded and free of surprises.

use std::fmt;

/// Why a value was refused. The `&'static str` names the field, for `BadRequest` details.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The field was empty.
    #[error("{0} is required")]
    Missing(&'static str),
    /// The field does not have the expected form.
    #[error("{0} is malformed")]
    Malformed(&'static str),
    /// The field is longer than its limit.
    #[error("{0} is longer than {1} characters")]
    TooLong(&'static str, usize),
}

impl ValueError {
    /// The name of the offending field.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Missing(f) | Self::Malformed(f) | Self::TooLong(f, _) => f,
        }
    }
}

macro_rules! string_value {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The normalized text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_value!(
    /// A normalized (lowercase) email address with a valid domain.
    Email
);
string_value!(
    /// A normalized (lowercase) DNS domain name, such as `acme.com`.
    Domain
);
string_value!(
    /// An organization slug: lowercase `[a-z0-9-]{2,63}`, not starting or ending with `-`.
    OrgSlug
);
string_value!(
    /// A role name: lowercase `[a-z0-9_-]{1,63}`.
    RoleName
);
string_value!(
    /// A permission `resource:action`, where either side may be `*`; or `*` alone for all.
    Permission
);
string_value!(
    /// A human-readable name: trimmed, 1 to 200 characters, none of them hidden or layout-changing
    /// (see [`is_hidden_or_layout`]).
    DisplayName
);

/// The longest email address accepted (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// The longest domain name accepted.
pub const MAX_DOMAIN_LEN: usize = 253;
/// The longest display name accepted, in characters.
pub const MAX_DISPLAY_NAME_LEN: usize = 200;

impl Email {
    /// Trims, lowercases and validates an email address.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        const FIELD: &str = "email";
        let s = raw.trim();
        if s.is_empty() {
            return Err(ValueError::Missing(FIELD));
        }
        if s.len() > MAX_EMAIL_LEN {
            return Err(ValueError::TooLong(FIELD, MAX_EMAIL_LEN));
        }
        let s = s.to_ascii_lowercase();
        let (local, domain) = s.rsplit_once('@').ok_or(ValueError::Malformed(FIELD))?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b));
        if !local_ok {
            return Err(ValueError::Malformed(FIELD));
        }
        let domain = Domain::parse(domain).map_err(|_| ValueError::Malformed(FIELD))?;
        Ok(Self(format!("{local}@{domain}")))
    }

    /// The domain part.
    pub fn domain(&self) -> Domain {
        let (_, d) = self.0.rsplit_once('@').unwrap_or_default();
        Domain(d.to_owned())
    }
}

impl Domain {
    /// Trims, lowercases and validates a DNS name with at least two labels and an alphabetic
    /// top-level label (so IP addresses are refused).
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        const FIELD: &str = "domain";
        let s = raw.trim();
        if s.is_empty() {
            return Err(ValueError::Missing(FIELD));
        }
        if s.len() > MAX_DOMAIN_LEN {
            return Err(ValueError::TooLong(FIELD, MAX_DOMAIN_LEN));
        }
        let s = s.to_ascii_lowercase();
        let labels: Vec<&str> = s.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        let tld_ok = labels
            .last()
            .is_some_and(|t| t.len() >= 2 && (t.bytes().all(|b| b.is_ascii_alphabetic()) || t.starts_with("xn--")));
        if labels.len() < 2 || !labels.iter().all(label_ok) || !tld_ok {
            return Err(ValueError::Malformed(FIELD));
        }
        Ok(Self(s))
    }

    /// Whether this is a public webmail domain, which no organization owns.
    pub fn is_public_webmail(&self) -> bool {
        PUBLIC_WEBMAIL_DOMAINS.contains(&self.0.as_str())
    }
}

/// Consumer email providers: an organization allowing one of these would let anyone in.
pub const PUBLIC_WEBMAIL_DOMAINS: &[&str] = &[
    "aol.com",
    "gmail.com",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "googlemail.com",
    "hey.com",
    "hotmail.com",
    "hotmail.co.uk",
    "icloud.com",
    "live.com",
    "mac.com",
    "mail.com",
    "mail.ru",
    "me.com",
    "msn.com",
    "outlook.com",
    "proton.me",
    "protonmail.com",
    "qq.com",
    "web.de",
    "yahoo.com",
    "yahoo.co.uk",
    "yandex.ru",
    "yandex.com",
    "zoho.com",
    "163.com",
    "126.com",
];

impl OrgSlug {
    /// Validates a slug. Uppercase is refused rather than folded, so a slug reads the same everywhere.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        const FIELD: &str = "slug";
        if raw.is_empty() {
            return Err(ValueError::Missing(FIELD));
        }
        if raw.len() > 63 {
            return Err(ValueError::TooLong(FIELD, 63));
        }
        let ok = raw.len() >= 2
            && !raw.starts_with('-')
            && !raw.ends_with('-')
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(ValueError::Malformed(FIELD));
        }
        Ok(Self(raw.to_owned()))
    }
}

impl RoleName {
    /// Validates a role name.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        const FIELD: &str = "role";
        if raw.is_empty() {
            return Err(ValueError::Missing(FIELD));
        }
        if raw.len() > 63 {
            return Err(ValueError::TooLong(FIELD, 63));
        }
        if !raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
            return Err(ValueError::Malformed(FIELD));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The built-in role that owns the organization.
    pub fn owner() -> Self {
        Self("owner".into())
    }
    /// The built-in role that manages members, invitations, roles and connections.
    pub fn admin() -> Self {
        Self("admin".into())
    }
    /// The built-in role of an ordinary member.
    pub fn member() -> Self {
        Self("member".into())
    }
}

impl Permission {
    /// Validates `resource:action` (each `[a-z0-9_.-]{1,63}` or `*`), or `*`.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        const FIELD: &str = "permission";
        if raw.is_empty() {
            return Err(ValueError::Missing(FIELD));
        }
        if raw.len() > 127 {
            return Err(ValueError::TooLong(FIELD, 127));
        }
        if raw == "*" {
            return Ok(Self(raw.to_owned()));
        }
        let part_ok = |p: &str| {
            p == "*"
                || (!p.is_empty()
                    && p.len() <= 63
                    && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b)))
        };
        match raw.split_once(':') {
            Some((res, act)) if part_ok(res) && part_ok(act) && res != "*" => Ok(Self(raw.to_owned())),
            _ => Err(ValueError::Malformed(FIELD)),
        }
    }

    /// Whether this granted permission covers `wanted`.
    pub fn grants(&self, wanted: &Permission) -> bool {
        if self.0 == "*" || self.0 == wanted.0 {
            return true;
        }
        match (self.0.split_once(':'), wanted.0.split_once(':')) {
            (Some((res, "*")), Some((wres, _))) => res == wres,
            _ => false,
        }
    }
}

impl DisplayName {
    /// Trims and validates a display name.
    pub fn parse(raw: &str, field: &'static str) -> Result<Self, ValueError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(ValueError::Missing(field));
        }
        if s.chars().count() > MAX_DISPLAY_NAME_LEN {
            return Err(ValueError::TooLong(field, MAX_DISPLAY_NAME_LEN));
        }
        if s.chars().any(is_hidden_or_layout) {
            return Err(ValueError::Malformed(field));
        }
        Ok(Self(s.to_owned()))
    }
}

/// `s` safe inside HTML text and double-quoted attributes, without the characters
/// [`is_hidden_or_layout`] names (an email's or a page's text shows what the value is).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if is_hidden_or_layout(c) => {}
            c => out.push(c),
        }
    }
    out
}

/// Whether `c` must not appear in a name shown to people: control characters (Cc, which include
/// line breaks), format characters (Cf: bidi overrides and isolates such as U+202E, zero-width
/// characters such as U+200B, soft hyphens, tag characters) and the line and paragraph separators
/// U+2028 and U+2029 (Zl, Zp). Such characters make a name display as something else than it is
/// (a reversed file extension, an invisible "urgent" line in a mail client's list).
///
/// Zero-width joiners and non-joiners (U+200C, U+200D) are format characters too: names that need
/// them (some Persian and Indic spellings, emoji sequences) are refused or, from identity
/// providers, shown without them.
pub fn is_hidden_or_layout(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    c.is_control()
        || matches!(
            c.general_category(),
            GeneralCategory::Format | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
        )
}

/// A name from an untrusted source that Lanyard cannot send back (an identity provider's `name`
/// claim), made displayable: whitespace runs (line breaks and separators included) collapsed to
/// one space, other hidden and layout characters removed, trimmed, cut to [`MAX_DISPLAY_NAME_LEN`] characters. Empty when nothing is left.
pub fn sanitize_display_name(raw: &str) -> String {
    let mut out = String::new();
    let mut space = false;
    for c in raw.chars() {
        // Line breaks and separators are whitespace too: they become one space, not nothing.
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if is_hidden_or_layout(c) {
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    out.chars().take(MAX_DISPLAY_NAME_LEN).collect::<String>().trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escaping_leaves_no_markup_and_no_hidden_characters() {
        assert_eq!(
            escape_html(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(escape_html("Acme\u{202E}gpj.exe\u{200B}\n"), "Acmegpj.exe");
        assert_eq!(escape_html("Zoë Corp"), "Zoë Corp");
    }
    use proptest::prelude::*;

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(Email::parse("  IT@Acme.COM ").unwrap().as_str(), "it@acme.com");
        assert_eq!(Email::parse("a.b+c@sub.acme.io").unwrap().domain().as_str(), "sub.acme.io");
        for bad in [
            "",
            "acme.com",
            "@acme.com",
            "a@",
            "a@b",
            "a..b@acme.com",
            ".a@acme.com",
            "a b@acme.com",
            "a@acme..com",
            "a@-acme.com",
            "a@127.0.0.1",
            "a\"b@acme.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let long = format!("{}@acme.com", "a".repeat(250));
        assert_eq!(Email::parse(&long), Err(ValueError::TooLong("email", MAX_EMAIL_LEN)));
    }

    #[test]
    fn domains_are_checked() {
        assert_eq!(Domain::parse("Acme.COM").unwrap().as_str(), "acme.com");
        assert!(Domain::parse("xn--bcher-kva.example").is_ok());
        for bad in ["", "com", "acme..com", "acme.c", "-acme.com", "acme-.com", "ac_me.com", "10.0.0.1", "acme.com."] {
            assert!(Domain::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Domain::parse("gmail.com").unwrap().is_public_webmail());
        assert!(!Domain::parse("acme.com").unwrap().is_public_webmail());
    }

    #[test]
    fn slugs_roles_and_permissions() {
        assert!(OrgSlug::parse("acme-corp").is_ok());
        for bad in ["", "a", "Acme", "acme_corp", "-acme", "acme-", "acmé"] {
            assert!(OrgSlug::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(OrgSlug::parse(&"a".repeat(64)).is_err());
        assert!(RoleName::parse("billing_admin").is_ok());
        assert!(RoleName::parse("Billing").is_err());
        let all = Permission::parse("*").unwrap();
        let members_any = Permission::parse("members:*").unwrap();
        let read = Permission::parse("members:read").unwrap();
        let other = Permission::parse("invitations:read").unwrap();
        assert!(all.grants(&read));
        assert!(members_any.grants(&read));
        assert!(!members_any.grants(&other));
        assert!(!read.grants(&members_any));
        for bad in ["", "members", ":read", "members:", "*:read", "Members:read", "a:b:c"] {
            assert!(Permission::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn display_names() {
        assert_eq!(DisplayName::parse("  Acme  ", "display_name").unwrap().as_str(), "Acme");
        assert!(DisplayName::parse("   ", "display_name").is_err());
        assert!(DisplayName::parse("a\u{0}b", "display_name").is_err());
        for hidden in
            ["\u{202E}", "\u{2066}", "\u{200B}", "\u{FEFF}", "\u{00AD}", "\u{2028}", "\u{2029}", "\u{E0041}", "\n"]
        {
            let name = format!("Acme{hidden}gpj.exe");
            assert!(DisplayName::parse(&name, "display_name").is_err(), "{name:?} should be refused");
        }
        assert!(DisplayName::parse("Zoë Ångström 東京 – Ops", "display_name").is_ok());
        assert_eq!(
            sanitize_display_name(" Mallory\u{2028}\u{2028}URGENT:\u{202E} wire\u{200B}  now "),
            "Mallory URGENT: wire now"
        );
        assert_eq!(sanitize_display_name("\u{202E}\u{2029}"), "");
        assert_eq!(sanitize_display_name(&"x".repeat(500)).chars().count(), MAX_DISPLAY_NAME_LEN);
        assert!(DisplayName::parse(&"é".repeat(200), "display_name").is_ok());
        assert!(DisplayName::parse(&"é".repeat(201), "display_name").is_err());
    }

    proptest! {
        #[test]
        fn parsed_emails_reparse_to_themselves(raw in "[A-Za-z0-9._%+-]{1,20}@[A-Za-z0-9-]{1,10}\\.[A-Za-z]{2,6}") {
            if let Ok(e) = Email::parse(&raw) {
                prop_assert_eq!(Email::parse(e.as_str()).unwrap(), e.clone());
                prop_assert_eq!(e.as_str(), e.as_str().to_ascii_lowercase());
            }
        }

        #[test]
        fn email_parser_never_panics(raw in "\\PC{0,300}") {
            let _ = Email::parse(&raw);
            let _ = Domain::parse(&raw);
            let _ = OrgSlug::parse(&raw);
            let _ = Permission::parse(&raw);
        }

        #[test]
        fn valid_slugs_parse(raw in "[a-z0-9][a-z0-9-]{0,61}[a-z0-9]") {
            prop_assert!(OrgSlug::parse(&raw).is_ok());
        }
    }
}
