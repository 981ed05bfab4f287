//! InvitationService, as the token service calls it: what an invitation is for, and its
//! acceptance by a verified identity.

use std::time::Duration;

use lanyard_core::transport::GrpcTransport;
use lanyard_proto::invitation::v1 as pb;
use lanyard_proto::invitation::v1::invitation_service_client::InvitationServiceClient;
use secrecy::SecretString;

use crate::convert::{self, required};
use crate::values::*;
use crate::{answer, ClientError, Link, LocalServer, SetupError};

type Result<T, E = ClientError> = std::result::Result<T, E>;

/// InvitationService's client. The service key must be one of the invitation service's keys.
#[derive(Clone)]
pub struct InvitationClient {
    inner: InvitationServiceClient<GrpcTransport>,
    link: Link,
}

impl std::fmt::Debug for InvitationClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InvitationClient(..)")
    }
}

impl InvitationClient {
    /// Calls the invitation service of this process directly, without a socket.
    pub fn in_process(server: impl LocalServer, service_key: &SecretString) -> Result<Self, SetupError> {
        Link::in_process(server, service_key).map(Self::over)
    }

    /// Connects lazily to an invitation service at `url`, with a per-call timeout.
    pub fn connect_lazy(url: &str, timeout: Duration, service_key: &SecretString) -> Result<Self, SetupError> {
        Link::connect_lazy(url, timeout, service_key).map(Self::over)
    }

    /// Calls the invitation service over any transport.
    pub fn from_transport(transport: GrpcTransport, service_key: &SecretString) -> Result<Self, SetupError> {
        Link::new(transport, service_key).map(Self::over)
    }

    fn over(link: Link) -> Self {
        Self { inner: InvitationServiceClient::new(link.transport.clone()), link }
    }

    /// What a pending invitation is for.
    pub async fn preview(&self, token: &str) -> Result<InvitationPreview> {
        let req = self.link.request(pb::PreviewInvitationRequest { token: token.to_owned() });
        Ok(convert::preview(answer(self.inner.clone().preview_invitation(req).await)?))
    }

    /// Accepts an invitation for a verified identity; returns the membership it made, whose user
    /// is the identity's (found, linked or created by tenancy with the seat claim).
    pub async fn accept(&self, token: &str, identity: &Identity, request_id: &str) -> Result<AcceptedMembership> {
        let req = self.link.request(pb::AcceptInvitationRequest {
            token: token.to_owned(),
            identity: Some(convert::verified_identity(identity)),
            request_id: request_id.to_owned(),
        });
        let resp = answer(self.inner.clone().accept_invitation(req).await)?;
        convert::accepted(required(resp.membership, "AcceptInvitation's membership")?)
    }
}
