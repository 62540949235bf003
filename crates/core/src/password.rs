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

/// Checks a candidate against the offline breach corpus (an adapter implements it).
pub trait BreachCheck: Send + Sync + std::fmt::Debug {
    fn is_breached(&self, password: &str) -> bool;
}

/// Who the password is for: the personal-information rule and the banned-term score use it.
#[derive(Clone, Debug, Default)]
pub struct PasswordContext {
    pub login: String,
    pub display_name: String,
    pub email: String,
}

impl PasswordContext {
    pub fn login(login: &str) -> Self {
        Self {
            login: login.to_owned(),
            ..Self::default()
        }
    }

    /// The user's own words: login, parts of the display name, the email's local part and its parts.
    pub fn personal_tokens(&self, min_chars: usize) -> Vec<String> {
        let mut out = Vec::new();
        let local = self.email.split('@').next().unwrap_or("");
        for source in [self.login.as_str(), self.display_name.as_str(), local] {
            let lower = source.to_lowercase();
            if lower.chars().count() >= min_chars {
                out.push(lower.clone());
            }
            for t in lower.split(|c: char| !c.is_alphanumeric()) {
                if t.chars().count() >= min_chars {
                    out.push(t.to_owned());
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// One rule's verdict for the live checklist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleResult {
    pub rule: &'static str,
    pub text: String,
    pub met: bool,
}

/// Gatehouse's own password rules. Every rule has a stable id and a sentence for people; every
/// violated rule is reported, not only the first.
#[derive(Clone, Debug)]
pub struct PasswordPolicy {
    /// Minimum length in code points after NFKC normalisation.
    pub min_length: usize,
    pub max_length: usize,
    /// No token of 4+ characters from the login, display name or email local part, forwards or
    /// reversed.
    pub forbid_login: bool,
    /// At least this many of the five character categories (3 = Active Directory's complexity);
    /// 0 turns the rule off.
    pub character_classes: u8,
    /// Global and custom banned terms.
    pub banned: std::sync::Arc<crate::banned::BannedList>,
    /// Entra-style score a password needs (5); 0 turns the banned-term rule off.
    pub banned_min_score: u32,
    /// Minimum zxcvbn score (0–4); 0 turns the rule off.
    pub min_strength: u8,
    /// The offline breach corpus, when one is configured.
    pub breach: Option<std::sync::Arc<dyn BreachCheck>>,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 12,
            max_length: 1024,
            forbid_login: true,
            character_classes: 0,
            banned: std::sync::Arc::new(crate::banned::BannedList::global()),
            banned_min_score: crate::banned::DEFAULT_MIN_SCORE,
            min_strength: 3,
            breach: None,
        }
    }
}

/// The five character categories of Active Directory's complexity rule.
pub fn character_categories(password: &str) -> usize {
    [
        password.chars().any(char::is_uppercase),
        password.chars().any(char::is_lowercase),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_alphanumeric()),
        password
            .chars()
            .any(|c| c.is_alphabetic() && !c.is_uppercase() && !c.is_lowercase()),
    ]
    .iter()
    .filter(|x| **x)
    .count()
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
        if self.character_classes > 0 {
            out.push(RuleText {
                rule: "character_classes",
                text: format!(
                    "Characters of at least {} kinds: upper-case, lower-case, digits, symbols, other letters.",
                    self.character_classes
                ),
            });
        }
        if self.forbid_login {
            out.push(RuleText {
                rule: "contains_login",
                text: "Not your user name, your name or your email address (nor backwards).".into(),
            });
        }
        if self.banned_min_score > 0 {
            out.push(RuleText {
                rule: "banned",
                text: "Not built on a commonly used password or word.".into(),
            });
        }
        if self.min_strength > 0 {
            out.push(RuleText {
                rule: "strength",
                text: "Hard to guess (no keyboard patterns, dates or simple sequences).".into(),
            });
        }
        out.push(RuleText {
            rule: "breached",
            text: "Not found in known data breaches.".into(),
        });
        out.push(RuleText {
            rule: "history",
            text: "Must not be one of your recent passwords.".into(),
        });
        out
    }

    /// Checks `password` for the account `login`; returns every violation.
    pub fn check(&self, login: &str, password: &str) -> Vec<Violation> {
        self.check_for(&PasswordContext::login(login), password)
    }

    /// Every violated rule, with its sentence.
    pub fn check_for(&self, who: &PasswordContext, password: &str) -> Vec<Violation> {
        use unicode_normalization::UnicodeNormalization;
        let mut v = Vec::new();
        let nfkc: String = password.nfkc().collect();
        let len = nfkc.chars().count();
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
            // Nothing else is worth computing on an over-long input.
            return v;
        }
        if self.character_classes > 0 && character_categories(&nfkc) < usize::from(self.character_classes) {
            v.push(Violation::new(
                "character_classes",
                format!(
                    "Mix at least {} kinds of characters: upper-case, lower-case, digits, symbols.",
                    self.character_classes
                ),
            ));
        }
        let lower = nfkc.to_lowercase();
        let tokens = who.personal_tokens(4);
        if self.forbid_login {
            let login = who.login.to_lowercase();
            if !login.is_empty() && lower == login {
                v.push(Violation::new(
                    "not_login",
                    "Your password cannot be your user name.",
                ));
            } else if !login.is_empty() && lower.contains(&login) {
                v.push(Violation::new(
                    "contains_login",
                    "Your password cannot contain your user name.",
                ));
            } else if tokens.iter().any(|t| {
                let reversed: String = t.chars().rev().collect();
                lower.contains(t.as_str()) || lower.contains(&reversed)
            }) {
                v.push(Violation::new(
                    "contains_personal",
                    "Your password cannot contain your name, user name or email address (nor backwards).",
                ));
            }
        }
        if self.banned_min_score > 0 && !self.banned.is_empty() {
            let normalized = crate::banned::normalize(&nfkc);
            let names: Vec<String> = who
                .personal_tokens(3)
                .iter()
                .map(|t| crate::banned::normalize(t))
                .collect();
            let fuzzy = self.banned.fuzzy_match(&normalized);
            let (score, _found) = self.banned.score(&normalized, &names);
            if fuzzy.is_some() || score < self.banned_min_score {
                v.push(Violation::new(
                    "banned",
                    "This password is built on a commonly used password or word (or your name). Add \
                     unrelated words or characters.",
                ));
            }
        }
        if self.min_strength > 0 {
            let inputs: Vec<&str> = tokens.iter().map(String::as_str).collect();
            let score = u8::from(zxcvbn::zxcvbn(&nfkc, &inputs).score());
            if score < self.min_strength {
                v.push(Violation::new(
                    "strength",
                    "This password is too easy to guess. Use a longer phrase of unrelated words.",
                ));
            }
        }
        if let Some(b) = &self.breach {
            if b.is_breached(password) {
                v.push(Violation::new(
                    "breached",
                    "This password appears in known data breaches; attackers try those first. Choose \
                     another.",
                ));
            }
        }
        v
    }

    /// Every rule with met / unmet, for the live checklist.
    pub fn evaluate(&self, who: &PasswordContext, password: &str) -> Vec<RuleResult> {
        self.checklist(&self.check_for(who, password))
    }

    /// Every rule with met / unmet, given what a check found broken.
    pub fn checklist(&self, broken: &[Violation]) -> Vec<RuleResult> {
        self.rules()
            .into_iter()
            .filter(|r| r.rule != "history" && !(r.rule == "breached" && self.breach.is_none()))
            .map(|r| {
                let aliases: &[&str] = match r.rule {
                    "contains_login" => &["not_login", "contains_personal"],
                    _ => &[],
                };
                let met = !broken
                    .iter()
                    .any(|b| b.rule == r.rule || aliases.contains(&b.rule.as_str()));
                RuleResult {
                    rule: r.rule,
                    text: r.text,
                    met,
                }
            })
            .collect()
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
    /// The directory runs its own quality check on new passwords (OpenLDAP `pwdCheckQuality`).
    pub quality_checked: bool,
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
        if self.quality_checked {
            out.push(RuleText {
                rule: "directory_quality",
                text: "The directory also checks the password's quality itself.".into(),
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
    character_categories(password) >= 3
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules(v: &[Violation]) -> Vec<&str> {
        v.iter().map(|x| x.rule.as_str()).collect()
    }

    /// A strong password of exactly `n` characters (no repeated pattern for zxcvbn to find).
    pub fn long_password(n: usize) -> String {
        let words = [
            "Quartz", "Lagoon", "Velvet", "Ember", "Saffron", "Tundra", "Orbit", "Cobalt",
        ];
        let mut s = String::new();
        let mut i = 0usize;
        while s.chars().count() < n {
            s.push_str(words[i % words.len()]);
            s.push_str(&format!("{}", (i * 7919) % 97));
            s.push(['!', '#', '%', '&', '*', '+', '?', '~'][i % 8]);
            i += 1;
        }
        s.chars().take(n).collect()
    }

    #[test]
    fn table() {
        // One rule at a time: the others are switched off.
        let basic = PasswordPolicy {
            banned_min_score: 0,
            min_strength: 0,
            ..PasswordPolicy::default()
        };
        let cases: &[(&str, &str, &[&str])] = &[
            ("alice", "correct horse battery", &[]),
            ("alice", "short", &["min_length"]),
            ("alice", "alice", &["min_length", "not_login"]),
            ("alice", "my-ALICE-password", &["contains_login"]),
            ("bob", "xAlice", &["min_length"]),
            ("alice", "ünïcödé-chars", &[]),
            // NFKC: full-width letters count as the letters they are.
            ("alice", "ＡＬＩＣＥ-garden-hose", &["contains_login"]),
            // Ligature "ﬁ" is two code points after NFKC: "ﬁﬁﬁﬁﬁﬁ" is 12 characters.
            ("alice", "ﬁﬁﬁﬁﬁﬁ", &[]),
        ];
        for (login, pw, want) in cases {
            assert_eq!(rules(&basic.check(login, pw)), *want, "{login} / {pw}");
        }
    }

    #[test]
    fn personal_information_also_reversed() {
        let p = PasswordPolicy {
            banned_min_score: 0,
            min_strength: 0,
            ..PasswordPolicy::default()
        };
        let who = PasswordContext {
            login: "jdoe".into(),
            display_name: "Johanna Doe-Smith".into(),
            email: "johanna.smith@example.org".into(),
        };
        let cases: &[(&str, &[&str])] = &[
            ("Umbrella-Quartz-77", &[]),
            ("Johanna-Quartz-77", &["contains_personal"]),
            ("annahoj-Quartz-77", &["contains_personal"]),
            ("Quartz-smith-Lagoon", &["contains_personal"]),
            ("Quartz-htims-Lagoon", &["contains_personal"]),
            ("Quartz-jdoe-Lagoon", &["contains_login"]),
            // Tokens shorter than four characters are not personal information.
            ("Quartz-Doe-Lagoon-9", &[]),
        ];
        for (pw, want) in cases {
            assert_eq!(rules(&p.check_for(&who, pw)), *want, "{pw}");
        }
    }

    #[test]
    fn character_classes_when_asked() {
        let p = PasswordPolicy {
            character_classes: 3,
            banned_min_score: 0,
            min_strength: 0,
            ..PasswordPolicy::default()
        };
        assert_eq!(rules(&p.check("x", "lowercaseonlyhere")), ["character_classes"]);
        assert_eq!(rules(&p.check("x", "Lowercase-only-here")), Vec::<&str>::new());
        assert_eq!(rules(&p.check("x", "lowercase1234567")), ["character_classes"]);
    }

    #[test]
    fn banned_terms_and_strength() {
        let p = PasswordPolicy::default();
        let cases: &[(&str, &[&str])] = &[
            ("P@ssw0rd2026!", &["banned", "strength"]),
            ("Welcome12345", &["banned", "strength"]),
            ("qwertyuiop123", &["banned", "strength"]),
            // Entra counts a term once however often it appears: "summer" + 4 characters = 5 points.
            ("Summer2026Summer", &[]),
            ("Dragon-Dragon-1", &["banned", "strength"]),
            ("aaaaaaaaaaaaaaaa", &["strength"]),
            ("Velvet-Lagoon-Orbit-42", &[]),
        ];
        for (pw, want) in cases {
            assert_eq!(rules(&p.check("someone", pw)), *want, "{pw}");
        }
    }

    #[derive(Debug)]
    struct Breached(&'static str);
    impl BreachCheck for Breached {
        fn is_breached(&self, password: &str) -> bool {
            password == self.0
        }
    }

    #[test]
    fn breached_passwords_are_refused_and_the_checklist_says_which_rule() {
        let p = PasswordPolicy {
            breach: Some(std::sync::Arc::new(Breached("Velvet-Lagoon-Orbit-42"))),
            ..PasswordPolicy::default()
        };
        assert_eq!(rules(&p.check("someone", "Velvet-Lagoon-Orbit-42")), ["breached"]);
        let list = p.evaluate(&PasswordContext::login("someone"), "Velvet-Lagoon-Orbit-42");
        let unmet: Vec<&str> = list.iter().filter(|r| !r.met).map(|r| r.rule).collect();
        assert_eq!(unmet, ["breached"]);
        assert!(list.iter().any(|r| r.rule == "strength" && r.met));
        let list = p.evaluate(&PasswordContext::login("someone"), "short");
        let unmet: Vec<&str> = list.iter().filter(|r| !r.met).map(|r| r.rule).collect();
        assert_eq!(unmet, ["min_length", "strength"]);
    }

    #[test]
    fn accepts_256_characters() {
        let p = PasswordPolicy::default();
        let long = long_password(256);
        assert_eq!(long.chars().count(), 256);
        assert!(
            p.check("alice", &long).is_empty(),
            "{:?}",
            p.check("alice", &long)
        );
        assert_eq!(rules(&p.check("alice", &"x".repeat(1025))), ["max_length"]);
    }

    #[test]
    fn all_violations_are_returned_together() {
        let p = PasswordPolicy {
            min_length: 20,
            max_length: 30,
            ..PasswordPolicy::default()
        };
        // "carol" (1 point) + "-pass" (5) = 6 points: the banned-term score passes.
        assert_eq!(
            rules(&p.check("carol", "carol-pass")),
            ["min_length", "contains_login", "strength"]
        );
        assert_eq!(
            rules(&p.check("carol", "carol1")),
            ["min_length", "contains_login", "banned", "strength"]
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
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn directory_rules_never_panic(login in "\\PC{0,20}", name in "\\PC{0,30}", pw in "\\PC{0,100}") {
            let r = DirectoryRules { min_length: Some(8), history: Some(5), complexity: true, min_age_secs: Some(1), quality_checked: true };
            let _ = r.check(&login, &name, &pw);
        }

        #[test]
        fn never_panics(login in "\\PC{0,20}", pw in "\\PC{0,300}") {
            let _ = PasswordPolicy::default().check(&login, &pw);
        }

        /// A banned term under any substitution, padded with a few characters, is never accepted.
        #[test]
        fn a_banned_term_in_disguise_is_refused(
            term in proptest::sample::select(vec!["password", "welcome", "qwerty", "dragon", "sunshine", "football"]),
            mask in proptest::collection::vec(any::<bool>(), 8),
            pad in "[0-9!#]{0,3}",
        ) {
            let disguised: String = term.chars().zip(mask.iter().cycle()).map(|(c, m)| match (c, m) {
                ('a', true) => '@', ('s', true) => '$', ('o', true) => '0', ('e', true) => '3',
                ('t', true) => '7', ('l', true) => '1', (c, true) => c.to_ascii_uppercase(), (c, false) => c,
            }).collect();
            let pw = format!("{disguised}{pad}");
            let v = PasswordPolicy { min_length: 1, min_strength: 0, ..PasswordPolicy::default() }.check("someone", &pw);
            prop_assert!(v.iter().any(|x| x.rule == "banned"), "{pw}: {v:?}");
        }
        #[test]
        fn a_password_containing_the_login_is_refused(login in "[a-z]{3,10}", pre in "[0-9]{0,5}", post in "[0-9]{0,5}") {
            let pw = format!("{pre}{login}{post}");
            let v = PasswordPolicy::default().check(&login, &pw);
            prop_assert!(v.iter().any(|x| x.rule == "contains_login" || x.rule == "not_login"));
        }
    }
}
