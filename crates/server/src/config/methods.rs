//! `[[policy]]`, `[phone]`, `[questions]`, `[import]` and `[admin]`: who may use which methods, and
//! the providers and tokens behind them.
use anyhow::{anyhow, bail, Context};
use gatehouse_core::policy::{Policies, Policy, Scope, SelfService};
use gatehouse_core::ports::PhoneChannel;
use gatehouse_core::pow::Difficulty;
use gatehouse_core::questions::QuestionSet;
use gatehouse_core::service::CaptchaSettings;
use gatehouse_core::throttle::{Limit, ThrottleSettings};
use gatehouse_core::types::MethodKind;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use time::Duration;

/// One `[[policy]]` block. Unset keys take the `[flow]` defaults.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySection {
    pub name: String,
    /// "all", "groups" or "none".
    pub scope: Option<String>,
    pub groups: Vec<String>,
    pub privileged: bool,
    pub flows: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub methods_required: Option<u8>,
    pub register_required: Option<u8>,
    pub registration_required: Option<bool>,
    pub reconfirm_days: Option<u16>,
    pub code_digits: Option<u8>,
    pub code_lifetime_minutes: Option<i64>,
    pub code_attempts: Option<u32>,
    pub questions_registered: Option<u8>,
    pub questions_asked: Option<u8>,
}

/// The defaults every policy starts from (the `[flow]` section).
pub struct PolicyDefaults {
    pub methods: Vec<String>,
    pub methods_required: u8,
    pub register_required: Option<u8>,
    pub registration_required: bool,
    pub reconfirm_days: u16,
    pub code_digits: u8,
    pub code_lifetime_minutes: i64,
    pub code_attempts: u32,
    pub questions_registered: u8,
    pub questions_asked: u8,
}

fn range(key: &str, v: i64, lo: i64, hi: i64) -> anyhow::Result<()> {
    if v < lo || v > hi {
        bail!("{key}: {v} is out of range; use a value from {lo} to {hi}");
    }
    Ok(())
}

fn kinds(key: &str, raw: &[String]) -> anyhow::Result<Vec<MethodKind>> {
    let mut out = vec![];
    for r in raw {
        let k = MethodKind::parse(r).map_err(|e| anyhow!("{key}: \"{r}\": {}", e.message))?;
        if !out.contains(&k) {
            out.push(k);
        }
    }
    if out.is_empty() {
        bail!("{key}: list at least one method (email, sms, voice, totp, questions)");
    }
    Ok(out)
}

fn build(key: &str, p: &PolicySection, d: &PolicyDefaults) -> anyhow::Result<Policy> {
    let scope = match p.scope.as_deref() {
        None if p.groups.is_empty() => Scope::All,
        None | Some("groups") => Scope::Groups,
        Some("all") => Scope::All,
        Some("none") => Scope::None,
        Some(other) => bail!("{key}.scope: \"{other}\" is not a scope; use \"all\", \"groups\" or \"none\""),
    };
    if scope == Scope::Groups && p.groups.is_empty() {
        bail!("{key}.groups: scope \"groups\" needs at least one group name");
    }
    let flows = match &p.flows {
        None => SelfService::ALL.to_vec(),
        Some(list) => list
            .iter()
            .map(|f| {
                SelfService::parse(f)
                    .ok_or_else(|| anyhow!("{key}.flows: \"{f}\" is not a flow; use reset, unlock, change"))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let methods = kinds(
        &format!("{key}.methods"),
        p.methods.as_ref().unwrap_or(&d.methods),
    )?;
    let required = p.methods_required.unwrap_or(d.methods_required);
    range(&format!("{key}.methods_required"), i64::from(required), 1, 3)?;
    let register = p.register_required.or(d.register_required).unwrap_or(required);
    range(&format!("{key}.register_required"), i64::from(register), 1, 5)?;
    if register < required {
        bail!("{key}.register_required: {register} is less than methods_required ({required}); users could never reset");
    }
    let reconfirm = p.reconfirm_days.unwrap_or(d.reconfirm_days);
    range(&format!("{key}.reconfirm_days"), i64::from(reconfirm), 0, 730)?;
    let digits = p.code_digits.unwrap_or(d.code_digits);
    range(&format!("{key}.code_digits"), i64::from(digits), 6, 10)?;
    let lifetime = p.code_lifetime_minutes.unwrap_or(d.code_lifetime_minutes);
    range(&format!("{key}.code_lifetime_minutes"), lifetime, 1, 60)?;
    let attempts = p.code_attempts.unwrap_or(d.code_attempts);
    let attempts_key = if key == "flow" {
        "flow.max_code_attempts".to_owned()
    } else {
        format!("{key}.code_attempts")
    };
    range(&attempts_key, i64::from(attempts), 1, 20)?;
    let registered = p.questions_registered.unwrap_or(d.questions_registered);
    range(
        &format!("{key}.questions_registered"),
        i64::from(registered),
        3,
        5,
    )?;
    let asked = p.questions_asked.unwrap_or(d.questions_asked);
    range(
        &format!("{key}.questions_asked"),
        i64::from(asked),
        1,
        i64::from(registered),
    )?;
    Ok(Policy {
        name: if p.name.trim().is_empty() {
            key.to_owned()
        } else {
            p.name.trim().to_owned()
        },
        scope,
        groups: p.groups.clone(),
        privileged: p.privileged,
        flows,
        methods,
        reset_required: required,
        register_required: register,
        registration_required: p.registration_required.unwrap_or(d.registration_required),
        reconfirm_days: reconfirm,
        code_digits: digits,
        code_lifetime: Duration::minutes(lifetime),
        code_attempts: attempts,
        questions_registered: registered,
        questions_asked: asked,
    })
}

/// The default policy from `[flow]`, then each `[[policy]]` in order.
pub fn policies(
    list: &[PolicySection],
    d: &PolicyDefaults,
    privileged_groups: &[String],
) -> anyhow::Result<Policies> {
    let mut default = build("flow", &PolicySection::default(), d)?;
    default.name = "default".into();
    let mut out = vec![];
    for (i, p) in list.iter().enumerate() {
        let key = format!("policy[{i}]");
        let built = build(&key, p, d)?;
        if out.iter().any(|o: &Policy| o.name == built.name) {
            bail!(
                "{key}.name: \"{}\" is used twice; give each policy its own name",
                built.name
            );
        }
        out.push(built);
    }
    Ok(Policies {
        list: out,
        default,
        privileged_groups: privileged_groups.to_vec(),
    })
}

/// `[phone]`: the SMS / voice provider.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhoneSection {
    /// "none", "twilio", "webhook" or "email_gateway".
    pub provider: String,
    /// ISO 3166 region for numbers typed without a country code ("FR", "US", "GB"…).
    pub default_region: String,
    pub timeout_secs: u64,
    pub twilio_base_url: String,
    pub twilio_account_sid: String,
    pub twilio_auth_token: Option<String>,
    pub twilio_auth_token_file: Option<PathBuf>,
    pub twilio_from: Option<String>,
    pub twilio_messaging_service_sid: Option<String>,
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<String>,
    pub webhook_secret_file: Option<PathBuf>,
    pub webhook_channels: Vec<String>,
    /// Email-to-SMS: the address a text goes to; `{number}` is the E.164 number without "+".
    pub email_gateway_address: Option<String>,
}

impl Default for PhoneSection {
    fn default() -> Self {
        Self {
            provider: "none".into(),
            default_region: "US".into(),
            timeout_secs: 10,
            twilio_base_url: "https://api.twilio.com".into(),
            twilio_account_sid: String::new(),
            twilio_auth_token: None,
            twilio_auth_token_file: None,
            twilio_from: None,
            twilio_messaging_service_sid: None,
            webhook_url: None,
            webhook_secret: None,
            webhook_secret_file: None,
            webhook_channels: vec!["sms".into()],
            email_gateway_address: None,
        }
    }
}

impl std::fmt::Debug for PhoneSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneSection")
            .field("provider", &self.provider)
            .field("default_region", &self.default_region)
            .finish_non_exhaustive()
    }
}

/// A secret given inline or in a file (not both).
pub fn secret(key: &str, inline: &Option<String>, file: &Option<PathBuf>) -> anyhow::Result<Option<String>> {
    match (inline, file) {
        (Some(_), Some(_)) => bail!("{key}: set {key} or {key}_file, not both"),
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(f)) => Ok(Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("{key}_file: cannot read {}", f.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        )),
        (None, None) => Ok(None),
    }
}

/// The checked phone provider choice (the settings' Debug hides tokens and secrets).
#[derive(Clone, Debug)]
pub enum PhoneProvider {
    None,
    Twilio(gatehouse_notify::TwilioSettings),
    Webhook(gatehouse_notify::WebhookSettings),
    EmailGateway { address: String },
}

pub fn phone_provider(p: &PhoneSection) -> anyhow::Result<PhoneProvider> {
    if !gatehouse_core::phone::valid_region(&p.default_region) {
        bail!(
            "phone.default_region: \"{}\" is not a region code; use a two-letter ISO 3166 code like \"US\", \"GB\" or \"FR\"",
            p.default_region
        );
    }
    let timeout = std::time::Duration::from_secs(p.timeout_secs.clamp(1, 120));
    Ok(match p.provider.as_str() {
        "none" => PhoneProvider::None,
        "twilio" => {
            let base_url = url::Url::parse(&p.twilio_base_url)
                .map_err(|e| anyhow!("phone.twilio_base_url: {e}; write it like https://api.twilio.com"))?;
            if p.twilio_account_sid.trim().is_empty() {
                bail!("phone.twilio_account_sid: required with provider = \"twilio\" (it starts with AC)");
            }
            let token = secret("phone.twilio_auth_token", &p.twilio_auth_token, &p.twilio_auth_token_file)?
                .ok_or_else(|| anyhow!("phone.twilio_auth_token: required with provider = \"twilio\" (or twilio_auth_token_file)"))?;
            if p.twilio_from.is_none() && p.twilio_messaging_service_sid.is_none() {
                bail!("phone.twilio_from: set the sending number (E.164) or twilio_messaging_service_sid");
            }
            let settings = gatehouse_notify::TwilioSettings {
                base_url,
                account_sid: p.twilio_account_sid.trim().to_owned(),
                auth_token: token.into(),
                from: p.twilio_from.clone(),
                messaging_service_sid: p.twilio_messaging_service_sid.clone(),
                timeout,
            };
            // The sender checks what it needs (SID shape, a sender); its words get our key names.
            gatehouse_notify::TwilioSender::new(settings.clone())
                .map_err(|e| anyhow!("phone (twilio_account_sid / twilio_from / twilio_auth_token): {e}"))?;
            PhoneProvider::Twilio(settings)
        }
        "webhook" => {
            let raw = p
                .webhook_url
                .as_deref()
                .ok_or_else(|| anyhow!("phone.webhook_url: required with provider = \"webhook\""))?;
            let url = url::Url::parse(raw).map_err(|e| anyhow!("phone.webhook_url: {e}"))?;
            let key = secret("phone.webhook_secret", &p.webhook_secret, &p.webhook_secret_file)?
                .ok_or_else(|| anyhow!("phone.webhook_secret: required with provider = \"webhook\" (the HMAC key)"))?;
            if key.len() < 16 {
                bail!("phone.webhook_secret: use at least 16 characters");
            }
            let mut channels = vec![];
            for c in &p.webhook_channels {
                channels.push(match c.as_str() {
                    "sms" => PhoneChannel::Sms,
                    "voice" => PhoneChannel::Voice,
                    other => bail!("phone.webhook_channels: \"{other}\" is not a channel; use \"sms\" and/or \"voice\""),
                });
            }
            if channels.is_empty() {
                bail!("phone.webhook_channels: list at least one of \"sms\", \"voice\"");
            }
            PhoneProvider::Webhook(gatehouse_notify::WebhookSettings {
                url,
                secret: key.into(),
                channels,
                timeout,
            })
        }
        "email_gateway" => {
            let address = p.email_gateway_address.clone().ok_or_else(|| {
                anyhow!("phone.email_gateway_address: required with provider = \"email_gateway\", like \"{{number}}@sms.example.net\"")
            })?;
            if !address.contains("{number}") && !address.contains("{e164}") {
                bail!("phone.email_gateway_address: put {{number}} where the phone number goes, like \"{{number}}@sms.example.net\"");
            }
            let settings = gatehouse_notify::EmailGatewaySettings {
                address: address.clone(),
                subject: String::new(),
            };
            gatehouse_notify::EmailGatewaySender::new(settings, std::sync::Arc::new(gatehouse_notify::DevMailbox))
                .map_err(|e| anyhow!("phone.email_gateway_address: {e}"))?;
            PhoneProvider::EmailGateway { address }
        }
        other => bail!("phone.provider: \"{other}\" is not a provider; use \"none\", \"twilio\", \"webhook\" or \"email_gateway\""),
    })
}

/// `[questions]`: the security questions users choose from.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuestionsSection {
    /// Offer the built-in list.
    pub builtin: bool,
    /// Your own questions: `{ id = "q-…", text = "…" }`.
    pub custom: Vec<CustomQuestion>,
}

impl Default for QuestionsSection {
    fn default() -> Self {
        Self {
            builtin: true,
            custom: vec![],
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomQuestion {
    pub id: String,
    pub text: String,
}

pub fn question_set(q: &QuestionsSection) -> anyhow::Result<QuestionSet> {
    let custom = q.custom.iter().map(|c| (c.id.clone(), c.text.clone())).collect();
    QuestionSet::new(q.builtin, custom).map_err(|e| anyhow!("questions.custom: {}", e.message))
}

/// `[import]`: how far the HR feed is trusted.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImportSection {
    /// Contact data from the HR import counts as verified (the new-hire onboarding path).
    pub trust_contacts: bool,
}

impl Default for ImportSection {
    fn default() -> Self {
        Self { trust_contacts: true }
    }
}

/// `[admin]`: helpdesk API tokens, as `name:sha256hex` (make one with `gatehouse admin token NAME`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    pub api_tokens: Vec<String>,
}

pub fn admin_tokens(a: &AdminSection) -> anyhow::Result<Vec<(String, [u8; 32])>> {
    let mut out: Vec<(String, [u8; 32])> = vec![];
    for (i, t) in a.api_tokens.iter().enumerate() {
        let key = format!("admin.api_tokens[{i}]");
        let (name, digest) = t.split_once(':').ok_or_else(|| {
            anyhow!("{key}: write it as \"name:sha256-hex\"; `gatehouse admin token NAME` prints one")
        })?;
        let bytes = hex::decode(digest.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                anyhow!(
                    "{key}: \"{name}\" needs the 64 hex digits of the token's SHA-256, not the token itself"
                )
            })?;
        if name.trim().is_empty() || out.iter().any(|(n, _)| n == name.trim()) {
            bail!("{key}: give each token its own name");
        }
        out.push((name.trim().to_owned(), bytes));
    }
    Ok(out)
}

/// `[throttle]`: counters shared by every node (kept in the store). 0 turns a limit off.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleSection {
    pub account_attempts: u32,
    pub account_window_minutes: i64,
    pub account_block_hours: i64,
    pub ip_requests: u32,
    pub network_requests: u32,
    pub ip_window_minutes: i64,
    pub destination_per_10_minutes: u32,
    pub destination_per_day: u32,
    pub phone_prefix_digits: usize,
    pub phone_prefix_per_hour: u32,
    pub phone_budget_per_hour: u32,
    pub breaker_ratio: u32,
    pub breaker_min_sends: u32,
    pub breaker_pause_minutes: i64,
}

impl Default for ThrottleSection {
    fn default() -> Self {
        let d = ThrottleSettings::default();
        Self {
            account_attempts: d.account.max,
            account_window_minutes: d.account.window.whole_minutes(),
            account_block_hours: d.account_block.whole_hours(),
            ip_requests: d.ip.max,
            network_requests: d.subnet.max,
            ip_window_minutes: d.ip.window.whole_minutes(),
            destination_per_10_minutes: d.destination_short.max,
            destination_per_day: d.destination_day.max,
            phone_prefix_digits: d.prefix_digits,
            phone_prefix_per_hour: d.prefix.max,
            phone_budget_per_hour: d.phone_budget.max,
            breaker_ratio: d.breaker_ratio,
            breaker_min_sends: d.breaker_min_sends,
            breaker_pause_minutes: d.breaker_block.whole_minutes(),
        }
    }
}

pub fn throttle(t: &ThrottleSection) -> anyhow::Result<ThrottleSettings> {
    range(
        "throttle.account_window_minutes",
        t.account_window_minutes,
        1,
        1440,
    )?;
    range("throttle.account_block_hours", t.account_block_hours, 1, 168)?;
    range("throttle.ip_window_minutes", t.ip_window_minutes, 1, 1440)?;
    range(
        "throttle.phone_prefix_digits",
        t.phone_prefix_digits as i64,
        3,
        12,
    )?;
    range("throttle.breaker_ratio", i64::from(t.breaker_ratio), 1, 100)?;
    range("throttle.breaker_pause_minutes", t.breaker_pause_minutes, 1, 1440)?;
    let ip_window = Duration::minutes(t.ip_window_minutes);
    Ok(ThrottleSettings {
        account: Limit::new(t.account_attempts, Duration::minutes(t.account_window_minutes)),
        account_block: Duration::hours(t.account_block_hours),
        ip: Limit::new(t.ip_requests, ip_window),
        subnet: Limit::new(t.network_requests, ip_window),
        destination_short: Limit::new(t.destination_per_10_minutes, Duration::minutes(10)),
        destination_day: Limit::new(t.destination_per_day, Duration::days(1)),
        prefix: Limit::new(t.phone_prefix_per_hour, Duration::hours(1)),
        prefix_digits: t.phone_prefix_digits,
        phone_budget: Limit::new(t.phone_budget_per_hour, Duration::hours(1)),
        breaker_ratio: t.breaker_ratio,
        breaker_min_sends: t.breaker_min_sends,
        breaker_block: Duration::minutes(t.breaker_pause_minutes),
    })
}

/// `[captcha]`: the proof-of-work check on flow start (no third party; ALTCHA-compatible).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptchaSection {
    pub enabled: bool,
    /// Hashes a client tries on average: about half of this (50 000: well under a second in a browser).
    pub difficulty: u64,
    /// The ceiling the difficulty rises to for an address or account under attack.
    pub max_difficulty: u64,
    pub ttl_seconds: i64,
}

impl Default for CaptchaSection {
    fn default() -> Self {
        Self {
            enabled: true,
            difficulty: 50_000,
            max_difficulty: 5_000_000,
            ttl_seconds: 300,
        }
    }
}

pub fn captcha(c: &CaptchaSection) -> anyhow::Result<Option<CaptchaSettings>> {
    if !c.enabled {
        return Ok(None);
    }
    range("captcha.difficulty", c.difficulty as i64, 100, 100_000_000)?;
    range(
        "captcha.max_difficulty",
        c.max_difficulty as i64,
        c.difficulty as i64,
        1_000_000_000,
    )?;
    range("captcha.ttl_seconds", c.ttl_seconds, 30, 3600)?;
    Ok(Some(CaptchaSettings {
        difficulty: Difficulty {
            base: c.difficulty,
            max: c.max_difficulty,
        },
        ttl: Duration::seconds(c.ttl_seconds),
    }))
}
