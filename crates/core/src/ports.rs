//! The ports the use cases need. Adapters live in other crates.
use crate::audit::AuditEvent;
use crate::flow::Flow;
use crate::password::Violation;
use crate::phone::Phone;
use crate::secret::{Password, TokenHash};
use crate::types::{Email, Login, MethodId, MethodKind};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

pub trait SecureRng: Send + Sync {
    fn fill(&self, buf: &mut [u8]);
    /// A uniform number in `0..n` (rejection sampling, no modulo bias).
    fn below(&self, n: u32) -> u32 {
        let n = n.max(1);
        let zone = u32::MAX - (u32::MAX % n);
        loop {
            let mut b = [0u8; 4];
            self.fill(&mut b);
            let v = u32::from_le_bytes(b);
            if v < zone {
                return v % n;
            }
        }
    }
}

/// An account as the directory sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub login: Login,
    pub display_name: String,
    pub email: Option<Email>,
    pub disabled: bool,
    pub locked: bool,
    pub has_password: bool,
    pub groups: Vec<String>,
    /// The password was set by an administrator and must be changed (ppolicy `pwdReset`, AD `pwdLastSet=0`).
    pub must_change: bool,
    /// The password is past its maximum age.
    pub expired: bool,
    /// Grace logins left after expiry, when the directory allows them.
    pub grace_logins_left: Option<u32>,
    /// A protected account (AD `adminCount=1`, or a member of a configured privileged group): it gets
    /// the privileged policy (at least two methods).
    pub privileged: bool,
}

/// What to create in a directory that can hold accounts (the builtin one).
#[derive(Clone, Debug)]
pub struct AccountSpec {
    pub login: Login,
    pub display_name: String,
    pub email: Option<Email>,
    pub groups: Vec<String>,
    pub password: Option<Password>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error("the directory is unavailable: {0}")]
    Unavailable(String),
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("the directory refused the password")]
    Rejected(Vec<Violation>),
    #[error("the account is locked")]
    Locked,
    #[error("the account is disabled")]
    Disabled,
    /// The password was right but has expired; the user may only change it.
    #[error("the password has expired")]
    PasswordExpired,
    /// The directory refuses this sign-in for a reason the user should hear (AD: outside logon
    /// hours, not from this workstation, account expired); the text says it in plain words.
    #[error("sign-in restricted: {0}")]
    Restricted(String),
    /// The service account lacks a right it needs (names the right and the entry).
    #[error("the service account may not do this: {0}")]
    InsufficientRights(String),
    #[error("no such account")]
    NotFound,
    #[error("not supported by this directory: {0}")]
    Unsupported(&'static str),
    #[error("directory error: {0}")]
    Other(String),
}

/// The writeback target: builtin, OpenLDAP or Active Directory.
#[async_trait]
pub trait Directory: Send + Sync {
    /// A short name for logs and audit ("builtin", "ldap", "ad").
    fn name(&self) -> &str;
    async fn find_account(&self, login: &Login) -> Result<Option<Account>, DirectoryError>;
    /// Checks the password; counts a failure toward the directory's lockout.
    async fn authenticate(&self, login: &Login, password: &Password) -> Result<Account, DirectoryError>;
    /// Sets a new password as the service would, and unlocks the account.
    async fn reset_password(&self, login: &Login, new: &Password) -> Result<(), DirectoryError>;
    /// Changes the password as the user, who proves the old one.
    async fn change_password(
        &self,
        login: &Login,
        old: &Password,
        new: &Password,
    ) -> Result<(), DirectoryError>;
    /// Clears a lockout without touching the password.
    async fn unlock(&self, login: &Login) -> Result<(), DirectoryError>;
    /// Creates or updates an account where the directory holds them; `Unsupported` elsewhere.
    async fn provision(&self, spec: &AccountSpec) -> Result<bool, DirectoryError>;
    async fn health(&self) -> Result<(), DirectoryError>;

    /// A helpdesk reset: sets the password as the service and, when asked, marks it "must change at
    /// next logon".
    /// Locks the account (after a "this wasn't me" report). Directories that cannot lock say
    /// Unsupported, and the account is flagged for the helpdesk instead.
    async fn lock(&self, login: &Login) -> Result<(), DirectoryError> {
        let _ = login;
        Err(DirectoryError::Unsupported("locking an account"))
    }

    async fn helpdesk_reset(
        &self,
        login: &Login,
        new: &Password,
        must_change: bool,
    ) -> Result<(), DirectoryError> {
        if must_change {
            return Err(DirectoryError::Unsupported("must change at next logon"));
        }
        self.reset_password(login, new).await
    }

    /// Checks the connection and the service account's rights, one verdict per right.
    /// `sample` is a user to test against (the first user in scope when absent).
    async fn self_test(&self, sample: Option<&Login>) -> Vec<RightCheck> {
        let _ = sample;
        vec![match self.health().await {
            Ok(()) => RightCheck::ok("connect", "The directory answers."),
            Err(e) => RightCheck::missing("connect", e.to_string()),
        }]
    }

    /// The directory's password rules: the user's own (fine-grained) ones when `login` is given,
    /// else the defaults for everyone.
    async fn password_rules(&self, login: Option<&Login>) -> Option<crate::password::DirectoryRules> {
        let _ = login;
        None
    }

    /// Reads users in scope for the store: everything when `watermark` is `None`, else what changed since.
    async fn sync_scan(&self, watermark: Option<&str>) -> Result<SyncBatch, DirectoryError> {
        let _ = watermark;
        Err(DirectoryError::Unsupported("synchronisation"))
    }
}

/// One verdict of a directory self-test.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RightCheck {
    pub right: String,
    pub ok: bool,
    /// False when the check could not run safely (it then says why); it does not fail readiness.
    pub tested: bool,
    pub detail: String,
}

impl RightCheck {
    pub fn ok(right: &str, detail: impl Into<String>) -> Self {
        Self {
            right: right.into(),
            ok: true,
            tested: true,
            detail: detail.into(),
        }
    }
    pub fn missing(right: &str, detail: impl Into<String>) -> Self {
        Self {
            right: right.into(),
            ok: false,
            tested: true,
            detail: detail.into(),
        }
    }
    pub fn untested(right: &str, detail: impl Into<String>) -> Self {
        Self {
            tested: false,
            ..Self::missing(right, detail)
        }
    }
}

/// A user as read from the directory for synchronisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncedUser {
    pub login: Login,
    pub display_name: String,
    pub email: Option<Email>,
    /// The mobile number as the directory holds it: a phone-method candidate.
    pub mobile_phone: Option<String>,
    /// The personal (non-work) email: an alternate-email-method candidate.
    pub personal_email: Option<Email>,
    pub groups: Vec<String>,
    pub disabled: bool,
}

/// What one synchronisation pass read from the directory.
#[derive(Clone, Debug, Default)]
pub struct SyncBatch {
    /// Users added or changed since the watermark (all users on a full scan).
    pub users: Vec<SyncedUser>,
    /// Every login in scope now (to find the users who left it).
    pub in_scope: Vec<Login>,
    /// Entries that could not be read as users (no login attribute, bad value), with the reason.
    pub skipped: Vec<String>,
    /// The watermark to pass next time.
    pub watermark: Option<String>,
}

/// A registered verification method.
/// One answer of a registered security-question set: the question's id and the argon2id hash of
/// the normalised answer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    pub question: String,
    pub hash: String,
}

/// What a registered method proves possession of.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    Email(Email),
    /// A phone number for SMS or voice codes.
    Phone(Phone),
    /// An authenticator app: its shared key and the last time step a code was accepted for.
    Totp {
        secret: Vec<u8>,
        last_step: Option<u64>,
    },
    Questions(Vec<StoredAnswer>),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Email(e) => write!(f, "{e:?}"),
            Self::Phone(p) => write!(f, "{p:?}"),
            Self::Totp { .. } => f.write_str("Totp(redacted)"),
            Self::Questions(a) => write!(f, "Questions({} answers, redacted)", a.len()),
        }
    }
}

impl Target {
    /// The address or number a code goes to.
    pub fn address(&self) -> Option<&str> {
        match self {
            Self::Email(e) => Some(e.as_str()),
            Self::Phone(p) => Some(p.as_str()),
            _ => None,
        }
    }
}

/// One combination of verified methods and how many users have it: the kinds in registration
/// order, with the number of registered answers for security questions (0 for the others).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodShape {
    pub kinds: Vec<(MethodKind, u8)>,
    pub users: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Method {
    pub id: MethodId,
    pub login: Login,
    pub kind: MethodKind,
    pub target: Target,
    pub verified: bool,
    pub source: String,
    pub created_at: OffsetDateTime,
    /// When the user last verified or confirmed it (re-confirmation counts from here).
    pub confirmed_at: Option<OffsetDateTime>,
}

impl Method {
    /// A hint that lets the user recognise the method without revealing it.
    pub fn hint(&self) -> String {
        match &self.target {
            Target::Email(e) => e.masked(),
            Target::Phone(p) => p.masked(),
            Target::Totp { .. } => self.kind.label().to_owned(),
            Target::Questions(a) => format!("{} ({})", self.kind.label(), a.len()),
        }
    }
    pub fn email(&self) -> Option<&Email> {
        match &self.target {
            Target::Email(e) => Some(e),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct MethodCode {
    pub hash: TokenHash,
    pub expires_at: OffsetDateTime,
}

/// A message to deliver through the outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingMail {
    pub to: Email,
    pub subject: String,
    pub body: String,
}

#[derive(Clone, Debug)]
pub struct QueuedMail {
    pub id: i64,
    pub mail: OutgoingMail,
    pub attempts: u32,
    pub created_at: OffsetDateTime,
    pub sent_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
}

/// The per-account counter of wrong codes, kept across flows and re-sent codes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureOp {
    Increment { key: String, at: OffsetDateTime },
    Clear { key: String },
}

/// What a use case writes together with its state change, in one transaction.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    pub audit: Vec<AuditEvent>,
    pub mail: Vec<OutgoingMail>,
    pub failure: Option<FailureOp>,
    /// Throttling counters to bump (key, time).
    pub hits: Vec<(String, OffsetDateTime)>,
    /// "This wasn't me" links to remember (their hash, whose account, until when).
    pub report_links: Vec<(TokenHash, Login, OffsetDateTime)>,
}

impl Changes {
    pub fn audit(event: AuditEvent) -> Self {
        Self {
            audit: vec![event],
            ..Self::default()
        }
    }
}

#[derive(Clone, Debug)]
pub struct Session {
    pub token_hash: TokenHash,
    pub login: Login,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// A user's profile as imported from HR or synchronised from a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserProfile {
    pub login: Login,
    pub display_name: String,
    pub email: Option<Email>,
    pub mobile_phone: Option<String>,
    pub groups: Vec<String>,
    /// Disabled in the store: the user left the synchronised scope or is disabled in the directory.
    pub disabled: bool,
}

/// One page of a directory synchronisation.
#[derive(Clone, Debug, Default)]
pub struct SyncWrite {
    /// The directory's name, kept on each profile.
    pub source: String,
    pub profiles: Vec<UserProfile>,
    /// Contact candidates from the directory, one per profile that has one; they replace the
    /// previous candidate from the same source.
    pub candidates: Vec<Method>,
    /// Users who left the scope.
    pub disable: Vec<Login>,
    /// Stored after the page is written.
    pub watermark: Option<String>,
}

/// A typed code for a method being registered.
#[derive(Debug, Clone, Copy)]
pub struct MethodCheck<'a> {
    pub login: &'a Login,
    pub id: &'a MethodId,
    pub code: &'a TokenHash,
    pub now: OffsetDateTime,
    pub max_attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodVerification {
    Verified,
    WrongCode,
    Expired,
    TooManyAttempts,
    NotFound,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Other(String),
}

#[derive(Clone, Debug)]
pub struct AuditRow {
    pub id: i64,
    pub event: AuditEvent,
}

/// Persistent state of Gatehouse itself (not the directory's).
#[async_trait]
pub trait Store: Send + Sync {
    /// The instance key; the first caller's candidate wins and is kept.
    async fn instance_key(&self, candidate: [u8; 32]) -> Result<[u8; 32], StoreError>;

    async fn methods(&self, login: &Login) -> Result<Vec<Method>, StoreError>;
    /// How many users have registered each combination of verified methods (in their order), for
    /// decoy flows that look like the population's.
    async fn method_shapes(&self) -> Result<Vec<MethodShape>, StoreError>;
    async fn insert_method(
        &self,
        method: &Method,
        code: Option<&MethodCode>,
        changes: Changes,
    ) -> Result<(), StoreError>;
    /// Atomically checks and consumes a method's pending code (single use under races).
    async fn verify_method(
        &self,
        check: MethodCheck<'_>,
        on_success: Changes,
        on_failure: Changes,
    ) -> Result<MethodVerification, StoreError>;
    async fn remove_method(&self, login: &Login, id: &MethodId, changes: Changes)
        -> Result<bool, StoreError>;
    /// Marks a method verified without a stored code (authenticator app: `totp_step` is the step of
    /// the code that proved it, kept so the same code cannot be used again).
    async fn mark_verified(
        &self,
        login: &Login,
        id: &MethodId,
        at: OffsetDateTime,
        totp_step: Option<u64>,
        changes: Changes,
    ) -> Result<bool, StoreError>;
    /// Records that an authenticator code of `step` was used: true only for the first use of a step
    /// later than every step used before (single use, also under races).
    async fn use_totp_step(&self, id: &MethodId, step: u64, changes: Changes) -> Result<bool, StoreError>;
    /// The user confirmed their verified methods are still theirs.
    async fn reconfirm_methods(
        &self,
        login: &Login,
        at: OffsetDateTime,
        changes: Changes,
    ) -> Result<u64, StoreError>;
    /// Removes every method of a user (helpdesk).
    async fn clear_methods(&self, login: &Login, changes: Changes) -> Result<u64, StoreError>;

    async fn upsert_profile(&self, profile: &UserProfile, changes: Changes) -> Result<(), StoreError>;
    async fn profile(&self, login: &Login) -> Result<Option<UserProfile>, StoreError>;

    /// Writes one page of a directory synchronisation in one transaction.
    async fn apply_sync(&self, write: &SyncWrite, changes: Changes) -> Result<(), StoreError>;
    /// Logins of the enabled profiles that came from `source`.
    async fn synced_logins(&self, source: &str) -> Result<Vec<Login>, StoreError>;
    async fn sync_watermark(&self, source: &str) -> Result<Option<String>, StoreError>;

    async fn insert_flow(&self, flow: &Flow, changes: Changes) -> Result<(), StoreError>;
    async fn flow_by_token(&self, token: &TokenHash) -> Result<Option<Flow>, StoreError>;
    /// Saves the flow if nobody saved it since `expected_version`; false when someone did.
    async fn save_flow(
        &self,
        flow: &Flow,
        expected_version: i64,
        changes: Changes,
    ) -> Result<bool, StoreError>;

    /// Wrong codes for this key since `since`.
    async fn failures(&self, key: &str, since: OffsetDateTime) -> Result<u32, StoreError>;
    /// Uses a "this wasn't me" link once: the login it was for, if it is valid and unused.
    async fn claim_report_link(
        &self,
        token: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<Option<Login>, StoreError>;
    /// Flags (or, with `reason` None, clears the flag of) an account for the helpdesk.
    async fn set_flag(&self, login: &Login, reason: Option<&str>, changes: Changes)
        -> Result<(), StoreError>;
    async fn flag(&self, login: &Login) -> Result<Option<String>, StoreError>;
    /// Forgets counters, flows and sessions that ended before `before`.
    async fn prune(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
    /// Records that a proof-of-work solution (its replay key) was used; false when it already was.
    async fn use_once(&self, key: &str, expires_at: OffsetDateTime) -> Result<bool, StoreError>;

    async fn insert_session(&self, session: &Session, changes: Changes) -> Result<(), StoreError>;
    async fn session(&self, token: &TokenHash) -> Result<Option<Session>, StoreError>;
    async fn delete_session(&self, token: &TokenHash) -> Result<(), StoreError>;
    async fn delete_sessions_of(&self, login: &Login) -> Result<u64, StoreError>;

    /// Writes audit events and mail with no other state change.
    async fn record(&self, changes: Changes) -> Result<(), StoreError>;

    async fn due_mail(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<QueuedMail>, StoreError>;
    /// Marks a message delivered; `scrub` replaces its body (which may hold a code) once it is out.
    async fn mail_sent(&self, id: i64, at: OffsetDateTime, scrub: bool) -> Result<(), StoreError>;
    async fn mail_failed(&self, id: i64, next_attempt: OffsetDateTime, error: &str)
        -> Result<(), StoreError>;
    async fn recent_mail(&self, limit: u32) -> Result<Vec<QueuedMail>, StoreError>;

    async fn audit_after(
        &self,
        after_id: i64,
        since: Option<OffsetDateTime>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError>;

    async fn health(&self) -> Result<(), StoreError>;
}

/// How a code reaches a phone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhoneChannel {
    Sms,
    Voice,
}

/// A text for one phone number (E.164, `+` and digits): an SMS, or words read out by a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhoneMessage {
    pub to: String,
    pub channel: PhoneChannel,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Nothing was sent; trying again later may work (network, 5xx, timeout).
    #[error("the phone provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider refused this message (bad number, blocked destination, credentials).
    #[error("the phone provider refused the message: {0}")]
    Rejected(String),
    /// This provider cannot use this channel (an email-to-SMS gateway cannot call).
    #[error("this provider cannot {0}")]
    Unsupported(&'static str),
}

/// An SMS / voice provider (Twilio-shaped HTTP API, signed webhook, email-to-SMS gateway).
#[async_trait]
pub trait PhoneSender: Send + Sync {
    fn name(&self) -> &str;
    fn channels(&self) -> &[PhoneChannel];
    async fn send(&self, message: &PhoneMessage) -> Result<(), SendError>;
}
