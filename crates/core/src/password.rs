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

/// A directory's own password rules (AD domain policy or fine-grained policy, OpenLDAP ppolicy),
/// shown before the user types and checked here first, so every reason comes at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectoryRules {
    pub min_length: Option<u32>,
    pub history: Option<u32>,
    /// AD complexity: three of the five character categories, and neither the account name nor a
    /// part of the display name.
    pub complexity: bool,
    pub min_age_secs: Option<u64>,
}

impl DirectoryRules {
    pub fn texts(&self) -> Vec<RuleText> {
        let mut out = Vec::new();
        if let Some(n) = self.min_length.filter(|n| *n > 0) {
            out.push(RuleText {
                rule: "directory_min_length",
                text: format!("The directory needs at least {n} characters."),
            });
        }
        if self.complexity {
            out.push(RuleText {
                rule: "directory_complexity",
                text: "Use three of: upper-case letters, lower-case letters, digits, symbols; and not your \
                       user name or parts of your name."
                    .into(),
            });
        }
        if let Some(n) = self.history.filter(|n| *n > 0) {
            out.push(RuleText {
                rule: "history",
                text: format!("Not one of your last {n} passwords."),
            });
        }
        if let Some(s) = self.min_age_secs.filter(|s| *s > 0) {
            let hours = s.div_ceil(3600);
            out.push(RuleText {
                rule: "directory_min_age",
                text: format!("A password can be changed again only after {hours} hour(s)."),
            });
        }
        out
    }

    /// What can be checked without the directory: length and complexity.
    pub fn check(&self, login: &str, display_name: &str, password: &str) -> Vec<Violation> {
        let mut v = Vec::new();
        let len = password.chars().count();
        if let Some(n) = self.min_length {
            if len < n as usize {
                v.push(Violation::new(
                    "directory_min_length",
                    format!("The directory needs at least {n} characters (this one has {len})."),
                ));
            }
        }
        if self.complexity && !meets_complexity(login, display_name, password) {
            v.push(Violation::new(
                "directory_complexity",
                "Use characters from at least three of: upper-case letters, lower-case letters, digits, \
                 symbols; and do not include your user name or parts of your full name.",
            ));
        }
        v
    }
}

/// Active Directory's complexity rule ("Password must meet complexity requirements").
fn meets_complexity(login: &str, display_name: &str, password: &str) -> bool {
    let pw = password.to_lowercase();
    let login = login.to_lowercase();
    if login.chars().count() > 2 && pw.contains(&login) {
        return false;
    }
    let separators = [',', '.', '-', '_', '#', ' ', '\t'];
    let name_part = display_name
        .to_lowercase()
        .split(|c| separators.contains(&c))
        .filter(|t| t.chars().count() >= 3)
        .any(|t| pw.contains(t));
    if name_part {
        return false;
    }
    let classes = [
        password.chars().any(char::is_uppercase),
        password.chars().any(char::is_lowercase),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_alphanumeric()),
        password
            .chars()
            .any(|c| c.is_alphabetic() && !c.is_uppercase() && !c.is_lowercase()),
    ];
    classes.iter().filter(|x| **x).count() >= 3
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

    #[test]
    fn ad_complexity_like_windows() {
        let r = DirectoryRules {
            min_length: Some(8),
            complexity: true,
            ..DirectoryRules::default()
        };
        let cases: &[(&str, &[&str])] = &[
            ("Sunny-Garden-42", &[]),
            ("sunnygarden", &["directory_complexity"]),
            ("Short1!", &["directory_min_length"]),
            ("My-bob-Pass-9", &["directory_complexity"]),
            ("Builder-Pass-9", &["directory_complexity"]),
            ("Zimmer-Pass-9", &[]),
            ("日本語Pass9", &[]),
        ];
        for (pw, want) in cases {
            assert_eq!(rules(&r.check("bob", "Bob Builder", pw)), *want, "{pw}");
        }
        assert_eq!(r.texts().len(), 2);
    }

    proptest! {
        #[test]
        fn directory_rules_never_panic(login in "\\PC{0,20}", name in "\\PC{0,30}", pw in "\\PC{0,100}") {
            let r = DirectoryRules { min_length: Some(8), history: Some(5), complexity: true, min_age_secs: Some(1) };
            let _ = r.check(&login, &name, &pw);
        }

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
