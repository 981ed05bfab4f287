//! Rules on request fields and permissions that need no database.

use super::*;

pub(super) fn check_identity_fields(issuer: &str, subject: &str, display_name: &str) -> Result<()> {
    for (field, value) in [("issuer", issuer), ("subject", subject)] {
        if value.trim().is_empty() {
            return Err(lanyard_core::ValueError::Missing(field).into());
        }
        if value.len() > 1024 {
            return Err(lanyard_core::ValueError::TooLong(field, 1024).into());
        }
    }
    if display_name.chars().count() > lanyard_core::values::MAX_DISPLAY_NAME_LEN {
        return Err(
            lanyard_core::ValueError::TooLong("display_name", lanyard_core::values::MAX_DISPLAY_NAME_LEN).into()
        );
    }
    // The token service makes an identity provider's name displayable before it gets here; a
    // name that still hides characters did not come through it.
    if display_name.chars().any(lanyard_core::values::is_hidden_or_layout) {
        return Err(lanyard_core::ValueError::Malformed("display_name").into());
    }
    Ok(())
}

pub(super) fn too_many(field: &'static str, max: usize) -> TenancyError {
    TenancyError::InvalidField { field, message: format!("at most {max} allowed") }
}

pub(super) fn check_seat_limit(limit: u32) -> Result<()> {
    if limit == 0 || limit > MAX_SEAT_LIMIT {
        return Err(TenancyError::InvalidField {
            field: "seat_limit",
            message: format!("seat_limit must be between 1 and {MAX_SEAT_LIMIT}"),
        });
    }
    Ok(())
}

pub(super) fn check_metadata(m: &BTreeMap<String, String>) -> Result<()> {
    if m.len() > MAX_METADATA_ENTRIES {
        return Err(too_many("metadata", MAX_METADATA_ENTRIES));
    }
    for (k, v) in m {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_METADATA_KEY_LEN
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b));
        if !key_ok {
            return Err(TenancyError::InvalidField {
                field: "metadata",
                message: format!("metadata keys are 1 to {MAX_METADATA_KEY_LEN} characters of [A-Za-z0-9_.-/]"),
            });
        }
        if v.len() > MAX_METADATA_VALUE_LEN {
            return Err(TenancyError::InvalidField {
                field: "metadata",
                message: format!("metadata values are at most {MAX_METADATA_VALUE_LEN} bytes"),
            });
        }
    }
    Ok(())
}

pub(super) fn normalize_roles(roles: Vec<RoleName>) -> Result<Vec<RoleName>> {
    let roles = if roles.is_empty() { vec![RoleName::member()] } else { dedup(roles) };
    if roles.len() > MAX_ROLES_PER_MEMBER {
        return Err(too_many("roles", MAX_ROLES_PER_MEMBER));
    }
    Ok(roles)
}

pub(super) fn dedup<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v.dedup();
    v
}

pub(super) fn check_role_fields(description: &str, permissions: &[Permission]) -> Result<()> {
    if description.chars().count() > MAX_ROLE_DESCRIPTION_LEN {
        return Err(lanyard_core::ValueError::TooLong("description", MAX_ROLE_DESCRIPTION_LEN).into());
    }
    if permissions.len() > MAX_PERMISSIONS_PER_ROLE {
        return Err(too_many("permissions", MAX_PERMISSIONS_PER_ROLE));
    }
    if let Some(p) = permissions.iter().find(|p| owner_only(p)) {
        return Err(TenancyError::OwnerOnlyPermission(p.to_string()));
    }
    Ok(())
}

/// Permissions that belong to the built-in owner role alone: everything (`*`), ownership and
/// domains (whoever holds `domains:write` decides whose emails the organization's provider may
/// vouch for). No custom role grants them, whoever defines it.
pub fn owner_only(p: &Permission) -> bool {
    p.as_str() == "*" || matches!(p.as_str().split_once(':'), Some(("ownership" | "domains", _)))
}

/// A member caller grants (in a role definition or an assignment) only permissions it holds;
/// operators and services are not limited by this rule.
pub(super) fn require_grantable(caller: &Caller, permissions: &[Permission]) -> Result<()> {
    if let Caller::Member(p) = caller {
        if let Some(missing) = permissions.iter().find(|w| !p.permissions.iter().any(|g| g.grants(w))) {
            return Err(TenancyError::PermissionNotHeld(missing.to_string()));
        }
    }
    Ok(())
}

/// The most SSO connections an organization may have unless the settings say otherwise: each one
/// is a provider Lanyard fetches keys from, so they are bounded like every other list.
pub const DEFAULT_MAX_SSO_CONNECTIONS: u32 = 10;

/// An issuer is an absolute `https` URL without query or fragment whose host is not a
/// non-public address or name (`lanyard_core::outbound`); `http` and loopback only when allowed.
pub(super) fn check_issuer(issuer: &str, allow_http_loopback: bool) -> Result<()> {
    let bad = |message: &str| TenancyError::InvalidField { field: "issuer", message: message.to_owned() };
    if issuer.is_empty() {
        return Err(lanyard_core::ValueError::Missing("issuer").into());
    }
    if issuer.len() > 2048 {
        return Err(lanyard_core::ValueError::TooLong("issuer", 2048).into());
    }
    if issuer.contains(['?', '#', ' ', '\\']) || issuer.chars().any(char::is_control) {
        return Err(bad("the issuer must be a URL without query or fragment"));
    }
    if !issuer.contains("://") {
        return Err(bad("the issuer must be an absolute URL"));
    }
    let policy = AddressPolicy { allow_loopback: allow_http_loopback };
    match outbound::check_url(issuer, policy) {
        Ok(_) => Ok(()),
        Err(OutboundError::Forbidden { host, why }) => {
            Err(TenancyError::IssuerAddressForbidden(format!("{host}: {why}")))
        }
        Err(e) => Err(bad(&format!("the issuer: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers() {
        assert!(check_issuer("https://accounts.google.com", false).is_ok());
        assert!(check_issuer("https://login.microsoftonline.com/tid/v2.0", false).is_ok());
        assert!(check_issuer("http://127.0.0.1:8080", false).is_err());
        assert!(check_issuer("http://127.0.0.1:8080", true).is_ok());
        assert!(check_issuer("http://evil.example", true).is_err());
        assert!(check_issuer("https://x.example/?a=b", false).is_err());
        assert!(check_issuer("accounts.google.com", false).is_err());
        assert!(check_issuer("", false).is_err());
        for forbidden in [
            "https://169.254.169.254/latest",
            "https://10.255.255.1",
            "https://127.0.0.1:5432",
            "https://[::ffff:127.0.0.1]",
            "https://2130706433",
            "https://metadata.google.internal",
            "https://localhost",
        ] {
            assert!(
                matches!(check_issuer(forbidden, false), Err(TenancyError::IssuerAddressForbidden(_))),
                "{forbidden}"
            );
        }
        assert!(check_issuer("https://127.0.0.1:5432", true).is_ok());
        assert!(matches!(check_issuer("https://10.255.255.1", true), Err(TenancyError::IssuerAddressForbidden(_))));
    }

    #[test]
    fn metadata_limits() {
        let mut m = BTreeMap::new();
        m.insert("crm/id".to_owned(), "42".to_owned());
        assert!(check_metadata(&m).is_ok());
        m.insert("bad key".to_owned(), "x".to_owned());
        assert!(check_metadata(&m).is_err());
        let big: BTreeMap<String, String> =
            (0..=MAX_METADATA_ENTRIES).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(check_metadata(&big).is_err());
    }

    #[test]
    fn roles_default_to_member() {
        assert_eq!(normalize_roles(vec![]).unwrap(), vec![RoleName::member()]);
        let twice = vec![RoleName::admin(), RoleName::admin()];
        assert_eq!(normalize_roles(twice).unwrap(), vec![RoleName::admin()]);
    }
}
