//! SMS and voice senders behind the [`PhoneSender`] port: a Twilio-shaped REST API
//! ([`TwilioSender`]), a signed JSON webhook ([`WebhookSender`]) and an email-to-SMS gateway
//! ([`EmailGatewaySender`]).
//!
//! All three refuse a number that is not E.164 (`+`, then 8 to 15 digits, the first not `0`) with
//! [`SendError::Rejected`] before any network I/O. The text of a message holds a code: it is never
//! logged, and neither are secrets. Logs (at `debug`) name the provider, the channel, the number
//! masked to its last two digits and the provider's answer.
use crate::smtp::MailTransport;
use async_trait::async_trait;
use gatehouse_core::ports::{
    Clock, OutgoingMail, PhoneChannel, PhoneMessage, PhoneSender, SecureRng, SendError,
};
use gatehouse_core::types::Email;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::Sha256;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// At most this much of a provider's answer is read (an error body is a few hundred bytes).
const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// At most this many characters of a provider's error message go into a [`SendError`].
const MAX_DETAIL_CHARS: usize = 300;
/// Runs of at least this many digits are read out one digit at a time in a call.
const SPELL_OUT_MIN_DIGITS: usize = 4;

/// True for an E.164 number: `+`, then 8 to 15 ASCII digits, the first not `0`.
pub fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

fn check_recipient(to: &str) -> Result<(), SendError> {
    if is_e164(to) {
        Ok(())
    } else {
        Err(SendError::Rejected(format!(
            "the number {} is not in E.164 form (+ and 8 to 15 digits)",
            masked(to)
        )))
    }
}

/// The number as logs show it: its last two digits only (`…67`).
fn masked(number: &str) -> String {
    let digits: Vec<char> = number.chars().filter(char::is_ascii_digit).collect();
    let tail: String = digits[digits.len().saturating_sub(2)..].iter().collect();
    format!("…{tail}")
}

fn channel_name(channel: PhoneChannel) -> &'static str {
    match channel {
        PhoneChannel::Sms => "sms",
        PhoneChannel::Voice => "voice",
    }
}

/// What [`SendError::Unsupported`] says for a channel ("this provider cannot …").
fn unsupported(channel: PhoneChannel) -> SendError {
    SendError::Unsupported(match channel {
        PhoneChannel::Sms => "send SMS",
        PhoneChannel::Voice => "call",
    })
}

/// One HTTP client per sender: the timeout covers the whole exchange, and redirects are not
/// followed (a provider API does not redirect a POST; one that does is misconfigured).
fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// A request that got no answer: always worth trying again later. The URL is left out (a webhook
/// URL may carry a token).
fn transport_error(provider: &str, e: reqwest::Error, timeout: Duration) -> SendError {
    let e = e.without_url();
    if e.is_timeout() {
        SendError::Unavailable(format!("{provider}: no answer within {} ms", timeout.as_millis()))
    } else if e.is_connect() {
        SendError::Unavailable(format!("{provider}: cannot connect: {e}"))
    } else {
        SendError::Unavailable(format!("{provider}: {e}"))
    }
}

/// Reads at most [`MAX_ANSWER_BYTES`] of an answer; an answer cut short reads as what arrived.
async fn read_limited(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    body
}

/// A provider's words made safe for an error message: control characters dropped, the recipient's
/// number masked, anything that equals a secret removed, and the length capped.
fn sanitize(detail: &str, number: &str, secret: Option<&str>) -> String {
    let mut s: String = detail
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if let Some(secret) = secret.filter(|s| !s.is_empty()) {
        s = s.replace(secret, "[redacted]");
    }
    if !number.is_empty() {
        s = s.replace(number, &masked(number));
        if let Some(bare) = number.strip_prefix('+').filter(|b| !b.is_empty()) {
            s = s.replace(bare, &masked(number));
        }
    }
    let s = s.trim();
    if s.chars().count() > MAX_DETAIL_CHARS {
        let cut: String = s.chars().take(MAX_DETAIL_CHARS).collect();
        format!("{cut}…")
    } else {
        s.to_owned()
    }
}

/// Escapes text for an XML text node or attribute; characters XML 1.0 cannot carry become spaces.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() || matches!(c, '\u{FFFE}' | '\u{FFFF}') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Separates the digits of every run of at least [`SPELL_OUT_MIN_DIGITS`] digits by `", "`, so a
/// text-to-speech voice reads a code one digit at a time, with a short pause between digits
/// ("123456" → "1, 2, 3, 4, 5, 6"). Shorter numbers ("15 minutes") are left as they are.
fn spell_out_digits(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= SPELL_OUT_MIN_DIGITS {
            for (i, d) in run.chars().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push(d);
            }
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// The TwiML of a call that reads `text` out twice, long codes digit by digit.
fn twiml_say(text: &str) -> String {
    let mut spoken = spell_out_digits(text.trim());
    // A full stop at the end makes the voice pause before it repeats the text.
    if !spoken.ends_with(['.', '!', '?']) {
        spoken.push('.');
    }
    format!(
        "<Response><Say loop=\"2\">{}</Say></Response>",
        xml_escape(&spoken)
    )
}

// ---------------------------------------------------------------------------------------------
// Twilio
// ---------------------------------------------------------------------------------------------

/// Where and as whom [`TwilioSender`] talks to a Twilio-shaped REST API.
///
/// `Debug` shows no secret (the token prints as `[REDACTED]`).
#[derive(Clone, Debug)]
pub struct TwilioSettings {
    /// The API's root, [`TwilioSettings::DEFAULT_BASE_URL`] for Twilio itself; a path is kept
    /// (`https://proxy.example/twilio` posts to `https://proxy.example/twilio/2010-04-01/…`).
    pub base_url: Url,
    /// `AC…`: the account, and the user name of HTTP Basic authentication.
    pub account_sid: String,
    /// The password of HTTP Basic authentication.
    pub auth_token: SecretString,
    /// The sender: an E.164 number of the account, or an alphanumeric sender ID (SMS only).
    /// Calls need an E.164 number here.
    pub from: Option<String>,
    /// `MG…`: send SMS through a Messaging Service instead of `from` (used when both are set).
    pub messaging_service_sid: Option<String>,
    /// For the whole request, connection included.
    pub timeout: Duration,
}

impl TwilioSettings {
    pub const DEFAULT_BASE_URL: &'static str = "https://api.twilio.com";

    /// `https://api.twilio.com`.
    pub fn default_base_url() -> Url {
        #[allow(clippy::expect_used)]
        Url::parse(Self::DEFAULT_BASE_URL).expect("the default Twilio URL parses (tested)")
    }

    /// Settings for Twilio itself with a 10 s timeout; set `from` or `messaging_service_sid`.
    pub fn new(account_sid: impl Into<String>, auth_token: SecretString) -> Self {
        Self {
            base_url: Self::default_base_url(),
            account_sid: account_sid.into(),
            auth_token,
            from: None,
            messaging_service_sid: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Sends SMS and places calls through Twilio's REST API (2010-04-01), or anything that speaks it.
///
/// * SMS: `POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json` with the form fields
///   `To`, `Body` and `MessagingServiceSid` (when configured) or else `From`.
/// * Voice: `POST {base_url}/2010-04-01/Accounts/{AccountSid}/Calls.json` with `To`, `From` and
///   `Twiml` = `<Response><Say loop="2">…</Say></Response>`: the text, XML-escaped, read twice,
///   every run of four or more digits read one digit at a time. Calls need `from` to be an E.164
///   number: without one the sender offers SMS only.
///
/// Both authenticate with HTTP Basic (`AccountSid:AuthToken`). A 2xx answer (Twilio says
/// `201 Created`) is success; 408, 429 and 5xx, a timeout or a network failure are
/// [`SendError::Unavailable`]; any other answer is [`SendError::Rejected`] with Twilio's error
/// `code` and `message` when it sent them (the number masked, the token never included).
#[derive(Debug)]
pub struct TwilioSender {
    client: reqwest::Client,
    settings: TwilioSettings,
    messages_url: Url,
    calls_url: Url,
    channels: Vec<PhoneChannel>,
}

/// The form parameters of one request to Twilio.
type FormFields = Vec<(&'static str, String)>;

/// What Twilio's error answers carry (`{"code": 21211, "message": "…", "more_info": …, "status": 400}`).
#[derive(serde::Deserialize)]
struct TwilioError {
    code: Option<u64>,
    message: Option<String>,
}

impl TwilioSender {
    /// Checks the settings and builds the HTTP client. The error names the setting at fault.
    pub fn new(settings: TwilioSettings) -> Result<Self, String> {
        if !matches!(settings.base_url.scheme(), "https" | "http") || settings.base_url.cannot_be_a_base() {
            return Err(format!(
                "twilio.base_url: {} is not an http(s) URL",
                settings.base_url
            ));
        }
        let sid = settings.account_sid.trim();
        if sid.is_empty() || !sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("twilio.account_sid: expected letters and digits (AC…)".to_owned());
        }
        if settings.auth_token.expose_secret().is_empty() {
            return Err("twilio.auth_token is empty".to_owned());
        }
        let from = settings.from.as_deref().map(str::trim).filter(|f| !f.is_empty());
        let service = settings
            .messaging_service_sid
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        if from.is_none() && service.is_none() {
            return Err("twilio: set `from` or `messaging_service_sid`".to_owned());
        }
        if let Some(service) = service {
            if !service.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err("twilio.messaging_service_sid: expected letters and digits (MG…)".to_owned());
            }
        }
        // A call needs a number to call from (an alphanumeric sender ID can only send SMS).
        let channels = if from.is_some_and(is_e164) {
            vec![PhoneChannel::Sms, PhoneChannel::Voice]
        } else {
            vec![PhoneChannel::Sms]
        };
        let endpoint = |resource: &str| -> Result<Url, String> {
            let mut url = settings.base_url.clone();
            url.set_query(None);
            url.set_fragment(None);
            url.path_segments_mut()
                .map_err(|()| "twilio.base_url cannot carry a path".to_owned())?
                .pop_if_empty()
                .extend(["2010-04-01", "Accounts", sid, resource]);
            Ok(url)
        };
        let messages_url = endpoint("Messages.json")?;
        let calls_url = endpoint("Calls.json")?;
        let client = http_client(settings.timeout)?;
        let settings = TwilioSettings {
            account_sid: sid.to_owned(),
            from: from.map(str::to_owned),
            messaging_service_sid: service.map(str::to_owned),
            ..settings
        };
        Ok(Self {
            client,
            settings,
            messages_url,
            calls_url,
            channels,
        })
    }

    fn form<'a>(&'a self, message: &'a PhoneMessage) -> Result<(&'a Url, FormFields), SendError> {
        let to = ("To", message.to.clone());
        match message.channel {
            PhoneChannel::Sms => {
                let sender = match (&self.settings.messaging_service_sid, &self.settings.from) {
                    (Some(service), _) => ("MessagingServiceSid", service.clone()),
                    (None, Some(from)) => ("From", from.clone()),
                    (None, None) => return Err(unsupported(PhoneChannel::Sms)),
                };
                Ok((
                    &self.messages_url,
                    vec![to, sender, ("Body", message.text.clone())],
                ))
            }
            PhoneChannel::Voice => {
                let Some(from) = self.settings.from.as_ref().filter(|f| is_e164(f)) else {
                    return Err(unsupported(PhoneChannel::Voice));
                };
                Ok((
                    &self.calls_url,
                    vec![to, ("From", from.clone()), ("Twiml", twiml_say(&message.text))],
                ))
            }
        }
    }

    async fn refusal(&self, response: reqwest::Response, to: &str) -> SendError {
        let status = response.status();
        let body = read_limited(response).await;
        let token = Some(self.settings.auth_token.expose_secret());
        let detail = match serde_json::from_slice::<TwilioError>(&body) {
            Ok(TwilioError {
                code: Some(code),
                message,
            }) => format!(
                "Twilio error {code}: {} (HTTP {})",
                sanitize(message.as_deref().unwrap_or("no message"), to, token),
                status.as_u16()
            ),
            Ok(TwilioError {
                code: None,
                message: Some(message),
            }) => format!("{} (HTTP {})", sanitize(&message, to, token), status.as_u16()),
            _ => format!("HTTP {}", status.as_u16()),
        };
        if status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
        {
            SendError::Unavailable(format!("twilio: {detail}"))
        } else if status.is_redirection() {
            SendError::Rejected(format!("twilio: unexpected redirect ({detail}); check base_url"))
        } else {
            SendError::Rejected(format!("twilio: {detail}"))
        }
    }
}

#[async_trait]
impl PhoneSender for TwilioSender {
    fn name(&self) -> &str {
        "twilio"
    }

    fn channels(&self) -> &[PhoneChannel] {
        &self.channels
    }

    async fn send(&self, message: &PhoneMessage) -> Result<(), SendError> {
        check_recipient(&message.to)?;
        let (url, form) = self.form(message)?;
        let channel = channel_name(message.channel);
        let result = self
            .client
            .post(url.clone())
            .basic_auth(
                &self.settings.account_sid,
                Some(self.settings.auth_token.expose_secret()),
            )
            .form(&form)
            .send()
            .await;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                let error = transport_error("twilio", e, self.settings.timeout);
                tracing::debug!(provider = "twilio", channel, to = %masked(&message.to), %error,
                    "phone message not sent");
                return Err(error);
            }
        };
        let status = response.status();
        if status.is_success() {
            tracing::debug!(provider = "twilio", channel, to = %masked(&message.to),
                status = status.as_u16(), "phone message accepted");
            return Ok(());
        }
        let error = self.refusal(response, &message.to).await;
        tracing::debug!(provider = "twilio", channel, to = %masked(&message.to),
            status = status.as_u16(), %error, "phone message refused");
        Err(error)
    }
}

// ---------------------------------------------------------------------------------------------
// Signed webhook
// ---------------------------------------------------------------------------------------------

/// Where [`WebhookSender`] posts, and the secret it signs with.
#[derive(Clone)]
pub struct WebhookSettings {
    pub url: Url,
    /// The HMAC-SHA256 key shared with the receiver.
    pub secret: SecretString,
    /// What the receiver can deliver.
    pub channels: Vec<PhoneChannel>,
    /// For the whole request, connection included.
    pub timeout: Duration,
}

/// Shows the scheme, host and port of the URL only: a webhook URL may carry a token.
impl fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = self.url.origin().ascii_serialization();
        f.debug_struct("WebhookSettings")
            .field("url", &origin)
            .field("channels", &self.channels)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Hands each message to your own service as a signed JSON `POST`.
///
/// The request body is one JSON object:
///
/// ```json
/// {"to":"+4915112345678","channel":"sms","text":"Your code is 123456","id":"3f9c…","timestamp":1767225600}
/// ```
///
/// * `to`: the number, E.164; `channel`: `"sms"` or `"voice"` (the text is to be read out);
/// * `id`: 32 lower-case hex digits, new for every request (a retry of the same message gets a
///   new one);
/// * `timestamp`: Unix seconds when the request was made.
///
/// Two headers authenticate it:
///
/// * `X-Gatehouse-Timestamp: <the same Unix seconds>`
/// * `X-Gatehouse-Signature: sha256=<hex>`, the lower-case hex HMAC-SHA256, keyed with the shared
///   secret (its UTF-8 bytes), of the ASCII timestamp, a `.`, and the request body exactly as
///   received: `HMAC(secret, "<timestamp>.<body>")`.
///
/// A receiver should: read the raw body before parsing it; recompute the HMAC and compare it with
/// the header **in constant time**; refuse a timestamp more than five minutes from its own clock
/// (and one that differs from the body's `timestamp`); then parse the JSON. It answers 2xx when it
/// took the message; 401 or 403 for a bad signature. Any 2xx is success; 408, 429, 5xx, a timeout
/// or a network failure are [`SendError::Unavailable`] (try later); anything else is
/// [`SendError::Rejected`]. The receiver's answer body is not read.
pub struct WebhookSender {
    client: reqwest::Client,
    settings: WebhookSettings,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRng>,
}

impl fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSender")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct WebhookBody<'a> {
    to: &'a str,
    channel: &'static str,
    text: &'a str,
    id: String,
    timestamp: i64,
}

/// `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, as [`WebhookSender`] signs.
pub fn webhook_signature(secret: &SecretString, timestamp: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length: this branch does not run.
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl WebhookSender {
    /// Checks the settings and builds the HTTP client. `clock` gives the timestamps, `rng` the
    /// request ids.
    pub fn new(
        settings: WebhookSettings,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRng>,
    ) -> Result<Self, String> {
        if !matches!(settings.url.scheme(), "https" | "http") {
            return Err("webhook.url: expected an http(s) URL".to_owned());
        }
        if settings.secret.expose_secret().len() < 16 {
            return Err("webhook.secret: use at least 16 characters".to_owned());
        }
        if settings.channels.is_empty() {
            return Err("webhook.channels: name at least one of sms, voice".to_owned());
        }
        let mut settings = settings;
        let mut channels = Vec::with_capacity(settings.channels.len());
        for c in settings.channels.drain(..) {
            if !channels.contains(&c) {
                channels.push(c);
            }
        }
        settings.channels = channels;
        let client = http_client(settings.timeout)?;
        Ok(Self {
            client,
            settings,
            clock,
            rng,
        })
    }

    fn new_id(&self) -> String {
        let mut id = [0u8; 16];
        self.rng.fill(&mut id);
        hex::encode(id)
    }
}

#[async_trait]
impl PhoneSender for WebhookSender {
    fn name(&self) -> &str {
        "webhook"
    }

    fn channels(&self) -> &[PhoneChannel] {
        &self.settings.channels
    }

    async fn send(&self, message: &PhoneMessage) -> Result<(), SendError> {
        check_recipient(&message.to)?;
        if !self.settings.channels.contains(&message.channel) {
            return Err(unsupported(message.channel));
        }
        let channel = channel_name(message.channel);
        let timestamp = self.clock.now().unix_timestamp();
        let body = serde_json::to_vec(&WebhookBody {
            to: &message.to,
            channel,
            text: &message.text,
            id: self.new_id(),
            timestamp,
        })
        .map_err(|e| SendError::Unavailable(format!("webhook: encoding the request: {e}")))?;
        let signature = webhook_signature(&self.settings.secret, timestamp, &body);
        let result = self
            .client
            .post(self.settings.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Gatehouse-Timestamp", timestamp.to_string())
            .header("X-Gatehouse-Signature", signature)
            .body(body)
            .send()
            .await;
        let status = match result {
            Ok(r) => r.status(),
            Err(e) => {
                let error = transport_error("webhook", e, self.settings.timeout);
                tracing::debug!(provider = "webhook", channel, to = %masked(&message.to), %error,
                    "phone message not sent");
                return Err(error);
            }
        };
        tracing::debug!(provider = "webhook", channel, to = %masked(&message.to),
            status = status.as_u16(), "phone message handed to the webhook");
        let code = status.as_u16();
        match code {
            200..=299 => Ok(()),
            401 | 403 => Err(SendError::Rejected(format!(
                "webhook: the receiver refused the signature (HTTP {code}); check the shared secret \
                 and both clocks"
            ))),
            408 | 429 | 500..=599 => Err(SendError::Unavailable(format!("webhook: HTTP {code}"))),
            300..=399 => Err(SendError::Rejected(format!(
                "webhook: unexpected redirect (HTTP {code}); check the URL"
            ))),
            _ => Err(SendError::Rejected(format!(
                "webhook: the receiver refused the message (HTTP {code})"
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Email-to-SMS gateway
// ---------------------------------------------------------------------------------------------

/// How [`EmailGatewaySender`] turns a number into a mail address.
#[derive(Clone, Debug)]
pub struct EmailGatewaySettings {
    /// The gateway's address for a number: `{number}` stands for the E.164 digits without `+`,
    /// `{e164}` for the number with it; e.g. `{number}@sms.example.net`.
    pub address: String,
    /// The mail's subject; many gateways put it in front of the SMS text, so keep it short or empty.
    pub subject: String,
}

/// Sends SMS as plain mails to an email-to-SMS gateway, through a [`MailTransport`]. It cannot
/// call: [`PhoneChannel::Voice`] gives [`SendError::Unsupported`]`("call")`. A mail that cannot
/// be delivered is [`SendError::Unavailable`].
pub struct EmailGatewaySender {
    settings: EmailGatewaySettings,
    transport: Arc<dyn MailTransport>,
}

impl fmt::Debug for EmailGatewaySender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailGatewaySender")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

const SMS_ONLY: &[PhoneChannel] = &[PhoneChannel::Sms];

impl EmailGatewaySender {
    /// Checks that the address template holds `{number}` or `{e164}` and makes a mail address.
    pub fn new(settings: EmailGatewaySettings, transport: Arc<dyn MailTransport>) -> Result<Self, String> {
        let template = settings.address.trim();
        if !template.contains("{number}") && !template.contains("{e164}") {
            return Err("email_gateway.address: put {number} or {e164} where the number goes".to_owned());
        }
        let sample = fill_template(template, "+15550100");
        Email::parse(&sample)
            .map_err(|e| format!("email_gateway.address: {sample} is not an address: {e}"))?;
        if settings.subject.contains(['\r', '\n']) {
            return Err("email_gateway.subject: one line only".to_owned());
        }
        let settings = EmailGatewaySettings {
            address: template.to_owned(),
            ..settings
        };
        Ok(Self { settings, transport })
    }

    /// The gateway address of `number` (an E.164 number).
    pub fn address_for(&self, number: &str) -> Result<Email, SendError> {
        check_recipient(number)?;
        let address = fill_template(&self.settings.address, number);
        Email::parse(&address).map_err(|e| {
            SendError::Rejected(format!("email gateway: no address for {}: {e}", masked(number)))
        })
    }
}

fn fill_template(template: &str, e164: &str) -> String {
    template
        .replace("{number}", e164.trim_start_matches('+'))
        .replace("{e164}", e164)
}

#[async_trait]
impl PhoneSender for EmailGatewaySender {
    fn name(&self) -> &str {
        "email-gateway"
    }

    fn channels(&self) -> &[PhoneChannel] {
        SMS_ONLY
    }

    async fn send(&self, message: &PhoneMessage) -> Result<(), SendError> {
        check_recipient(&message.to)?;
        if message.channel != PhoneChannel::Sms {
            return Err(unsupported(message.channel));
        }
        let mail = OutgoingMail {
            to: self.address_for(&message.to)?,
            subject: self.settings.subject.clone(),
            body: message.text.clone(),
        };
        match self.transport.send(&mail).await {
            Ok(()) => {
                tracing::debug!(provider = "email-gateway", channel = "sms", to = %masked(&message.to),
                    status = "sent", "phone message handed to the mail gateway");
                Ok(())
            }
            Err(e) => {
                let error =
                    SendError::Unavailable(format!("email gateway: {}", sanitize(&e, &message.to, None)));
                tracing::debug!(provider = "email-gateway", channel = "sms", to = %masked(&message.to),
                    %error, "phone message not sent");
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164() {
        for good in ["+4915112345678", "+12025550123", "+12345678", "+123456789012345"] {
            assert!(is_e164(good), "{good}");
        }
        for bad in [
            "",
            "+",
            "4915112345678",
            "+1234567",
            "+1234567890123456",
            "+0123456789",
            "+49 151 1234567",
            "+49151-1234567",
            "+४९१५११२३४५६७८",
            " +4915112345678",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn masks_to_the_last_two_digits() {
        assert_eq!(masked("+4915112345678"), "…78");
        assert_eq!(masked("+7"), "…7");
        assert_eq!(masked("abc"), "…");
    }

    #[test]
    fn spells_out_long_numbers_only() {
        assert_eq!(
            spell_out_digits("Code 123456, valid 15 minutes"),
            "Code 1, 2, 3, 4, 5, 6, valid 15 minutes"
        );
        assert_eq!(spell_out_digits("1234"), "1, 2, 3, 4");
        assert_eq!(spell_out_digits("123"), "123");
    }

    #[test]
    fn twiml_escapes_and_repeats() {
        assert_eq!(
            twiml_say("Code <1234> & \"more\" 'x'\u{7}"),
            "<Response><Say loop=\"2\">Code &lt;1, 2, 3, 4&gt; &amp; &quot;more&quot; &apos;x&apos; .</Say>\
             </Response>"
        );
        assert_eq!(
            twiml_say("Your code is 987654."),
            "<Response><Say loop=\"2\">Your code is 9, 8, 7, 6, 5, 4.</Say></Response>"
        );
    }

    #[test]
    fn sanitize_masks_the_number_and_removes_secrets() {
        let s = sanitize(
            "The 'To' number +4915112345678 (4915112345678) is not valid; token s3cr3t\n",
            "+4915112345678",
            Some("s3cr3t"),
        );
        assert_eq!(s, "The 'To' number …78 (…78) is not valid; token [redacted]");
        let long = "x".repeat(1000);
        assert_eq!(sanitize(&long, "", None).chars().count(), MAX_DETAIL_CHARS + 1);
    }

    #[test]
    fn default_base_url_parses() {
        assert_eq!(
            TwilioSettings::default_base_url().as_str(),
            "https://api.twilio.com/"
        );
    }

    #[test]
    fn endpoints_keep_a_base_path() {
        let mut s = TwilioSettings::new("AC123", SecretString::from("token"));
        s.from = Some("+15550100".into());
        s.base_url = Url::parse("http://127.0.0.1:9/prefix/").unwrap();
        let t = TwilioSender::new(s).unwrap();
        assert_eq!(
            t.messages_url.as_str(),
            "http://127.0.0.1:9/prefix/2010-04-01/Accounts/AC123/Messages.json"
        );
        assert_eq!(
            t.calls_url.as_str(),
            "http://127.0.0.1:9/prefix/2010-04-01/Accounts/AC123/Calls.json"
        );
        assert_eq!(t.channels(), [PhoneChannel::Sms, PhoneChannel::Voice]);
    }

    #[test]
    fn twilio_settings_are_checked() {
        let base = || {
            let mut s = TwilioSettings::new("AC123", SecretString::from("s3cr3t-tok"));
            s.from = Some("+15550100".into());
            s
        };
        assert!(TwilioSender::new(TwilioSettings { from: None, ..base() }).is_err());
        assert!(TwilioSender::new(TwilioSettings {
            account_sid: "AC1/../x".into(),
            ..base()
        })
        .is_err());
        assert!(TwilioSender::new(TwilioSettings {
            auth_token: SecretString::from(""),
            ..base()
        })
        .is_err());
        let sms_only = TwilioSender::new(TwilioSettings {
            from: None,
            messaging_service_sid: Some("MG0123".into()),
            ..base()
        })
        .unwrap();
        assert_eq!(sms_only.channels(), [PhoneChannel::Sms]);
        let alphanumeric = TwilioSender::new(TwilioSettings {
            from: Some("Gatehouse".into()),
            ..base()
        })
        .unwrap();
        assert_eq!(alphanumeric.channels(), [PhoneChannel::Sms]);
        let debug = format!("{:?}", base());
        assert!(!debug.contains("s3cr3t-tok"), "{debug}");
    }

    #[test]
    fn webhook_signature_is_hmac_of_timestamp_dot_body() {
        // RFC 4231-independent check: recompute with the hmac crate directly.
        let secret = SecretString::from("0123456789abcdef");
        let sig = webhook_signature(&secret, 1_700_000_000, br#"{"a":1}"#);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"0123456789abcdef").unwrap();
        mac.update(br#"1700000000.{"a":1}"#);
        assert_eq!(
            sig,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
    }

    #[test]
    fn webhook_settings_debug_hides_the_path_and_secret() {
        let s = WebhookSettings {
            url: Url::parse("https://hooks.example.net/sms/t0k3n?key=abc").unwrap(),
            secret: SecretString::from("0123456789abcdef"),
            channels: vec![PhoneChannel::Sms],
            timeout: Duration::from_secs(5),
        };
        let debug = format!("{s:?}");
        assert!(debug.contains("https://hooks.example.net"), "{debug}");
        assert!(
            !debug.contains("t0k3n") && !debug.contains("abc") && !debug.contains("0123"),
            "{debug}"
        );
    }

    #[test]
    fn gateway_templates() {
        struct Nowhere;
        #[async_trait]
        impl MailTransport for Nowhere {
            async fn send(&self, _: &OutgoingMail) -> Result<(), String> {
                Err("down".into())
            }
        }
        let gw = |address: &str| {
            EmailGatewaySender::new(
                EmailGatewaySettings {
                    address: address.into(),
                    subject: String::new(),
                },
                Arc::new(Nowhere),
            )
        };
        let g = gw("{number}@sms.example.net").unwrap();
        assert_eq!(
            g.address_for("+4915112345678").unwrap().as_str(),
            "4915112345678@sms.example.net"
        );
        let g = gw("{e164}@SMS.Example.net").unwrap();
        assert_eq!(
            g.address_for("+4915112345678").unwrap().as_str(),
            "+4915112345678@sms.example.net"
        );
        assert!(g.address_for("015112345678").is_err());
        assert!(gw("sms@example.net").is_err());
        assert!(gw("{number}").is_err());
    }
}
