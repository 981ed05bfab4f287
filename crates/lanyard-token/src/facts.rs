//! The token service as the owner of revocation facts: sessions from its own store, memberships
//! and organizations from tenancy. The authorizer asks here when the shared cache misses or is down.

use lanyard_authz::facts::value;
use lanyard_authz::{FactKey, FactSource, SourceError};
use lanyard_core::cache::Versioned;

use crate::clients::TenancyClient;
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

#[async_trait::async_trait]
impl FactSource for TokenFacts {
    async fn fetch(&self, key: &FactKey) -> Result<Versioned, SourceError> {
        let failed = |e: crate::TokenError| SourceError(e.to_string());
        match *key {
            FactKey::Session(id) => {
                let session = self.store.session(id).await.map_err(failed)?;
                Ok(session_fact(session.is_none_or(|s| s.revoked_at.is_some())))
            }
            FactKey::Membership(org, user) => self.tenancy.membership_fact(org, user).await.map_err(failed),
            FactKey::Organization(org) => self.tenancy.organization_fact(org).await.map_err(failed),
            FactKey::Connection(id) => Ok(connection_fact(self.tenancy.connection_live(id).await.map_err(failed)?)),
        }
    }
}
