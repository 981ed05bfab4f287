//! The outbox mailer: renders invitation emails, and a worker that delivers queued messages over
//! SMTP (`lettre`, tokio + rustls) or, in the embedded default, writes each one as an `.eml` file.
//!
//! Delivery is at-least-once with a narrow window: a message is claimed under a lease, handed to
//! the transport, then marked sent. A crash after the hand-off and before the mark re-sends that
//! one message after the lease (each message carries a stable `Message-ID`, so receivers can
//! de-duplicate, and the `.eml` transport overwrites the same file); nothing pending is dropped.
//! A transient failure is retried with exponential backoff (`backoff_base` doubling up to
//! `backoff_max`); after `max_attempts` attempts ([`DEFAULT_MAX_ATTEMPTS`] = 8 by default), or at
//! once on a permanent SMTP rejection (5xx), the message is marked failed, its error recorded on
//! the message and on the invitation (`email_delivery = FAILED`), and the sealed body erased.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lanyard_core::crypto::SecretBox;
use lanyard_core::values::sanitize_display_name;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use crate::domain::{Clock, Invitation};
use crate::store::{InvitationStore, OutboxMessage};
use lanyard_core::values::escape_html as escape;

/// Attempts before a message is marked failed, by default.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// How mail leaves the process.
#[derive(Clone, Debug)]
pub enum MailTransport {
    /// An SMTP server: `smtp://host:25` (plain), `smtp://user:pass@host:587?tls=required`
    /// (STARTTLS) or `smtps://user:pass@host:465` (implicit TLS).
    Smtp {
        /// The connection URL; it may hold credentials, so it never prints.
        url: SecretString,
    },
    /// The embedded default: one `.eml` file per message in `dir`.
    Files {
        /// Where the files go.
        dir: PathBuf,
    },
}

/// The mailer's settings.
#[derive(Clone, Debug)]
pub struct MailerConfig {
    /// SMTP or files.
    pub transport: MailTransport,
    /// The `From` mailbox, e.g. `Acme <no-reply@acme.example>`.
    pub from: String,
    /// Attempts before a message is marked failed.
    pub max_attempts: u32,
    /// The delay after the first failed attempt; it doubles with each further failure.
    pub backoff_base: Duration,
    /// The longest delay between attempts.
    pub backoff_max: Duration,
    /// How often the worker looks for due messages when nothing wakes it.
    pub poll_interval: Duration,
    /// How long a claimed message is reserved for the worker that claimed it.
    pub lease: Duration,
}

impl MailerConfig {
    /// Defaults around a transport and a sender.
    pub fn new(transport: MailTransport, from: impl Into<String>) -> Self {
        Self {
            transport,
            from: from.into(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(5),
            lease: Duration::from_secs(120),
        }
    }
}

/// A rendered message, as sealed in the outbox.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EmailContent {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Renders the invitation email: the organization, who invited them, the link, the expiry.
///
/// Names are made displayable again here (hidden and layout characters removed, whatever older
/// versions stored), and the Subject names only the organization, in quotes: the inviter's name
/// comes from an identity provider's `name` claim, which the inviter chooses, and a Subject is
/// what a mail client shows before anything else.
pub fn render(invitation: &Invitation, link: &str) -> EmailContent {
    let org = &sanitize_display_name(&invitation.organization_display_name);
    let inviter = &sanitize_display_name(&invitation.inviter_display_name);
    let inviter = if inviter.is_empty() { "Someone" } else { inviter.as_str() };
    // "2026-11-23T03:14:15.123456Z" -> "2026-11-23 03:14:15 UTC"
    let rfc3339 = invitation.expires_at.to_rfc3339();
    let expires = format!("{} UTC", rfc3339.get(..19).unwrap_or(&rfc3339).replace('T', " "));
    let subject = format!("Invitation to join \"{org}\"");
    let text = format!(
        "Hello,\n\n{inviter} invited you ({email}) to join {org}.\n\nAccept the invitation by signing in with your \
         company account here:\n\n{link}\n\nThe link works once and expires at {expires}. If you did not expect this \
         invitation, you can ignore this email.\n",
        email = invitation.email,
    );
    let html = format!(
        "<!DOCTYPE html>\n<html><body>\n<p>Hello,</p>\n<p>{inviter} invited you ({email}) to join \
         <strong>{org}</strong>.</p>\n<p><a href=\"{link}\">Accept the invitation</a></p>\n<p>Or open this link: \
         {link}</p>\n<p>The link works once and expires at {expires}. If you did not expect this invitation, you can \
         ignore this email.</p>\n</body></html>\n",
        inviter = escape(inviter),
        email = escape(invitation.email.as_str()),
        org = escape(org),
        link = escape(link),
        expires = escape(&expires),
    );
    EmailContent { to: invitation.email.to_string(), subject, text, html }
}

/// Builds the MIME message: `multipart/alternative` with a plain-text and an HTML part, both
/// quoted-printable, and a `Message-ID` derived from the outbox id.
pub fn build_message(from: &Mailbox, outbox_id: &str, content: &EmailContent) -> Result<Message, String> {
    let to: Mailbox = content.to.parse().map_err(|e| format!("recipient: {e}"))?;
    let domain = from.email.domain().to_owned();
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(content.subject.clone())
        .message_id(Some(format!("<{outbox_id}@{domain}>")))
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .header(ContentTransferEncoding::QuotedPrintable)
                        .body(content.text.clone()),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .header(ContentTransferEncoding::QuotedPrintable)
                        .body(content.html.clone()),
                ),
        )
        .map_err(|e| e.to_string())
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(PathBuf),
}

/// Why one attempt failed.
enum SendError {
    /// Worth another attempt later.
    Transient(String),
    /// Will never succeed.
    Permanent(String),
}

/// The outbox worker.
#[derive(Clone)]
pub struct Mailer {
    store: InvitationStore,
    secrets: SecretBox,
    transport: Arc<Transport>,
    from: Mailbox,
    config: MailerConfig,
    wake: Arc<Notify>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Mailer {
    /// Builds the worker (it does nothing until [`Mailer::run`]).
    pub fn new(
        store: InvitationStore,
        secrets: SecretBox,
        config: MailerConfig,
        wake: Arc<Notify>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let from: Mailbox =
            config.from.parse().map_err(|e| anyhow::anyhow!("the mail sender {:?}: {e}", config.from))?;
        let transport = match &config.transport {
            MailTransport::Smtp { url } => Transport::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    .map_err(|e| anyhow::anyhow!("LANYARD_SMTP_URL is not a valid SMTP URL: {e}"))?
                    .timeout(Some(Duration::from_secs(30)))
                    .build(),
            ),
            MailTransport::Files { dir } => {
                private_mail_dir(dir).map_err(|e| anyhow::anyhow!("the mail directory {}: {e}", dir.display()))?;
                Transport::Files(dir.clone())
            }
        };
        if config.max_attempts == 0 {
            anyhow::bail!("the mailer needs at least one attempt per message");
        }
        Ok(Self { store, secrets, transport: Arc::new(transport), from, config, wake, clock })
    }

    /// Delivers until `shutdown` turns true. A delivery in progress finishes first, so a stop
    /// never leaves a message half-recorded.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(transport = self.transport_name(), "mailer started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            let delivered = match self.deliver_due().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "mailer could not read the outbox");
                    0
                }
            };
            if delivered > 0 {
                continue;
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
        tracing::info!("mailer stopped");
    }

    fn transport_name(&self) -> &'static str {
        match *self.transport {
            Transport::Smtp(_) => "smtp",
            Transport::Files(_) => "files",
        }
    }

    /// Attempts every message that is due now; returns how many were attempted.
    pub async fn deliver_due(&self) -> Result<usize, crate::InvitationError> {
        let mut attempted = 0;
        loop {
            let now = self.clock.now();
            let Some(message) = self.store.claim_next(now, now.plus(self.config.lease)).await? else {
                let backlog = self.store.outbox_backlog().await?;
                metrics::gauge!("lanyard_invitation_outbox_backlog").set(backlog as f64);
                return Ok(attempted);
            };
            attempted += 1;
            self.attempt(message).await?;
        }
    }

    async fn attempt(&self, message: OutboxMessage) -> Result<(), crate::InvitationError> {
        let outcome = self.send(&message).await;
        let now = self.clock.now();
        let result = match &outcome {
            Ok(()) => "sent",
            Err(SendError::Transient(_)) if message.attempts < self.config.max_attempts => "retry",
            Err(_) => "failed",
        };
        metrics::counter!("lanyard_invitation_emails_total", "transport" => self.transport_name(), "result" => result)
            .increment(1);
        match outcome {
            Ok(()) => {
                tracing::info!(outbox_id = %message.id, invitation_id = %message.invitation_id, "invitation email sent");
                self.store.mark_sent(&message, now).await
            }
            Err(SendError::Transient(e)) if message.attempts < self.config.max_attempts => {
                let delay = self.backoff(message.attempts);
                tracing::warn!(outbox_id = %message.id, attempts = message.attempts, error = %e, retry_in = ?delay,
                    "invitation email not delivered; will retry");
                self.store.mark_retry(&message, &e, now.plus(delay), now).await
            }
            Err(SendError::Transient(e) | SendError::Permanent(e)) => {
                tracing::error!(outbox_id = %message.id, invitation_id = %message.invitation_id,
                    attempts = message.attempts, error = %e, "invitation email failed for good");
                self.store.mark_failed(&message, &e, now).await
            }
        }
    }

    /// The delay after `attempts` failed attempts.
    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32.checked_shl(attempts.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
        self.config.backoff_base.saturating_mul(factor).min(self.config.backoff_max)
    }

    async fn send(&self, message: &OutboxMessage) -> Result<(), SendError> {
        let sealed =
            message.sealed_message.as_deref().ok_or_else(|| SendError::Permanent("the message body is gone".into()))?;
        let json = self
            .secrets
            .open(sealed, &message.id)
            .map_err(|e| SendError::Permanent(format!("the sealed message cannot be opened: {e}")))?;
        let content: EmailContent = serde_json::from_str(&json)
            .map_err(|e| SendError::Permanent(format!("the sealed message is damaged: {e}")))?;
        let email = build_message(&self.from, &message.id, &content).map_err(SendError::Permanent)?;
        match &*self.transport {
            Transport::Smtp(smtp) => match smtp.send(email).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
                Err(e) => Err(SendError::Transient(e.to_string())),
            },
            Transport::Files(dir) => {
                let path = dir.join(format!("{}.eml", message.id));
                let tmp = dir.join(format!(".{}.eml.tmp", message.id));
                let (bytes, target) = (email.formatted(), path.clone());
                // The link in it is a live credential; the rename keeps the private mode.
                let write = tokio::task::spawn_blocking(move || {
                    use std::io::Write;
                    let mut options = std::fs::OpenOptions::new();
                    let mut file =
                        lanyard_core::fs::open_private(&tmp, options.write(true).create(true).truncate(true))?;
                    file.write_all(&bytes)?;
                    std::fs::rename(&tmp, &target)
                });
                write
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                    .map_err(|e| SendError::Transient(format!("writing {}: {e}", path.display())))?;
                tracing::info!(path = %path.display(), to = %content.to, "invitation email written to a file");
                Ok(())
            }
        }
    }
}

/// Creates the mail directory private, and tightens the messages an older version left readable
/// by others: each holds a registration link that is still live.
fn private_mail_dir(dir: &std::path::Path) -> std::io::Result<()> {
    lanyard_core::fs::create_private_dir(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // Not through symbolic links: what they point at is not the mailer's.
        if entry.file_type()?.is_file() {
            lanyard_core::fs::make_private(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::*;
    use lanyard_core::{Email, OrganizationId, ReservationId, Timestamp};

    #[test]
    fn untrusted_names_stay_out_of_the_subject_and_lose_hidden_characters() {
        let mut inv = invitation();
        inv.inviter_display_name = "Mallory\u{2028}Subject: URGENT\u{202E}".into();
        inv.organization_display_name = "Acme\u{2029}Bank\u{200B}".into();
        let c = render(&inv, "https://app.example.com/invite?token=abc");
        assert_eq!(c.subject, "Invitation to join \"Acme Bank\"");
        assert!(c.text.starts_with("Hello,\n\nMallory Subject: URGENT invited you"), "{}", c.text);
        for part in [&c.subject, &c.text, &c.html] {
            assert!(!part.contains(['\u{2028}', '\u{2029}', '\u{202E}', '\u{200B}']), "{part:?}");
        }
    }

    fn invitation() -> Invitation {
        Invitation {
            id: InvitationId::new(),
            organization_id: OrganizationId::new(),
            email: Email::parse("it@acme.com").unwrap(),
            roles: vec![],
            status: InvitationStatus::Pending,
            inviter: "operator:x".into(),
            inviter_display_name: "Ops <team>".into(),
            organization_slug: "acme".into(),
            organization_display_name: "Acme & Co".into(),
            reservation_id: ReservationId::new(),
            created_at: Timestamp(0),
            expires_at: Timestamp(86_400_000_000),
            accepted_at: None,
            accepted_user_id: None,
            revoked_at: None,
            delivery: Delivery::Queued,
            delivery_error: None,
        }
    }

    #[test]
    fn renders_both_parts_and_escapes_html() {
        let inv = invitation();
        let c = render(&inv, "https://app.example.com/invite?token=abc");
        assert!(
            c.text.contains("Acme & Co") && c.text.contains("token=abc") && c.text.contains("1970-01-02 00:00:00 UTC")
        );
        assert!(c.html.contains("Acme &amp; Co") && c.html.contains("Ops &lt;team&gt;"));
        assert_eq!(c.subject, "Invitation to join \"Acme & Co\"");
        let from: Mailbox = "Lanyard <no-reply@lanyard.example>".parse().unwrap();
        let msg = String::from_utf8(build_message(&from, "m1", &c).unwrap().formatted()).unwrap();
        assert!(
            msg.contains("multipart/alternative") && msg.contains("text/html") && msg.contains("<m1@lanyard.example>")
        );
    }
}
