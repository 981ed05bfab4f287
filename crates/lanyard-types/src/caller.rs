//! Who is calling, once authenticated: an operator, a service, or a member acting through an
//! access token within its active organization, and the checks every operation makes on it.
//! How a caller is authenticated (API keys, access tokens) lives in the service kit.

use crate::ids::OrganizationId;
use crate::values::{Permission, RoleName};
use crate::UserId;

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Acts on any organization.
    Operator {
        /// A short, non-secret fingerprint of the key, for logs and the audit log.
        key_id: String,
    },
    /// What an operator may do, plus the internal RPCs.
    Service {
        /// A short, non-secret fingerprint of the key.
        key_id: String,
    },
    /// A member acting through an access token, limited to its active organization.
    Member(MemberPrincipal),
}

/// The principal of a Lanyard access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberPrincipal {
    /// The user.
    pub user_id: UserId,
    /// The token's active organization.
    pub organization_id: OrganizationId,
    /// Roles held in that organization.
    pub roles: Vec<RoleName>,
    /// Effective permissions in that organization.
    pub permissions: Vec<Permission>,
}

/// Why a caller may not do something.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The caller acts for another organization.
    #[error("the caller acts for another organization")]
    WrongOrganization,
    /// The caller lacks the permission.
    #[error("the caller lacks a permission")]
    MissingPermission,
    /// Only an operator (or service) may do this.
    #[error("only an operator may do this")]
    OperatorOnly,
    /// Only a service key may call internal RPCs.
    #[error("only a service key may call internal RPCs")]
    ServiceOnly,
}

impl Caller {
    /// What the audit log records as the actor.
    pub fn actor(&self) -> String {
        match self {
            Self::Operator { key_id } => format!("operator:{key_id}"),
            Self::Service { key_id } => format!("service:{key_id}"),
            Self::Member(p) => format!("user:{}", p.user_id),
        }
    }

    /// The caller kind, for spans and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Operator { .. } => "operator",
            Self::Service { .. } => "service",
            Self::Member(_) => "member",
        }
    }

    /// Operators and services act across organizations.
    pub fn is_operator(&self) -> bool {
        matches!(self, Self::Operator { .. } | Self::Service { .. })
    }

    /// Requires operator (or service) rights.
    pub fn require_operator(&self) -> Result<(), Denied> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(Denied::OperatorOnly)
        }
    }

    /// Requires the operator's key itself, not a service key: for what changes who the customers
    /// are and how identity is trusted (creating, changing, suspending and deleting organizations,
    /// verifying a domain on the operator's word, rotating the signing keys). A service key is
    /// held by every product service that authorizes requests; it may act across organizations
    /// for the internal RPCs, but a compromised product service must not delete customers or
    /// vouch for a domain.
    pub fn require_operator_key(&self) -> Result<(), Denied> {
        match self {
            Self::Operator { .. } => Ok(()),
            _ => Err(Denied::OperatorOnly),
        }
    }

    /// Requires a service key, for internal RPCs.
    pub fn require_service(&self) -> Result<(), Denied> {
        match self {
            Self::Service { .. } => Ok(()),
            _ => Err(Denied::ServiceOnly),
        }
    }

    /// Requires `permission` within `org`.
    pub fn require(&self, org: OrganizationId, permission: &str) -> Result<(), Denied> {
        match self {
            Self::Operator { .. } | Self::Service { .. } => Ok(()),
            Self::Member(p) if p.organization_id != org => Err(Denied::WrongOrganization),
            Self::Member(p) => {
                let wanted = Permission::parse(permission).map_err(|_| Denied::MissingPermission)?;
                if p.permissions.iter().any(|g| g.grants(&wanted)) {
                    Ok(())
                } else {
                    Err(Denied::MissingPermission)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_held_to_their_org_and_permissions() {
        let org = OrganizationId::new();
        let member = Caller::Member(MemberPrincipal {
            user_id: UserId::new(),
            organization_id: org,
            roles: vec![RoleName::admin()],
            permissions: vec![Permission::parse("members:*").unwrap()],
        });
        assert_eq!(member.require(org, "members:write"), Ok(()));
        assert_eq!(member.require(org, "roles:write"), Err(Denied::MissingPermission));
        assert_eq!(member.require(OrganizationId::new(), "members:write"), Err(Denied::WrongOrganization));
        assert_eq!(member.require_operator(), Err(Denied::OperatorOnly));
        let op = Caller::Operator { key_id: "x".into() };
        assert_eq!(op.require_service(), Err(Denied::ServiceOnly));
        assert_eq!(op.require(org, "members:write"), Ok(()));
        assert_eq!(op.require_operator_key(), Ok(()));
        let service = Caller::Service { key_id: "y".into() };
        assert_eq!(service.require_operator(), Ok(()), "services act across organizations");
        assert_eq!(service.require_operator_key(), Err(Denied::OperatorOnly), "but administer nothing");
        assert_eq!(member.require_operator_key(), Err(Denied::OperatorOnly));
    }
}
