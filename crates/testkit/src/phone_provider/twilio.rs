//! A fake of Twilio's REST API: `Messages.json` and `Calls.json` of one account.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use gatehouse_core::clock::SystemClock;
use gatehouse_core::ports::Clock as _;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::task::JoinHandle;

use super::{extract_code, is_e164, serve, wait_until};

/// Twilio's API version, the first segment of every path.
const API_VERSION: &str = "2010-04-01";
/// The longest SMS body Twilio accepts (it splits it into segments).
const MAX_BODY_CHARS: usize = 1600;

/// Tells fakes apart in their SIDs.
static INSTANCES: AtomicU64 = AtomicU64::new(0);

/// An SMS the fake accepted (`201 Created`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioMessage {
    /// `SM` and 32 hex digits.
    pub sid: String,
    pub to: String,
    /// `From`, when the request named one.
    pub from: Option<String>,
    /// `MessagingServiceSid`, when the request named one.
    pub messaging_service_sid: Option<String>,
    pub body: String,
}

/// A call the fake accepted (`201 Created`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioCall {
    /// `CA` and 32 hex digits.
    pub sid: String,
    pub to: String,
    pub from: String,
    /// The `Twiml` parameter as received.
    pub twiml: String,
    /// The text of its `<Say>` elements, entities decoded, joined by a space.
    pub spoken: String,
}

/// What the fake answers instead of doing its work (see [`FakeTwilio::fail_next`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwilioFailure {
    /// `503 Service Unavailable` with Twilio's JSON error 20503.
    Unavailable,
    /// `429 Too Many Requests` with Twilio's JSON error 20429.
    TooManyRequests,
    /// Any status with Twilio's JSON error `{"code", "message", "more_info", "status"}`.
    Error { status: u16, code: u32, message: String },
}

impl TwilioFailure {
    /// A `400 Bad Request` carrying Twilio error `code` and `message`
    /// (e.g. 21610, "Attempt to send to unsubscribed recipient").
    pub fn bad_request(code: u32, message: impl Into<String>) -> Self {
        TwilioFailure::Error {
            status: 400,
            code,
            message: message.into(),
        }
    }

    fn respond(&self) -> Response {
        match self {
            TwilioFailure::Unavailable => {
                twilio_error(StatusCode::SERVICE_UNAVAILABLE, 20503, "Service Unavailable")
            }
            TwilioFailure::TooManyRequests => {
                twilio_error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests")
            }
            TwilioFailure::Error {
                status,
                code,
                message,
            } => twilio_error(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
                *code,
                message,
            ),
        }
    }
}

/// A fake Twilio REST API for one account on `127.0.0.1`.
///
/// It answers `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` and
/// `…/Calls.json` as Twilio does:
///
/// * `401` with error 20003 ("Authenticate") and a `WWW-Authenticate`
///   challenge unless HTTP Basic authentication carries the account SID and
///   auth token, or when the path names another account;
/// * `404` with error 20404 for any other path, `405` with error 20004 for a
///   method other than POST;
/// * parameters come from an `application/x-www-form-urlencoded` body only:
///   another content type (JSON, say) leaves them all missing, so the answer
///   is `400` with error 21604 / 21201 ("'To' is required"), its message
///   saying the body was not form-encoded;
/// * messages: `400` with 21604 (no `To`), 21603 (neither `From` nor
///   `MessagingServiceSid`), 21602 (no `Body`), 21211 (`To` not E.164),
///   21212 (`From` neither E.164, a 5–6 digit short code nor an
///   alphanumeric sender ID), 21701 (`MessagingServiceSid` not `MG` + 32
///   hex), 21617 (`Body` over 1600 characters);
/// * calls: `400` with 21201 (no `To`), 21213 (no `From`), 21200 (no
///   `Twiml`; this fake cannot fetch a `Url` or run an `ApplicationSid`),
///   21211 / 21212 (`To` / `From` not E.164), 12100 (TwiML that is not
///   well-formed XML with a `<Response>` root);
/// * success: `201 Created` with the JSON resource (`sid` `SM…` / `CA…`,
///   `status` `queued` — `accepted` for a message through a Messaging
///   Service —, `to`, `from`, `body`, `date_created`, `uri`, …), and the
///   request is recorded.
///
/// Failures queued with [`Self::fail_next`] answer before any check.
pub struct FakeTwilio {
    addr: SocketAddr,
    base_url: url::Url,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for FakeTwilio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeTwilio")
            .field("addr", &self.addr)
            .field("account_sid", &self.shared.account_sid)
            .finish_non_exhaustive()
    }
}

struct Shared {
    account_sid: String,
    auth_token: String,
    instance: u64,
    state: Mutex<TwilioState>,
}

#[derive(Default)]
struct TwilioState {
    requests: usize,
    next_sid: u64,
    messages: Vec<TwilioMessage>,
    calls: Vec<TwilioCall>,
    /// (to, text) of every accepted message and call, oldest first.
    deliveries: Vec<(String, String)>,
    failures: VecDeque<TwilioFailure>,
    delay: Duration,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, TwilioState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FakeTwilio {
    /// Starts a fake for the account `account_sid` (use `AC` and 32 hex
    /// digits to look real; any letters and digits work) with `auth_token`.
    pub async fn start(account_sid: &str, auth_token: &str) -> anyhow::Result<FakeTwilio> {
        let shared = Arc::new(Shared {
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(TwilioState::default()),
        });
        let router = axum::Router::new().fallback(handle).with_state(shared.clone());
        let (addr, server) = serve(router, "fake Twilio").await?;
        let base_url = url::Url::parse(&format!("http://{addr}/"))
            .with_context(|| format!("fake Twilio: a URL for {addr}"))?;
        Ok(FakeTwilio {
            addr,
            base_url,
            shared,
            server,
        })
    }

    /// `http://127.0.0.1:PORT/`: the `base_url` to give the code under test.
    pub fn base_url(&self) -> url::Url {
        self.base_url.clone()
    }

    /// The account SID the fake expects.
    pub fn account_sid(&self) -> &str {
        &self.shared.account_sid
    }

    /// Every SMS accepted so far, oldest first.
    pub fn messages(&self) -> Vec<TwilioMessage> {
        self.shared.state().messages.clone()
    }

    /// Every call accepted so far, oldest first.
    pub fn calls(&self) -> Vec<TwilioCall> {
        self.shared.state().calls.clone()
    }

    /// How many HTTP requests reached the fake, refused ones included.
    pub fn request_count(&self) -> usize {
        self.shared.state().requests
    }

    /// Answers the next `n` requests with `failure` (after any failures
    /// already queued), before checking anything.
    pub fn fail_next(&self, n: usize, failure: TwilioFailure) {
        let mut state = self.shared.state();
        state.failures.extend(std::iter::repeat_n(failure, n));
    }

    /// Waits this long before answering each request (to test timeouts);
    /// `Duration::ZERO` turns it off.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.state().delay = delay;
    }

    /// Waits until at least `n` messages and calls together were accepted.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        wait_until(
            "fake Twilio",
            n,
            timeout,
            || self.shared.state().deliveries.len(),
            || {
                let state = self.shared.state();
                format!(
                    "{} request(s) arrived, {} message(s) and {} call(s) accepted",
                    state.requests,
                    state.messages.len(),
                    state.calls.len()
                )
            },
        )
        .await
    }

    /// The code in the latest message or call to `e164` (the digits of the
    /// SMS body or of the spoken text, even spaced out; see
    /// [`super::extract_code`]).
    pub fn last_code_to(&self, e164: &str) -> Option<String> {
        let state = self.shared.state();
        let (_, text) = state.deliveries.iter().rev().find(|(to, _)| to == e164)?;
        extract_code(text)
    }
}

impl Drop for FakeTwilio {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, Json(body)).into_response()
}

fn unauthorized() -> Response {
    let mut response = twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Twilio API\""),
    );
    response
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

/// Form parameters; the first of repeated names wins, empty values count as absent.
struct Params {
    pairs: Vec<(String, String)>,
    form_encoded: bool,
}

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// A 400 for a missing required parameter; says so when the body was not form-encoded.
    fn missing(&self, code: u32, message: &str) -> Response {
        if self.form_encoded {
            twilio_error(StatusCode::BAD_REQUEST, code, message)
        } else {
            twilio_error(
                StatusCode::BAD_REQUEST,
                code,
                &format!("{message} (parameters are read from an application/x-www-form-urlencoded body)"),
            )
        }
    }
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
    if let Some(failure) = failure {
        return failure.respond();
    }
    let authenticated = basic_credentials(&headers)
        .is_some_and(|(user, password)| user == shared.account_sid && password == shared.auth_token);
    if !authenticated {
        return unauthorized();
    }
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let resource = match segments.as_slice() {
        [API_VERSION, "Accounts", sid, resource] => {
            if *sid != shared.account_sid {
                return unauthorized();
            }
            *resource
        }
        _ => return not_found(uri.path()),
    };
    if !matches!(resource, "Messages.json" | "Calls.json") {
        return not_found(uri.path());
    }
    if method != Method::POST {
        return twilio_error(StatusCode::METHOD_NOT_ALLOWED, 20004, "Method not allowed");
    }
    let form_encoded = is_form(&headers);
    let pairs = if form_encoded {
        url::form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    } else {
        Vec::new()
    };
    let params = Params { pairs, form_encoded };
    if resource == "Messages.json" {
        create_message(&shared, &params)
    } else {
        create_call(&shared, &params)
    }
}

fn not_found(path: &str) -> Response {
    twilio_error(
        StatusCode::NOT_FOUND,
        20404,
        &format!("The requested resource {path} was not found"),
    )
}

/// E.164, a 5–6 digit short code, or an alphanumeric sender ID (1–11
/// letters, digits and spaces, at least one letter).
fn is_sms_sender(from: &str) -> bool {
    let short_code = (5..=6).contains(&from.len()) && from.bytes().all(|b| b.is_ascii_digit());
    let alphanumeric = (1..=11).contains(&from.len())
        && from.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && from.bytes().any(|b| b.is_ascii_alphabetic());
    is_e164(from) || short_code || alphanumeric
}

fn is_sid(value: &str, prefix: &str) -> bool {
    value
        .strip_prefix(prefix)
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// GSM-7 (approximated as printable ASCII) fits 160 characters in one
/// segment and 153 per segment when split; UCS-2 fits 70, then 67.
fn segments(body: &str) -> usize {
    let chars = body.chars().count();
    let gsm = body
        .chars()
        .all(|c| c == '\n' || c == '\r' || (' '..='~').contains(&c));
    let (single, part) = if gsm { (160, 153) } else { (70, 67) };
    if chars <= single {
        1
    } else {
        chars.div_ceil(part)
    }
}

fn now_rfc2822() -> Value {
    SystemClock
        .now()
        .format(&time::format_description::well_known::Rfc2822)
        .map(Value::String)
        .unwrap_or(Value::Null)
}

fn new_sid(shared: &Shared, state: &mut TwilioState, prefix: &str) -> String {
    state.next_sid += 1;
    let digest = Sha256::new()
        .chain_update(shared.account_sid.as_bytes())
        .chain_update(shared.instance.to_be_bytes())
        .chain_update(state.next_sid.to_be_bytes())
        .finalize();
    format!("{prefix}{}", &hex::encode(digest)[..32])
}

fn create_message(shared: &Shared, params: &Params) -> Response {
    let Some(to) = params.get("To") else {
        return params.missing(21604, "A 'To' phone number is required.");
    };
    let from = params.get("From");
    let service = params.get("MessagingServiceSid");
    if from.is_none() && service.is_none() {
        return params.missing(21603, "A 'From' phone number is required.");
    }
    let Some(body) = params.get("Body") else {
        return params.missing(21602, "Message body is required.");
    };
    if !is_e164(to) {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21211,
            &format!("The 'To' number {to} is not a valid phone number."),
        );
    }
    if let Some(from) = from.filter(|f| !is_sms_sender(f)) {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21212,
            &format!(
                "The 'From' number {from} is not a valid phone number, shortcode, or alphanumeric sender ID."
            ),
        );
    }
    if let Some(service) = service.filter(|s| !is_sid(s, "MG")) {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21701,
            &format!("The Messaging Service Sid {service} is invalid."),
        );
    }
    if body.chars().count() > MAX_BODY_CHARS {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21617,
            "The concatenated message body exceeds the 1600 character limit.",
        );
    }
    let mut state = shared.state();
    let sid = new_sid(shared, &mut state, "SM");
    let message = TwilioMessage {
        sid: sid.clone(),
        to: to.to_owned(),
        from: from.map(str::to_owned),
        messaging_service_sid: service.map(str::to_owned),
        body: body.to_owned(),
    };
    state.deliveries.push((message.to.clone(), message.body.clone()));
    state.messages.push(message);
    drop(state);
    let account = &shared.account_sid;
    let now = now_rfc2822();
    let resource = json!({
        "account_sid": account,
        "api_version": API_VERSION,
        "body": body,
        "date_created": now,
        "date_sent": null,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": from,
        "messaging_service_sid": service,
        "num_media": "0",
        "num_segments": segments(body).to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "status": if service.is_some() { "accepted" } else { "queued" },
        "subresource_uris": {
            "media": format!("/{API_VERSION}/Accounts/{account}/Messages/{sid}/Media.json"),
        },
        "to": to,
        "uri": format!("/{API_VERSION}/Accounts/{account}/Messages/{sid}.json"),
    });
    (StatusCode::CREATED, Json(resource)).into_response()
}

fn create_call(shared: &Shared, params: &Params) -> Response {
    let Some(to) = params.get("To") else {
        return params.missing(21201, "No 'To' number is specified");
    };
    let Some(from) = params.get("From") else {
        return params.missing(21213, "Caller phone number is required");
    };
    let Some(twiml) = params.get("Twiml") else {
        let message = if params.get("Url").is_some() || params.get("ApplicationSid").is_some() {
            "This fake runs inline Twiml only (no Url, no ApplicationSid)"
        } else {
            "Either Url, Twiml or ApplicationSid is required"
        };
        return params.missing(21200, message);
    };
    if !is_e164(to) {
        return twilio_error(StatusCode::BAD_REQUEST, 21211, "Invalid 'To' Phone Number");
    }
    if !is_e164(from) {
        return twilio_error(StatusCode::BAD_REQUEST, 21212, "Invalid 'From' Phone Number");
    }
    let spoken = match parse_twiml(twiml) {
        Ok(spoken) => spoken,
        Err(why) => {
            return twilio_error(
                StatusCode::BAD_REQUEST,
                12100,
                &format!("Document parse failure: {why}"),
            )
        }
    };
    let mut state = shared.state();
    let sid = new_sid(shared, &mut state, "CA");
    state.deliveries.push((to.to_owned(), spoken.clone()));
    state.calls.push(TwilioCall {
        sid: sid.clone(),
        to: to.to_owned(),
        from: from.to_owned(),
        twiml: twiml.to_owned(),
        spoken,
    });
    drop(state);
    let account = &shared.account_sid;
    let now = now_rfc2822();
    let resource = json!({
        "account_sid": account,
        "api_version": API_VERSION,
        "date_created": now,
        "date_updated": now,
        "direction": "outbound-api",
        "duration": null,
        "end_time": null,
        "from": from,
        "from_formatted": from,
        "parent_call_sid": null,
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "start_time": null,
        "status": "queued",
        "to": to,
        "to_formatted": to,
        "uri": format!("/{API_VERSION}/Accounts/{account}/Calls/{sid}.json"),
    });
    (StatusCode::CREATED, Json(resource)).into_response()
}

/// Checks that `xml` is a well-formed TwiML document (one `<Response>`
/// root, balanced tags, quoted attributes, only the five XML entities and
/// character references) and returns the text of its `<Say>` elements,
/// decoded and joined by a space.
pub(crate) fn parse_twiml(xml: &str) -> Result<String, String> {
    let mut rest = xml.trim();
    if let Some(after) = rest.strip_prefix("<?xml") {
        let end = after.find("?>").ok_or("unterminated XML declaration")?;
        rest = after[end + 2..].trim_start();
    }
    let mut open: Vec<String> = Vec::new();
    let mut spoken: Vec<String> = Vec::new();
    let mut has_root = false;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<!--") {
            let end = after.find("-->").ok_or("unterminated comment")?;
            rest = &after[end + 3..];
        } else if let Some(after) = rest.strip_prefix("</") {
            let end = after.find('>').ok_or("unterminated end tag")?;
            let name = after[..end].trim_end();
            match open.pop() {
                Some(o) if o == name => {}
                Some(o) => return Err(format!("</{name}> closes <{o}>")),
                None => return Err(format!("</{name}> has no start tag")),
            }
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix('<') {
            let end = tag_end(after).ok_or("unterminated start tag")?;
            let (inner, empty) = match after[..end].strip_suffix('/') {
                Some(inner) => (inner, true),
                None => (&after[..end], false),
            };
            let name_end = inner.find(char::is_whitespace).unwrap_or(inner.len());
            let name = &inner[..name_end];
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
            {
                return Err(format!("<{name}> is not a valid tag"));
            }
            check_attributes(&inner[name_end..])?;
            if open.is_empty() {
                if has_root {
                    return Err(format!("<{name}> after the root element"));
                }
                if name != "Response" {
                    return Err(format!("the root element is <{name}>, not <Response>"));
                }
                has_root = true;
            }
            if !empty {
                if name == "Say" {
                    spoken.push(String::new());
                }
                open.push(name.to_owned());
            }
            rest = &after[end + 1..];
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            let text = unescape(&rest[..end])?;
            if open.is_empty() {
                if !text.trim().is_empty() {
                    return Err("text outside <Response>".to_owned());
                }
            } else if open.iter().any(|o| o == "Say") {
                if let Some(say) = spoken.last_mut() {
                    say.push_str(&text);
                }
            }
            rest = &rest[end..];
        }
    }
    if let Some(o) = open.last() {
        return Err(format!("<{o}> is not closed"));
    }
    if !has_root {
        return Err("no <Response> element".to_owned());
    }
    Ok(spoken.join(" "))
}

/// The index of the `>` that ends a tag (outside quoted attribute values).
fn tag_end(tag: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in tag.char_indices() {
        match (quote, c) {
            (None, '>') => return Some(i),
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '<') | (Some(_), '<') => return None,
            _ => {}
        }
    }
    None
}

/// `name="value"` pairs separated by white space, no name twice.
fn check_attributes(mut attrs: &str) -> Result<(), String> {
    let mut seen: Vec<&str> = Vec::new();
    loop {
        let trimmed = attrs.trim_start();
        if trimmed.is_empty() {
            return Ok(());
        }
        if trimmed.len() == attrs.len() {
            return Err("attributes must be separated by white space".to_owned());
        }
        let eq = trimmed.find('=').ok_or("an attribute without a value")?;
        let name = trimmed[..eq].trim_end();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("bad attribute name {name:?}"));
        }
        if seen.contains(&name) {
            return Err(format!("attribute {name} given twice"));
        }
        seen.push(name);
        let value = trimmed[eq + 1..].trim_start();
        let quote = value
            .chars()
            .next()
            .filter(|c| matches!(c, '"' | '\''))
            .ok_or_else(|| format!("the value of {name} is not quoted"))?;
        let close = value[1..]
            .find(quote)
            .ok_or_else(|| format!("the value of {name} is not closed"))?;
        unescape(&value[1..1 + close])?;
        attrs = &value[close + 2..];
    }
}

/// Decodes the five XML entities and character references; anything else
/// after `&` is an error.
fn unescape(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after
            .find(';')
            .filter(|&i| i <= 10)
            .ok_or_else(|| format!("a bare & before {:?}", after.chars().take(10).collect::<String>()))?;
        let entity = &after[..semi];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("undefined entity &{entity};"))?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
