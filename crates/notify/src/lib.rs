//! Gatehouse notifications: the outbox worker, the mail transports it delivers through, and the
//! SMS / voice senders.
#![forbid(unsafe_code)]

mod phone;
mod smtp;
mod worker;

pub use phone::{
    is_e164, webhook_signature, EmailGatewaySender, EmailGatewaySettings, TwilioSender, TwilioSettings,
    WebhookSender, WebhookSettings,
};
pub use smtp::{check_mailbox, DevMailbox, MailTransport, SmtpSettings, SmtpTransport};
pub use worker::{OutboxWorker, RetryPolicy};
