//! The password policy baseline. Every violated rule is reported, not only the first.
use serde::{Deserialize, Serialize};

/// One rule a password broke: a stable id and a sentence a person understands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub rule: String,
    pub message: String,
}

impl Violation {
    pub fn new(rule: &str, message: impl Into<String>) -> Self {
        Self {
            rule: rule.to_owned(),
            message: message.into(),
        }
    }
}

/// A rule as shown to the user before they type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleText {
    pub rule: &'static str,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordPolicy {
    pub min_length: usize,
    pub max_length: usize,
    pub forbid_login: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 12,
            max_length: 1024,
            forbid_login: true,
        }
    }
}

impl PasswordPolicy {
    pub fn rules(&self) -> Vec<RuleText> {
        let mut out = vec![
            RuleText {
                rule: "min_length",
                text: format!("At least {} characters.", self.min_length),
            },
            RuleText {
                rule: "max_length",
                text: format!("At most {} characters.", self.max_length),
            },
        ];
        if self.forbid_login {
            out.push(RuleText {
                rule: "contains_login",
                text: "Must not contain your user name.".into(),
            });
        }
        out.push(RuleText {
            rule: "history",
            text: "Must not be one of your recent passwords.".into(),
        });
        out
    }

    /// Checks `password` for the account `login`; returns every violation.
    pub fn check(&self, login: &str, password: &str) -> Vec<Violation> {
        let mut v = Vec::new();
        let len = password.chars().count();
        if len < self.min_length {
            v.push(Violation::new(
                "min_length",
                format!(
                    "Use at least {} characters (this one has {len}).",
                    self.min_length
                ),
            ));
        }
        if len > self.max_length {
            v.push(Violation::new(
                "max_length",
                format!("Use at most {} characters (this one has {len}).", self.max_length),
            ));
        }
        if self.forbid_login && !login.is_empty() {
            let pw = password.to_lowercase();
            let login = login.to_lowercase();
            if pw == login {
                v.push(Violation::new(
                    "not_login",
                    "Your password cannot be your user name.",
                ));
            } else if pw.contains(&login) {
                v.push(Violation::new(
                    "contains_login",
                    "Your password cannot contain your user name.",
                ));
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules(v: &[Violation]) -> Vec<&str> {
        v.iter().map(|x| x.rule.as_str()).collect()
    }

    #[test]
    fn table() {
        let p = PasswordPolicy::default();
        let cases: &[(&str, &str, &[&str])] = &[
            ("alice", "correct horse battery", &[]),
            ("alice", "short", &["min_length"]),
            ("alice", "alice", &["min_length", "not_login"]),
            ("alice", "my-ALICE-password", &["contains_login"]),
            ("bob", "xAlice", &["min_length"]),
            ("alice", "ünïcödé-chars", &[]),
        ];
        for (login, pw, want) in cases {
            assert_eq!(rules(&p.check(login, pw)), *want, "{login} / {pw}");
        }
    }

    #[test]
    fn accepts_256_characters() {
        let p = PasswordPolicy::default();
        assert!(p.check("alice", &"Zq9!".repeat(64)).is_empty());
        assert_eq!(rules(&p.check("alice", &"x".repeat(1025))), ["max_length"]);
    }

    #[test]
    fn all_violations_are_returned_together() {
        let p = PasswordPolicy {
            min_length: 20,
            max_length: 30,
            forbid_login: true,
        };
        assert_eq!(
            rules(&p.check("carol", "carol-pass")),
            ["min_length", "contains_login"]
        );
    }

    proptest! {
        #[test]
        fn never_panics(login in "\\PC{0,20}", pw in "\\PC{0,300}") {
            let _ = PasswordPolicy::default().check(&login, &pw);
        }
        #[test]
        fn a_password_containing_the_login_is_refused(login in "[a-z]{3,10}", pre in "[0-9]{0,5}", post in "[0-9]{0,5}") {
            let pw = format!("{pre}{login}{post}");
            let v = PasswordPolicy::default().check(&login, &pw);
            prop_assert!(v.iter().any(|x| x.rule == "contains_login" || x.rule == "not_login"));
        }
    }
}
