//! Fake SMS / voice providers on loopback that check requests the way the
//! real ones do and keep what they accept in memory.
//!
//! * [`FakeTwilio`]: Twilio's REST API (2010-04-01) for `Messages.json` and
//!   `Calls.json`: HTTP Basic authentication, form-encoded parameters, E.164
//!   numbers, well-formed TwiML, and Twilio's JSON errors and resources.
//! * [`FakeWebhook`]: a receiver of Gatehouse's signed JSON webhook (HMAC
//!   signature, timestamp freshness, body shape).
//!
//! Each is an axum server on `127.0.0.1:0`, spawned on the test's tokio
//! runtime; it stops when dropped (or when the runtime ends).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! let twilio = gatehouse_testkit::FakeTwilio::start("AC0123", "secret-token").await?;
//! // ... point the code under test at twilio.base_url() and let it send ...
//! twilio.wait_for(1, Duration::from_secs(5)).await?;
//! let code = twilio.last_code_to("+4915112345678");
//! # drop(code); Ok(()) }
//! ```

mod twilio;
mod webhook;

pub use twilio::{FakeTwilio, TwilioCall, TwilioFailure, TwilioMessage};
pub use webhook::{FakeWebhook, WebhookMessage};

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often the `wait_for` methods look at what arrived.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Serves `router` on `127.0.0.1:0` from a spawned task.
async fn serve(router: axum::Router, what: &str) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .with_context(|| format!("{what}: binding 127.0.0.1:0"))?;
    let addr = listener
        .local_addr()
        .with_context(|| format!("{what}: reading the local address"))?;
    let what = what.to_owned();
    let server = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            tracing::warn!(%err, "{what} stopped");
        }
    });
    tracing::debug!(%addr, "fake phone provider listening");
    Ok((addr, server))
}

/// Polls `count` until it reaches `n`; the error says what arrived.
async fn wait_until(
    what: &str,
    n: usize,
    timeout: Duration,
    count: impl Fn() -> usize,
    summary: impl Fn() -> String,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if count() >= n {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "{what}: expected {n} accepted request(s) within {timeout:?}, got {}; {}",
                count(),
                summary()
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// True for an E.164 number: `+`, then 8 to 15 ASCII digits, the first not `0`.
pub(crate) fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

/// The first one-time code in `text`: a run of 6 to 10 digits, where the
/// digits may be separated by spaces, commas or hyphens ("123456",
/// "123 456", "1, 2, 3, 4, 5, 6"). Digits right after a `+` (a phone
/// number) do not count.
///
/// Groups join only with groups of their own kind: single digits with
/// single digits ("1, 2, 3"), groups of 2 to 4 digits with each other
/// ("123 456"); a group of 5 or more digits stands alone, so
/// "123456, valid 15 minutes" gives "123456".
pub fn extract_code(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let is_sep = |c: char| matches!(c, ' ' | ',' | '-' | '\u{a0}' | '\u{202f}');
    let mut i = 0;
    while i < chars.len() {
        let starts_group = chars[i].is_ascii_digit() && (i == 0 || !chars[i - 1].is_ascii_digit());
        if !starts_group {
            i += 1;
            continue;
        }
        let after_plus = i > 0 && chars[i - 1] == '+';
        // Collect groups joined by separators.
        let mut groups: Vec<String> = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            groups.push(chars[start..j].iter().collect());
            let mut k = j;
            while k < chars.len() && is_sep(chars[k]) {
                k += 1;
            }
            if k > j && k < chars.len() && chars[k].is_ascii_digit() {
                j = k;
            } else {
                break;
            }
        }
        let next = j;
        if !after_plus {
            if let Some(code) = first_code(&groups) {
                return Some(code);
            }
        }
        i = next.max(i + 1);
    }
    None
}

/// Joins `groups` by kind (see [`extract_code`]) and returns the first
/// joined run of 6 to 10 digits.
fn first_code(groups: &[String]) -> Option<String> {
    let kind = |g: &str| match g.len() {
        1 => 1,
        2..=4 => 2,
        _ => 3,
    };
    let mut run = String::new();
    let mut run_kind = 0;
    let mut runs = Vec::new();
    for g in groups {
        let k = kind(g);
        if run.is_empty() || (k == run_kind && k != 3) {
            run.push_str(g);
        } else {
            runs.push(std::mem::take(&mut run));
            run.push_str(g);
        }
        run_kind = k;
    }
    runs.push(run);
    runs.into_iter().find(|r| (6..=10).contains(&r.len()))
}

#[cfg(test)]
mod tests;
