//! `lanyard session ...`: a user's sign-in sessions over TokenService.

use clap::Subcommand;
use lanyard_proto::token::v1 as tpb;
use lanyard_proto::token::v1::token_service_client::TokenServiceClient;

use super::*;

/// `lanyard session ...`
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List a user's sessions.
    List {
        /// The user id.
        #[arg(long)]
        user: String,
        /// Only sessions whose active organization is this one (id or slug).
        #[arg(long)]
        org: Option<String>,
        /// Also list revoked sessions.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a session: its access and refresh tokens stop working before this returns.
    Revoke {
        /// The session id (the `sid` claim).
        #[arg(long)]
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

const SESSION_HEADERS: [&str; 6] = ["id", "user_id", "active_org", "created", "expires", "revoked"];

fn session_json(s: &tpb::Session) -> serde_json::Value {
    json!({
        "session_id": s.session_id, "user_id": s.user_id, "active_organization_id": s.active_organization_id,
        "created": time(s.create_time.as_ref()), "expires": time(s.expire_time.as_ref()),
        "revoked": time(s.revoke_time.as_ref()), "last_refresh": time(s.last_refresh_time.as_ref()),
    })
}

fn session_row(s: &tpb::Session) -> Vec<String> {
    vec![
        s.session_id.clone(),
        s.user_id.clone(),
        s.active_organization_id.clone(),
        time(s.create_time.as_ref()),
        time(s.expire_time.as_ref()),
        time(s.revoke_time.as_ref()),
    ]
}

/// Runs `lanyard session ...`.
pub(super) async fn run(command: SessionCommand, data_dir: &std::path::Path) -> anyhow::Result<()> {
    match command {
        SessionCommand::List { user, org, all, remote } => {
            let (channel, bearer) = channel(&remote, data_dir).await?;
            // The organization is named by slug through tenancy, which may run elsewhere: only
            // then is it asked.
            let organization_id = match org {
                Some(org) => {
                    let mut tenancy = TenancyServiceClient::with_interceptor(channel.clone(), bearer.clone());
                    Some(resolve_org(&mut tenancy, &org).await?)
                }
                None => None,
            };
            let tokens = TokenServiceClient::with_interceptor(channel, bearer);
            let sessions = paginate(|page_token| {
                let mut tokens = tokens.clone();
                let req = tpb::ListSessionsRequest {
                    user_id: user.clone(),
                    organization_id: organization_id.clone(),
                    include_revoked: all,
                    page_size: PAGE_SIZE,
                    page_token,
                };
                async move {
                    let page = tokens.list_sessions(req).await.map_err(status_error)?.into_inner();
                    anyhow::Ok((page.sessions, page.next_page_token))
                }
            })
            .await?;
            let value = serde_json::Value::Array(sessions.iter().map(session_json).collect());
            print(&remote, value, &SESSION_HEADERS, sessions.iter().map(session_row).collect());
        }
        SessionCommand::Revoke { id, remote } => {
            let (channel, bearer) = channel(&remote, data_dir).await?;
            let s = TokenServiceClient::with_interceptor(channel, bearer)
                .revoke_session(tpb::RevokeSessionRequest { session_id: id, request_id: String::new() })
                .await
                .map_err(status_error)?
                .into_inner()
                .session
                .unwrap_or_default();
            print(&remote, session_json(&s), &SESSION_HEADERS, vec![session_row(&s)]);
        }
    }
    Ok(())
}
