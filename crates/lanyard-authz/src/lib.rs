//! Authorization for Lanyard's internal services: may this access token do this, in this
//! organization, now?
//!
//! - [`token`]: the access token's claims and their strict verification; [`jose`]: the header
//!   rules every verifier applies first.
//! - [`keys`]: verifying keys, from the token service's published JWKS ([`JwksKeys`]).
//! - [`facts`]: membership versions, organization statuses and session states in Redis, with a
//!   near cache per process kept honest by a pub/sub invalidation channel.
//! - [`authorizer`]: the decision and its fail-closed ladder.
//! - [`layer`]: a tower layer for tonic servers putting the [`Principal`] into request extensions,
//!   and [`require_permission`].
//! - [`envoy`]: Envoy's `ext_authz` `Check`.
//!
//! # Protecting an internal service
//!
//! ```ignore
//! let keys = JwksKeys::fetch("https://auth.example.com/.well-known/jwks.json").await?;
//! let cache = Cache::redis("redis://redis:6379", "lanyard").await?;   // the token service's Redis and prefix
//! let facts = Facts::new(cache);
//! let _subscription = facts.subscribe(stop_rx);
//! let token_service = AuthorizationServiceClient::new(Endpoint::from_static("http://lanyard:50051").connect_lazy());
//! let audience = Audience { issuer: "https://auth.example.com".into(), audience: "lanyard".into() };
//! let authorizer = Authorizer::new(Arc::new(keys), audience, facts, Fallback::Remote(token_service));
//! Server::builder().layer(AuthzLayer::new(authorizer)).add_service(MyServer::new(MyService)).serve(addr).await?;
//! ```
//!
//! See `examples/projects` for a runnable service.

pub mod authorizer;
pub mod envoy;
pub mod facts;
pub mod jose;
pub mod keys;
pub mod layer;
mod near;
pub mod token;

pub use authorizer::{Authorizer, FactSource, Fallback, Outcome, SourceError, Unavailable};
pub use facts::{FactKey, Facts};
pub use keys::{JwksKeys, KeySource};
pub use lanyard_proto::authz::v1::Decision;
pub use layer::{principal, require_permission, AuthzLayer, ORGANIZATION_HEADER};
pub use token::{AccessClaims, AccessError, Audience, Principal, VerifyingKey};
