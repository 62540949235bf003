//! The use cases. Each handler (web, API, CLI) calls exactly one of these.
use crate::audit::{Activity, AuditEvent, Outcome};
use crate::error::ServiceError;
use crate::flow::{Flow, FlowError, FlowMethod, FlowStep};
use crate::messages::{self, Branding};
use crate::password::{PasswordPolicy, RuleText, Violation};
use crate::ports::{
    Account, AccountSpec, AuditRow, Changes, Clock, Directory, DirectoryError, FailureOp, Method,
    MethodCheck, MethodCode, MethodVerification, QueuedMail, RightCheck, SecureRng, Session, Store,
    SyncWrite, SyncedUser, UserProfile,
};
use crate::secret::{InstanceKey, OtpCode, Password, Token, TokenHash};
use crate::types::{Email, FlowId, FlowKind, Login, MethodId, MethodKind, ParseError};
use std::net::IpAddr;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// Immutable settings of the use cases, checked by the configuration layer.
#[derive(Clone, Debug)]
pub struct Settings {
    pub branding: Branding,
    pub code_digits: u8,
    pub code_lifetime: Duration,
    pub flow_lifetime: Duration,
    pub max_code_attempts: u32,
    pub attempt_window: Duration,
    pub session_lifetime: Duration,
    pub methods_required: u8,
    pub max_methods: usize,
    pub password: PasswordPolicy,
    /// Contact attributes synchronised from the directory count as registered methods without the
    /// user verifying them (off by default: directory attributes are often self-editable).
    pub trust_directory_contacts: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            branding: Branding {
                organisation: "Gatehouse".into(),
                public_url: "http://127.0.0.1:8080".into(),
                helpdesk: "your IT helpdesk".into(),
            },
            code_digits: 6,
            code_lifetime: Duration::minutes(10),
            flow_lifetime: Duration::minutes(15),
            max_code_attempts: 5,
            attempt_window: Duration::hours(24),
            session_lifetime: Duration::minutes(30),
            methods_required: 1,
            max_methods: 5,
            password: PasswordPolicy::default(),
            trust_directory_contacts: false,
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
                })
                .collect(),
            code_sent_to: f.code.as_ref().map(|c| c.method.clone()),
            unlock_available: f.offer_unlock && f.step == FlowStep::Password,
        }
    }
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

const DECOY_PROVIDERS: [(&str, &str); 8] = [
    ("gmail", "com"),
    ("outlook", "com"),
    ("yahoo", "com"),
    ("proton", "me"),
    ("icloud", "com"),
    ("gmx", "net"),
    ("hotmail", "com"),
    ("web", "de"),
];

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
        Ok(Self {
            directory,
            store,
            clock,
            rng,
            settings: Arc::new(settings),
            key,
            rights: Arc::default(),
        })
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

    fn random_hex(&self, bytes: usize) -> String {
        let mut b = vec![0u8; bytes];
        self.rng.fill(&mut b);
        hex::encode(b)
    }

    fn decoy_methods(&self, login: &Login, n: u8) -> Vec<FlowMethod> {
        (0..n.max(1))
            .map(|i| {
                let b = self.key.derive("decoy-method", &format!("{i}:{login}"));
                let (provider, tld) = DECOY_PROVIDERS[usize::from(b[11]) % DECOY_PROVIDERS.len()];
                let letter = char::from(b'a' + b[10] % 26);
                let first = provider.chars().next().unwrap_or('m');
                FlowMethod {
                    id: MethodId::from_bytes(&b[..10]),
                    kind: MethodKind::Email,
                    hint: format!("{letter}•••@{first}•••.{tld}"),
                    address: None,
                }
            })
            .collect()
    }

    /// Starts a reset or unlock flow. Unknown, disabled and unregistered logins get a decoy flow
    /// with the same shape, so the answer says nothing about the account.
    pub async fn start_flow(
        &self,
        kind: FlowKind,
        login: &str,
        meta: &RequestMeta,
    ) -> Result<StartedFlow, ServiceError> {
        let login = Login::parse(login)?;
        let now = self.clock.now();
        let account = self.directory.find_account(&login).await?;
        // The user may type any login attribute (uid or mail); methods are kept under the canonical one.
        let login = account.as_ref().map(|a| a.login.clone()).unwrap_or(login);
        let left_scope = match self.store.profile(&login).await? {
            Some(p) => p.disabled,
            None => false,
        };
        let verified: Vec<Method> = self
            .store
            .methods(&login)
            .await?
            .into_iter()
            .filter(|m| m.verified)
            .collect();
        // Protected accounts get the privileged policy: at least two methods.
        let privileged = account.as_ref().is_some_and(|a| a.privileged && !a.disabled);
        let default_required = self.settings.methods_required.max(1);
        let required = if privileged {
            default_required.max(2)
        } else {
            default_required
        };
        let reason = match &account {
            None => Some("unknown_account"),
            Some(a) if a.disabled || left_scope => Some("account_disabled"),
            Some(_) if verified.len() < usize::from(required) => Some("not_enough_methods"),
            Some(_) => None,
        };
        // A decoy asks for what an unknown login would be asked for.
        let (methods, required) = match reason {
            None => (
                verified
                    .iter()
                    .map(|m| FlowMethod {
                        id: m.id.clone(),
                        kind: m.kind,
                        hint: m.address.masked(),
                        address: Some(m.address.clone()),
                    })
                    .collect(),
                required,
            ),
            Some(_) => (self.decoy_methods(&login, default_required), default_required),
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
                && account.as_ref().is_some_and(|a| a.locked),
        };
        let mut event = self.flow_event(Activity::FlowStarted, &flow, meta);
        event.reason = Some(reason.unwrap_or(kind.as_str()).to_owned());
        self.store.insert_flow(&flow, Changes::audit(event)).await?;
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

    /// Sends a fresh code to one of the flow's methods (nothing leaves for a decoy).
    pub async fn send_code(&self, token: &str, method: &str, meta: &RequestMeta) -> Result<(), ServiceError> {
        let method = MethodId::parse(method).map_err(|_| FlowError::UnknownMethod)?;
        let mut flow = self.load_flow(token).await?;
        let now = self.clock.now();
        let code = OtpCode::generate(self.rng.as_ref(), self.settings.code_digits);
        let hash = self.key.code_hash(&flow.id.0, &code);
        let version = flow.version;
        let m = flow.code_sent(&method, hash, now, self.settings.code_lifetime)?;
        let mut event = self.flow_event(Activity::CodeSent, &flow, meta);
        event.method = Some(m.kind);
        let mut changes = Changes::default();
        match (&m.address, flow.genuine) {
            (Some(to), true) => changes.mail.push(messages::code(
                &self.settings.branding,
                to,
                code.expose_secret(),
                self.settings.code_lifetime.whole_minutes(),
                match flow.kind {
                    FlowKind::Reset => "reset your password",
                    FlowKind::Unlock => "unlock your account",
                },
            )),
            _ => event.reason = Some("suppressed_decoy".into()),
        }
        changes.audit.push(event);
        flow.version += 1;
        if self.store.save_flow(&flow, version, changes).await? {
            Ok(())
        } else {
            Err(FlowError::WrongStep.into())
        }
    }

    fn failure_key(login: &Login) -> String {
        format!("code:{login}")
    }

    /// Checks a code. Wrong codes count per account across flows and re-sent codes.
    pub async fn verify_code(
        &self,
        token: &str,
        method: &str,
        code: &str,
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
        if failures >= self.settings.max_code_attempts {
            let mut e = self.flow_event(Activity::Blocked, &flow, meta);
            e.result = Outcome::Failure;
            e.reason = Some("too_many_attempts".into());
            self.store.record(Changes::audit(e)).await?;
            return Err(ServiceError::TooManyAttempts);
        }
        let typed = match OtpCode::parse(code) {
            Ok(c) => self.key.code_hash(&flow.id.0, &c),
            // A malformed code can never match; it still counts as a wrong one.
            Err(_) => TokenHash([0; 32]),
        };
        let version = flow.version;
        let kind = flow.methods.iter().find(|m| m.id == method).map(|m| m.kind);
        match flow.verify(&method, &typed, now) {
            Ok(()) => {
                let mut e = self.flow_event(Activity::CodeVerified, &flow, meta);
                e.method = kind;
                let changes = Changes {
                    audit: vec![e],
                    mail: vec![],
                    failure: Some(FailureOp::Clear { key }),
                };
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
                    mail: vec![],
                    failure: Some(FailureOp::Increment { key, at: now }),
                };
                self.store.record(changes).await?;
                if failures + 1 >= self.settings.max_code_attempts {
                    Err(ServiceError::TooManyAttempts)
                } else {
                    Err(err.into())
                }
            }
            Err(other) => Err(other.into()),
        }
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

    async fn notifications(&self, login: &Login, what: &str) -> Vec<crate::ports::OutgoingMail> {
        let account = self.directory.find_account(login).await.ok().flatten();
        let name = account
            .as_ref()
            .map(|a| a.display_name.clone())
            .unwrap_or_else(|| login.to_string());
        let mut to: Vec<Email> = account.and_then(|a| a.email).into_iter().collect();
        if let Ok(methods) = self.store.methods(login).await {
            to.extend(methods.into_iter().filter(|m| m.verified).map(|m| m.address));
        }
        to.sort_by_key(|a| a.as_str().to_lowercase());
        to.dedup_by(|a, b| a.as_str().eq_ignore_ascii_case(b.as_str()));
        to.iter()
            .map(|t| messages::notification(&self.settings.branding, t, &name, what))
            .collect()
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
                let mut changes = Changes::audit(self.flow_event(activity, &flow, meta));
                changes.mail = self.notifications(&flow.login, what).await;
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
        let violations = self.violations(&login, None, new).await;
        let mut e = self.event(Activity::PasswordChanged, Some(&login), meta);
        if !violations.is_empty() {
            e.result = Outcome::Failure;
            e.reason = Some("password_rejected".into());
            self.store.record(Changes::audit(e)).await?;
            return Err(ServiceError::PasswordRejected(violations));
        }
        match self.directory.change_password(&login, old, new).await {
            Ok(()) => {
                let mut changes = Changes::audit(e);
                changes.mail = self.notifications(&login, "your password was changed").await;
                self.store.record(changes).await?;
                self.store.delete_sessions_of(&login).await?;
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

    /// Signs in to the registration portal with the directory password.
    pub async fn sign_in(
        &self,
        login: &str,
        password: &Password,
        meta: &RequestMeta,
    ) -> Result<Token, ServiceError> {
        let login = Login::parse(login)?;
        match self.directory.authenticate(&login, password).await {
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
                self.store.record(Changes::audit(e)).await?;
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

    /// Registers an alternate address; a code goes to it, and it counts once verified.
    pub async fn add_method(
        &self,
        ctx: &SessionCtx,
        kind: &str,
        address: &str,
        meta: &RequestMeta,
    ) -> Result<Method, ServiceError> {
        let kind = MethodKind::parse(kind)?;
        let address = Email::parse(address)?;
        let mut existing = self.store.methods(&ctx.login).await?;
        if let Some(m) = existing
            .iter()
            .find(|m| m.address.as_str().eq_ignore_ascii_case(address.as_str()))
        {
            if m.verified {
                return Err(ParseError::new("address", "this address is already registered").into());
            }
            // Not verified yet (a directory candidate, or a code that never arrived): start over with a
            // fresh code.
            self.store
                .remove_method(&ctx.login, &m.id, Changes::default())
                .await?;
            let id = m.id.clone();
            existing.retain(|x| x.id != id);
        }
        if existing.len() >= self.settings.max_methods {
            return Err(ParseError::new(
                "address",
                format!(
                    "at most {} methods can be registered; remove one first",
                    self.settings.max_methods
                ),
            )
            .into());
        }
        let now = self.clock.now();
        let mut id = [0u8; 10];
        self.rng.fill(&mut id);
        let method = Method {
            id: MethodId::from_bytes(&id),
            login: ctx.login.clone(),
            kind,
            address: address.clone(),
            verified: false,
            source: "user".into(),
            created_at: now,
        };
        let code = OtpCode::generate(self.rng.as_ref(), self.settings.code_digits);
        let pending = MethodCode {
            hash: self.key.code_hash(method.id.as_str(), &code),
            expires_at: now + self.settings.code_lifetime,
        };
        let mut e = self.event(Activity::MethodRegistered, Some(&ctx.login), meta);
        e.method = Some(kind);
        let mail = messages::code(
            &self.settings.branding,
            &address,
            code.expose_secret(),
            self.settings.code_lifetime.whole_minutes(),
            "confirm this address for password reset",
        );
        let changes = Changes {
            audit: vec![e],
            mail: vec![mail],
            failure: None,
        };
        self.store.insert_method(&method, Some(&pending), changes).await?;
        Ok(method)
    }

    pub async fn verify_method(
        &self,
        ctx: &SessionCtx,
        id: &str,
        code: &str,
        meta: &RequestMeta,
    ) -> Result<(), ServiceError> {
        let id = MethodId::parse(id).map_err(|_| ServiceError::NotFound)?;
        let typed = match OtpCode::parse(code) {
            Ok(c) => self.key.code_hash(id.as_str(), &c),
            Err(_) => TokenHash([0; 32]),
        };
        let mut ok = self.event(Activity::MethodVerified, Some(&ctx.login), meta);
        ok.method = Some(MethodKind::Email);
        let mut failed = ok.clone();
        failed.result = Outcome::Failure;
        failed.reason = Some("invalid_code".into());
        let now = self.clock.now();
        match self
            .store
            .verify_method(
                MethodCheck {
                    login: &ctx.login,
                    id: &id,
                    code: &typed,
                    now,
                    max_attempts: self.settings.max_code_attempts,
                },
                Changes::audit(ok),
                Changes::audit(failed),
            )
            .await?
        {
            MethodVerification::Verified => Ok(()),
            MethodVerification::WrongCode => Err(FlowError::InvalidCode.into()),
            MethodVerification::Expired => Err(FlowError::CodeExpired.into()),
            MethodVerification::TooManyAttempts => Err(ServiceError::TooManyAttempts),
            MethodVerification::NotFound => Err(ServiceError::NotFound),
        }
    }

    pub async fn remove_method(
        &self,
        ctx: &SessionCtx,
        id: &str,
        meta: &RequestMeta,
    ) -> Result<(), ServiceError> {
        let id = MethodId::parse(id).map_err(|_| ServiceError::NotFound)?;
        let methods = self.store.methods(&ctx.login).await?;
        let Some(m) = methods.into_iter().find(|m| m.id == id) else {
            return Err(ServiceError::NotFound);
        };
        let mut e = self.event(Activity::MethodRemoved, Some(&ctx.login), meta);
        e.method = Some(m.kind);
        let mut changes = Changes::audit(e);
        if m.verified {
            changes.mail.push(messages::notification(
                &self.settings.branding,
                &m.address,
                ctx.login.as_str(),
                "this address was removed from your password reset methods",
            ));
        }
        if self.store.remove_method(&ctx.login, &id, changes).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound)
        }
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
        if let Some(alt) = &user.alternate_email {
            let existing = self.store.methods(&user.login).await?;
            if !existing
                .iter()
                .any(|m| m.address.as_str().eq_ignore_ascii_case(alt.as_str()))
            {
                let mut id = [0u8; 10];
                self.rng.fill(&mut id);
                let method = Method {
                    id: MethodId::from_bytes(&id),
                    login: user.login.clone(),
                    kind: MethodKind::Email,
                    address: alt.clone(),
                    verified: true,
                    source: source.to_owned(),
                    created_at: self.clock.now(),
                };
                let mut e = self.event(
                    Activity::MethodRegistered,
                    Some(&user.login),
                    &RequestMeta::default(),
                );
                e.actor = format!("admin:{source}");
                e.method = Some(MethodKind::Email);
                self.store.insert_method(&method, None, Changes::audit(e)).await?;
                method_added = true;
            }
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
                if let Some(alt) = &u.personal_email {
                    let mut id = [0u8; 10];
                    self.rng.fill(&mut id);
                    write.candidates.push(Method {
                        id: MethodId::from_bytes(&id),
                        login: u.login.clone(),
                        kind: MethodKind::Email,
                        address: alt.clone(),
                        verified: self.settings.trust_directory_contacts,
                        source: format!("directory:{source}"),
                        created_at: now,
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
