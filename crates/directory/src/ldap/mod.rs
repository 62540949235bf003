//! OpenLDAP and other RFC 4519 directories: password writeback with the ppolicy overlay, unlock,
//! change as the user, account status from operational attributes, self-test and synchronisation.
//!
//! Resets run as the service account. With `enforce_directory_policy` the directory's own rules
//! (length, quality, history, minimum age) apply to self-service resets too, in one of two ways:
//! `UserChange` sets a random temporary password as the service account and then changes it to the
//! chosen one bound as the user (a self-change, checked by ppolicy even when the service account is
//! a password administrator); `ServiceAccount` writes directly, relying on a service account with
//! `write` but not `manage` on `userPassword`, which ppolicy checks like anyone else.
mod hashes;
pub(crate) mod pool;
pub mod ppolicy;
pub(crate) mod sync;

use async_trait::async_trait;
use gatehouse_core::password::Violation;
use gatehouse_core::ports::{Account, Clock, Directory, DirectoryError, RightCheck, SecureRng, SyncBatch};
use gatehouse_core::secret::Password;
use gatehouse_core::types::{Email, Login};
use ldap3::exop::PasswordModify;
use ldap3::{ldap_escape, Ldap, LdapError, LdapResult, Mod, Scope, SearchEntry};
use pool::Pool;
use ppolicy::PolicyError;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// `pwdAccountLockedTime` value of an administrative lock: only an administrator may lift it.
const ADMIN_LOCK: &str = "000001010000Z";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// ldaps:// or ldapi://
    Implicit,
    StartTls,
    /// Plain ldap:// (loopback, or `allow_insecure`).
    None,
}

/// How a self-service reset writes the password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordWrite {
    /// The Password Modify extended operation (RFC 3062).
    Exop,
    /// A modify that replaces `userPassword` (cleartext; the server hashes it).
    Modify,
}

/// How the directory's policy is made to apply to a reset (when `enforce_directory_policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyEnforcement {
    /// Temporary password as the service account, then a change bound as the user.
    UserChange,
    /// A direct write by a service account that is not a password administrator.
    ServiceAccount,
}

#[derive(Clone, Debug)]
pub enum GroupLookup {
    /// Group DNs in an attribute of the user (`memberOf`).
    MemberOf {
        attribute: String,
    },
    /// Groups found by a search, e.g. `(member={dn})` under `base_dn`.
    Search {
        base_dn: String,
        filter: String,
        name_attribute: String,
    },
    None,
}

#[derive(Clone, Debug)]
pub struct AttributeMap {
    pub display_name: String,
    pub mail: String,
    pub mobile: String,
    pub personal_email: Option<String>,
}

impl Default for AttributeMap {
    fn default() -> Self {
        Self {
            display_name: "cn".into(),
            mail: "mail".into(),
            mobile: "mobile".into(),
            personal_email: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct LdapSettings {
    pub url: String,
    pub security: Security,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_insecure_skip_verify: bool,
    pub bind_dn: String,
    pub bind_password: Password,
    pub base_dn: String,
    pub user_filter: String,
    /// Attributes a user may type as their login; the first is the canonical login.
    pub login_attributes: Vec<String>,
    pub attributes: AttributeMap,
    pub groups: GroupLookup,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub operation_timeout: Duration,
    pub enforce_directory_policy: bool,
    pub policy_enforcement: PolicyEnforcement,
    pub password_write: PasswordWrite,
    /// The default ppolicy entry (for users without `pwdPolicySubentry`), to read rules and expiry.
    pub policy_dn: Option<String>,
}

/// The directory's password policy, as read from a `pwdPolicy` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectoryPolicy {
    pub min_length: Option<u32>,
    pub history: Option<u32>,
    pub max_age: Option<u64>,
    pub min_age: Option<u64>,
    pub check_quality: Option<u32>,
    pub grace_logins: Option<u32>,
    pub lockout_duration: Option<u64>,
    pub max_failures: Option<u32>,
}

/// A user entry as read with the service account.
#[derive(Clone, Debug)]
struct UserEntry {
    dn: String,
    account: Account,
    admin_locked: bool,
    policy: Option<DirectoryPolicy>,
}

pub struct LdapDirectory {
    settings: Arc<LdapSettings>,
    pool: Pool,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRng>,
}

/// Maps an LDAP failure to the port's error. Result codes per RFC 4511.
pub fn map_error(e: &LdapError) -> DirectoryError {
    match e {
        LdapError::LdapResult { result } => map_result(result, None),
        other if pool::is_transport(other) => pool::unavailable(other),
        other => DirectoryError::Other(other.to_string()),
    }
}

fn map_result(r: &LdapResult, policy: Option<&DirectoryPolicy>) -> DirectoryError {
    let pp = ppolicy::response(&r.ctrls).and_then(|p| p.error);
    match (r.rc, pp) {
        (49, Some(PolicyError::AccountLocked)) => DirectoryError::Locked,
        (49, Some(PolicyError::PasswordExpired)) => DirectoryError::PasswordExpired,
        (49, _) => DirectoryError::InvalidCredentials,
        (_, Some(e @ (PolicyError::AccountLocked | PolicyError::PasswordExpired))) => match e {
            PolicyError::AccountLocked => DirectoryError::Locked,
            _ => DirectoryError::PasswordExpired,
        },
        (19 | 50 | 53, Some(e)) => DirectoryError::Rejected(vec![ppolicy::violation(e, policy)]),
        (19, None) => DirectoryError::Rejected(vec![violation_from_text(&r.text, policy)]),
        (50, None) => DirectoryError::InsufficientRights(r.text.clone()),
        (32, _) => DirectoryError::NotFound,
        (51 | 52 | 80 | 81 | 85 | 91, _) => {
            DirectoryError::Unavailable(format!("the directory answered {}: {}", r.rc, r.text))
        }
        (rc, _) => DirectoryError::Other(format!("the directory answered {rc}: {}", r.text)),
    }
}

/// OpenLDAP's diagnostic texts for constraint violations without a ppolicy control.
fn violation_from_text(text: &str, policy: Option<&DirectoryPolicy>) -> Violation {
    let t = text.to_ascii_lowercase();
    let error = if t.contains("history") {
        Some(PolicyError::PasswordInHistory)
    } else if t.contains("too short") {
        Some(PolicyError::PasswordTooShort)
    } else if t.contains("too young") {
        Some(PolicyError::PasswordTooYoung)
    } else if t.contains("quality") {
        Some(PolicyError::InsufficientPasswordQuality)
    } else {
        None
    };
    match error {
        Some(e) => ppolicy::violation(e, policy),
        None if t.contains("not being changed") => {
            Violation::new("history", "This is your current password. Choose a new one.")
        }
        None => Violation::new(
            "directory_policy",
            format!("The directory refused the password: {text}"),
        ),
    }
}

pub(crate) fn first<'a>(e: &'a SearchEntry, attr: &str) -> Option<&'a str> {
    e.attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .and_then(|(_, v)| v.first())
        .map(String::as_str)
}

pub(crate) fn all<'a>(e: &'a SearchEntry, attr: &str) -> &'a [String] {
    e.attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .map(|(_, v)| v.as_slice())
        .unwrap_or(&[])
}

/// `20261121211521Z` or with fractions: the UTC time, to the second.
pub fn parse_generalized_time(v: &str) -> Option<OffsetDateTime> {
    let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
    if digits.len() < 14 {
        return None;
    }
    let n = |a: usize, b: usize| digits.get(a..b).and_then(|s| s.parse::<i32>().ok());
    let date = time::Date::from_calendar_date(
        n(0, 4)?,
        time::Month::try_from(u8::try_from(n(4, 6)?).ok()?).ok()?,
        u8::try_from(n(6, 8)?).ok()?,
    )
    .ok()?;
    let t = time::Time::from_hms(
        u8::try_from(n(8, 10)?).ok()?,
        u8::try_from(n(10, 12)?).ok()?,
        u8::try_from(n(12, 14)?).ok()?,
    )
    .ok()?;
    Some(time::PrimitiveDateTime::new(date, t).assume_utc())
}

/// Is `candidate` the password whose hash the entry's `userPassword` holds? (`false` when unknown.)
fn is_current_password(entry: &SearchEntry, candidate: &str) -> bool {
    all(entry, "userPassword")
        .iter()
        .any(|h| hashes::matches(h, candidate) == Some(true))
}

/// A random password that satisfies any sane quality policy (upper, lower, digits, a symbol; 32
/// characters, 26 of them from the OS CSPRNG); it lives for one request.
pub(crate) fn temporary_password(rng: &dyn SecureRng) -> Password {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut s = String::from("Tmp-9z");
    for _ in 0..26 {
        let i = rng.below(u32::try_from(ALPHABET.len()).unwrap_or(1)) as usize;
        s.push(char::from(ALPHABET[i]));
    }
    Password::new(s)
}

/// The first RDN's value of a DN: `cn=staff,ou=groups,…` → `staff`.
pub fn rdn_value(dn: &str) -> String {
    let head = dn.split(',').next().unwrap_or(dn);
    head.split_once('=')
        .map(|(_, v)| v)
        .unwrap_or(head)
        .trim()
        .to_owned()
}

const OPERATIONAL: [&str; 6] = [
    "pwdAccountLockedTime",
    "pwdReset",
    "pwdChangedTime",
    "pwdGraceUseTime",
    "pwdPolicySubentry",
    "pwdFailureTime",
];

impl LdapDirectory {
    pub fn new(
        settings: LdapSettings,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRng>,
    ) -> Result<Self, DirectoryError> {
        let settings = Arc::new(settings);
        Ok(Self {
            pool: Pool::new(settings.clone())?,
            settings,
            clock,
            rng,
        })
    }

    pub fn settings(&self) -> &LdapSettings {
        &self.settings
    }

    fn login_filter(&self, login: &Login) -> String {
        let v = ldap_escape(login.as_str());
        let any: String = self
            .settings
            .login_attributes
            .iter()
            .map(|a| format!("({a}={v})"))
            .collect();
        format!("(&{}(|{any}))", self.settings.user_filter)
    }

    fn user_attributes(&self) -> Vec<String> {
        let s = &self.settings;
        let mut attrs: Vec<String> = s.login_attributes.clone();
        attrs.push(s.attributes.display_name.clone());
        attrs.push(s.attributes.mail.clone());
        attrs.push(s.attributes.mobile.clone());
        if let Some(p) = &s.attributes.personal_email {
            attrs.push(p.clone());
        }
        if let GroupLookup::MemberOf { attribute } = &s.groups {
            attrs.push(attribute.clone());
        }
        attrs.extend(OPERATIONAL.iter().map(|a| (*a).to_owned()));
        attrs.push("modifyTimestamp".into());
        attrs
    }

    async fn read_policy(&self, dn: &str) -> Option<DirectoryPolicy> {
        let found = self
            .pool
            .search(dn, Scope::Base, "(objectClass=pwdPolicy)", &["*".into()])
            .await
            .map(|v| v.into_iter().next());
        let entry = match found {
            Ok(Some(e)) => e,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the password policy entry");
                return None;
            }
        };
        let num = |a: &str| first(&entry, a).and_then(|v| v.trim().parse::<u64>().ok());
        let small = |a: &str| num(a).and_then(|v| u32::try_from(v).ok());
        Some(DirectoryPolicy {
            min_length: small("pwdMinLength"),
            history: small("pwdInHistory"),
            max_age: num("pwdMaxAge"),
            min_age: num("pwdMinAge"),
            check_quality: small("pwdCheckQuality"),
            grace_logins: small("pwdGraceAuthNLimit"),
            lockout_duration: num("pwdLockoutDuration"),
            max_failures: small("pwdMaxFailure"),
        })
    }

    /// The policy that applies to the user (their `pwdPolicySubentry`, else the configured default).
    async fn policy_of(&self, entry: &SearchEntry) -> Option<DirectoryPolicy> {
        let dn = first(entry, "pwdPolicySubentry")
            .map(str::to_owned)
            .or_else(|| self.settings.policy_dn.clone())?;
        self.read_policy(&dn).await
    }

    async fn search_users(&self, filter: String) -> Result<Vec<SearchEntry>, DirectoryError> {
        self.pool
            .search(
                &self.settings.base_dn,
                Scope::Subtree,
                &filter,
                &self.user_attributes(),
            )
            .await
    }

    async fn group_names(&self, entry: &SearchEntry) -> Result<Vec<String>, DirectoryError> {
        match &self.settings.groups {
            GroupLookup::MemberOf { attribute } => {
                Ok(all(entry, attribute).iter().map(|dn| rdn_value(dn)).collect())
            }
            GroupLookup::Search {
                base_dn,
                filter,
                name_attribute,
            } => {
                let f = filter.replace("{dn}", &ldap_escape(entry.dn.as_str()));
                let groups = self
                    .pool
                    .search(base_dn, Scope::Subtree, &f, std::slice::from_ref(name_attribute))
                    .await?;
                Ok(groups
                    .iter()
                    .filter_map(|g| first(g, name_attribute).map(str::to_owned))
                    .collect())
            }
            GroupLookup::None => Ok(vec![]),
        }
    }

    fn login_of(&self, entry: &SearchEntry) -> Option<Login> {
        let attr = self.settings.login_attributes.first()?;
        first(entry, attr).and_then(|v| Login::parse(v).ok())
    }

    async fn find_entry(&self, login: &Login) -> Result<Option<UserEntry>, DirectoryError> {
        let mut found = self.search_users(self.login_filter(login)).await?;
        if found.len() > 1 {
            tracing::warn!(
                matches = found.len(),
                "a login matches several directory entries; refusing"
            );
            return Ok(None);
        }
        let Some(entry) = found.pop() else {
            return Ok(None);
        };
        let Some(canonical) = self.login_of(&entry) else {
            return Ok(None);
        };
        let policy = self.policy_of(&entry).await;
        let groups = self.group_names(&entry).await?;
        let now = self.clock.now();
        let locked_at = first(&entry, "pwdAccountLockedTime");
        let admin_locked = locked_at == Some(ADMIN_LOCK);
        let locked = match (locked_at.and_then(parse_generalized_time), &policy) {
            _ if admin_locked => true,
            (Some(at), Some(p)) if p.lockout_duration.unwrap_or(0) > 0 => {
                let secs = i64::try_from(p.lockout_duration.unwrap_or(0)).unwrap_or(i64::MAX);
                now < at + time::Duration::seconds(secs)
            }
            (Some(_), _) => true,
            (None, _) => locked_at.is_some(),
        };
        let changed = first(&entry, "pwdChangedTime").and_then(parse_generalized_time);
        let expired = match (changed, policy.as_ref().and_then(|p| p.max_age)) {
            (Some(at), Some(max)) if max > 0 => {
                now >= at + time::Duration::seconds(i64::try_from(max).unwrap_or(i64::MAX))
            }
            _ => false,
        };
        let grace_logins_left = policy.as_ref().and_then(|p| p.grace_logins).map(|limit| {
            let used = u32::try_from(all(&entry, "pwdGraceUseTime").len()).unwrap_or(u32::MAX);
            limit.saturating_sub(used)
        });
        let attrs = &self.settings.attributes;
        let account = Account {
            login: canonical.clone(),
            display_name: first(&entry, &attrs.display_name)
                .map(str::to_owned)
                .unwrap_or_else(|| canonical.to_string()),
            email: first(&entry, &attrs.mail).and_then(|m| Email::parse(m).ok()),
            disabled: admin_locked,
            locked,
            has_password: true,
            groups,
            must_change: first(&entry, "pwdReset").is_some_and(|v| v.eq_ignore_ascii_case("TRUE")),
            expired,
            grace_logins_left,
            privileged: false,
        };
        Ok(Some(UserEntry {
            dn: entry.dn,
            account,
            admin_locked,
            policy,
        }))
    }

    async fn entry_or(&self, login: &Login) -> Result<UserEntry, DirectoryError> {
        match self.find_entry(login).await? {
            Some(e) if e.admin_locked => Err(DirectoryError::Disabled),
            Some(e) => Ok(e),
            None => Err(DirectoryError::NotFound),
        }
    }

    /// Binds as the user with the password policy control on a connection of its own.
    async fn bind_user(&self, dn: &str, password: &Password) -> Result<(Ldap, LdapResult), DirectoryError> {
        let mut ldap = self.pool.user_connection().await?;
        let res = ldap
            .with_controls(ppolicy::request())
            .with_timeout(self.settings.operation_timeout)
            .simple_bind(dn, password.expose_secret())
            .await
            .map_err(|e| map_error(&e))?;
        Ok((ldap, res))
    }

    /// Changes the password on a connection bound as the user (Password Modify with the old one).
    async fn change_bound(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        old: &Password,
        new: &Password,
        policy: Option<&DirectoryPolicy>,
    ) -> Result<(), DirectoryError> {
        let res = ldap
            .with_controls(ppolicy::request())
            .with_timeout(self.settings.operation_timeout)
            .extended(PasswordModify {
                user_id: Some(dn),
                old_pass: Some(old.expose_secret()),
                new_pass: Some(new.expose_secret()),
            })
            .await
            .map_err(|e| map_error(&e))?;
        let _ = ldap.unbind().await;
        match res.1.rc {
            0 => Ok(()),
            _ => Err(map_result(&res.1, policy)),
        }
    }

    /// Writes a password as the service account.
    async fn service_write(
        &self,
        dn: &str,
        new: &Password,
        policy: Option<&DirectoryPolicy>,
    ) -> Result<(), DirectoryError> {
        let (dn, pw, how) = (dn.to_owned(), new.clone(), self.settings.password_write);
        let res = self
            .pool
            .run(|mut l| {
                let (dn, pw) = (dn.clone(), pw.clone());
                async move {
                    l.with_controls(ppolicy::request());
                    match how {
                        PasswordWrite::Exop => l
                            .extended(PasswordModify {
                                user_id: Some(&dn),
                                old_pass: None,
                                new_pass: Some(pw.expose_secret()),
                            })
                            .await
                            .map(|r| r.1),
                        PasswordWrite::Modify => {
                            let value: HashSet<&str> = HashSet::from([pw.expose_secret()]);
                            l.modify(&dn, vec![Mod::Replace("userPassword", value)]).await
                        }
                    }
                }
            })
            .await?;
        match res.rc {
            0 => Ok(()),
            _ => Err(map_result(&res, policy)),
        }
    }

    /// Modifies operational attributes as the service account; "no such attribute" counts as done.
    async fn service_modify(
        &self,
        dn: &str,
        mods: Vec<(&'static str, Option<&'static str>)>,
    ) -> Result<(), DirectoryError> {
        let dn = dn.to_owned();
        for (attr, value) in mods {
            let res = self
                .pool
                .run(|mut l| {
                    let dn = dn.clone();
                    async move {
                        let m = match value {
                            Some(v) => Mod::Replace(attr, HashSet::from([v])),
                            None => Mod::Delete(attr, HashSet::new()),
                        };
                        l.modify(&dn, vec![m]).await
                    }
                })
                .await?;
            match res.rc {
                0 | 16 => {}
                50 => {
                    return Err(DirectoryError::InsufficientRights(format!(
                        "the service account may not write {attr} on {dn}"
                    )))
                }
                _ => return Err(map_result(&res, None)),
            }
        }
        Ok(())
    }

    /// Compares the candidate with the current password and the history the directory keeps, when
    /// the service account may read them, so a reset says "used before" without writing anything.
    async fn check_history(
        &self,
        dn: &str,
        new: &Password,
        policy: Option<&DirectoryPolicy>,
    ) -> Result<(), DirectoryError> {
        let read = self
            .pool
            .read_entry(dn, &["userPassword".into(), "pwdHistory".into()])
            .await;
        let Ok(Some(entry)) = read else {
            return Ok(());
        };
        let candidate = new.expose_secret();
        if is_current_password(&entry, candidate) {
            return Err(DirectoryError::Rejected(vec![Violation::new(
                "history",
                "This is your current password. Choose a new one.",
            )]));
        }
        let keep = policy.and_then(|p| p.history).map(|n| n as usize);
        let mut history: Vec<&String> = all(&entry, "pwdHistory").iter().collect();
        history.sort();
        history.reverse();
        if let Some(n) = keep {
            history.truncate(n);
        }
        let used = history
            .iter()
            .filter_map(|h| hashes::history_value(h))
            .any(|h| hashes::matches(h, candidate) == Some(true));
        if used && keep.unwrap_or(1) > 0 {
            return Err(DirectoryError::Rejected(vec![ppolicy::violation(
                PolicyError::PasswordInHistory,
                policy,
            )]));
        }
        Ok(())
    }

    /// slapd answers "account locked" to any password, right or wrong. Telling the user "locked" is
    /// only fair when they proved the password, or anyone could probe for locked accounts; so the
    /// answer is checked against the stored hash (when the service account may read it).
    async fn locked_or_invalid(&self, dn: &str, password: &Password) -> DirectoryError {
        let proven = match self.pool.read_entry(dn, &["userPassword".into()]).await {
            Ok(Some(entry)) => is_current_password(&entry, password.expose_secret()),
            _ => false,
        };
        if proven {
            DirectoryError::Locked
        } else {
            DirectoryError::InvalidCredentials
        }
    }

    /// The self-service reset with the directory's policy applied (see the module docs).
    async fn enforced_reset(&self, entry: &UserEntry, new: &Password) -> Result<(), DirectoryError> {
        let policy = entry.policy.as_ref();
        // What can be checked without writing is checked first: a refusal in the second step of
        // `UserChange` would leave the temporary password in place.
        if let Some(min) = policy.and_then(|p| p.min_length) {
            if new.expose_secret().chars().count() < min as usize {
                return Err(DirectoryError::Rejected(vec![ppolicy::violation(
                    PolicyError::PasswordTooShort,
                    policy,
                )]));
            }
        }
        self.check_history(&entry.dn, new, policy).await?;
        match self.settings.policy_enforcement {
            PolicyEnforcement::ServiceAccount => {
                self.service_write(&entry.dn, new, policy).await?;
                self.clear_after_reset(entry, false).await
            }
            PolicyEnforcement::UserChange => {
                let temp = temporary_password(self.rng.as_ref());
                self.service_write(&entry.dn, &temp, policy).await?;
                let (mut ldap, res) = self.bind_user(&entry.dn, &temp).await?;
                if res.rc != 0 {
                    return Err(DirectoryError::Other(format!(
                        "the temporary password did not bind ({}): {}",
                        res.rc, res.text
                    )));
                }
                self.change_bound(&mut ldap, &entry.dn, &temp, new, policy)
                    .await?;
                if entry.account.locked {
                    self.service_modify(&entry.dn, vec![("pwdAccountLockedTime", None)])
                        .await?;
                }
                Ok(())
            }
        }
    }

    /// After a direct reset: no "must change" for a self-service reset, and no lockout.
    async fn clear_after_reset(&self, entry: &UserEntry, must_change: bool) -> Result<(), DirectoryError> {
        let flag = if must_change { Some("TRUE") } else { None };
        match self.service_modify(&entry.dn, vec![("pwdReset", flag)]).await {
            // A service account that may not touch pwdReset is not a password administrator, and
            // its write did not set it: nothing to clear.
            Err(DirectoryError::InsufficientRights(m)) if !must_change => {
                tracing::debug!(detail = %m, "pwdReset not writable");
            }
            other => other?,
        }
        if entry.account.locked {
            if let Err(e) = self
                .service_modify(&entry.dn, vec![("pwdAccountLockedTime", None)])
                .await
            {
                // slapd lifts the lock on a password write by itself; only a lock that stayed is an error.
                let still = self.find_entry(&entry.account.login).await?;
                if still.is_some_and(|s| s.account.locked) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// A user to run the rights probes on: the first of a few in scope that is neither locked nor
    /// marked "must change" (the probes must not alter anyone), else the first.
    async fn sample_entry(&self) -> Result<Option<UserEntry>, DirectoryError> {
        const SAMPLE: i32 = 20;
        let s = &self.settings;
        let found = self
            .pool
            .search_at_most(
                &s.base_dn,
                Scope::Subtree,
                &s.user_filter,
                &s.login_attributes,
                Some(SAMPLE),
            )
            .await?;
        let mut first_found = None;
        for login in found.iter().filter_map(|e| self.login_of(e)) {
            if let Some(entry) = self.find_entry(&login).await? {
                if !entry.account.locked && !entry.account.must_change {
                    return Ok(Some(entry));
                }
                first_found.get_or_insert(entry);
            }
        }
        Ok(first_found)
    }

    /// Runs the sample-user checks of the self-test.
    async fn rights_on(&self, entry: &UserEntry, out: &mut Vec<RightCheck>) {
        // A delete of a value the entry does not have: the server checks the right first, then
        // answers "no such attribute" without changing anything.
        let probes: [(&str, &'static str, &'static str); 3] = [
            (
                "reset_password",
                "userPassword",
                "write userPassword (reset passwords)",
            ),
            (
                "unlock",
                "pwdAccountLockedTime",
                "delete pwdAccountLockedTime (unlock accounts)",
            ),
            (
                "reset_flag",
                "pwdReset",
                "write pwdReset (clear or set \"must change\" after a reset)",
            ),
        ];
        for (right, attr, words) in probes {
            let dn = entry.dn.clone();
            let probe = if attr == "userPassword" {
                Some("{SSHA}gatehouse-rights-probe-not-a-password")
            } else {
                None
            };
            if (attr == "pwdAccountLockedTime" && entry.account.locked)
                || (attr == "pwdReset" && entry.account.must_change)
            {
                out.push(RightCheck::untested(
                    right,
                    format!(
                        "not tested: the probe could change the sample user {}; test with another one \
                         (--user)",
                        entry.dn
                    ),
                ));
                continue;
            }
            let res = self
                .pool
                .run(|mut l| {
                    let dn = dn.clone();
                    async move {
                        let values: HashSet<&str> = probe.into_iter().collect();
                        l.modify(&dn, vec![Mod::Delete(attr, values)]).await
                    }
                })
                .await;
            out.push(match res {
                Ok(r) if r.rc == 16 || r.rc == 0 => {
                    RightCheck::ok(right, format!("The service account may {words} on {}.", entry.dn))
                }
                Ok(r) if r.rc == 50 => RightCheck::missing(
                    right,
                    format!(
                        "The service account may not {words} on {}: grant it in the directory's ACL (see \
                         docs/directories.md).",
                        entry.dn
                    ),
                ),
                Ok(r) => RightCheck::missing(right, format!("Unexpected answer {}: {}", r.rc, r.text)),
                Err(e) => RightCheck::missing(right, e.to_string()),
            });
        }
    }
}

#[async_trait]
impl Directory for LdapDirectory {
    fn name(&self) -> &str {
        "ldap"
    }

    async fn find_account(&self, login: &Login) -> Result<Option<Account>, DirectoryError> {
        Ok(self.find_entry(login).await?.map(|e| e.account))
    }

    async fn authenticate(&self, login: &Login, password: &Password) -> Result<Account, DirectoryError> {
        let entry = match self.find_entry(login).await? {
            Some(e) => e,
            None => return Err(DirectoryError::InvalidCredentials),
        };
        if entry.admin_locked {
            return Err(DirectoryError::Disabled);
        }
        let (mut ldap, res) = self.bind_user(&entry.dn, password).await?;
        let _ = ldap.unbind().await;
        match res.rc {
            0 => Ok(entry.account),
            _ => match map_result(&res, entry.policy.as_ref()) {
                DirectoryError::Locked => Err(self.locked_or_invalid(&entry.dn, password).await),
                other => Err(other),
            },
        }
    }

    async fn reset_password(&self, login: &Login, new: &Password) -> Result<(), DirectoryError> {
        let entry = self.entry_or(login).await?;
        if self.settings.enforce_directory_policy {
            return self.enforced_reset(&entry, new).await;
        }
        self.service_write(&entry.dn, new, entry.policy.as_ref()).await?;
        self.clear_after_reset(&entry, false).await
    }

    async fn change_password(
        &self,
        login: &Login,
        old: &Password,
        new: &Password,
    ) -> Result<(), DirectoryError> {
        let entry = match self.find_entry(login).await? {
            Some(e) if !e.admin_locked => e,
            _ => return Err(DirectoryError::InvalidCredentials),
        };
        let (mut ldap, res) = self.bind_user(&entry.dn, old).await?;
        if res.rc == 0 && old.expose_secret() == new.expose_secret() {
            let _ = ldap.unbind().await;
            return Err(DirectoryError::Rejected(vec![Violation::new(
                "history",
                "This is your current password. Choose a new one.",
            )]));
        }
        match res.rc {
            0 => {
                self.change_bound(&mut ldap, &entry.dn, old, new, entry.policy.as_ref())
                    .await
            }
            _ => {
                let _ = ldap.unbind().await;
                match map_result(&res, entry.policy.as_ref()) {
                    // ppolicy reports "expired" only after the password itself was right: the user has
                    // proven it, and may set a new one under the directory's rules.
                    DirectoryError::PasswordExpired => self.enforced_reset(&entry, new).await,
                    DirectoryError::Locked => Err(self.locked_or_invalid(&entry.dn, old).await),
                    other => Err(other),
                }
            }
        }
    }

    async fn unlock(&self, login: &Login) -> Result<(), DirectoryError> {
        let entry = self.entry_or(login).await?;
        self.service_modify(&entry.dn, vec![("pwdAccountLockedTime", None)])
            .await?;
        // slapd clears pwdFailureTime with the lock; servers that keep it and allow its removal get
        // it removed too, the others (NO-USER-MODIFICATION) refuse, which is fine.
        if let Err(e) = self
            .service_modify(&entry.dn, vec![("pwdFailureTime", None)])
            .await
        {
            tracing::debug!(error = %e, "pwdFailureTime not removed");
        }
        Ok(())
    }

    /// "This wasn't me": the administrative lock (`pwdAccountLockedTime: 000001010000Z`), which
    /// ppolicy never lifts by itself and self-service never lifts at all.
    async fn lock(&self, login: &Login) -> Result<(), DirectoryError> {
        let entry = self.entry_or(login).await?;
        self.service_modify(&entry.dn, vec![("pwdAccountLockedTime", Some(ADMIN_LOCK))])
            .await
    }

    async fn provision(&self, _spec: &gatehouse_core::ports::AccountSpec) -> Result<bool, DirectoryError> {
        Err(DirectoryError::Unsupported(
            "creating accounts in an LDAP directory",
        ))
    }

    async fn health(&self) -> Result<(), DirectoryError> {
        self.pool
            .search(
                &self.settings.base_dn,
                Scope::Base,
                "(objectClass=*)",
                &["1.1".into()],
            )
            .await
            .map(|_| ())
    }

    async fn helpdesk_reset(
        &self,
        login: &Login,
        new: &Password,
        must_change: bool,
    ) -> Result<(), DirectoryError> {
        let entry = self.entry_or(login).await?;
        self.service_write(&entry.dn, new, entry.policy.as_ref()).await?;
        self.clear_after_reset(&entry, must_change).await
    }

    async fn self_test(&self, sample: Option<&Login>) -> Vec<RightCheck> {
        let mut out = Vec::new();
        if let Err(e) = self.health().await {
            out.push(RightCheck::missing("bind", e.to_string()));
            return out;
        }
        out.push(RightCheck::ok(
            "bind",
            format!(
                "Bound as {} and read the base {}.",
                self.settings.bind_dn, self.settings.base_dn
            ),
        ));
        let entry = match sample {
            Some(login) => self.find_entry(login).await,
            None => self.sample_entry().await,
        };
        match entry {
            Ok(Some(e)) => {
                out.push(RightCheck::ok(
                    "find_user",
                    format!("Found {} as {}.", e.account.login, e.dn),
                ));
                out.push(match &e.policy {
                    Some(p) => RightCheck::ok(
                        "read_policy",
                        format!(
                            "Password policy: minimum length {}, history {}, lockout after {} failures.",
                            p.min_length.unwrap_or(0),
                            p.history.unwrap_or(0),
                            p.max_failures.unwrap_or(0)
                        ),
                    ),
                    None => RightCheck::missing(
                        "read_policy",
                        "No ppolicy entry readable (set directory.policy_dn to the default policy entry, or \
                         give the service account read access to it).",
                    ),
                });
                self.rights_on(&e, &mut out).await;
            }
            Ok(None) => out.push(RightCheck::missing(
                "find_user",
                format!(
                    "No user found under {} with {} (check directory.base_dn, user_filter and \
                     login_attributes).",
                    self.settings.base_dn, self.settings.user_filter
                ),
            )),
            Err(e) => out.push(RightCheck::missing("find_user", e.to_string())),
        }
        out
    }

    async fn sync_scan(&self, watermark: Option<&str>) -> Result<SyncBatch, DirectoryError> {
        sync::scan(self, watermark).await
    }

    async fn password_rules(
        &self,
        login: Option<&Login>,
    ) -> Option<gatehouse_core::password::DirectoryRules> {
        let policy = match login {
            Some(l) => self.find_entry(l).await.ok().flatten().and_then(|e| e.policy),
            None => match &self.settings.policy_dn {
                Some(dn) => self.read_policy(dn).await,
                None => None,
            },
        }?;
        Some(gatehouse_core::password::DirectoryRules {
            min_length: policy.min_length,
            history: policy.history,
            complexity: false,
            quality_checked: policy.check_quality.unwrap_or(0) > 0,
            min_age_secs: policy.min_age,
        })
    }
}
