//! Per-population rules: which flows and methods a user may use and how many proofs a reset needs.
//!
//! Policies are tried in order and the first whose groups match the account wins; a policy with no
//! groups matches everyone. When none matches, the default (everyone, from the `[flow]` settings)
//! applies. Privileged accounts (administrator groups, AD `adminCount=1`) get the
//! first `privileged = true` policy if there is one, and whatever they get is clamped by
//! [`Policy::harden_for_privileged`]: at least two methods, never security questions.
use crate::types::MethodKind;
use time::Duration;

/// What a user may do by themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelfService {
    Reset,
    Unlock,
    Change,
}

impl SelfService {
    pub const ALL: [Self; 3] = [Self::Reset, Self::Unlock, Self::Change];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reset => "reset",
            Self::Unlock => "unlock",
            Self::Change => "change",
        }
    }
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == raw.trim())
    }
}

impl From<crate::types::FlowKind> for SelfService {
    fn from(k: crate::types::FlowKind) -> Self {
        match k {
            crate::types::FlowKind::Reset => Self::Reset,
            crate::types::FlowKind::Unlock => Self::Unlock,
        }
    }
}

/// Who a policy applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everyone (the groups list is ignored).
    All,
    /// Members of the policy's groups.
    Groups,
    /// Members of the policy's groups (everyone when it lists none) get no self-service at all.
    None,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub scope: Scope,
    /// Group names (directory group CN or DN, compared case-insensitively).
    pub groups: Vec<String>,
    /// Applies to privileged accounts (and only to them).
    pub privileged: bool,
    pub flows: Vec<SelfService>,
    pub methods: Vec<MethodKind>,
    /// Distinct methods a reset or unlock needs; the user picks which of their registered ones.
    pub reset_required: u8,
    /// Verified methods a user must have registered.
    pub register_required: u8,
    /// Users with fewer than `register_required` methods are sent to registration after signing in.
    pub registration_required: bool,
    /// Days after which the user is asked to confirm their methods again (0: never).
    pub reconfirm_days: u16,
    pub code_digits: u8,
    pub code_lifetime: Duration,
    pub code_attempts: u32,
    /// Security questions a user registers (3–5) and how many of them a flow asks.
    pub questions_registered: u8,
    pub questions_asked: u8,
}

impl Policy {
    /// The built-in default: everyone, every flow, email codes, one method.
    pub fn default_named(name: &str) -> Self {
        Self {
            name: name.into(),
            scope: Scope::All,
            groups: vec![],
            privileged: false,
            flows: SelfService::ALL.to_vec(),
            methods: vec![
                MethodKind::Email,
                MethodKind::Sms,
                MethodKind::Voice,
                MethodKind::Totp,
            ],
            reset_required: 1,
            register_required: 1,
            registration_required: true,
            reconfirm_days: 180,
            code_digits: 6,
            code_lifetime: Duration::minutes(10),
            code_attempts: 5,
            questions_registered: 3,
            questions_asked: 3,
        }
    }

    /// The floor for privileged accounts: configuration can make it stricter, never weaker.
    pub fn harden_for_privileged(mut self) -> Self {
        self.methods.retain(|m| *m != MethodKind::Questions);
        self.reset_required = self.reset_required.max(2);
        self.register_required = self.register_required.max(self.reset_required);
        self.registration_required = true;
        self.code_attempts = self.code_attempts.min(5);
        self
    }

    pub fn allows(&self, flow: SelfService) -> bool {
        self.scope != Scope::None && self.flows.contains(&flow)
    }

    pub fn allows_method(&self, kind: MethodKind) -> bool {
        self.methods.contains(&kind)
    }

    fn matches(&self, groups: &[String], privileged: bool) -> bool {
        if self.privileged != privileged {
            return false;
        }
        let member = || {
            self.groups
                .iter()
                .any(|g| groups.iter().any(|m| group_matches(g, m)))
        };
        match self.scope {
            Scope::All => true,
            Scope::Groups => member(),
            Scope::None => self.groups.is_empty() || member(),
        }
    }
}

/// A configured group matches a membership given as a name or as a DN whose first RDN is that name.
fn group_matches(configured: &str, member: &str) -> bool {
    if configured.eq_ignore_ascii_case(member) {
        return true;
    }
    let rdn_value = |dn: &str| -> Option<String> {
        let first = dn.split(',').next()?;
        let (_, v) = first.split_once('=')?;
        Some(v.trim().to_owned())
    };
    match (rdn_value(member), configured.contains('=')) {
        (Some(v), false) => v.eq_ignore_ascii_case(configured.trim()),
        _ => false,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policies {
    pub list: Vec<Policy>,
    pub default: Policy,
    /// Members of these groups are privileged whatever the directory says (administrators).
    pub privileged_groups: Vec<String>,
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            list: vec![],
            default: Policy::default_named("default"),
            privileged_groups: vec![],
        }
    }
}

impl Policies {
    /// The policy for an account: first match by group (privileged policies for privileged accounts),
    /// then the default; privileged accounts always get at least the privileged floor.
    pub fn for_account(&self, groups: &[String], privileged: bool) -> Policy {
        let privileged = privileged
            || self
                .privileged_groups
                .iter()
                .any(|p| groups.iter().any(|g| group_matches(p, g)));
        let found = self
            .list
            .iter()
            .find(|p| p.matches(groups, privileged))
            .or_else(|| {
                // A privileged account without a privileged policy falls back to the group policies.
                privileged
                    .then(|| self.list.iter().find(|p| p.matches(groups, false)))
                    .flatten()
            })
            .unwrap_or(&self.default)
            .clone();
        if privileged {
            found.harden_for_privileged()
        } else {
            found
        }
    }

    /// What an unknown login is answered with: the default policy, so a decoy asks what most users
    /// are asked.
    pub fn for_unknown(&self) -> &Policy {
        &self.default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, scope: Scope, groups: &[&str], required: u8) -> Policy {
        Policy {
            scope,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            reset_required: required,
            ..Policy::default_named(name)
        }
    }

    fn set() -> Policies {
        Policies {
            list: vec![
                policy("nobody", Scope::None, &["contractors"], 1),
                policy("finance", Scope::Groups, &["finance"], 2),
                policy("staff", Scope::Groups, &["staff"], 1),
            ],
            default: policy("default", Scope::All, &[], 1),
            privileged_groups: vec!["admins".into()],
        }
    }

    #[test]
    fn first_match_wins_by_group() {
        let p = set();
        let g = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(p.for_account(&g(&["staff", "finance"]), false).name, "finance");
        assert_eq!(
            p.for_account(&g(&["cn=Staff,ou=groups,dc=x"]), false).name,
            "staff"
        );
        assert_eq!(p.for_account(&g(&["other"]), false).name, "default");
        let c = p.for_account(&g(&["contractors", "staff"]), false);
        assert_eq!(c.name, "nobody");
        assert!(!c.allows(SelfService::Reset));
    }

    #[test]
    fn privileged_accounts_never_get_less_than_two_methods_or_questions() {
        let mut p = set();
        p.default.methods.push(MethodKind::Questions);
        p.default.reset_required = 1;
        let admin = p.for_account(&[], true);
        assert!(admin.reset_required >= 2);
        assert!(!admin.allows_method(MethodKind::Questions));
        // A configured privileged policy may be stricter, never weaker.
        let mut strict = policy("admins", Scope::All, &[], 3);
        strict.privileged = true;
        strict.methods.push(MethodKind::Questions);
        p.list.insert(0, strict);
        let admin = p.for_account(&[], true);
        assert_eq!((admin.name.as_str(), admin.reset_required), ("admins", 3));
        assert!(!admin.allows_method(MethodKind::Questions));
        // A privileged policy never applies to ordinary users.
        assert_eq!(p.for_account(&[], false).name, "default");
        // Members of a privileged group are privileged whatever the directory says.
        assert_eq!(
            p.for_account(&["cn=admins,ou=g".to_string()], false).name,
            "admins"
        );
    }

    #[test]
    fn group_names_match_dns_by_their_first_value() {
        assert!(group_matches("staff", "cn=staff,ou=groups,dc=example,dc=org"));
        assert!(group_matches("CN=Staff,OU=G", "cn=staff,ou=g"));
        assert!(!group_matches("staff", "cn=staffers,ou=groups"));
        assert!(!group_matches("cn=staff,ou=a", "cn=staff,ou=b"));
    }
}
