//! Configuration: defaults → TOML file → `GATEHOUSE_<SECTION>__<KEY>` environment, with `*_file`
//! indirection for secrets. A raw struct is parsed once into a checked [`Config`].
use anyhow::{anyhow, bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use gatehouse_core::messages::Branding;
use gatehouse_core::password::PasswordPolicy;
use gatehouse_core::Settings;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use time::Duration;

mod methods;
pub use methods::{
    AdminSection, CaptchaSection, CustomQuestion, ImportSection, PhoneProvider, PhoneSection, PolicySection,
    QuestionsSection, ThrottleSection,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    pub listen: String,
    pub public_url: String,
    /// Reverse proxies (addresses or CIDR ranges) whose Forwarded / X-Forwarded-For are believed.
    pub trusted_proxies: Vec<String>,
    pub organisation: String,
    pub helpdesk: String,
    pub log_format: String,
    /// Mailed when a user reports a reset or change they did not make ("this wasn't me").
    pub security_alerts: Vec<String>,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            trusted_proxies: vec![],
            organisation: "Gatehouse".into(),
            helpdesk: "your IT helpdesk".into(),
            log_format: "text".into(),
            security_alerts: vec![],
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    pub url: String,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            url: "sqlite://gatehouse.db".into(),
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailSection {
    pub transport: String,
    pub smtp_url: String,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<String>,
    pub smtp_password_file: Option<PathBuf>,
    pub from: String,
    pub timeout_secs: u64,
    pub retry_initial_ms: u64,
    pub retry_max_secs: u64,
    pub poll_ms: u64,
    pub allow_insecure: bool,
}

impl std::fmt::Debug for MailSection {
    /// Secrets stay out of logs: no password, no URL (it may carry credentials).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailSection")
            .field("transport", &self.transport)
            .field("from", &self.from)
            .field("smtp_username", &self.smtp_username)
            .field("smtp_password_file", &self.smtp_password_file)
            .finish_non_exhaustive()
    }
}

impl Default for MailSection {
    fn default() -> Self {
        Self {
            transport: "smtp".into(),
            smtp_url: "smtp://127.0.0.1:25".into(),
            smtp_username: None,
            smtp_password: None,
            smtp_password_file: None,
            from: "Password reset <noreply@example.org>".into(),
            timeout_secs: 15,
            retry_initial_ms: 5_000,
            retry_max_secs: 600,
            poll_ms: 500,
            allow_insecure: false,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectorySection {
    pub kind: String,
    // builtin
    pub lockout_threshold: u32,
    pub history: u32,
    // ldap
    pub url: String,
    pub starttls: bool,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_insecure_skip_verify: bool,
    pub allow_insecure: bool,
    pub bind_dn: String,
    pub bind_password: Option<String>,
    pub bind_password_file: Option<PathBuf>,
    pub base_dn: String,
    pub user_filter: String,
    pub login_attributes: Vec<String>,
    pub policy_dn: Option<String>,
    pub pool_size: usize,
    pub connect_timeout_secs: u64,
    pub operation_timeout_secs: u64,
    pub enforce_directory_policy: bool,
    pub policy_enforcement: String,
    pub password_write: String,
    pub trust_contacts: bool,
    pub sync_interval_minutes: u64,
    /// Active Directory: groups whose members are protected accounts (besides `adminCount=1`).
    pub privileged_groups: Vec<String>,
    /// Active Directory: protected accounts get no self-service at all.
    pub exclude_privileged: bool,
    pub attributes: AttributeSection,
    pub groups: GroupSection,
}

impl std::fmt::Debug for DirectorySection {
    /// The bind password stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectorySection")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("bind_dn", &self.bind_dn)
            .field("base_dn", &self.base_dn)
            .finish_non_exhaustive()
    }
}

impl Default for DirectorySection {
    fn default() -> Self {
        Self {
            kind: "builtin".into(),
            lockout_threshold: 5,
            history: 5,
            url: String::new(),
            starttls: false,
            tls_ca_file: None,
            tls_insecure_skip_verify: false,
            allow_insecure: false,
            bind_dn: String::new(),
            bind_password: None,
            bind_password_file: None,
            base_dn: String::new(),
            user_filter: "(objectClass=inetOrgPerson)".into(),
            login_attributes: vec!["uid".into(), "mail".into()],
            policy_dn: None,
            pool_size: 8,
            connect_timeout_secs: 5,
            operation_timeout_secs: 10,
            enforce_directory_policy: true,
            policy_enforcement: "user_change".into(),
            password_write: "exop".into(),
            trust_contacts: false,
            sync_interval_minutes: 15,
            privileged_groups: vec![],
            exclude_privileged: false,
            attributes: AttributeSection::default(),
            groups: GroupSection::default(),
        }
    }
}

/// `[directory.attributes]`: where the directory keeps what Gatehouse reads.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttributeSection {
    pub display_name: String,
    pub mail: String,
    pub mobile: String,
    pub personal_email: Option<String>,
}

impl Default for AttributeSection {
    fn default() -> Self {
        Self {
            display_name: "cn".into(),
            mail: "mail".into(),
            mobile: "mobile".into(),
            personal_email: None,
        }
    }
}

/// `[directory.groups]`: how group membership is found.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupSection {
    /// "memberof", "search" or "none".
    pub lookup: String,
    pub member_of_attribute: String,
    pub base_dn: String,
    pub filter: String,
    pub name_attribute: String,
}

impl Default for GroupSection {
    fn default() -> Self {
        Self {
            lookup: "memberof".into(),
            member_of_attribute: "memberOf".into(),
            base_dn: String::new(),
            filter: "(member={dn})".into(),
            name_attribute: "cn".into(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowSection {
    /// The default policy's methods (per-group `[[policy]]` blocks may differ).
    pub methods: Vec<String>,
    pub methods_required: u8,
    /// Verified methods users must register (default: methods_required).
    pub register_required: Option<u8>,
    /// Users without enough methods are sent to registration after signing in.
    pub registration_required: bool,
    /// Ask users to confirm their methods again after this many days (0: never).
    pub reconfirm_days: u16,
    pub questions_registered: u8,
    pub questions_asked: u8,
    /// How long a helpdesk recovery or onboarding link works.
    pub link_lifetime_hours: i64,
    pub max_methods: usize,
    pub code_digits: u8,
    pub code_lifetime_minutes: i64,
    pub flow_lifetime_minutes: i64,
    pub max_code_attempts: u32,
    pub attempt_window_hours: i64,
    pub session_lifetime_minutes: i64,
}

impl Default for FlowSection {
    fn default() -> Self {
        Self {
            methods: vec!["email".into(), "sms".into(), "voice".into(), "totp".into()],
            methods_required: 1,
            register_required: None,
            registration_required: true,
            reconfirm_days: 180,
            questions_registered: 3,
            questions_asked: 3,
            link_lifetime_hours: 72,
            max_methods: 5,
            code_digits: 6,
            code_lifetime_minutes: 10,
            flow_lifetime_minutes: 15,
            max_code_attempts: 5,
            attempt_window_hours: 24,
            session_lifetime_minutes: 30,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordSection {
    pub min_length: usize,
    pub max_length: usize,
    pub forbid_login: bool,
    /// At least this many character categories (0 = off, 3 = Active Directory's complexity).
    pub character_classes: u8,
    /// Extra banned terms (e.g. the company's name and products), beside the shipped list.
    pub banned_terms: Vec<String>,
    /// A file of banned terms, one per line (`#` comments).
    pub banned_terms_file: Option<PathBuf>,
    /// Entra-style points a password needs (5); 0 turns the banned-term rule off.
    pub banned_min_score: u32,
    /// Minimum zxcvbn score, 0–4 (0 = off).
    pub min_strength: u8,
    /// An index built by `gatehouse breach import` (none: only the shipped list of common passwords).
    pub breach_index: Option<PathBuf>,
    /// How often a running server looks for a new index at `breach_index` (and swaps it in).
    pub breach_reload_seconds: u64,
}

impl Default for PasswordSection {
    fn default() -> Self {
        let p = PasswordPolicy::default();
        Self {
            min_length: p.min_length,
            max_length: p.max_length,
            forbid_login: p.forbid_login,
            character_classes: p.character_classes,
            banned_terms: vec![],
            banned_terms_file: None,
            banned_min_score: p.banned_min_score,
            min_strength: p.min_strength,
            breach_index: None,
            breach_reload_seconds: 60,
        }
    }
}

/// The configuration as written: every key of `examples/gatehouse.toml`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub server: ServerSection,
    pub store: StoreSection,
    pub mail: MailSection,
    pub directory: DirectorySection,
    pub flow: FlowSection,
    pub password: PasswordSection,
    /// `[[policy]]` blocks: first match by group wins; `[flow]` is the default.
    pub policy: Vec<PolicySection>,
    pub phone: PhoneSection,
    pub questions: QuestionsSection,
    pub import: ImportSection,
    pub admin: AdminSection,
    pub throttle: ThrottleSection,
    pub captcha: CaptchaSection,
}

impl RawConfig {
    /// Loads `path` (TOML) over the defaults, then the `GATEHOUSE_*` environment over that.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        if !path.exists() {
            bail!(
                "configuration file {} not found: pass --config FILE (see examples/gatehouse.toml)",
                path.display()
            );
        }
        Self::figment(Some(path))
            .extract()
            .map_err(|e| anyhow!(explain(e)))
    }

    /// Defaults and environment only (demo mode and tests).
    pub fn from_env() -> anyhow::Result<Self> {
        Self::figment(None).extract().map_err(|e| anyhow!(explain(e)))
    }

    fn figment(path: Option<&Path>) -> Figment {
        let mut f = Figment::from(Serialized::defaults(RawConfig::default()));
        if let Some(p) = path {
            f = f.merge(Toml::file_exact(p));
        }
        // Only GATEHOUSE_<SECTION>__<KEY>: other GATEHOUSE_* variables (GATEHOUSE_CONFIG, test switches)
        // are not configuration keys.
        f.merge(
            Env::prefixed("GATEHOUSE_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        )
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn redacted_toml(&self) -> String {
        let mut c = self.clone();
        if c.mail.smtp_password.is_some() {
            c.mail.smtp_password = Some("<redacted>".into());
        }
        if c.directory.bind_password.is_some() {
            c.directory.bind_password = Some("<redacted>".into());
        }
        for secret in [&mut c.phone.twilio_auth_token, &mut c.phone.webhook_secret] {
            if secret.is_some() {
                *secret = Some("<redacted>".into());
            }
        }
        if let Ok(mut u) = url::Url::parse(&c.mail.smtp_url) {
            if u.password().is_some() {
                let _ = u.set_password(Some("redacted"));
                c.mail.smtp_url = u.to_string();
            }
        }
        toml::to_string_pretty(&c).unwrap_or_else(|e| format!("# cannot print: {e}"))
    }
}

fn explain(e: figment::Error) -> String {
    let mut out = String::from("configuration error:");
    for err in e {
        let key = err.path.join(".");
        let key = if key.is_empty() {
            "(top level)".to_owned()
        } else {
            key
        };
        out.push_str(&format!("\n  {key}: {}", err.kind));
        if let figment::error::Kind::UnknownField(_, expected) = &err.kind {
            out.push_str(&format!(" — valid keys here: {}", expected.join(", ")));
        }
        if let Some(src) = err.metadata.as_ref().and_then(|m| m.source.as_ref()) {
            out.push_str(&format!(" (from {src})"));
        }
    }
    out
}

#[derive(Clone, Debug)]
pub enum DirectoryKind {
    Builtin,
    Ldap {
        settings: Box<gatehouse_directory::ldap::LdapSettings>,
        sync_interval: Option<std::time::Duration>,
    },
    Ad {
        settings: Box<gatehouse_directory::ad::AdSettings>,
        sync_interval: Option<std::time::Duration>,
    },
}

impl DirectoryKind {
    pub fn sync_interval(&self) -> Option<std::time::Duration> {
        match self {
            Self::Builtin => None,
            Self::Ldap { sync_interval, .. } | Self::Ad { sync_interval, .. } => *sync_interval,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailTransportKind {
    Smtp,
    DevMailbox,
}

/// The checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub public_url: String,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub log_json: bool,
    pub store_url: String,
    pub mail: gatehouse_notify::SmtpSettings,
    pub mail_transport: MailTransportKind,
    pub retry: gatehouse_notify::RetryPolicy,
    pub builtin: gatehouse_directory::BuiltinOptions,
    pub directory: DirectoryKind,
    pub settings: Settings,
    /// The breach index file, and how often to look for a new one.
    pub breach_index: Option<(PathBuf, std::time::Duration)>,
    pub phone: PhoneProvider,
    /// Helpdesk API tokens: (name, SHA-256 of the token).
    pub admin_tokens: Vec<(String, [u8; 32])>,
    pub raw: RawConfig,
}

fn password_policy(p: &PasswordSection) -> anyhow::Result<PasswordPolicy> {
    use gatehouse_core::banned::BannedList;
    if p.character_classes > 5 {
        bail!(
            "password.character_classes: there are 5 kinds of characters; use 0 (off) to 5 (3 is AD's rule)"
        );
    }
    if p.min_strength > 4 {
        bail!("password.min_strength: zxcvbn scores run from 0 to 4; use 0 (off) to 4 (3 recommended)");
    }
    if let Some(path) = &p.breach_index {
        if !path.is_file() {
            bail!(
                "password.breach_index: {} does not exist; build it with `gatehouse breach import FILE_OR_DIR --out DIR`",
                path.display()
            );
        }
    }
    let mut custom: Vec<String> = p.banned_terms.clone();
    if let Some(path) = &p.banned_terms_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("password.banned_terms_file: cannot read {}", path.display()))?;
        custom.extend(text.lines().map(str::to_owned));
    }
    let banned = BannedList::global().merged(&BannedList::from_lines(custom.iter().map(String::as_str)));
    Ok(PasswordPolicy {
        min_length: p.min_length,
        max_length: p.max_length,
        forbid_login: p.forbid_login,
        character_classes: p.character_classes,
        banned: std::sync::Arc::new(banned),
        banned_min_score: p.banned_min_score,
        min_strength: p.min_strength,
        breach: None,
    })
}

fn read_secret_file(key: &str, path: &Path) -> anyhow::Result<String> {
    let s =
        std::fs::read_to_string(path).with_context(|| format!("{key}: cannot read {}", path.display()))?;
    Ok(s.trim_end_matches(['\n', '\r']).to_owned())
}

fn ldap_settings(d: &DirectorySection) -> anyhow::Result<DirectoryKind> {
    use gatehouse_directory::ldap::{
        AttributeMap, GroupLookup, LdapSettings, PasswordWrite, PolicyEnforcement, Security,
    };
    if d.url.is_empty() {
        bail!("directory.url: required for kind = \"ldap\"; write it like \"ldaps://ldap.example.org\"");
    }
    let url = url::Url::parse(&d.url).with_context(|| {
        format!(
            "directory.url: \"{}\" is not a URL; write it like \"ldaps://ldap.example.org\" or \
             \"ldap://ldap.example.org\" with starttls = true",
            d.url
        )
    })?;
    let security = match (url.scheme(), d.starttls) {
        ("ldaps", false) | ("ldapi", false) => Security::Implicit,
        ("ldaps" | "ldapi", true) => {
            bail!("directory.starttls: only for ldap:// URLs (ldaps:// is already TLS)")
        }
        ("ldap", true) => Security::StartTls,
        ("ldap", false) => Security::None,
        (other, _) => {
            bail!("directory.url: the scheme \"{other}\" is not LDAP; use ldap://, ldaps:// or ldapi://")
        }
    };
    let host = url.host_str().unwrap_or("");
    if security == Security::None && !is_loopback_host(host) && !d.allow_insecure {
        bail!(
            "directory.url: plain ldap:// to {host} would send passwords in clear text; use ldaps://, set \
             directory.starttls = true, or (only on a trusted network) directory.allow_insecure = true"
        );
    }
    if d.tls_ca_file.is_some() && d.tls_insecure_skip_verify {
        bail!(
            "directory.tls_insecure_skip_verify: cannot be combined with directory.tls_ca_file; remove one"
        );
    }
    if let Some(ca) = &d.tls_ca_file {
        if !ca.is_file() {
            bail!("directory.tls_ca_file: {} does not exist", ca.display());
        }
    }
    if d.bind_dn.trim().is_empty() {
        bail!("directory.bind_dn: required; the DN of the service account, like \"cn=sspr,ou=services,dc=example,dc=org\"");
    }
    let password = match (&d.bind_password, &d.bind_password_file) {
        (Some(_), Some(_)) => bail!("directory.bind_password and directory.bind_password_file: set only one"),
        (Some(p), None) => p.clone(),
        (None, Some(path)) => read_secret_file("directory.bind_password_file", path)?,
        (None, None) => bail!(
            "directory.bind_password_file: required (or directory.bind_password); the service account's password"
        ),
    };
    if d.base_dn.trim().is_empty() {
        bail!("directory.base_dn: required; where the users are, like \"ou=people,dc=example,dc=org\"");
    }
    let filter = d.user_filter.trim();
    if !(filter.starts_with('(') && filter.ends_with(')')) {
        bail!("directory.user_filter: must be an LDAP filter in parentheses, like \"(objectClass=inetOrgPerson)\"");
    }
    if d.login_attributes.is_empty() || d.login_attributes.iter().any(|a| !is_attribute_name(a)) {
        bail!("directory.login_attributes: list the attributes a user may type, like [\"uid\", \"mail\"]");
    }
    if !(1..=64).contains(&d.pool_size) {
        bail!("directory.pool_size: must be between 1 and 64");
    }
    let groups = match d.groups.lookup.as_str() {
        "memberof" => GroupLookup::MemberOf {
            attribute: d.groups.member_of_attribute.clone(),
        },
        "search" => {
            if d.groups.base_dn.trim().is_empty() || !d.groups.filter.contains("{dn}") {
                bail!(
                    "directory.groups: lookup = \"search\" needs base_dn and a filter with {{dn}}, like \
                     \"(member={{dn}})\""
                );
            }
            GroupLookup::Search {
                base_dn: d.groups.base_dn.clone(),
                filter: d.groups.filter.clone(),
                name_attribute: d.groups.name_attribute.clone(),
            }
        }
        "none" => GroupLookup::None,
        other => bail!(
            "directory.groups.lookup: \"{other}\" is not known; use \"memberof\", \"search\" or \"none\""
        ),
    };
    let policy_enforcement = match d.policy_enforcement.as_str() {
        "user_change" => PolicyEnforcement::UserChange,
        "service_account" => PolicyEnforcement::ServiceAccount,
        other => bail!(
            "directory.policy_enforcement: \"{other}\" is not known; use \"user_change\" or \"service_account\""
        ),
    };
    let password_write = match d.password_write.as_str() {
        "exop" => PasswordWrite::Exop,
        "modify" => PasswordWrite::Modify,
        other => bail!("directory.password_write: \"{other}\" is not known; use \"exop\" or \"modify\""),
    };
    let a = &d.attributes;
    let settings = LdapSettings {
        url: d.url.clone(),
        security,
        tls_ca_file: d.tls_ca_file.clone(),
        tls_insecure_skip_verify: d.tls_insecure_skip_verify,
        bind_dn: d.bind_dn.clone(),
        bind_password: gatehouse_core::secret::Password::new(password),
        base_dn: d.base_dn.clone(),
        user_filter: filter.to_owned(),
        login_attributes: d.login_attributes.clone(),
        attributes: AttributeMap {
            display_name: a.display_name.clone(),
            mail: a.mail.clone(),
            mobile: a.mobile.clone(),
            personal_email: a.personal_email.clone().filter(|p| !p.is_empty()),
        },
        groups,
        pool_size: d.pool_size,
        connect_timeout: std::time::Duration::from_secs(d.connect_timeout_secs.clamp(1, 300)),
        operation_timeout: std::time::Duration::from_secs(d.operation_timeout_secs.clamp(1, 300)),
        enforce_directory_policy: d.enforce_directory_policy,
        policy_enforcement,
        password_write,
        policy_dn: d.policy_dn.clone().filter(|p| !p.is_empty()),
    };
    Ok(DirectoryKind::Ldap {
        settings: Box::new(settings),
        sync_interval: (d.sync_interval_minutes > 0)
            .then(|| std::time::Duration::from_secs(d.sync_interval_minutes.saturating_mul(60))),
    })
}

/// Active Directory: the LDAP keys with AD's defaults where the file kept the OpenLDAP ones, and
/// TLS required (AD refuses password writes without it).
fn ad_settings(d: &DirectorySection) -> anyhow::Result<DirectoryKind> {
    let mut d = d.clone();
    let ldap_defaults = DirectorySection::default();
    if d.login_attributes == ldap_defaults.login_attributes {
        d.login_attributes = vec!["sAMAccountName".into(), "userPrincipalName".into(), "mail".into()];
    }
    if d.user_filter == ldap_defaults.user_filter {
        d.user_filter = "(&(objectCategory=person)(objectClass=user))".into();
    }
    if d.attributes.display_name == ldap_defaults.attributes.display_name {
        d.attributes.display_name = "displayName".into();
    }
    if d.attributes.personal_email.is_none() {
        d.attributes.personal_email = Some("otherMailbox".into());
    }
    let insecure = d.allow_insecure;
    d.allow_insecure = true; // checked here instead, more strictly
    let DirectoryKind::Ldap {
        settings,
        sync_interval,
    } = ldap_settings(&d)?
    else {
        bail!("directory: internal error reading the LDAP keys");
    };
    if settings.security == gatehouse_directory::ldap::Security::None && !insecure {
        bail!(
            "directory.url: Active Directory accepts password writes only over TLS; use ldaps:// or set \
             directory.starttls = true"
        );
    }
    Ok(DirectoryKind::Ad {
        settings: Box::new(gatehouse_directory::ad::AdSettings {
            ldap: *settings,
            privileged_groups: d.privileged_groups.clone(),
            exclude_privileged: d.exclude_privileged,
        }),
        sync_interval,
    })
}

fn is_attribute_name(a: &str) -> bool {
    !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';' || c == '.')
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::Ipv6Addr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

impl TryFrom<RawConfig> for Config {
    type Error = anyhow::Error;

    fn try_from(raw: RawConfig) -> anyhow::Result<Self> {
        let s = &raw.server;
        let listen: SocketAddr = s.listen.parse().with_context(|| {
            format!(
                "server.listen: \"{}\" is not an address and port; write it like \"127.0.0.1:8080\"",
                s.listen
            )
        })?;
        let public = url::Url::parse(&s.public_url).with_context(|| {
            format!(
                "server.public_url: \"{}\" is not a URL; write it like \"https://sspr.example.org\"",
                s.public_url
            )
        })?;
        if !matches!(public.scheme(), "http" | "https") || public.host_str().is_none() {
            bail!("server.public_url: must be an http:// or https:// URL with a host");
        }
        if public.query().is_some() || public.fragment().is_some() {
            bail!("server.public_url: must not contain a query or fragment");
        }
        let trusted_proxies = s
            .trusted_proxies
            .iter()
            .map(|p| {
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        anyhow!(
                            "server.trusted_proxies: \"{p}\" is not an address or CIDR range; write it like \
                             \"10.0.0.5\" or \"10.0.0.0/8\""
                        )
                    })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let log_json = match s.log_format.as_str() {
            "text" => false,
            "json" => true,
            other => bail!("server.log_format: \"{other}\" is not known; use \"text\" or \"json\""),
        };
        if !raw.store.url.starts_with("sqlite:") {
            bail!("store.url: only sqlite:// URLs are supported in this version (e.g. \"sqlite://gatehouse.db\")");
        }
        let directory = match raw.directory.kind.as_str() {
            "builtin" => DirectoryKind::Builtin,
            "ldap" => ldap_settings(&raw.directory)?,
            "ad" => ad_settings(&raw.directory)?,
            other => bail!("directory.kind: \"{other}\" is not known; use \"builtin\", \"ldap\" or \"ad\""),
        };
        let m = &raw.mail;
        let mail_transport = match m.transport.as_str() {
            "smtp" => MailTransportKind::Smtp,
            "dev-mailbox" => MailTransportKind::DevMailbox,
            other => {
                bail!("mail.transport: \"{other}\" is not known; use \"smtp\" or \"dev-mailbox\" (demo only)")
            }
        };
        let smtp = url::Url::parse(&m.smtp_url).with_context(|| {
            "mail.smtp_url: not a URL; write it like \"smtp://mail.example.org:587?tls=required\"".to_owned()
        })?;
        if !matches!(smtp.scheme(), "smtp" | "smtps") {
            bail!("mail.smtp_url: the scheme must be smtp:// or smtps://");
        }
        let tls = smtp.scheme() == "smtps" || smtp.query_pairs().any(|(k, v)| k == "tls" && v == "required");
        let host = smtp.host_str().unwrap_or("");
        if mail_transport == MailTransportKind::Smtp && !tls && !is_loopback_host(host) && !m.allow_insecure {
            bail!(
                "mail.smtp_url: sending to {host} without TLS would expose codes on the network; use smtps:// or \
                 add ?tls=required, or set mail.allow_insecure = true if you really mean it"
            );
        }
        let password = match (&m.smtp_password, &m.smtp_password_file) {
            (Some(_), Some(_)) => bail!("mail: set smtp_password or smtp_password_file, not both"),
            (Some(p), None) => Some(p.clone()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("mail.smtp_password_file: cannot read {}", f.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            (None, None) => None,
        };
        if password.is_some() && m.smtp_username.is_none() {
            bail!("mail.smtp_username: required when a password is set");
        }
        gatehouse_notify::check_mailbox(&m.from).map_err(|e| {
            anyhow!("mail.from: \"{}\" is not a mailbox ({e}); write it like \"Password reset <noreply@example.org>\"", m.from)
        })?;
        let f = &raw.flow;
        let range = |key: &str, v: i64, lo: i64, hi: i64| -> anyhow::Result<()> {
            if v < lo || v > hi {
                bail!("{key}: {v} is out of range; use a value from {lo} to {hi}");
            }
            Ok(())
        };
        range("flow.link_lifetime_hours", f.link_lifetime_hours, 1, 720)?;
        range("flow.max_methods", f.max_methods as i64, 1, 20)?;
        range("flow.flow_lifetime_minutes", f.flow_lifetime_minutes, 5, 120)?;
        range("flow.attempt_window_hours", f.attempt_window_hours, 1, 168)?;
        range(
            "flow.session_lifetime_minutes",
            f.session_lifetime_minutes,
            5,
            720,
        )?;
        let p = &raw.password;
        range("password.min_length", p.min_length as i64, 8, 256)?;
        range("password.max_length", p.max_length as i64, 256, 4096)?;
        range(
            "directory.lockout_threshold",
            i64::from(raw.directory.lockout_threshold),
            0,
            100,
        )?;
        range("directory.history", i64::from(raw.directory.history), 0, 24)?;
        let public_url = public.as_str().trim_end_matches('/').to_owned();
        let settings = Settings {
            branding: Branding {
                organisation: s.organisation.clone(),
                public_url: public_url.clone(),
                helpdesk: s.helpdesk.clone(),
            },
            flow_lifetime: Duration::minutes(f.flow_lifetime_minutes),
            attempt_window: Duration::hours(f.attempt_window_hours),
            session_lifetime: Duration::minutes(f.session_lifetime_minutes),
            max_methods: f.max_methods,
            password: password_policy(p)?,
            trust_directory_contacts: raw.directory.trust_contacts,
            trust_import_contacts: raw.import.trust_contacts,
            policies: methods::policies(
                &raw.policy,
                &methods::PolicyDefaults {
                    methods: f.methods.clone(),
                    methods_required: f.methods_required,
                    register_required: f.register_required,
                    registration_required: f.registration_required,
                    reconfirm_days: f.reconfirm_days,
                    code_digits: f.code_digits,
                    code_lifetime_minutes: f.code_lifetime_minutes,
                    code_attempts: f.max_code_attempts,
                    questions_registered: f.questions_registered,
                    questions_asked: f.questions_asked,
                },
                &raw.directory.privileged_groups,
            )?,
            default_region: raw.phone.default_region.to_ascii_uppercase(),
            questions: methods::question_set(&raw.questions)?,
            link_lifetime: Duration::hours(f.link_lifetime_hours),
            throttle: methods::throttle(&raw.throttle)?,
            security_alerts: s
                .security_alerts
                .iter()
                .map(|a| {
                    gatehouse_core::types::Email::parse(a)
                        .map_err(|e| anyhow!("server.security_alerts: \"{a}\": {}", e.message))
                })
                .collect::<anyhow::Result<_>>()?,
            captcha: methods::captcha(&raw.captcha)?,
        };
        let phone = methods::phone_provider(&raw.phone)?;
        for p in settings.policies.list.iter().chain([&settings.policies.default]) {
            let wanted = usize::from(p.questions_registered);
            if p.allows_method(gatehouse_core::types::MethodKind::Questions)
                && settings.questions.all().len() < wanted
            {
                bail!(
                    "questions: policy \"{}\" registers {wanted} security questions but only {} are offered; add \
                     questions.custom entries or keep questions.builtin = true",
                    p.name,
                    settings.questions.all().len()
                );
            }
        }
        let admin_tokens = methods::admin_tokens(&raw.admin)?;
        Ok(Self {
            listen,
            public_url,
            trusted_proxies,
            log_json,
            store_url: raw.store.url.clone(),
            mail: gatehouse_notify::SmtpSettings {
                url: m.smtp_url.clone(),
                from: m.from.clone(),
                username: m.smtp_username.clone(),
                password,
                timeout: std::time::Duration::from_secs(m.timeout_secs.max(1)),
            },
            mail_transport,
            retry: gatehouse_notify::RetryPolicy {
                initial: std::time::Duration::from_millis(m.retry_initial_ms.max(10)),
                max: std::time::Duration::from_secs(m.retry_max_secs.max(1)),
                poll: std::time::Duration::from_millis(m.poll_ms.clamp(10, 60_000)),
            },
            builtin: gatehouse_directory::BuiltinOptions {
                lockout_threshold: raw.directory.lockout_threshold,
                history: raw.directory.history,
            },
            directory,
            settings,
            breach_index: raw.password.breach_index.clone().map(|p| {
                let every = std::time::Duration::from_secs(raw.password.breach_reload_seconds.max(1));
                (p, every)
            }),
            phone,
            admin_tokens,
            raw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(f: impl FnOnce(&mut RawConfig)) -> String {
        let mut raw = RawConfig::default();
        f(&mut raw);
        Config::try_from(raw)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(check(|_| {}), "");
    }

    fn ldap(r: &mut RawConfig) {
        r.directory.kind = "ldap".into();
        r.directory.url = "ldap://127.0.0.1:389".into();
        r.directory.bind_dn = "cn=sspr,ou=services,dc=example,dc=org".into();
        r.directory.bind_password = Some("secret".into());
        r.directory.base_dn = "ou=people,dc=example,dc=org".into();
    }

    #[test]
    fn ldap_settings_are_checked_and_secure_transports_pass() {
        assert_eq!(check(ldap), "");
        assert_eq!(
            check(|r| {
                ldap(r);
                r.directory.url = "ldap://ldap.example.org".into();
                r.directory.starttls = true;
            }),
            ""
        );
        assert_eq!(
            check(|r| {
                ldap(r);
                r.directory.url = "ldaps://ldap.example.org".into();
            }),
            ""
        );
        assert_eq!(
            check(|r| {
                ldap(r);
                r.directory.url = "ldap://ldap.example.org".into();
                r.directory.allow_insecure = true;
            }),
            ""
        );
        let mut raw = RawConfig::default();
        ldap(&mut raw);
        let shown = raw.redacted_toml();
        assert!(
            !shown.contains("secret") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert!(!format!("{:?}", raw.directory).contains("secret"));
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        type Tweak = Box<dyn FnOnce(&mut RawConfig)>;
        let cases: Vec<(Tweak, &str)> = vec![
            (
                Box::new(|r| r.server.listen = "localhost".into()),
                "server.listen",
            ),
            (
                Box::new(|r| r.server.public_url = "sspr.example.org".into()),
                "server.public_url",
            ),
            (
                Box::new(|r| r.server.log_format = "xml".into()),
                "server.log_format",
            ),
            (Box::new(|r| r.store.url = "postgres://x".into()), "store.url"),
            (Box::new(|r| r.directory.kind = "nis".into()), "directory.kind"),
            (
                Box::new(|r| r.server.trusted_proxies = vec!["10.0.0.0/33".into()]),
                "server.trusted_proxies",
            ),
            (Box::new(|r| r.directory.kind = "ldap".into()), "directory.url"),
            (
                Box::new(|r| {
                    ldap(r);
                    r.directory.url = "ldap://ldap.example.org".into();
                }),
                "directory.url: plain ldap://",
            ),
            (
                Box::new(|r| {
                    ldap(r);
                    r.directory.url = "http://ldap.example.org".into();
                }),
                "directory.url",
            ),
            (
                Box::new(|r| {
                    ldap(r);
                    r.directory.bind_password = None;
                }),
                "directory.bind_password_file",
            ),
            (
                Box::new(|r| {
                    ldap(r);
                    r.directory.base_dn = " ".into();
                }),
                "directory.base_dn",
            ),
            (
                Box::new(|r| {
                    ldap(r);
                    r.directory.user_filter = "objectClass=person".into();
                }),
                "directory.user_filter",
            ),
            (
                Box::new(|r| {
                    ldap(r);
                    r.directory.login_attributes = vec![];
                }),
                "directory.login_attributes",
            ),
            (
                Box::new(|r| {
                    ldap(r);
                    r.directory.groups.lookup = "nested".into();
                }),
                "directory.groups.lookup",
            ),
            (
                Box::new(|r| {
                    ldap(r);
                    r.directory.policy_enforcement = "trust".into();
                }),
                "directory.policy_enforcement",
            ),
            (
                Box::new(|r| {
                    ldap(r);
                    r.directory.tls_insecure_skip_verify = true;
                    r.directory.tls_ca_file = Some("/etc/hostname".into());
                }),
                "directory.tls_insecure_skip_verify",
            ),
            (
                Box::new(|r| r.mail.smtp_url = "smtp://mail.example.org:25".into()),
                "without TLS",
            ),
            (Box::new(|r| r.mail.from = "not a mailbox".into()), "mail.from"),
            (
                Box::new(|r| r.flow.code_digits = 4),
                "flow.code_digits: 4 is out of range",
            ),
            (Box::new(|r| r.password.min_length = 4), "password.min_length"),
            (
                Box::new(|r| r.mail.smtp_password = Some("x".into())),
                "mail.smtp_username",
            ),
        ];
        for (tweak, want) in cases {
            let err = check(tweak);
            assert!(err.contains(want), "expected {want:?} in {err:?}");
        }
        assert_eq!(
            check(|r| r.mail.smtp_url = "smtp://mail.example.org:587?tls=required".into()),
            ""
        );
        assert_eq!(check(|r| r.mail.smtp_url = "smtps://mail.example.org".into()), "");
    }

    #[test]
    fn unknown_keys_and_bad_types_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.toml");
        std::fs::write(&p, "[server]\nlisten = \"127.0.0.1:1\"\npublic_ur = \"x\"\n").unwrap();
        let e = RawConfig::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("server") && e.contains("public_ur") && e.contains("public_url"),
            "{e}"
        );
        std::fs::write(&p, "[flow]\ncode_digits = \"six\"\n").unwrap();
        let e = RawConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("flow.code_digits"), "{e}");
        let e = RawConfig::load(&dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not found"), "{e}");
    }

    #[test]
    fn secrets_come_from_files_and_are_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret-from-file\n").unwrap();
        let mut raw = RawConfig::default();
        raw.mail.smtp_username = Some("sspr".into());
        raw.mail.smtp_password_file = Some(f);
        raw.mail.smtp_url = "smtp://sspr:inline-secret@127.0.0.1:25".into();
        let cfg = Config::try_from(raw).unwrap();
        assert_eq!(cfg.mail.password.as_deref(), Some("s3cret-from-file"));
        let printed = cfg.raw.redacted_toml();
        assert!(
            !printed.contains("inline-secret") && !format!("{:?}", cfg.mail).contains("s3cret"),
            "{printed}"
        );
        let debug = format!("{cfg:?}");
        assert!(
            !debug.contains("inline-secret") && !debug.contains("s3cret"),
            "{debug}"
        );
    }
}
