//! The use cases. Each handler (web, API, CLI) calls exactly one of these.
use crate::audit::{Activity, AuditEvent, Outcome};
use crate::error::ServiceError;
use crate::flow::{CodeRules, Flow, FlowError, FlowMethod, FlowStep, FlowTarget};
use crate::messages::{self, Branding};
use crate::password::{PasswordPolicy, RuleText, Violation};
use crate::phone::Phone;
use crate::policy::{Policies, Policy, SelfService};
use crate::ports::{
    Account, AccountSpec, AuditRow, Changes, Clock, Directory, DirectoryError, FailureOp, Method,
    MethodCheck, MethodCode, MethodVerification, PhoneChannel, PhoneMessage, PhoneSender, QueuedMail,
    RightCheck, SecureRng, Session, Store, StoredAnswer, SyncWrite, SyncedUser, Target, UserProfile,
};
use crate::pow;
use crate::questions::{self, QuestionSet};
use crate::secret::{InstanceKey, OtpCode, Password, Token, TokenHash};
use crate::throttle::{self, Limit, ThrottleSettings};
use crate::totp;
use crate::types::{Email, FlowId, FlowKind, Login, MethodId, MethodKind, ParseError};
use std::net::IpAddr;

mod decoys;
mod registration;
pub use registration::{LinkKind, NewMethod, Registered, Registration};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// Immutable settings of the use cases, checked by the configuration layer.
#[derive(Clone, Debug)]
pub struct Settings {
    pub branding: Branding,
    pub flow_lifetime: Duration,
    pub attempt_window: Duration,
    pub session_lifetime: Duration,
    pub max_methods: usize,
    pub password: PasswordPolicy,
    /// Contact attributes synchronised from the directory count as registered methods without the
    /// user verifying them (off by default: directory attributes are often self-editable).
    pub trust_directory_contacts: bool,
    /// Contact data from the HR import counts as registered (on by default: that is how a new hire
    /// receives the onboarding link).
    pub trust_import_contacts: bool,
    /// Per-group policies and the default (which flows, which methods, how many, code rules).
    pub policies: Policies,
    /// ISO 3166 region for phone numbers typed without a country code.
    pub default_region: String,
    pub questions: QuestionSet,
    /// How long a helpdesk recovery or onboarding link works.
    pub link_lifetime: Duration,
    pub throttle: ThrottleSettings,
    /// Who is mailed when a user reports a reset or change they did not make.
    pub security_alerts: Vec<Email>,
    /// Proof-of-work on flow start (None: off).
    pub captcha: Option<CaptchaSettings>,
}

/// The proof-of-work CAPTCHA on flow start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptchaSettings {
    pub difficulty: pow::Difficulty,
    pub ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            branding: Branding {
                organisation: "Gatehouse".into(),
                public_url: "http://127.0.0.1:8080".into(),
                helpdesk: "your IT helpdesk".into(),
            },
            flow_lifetime: Duration::minutes(15),
            attempt_window: Duration::hours(24),
            session_lifetime: Duration::minutes(30),
            max_methods: 5,
            password: PasswordPolicy::default(),
            trust_directory_contacts: false,
            trust_import_contacts: true,
            policies: Policies::default(),
            default_region: "US".into(),
            questions: QuestionSet::builtin(),
            link_lifetime: Duration::hours(72),
            throttle: ThrottleSettings::default(),
            security_alerts: vec![],
            captcha: None,
        }
    }
}

/// Who is asking: recorded in the audit log.
#[derive(Clone, Debug, Default)]
pub struct RequestMeta {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodView {
    pub id: MethodId,
    pub kind: MethodKind,
    pub hint: String,
    /// Security questions: the ids of the questions asked.
    pub questions: Vec<String>,
}

/// What a client may see of a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowView {
    pub kind: FlowKind,
    pub step: FlowStep,
    pub required: u8,
    pub verified: u8,
    pub methods: Vec<MethodView>,
    pub code_sent_to: Option<MethodId>,
    /// Shown once verified: the account is locked and may be unlocked without a new password.
    pub unlock_available: bool,
}

impl From<&Flow> for FlowView {
    fn from(f: &Flow) -> Self {
        Self {
            kind: f.kind,
            step: f.step,
            required: f.required,
            verified: u8::try_from(f.verified.len()).unwrap_or(u8::MAX),
            methods: f
                .methods
                .iter()
                .filter(|m| !f.verified.contains(&m.id))
                .map(|m| MethodView {
                    id: m.id.clone(),
                    kind: m.kind,
                    hint: m.hint.clone(),
                    questions: match &m.target {
                        Some(FlowTarget::Questions(q)) => q.clone(),
                        _ => vec![],
                    },
                })
                .collect(),
            code_sent_to: f.code.as_ref().map(|c| c.method.clone()),
            unlock_available: f.offer_unlock && f.step == FlowStep::Password,
        }
    }
}

/// What the user offers for a method in a flow.
#[derive(Clone, Copy, Debug)]
pub enum Proof<'a> {
    /// A code (email, text message, call, authenticator app).
    Code(&'a str),
    /// Answers to security questions: (question id, answer as typed).
    Answers(&'a [(String, String)]),
}

pub struct StartedFlow {
    pub token: Token,
    pub view: FlowView,
}

/// Proof that a request carries a valid portal session. Only [`Gatehouse::session`] builds one.
#[derive(Clone, Debug)]
pub struct SessionCtx {
    login: Login,
    token: TokenHash,
}

impl SessionCtx {
    pub fn login(&self) -> &Login {
        &self.login
    }
}

/// One row of an HR feed or one `users add`.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub login: Login,
    pub display_name: String,
    pub email: Option<Email>,
    pub alternate_email: Option<Email>,
    pub mobile_phone: Option<String>,
    pub groups: Vec<String>,
    pub password: Option<Password>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportOutcome {
    pub account_created: bool,
    pub method_added: bool,
}

pub struct Readiness {
    pub store: Result<(), String>,
    pub directory: Result<(), String>,
    /// The directory's self-test (cached for five minutes): connection and service-account rights.
    pub rights: Vec<RightCheck>,
}

impl Readiness {
    /// Rights the service cannot work without; the other checks inform.
    pub const REQUIRED: [&'static str; 4] = ["connect", "bind", "reset_password", "unlock"];

    pub fn ready(&self) -> bool {
        self.store.is_ok()
            && self.directory.is_ok()
            && self
                .rights
                .iter()
                .all(|c| c.ok || !c.tested || !Self::REQUIRED.contains(&c.right.as_str()))
    }
}

/// A directory self-test result and when it was taken.
type CachedRights = (OffsetDateTime, Vec<RightCheck>);

/// How long a directory self-test result feeds `/readyz`.
const RIGHTS_TTL: Duration = Duration::minutes(5);

/// How long a "this wasn't me" link works.
const REPORT_LINK_LIFETIME: Duration = Duration::days(14);

/// Users written per store transaction during a synchronisation.
const SYNC_PAGE: usize = 1000;

/// What a synchronisation pass did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    pub full: bool,
    pub read: usize,
    pub disabled: usize,
    pub skipped: Vec<String>,
}

/// The application: ports plus settings. Cheap to clone.
#[derive(Clone)]
pub struct Gatehouse {
    directory: Arc<dyn Directory>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRng>,
    settings: Arc<Settings>,
    key: InstanceKey,
    rights: Arc<std::sync::Mutex<Option<CachedRights>>>,
    phone: Option<Arc<dyn PhoneSender>>,
    /// The population's combinations of methods, for decoys (see `decoys.rs`).
    shapes: Arc<std::sync::RwLock<Arc<decoys::DecoyShapes>>>,
    dummy_answer: Arc<std::sync::OnceLock<String>>,
}

impl Gatehouse {
    pub async fn new(
        directory: Arc<dyn Directory>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRng>,
        settings: Settings,
    ) -> Result<Self, ServiceError> {
        let mut candidate = [0u8; 32];
        rng.fill(&mut candidate);
        let key = InstanceKey::new(store.instance_key(candidate).await?);
        let me = Self {
            directory,
            store,
            clock,
            rng,
            settings: Arc::new(settings),
            key,
            rights: Arc::default(),
            phone: None,
            shapes: Arc::default(),
            dummy_answer: Arc::default(),
        };
        me.refresh_decoy_shapes().await?;
        Ok(me)
    }

    /// Adds the SMS / voice provider (without one, phone methods cannot be registered or used).
    pub fn with_phone(mut self, sender: Arc<dyn PhoneSender>) -> Self {
        self.phone = Some(sender);
        self
    }

    /// The policy of an account (by its groups; privileged accounts get the privileged floor).
    pub fn policy_for(&self, account: &Account) -> Policy {
        self.settings
            .policies
            .for_account(&account.groups, account.privileged && !account.disabled)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The rules shown before the user types: Gatehouse's own and the directory's defaults.
    pub async fn password_rules(&self) -> Vec<RuleText> {
        let mut out = self.settings.password.rules();
        if let Some(d) = self.directory.password_rules(None).await {
            for r in self.stricter_than_ours(d).texts() {
                if !out.iter().any(|o| o.rule == r.rule) {
                    out.push(r);
                }
            }
        }
        out
    }

    /// The directory's rules without what Gatehouse's own policy already covers (a shorter minimum).
    fn stricter_than_ours(&self, mut d: crate::password::DirectoryRules) -> crate::password::DirectoryRules {
        if d.min_length
            .is_some_and(|n| n as usize <= self.settings.password.min_length)
        {
            d.min_length = None;
        }
        d
    }

    /// Every local reason at once: Gatehouse's policy plus the directory's length and complexity
    /// (the user's own fine-grained rules when `who` is a verified account).
    async fn violations(&self, login: &Login, who: Option<&Account>, password: &Password) -> Vec<Violation> {
        let rules = self.directory.password_rules(who.map(|a| &a.login)).await;
        self.violations_under(login, who, rules, password)
    }

    /// Gatehouse's rules and the directory's `rules` (when stricter), every violation once.
    fn violations_under(
        &self,
        login: &Login,
        who: Option<&Account>,
        rules: Option<crate::password::DirectoryRules>,
        password: &Password,
    ) -> Vec<Violation> {
        // The user's own words (name, email) are known only for a verified account.
        let ctx = crate::password::PasswordContext {
            login: login.to_string(),
            display_name: who.map(|a| a.display_name.clone()).unwrap_or_default(),
            email: who
                .and_then(|a| a.email.as_ref())
                .map(|e| e.as_str().to_owned())
                .unwrap_or_default(),
        };
        let mut v = self.settings.password.check_for(&ctx, password.expose_secret());
        if let Some(rules) = rules.map(|r| self.stricter_than_ours(r)) {
            let name = who.map(|a| a.display_name.as_str()).unwrap_or("");
            for x in rules.check(login.as_str(), name, password.expose_secret()) {
                if !v.iter().any(|o| o.rule == x.rule) {
                    v.push(x);
                }
            }
        }
        v
    }

    fn event(&self, activity: Activity, target: Option<&Login>, meta: &RequestMeta) -> AuditEvent {
        AuditEvent {
            at: self.clock.now(),
            activity,
            actor: target
                .map(|l| l.to_string())
                .unwrap_or_else(|| "anonymous".into()),
            target: target.cloned(),
            result: Outcome::Success,
            reason: None,
            method: None,
            client_ip: meta.ip,
            user_agent: meta.user_agent.clone(),
            flow_id: None,
            directory: Some(self.directory.name().to_owned()),
        }
    }

    fn flow_event(&self, activity: Activity, flow: &Flow, meta: &RequestMeta) -> AuditEvent {
        let mut e = self.event(activity, Some(&flow.login), meta);
        e.flow_id = Some(flow.id.clone());
        e
    }

    fn new_method_id(&self) -> MethodId {
        let mut id = [0u8; 10];
        self.rng.fill(&mut id);
        MethodId::from_bytes(&id)
    }

    fn random_hex(&self, bytes: usize) -> String {
        let mut b = vec![0u8; bytes];
        self.rng.fill(&mut b);
        hex::encode(b)
    }

    fn code_rules(p: &Policy) -> CodeRules {
        CodeRules {
            digits: p.code_digits,
            lifetime_seconds: p.code_lifetime.whole_seconds(),
            attempts: p.code_attempts,
        }
    }

    /// A registered method as a flow offers it (security questions: M of them, picked now).
    fn flow_method(&self, m: &Method, p: &Policy) -> FlowMethod {
        let target = match &m.target {
            Target::Email(e) => FlowTarget::Email(e.clone()),
            Target::Phone(n) => FlowTarget::Phone(n.clone()),
            Target::Totp { .. } => FlowTarget::Totp,
            Target::Questions(answers) => {
                let ids: Vec<String> = answers.iter().map(|a| a.question.clone()).collect();
                FlowTarget::Questions(questions::pick(
                    self.rng.as_ref(),
                    &ids,
                    usize::from(p.questions_asked),
                ))
            }
        };
        FlowMethod {
            id: m.id.clone(),
            kind: m.kind,
            hint: m.hint(),
            target: Some(target),
        }
    }

    /// Starts a reset or unlock flow. Unknown, disabled and unregistered logins get a decoy flow
    /// with the same shape, so the answer says nothing about the account.
    pub async fn start_flow(
        &self,
        kind: FlowKind,
        login: &str,
        pow: Option<&str>,
        meta: &RequestMeta,
    ) -> Result<StartedFlow, ServiceError> {
        let login = Login::parse(login)?;
        let now = self.clock.now();
        // The cheap checks first: proof of work, then the counters. No directory call, no hashing.
        self.check_pow(pow, Some(&login), meta, now).await?;
        if let Some(reason) = self.gate(login.as_str(), meta, now).await? {
            return Err(self.blocked(Some(&login), reason, meta).await);
        }
        let hits = self.account_hits(&login, meta, now).await?;
        let account = self.directory.find_account(&login).await?;
        // The user may type any login attribute (uid or mail); methods are kept under the canonical one.
        let login = account.as_ref().map(|a| a.login.clone()).unwrap_or(login);
        // Every login costs the same reads, known or not: the profile, the flag and the methods.
        let profile = self.store.profile(&login).await?;
        let flagged = self.store.flag(&login).await?.is_some();
        let stored = self.store.methods(&login).await?;
        let left_scope = profile.is_some_and(|p| p.disabled) || flagged;
        let policy = account.as_ref().map(|a| self.policy_for(a));
        let usable: Vec<Method> = match &policy {
            Some(p) => stored
                .into_iter()
                .filter(|m| m.verified && p.allows_method(m.kind))
                .filter(|m| self.can_deliver(m.kind))
                .collect(),
            None => vec![],
        };
        // Decoys follow the default policy (a stricter group or privileged one still shows in the
        // count; see docs/security.md).
        let decoy_policy = self.settings.policies.for_unknown();
        // The decoy methods are derived for every login, used or not.
        let decoys = self.decoy_methods(&login, decoy_policy);
        let reason = match (&account, &policy) {
            (Some(a), _) if a.disabled || left_scope => Some("account_disabled"),
            (Some(_), Some(p)) if !p.allows(SelfService::from(kind)) => Some("not_in_scope"),
            (Some(_), Some(p)) if usable.len() < usize::from(p.reset_required) => Some("not_enough_methods"),
            (Some(_), Some(_)) => None,
            _ => Some("unknown_account"),
        };
        // A decoy asks for what an unknown login would be asked for.
        let (methods, required, codes) = match (reason, &policy) {
            (None, Some(p)) => (
                usable.iter().map(|m| self.flow_method(m, p)).collect(),
                p.reset_required,
                Self::code_rules(p),
            ),
            _ => (
                decoys,
                decoy_policy.reset_required,
                Self::code_rules(decoy_policy),
            ),
        };
        let token = Token::generate(self.rng.as_ref());
        let flow = Flow {
            id: FlowId(self.random_hex(16)),
            token_hash: token.hash(),
            kind,
            login,
            genuine: reason.is_none(),
            methods,
            required,
            verified: vec![],
            code: None,
            step: FlowStep::Verify,
            created_at: now,
            expires_at: now + self.settings.flow_lifetime,
            version: 0,
            offer_unlock: reason.is_none()
                && kind == FlowKind::Reset
                && account.as_ref().is_some_and(|a| a.locked)
                && policy.as_ref().is_some_and(|p| p.allows(SelfService::Unlock)),
            codes,
        };
        let mut event = self.flow_event(Activity::FlowStarted, &flow, meta);
        event.reason = Some(reason.unwrap_or(kind.as_str()).to_owned());
        let mut changes = Changes::audit(event);
        changes.hits = hits;
        self.store.insert_flow(&flow, changes).await?;
        Ok(StartedFlow {
            token,
            view: FlowView::from(&flow),
        })
    }

    async fn load_flow(&self, token: &str) -> Result<Flow, ServiceError> {
        let token = Token::parse(token).map_err(|_| ServiceError::FlowNotFound)?;
        self.store
            .flow_by_token(&token.hash())
            .await?
            .ok_or(ServiceError::FlowNotFound)
    }

    pub async fn flow(&self, token: &str) -> Result<FlowView, ServiceError> {
        Ok(FlowView::from(&self.load_flow(token).await?))
    }

    /// Sends a fresh code to one of the flow's methods (nothing leaves for a decoy). Phone methods
    /// need `confirm`, the full number typed by the user; the answer is the same whether it matched
    /// or not (only a matching number gets a code).
    pub async fn send_code(
        &self,
        token: &str,
        method: &str,
        confirm: Option<&str>,
        meta: &RequestMeta,
    ) -> Result<(), ServiceError> {
        let method = MethodId::parse(method).map_err(|_| FlowError::UnknownMethod)?;
        let mut flow = self.load_flow(token).await?;
        let now = self.clock.now();
        let m = flow.can_prove(&method, now)?.clone();
        if !m.kind.sends_code() {
            return Err(FlowError::WrongStep.into());
        }
        let code = OtpCode::generate(self.rng.as_ref(), flow.codes.digits);
        let hash = self.key.code_hash(&flow.id.0, &code);
        let version = flow.version;
        let lifetime = Duration::seconds(flow.codes.lifetime_seconds);
        let mut event = self.flow_event(Activity::CodeSent, &flow, meta);
        event.method = Some(m.kind);
        // Per destination; a decoy counts under its method id, so it is limited exactly alike.
        let destination = match (&m.target, flow.genuine) {
            (Some(FlowTarget::Email(e)), true) => e.as_str().to_owned(),
            (Some(FlowTarget::Phone(p)), true) => p.as_str().to_owned(),
            _ => m.id.to_string(),
        };
        if let Some(reason) = self.destination_full(&destination, now).await? {
            return Err(self.blocked(Some(&flow.login), reason, meta).await);
        }
        let mut changes = Changes::default();
        changes.hits.push((throttle::destination_key(&destination), now));
        let mut phone_out = None;
        match (&m.target, flow.genuine) {
            (Some(FlowTarget::Email(to)), true) => changes.mail.push(messages::code(
                &self.settings.branding,
                to,
                code.expose_secret(),
                lifetime.whole_minutes(),
                Self::purpose(flow.kind),
            )),
            (Some(FlowTarget::Phone(number)), true) => {
                let confirmed = confirm
                    .is_some_and(|typed| number.matches_confirmation(typed, &self.settings.default_region));
                if !confirmed {
                    event.result = Outcome::Failure;
                    event.reason = Some("number_not_confirmed".into());
                    self.store.record(Changes::audit(event)).await?;
                    return Ok(());
                }
                phone_out = Some(self.phone_message(m.kind, number, &code, lifetime.whole_minutes()));
            }
            (target, _) => {
                event.reason = Some("suppressed_decoy".into());
                // A decoy costs what a code does, and nothing leaves: the message to its made-up
                // address is composed and dropped, and a row takes the outbox row's place in the
                // same transaction (a counter no limit reads, pruned with the others).
                if let Some(FlowTarget::Email(nowhere)) = target {
                    drop(messages::code(
                        &self.settings.branding,
                        nowhere,
                        code.expose_secret(),
                        lifetime.whole_minutes(),
                        Self::purpose(flow.kind),
                    ));
                }
                changes.hits.push((format!("decoy:{}", m.id), now));
            }
        }
        flow.code_sent(&method, hash, now, lifetime)?;
        flow.version += 1;
        if !self.store.save_flow(&flow, version, Changes::default()).await? {
            return Err(FlowError::WrongStep.into());
        }
        if let Some(message) = phone_out {
            if let Err(e) = self.send_phone(&message, meta).await {
                event.result = Outcome::Failure;
                event.reason = Some(e.code().into());
                self.store.record(Changes::audit(event)).await?;
                return Err(e);
            }
        }
        changes.audit.push(event);
        self.store.record(changes).await?;
        Ok(())
    }

    fn purpose(kind: FlowKind) -> &'static str {
        match kind {
            FlowKind::Reset => "reset your password",
            FlowKind::Unlock => "unlock your account",
        }
    }

    /// The text or call that carries `code` to `number` (voice methods call, the others text).
    fn phone_message(&self, kind: MethodKind, number: &Phone, code: &OtpCode, minutes: i64) -> PhoneMessage {
        let channel = if kind == MethodKind::Voice {
            PhoneChannel::Voice
        } else {
            PhoneChannel::Sms
        };
        PhoneMessage {
            to: number.as_str().to_owned(),
            channel,
            text: messages::phone_code(&self.settings.branding, channel, code.expose_secret(), minutes),
        }
    }

    /// Sends a text or call, within the prefix limit, the budget and the circuit breaker.
    async fn send_phone(&self, message: &PhoneMessage, meta: &RequestMeta) -> Result<(), ServiceError> {
        let Some(sender) = &self.phone else {
            return Err(ServiceError::PhoneUnavailable(
                "no phone provider is configured".into(),
            ));
        };
        let now = self.clock.now();
        let t = &self.settings.throttle;
        let prefix = throttle::prefix_key(&message.to, t.prefix_digits);
        let since = now - t.phone_budget.window;
        let reason = if self
            .store
            .failures(throttle::BREAKER, now - t.breaker_block)
            .await?
            > 0
        {
            Some("sms_circuit_breaker")
        } else if self.over(&prefix, t.prefix, now).await? {
            Some("phone_prefix_rate")
        } else if self.over(throttle::PHONE_SENT, t.phone_budget, now).await? {
            Some("phone_budget")
        } else {
            let sent = self.store.failures(throttle::PHONE_SENT, since).await?;
            let verified = self.store.failures(throttle::PHONE_VERIFIED, since).await?;
            if throttle::breaker_trips(t, sent, verified) {
                let mut changes = Changes::audit(self.blocked_event(None, "sms_circuit_breaker", meta));
                changes.hits.push((throttle::BREAKER.to_owned(), now));
                self.store.record(changes).await?;
                tracing::error!(
                    sent,
                    verified,
                    "SMS circuit breaker tripped: texts and calls paused"
                );
                return Err(ServiceError::PhoneUnavailable("circuit breaker".into()));
            }
            None
        };
        if let Some(reason) = reason {
            self.store
                .record(Changes::audit(self.blocked_event(None, reason, meta)))
                .await?;
            return Err(ServiceError::PhoneUnavailable(reason.into()));
        }
        sender.send(message).await.map_err(|e| {
            tracing::warn!(provider = sender.name(), error = %e, "phone message not sent");
            ServiceError::PhoneUnavailable(e.to_string())
        })?;
        let changes = Changes {
            hits: vec![(throttle::PHONE_SENT.to_owned(), now), (prefix, now)],
            ..Changes::default()
        };
        self.store.record(changes).await?;
        Ok(())
    }

    /// True when `key` has reached `limit` within its window.
    async fn over(&self, key: &str, limit: Limit, now: OffsetDateTime) -> Result<bool, ServiceError> {
        if !limit.enabled() {
            return Ok(false);
        }
        Ok(self.store.failures(key, now - limit.window).await? >= limit.max)
    }

    /// The door of every unauthenticated step: the client's address and network, and an account
    /// block. Keyed by the login as typed, so a blocked unknown login answers like a blocked real one.
    async fn gate(
        &self,
        login: &str,
        meta: &RequestMeta,
        now: OffsetDateTime,
    ) -> Result<Option<&'static str>, ServiceError> {
        let t = &self.settings.throttle;
        if let Some(ip) = meta.ip {
            if self.over(&throttle::ip_key(ip), t.ip, now).await? {
                return Ok(Some("ip_rate"));
            }
            if self.over(&throttle::subnet_key(ip), t.subnet, now).await? {
                return Ok(Some("network_rate"));
            }
        }
        if t.account.enabled()
            && self
                .store
                .failures(&throttle::account_block_key(login), now - t.account_block)
                .await?
                > 0
        {
            return Ok(Some("account_rate"));
        }
        Ok(None)
    }

    /// The counters one attempt against an account bumps; the block marker once it reaches the limit.
    async fn account_hits(
        &self,
        login: &Login,
        meta: &RequestMeta,
        now: OffsetDateTime,
    ) -> Result<Vec<(String, OffsetDateTime)>, ServiceError> {
        let t = &self.settings.throttle;
        let key = throttle::account_key(login.as_str());
        let mut hits = vec![(key.clone(), now)];
        if let Some(ip) = meta.ip {
            hits.push((throttle::ip_key(ip), now));
            hits.push((throttle::subnet_key(ip), now));
        }
        if t.account.enabled()
            && self.store.failures(&key, now - t.account.window).await? + 1 >= t.account.max
        {
            hits.push((throttle::account_block_key(login.as_str()), now));
        }
        Ok(hits)
    }

    /// Whether a destination had its codes for now (3 in 10 minutes, 10 a day by default).
    async fn destination_full(
        &self,
        destination: &str,
        now: OffsetDateTime,
    ) -> Result<Option<&'static str>, ServiceError> {
        let key = throttle::destination_key(destination);
        let t = &self.settings.throttle;
        if self.over(&key, t.destination_short, now).await? || self.over(&key, t.destination_day, now).await?
        {
            return Ok(Some("destination_rate"));
        }
        Ok(None)
    }

    fn blocked_event(&self, login: Option<&Login>, reason: &str, meta: &RequestMeta) -> AuditEvent {
        let mut e = self.event(Activity::Blocked, login, meta);
        e.result = Outcome::Failure;
        e.reason = Some(format!("blocked from self-service password reset: {reason}"));
        e
    }

    /// Audits a throttled request and gives the one answer every throttled request gets.
    async fn blocked(&self, login: Option<&Login>, reason: &str, meta: &RequestMeta) -> ServiceError {
        if let Err(e) = self
            .store
            .record(Changes::audit(self.blocked_event(login, reason, meta)))
            .await
        {
            return e.into();
        }
        ServiceError::Throttled
    }

    /// The proof-of-work key (derived from the instance key: every node agrees).
    fn pow_key(&self) -> [u8; 32] {
        self.key.derive("pow", "challenge")
    }

    /// How hard a challenge is for this client now: harder for an address or account under pressure.
    async fn pow_difficulty(
        &self,
        c: &CaptchaSettings,
        login: Option<&Login>,
        meta: &RequestMeta,
        now: OffsetDateTime,
    ) -> Result<u64, ServiceError> {
        let window = self.settings.throttle.account.window;
        let mut pressure = 0;
        if let Some(ip) = meta.ip {
            pressure = pressure.max(self.store.failures(&throttle::ip_key(ip), now - window).await?);
        }
        if let Some(l) = login {
            pressure = pressure.max(
                self.store
                    .failures(&throttle::account_key(l.as_str()), now - window)
                    .await?,
            );
        }
        Ok(c.difficulty.maxnumber_for(pressure))
    }

    /// A challenge for the flow-start form or an API client (None when the CAPTCHA is off).
    pub async fn pow_challenge(
        &self,
        login: Option<&str>,
        meta: &RequestMeta,
    ) -> Result<Option<pow::Challenge>, ServiceError> {
        let Some(c) = &self.settings.captcha else {
            return Ok(None);
        };
        let now = self.clock.now();
        let login = login.and_then(|l| Login::parse(l).ok());
        let max = self.pow_difficulty(c, login.as_ref(), meta, now).await?;
        Ok(Some(pow::create(
            &self.pow_key(),
            self.rng.as_ref(),
            now,
            max,
            c.ttl,
        )))
    }

    /// Checks a solved challenge: valid, hard enough for the current pressure, and used once.
    async fn check_pow(
        &self,
        payload: Option<&str>,
        login: Option<&Login>,
        meta: &RequestMeta,
        now: OffsetDateTime,
    ) -> Result<(), ServiceError> {
        let Some(c) = &self.settings.captcha else {
            return Ok(());
        };
        let Some(payload) = payload.filter(|p| !p.trim().is_empty()) else {
            return Err(ServiceError::CaptchaRequired);
        };
        let solved = pow::verify(&self.pow_key(), payload, now).map_err(|_| ServiceError::CaptchaRequired)?;
        let needed = self.pow_difficulty(c, login, meta, now).await?;
        if solved.maxnumber().unwrap_or(0) < needed {
            return Err(ServiceError::CaptchaRequired);
        }
        if !self.store.use_once(solved.replay_key(), solved.expires()).await? {
            return Err(ServiceError::CaptchaRequired);
        }
        Ok(())
    }

    fn failure_key(login: &Login) -> String {
        format!("code:{login}")
    }

    /// Checks a proof for one of the flow's methods: a code (email, phone, authenticator app) or
    /// the answers to the security questions the flow asked. Failures count per account across
    /// flows and methods.
    pub async fn verify(
        &self,
        token: &str,
        method: &str,
        proof: Proof<'_>,
        meta: &RequestMeta,
    ) -> Result<FlowView, ServiceError> {
        let method = MethodId::parse(method).map_err(|_| FlowError::UnknownMethod)?;
        let mut flow = self.load_flow(token).await?;
        let now = self.clock.now();
        let key = Self::failure_key(&flow.login);
        let failures = self
            .store
            .failures(&key, now - self.settings.attempt_window)
            .await?;
        let max_attempts = flow.codes.attempts;
        if let Some(reason) = self.gate(flow.login.as_str(), meta, now).await? {
            return Err(self.blocked(Some(&flow.login), reason, meta).await);
        }
        if failures >= max_attempts {
            let mut e = self.flow_event(Activity::Blocked, &flow, meta);
            e.result = Outcome::Failure;
            e.reason = Some("too_many_attempts".into());
            self.store.record(Changes::audit(e)).await?;
            return Err(ServiceError::TooManyAttempts);
        }
        let version = flow.version;
        let target = flow.methods.iter().find(|m| m.id == method).cloned();
        let kind = target.as_ref().map(|m| m.kind);
        let outcome = match target.as_ref().and_then(|m| m.target.clone()) {
            Some(FlowTarget::Totp) if flow.genuine => self
                .prove_totp(&flow, &method, proof, now)
                .await?
                .and_then(|()| flow.accept(&method, now)),
            Some(FlowTarget::Questions(asked)) if flow.genuine => self
                .prove_answers(&flow, &method, &asked, proof, now)
                .await?
                .and_then(|()| flow.accept(&method, now)),
            // A decoy's method costs what a wrong proof of a real one does, and never succeeds.
            Some(t @ (FlowTarget::Totp | FlowTarget::Questions(_))) => {
                self.prove_decoy(&flow, &method, &t, proof, now).await?
            }
            _ => {
                let typed = match proof {
                    Proof::Code(code) => match OtpCode::parse(code) {
                        Ok(c) => self.key.code_hash(&flow.id.0, &c),
                        // A malformed code can never match; it still counts as a wrong one.
                        Err(_) => TokenHash([0; 32]),
                    },
                    Proof::Answers(_) => TokenHash([0; 32]),
                };
                flow.verify(&method, &typed, now)
            }
        };
        match outcome {
            Ok(()) => {
                let mut e = self.flow_event(Activity::CodeVerified, &flow, meta);
                e.method = kind;
                let mut changes = Changes {
                    audit: vec![e],
                    failure: Some(FailureOp::Clear { key }),
                    ..Changes::default()
                };
                if kind.is_some_and(MethodKind::is_phone) {
                    changes.hits.push((throttle::PHONE_VERIFIED.to_owned(), now));
                }
                flow.version += 1;
                if self.store.save_flow(&flow, version, changes).await? {
                    Ok(FlowView::from(&flow))
                } else {
                    // Someone else used this code at the same moment: single use holds.
                    Err(FlowError::InvalidCode.into())
                }
            }
            Err(err @ (FlowError::InvalidCode | FlowError::CodeExpired)) => {
                let mut e = self.flow_event(Activity::CodeFailed, &flow, meta);
                e.result = Outcome::Failure;
                e.method = kind;
                e.reason = Some(ServiceError::Flow(err).code().into());
                let changes = Changes {
                    audit: vec![e],
                    failure: Some(FailureOp::Increment { key, at: now }),
                    hits: self.account_hits(&flow.login, meta, now).await?,
                    ..Changes::default()
                };
                self.store.record(changes).await?;
                if failures + 1 >= max_attempts {
                    Err(ServiceError::TooManyAttempts)
                } else {
                    Err(err.into())
                }
            }
            Err(other) => Err(other.into()),
        }
    }

    /// The registered method behind a flow method (secrets are read only here).
    async fn stored_method(&self, login: &Login, id: &MethodId) -> Result<Option<Method>, ServiceError> {
        Ok(self
            .store
            .methods(login)
            .await?
            .into_iter()
            .find(|m| &m.id == id && m.verified))
    }

    /// An authenticator code: valid for the current step ±1 and never twice (the step is claimed in
    /// the store, so parallel submissions of one code give one success).
    async fn prove_totp(
        &self,
        flow: &Flow,
        method: &MethodId,
        proof: Proof<'_>,
        now: OffsetDateTime,
    ) -> Result<Result<(), FlowError>, ServiceError> {
        if let Err(e) = flow.can_prove(method, now) {
            return Ok(Err(e));
        }
        let (Proof::Code(code), Some(m)) = (proof, self.stored_method(&flow.login, method).await?) else {
            return Ok(Err(FlowError::InvalidCode));
        };
        let Target::Totp { secret, last_step } = &m.target else {
            return Ok(Err(FlowError::InvalidCode));
        };
        let Ok(secret) = totp::TotpSecret::from_bytes(secret) else {
            return Ok(Err(FlowError::InvalidCode));
        };
        let Some(step) = totp::verify(&secret, code, now, *last_step) else {
            return Ok(Err(FlowError::InvalidCode));
        };
        if !self.store.use_totp_step(method, step, Changes::default()).await? {
            return Ok(Err(FlowError::InvalidCode));
        }
        Ok(Ok(()))
    }

    /// The answers to the questions this flow asked: every one must match.
    async fn prove_answers(
        &self,
        flow: &Flow,
        method: &MethodId,
        asked: &[String],
        proof: Proof<'_>,
        now: OffsetDateTime,
    ) -> Result<Result<(), FlowError>, ServiceError> {
        if let Err(e) = flow.can_prove(method, now) {
            return Ok(Err(e));
        }
        let (Proof::Answers(given), Some(m)) = (proof, self.stored_method(&flow.login, method).await?) else {
            return Ok(Err(FlowError::InvalidCode));
        };
        let Target::Questions(stored) = &m.target else {
            return Ok(Err(FlowError::InvalidCode));
        };
        let mut all = !asked.is_empty();
        for q in asked {
            let typed = given.iter().find(|(id, _)| id == q).map(|(_, a)| a.as_str());
            let hash = stored.iter().find(|s| &s.question == q).map(|s| s.hash.as_str());
            // Every asked answer is checked (no early exit), so the time says nothing about which failed.
            let ok = match (typed, hash) {
                (Some(t), Some(h)) => questions::verify_answer(&questions::normalise_answer(t), h),
                _ => false,
            };
            all &= ok;
        }
        if !all {
            return Ok(Err(FlowError::InvalidCode));
        }
        Ok(Ok(()))
    }

    /// Checks a candidate password against the policy (no directory call).
    /// Every rule with met / unmet (Gatehouse's and the directory's), for the live checklist.
    pub async fn password_checklist(
        &self,
        login: &str,
        password: &Password,
    ) -> (Vec<crate::password::RuleResult>, Vec<Violation>) {
        let dir_rules = self.directory.password_rules(None).await;
        let violations = match Login::parse(login) {
            Ok(l) => self.violations_under(&l, None, dir_rules.clone(), password),
            Err(_) => self.settings.password.check("", password.expose_secret()),
        };
        let mut rules = self.settings.password.checklist(&violations);
        if let Some(d) = dir_rules {
            for r in self.stricter_than_ours(d).texts() {
                if matches!(r.rule, "history" | "directory_min_age" | "directory_quality") {
                    continue; // only the directory can tell
                }
                let met = !violations.iter().any(|v| v.rule == r.rule);
                rules.push(crate::password::RuleResult {
                    rule: r.rule,
                    text: r.text,
                    met,
                });
            }
        }
        (rules, violations)
    }

    pub async fn check_password(&self, login: &str, password: &Password) -> Vec<Violation> {
        match Login::parse(login) {
            Ok(l) => self.violations(&l, None, password).await,
            Err(_) => self.settings.password.check("", password.expose_secret()),
        }
    }

    /// The notification mails of a reset, change or unlock, with one "this wasn't me" link for them.
    async fn notifications(&self, login: &Login, what: &str) -> Changes {
        let account = self.directory.find_account(login).await.ok().flatten();
        let name = account
            .as_ref()
            .map(|a| a.display_name.clone())
            .unwrap_or_else(|| login.to_string());
        let mut to: Vec<Email> = account.and_then(|a| a.email).into_iter().collect();
        if let Ok(methods) = self.store.methods(login).await {
            to.extend(
                methods
                    .into_iter()
                    .filter(|m| m.verified)
                    .filter_map(|m| m.email().cloned()),
            );
        }
        to.sort_by_key(|a| a.as_str().to_lowercase());
        to.dedup_by(|a, b| a.as_str().eq_ignore_ascii_case(b.as_str()));
        let token = Token::generate(self.rng.as_ref());
        let url = format!(
            "{}/not-me/{}",
            self.settings.branding.public_url.trim_end_matches('/'),
            token.expose_secret()
        );
        Changes {
            mail: to
                .iter()
                .map(|t| {
                    messages::notification_with_report(&self.settings.branding, t, &name, what, Some(&url))
                })
                .collect(),
            report_links: vec![(
                token.hash(),
                login.clone(),
                self.clock.now() + REPORT_LINK_LIFETIME,
            )],
            ..Changes::default()
        }
    }

    /// "This wasn't me": the one-time link from a notification locks the account (or, where the
    /// directory cannot lock, flags it), ends its sessions, turns self-service off for it until the
    /// helpdesk clears the flag, and alerts the administrators.
    pub async fn report_not_me(&self, token: &str, meta: &RequestMeta) -> Result<(), ServiceError> {
        let token = Token::parse(token).map_err(|_| ServiceError::NotFound)?;
        let now = self.clock.now();
        let Some(login) = self.store.claim_report_link(&token.hash(), now).await? else {
            return Err(ServiceError::NotFound);
        };
        let action = match self.directory.lock(&login).await {
            Ok(()) => "the account was locked in the directory and flagged for the helpdesk",
            Err(e) => {
                // No lock a service account may set (Active Directory): the password is replaced by a
                // random one nobody knows, which shuts out whoever set the last one.
                tracing::warn!(error = %e, "the directory did not lock the reported account");
                let mut raw = [0u8; 24];
                self.rng.fill(&mut raw);
                let scrambled = Password::new(format!("Gh-{}-x9!Q", hex::encode(raw)));
                match self.directory.reset_password(&login, &scrambled).await {
                    Ok(()) => "the password was replaced by a random one nobody knows, and the account flagged for the helpdesk",
                    Err(e) => {
                        tracing::warn!(error = %e, "the reported account's password could not be replaced");
                        "the directory could neither lock the account nor replace its password; it was flagged for the helpdesk"
                    }
                }
            }
        };
        let mut e = self.event(Activity::ReportedNotMe, Some(&login), meta);
        e.reason = Some(action.into());
        let mut changes = Changes::audit(e);
        for admin in &self.settings.security_alerts {
            changes.mail.push(messages::security_alert(
                &self.settings.branding,
                admin,
                login.as_str(),
                action,
            ));
        }
        self.store
            .set_flag(&login, Some("reported_not_me"), changes)
            .await?;
        self.store.delete_sessions_of(&login).await?;
        Ok(())
    }

    /// Helpdesk: clears a "this wasn't me" flag (after checking with the user).
    pub async fn admin_clear_flag(&self, login: &Login, actor: &str) -> Result<(), ServiceError> {
        let mut e = self.event(Activity::FlagCleared, Some(login), &RequestMeta::default());
        e.actor = actor.to_owned();
        Ok(self.store.set_flag(login, None, Changes::audit(e)).await?)
    }

    /// Claims a verified flow (single use), runs the directory write, and records the outcome.
    async fn complete_flow<F, Fut>(
        &self,
        mut flow: Flow,
        activity: Activity,
        what: &str,
        meta: &RequestMeta,
        write: F,
    ) -> Result<(), ServiceError>
    where
        F: FnOnce(Login) -> Fut,
        Fut: std::future::Future<Output = Result<(), DirectoryError>>,
    {
        let original = flow.clone();
        let version = flow.version;
        flow.finish();
        flow.version += 1;
        if !self.store.save_flow(&flow, version, Changes::default()).await? {
            return Err(FlowError::Finished.into());
        }
        match write(flow.login.clone()).await {
            Ok(()) => {
                let mut changes = self.notifications(&flow.login, what).await;
                changes.audit.push(self.flow_event(activity, &flow, meta));
                changes.failure = Some(FailureOp::Clear {
                    key: Self::failure_key(&flow.login),
                });
                self.store.record(changes).await?;
                if activity == Activity::PasswordReset {
                    self.store.delete_sessions_of(&flow.login).await?;
                }
                Ok(())
            }
            Err(err) => {
                // Give the flow back so the user can try again (another password, or later).
                let mut restored = original;
                restored.version = flow.version + 1;
                self.store
                    .save_flow(&restored, flow.version, Changes::default())
                    .await?;
                let mut e = self.flow_event(activity, &flow, meta);
                e.result = Outcome::Failure;
                let err = ServiceError::from(err);
                e.reason = Some(err.code().into());
                self.store.record(Changes::audit(e)).await?;
                Err(err)
            }
        }
    }

    /// Sets the new password of a verified reset flow; the account is unlocked too.
    pub async fn set_password(
        &self,
        token: &str,
        password: &Password,
        meta: &RequestMeta,
    ) -> Result<(), ServiceError> {
        let flow = self.load_flow(token).await?;
        flow.ready_for_password(self.clock.now())?;
        let account = self.directory.find_account(&flow.login).await?;
        let violations = self.violations(&flow.login, account.as_ref(), password).await;
        if !violations.is_empty() {
            return Err(ServiceError::PasswordRejected(violations));
        }
        let dir = self.directory.clone();
        self.complete_flow(
            flow,
            Activity::PasswordReset,
            "your password was reset",
            meta,
            |login| async move { dir.reset_password(&login, password).await },
        )
        .await
    }

    /// Unlocks the account of a verified unlock flow, leaving the password as it is.
    pub async fn unlock(&self, token: &str, meta: &RequestMeta) -> Result<(), ServiceError> {
        let flow = self.load_flow(token).await?;
        flow.ready_for_unlock(self.clock.now())?;
        let dir = self.directory.clone();
        self.complete_flow(
            flow,
            Activity::AccountUnlocked,
            "your account was unlocked",
            meta,
            |login| async move { dir.unlock(&login).await },
        )
        .await
    }

    /// A helpdesk reset (administrator's CLI): the local policy applies, the directory may be asked to
    /// make the user change the password at next logon.
    pub async fn helpdesk_reset(
        &self,
        login: &Login,
        password: &Password,
        must_change: bool,
    ) -> Result<(), ServiceError> {
        let violations = self
            .settings
            .password
            .check(login.as_str(), password.expose_secret());
        if !violations.is_empty() {
            return Err(ServiceError::PasswordRejected(violations));
        }
        let mut e = self.event(Activity::PasswordReset, Some(login), &RequestMeta::default());
        e.actor = "admin:cli".into();
        e.reason = Some(
            if must_change {
                "helpdesk_must_change"
            } else {
                "helpdesk"
            }
            .into(),
        );
        match self.directory.helpdesk_reset(login, password, must_change).await {
            Ok(()) => {
                self.store.record(Changes::audit(e)).await?;
                self.store.delete_sessions_of(login).await?;
                Ok(())
            }
            Err(err) => {
                let err = ServiceError::from(err);
                e.result = Outcome::Failure;
                e.reason = Some(err.code().into());
                self.store.record(Changes::audit(e)).await?;
                Err(err)
            }
        }
    }

    /// Changes a password the user knows.
    pub async fn change_password(
        &self,
        login: &str,
        old: &Password,
        new: &Password,
        meta: &RequestMeta,
    ) -> Result<(), ServiceError> {
        let login = Login::parse(login)?;
        let now = self.clock.now();
        if let Some(reason) = self.gate(login.as_str(), meta, now).await? {
            return Err(self.blocked(Some(&login), reason, meta).await);
        }
        let violations = self.violations(&login, None, new).await;
        let mut e = self.event(Activity::PasswordChanged, Some(&login), meta);
        // A policy without "change", or an account its user reported: refused, but only to someone
        // who knows the password.
        let account = self.directory.find_account(&login).await?;
        let canonical = account.as_ref().map_or(&login, |a| &a.login);
        let flagged = self.store.flag(canonical).await?.is_some();
        if flagged || account.is_some_and(|a| !self.policy_for(&a).allows(SelfService::Change)) {
            let err = match self.directory.authenticate(&login, old).await {
                Ok(_) if flagged => ServiceError::AccountLocked,
                Ok(_) => ServiceError::NotAllowed("changing your password here"),
                Err(err) => ServiceError::from(err),
            };
            e.result = Outcome::Failure;
            e.reason = Some(err.code().into());
            self.store.record(Changes::audit(e)).await?;
            return Err(err);
        }
        if !violations.is_empty() {
            e.result = Outcome::Failure;
            e.reason = Some("password_rejected".into());
            self.store.record(Changes::audit(e)).await?;
            return Err(ServiceError::PasswordRejected(violations));
        }
        match self.directory.change_password(&login, old, new).await {
            Ok(()) => {
                let mut changes = self.notifications(&login, "your password was changed").await;
                changes.audit.push(e);
                self.store.record(changes).await?;
                self.store.delete_sessions_of(&login).await?;
                Ok(())
            }
            Err(err) => {
                let err = ServiceError::from(err);
                e.result = Outcome::Failure;
                e.reason = Some(err.code().into());
                let mut changes = Changes::audit(e);
                if matches!(err, ServiceError::InvalidCredentials) {
                    changes.hits = self.account_hits(&login, meta, now).await?;
                }
                self.store.record(changes).await?;
                Err(err)
            }
        }
    }

    /// Signs in to the registration portal with the directory password.
    pub async fn sign_in(
        &self,
        login: &str,
        password: &Password,
        meta: &RequestMeta,
    ) -> Result<Token, ServiceError> {
        let login = Login::parse(login)?;
        let now = self.clock.now();
        if let Some(reason) = self.gate(login.as_str(), meta, now).await? {
            return Err(self.blocked(Some(&login), reason, meta).await);
        }
        match self.directory.authenticate(&login, password).await {
            Ok(account) if self.store.flag(&account.login).await?.is_some() => {
                // Reported by its user ("this wasn't me"): whoever knows the password gets no session.
                let mut e = self.event(Activity::SignInFailed, Some(&account.login), meta);
                e.result = Outcome::Failure;
                e.reason = Some("reported_not_me".into());
                self.store.record(Changes::audit(e)).await?;
                Err(ServiceError::AccountLocked)
            }
            Ok(account) => {
                let token = Token::generate(self.rng.as_ref());
                let now = self.clock.now();
                let session = Session {
                    token_hash: token.hash(),
                    login: account.login.clone(),
                    created_at: now,
                    expires_at: now + self.settings.session_lifetime,
                };
                let e = self.event(Activity::SignedIn, Some(&account.login), meta);
                self.store.insert_session(&session, Changes::audit(e)).await?;
                Ok(token)
            }
            Err(err) => {
                let err = ServiceError::from(err);
                let mut e = self.event(Activity::SignInFailed, Some(&login), meta);
                e.result = Outcome::Failure;
                e.reason = Some(err.code().into());
                let mut changes = Changes::audit(e);
                if matches!(err, ServiceError::InvalidCredentials) {
                    changes.hits = self.account_hits(&login, meta, now).await?;
                }
                self.store.record(changes).await?;
                Err(err)
            }
        }
    }

    /// Resolves a session token into a capability.
    pub async fn session(&self, token: &str) -> Result<SessionCtx, ServiceError> {
        let token = Token::parse(token).map_err(|_| ServiceError::Unauthorized)?;
        let s = self
            .store
            .session(&token.hash())
            .await?
            .ok_or(ServiceError::Unauthorized)?;
        if self.clock.now() >= s.expires_at {
            self.store.delete_session(&s.token_hash).await?;
            return Err(ServiceError::Unauthorized);
        }
        Ok(SessionCtx {
            login: s.login,
            token: s.token_hash,
        })
    }

    pub async fn sign_out(&self, ctx: SessionCtx) -> Result<(), ServiceError> {
        Ok(self.store.delete_session(&ctx.token).await?)
    }

    pub async fn my_methods(&self, ctx: &SessionCtx) -> Result<Vec<Method>, ServiceError> {
        Ok(self.store.methods(&ctx.login).await?)
    }

    /// Imports one user (HR feed or `users add`). Idempotent. An alternate email from HR counts as
    /// registered: that is how a new hire receives the code that sets the first password.
    pub async fn import_user(&self, user: &NewUser, source: &str) -> Result<ImportOutcome, ServiceError> {
        let spec = AccountSpec {
            login: user.login.clone(),
            display_name: user.display_name.clone(),
            email: user.email.clone(),
            groups: user.groups.clone(),
            password: user.password.clone(),
        };
        let account_created = match self.directory.provision(&spec).await {
            Ok(created) => created,
            Err(DirectoryError::Unsupported(_)) if user.password.is_some() => {
                return Err(ParseError::new(
                    "password",
                    format!(
                    "the {} directory holds its own accounts; set a password with `gatehouse users reset` \
                         or let the user choose one through the reset flow",
                    self.directory.name()
                ),
                )
                .into())
            }
            Err(DirectoryError::Unsupported(_)) => false,
            Err(e) => return Err(e.into()),
        };
        let profile = UserProfile {
            login: user.login.clone(),
            display_name: user.display_name.clone(),
            email: user.email.clone(),
            mobile_phone: user.mobile_phone.clone(),
            groups: user.groups.clone(),
            disabled: false,
        };
        let activity = if source == "cli" {
            Activity::UserAdded
        } else {
            Activity::UserImported
        };
        let mut e = self.event(activity, Some(&user.login), &RequestMeta::default());
        e.actor = format!("admin:{source}");
        self.store.upsert_profile(&profile, Changes::audit(e)).await?;
        let mut method_added = false;
        let trusted = self.settings.trust_import_contacts;
        let now = self.clock.now();
        let mut contacts: Vec<(MethodKind, Target)> = vec![];
        if let Some(alt) = &user.alternate_email {
            contacts.push((MethodKind::Email, Target::Email(alt.clone())));
        }
        if let Some(phone) = user
            .mobile_phone
            .as_deref()
            .and_then(|p| Phone::parse(p, &self.settings.default_region).ok())
        {
            contacts.push((MethodKind::Sms, Target::Phone(phone)));
        }
        let existing = self.store.methods(&user.login).await?;
        for (kind, target) in contacts {
            let known = existing.iter().any(|m| {
                m.kind == kind
                    && m.target
                        .address()
                        .zip(target.address())
                        .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b))
            });
            if known {
                continue;
            }
            let method = Method {
                id: self.new_method_id(),
                login: user.login.clone(),
                kind,
                target,
                verified: trusted,
                source: source.to_owned(),
                created_at: now,
                confirmed_at: trusted.then_some(now),
            };
            let mut e = self.event(
                Activity::MethodRegistered,
                Some(&user.login),
                &RequestMeta::default(),
            );
            e.actor = format!("admin:{source}");
            e.method = Some(kind);
            self.store.insert_method(&method, None, Changes::audit(e)).await?;
            method_added = true;
        }
        Ok(ImportOutcome {
            account_created,
            method_added,
        })
    }

    pub async fn account(&self, login: &Login) -> Result<Option<Account>, ServiceError> {
        Ok(self.directory.find_account(login).await?)
    }

    pub async fn audit_page(
        &self,
        after_id: i64,
        since: Option<OffsetDateTime>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, ServiceError> {
        Ok(self.store.audit_after(after_id, since, limit).await?)
    }

    pub async fn recent_mail(&self, limit: u32) -> Result<Vec<QueuedMail>, ServiceError> {
        Ok(self.store.recent_mail(limit).await?)
    }

    /// One synchronisation pass: users, groups and contact candidates from the directory into the
    /// store, incrementally from the stored watermark unless `full`. Users who left the scope are
    /// disabled in the store (self-service then treats them like unknown logins).
    pub async fn sync_directory(&self, full: bool) -> Result<SyncReport, ServiceError> {
        let source = self.directory.name().to_owned();
        let watermark = if full {
            None
        } else {
            self.store.sync_watermark(&source).await?
        };
        let batch = self.directory.sync_scan(watermark.as_deref()).await?;
        let in_scope: std::collections::HashSet<&str> = batch.in_scope.iter().map(|l| l.as_str()).collect();
        let disable: Vec<Login> = self
            .store
            .synced_logins(&source)
            .await?
            .into_iter()
            .filter(|l| !in_scope.contains(l.as_str()))
            .collect();
        let now = self.clock.now();
        let report = SyncReport {
            full: watermark.is_none(),
            read: batch.users.len(),
            disabled: disable.len(),
            skipped: batch.skipped.clone(),
        };
        let pages: Vec<&[SyncedUser]> = if batch.users.is_empty() {
            vec![&[]]
        } else {
            batch.users.chunks(SYNC_PAGE).collect()
        };
        let count = pages.len();
        for (i, page) in pages.into_iter().enumerate() {
            let last = i + 1 == count;
            let mut write = SyncWrite {
                source: source.clone(),
                ..SyncWrite::default()
            };
            for u in page {
                write.profiles.push(UserProfile {
                    login: u.login.clone(),
                    display_name: u.display_name.clone(),
                    email: u.email.clone(),
                    mobile_phone: u.mobile_phone.clone(),
                    groups: u.groups.clone(),
                    disabled: u.disabled,
                });
                let trusted = self.settings.trust_directory_contacts;
                let phone = u
                    .mobile_phone
                    .as_deref()
                    .and_then(|p| Phone::parse(p, &self.settings.default_region).ok());
                let contacts = u
                    .personal_email
                    .clone()
                    .map(|e| (MethodKind::Email, Target::Email(e)))
                    .into_iter()
                    .chain(phone.map(|p| (MethodKind::Sms, Target::Phone(p))));
                for (kind, target) in contacts {
                    write.candidates.push(Method {
                        id: self.new_method_id(),
                        login: u.login.clone(),
                        kind,
                        target,
                        verified: trusted,
                        source: format!("directory:{source}"),
                        created_at: now,
                        confirmed_at: trusted.then_some(now),
                    });
                }
            }
            let mut changes = Changes::default();
            if last {
                write.disable = disable.clone();
                write.watermark = batch.watermark.clone();
                for login in &disable {
                    let mut e = self.event(Activity::UserDisabled, Some(login), &RequestMeta::default());
                    e.actor = format!("sync:{source}");
                    e.reason = Some("left_scope".into());
                    changes.audit.push(e);
                }
                let mut e = self.event(Activity::DirectorySynced, None, &RequestMeta::default());
                e.actor = format!("sync:{source}");
                e.reason = Some(format!(
                    "{} users read, {} disabled, {} skipped{}",
                    report.read,
                    report.disabled,
                    report.skipped.len(),
                    if report.full { " (full)" } else { "" }
                ));
                changes.audit.push(e);
            }
            self.store.apply_sync(&write, changes).await?;
        }
        Ok(report)
    }

    /// The directory's self-test: connection and service-account rights.
    pub async fn directory_test(&self, sample: Option<&Login>) -> Vec<RightCheck> {
        self.directory.self_test(sample).await
    }

    pub async fn readiness(&self) -> Readiness {
        let store = self.store.health().await.map_err(|e| e.to_string());
        let directory = self.directory.health().await.map_err(|e| e.to_string());
        let now = self.clock.now();
        let cached = self
            .rights
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .filter(|(at, _)| now < *at + RIGHTS_TTL && directory.is_ok());
        let rights = match cached {
            Some((_, r)) => r,
            None if directory.is_ok() => {
                let r = self.directory.self_test(None).await;
                if let Ok(mut c) = self.rights.lock() {
                    *c = Some((now, r.clone()));
                }
                r
            }
            None => vec![],
        };
        Readiness {
            store,
            directory,
            rights,
        }
    }
}
