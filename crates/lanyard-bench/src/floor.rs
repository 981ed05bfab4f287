//! The floor: the same `AuthorizationService` on the same kind of tonic server, answering a fixed
//! response without reading the request. Request and response encode to the same bytes as
//! Lanyard's, so what separates the two figures is Lanyard's own work.

use std::net::SocketAddr;

use lanyard_proto::authz::v1 as apb;
use lanyard_proto::authz::v1::authorization_service_server::{AuthorizationService, AuthorizationServiceServer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Answers every `Authorize` with the same response.
struct NoOp {
    response: apb::AuthorizeResponse,
}

#[tonic::async_trait]
impl AuthorizationService for NoOp {
    async fn authorize(&self, _: Request<apb::AuthorizeRequest>) -> Result<Response<apb::AuthorizeResponse>, Status> {
        Ok(Response::new(self.response.clone()))
    }

    async fn batch_authorize(
        &self,
        _: Request<apb::BatchAuthorizeRequest>,
    ) -> Result<Response<apb::BatchAuthorizeResponse>, Status> {
        Err(Status::unimplemented("the floor measures Authorize only"))
    }
}

/// A running floor server.
pub struct Floor {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Floor {
    /// Serves `response` on a fresh loopback port. Give it one of Lanyard's own answers, so the
    /// bytes on the wire are the same.
    pub async fn start(response: apb::AuthorizeResponse) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the floor");
        let addr = listener.local_addr().expect("floor address");
        let router =
            tonic::transport::Server::builder().add_service(AuthorizationServiceServer::new(NoOp { response }));
        let task = tokio::spawn(async move {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            router.serve_with_incoming(incoming).await.expect("floor server");
        });
        Self { addr, task }
    }
}
