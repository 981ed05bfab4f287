//! An internal service protected by `lanyard-authz`: the layer authenticates every call by its
//! access token (revocations included) and puts the principal into the request; each handler
//! asks for the permission it needs with `require_permission`. The data is kept in memory per
//! organization, always the principal's: a token of organization A never sees B's projects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lanyard_authz::{require_permission, Authorizer, AuthzLayer};
use lanyard_core::status::Problem;
use lanyard_core::OrganizationId;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// The generated gRPC code.
pub mod pb {
    tonic::include_proto!("example.projects.v1");
}

use pb::project_service_server::{ProjectService, ProjectServiceServer};

/// The service: projects by organization.
#[derive(Clone, Debug, Default)]
pub struct Projects {
    projects: Arc<Mutex<HashMap<OrganizationId, Vec<String>>>>,
}

impl Projects {
    fn names(&self, org: OrganizationId) -> Vec<String> {
        self.projects.lock().unwrap_or_else(|p| p.into_inner()).get(&org).cloned().unwrap_or_default()
    }
}

#[tonic::async_trait]
impl ProjectService for Projects {
    async fn list_projects(
        &self,
        request: Request<pb::ListProjectsRequest>,
    ) -> Result<Response<pb::ListProjectsResponse>, Status> {
        let principal = require_permission(&request, "projects:read")?;
        Ok(Response::new(pb::ListProjectsResponse {
            names: self.names(principal.organization_id),
            organization_id: principal.organization_id.to_string(),
            user_id: principal.user_id.to_string(),
        }))
    }

    async fn create_project(
        &self,
        request: Request<pb::CreateProjectRequest>,
    ) -> Result<Response<pb::CreateProjectResponse>, Status> {
        let principal = require_permission(&request, "projects:write")?;
        let name = request.into_inner().name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Problem::invalid_field("name", "a project name has 1 to 100 characters").into_status());
        }
        let mut projects = self.projects.lock().unwrap_or_else(|p| p.into_inner());
        let names = projects.entry(principal.organization_id).or_default();
        names.push(name);
        Ok(Response::new(pb::CreateProjectResponse { names: names.clone() }))
    }
}

/// Serves the service on `listener` behind the authorization layer until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    authorizer: Authorizer,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tonic::transport::Server::builder()
        .layer(AuthzLayer::new(authorizer))
        .add_service(ProjectServiceServer::new(Projects::default()))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), shutdown)
        .await?;
    Ok(())
}
