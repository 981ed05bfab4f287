//! What every service must agree on about roles and identity providers, and nothing else: the
//! built-in role table and the kinds of SSO connection. Tenancy stores them; the token service reads
//! them without depending on tenancy.

use crate::values::Permission;

/// A built-in role: the same in every organization, never stored.
#[derive(Clone, Copy, Debug)]
pub struct BuiltInRole {
    /// `owner`, `admin`, `member`.
    pub name: &'static str,
    /// What it is for.
    pub description: &'static str,
    /// What it grants.
    pub grants: &'static [&'static str],
}

impl BuiltInRole {
    /// Its permissions, parsed.
    pub fn permissions(&self) -> Vec<Permission> {
        self.grants.iter().map(|p| Permission::parse(p).expect("built-in permission")).collect()
    }
}

/// The built-in roles and what they grant. Owner: everything. Admin: manage members,
/// invitations, roles and SSO connections, read the organization, its seats and its audit log.
/// Member: read the organization (and, by rule, its own membership).
pub const BUILT_IN: &[BuiltInRole] = &[
    BuiltInRole { name: "owner", description: "Owns the organization: every permission.", grants: &["*"] },
    BuiltInRole {
        name: "admin",
        description: "Manages members, invitations, roles and SSO connections.",
        grants: &[
            "organization:read",
            "members:*",
            "invitations:*",
            "roles:*",
            "connections:*",
            "audit:read",
            "seats:read",
        ],
    },
    BuiltInRole { name: "member", description: "An ordinary member.", grants: &["organization:read"] },
];

/// The built-in role `name`, if it is one.
pub fn built_in(name: &str) -> Option<&'static BuiltInRole> {
    BUILT_IN.iter().find(|r| r.name == name)
}

/// The identity provider behind an SSO connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SsoKind {
    GoogleWorkspace,
    Okta,
    AzureAd,
    Oidc,
}

impl SsoKind {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GoogleWorkspace => "google_workspace",
            Self::Okta => "okta",
            Self::AzureAd => "azure_ad",
            Self::Oidc => "oidc",
        }
    }

    /// From the stored form; an unknown one is a corrupt row.
    pub fn from_db(s: &str) -> Result<Self, crate::stored::UnknownStored> {
        crate::stored::decode(
            "SSO connection kind",
            s,
            &[Self::GoogleWorkspace, Self::Okta, Self::AzureAd, Self::Oidc],
            Self::as_str,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_and_the_kinds_round_trip() {
        for role in BUILT_IN {
            assert_eq!(role.permissions().len(), role.grants.len());
        }
        assert!(built_in("admin").is_some() && built_in("billing").is_none());
        for kind in [SsoKind::GoogleWorkspace, SsoKind::Okta, SsoKind::AzureAd, SsoKind::Oidc] {
            assert_eq!(SsoKind::from_db(kind.as_str()), Ok(kind));
        }
    }
}
