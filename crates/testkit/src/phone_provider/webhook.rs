//! A receiver of Gatehouse's signed SMS / voice webhook.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gatehouse_core::clock::SystemClock;
use gatehouse_core::ports::Clock;
use hmac::{Hmac, Mac as _};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::task::JoinHandle;

use super::{extract_code, is_e164, serve, wait_until};

/// The path the fake listens on.
const PATH: &str = "/hook";

/// A message the fake accepted (`200 OK`): the JSON body's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookMessage {
    pub to: String,
    /// `"sms"` or `"voice"`.
    pub channel: String,
    pub text: String,
    pub id: String,
    pub timestamp: i64,
}

/// A receiver of Gatehouse's signed webhook on `http://127.0.0.1:PORT/hook`.
///
/// It checks a `POST` as a careful receiver would, in this order:
///
/// 1. `Content-Type: application/json`, else `415`;
/// 2. `X-Gatehouse-Timestamp` is Unix seconds within
///    [`FakeWebhook::MAX_SKEW_SECS`] of its clock, else `401`;
/// 3. `X-Gatehouse-Signature` is `sha256=` and the hex HMAC-SHA256, keyed
///    with the secret, of `"<timestamp>.<raw body>"` (compared in constant
///    time), else `401`;
/// 4. the body is a JSON object with exactly `to` (E.164), `channel`
///    (`"sms"` or `"voice"`), `text` (not empty), `id` (1–128 characters)
///    and `timestamp` (equal to the header), else `400`;
/// 5. the `id` was not seen before, else `409`.
///
/// It then records the message and answers `200` with
/// `{"accepted": "<id>"}`. Errors are `{"error": "<why>"}`, and the reasons
/// are kept ([`Self::rejections`]). Other paths get `404`, other methods
/// `405`. Failures queued with [`Self::fail_next`] answer before any check.
pub struct FakeWebhook {
    addr: SocketAddr,
    url: url::Url,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for FakeWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeWebhook")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

struct Shared {
    secret: String,
    clock: Arc<dyn Clock>,
    state: Mutex<WebhookState>,
}

#[derive(Default)]
struct WebhookState {
    requests: usize,
    messages: Vec<WebhookMessage>,
    rejections: Vec<String>,
    failures: VecDeque<u16>,
    delay: Duration,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, WebhookState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FakeWebhook {
    /// How far the timestamp may be from the receiver's clock: five minutes.
    pub const MAX_SKEW_SECS: i64 = 300;

    /// Starts a receiver that checks signatures with `secret` and
    /// timestamps against the system clock.
    pub async fn start(secret: &str) -> anyhow::Result<FakeWebhook> {
        Self::start_with_clock(secret, Arc::new(SystemClock)).await
    }

    /// Starts a receiver whose clock is `clock` (to test stale timestamps).
    pub async fn start_with_clock(secret: &str, clock: Arc<dyn Clock>) -> anyhow::Result<FakeWebhook> {
        let shared = Arc::new(Shared {
            secret: secret.to_owned(),
            clock,
            state: Mutex::new(WebhookState::default()),
        });
        let router = axum::Router::new().fallback(handle).with_state(shared.clone());
        let (addr, server) = serve(router, "fake webhook").await?;
        let url = url::Url::parse(&format!("http://{addr}{PATH}"))
            .with_context(|| format!("fake webhook: a URL for {addr}"))?;
        Ok(FakeWebhook {
            addr,
            url,
            shared,
            server,
        })
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> url::Url {
        self.url.clone()
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<WebhookMessage> {
        self.shared.state().messages.clone()
    }

    /// Why each refused request was refused (not injected failures), oldest first.
    pub fn rejections(&self) -> Vec<String> {
        self.shared.state().rejections.clone()
    }

    /// How many HTTP requests reached the fake, refused ones included.
    pub fn request_count(&self) -> usize {
        self.shared.state().requests
    }

    /// Answers the next `n` requests with `status` (and `{"error": "injected failure"}`)
    /// before checking anything.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.shared
            .state()
            .failures
            .extend(std::iter::repeat_n(status, n));
    }

    /// Waits this long before answering each request; `Duration::ZERO` turns it off.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.state().delay = delay;
    }

    /// Waits until at least `n` messages were accepted.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        wait_until(
            "fake webhook",
            n,
            timeout,
            || self.shared.state().messages.len(),
            || {
                let state = self.shared.state();
                format!(
                    "{} request(s) arrived; refused: [{}]",
                    state.requests,
                    state.rejections.join("; ")
                )
            },
        )
        .await
    }

    /// The code in the latest message to `e164` (see [`super::extract_code`]).
    pub fn last_code_to(&self, e164: &str) -> Option<String> {
        let state = self.shared.state();
        let message = state.messages.iter().rev().find(|m| m.to == e164)?;
        extract_code(&message.text)
    }
}

impl Drop for FakeWebhook {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn error(status: StatusCode, why: &str) -> Response {
    (status, Json(json!({ "error": why }))).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (delay, failure) = {
        let mut state = shared.state();
        state.requests += 1;
        (state.delay, state.failures.pop_front())
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = failure {
        return error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "injected failure",
        );
    }
    if uri.path() != PATH {
        return error(StatusCode::NOT_FOUND, "no such path");
    }
    if method != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "POST only");
    }
    match check(&shared, &headers, &body) {
        Ok(message) => {
            let mut state = shared.state();
            if state.messages.iter().any(|m| m.id == message.id) {
                let why = format!("id {} was already used", message.id);
                state.rejections.push(why.clone());
                return error(StatusCode::CONFLICT, &why);
            }
            let id = message.id.clone();
            state.messages.push(message);
            (StatusCode::OK, Json(json!({ "accepted": id }))).into_response()
        }
        Err((status, why)) => {
            shared.state().rejections.push(why.clone());
            error(status, &why)
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn check(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<WebhookMessage, (StatusCode, String)> {
    let refuse = |status: StatusCode, why: &str| (status, why.to_owned());
    let unauthorized = |why: &str| refuse(StatusCode::UNAUTHORIZED, why);

    let json_type = header_str(headers, header::CONTENT_TYPE.as_str())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }

    let timestamp = header_str(headers, "x-gatehouse-timestamp")
        .ok_or_else(|| unauthorized("missing X-Gatehouse-Timestamp"))?;
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| unauthorized("X-Gatehouse-Timestamp is not Unix seconds"))?;
    let skew = shared.clock.now().unix_timestamp().saturating_sub(ts);
    if skew.abs() > FakeWebhook::MAX_SKEW_SECS {
        return Err(unauthorized(&format!(
            "stale X-Gatehouse-Timestamp: {skew} s from the receiver's clock"
        )));
    }

    let signature = header_str(headers, "x-gatehouse-signature")
        .ok_or_else(|| unauthorized("missing X-Gatehouse-Signature"))?;
    let signature = signature
        .strip_prefix("sha256=")
        .and_then(|hex_sig| hex::decode(hex_sig).ok())
        .filter(|bytes| bytes.len() == 32)
        .ok_or_else(|| unauthorized("X-Gatehouse-Signature is not sha256=<64 hex digits>"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(shared.secret.as_bytes())
        .map_err(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "bad HMAC key"))?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| unauthorized("bad signature"))?;

    let bad = |why: &str| refuse(StatusCode::BAD_REQUEST, why);
    let value: Value = serde_json::from_slice(body).map_err(|e| bad(&format!("body is not JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| bad("body is not a JSON object"))?;
    let expected = ["to", "channel", "text", "id", "timestamp"];
    if let Some(extra) = object.keys().find(|k| !expected.contains(&k.as_str())) {
        return Err(bad(&format!("unexpected field {extra:?}")));
    }
    let string = |name: &str| {
        object
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("{name} is missing or not a string")))
    };
    let to = string("to")?;
    if !is_e164(to) {
        return Err(bad("to is not an E.164 number"));
    }
    let channel = string("channel")?;
    if !matches!(channel, "sms" | "voice") {
        return Err(bad("channel is neither \"sms\" nor \"voice\""));
    }
    let text = string("text")?;
    if text.trim().is_empty() {
        return Err(bad("text is empty"));
    }
    let id = string("id")?;
    if id.is_empty() || id.chars().count() > 128 {
        return Err(bad("id must have 1 to 128 characters"));
    }
    let body_ts = object
        .get("timestamp")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("timestamp is missing or not an integer"))?;
    if body_ts != ts {
        return Err(bad("timestamp differs from X-Gatehouse-Timestamp"));
    }
    Ok(WebhookMessage {
        to: to.to_owned(),
        channel: channel.to_owned(),
        text: text.to_owned(),
        id: id.to_owned(),
        timestamp: ts,
    })
}
