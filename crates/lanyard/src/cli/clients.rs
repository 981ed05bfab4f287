//! `lanyard client ...`: the applications that sign people in through Lanyard's OpenID Provider
//! endpoints (`RegisterClient`, `ListClients`, `DeleteClient`; operator only).

use clap::Subcommand;
use lanyard_proto::token::v1 as tpb;
use lanyard_proto::token::v1::token_service_client::TokenServiceClient;
use serde_json::json;

use super::output::{print, print_deleted, status_error};
use super::{channel, Remote};

/// `lanyard client ...`
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register an application; a confidential client's secret is printed once.
    Register {
        /// Shown to operators.
        #[arg(long)]
        name: String,
        /// A public client (a browser or mobile application): PKCE only, no secret.
        #[arg(long)]
        public: bool,
        /// A redirect URI, matched exactly (repeatable).
        #[arg(long = "redirect-uri", required = true)]
        redirect_uris: Vec<String>,
        /// Where logout may return to, matched exactly (repeatable).
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the registered applications.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete an application.
    Delete {
        /// Its client id.
        #[arg(long)]
        client_id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

const HEADERS: [&str; 4] = ["client_id", "name", "type", "redirect_uris"];

fn row(c: &tpb::Client) -> Vec<String> {
    let kind = if c.client_type == tpb::ClientType::Public as i32 { "public" } else { "confidential" };
    vec![c.client_id.clone(), c.display_name.clone(), kind.into(), c.redirect_uris.join(" ")]
}

fn client_json(c: &tpb::Client) -> serde_json::Value {
    json!({
        "client_id": c.client_id,
        "display_name": c.display_name,
        "public": c.client_type == tpb::ClientType::Public as i32,
        "redirect_uris": c.redirect_uris,
        "post_logout_redirect_uris": c.post_logout_redirect_uris,
    })
}

/// Runs `lanyard client ...`.
pub async fn run(command: ClientCommand, data_dir: &std::path::Path) -> anyhow::Result<()> {
    match command {
        ClientCommand::Register { name, public, redirect_uris, post_logout_redirect_uris, remote } => {
            let (channel, bearer) = channel(&remote, data_dir).await?;
            let client_type = if public { tpb::ClientType::Public } else { tpb::ClientType::Confidential };
            let r = TokenServiceClient::with_interceptor(channel, bearer)
                .register_client(tpb::RegisterClientRequest {
                    display_name: name,
                    client_type: client_type as i32,
                    redirect_uris,
                    post_logout_redirect_uris,
                    request_id: String::new(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let c = r.client.unwrap_or_default();
            let mut value = client_json(&c);
            value["client_secret"] = json!(r.client_secret);
            let mut cells = row(&c);
            cells.push(r.client_secret);
            let headers = [HEADERS[0], HEADERS[1], HEADERS[2], HEADERS[3], "client_secret (shown once)"];
            print(&remote, value, &headers, vec![cells]);
        }
        ClientCommand::List { remote } => {
            let (channel, bearer) = channel(&remote, data_dir).await?;
            let mut client = TokenServiceClient::with_interceptor(channel, bearer);
            let (mut all, mut page_token) = (Vec::new(), String::new());
            loop {
                let page = client
                    .list_clients(tpb::ListClientsRequest { page_size: 500, page_token })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                all.extend(page.clients);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            let value = serde_json::Value::Array(all.iter().map(client_json).collect());
            print(&remote, value, &HEADERS, all.iter().map(row).collect());
        }
        ClientCommand::Delete { client_id, remote } => {
            let (channel, bearer) = channel(&remote, data_dir).await?;
            TokenServiceClient::with_interceptor(channel, bearer)
                .delete_client(tpb::DeleteClientRequest { client_id: client_id.clone(), request_id: String::new() })
                .await
                .map_err(status_error)?;
            print_deleted(&remote, "client_id", client_id);
        }
    }
    Ok(())
}
