//! The token service as the owner of revocation facts: sessions from its own store, memberships
//! and organizations from tenancy. The authorizer asks here when the shared cache misses or is down.

use lanyard_authz::facts::value;
use lanyard_authz::{FactKey, FactSource, SourceError};
use lanyard_clients::{OrganizationStatus, TenancyClient};
use lanyard_core::cache::Versioned;
use lanyard_core::{OrganizationId, UserId};

use crate::error::{organization_lookup, TokenError};
use crate::store::TokenStore;

/// Reads facts from their owners.
#[derive(Clone, Debug)]
pub struct TokenFacts {
    pub store: TokenStore,
    pub tenancy: TenancyClient,
}

/// A session's fact.
pub fn session_fact(revoked: bool) -> Versioned {
    if revoked {
        Versioned { version: 1, value: value::SESSION_REVOKED.into() }
    } else {
        Versioned { version: 0, value: value::SESSION_ACTIVE.into() }
    }
}

/// An SSO connection's fact (a deleted connection never comes back: ids are not reused).
pub fn connection_fact(live: bool) -> Versioned {
    if live {
        Versioned { version: 0, value: value::CONNECTION_ACTIVE.into() }
    } else {
        Versioned { version: 1, value: value::CONNECTION_DELETED.into() }
    }
}

impl TokenFacts {
    /// The membership's revocation fact: its version and whether it is active (a membership that
    /// never existed, or of an organization that does not, reads as removed at version 0).
    async fn membership_fact(&self, org: OrganizationId, user: UserId) -> Result<Versioned, TokenError> {
        let member = match self.tenancy.member(org, user).await {
            Ok(m) => m,
            Err(e) if e.is("ORGANIZATION_NOT_FOUND") => None,
            Err(e) => return Err(e.into()),
        };
        Ok(match member {
            Some(m) if m.active => Versioned { version: m.version, value: value::MEMBER_ACTIVE.into() },
            Some(m) => Versioned { version: m.version, value: value::MEMBER_REMOVED.into() },
            None => Versioned { version: 0, value: value::MEMBER_REMOVED.into() },
        })
    }

    /// The organization's revocation fact: its status, versioned by its update time (an
    /// organization that never existed reads as deleted at version 0).
    async fn organization_fact(&self, org: OrganizationId) -> Result<Versioned, TokenError> {
        let o = match self.tenancy.organization(org).await.map_err(organization_lookup) {
            Ok(o) => o,
            Err(TokenError::OrganizationNotFound) => {
                return Ok(Versioned { version: 0, value: value::ORG_DELETED.into() });
            }
            Err(e) => return Err(e),
        };
        let status = match o.status {
            OrganizationStatus::Active => value::ORG_ACTIVE,
            OrganizationStatus::Suspended => value::ORG_SUSPENDED,
            OrganizationStatus::Deleted => value::ORG_DELETED,
        };
        Ok(Versioned { version: o.updated_at.map(|t| t.0).unwrap_or_default(), value: status.into() })
    }
}

#[async_trait::async_trait]
impl FactSource for TokenFacts {
    async fn fetch(&self, key: &FactKey) -> Result<Versioned, SourceError> {
        let failed = |e: crate::TokenError| SourceError(e.to_string());
        match *key {
            FactKey::Session(id) => {
                let session = self.store.session(id).await.map_err(failed)?;
                Ok(session_fact(session.is_none_or(|s| s.revoked_at.is_some())))
            }
            FactKey::Membership(org, user) => self.membership_fact(org, user).await.map_err(failed),
            FactKey::Organization(org) => self.organization_fact(org).await.map_err(failed),
            FactKey::Connection(id) => {
                let live = self.tenancy.sso_connection_enabled(id).await.map_err(TokenError::from).map_err(failed)?;
                Ok(connection_fact(live))
            }
        }
    }
}
