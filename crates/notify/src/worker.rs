//! The outbox worker: delivers what the use cases queued, with retry and exponential backoff.
use crate::smtp::MailTransport;
use gatehouse_core::ports::{Clock, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Delay after the first failure; doubled after each further one.
    pub initial: Duration,
    pub max: Duration,
    /// How often the outbox is polled.
    pub poll: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(600),
            poll: Duration::from_millis(500),
        }
    }
}

impl RetryPolicy {
    pub fn delay(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.min(20));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

pub struct OutboxWorker {
    pub store: Arc<dyn Store>,
    pub transport: Arc<dyn MailTransport>,
    pub clock: Arc<dyn Clock>,
    pub retry: RetryPolicy,
    /// Keep delivered bodies (the demo's development mailbox shows them); otherwise they are
    /// removed once delivered, so no code outlives its message in the database.
    pub keep_bodies: bool,
}

impl OutboxWorker {
    /// Delivers what is due now; returns how many messages went out.
    pub async fn run_once(&self) -> usize {
        let now = self.clock.now();
        let due = match self.store.due_mail(now, 50).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "outbox: cannot read the queue");
                return 0;
            }
        };
        let mut sent = 0;
        for m in due {
            match self.transport.send(&m.mail).await {
                Ok(()) => {
                    sent += 1;
                    if let Err(e) = self
                        .store
                        .mail_sent(m.id, self.clock.now(), !self.keep_bodies)
                        .await
                    {
                        tracing::warn!(id = m.id, error = %e, "outbox: sent, but could not mark it");
                    }
                }
                Err(error) => {
                    let delay = self.retry.delay(m.attempts);
                    tracing::warn!(id = m.id, attempts = m.attempts + 1, retry_in_ms = delay.as_millis() as u64,
                        %error, "outbox: delivery failed, will retry");
                    let next = self.clock.now() + delay;
                    if let Err(e) = self.store.mail_failed(m.id, next, &error).await {
                        tracing::warn!(id = m.id, error = %e, "outbox: could not record the failure");
                    }
                }
            }
        }
        sent
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            self.run_once().await;
            tokio::select! {
                _ = tokio::time::sleep(self.retry.poll) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        tracing::debug!("outbox worker stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let r = RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            poll: Duration::ZERO,
        };
        assert_eq!(r.delay(0), Duration::from_secs(1));
        assert_eq!(r.delay(1), Duration::from_secs(2));
        assert_eq!(r.delay(3), Duration::from_secs(8));
        assert_eq!(r.delay(4), Duration::from_secs(10));
        assert_eq!(r.delay(u32::MAX), Duration::from_secs(10));
    }
}
