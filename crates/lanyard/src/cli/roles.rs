//! `lanyard role ...`: an organization's roles (the built-ins and its custom ones) over
//! TenancyService.

use clap::Subcommand;

use super::*;

/// `lanyard role ...`
#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// List the roles an organization can grant: built-in first, then its own.
    List {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Define a custom role.
    Create {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        /// Lowercase [a-z0-9_-]{1,63}, not a built-in name.
        #[arg(long)]
        name: String,
        /// Permission `resource:action` (repeatable; `*` on either side).
        #[arg(long = "permission", required = true)]
        permissions: Vec<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Change a custom role's permissions or description (members holding it get a new
    /// membership version: their tokens carry the old permissions no longer).
    Update {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        /// The role.
        #[arg(long)]
        name: String,
        /// The new permissions, replacing the old (repeatable).
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// The new description.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a custom role that no member holds.
    Delete {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        /// The role.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
}

const ROLE_HEADERS: [&str; 4] = ["name", "built_in", "permissions", "description"];

fn role_json(r: &pb::Role) -> serde_json::Value {
    json!({
        "organization_id": r.organization_id, "name": r.name, "built_in": r.built_in,
        "permissions": r.permissions, "description": r.description,
    })
}

fn role_row(r: &pb::Role) -> Vec<String> {
    vec![r.name.clone(), r.built_in.to_string(), r.permissions.join(","), r.description.clone()]
}

/// Runs `lanyard role ...`.
pub(super) async fn run(command: RoleCommand, data_dir: &std::path::Path) -> anyhow::Result<()> {
    match command {
        RoleCommand::List { org, remote } => {
            let mut c = connect(&remote, data_dir).await?;
            let organization_id = resolve_org(&mut c, &org).await?;
            let roles = paginate(|page_token| {
                let mut c = c.clone();
                let req =
                    pb::ListRolesRequest { organization_id: organization_id.clone(), page_size: PAGE_SIZE, page_token };
                async move {
                    let page = c.list_roles(req).await.map_err(status_error)?.into_inner();
                    anyhow::Ok((page.roles, page.next_page_token))
                }
            })
            .await?;
            let value = serde_json::Value::Array(roles.iter().map(role_json).collect());
            print(&remote, value, &ROLE_HEADERS, roles.iter().map(role_row).collect());
        }
        RoleCommand::Create { org, name, permissions, description, remote } => {
            let mut c = connect(&remote, data_dir).await?;
            let organization_id = resolve_org(&mut c, &org).await?;
            let r = c
                .create_role(pb::CreateRoleRequest {
                    organization_id,
                    name,
                    description,
                    permissions,
                    request_id: String::new(),
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .role
                .unwrap_or_default();
            print(&remote, role_json(&r), &ROLE_HEADERS, vec![role_row(&r)]);
        }
        RoleCommand::Update { org, name, permissions, description, remote } => {
            let mut paths = Vec::new();
            if !permissions.is_empty() {
                paths.push("permissions".to_owned());
            }
            if description.is_some() {
                paths.push("description".to_owned());
            }
            anyhow::ensure!(!paths.is_empty(), "nothing to change: give --permission or --description");
            let mut c = connect(&remote, data_dir).await?;
            let organization_id = resolve_org(&mut c, &org).await?;
            let role = pb::Role {
                organization_id,
                name,
                permissions,
                description: description.unwrap_or_default(),
                ..Default::default()
            };
            let r = c
                .update_role(pb::UpdateRoleRequest {
                    role: Some(role),
                    update_mask: Some(prost_types::FieldMask { paths }),
                    request_id: String::new(),
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .role
                .unwrap_or_default();
            print(&remote, role_json(&r), &ROLE_HEADERS, vec![role_row(&r)]);
        }
        RoleCommand::Delete { org, name, remote } => {
            let mut c = connect(&remote, data_dir).await?;
            let organization_id = resolve_org(&mut c, &org).await?;
            c.delete_role(pb::DeleteRoleRequest { organization_id, name: name.clone(), request_id: String::new() })
                .await
                .map_err(status_error)?;
            print_deleted(&remote, "name", name);
        }
    }
    Ok(())
}
