//! Gatehouse notifications: the outbox worker and the mail transports it delivers through.
#![forbid(unsafe_code)]

mod smtp;
mod worker;

pub use smtp::{check_mailbox, DevMailbox, MailTransport, SmtpSettings, SmtpTransport};
pub use worker::{OutboxWorker, RetryPolicy};
