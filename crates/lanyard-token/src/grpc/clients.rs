//! The gRPC adapter of the registered applications (`RegisterClient`, `ListClients`,
//! `DeleteClient`): operators only, secrets in a reply once and sealed if kept for a retry.

use lanyard_core::page::Page;
use lanyard_core::ValueError;
use lanyard_proto::token::v1 as pb;
use prost::Message;
use tonic::{Request, Response, Status};

use super::{check_request_id, TokenGrpc};
use crate::error::TokenError;
use crate::provider::{ClientType, NewClient, OAuthClient};

fn client_to_pb(c: &OAuthClient) -> pb::Client {
    pb::Client {
        client_id: c.client_id.clone(),
        display_name: c.display_name.clone(),
        client_type: match c.client_type {
            ClientType::Public => pb::ClientType::Public,
            ClientType::Confidential => pb::ClientType::Confidential,
        } as i32,
        redirect_uris: c.redirect_uris.clone(),
        post_logout_redirect_uris: c.post_logout_redirect_uris.clone(),
        create_time: Some(c.created_at.to_proto()),
    }
}

impl TokenGrpc {
    pub(super) async fn register_client_rpc(
        &self,
        request: Request<pb::RegisterClientRequest>,
    ) -> Result<Response<pb::RegisterClientResponse>, Status> {
        let caller = self.caller(&request).await?;
        caller.require_operator_key().map_err(TokenError::from)?;
        let req = request.into_inner();
        let client_type = match pb::ClientType::try_from(req.client_type) {
            Ok(pb::ClientType::Public) => ClientType::Public,
            Ok(pb::ClientType::Confidential) => ClientType::Confidential,
            Ok(pb::ClientType::Unspecified) => return Err(TokenError::from(ValueError::Missing("client_type")).into()),
            Err(_) => return Err(TokenError::from(ValueError::Malformed("client_type")).into()),
        };
        let scope = format!("RegisterClient:{}", caller.actor());
        let request_bytes = req.encode_to_vec();
        let new = NewClient {
            display_name: req.display_name,
            client_type,
            redirect_uris: req.redirect_uris,
            post_logout_redirect_uris: req.post_logout_redirect_uris,
        };
        let run = |_| async {
            let registered = self.clients.register(&caller, new).await?;
            Ok::<_, TokenError>(pb::RegisterClientResponse {
                client: Some(client_to_pb(&registered.client)),
                client_secret: registered.secret.unwrap_or_default(),
            })
        };
        let reply = self.replays.once(&scope, &req.request_id, &request_bytes, run, |r| async { Ok(r) }).await?;
        Ok(Response::new(reply))
    }

    pub(super) async fn list_clients_rpc(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let page = Page::parse(req.page_size, &req.page_token).map_err(TokenError::from)?;
        let (clients, next) = self.clients.list(&caller, &page).await?;
        Ok(Response::new(pb::ListClientsResponse {
            clients: clients.iter().map(client_to_pb).collect(),
            next_page_token: next,
        }))
    }

    pub(super) async fn delete_client_rpc(
        &self,
        request: Request<pb::DeleteClientRequest>,
    ) -> Result<Response<pb::DeleteClientResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        check_request_id(&req.request_id)?;
        self.clients.delete(&caller, &req.client_id, &self.tokens).await?;
        Ok(Response::new(pb::DeleteClientResponse {}))
    }
}
