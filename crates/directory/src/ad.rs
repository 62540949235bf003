//! Active Directory (and Samba AD): password writeback through `unicodePwd` over LDAPS or StartTLS.
//!
//! - Reset: one modify as the service account replaces `unicodePwd` (the password in double quotes,
//!   UTF-16LE), sets `lockoutTime = 0` (an AD reset does not unlock by itself) and `pwdLastSet`
//!   (`-1` after a self-service reset, `0` after a helpdesk reset marked "must change").
//! - History on reset: AD applies history to a reset only with the LDAP_SERVER_POLICY_HINTS control,
//!   sent when the server lists it in `supportedControl`. Without it (Samba), and with
//!   `enforce_directory_policy`, the reset sets a random temporary password and then changes it to
//!   the chosen one with a delete-old/add-new modify (a *change*: history and minimum age apply).
//! - Change: delete old + add new `unicodePwd`, as the user. A user whose password must change or
//!   has expired cannot bind (data 773 / 532, which AD answers only for the right password); the
//!   same delete-old/add-new is then sent on the service account's connection, which AD accepts as a
//!   change because every principal holds "Change Password" on user objects by default.
use crate::ldap::pool::Pool;
use crate::ldap::{all, first, map_error, rdn_value, LdapSettings};
use async_trait::async_trait;
use gatehouse_core::password::Violation;
use gatehouse_core::ports::{
    Account, AccountSpec, Directory, DirectoryError, RightCheck, SecureRng, SyncBatch, SyncedUser,
};
use gatehouse_core::secret::Password;
use gatehouse_core::types::{Email, Login};
use ldap3::controls::RawControl;
use ldap3::{ldap_escape, Ldap, LdapResult, Mod, Scope, SearchEntry};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// LDAP_SERVER_POLICY_HINTS and its older OID.
const POLICY_HINTS: [&str; 2] = ["1.2.840.113556.1.4.2239", "1.2.840.113556.1.4.2066"];
/// `userAccountControl` ACCOUNTDISABLE.
const UF_ACCOUNTDISABLE: u64 = 0x2;
/// `msDS-User-Account-Control-Computed` bits.
const UF_LOCKOUT: u64 = 0x10;
const UF_PASSWORD_EXPIRED: u64 = 0x80_0000;

#[derive(Clone, Debug)]
pub struct AdSettings {
    pub ldap: LdapSettings,
    /// Groups (by name) whose members are protected accounts, besides `adminCount=1`.
    pub privileged_groups: Vec<String>,
    /// Protected accounts get no self-service at all (answered like unknown logins).
    pub exclude_privileged: bool,
}

/// The domain's password policy, or the fine-grained one that applies to the user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdPolicy {
    pub min_length: Option<u32>,
    pub history: Option<u32>,
    pub complexity: bool,
    pub min_age_secs: Option<u64>,
    pub max_age_secs: Option<u64>,
    pub lockout_threshold: Option<u32>,
    /// The PSO's DN when a fine-grained policy applies.
    pub pso: Option<String>,
}

#[derive(Clone, Debug)]
struct AdEntry {
    dn: String,
    account: Account,
    critical: bool,
    pso: Option<String>,
}

pub struct AdDirectory {
    settings: Arc<AdSettings>,
    pool: Pool,
    rng: Arc<dyn SecureRng>,
}

/// A password as AD wants it in `unicodePwd`: in double quotes, UTF-16LE.
pub fn unicode_pwd(password: &str) -> Vec<u8> {
    format!("\"{password}\"")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// The `data XXX` code of an AD bind or modify diagnostic (`…, data 52e, v1db1`).
pub fn data_code(text: &str) -> Option<String> {
    let i = text.find("data ")?;
    let code: String = text[i + 5..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    (!code.is_empty()).then(|| code.to_ascii_lowercase())
}

/// AD intervals are negative 100-nanosecond counts; 0 and "never" are `None`.
fn interval_secs(v: &str) -> Option<u64> {
    let n: i64 = v.trim().parse().ok()?;
    if n == 0 || n == i64::MIN {
        return None;
    }
    Some(n.unsigned_abs() / 10_000_000)
}

/// Plain words for a bind refusal, from the AD data code.
pub fn bind_error(r: &LdapResult) -> DirectoryError {
    match data_code(&r.text).as_deref() {
        Some("775") => DirectoryError::Locked,
        Some("532") => DirectoryError::PasswordExpired,
        Some("773") => DirectoryError::PasswordExpired,
        // 52e wrong password, 525 no such user, 533 disabled, 701 account expired: all look alike.
        Some("52e" | "525" | "533" | "701") | None => DirectoryError::InvalidCredentials,
        Some("530") => DirectoryError::Restricted(
            "Your account may not sign in at this time of day. Try again within your allowed hours or ask \
             the helpdesk."
                .into(),
        ),
        Some("531") => DirectoryError::Restricted(
            "Your account may only sign in from certain computers. Ask the helpdesk.".into(),
        ),
        Some(other) => DirectoryError::Other(format!("bind refused (data {other}): {}", r.text)),
    }
}

/// Plain words for a refused password write (`0000052D`, `00000056`), using the server's text
/// where it says more (Samba does; Windows says only "problem 5003") and the domain policy.
pub fn password_error(r: &LdapResult, policy: Option<&AdPolicy>) -> DirectoryError {
    let t = r.text.to_ascii_lowercase();
    if r.text.starts_with("00000056") || t.contains("old password specified doesn't match") {
        return DirectoryError::InvalidCredentials;
    }
    if r.rc == 50 {
        return DirectoryError::InsufficientRights(r.text.clone());
    }
    if !(r.text.starts_with("0000052D") || r.rc == 19 || r.rc == 53) {
        return map_error(&ldap3::LdapError::LdapResult { result: r.clone() });
    }
    let mut out = Vec::new();
    if t.contains("too short") {
        out.push(Violation::new(
            "directory_min_length",
            match policy.and_then(|p| p.min_length) {
                Some(n) => format!("The directory needs at least {n} characters."),
                None => "The password is too short for the directory's policy.".into(),
            },
        ));
    }
    if t.contains("complexity") {
        out.push(Violation::new(
            "directory_complexity",
            "Use characters from at least three of: upper-case letters, lower-case letters, digits, and \
             symbols; and do not include your user name.",
        ));
    }
    if t.contains("in history") || t.contains("previous password") || t.contains("already used") {
        out.push(Violation::new(
            "history",
            match policy.and_then(|p| p.history) {
                Some(n) if n > 0 => {
                    format!("You have used this password before. Choose one that is not among your last {n}.")
                }
                _ => "You have used this password before. Choose a new one.".into(),
            },
        ));
    }
    if t.contains("too young") || t.contains("minimum password age") || t.contains("too recently") {
        out.push(Violation::new(
            "directory_min_age",
            "Your password was changed too recently to be changed again yet. Try again later or ask the \
             helpdesk.",
        ));
    }
    if out.is_empty() {
        // Windows gives no detail: say what it can be, with the domain's numbers.
        let mut parts = Vec::new();
        if let Some(p) = policy {
            if let Some(n) = p.min_length {
                parts.push(format!("at least {n} characters"));
            }
            if p.complexity {
                parts.push("three of the four kinds of characters".into());
            }
            if let Some(n) = p.history.filter(|n| *n > 0) {
                parts.push(format!("not one of your last {n} passwords"));
            }
        }
        let detail = if parts.is_empty() {
            String::new()
        } else {
            format!(" The rules: {}.", parts.join(", "))
        };
        out.push(Violation::new(
            "directory_policy",
            format!(
                "The directory refused the password: it may be too short, too simple, used before, or \
                 changed too recently.{detail}"
            ),
        ));
    }
    DirectoryError::Rejected(out)
}

fn policy_hints(oid: &str) -> RawControl {
    RawControl {
        ctype: oid.to_owned(),
        crit: true,
        // SEQUENCE { INTEGER 1 }
        val: Some(vec![0x30, 0x03, 0x02, 0x01, 0x01]),
    }
}

fn num(e: &SearchEntry, attr: &str) -> Option<i64> {
    first(e, attr).and_then(|v| v.trim().parse().ok())
}

const ENTRY_ATTRS: [&str; 9] = [
    "userAccountControl",
    "msDS-User-Account-Control-Computed",
    "lockoutTime",
    "pwdLastSet",
    "adminCount",
    "isCriticalSystemObject",
    "msDS-ResultantPSO",
    "uSNChanged",
    "memberOf",
];

impl AdDirectory {
    pub fn new(settings: AdSettings, rng: Arc<dyn SecureRng>) -> Result<Self, DirectoryError> {
        let settings = Arc::new(settings);
        Ok(Self {
            pool: Pool::new(Arc::new(settings.ldap.clone()))?,
            settings,
            rng,
        })
    }

    fn ldap(&self) -> &LdapSettings {
        &self.settings.ldap
    }

    fn attributes(&self) -> Vec<String> {
        let s = self.ldap();
        let mut a = s.login_attributes.clone();
        a.push(s.attributes.display_name.clone());
        a.push(s.attributes.mail.clone());
        a.push(s.attributes.mobile.clone());
        a.push("telephoneNumber".into());
        a.push("cn".into());
        if let Some(p) = &s.attributes.personal_email {
            a.push(p.clone());
        }
        a.extend(ENTRY_ATTRS.iter().map(|x| (*x).to_owned()));
        a
    }

    fn login_of(&self, e: &SearchEntry) -> Option<Login> {
        let attr = self.ldap().login_attributes.first()?;
        first(e, attr).and_then(|v| Login::parse(v).ok())
    }

    async fn search(
        &self,
        base: &str,
        scope: Scope,
        filter: String,
        attrs: Vec<String>,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        self.pool.search(base, scope, &filter, &attrs).await
    }

    async fn root_dse(&self, attrs: &[&str]) -> Result<Option<SearchEntry>, DirectoryError> {
        let attrs: Vec<String> = attrs.iter().map(|a| (*a).to_owned()).collect();
        self.pool.read_entry("", &attrs).await
    }

    /// The policy hints OID the DC lists (the newer one preferred), if any.
    async fn policy_hints_oid(&self) -> Option<&'static str> {
        let dse = self.root_dse(&["supportedControl"]).await.ok().flatten()?;
        let listed = all(&dse, "supportedControl");
        POLICY_HINTS
            .iter()
            .find(|oid| listed.iter().any(|c| c == *oid))
            .copied()
    }

    /// Groups the user is in, nested ones included (LDAP_MATCHING_RULE_IN_CHAIN).
    async fn nested_groups(&self, dn: &str) -> Result<Vec<String>, DirectoryError> {
        let filter = format!(
            "(&(objectClass=group)(member:1.2.840.113556.1.4.1941:={}))",
            ldap_escape(dn)
        );
        let base = self.ldap().base_dn.clone();
        let found = self
            .search(&base, Scope::Subtree, filter, vec!["cn".into()])
            .await;
        match found {
            Ok(groups) => Ok(groups
                .iter()
                .filter_map(|g| first(g, "cn").map(str::to_owned))
                .collect()),
            Err(e) => Err(e),
        }
    }

    fn is_privileged(&self, admin_count: bool, groups: &[String]) -> bool {
        admin_count
            || groups.iter().any(|g| {
                self.settings
                    .privileged_groups
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(g))
            })
    }

    fn entry_from(&self, e: SearchEntry, groups: Vec<String>) -> Option<AdEntry> {
        let login = self.login_of(&e)?;
        let uac = num(&e, "userAccountControl").unwrap_or(0) as u64;
        let computed = num(&e, "msDS-User-Account-Control-Computed").unwrap_or(0) as u64;
        let pwd_last_set = num(&e, "pwdLastSet");
        let critical = first(&e, "isCriticalSystemObject").is_some_and(|v| v.eq_ignore_ascii_case("TRUE"));
        let privileged = self.is_privileged(num(&e, "adminCount") == Some(1), &groups);
        let a = &self.ldap().attributes;
        let must_change = pwd_last_set == Some(0);
        let account = Account {
            login: login.clone(),
            display_name: first(&e, &a.display_name)
                .or_else(|| first(&e, "cn"))
                .map(str::to_owned)
                .unwrap_or_else(|| login.to_string()),
            email: first(&e, &a.mail).and_then(|m| Email::parse(m).ok()),
            // Never touched: disabled accounts, critical system objects, and protected accounts when
            // configuration excludes them. All are answered like unknown logins.
            disabled: uac & UF_ACCOUNTDISABLE != 0
                || critical
                || (privileged && self.settings.exclude_privileged),
            locked: computed & UF_LOCKOUT != 0,
            has_password: true,
            groups,
            must_change,
            expired: computed & UF_PASSWORD_EXPIRED != 0 && !must_change,
            grace_logins_left: None,
            privileged,
        };
        Some(AdEntry {
            pso: first(&e, "msDS-ResultantPSO").map(str::to_owned),
            dn: e.dn,
            account,
            critical,
        })
    }

    async fn find_entry(&self, login: &Login) -> Result<Option<AdEntry>, DirectoryError> {
        let s = self.ldap();
        let v = ldap_escape(login.as_str());
        let any: String = s.login_attributes.iter().map(|a| format!("({a}={v})")).collect();
        let filter = format!("(&{}(|{any}))", s.user_filter);
        let mut found = self
            .search(&s.base_dn, Scope::Subtree, filter, self.attributes())
            .await?;
        if found.len() > 1 {
            tracing::warn!(
                matches = found.len(),
                "a login matches several directory entries; refusing"
            );
            return Ok(None);
        }
        let Some(e) = found.pop() else {
            return Ok(None);
        };
        let groups = self.nested_groups(&e.dn).await?;
        Ok(self.entry_from(e, groups))
    }

    /// The entry, if self-service may act on it.
    async fn usable(&self, login: &Login) -> Result<AdEntry, DirectoryError> {
        match self.find_entry(login).await? {
            Some(e) if e.critical || e.account.disabled => Err(DirectoryError::Disabled),
            Some(e) => Ok(e),
            None => Err(DirectoryError::NotFound),
        }
    }

    /// The domain policy, or the user's fine-grained one (msDS-ResultantPSO).
    pub async fn policy(&self, pso: Option<&str>) -> Option<AdPolicy> {
        if let Some(pso) = pso {
            let read = self
                .search(pso, Scope::Base, "(objectClass=*)".into(), vec!["*".into()])
                .await;
            // An account without read rights on the PSO may see the entry but none of its values:
            // then the domain policy is the best it can show (the directory still enforces the PSO).
            let readable = |e: &SearchEntry| first(e, "msDS-MinimumPasswordLength").is_some();
            if let Ok(Some(e)) = read.map(|v| v.into_iter().next().filter(readable)) {
                return Some(AdPolicy {
                    min_length: num(&e, "msDS-MinimumPasswordLength").and_then(|n| u32::try_from(n).ok()),
                    history: num(&e, "msDS-PasswordHistoryLength").and_then(|n| u32::try_from(n).ok()),
                    complexity: first(&e, "msDS-PasswordComplexityEnabled")
                        .is_some_and(|v| v.eq_ignore_ascii_case("TRUE")),
                    min_age_secs: first(&e, "msDS-MinimumPasswordAge").and_then(interval_secs),
                    max_age_secs: first(&e, "msDS-MaximumPasswordAge").and_then(interval_secs),
                    lockout_threshold: num(&e, "msDS-LockoutThreshold").and_then(|n| u32::try_from(n).ok()),
                    pso: Some(pso.to_owned()),
                });
            }
        }
        let domain = self.root_dse(&["defaultNamingContext"]).await.ok().flatten();
        let base = domain
            .as_ref()
            .and_then(|d| first(d, "defaultNamingContext"))
            .map(str::to_owned)?;
        let attrs = [
            "minPwdLength",
            "pwdHistoryLength",
            "pwdProperties",
            "minPwdAge",
            "maxPwdAge",
            "lockoutThreshold",
        ];
        let e = self
            .search(
                &base,
                Scope::Base,
                "(objectClass=*)".into(),
                attrs.iter().map(|a| (*a).to_owned()).collect(),
            )
            .await
            .ok()?
            .into_iter()
            .next()?;
        Some(AdPolicy {
            min_length: num(&e, "minPwdLength").and_then(|n| u32::try_from(n).ok()),
            history: num(&e, "pwdHistoryLength").and_then(|n| u32::try_from(n).ok()),
            complexity: num(&e, "pwdProperties").is_some_and(|p| p & 1 == 1),
            min_age_secs: first(&e, "minPwdAge").and_then(interval_secs),
            max_age_secs: first(&e, "maxPwdAge").and_then(interval_secs),
            lockout_threshold: num(&e, "lockoutThreshold").and_then(|n| u32::try_from(n).ok()),
            pso: None,
        })
    }

    async fn bind_user(&self, dn: &str, password: &Password) -> Result<(Ldap, LdapResult), DirectoryError> {
        let mut ldap = self.pool.user_connection().await?;
        let res = ldap
            .with_timeout(self.ldap().operation_timeout)
            .simple_bind(dn, password.expose_secret())
            .await
            .map_err(|e| map_error(&e))?;
        Ok((ldap, res))
    }

    /// Delete old + add new `unicodePwd`: a password *change*, checked against history and age.
    fn change_mods(old: &Password, new: &Password) -> Vec<Mod<Vec<u8>>> {
        vec![
            Mod::Delete(
                b"unicodePwd".to_vec(),
                HashSet::from([unicode_pwd(old.expose_secret())]),
            ),
            Mod::Add(
                b"unicodePwd".to_vec(),
                HashSet::from([unicode_pwd(new.expose_secret())]),
            ),
        ]
    }

    async fn modify_as_user(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        mods: Vec<Mod<Vec<u8>>>,
        policy: Option<&AdPolicy>,
    ) -> Result<(), DirectoryError> {
        let res = ldap
            .with_timeout(self.ldap().operation_timeout)
            .modify(dn, mods)
            .await
            .map_err(|e| map_error(&e))?;
        let _ = ldap.unbind().await;
        match res.rc {
            0 => Ok(()),
            _ => Err(password_error(&res, policy)),
        }
    }

    /// A modify on the service account's connection, optionally with the policy hints control.
    async fn service_modify(
        &self,
        dn: &str,
        mods: Vec<Mod<Vec<u8>>>,
        hints: Option<&'static str>,
        policy: Option<&AdPolicy>,
    ) -> Result<(), DirectoryError> {
        let dn = dn.to_owned();
        let res = self
            .pool
            .run(|mut l| {
                let (dn, mods) = (dn.clone(), mods.clone());
                async move {
                    if let Some(oid) = hints {
                        l.with_controls(policy_hints(oid));
                    }
                    l.modify(&dn, mods).await
                }
            })
            .await?;
        match res.rc {
            0 => Ok(()),
            _ => Err(password_error(&res, policy)),
        }
    }

    /// `unicodePwd`, `lockoutTime = 0` and `pwdLastSet` in one modify.
    fn reset_mods(new: &Password, pwd_last_set: &str) -> Vec<Mod<Vec<u8>>> {
        vec![
            Mod::Replace(
                b"unicodePwd".to_vec(),
                HashSet::from([unicode_pwd(new.expose_secret())]),
            ),
            Mod::Replace(b"lockoutTime".to_vec(), HashSet::from([b"0".to_vec()])),
            Mod::Replace(
                b"pwdLastSet".to_vec(),
                HashSet::from([pwd_last_set.as_bytes().to_vec()]),
            ),
        ]
    }

    /// A self-service reset under the directory's rules (see the module docs).
    async fn enforced_reset(&self, entry: &AdEntry, new: &Password) -> Result<(), DirectoryError> {
        let policy = self.policy(entry.pso.as_deref()).await;
        if let Some(oid) = self.policy_hints_oid().await {
            return self
                .service_modify(&entry.dn, Self::reset_mods(new, "-1"), Some(oid), policy.as_ref())
                .await;
        }
        let temp = crate::ldap::temporary_password(self.rng.as_ref());
        // "Must change" on the temporary password: AD then allows the change right away, whatever
        // the minimum password age.
        self.service_modify(&entry.dn, Self::reset_mods(&temp, "0"), None, policy.as_ref())
            .await?;
        // The change from the temporary password, on the service account's connection (every
        // principal may change a password it knows; the user may not bind if "must change" is set).
        self.service_modify(&entry.dn, Self::change_mods(&temp, new), None, policy.as_ref())
            .await
    }

    /// The rights probe: a replace of `unicodePwd` with a value AD can never accept (not quoted).
    /// The access check comes first, so "insufficient access" means the right is missing, and any
    /// other refusal means it is there; nothing is written either way.
    async fn probe(&self, dn: &str, attr: &'static str, value: &[u8]) -> Result<LdapResult, DirectoryError> {
        let (dn, value) = (dn.to_owned(), value.to_vec());
        self.pool
            .run(|mut l| {
                let (dn, value) = (dn.clone(), value.clone());
                async move {
                    l.modify(
                        &dn,
                        vec![Mod::Replace(attr.as_bytes().to_vec(), HashSet::from([value]))],
                    )
                    .await
                }
            })
            .await
    }
}

#[async_trait]
impl Directory for AdDirectory {
    fn name(&self) -> &str {
        "ad"
    }

    async fn find_account(&self, login: &Login) -> Result<Option<Account>, DirectoryError> {
        Ok(self.find_entry(login).await?.map(|e| e.account))
    }

    async fn authenticate(&self, login: &Login, password: &Password) -> Result<Account, DirectoryError> {
        let entry = match self.find_entry(login).await? {
            Some(e) if !e.critical && !e.account.disabled => e,
            _ => return Err(DirectoryError::InvalidCredentials),
        };
        let (mut ldap, res) = self.bind_user(&entry.dn, password).await?;
        let _ = ldap.unbind().await;
        match res.rc {
            0 => Ok(entry.account),
            _ => Err(bind_error(&res)),
        }
    }

    async fn reset_password(&self, login: &Login, new: &Password) -> Result<(), DirectoryError> {
        let entry = self.usable(login).await?;
        if self.ldap().enforce_directory_policy {
            return self.enforced_reset(&entry, new).await;
        }
        let policy = self.policy(entry.pso.as_deref()).await;
        self.service_modify(&entry.dn, Self::reset_mods(new, "-1"), None, policy.as_ref())
            .await
    }

    async fn change_password(
        &self,
        login: &Login,
        old: &Password,
        new: &Password,
    ) -> Result<(), DirectoryError> {
        let entry = match self.find_entry(login).await? {
            Some(e) if !e.critical && !e.account.disabled => e,
            _ => return Err(DirectoryError::InvalidCredentials),
        };
        if old.expose_secret() == new.expose_secret() {
            return Err(DirectoryError::Rejected(vec![Violation::new(
                "history",
                "This is your current password. Choose a new one.",
            )]));
        }
        let policy = self.policy(entry.pso.as_deref()).await;
        let (mut ldap, res) = self.bind_user(&entry.dn, old).await?;
        match res.rc {
            0 => {
                self.modify_as_user(&mut ldap, &entry.dn, Self::change_mods(old, new), policy.as_ref())
                    .await
            }
            _ => {
                let _ = ldap.unbind().await;
                match bind_error(&res) {
                    // 773 / 532 come only with the right password: change it on the service
                    // account's connection, as a change (history and age apply).
                    // A change sets pwdLastSet to now: nothing else to clear.
                    DirectoryError::PasswordExpired => {
                        self.service_modify(&entry.dn, Self::change_mods(old, new), None, policy.as_ref())
                            .await
                    }
                    other => Err(other),
                }
            }
        }
    }

    async fn unlock(&self, login: &Login) -> Result<(), DirectoryError> {
        let entry = self.usable(login).await?;
        let dn = entry.dn.clone();
        let res = self
            .pool
            .run(|mut l| {
                let dn = dn.clone();
                async move {
                    l.modify(
                        &dn,
                        vec![Mod::Replace(
                            b"lockoutTime".to_vec(),
                            HashSet::from([b"0".to_vec()]),
                        )],
                    )
                    .await
                }
            })
            .await?;
        match res.rc {
            0 => Ok(()),
            50 => Err(DirectoryError::InsufficientRights(format!(
                "the service account may not write lockoutTime on {dn}"
            ))),
            _ => Err(map_error(&ldap3::LdapError::LdapResult { result: res })),
        }
    }

    async fn provision(&self, _spec: &AccountSpec) -> Result<bool, DirectoryError> {
        Err(DirectoryError::Unsupported(
            "creating accounts in Active Directory",
        ))
    }

    async fn health(&self) -> Result<(), DirectoryError> {
        self.root_dse(&["dnsHostName"]).await.map(|_| ())
    }

    async fn helpdesk_reset(
        &self,
        login: &Login,
        new: &Password,
        must_change: bool,
    ) -> Result<(), DirectoryError> {
        let entry = self.usable(login).await?;
        let policy = self.policy(entry.pso.as_deref()).await;
        let last_set = if must_change { "0" } else { "-1" };
        self.service_modify(&entry.dn, Self::reset_mods(new, last_set), None, policy.as_ref())
            .await
    }

    async fn self_test(&self, sample: Option<&Login>) -> Vec<RightCheck> {
        let mut out = Vec::new();
        if let Err(e) = self.health().await {
            out.push(RightCheck::missing("bind", e.to_string()));
            return out;
        }
        out.push(RightCheck::ok(
            "bind",
            format!("Bound as {} over {}.", self.ldap().bind_dn, self.ldap().url),
        ));
        let entry = match sample {
            Some(l) => self.find_entry(l).await,
            None => {
                let s = self.ldap();
                let filter = format!(
                    "(&{}(!(isCriticalSystemObject=TRUE))(!(adminCount=1)))",
                    s.user_filter
                );
                let found = self
                    .pool
                    .search_at_most(&s.base_dn, Scope::Subtree, &filter, &self.attributes(), Some(20))
                    .await;
                // A user the probes cannot disturb: not locked, not "must change", not disabled.
                found.map(|found| {
                    found
                        .into_iter()
                        .filter_map(|e| self.entry_from(e, vec![]))
                        .find(|e| !e.account.locked && !e.account.must_change && !e.account.disabled)
                })
            }
        };
        let entry = match entry {
            Ok(Some(e)) => e,
            Ok(None) => {
                out.push(RightCheck::missing(
                    "find_user",
                    format!(
                        "No user found under {} (check directory.base_dn, user_filter and login_attributes).",
                        self.ldap().base_dn
                    ),
                ));
                return out;
            }
            Err(e) => {
                out.push(RightCheck::missing("find_user", e.to_string()));
                return out;
            }
        };
        out.push(RightCheck::ok(
            "find_user",
            format!("Found {} as {}.", entry.account.login, entry.dn),
        ));
        let policy = self.policy(entry.pso.as_deref()).await;
        out.push(match &policy {
            Some(p) => RightCheck::ok(
                "read_policy",
                format!(
                    "{}: minimum length {}, history {}, complexity {}, lockout after {} failures.",
                    if p.pso.is_some() {
                        "Fine-grained password policy"
                    } else {
                        "Domain password policy"
                    },
                    p.min_length.unwrap_or(0),
                    p.history.unwrap_or(0),
                    if p.complexity { "on" } else { "off" },
                    p.lockout_threshold.unwrap_or(0)
                ),
            ),
            None => RightCheck::missing("read_policy", "The domain password policy could not be read."),
        });
        // Each probe writes a value AD refuses on its own, so nothing changes.
        let probes: [(&str, &'static str, &[u8], &str); 3] = [
            (
                "reset_password",
                "unicodePwd",
                b"not-a-quoted-password",
                "Reset Password",
            ),
            ("unlock", "lockoutTime", b"not-a-number", "Write lockoutTime"),
            ("reset_flag", "pwdLastSet", b"not-a-number", "Write pwdLastSet"),
        ];
        for (right, attr, value, words) in probes {
            out.push(match self.probe(&entry.dn, attr, value).await {
                Ok(r) if r.rc == 50 => RightCheck::missing(
                    right,
                    format!(
                        "The service account lacks \"{words}\" on {}. Delegate it on the users' OU (Active \
                         Directory Users and Computers → Delegate Control, or dsacls; see docs/directories.md).",
                        entry.dn
                    ),
                ),
                Ok(r) if r.rc == 0 => RightCheck::ok(right, format!("\"{words}\" on {} (probe accepted?)", entry.dn)),
                Ok(_) => RightCheck::ok(right, format!("The service account holds \"{words}\" on {}.", entry.dn)),
                Err(e) => RightCheck::missing(right, e.to_string()),
            });
        }
        out
    }

    async fn sync_scan(&self, watermark: Option<&str>) -> Result<SyncBatch, DirectoryError> {
        sync_scan(self, watermark).await
    }

    async fn password_rules(
        &self,
        login: Option<&Login>,
    ) -> Option<gatehouse_core::password::DirectoryRules> {
        let pso = match login {
            Some(l) => self.find_entry(l).await.ok().flatten().and_then(|e| e.pso),
            None => None,
        };
        let p = self.policy(pso.as_deref()).await?;
        Some(gatehouse_core::password::DirectoryRules {
            min_length: p.min_length,
            history: p.history,
            complexity: p.complexity,
            min_age_secs: p.min_age_secs,
            quality_checked: false,
        })
    }
}

/// The watermark is `<dsServiceName>#<highestCommittedUSN>`: a USN means something only on the
/// domain controller that gave it, so another DC means a full read.
async fn sync_scan(dir: &AdDirectory, watermark: Option<&str>) -> Result<SyncBatch, DirectoryError> {
    let s = dir.ldap();
    let dse = dir
        .root_dse(&["dsServiceName", "highestCommittedUSN"])
        .await?
        .ok_or_else(|| DirectoryError::Other("the rootDSE is not readable".into()))?;
    let server = first(&dse, "dsServiceName").unwrap_or("").to_owned();
    let highest = first(&dse, "highestCommittedUSN").unwrap_or("0").to_owned();
    let since = watermark.and_then(|w| {
        let (dc, usn) = w.rsplit_once('#')?;
        (dc == server).then(|| usn.parse::<u64>().ok()).flatten()
    });
    let filter = match since {
        Some(usn) => format!("(&{}(uSNChanged>={}))", s.user_filter, usn + 1),
        None => s.user_filter.clone(),
    };
    let entries = crate::ldap::sync::paged_on(&dir.pool, &s.base_dn, filter, dir.attributes()).await?;
    // Nested groups: every group's own memberOf, closed transitively.
    let groups = crate::ldap::sync::paged_on(
        &dir.pool,
        &s.base_dn,
        "(objectClass=group)".into(),
        vec!["cn".into(), "memberOf".into()],
    )
    .await?;
    let mut parents: HashMap<String, Vec<String>> = HashMap::new();
    let mut names: HashMap<String, String> = HashMap::new();
    for g in &groups {
        let dn = g.dn.to_ascii_lowercase();
        names.insert(
            dn.clone(),
            first(g, "cn")
                .map(str::to_owned)
                .unwrap_or_else(|| rdn_value(&g.dn)),
        );
        parents.insert(
            dn,
            all(g, "memberOf")
                .iter()
                .map(|p| p.to_ascii_lowercase())
                .collect(),
        );
    }
    let closure = |direct: &[String]| -> Vec<String> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut stack: Vec<String> = direct.iter().map(|d| d.to_ascii_lowercase()).collect();
        while let Some(g) = stack.pop() {
            if seen.insert(g.clone()) {
                stack.extend(parents.get(&g).cloned().unwrap_or_default());
            }
        }
        let mut out: Vec<String> = seen
            .iter()
            .map(|g| names.get(g).cloned().unwrap_or_else(|| rdn_value(g)))
            .collect();
        out.sort();
        out
    };
    let mut batch = SyncBatch {
        watermark: Some(format!("{server}#{highest}")),
        ..SyncBatch::default()
    };
    for e in entries {
        let groups = closure(all(&e, "memberOf"));
        let dn = e.dn.clone();
        let a = &s.attributes;
        let mobile = first(&e, &a.mobile)
            .or_else(|| first(&e, "telephoneNumber"))
            .map(str::to_owned);
        let personal = a
            .personal_email
            .as_deref()
            .and_then(|attr| first(&e, attr))
            .and_then(|m| Email::parse(m).ok());
        match dir.entry_from(e, groups) {
            Some(entry) => batch.users.push(SyncedUser {
                login: entry.account.login.clone(),
                display_name: entry.account.display_name.clone(),
                email: entry.account.email.clone(),
                mobile_phone: mobile,
                personal_email: personal,
                groups: entry.account.groups.clone(),
                disabled: entry.account.disabled,
            }),
            None => batch.skipped.push(format!("{dn}: no usable login attribute")),
        }
    }
    batch.in_scope = match since {
        None => batch.users.iter().map(|u| u.login.clone()).collect(),
        Some(_) => {
            let attr = s
                .login_attributes
                .first()
                .cloned()
                .unwrap_or_else(|| "sAMAccountName".into());
            crate::ldap::sync::paged_on(&dir.pool, &s.base_dn, s.user_filter.clone(), vec![attr.clone()])
                .await?
                .iter()
                .filter_map(|e| first(e, &attr).and_then(|v| Login::parse(v).ok()))
                .collect()
        }
    };
    Ok(batch)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unicode_pwd_is_quoted_utf16le() {
        assert_eq!(unicode_pwd("ab"), vec![0x22, 0, b'a', 0, b'b', 0, 0x22, 0]);
        assert_eq!(unicode_pwd("é").len(), 6);
    }

    #[test]
    fn data_codes_are_found() {
        let t = "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 52e, v1db1";
        assert_eq!(data_code(t).as_deref(), Some("52e"));
        assert_eq!(data_code("data 775, v1db1").as_deref(), Some("775"));
        assert_eq!(data_code("nothing here"), None);
    }

    fn result(rc: u32, text: &str) -> LdapResult {
        LdapResult {
            rc,
            matched: String::new(),
            text: text.into(),
            refs: vec![],
            ctrls: vec![],
        }
    }

    #[test]
    fn bind_codes_in_plain_words() {
        let cases = [
            ("52e", DirectoryError::InvalidCredentials),
            ("525", DirectoryError::InvalidCredentials),
            ("533", DirectoryError::InvalidCredentials),
            ("701", DirectoryError::InvalidCredentials),
            ("775", DirectoryError::Locked),
            ("532", DirectoryError::PasswordExpired),
            ("773", DirectoryError::PasswordExpired),
        ];
        for (code, want) in cases {
            let r = result(49, &format!("80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data {code}, v1db1"));
            assert_eq!(bind_error(&r), want, "{code}");
        }
        for code in ["530", "531"] {
            let r = result(49, &format!("AcceptSecurityContext error, data {code}, v1db1"));
            assert!(matches!(bind_error(&r), DirectoryError::Restricted(_)), "{code}");
        }
    }

    #[test]
    fn samba_and_windows_refusals_in_plain_words() {
        let rules = |text: &str| match password_error(&result(19, text), None) {
            DirectoryError::Rejected(v) => v.into_iter().map(|v| v.rule).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            rules("0000052D: Constraint violation - check_password_restrictions: the password is too short. It should be equal or longer than 8 characters!"),
            ["directory_min_length"]
        );
        assert_eq!(
            rules("0000052D: Constraint violation - check_password_restrictions: the password does not meet the complexity criteria!"),
            ["directory_complexity"]
        );
        assert_eq!(
            rules("0000052D: Constraint violation - check_password_restrictions: the password was already used (in history)!"),
            ["history"]
        );
        assert_eq!(
            rules("0000052D: Constraint violation - check_password_restrictions: the password was already used (previous password)!"),
            ["history"]
        );
        assert_eq!(
            rules("0000052D: SvcErr: DSID-031A12D2, problem 5003 (WILL_NOT_PERFORM), data 0"),
            ["directory_policy"]
        );
        assert_eq!(
            password_error(
                &result(19, "00000056: Constraint violation - check_password_restrictions: The old password specified doesn't match!"),
                None
            ),
            DirectoryError::InvalidCredentials
        );
    }

    #[test]
    fn intervals() {
        assert_eq!(interval_secs("-864000000000"), Some(86_400));
        assert_eq!(interval_secs("0"), None);
        assert_eq!(interval_secs("-9223372036854775808"), None);
    }
}
