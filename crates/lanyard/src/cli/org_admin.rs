//! `lanyard org suspend|resume|delete` and `lanyard audit list`: an organization's lifecycle and
//! its audit log, over TenancyService.

use clap::Subcommand;

use super::*;

/// The lifecycle commands of `lanyard org`.
#[derive(Debug, Subcommand)]
pub enum OrgLifecycleCommand {
    /// Suspend an organization: its members' tokens stop working at once; data is kept.
    Suspend {
        /// Id or slug.
        org: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Make a suspended organization active again.
    Resume {
        /// Id or slug.
        org: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete an organization (soft: it authorizes nothing from then on, and stays listed with
    /// `org list --all`).
    Delete {
        /// Id or slug.
        org: String,
        /// Confirm: deleting cannot be undone.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

/// `lanyard audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List an organization's audit events, newest first, one page at a time.
    List {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        /// Only events with this action (e.g. `member.removed`).
        #[arg(long)]
        action: Option<String>,
        /// Events per page (1 to 500).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i32).range(1..=500))]
        page_size: i32,
        /// The page after the one that printed this token.
        #[arg(long, default_value = "")]
        page_token: String,
        /// Every page, not one.
        #[arg(long, conflicts_with = "page_token")]
        all: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

/// Runs `lanyard org suspend|resume|delete`.
pub(super) async fn run_org(command: OrgLifecycleCommand, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let (org, remote, status) = match command {
        OrgLifecycleCommand::Suspend { org, remote } => (org, remote, Some(pb::OrganizationStatus::Suspended)),
        OrgLifecycleCommand::Resume { org, remote } => (org, remote, Some(pb::OrganizationStatus::Active)),
        OrgLifecycleCommand::Delete { org, yes, remote } => {
            anyhow::ensure!(yes, "refusing to delete organization {org} without --yes: deleting cannot be undone");
            (org, remote, None)
        }
    };
    let mut c = connect(&remote, data_dir).await?;
    let organization_id = resolve_org(&mut c, &org).await?;
    let o = match status {
        Some(status) => {
            c.update_organization(pb::UpdateOrganizationRequest {
                organization: Some(pb::Organization { organization_id, status: status as i32, ..Default::default() }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["status".into()] }),
                request_id: String::new(),
            })
            .await
            .map_err(status_error)?
            .into_inner()
            .organization
        }
        None => {
            c.delete_organization(pb::DeleteOrganizationRequest { organization_id, request_id: String::new() })
                .await
                .map_err(status_error)?
                .into_inner()
                .organization
        }
    }
    .unwrap_or_default();
    print(&remote, org_json(&o), &ORG_HEADERS, vec![org_row(&o)]);
    Ok(())
}

const AUDIT_HEADERS: [&str; 5] = ["time", "action", "actor", "target", "details"];

fn audit_json(e: &pb::AuditEvent) -> serde_json::Value {
    json!({
        "event_id": e.event_id, "organization_id": e.organization_id, "actor": e.actor, "action": e.action,
        "target": e.target, "time": time(e.create_time.as_ref()), "details": e.details,
    })
}

fn audit_row(e: &pb::AuditEvent) -> Vec<String> {
    let mut details: Vec<String> = e.details.iter().map(|(k, v)| format!("{k}={v}")).collect();
    details.sort();
    vec![time(e.create_time.as_ref()), e.action.clone(), e.actor.clone(), e.target.clone(), details.join(" ")]
}

/// Runs `lanyard audit ...`.
pub(super) async fn run_audit(command: AuditCommand, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let AuditCommand::List { org, action, page_size, page_token, all, remote } = command;
    let mut c = connect(&remote, data_dir).await?;
    let organization_id = resolve_org(&mut c, &org).await?;
    let request = move |page_token: String| pb::ListAuditEventsRequest {
        organization_id: organization_id.clone(),
        page_size,
        page_token,
        action: action.clone().unwrap_or_default(),
    };
    let (events, next) = if all {
        let events = paginate(|page_token| {
            let (mut c, req) = (c.clone(), request(page_token));
            async move {
                let page = c.list_audit_events(req).await.map_err(status_error)?.into_inner();
                anyhow::Ok((page.events, page.next_page_token))
            }
        })
        .await?;
        (events, String::new())
    } else {
        let page = c.list_audit_events(request(page_token)).await.map_err(status_error)?.into_inner();
        (page.events, page.next_page_token)
    };
    if remote.json {
        let value = json!({"events": events.iter().map(audit_json).collect::<Vec<_>>(), "next_page_token": next});
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    } else {
        table(&AUDIT_HEADERS, events.iter().map(audit_row).collect());
        if !next.is_empty() {
            println!("\nmore: --page-token {next}");
        }
    }
    Ok(())
}
