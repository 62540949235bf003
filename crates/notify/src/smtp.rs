//! Mail transports: SMTP through lettre, and the development mailbox of demo mode.
use async_trait::async_trait;
use gatehouse_core::ports::OutgoingMail;
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

#[async_trait]
pub trait MailTransport: Send + Sync {
    /// Delivers one message. The error is for the operator's log: it never contains the body.
    async fn send(&self, mail: &OutgoingMail) -> Result<(), String>;
}

/// What the configuration layer checked about SMTP.
#[derive(Clone)]
pub struct SmtpSettings {
    /// `smtp://host:port`, `smtps://host:port`, `smtp://host:port?tls=required`; may carry `user:pass@`.
    pub url: String,
    pub from: String,
    /// Overrides the URL's credentials (from `smtp_password_file`).
    pub username: Option<String>,
    pub password: Option<String>,
    pub timeout: Duration,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

pub struct SmtpTransport {
    inner: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpTransport {
    pub fn new(s: &SmtpSettings) -> Result<Self, String> {
        let from: Mailbox = s.from.parse().map_err(|e| format!("mail.from: {e}"))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&s.url)
            .map_err(|e| format!("mail.smtp_url: {e}"))?
            .timeout(Some(s.timeout));
        if let (Some(user), Some(pass)) = (&s.username, &s.password) {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(Self {
            inner: builder.build(),
            from,
        })
    }
}

#[async_trait]
impl MailTransport for SmtpTransport {
    async fn send(&self, mail: &OutgoingMail) -> Result<(), String> {
        let to: Mailbox = mail.to.as_str().parse().map_err(|e| format!("recipient: {e}"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body.clone())
            .map_err(|e| format!("message: {e}"))?;
        self.inner
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("smtp: {e}"))
    }
}

/// Demo mode: messages stay in the outbox and are shown at `/dev/mailbox`.
#[derive(Debug, Default)]
pub struct DevMailbox;

#[async_trait]
impl MailTransport for DevMailbox {
    async fn send(&self, _mail: &OutgoingMail) -> Result<(), String> {
        Ok(())
    }
}

/// Checks a `From` value such as `Password reset <noreply@example.org>`.
pub fn check_mailbox(value: &str) -> Result<(), String> {
    value.parse::<Mailbox>().map(|_| ()).map_err(|e| e.to_string())
}
