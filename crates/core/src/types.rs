//! Domain values that exist only in their checked, normalised form.
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a raw string did not become a domain value. The message is meant for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ParseError {
    pub field: &'static str,
    pub message: String,
}

impl ParseError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// A login name as typed by a user: trimmed, case-folded, 1–256 characters, no control characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Login(String);

impl Login {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        // Lower-cased first: some letters grow when lower-cased (İ), and the stored form is the one
        // that must fit (found by fuzzing).
        let lowered = raw.trim().to_lowercase();
        let trimmed = lowered.trim();
        if trimmed.is_empty() {
            return Err(ParseError::new("login", "enter your user name"));
        }
        if trimmed.chars().count() > 256 {
            return Err(ParseError::new("login", "a user name has at most 256 characters"));
        }
        if trimmed.chars().any(|c| c.is_control()) {
            return Err(ParseError::new(
                "login",
                "a user name cannot contain control characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Login {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<Login> for String {
    fn from(value: Login) -> Self {
        value.0
    }
}
impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Login({})", self.0)
    }
}
impl fmt::Display for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address: one `@`, a non-empty local part (≤ 64), a dotted domain, lower-cased domain.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let raw = raw.trim();
        // The domain is compared and stored lower-cased, so it is checked in that form (a label
        // can grow when lower-cased; found by fuzzing).
        let lowered;
        let s = match raw.rsplit_once('@') {
            Some((local, domain)) => {
                lowered = format!("{local}@{}", domain.to_lowercase());
                lowered.as_str()
            }
            None => raw,
        };
        let err = |m: &str| Err(ParseError::new("email", m));
        if s.len() > 254 {
            return err("an email address has at most 254 characters");
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return err("an email address looks like name@example.org");
        };
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return err("the part before @ is missing or too long");
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        };
        if labels.len() < 2 || !labels.iter().all(label_ok) {
            return err("the domain after @ is not valid");
        }
        if s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"'))
        {
            return err("an email address cannot contain spaces or <>,;\"");
        }
        Ok(Self(format!("{local}@{}", domain.to_lowercase())))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// A hint that shows enough to recognise the address and not enough to learn it: `a•••@e•••.net`.
    pub fn masked(&self) -> String {
        let (local, domain) = self.0.rsplit_once('@').unwrap_or((&self.0, ""));
        let first = |s: &str| s.chars().next().map(String::from).unwrap_or_default();
        let tld = domain.rsplit('.').next().unwrap_or("");
        format!("{}•••@{}•••.{}", first(local), first(domain), tld)
    }
}
impl TryFrom<String> for Email {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<Email> for String {
    fn from(value: Email) -> Self {
        value.0
    }
}
impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.masked())
    }
}
impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An opaque identifier of a registered method (or of a decoy method): 20 lower-case hex digits.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MethodId(String);

impl MethodId {
    pub const LEN: usize = 20;
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let s = raw.trim();
        if s.len() == Self::LEN
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::new("method", "unknown method"))
        }
    }
    pub(crate) fn from_bytes(bytes: &[u8]) -> Self {
        let mut s = hex::encode(bytes);
        s.truncate(Self::LEN);
        Self(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for MethodId {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<MethodId> for String {
    fn from(value: MethodId) -> Self {
        value.0
    }
}
impl fmt::Display for MethodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of a flow as it appears in the audit log (not the secret token that drives it).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct FlowId(pub String);

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowKind {
    Reset,
    Unlock,
}

impl FlowKind {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw.trim() {
            "reset" => Ok(Self::Reset),
            "unlock" => Ok(Self::Unlock),
            _ => Err(ParseError::new("kind", "kind is \"reset\" or \"unlock\"")),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reset => "reset",
            Self::Unlock => "unlock",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodKind {
    /// A code to an alternate (personal) email address.
    Email,
    /// A code by text message.
    Sms,
    /// A code read out by a phone call.
    Voice,
    /// An authenticator app (TOTP).
    Totp,
    /// Security questions.
    Questions,
}

impl MethodKind {
    pub const ALL: [Self; 5] = [Self::Email, Self::Sms, Self::Voice, Self::Totp, Self::Questions];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sms => "sms",
            Self::Voice => "voice",
            Self::Totp => "totp",
            Self::Questions => "questions",
        }
    }
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == raw.trim())
            .ok_or_else(|| {
                ParseError::new(
                    "type",
                    "the method type is one of \"email\", \"sms\", \"voice\", \"totp\", \"questions\"",
                )
            })
    }
    /// Methods that deliver a code to an address or number (the others are checked in place).
    pub fn sends_code(self) -> bool {
        matches!(self, Self::Email | Self::Sms | Self::Voice)
    }
    pub fn is_phone(self) -> bool {
        matches!(self, Self::Sms | Self::Voice)
    }
    /// How the method is called in pages and messages.
    pub fn label(self) -> &'static str {
        match self {
            Self::Email => "Email",
            Self::Sms => "Text message",
            Self::Voice => "Phone call",
            Self::Totp => "Authenticator app",
            Self::Questions => "Security questions",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn login_is_trimmed_and_case_folded() {
        assert_eq!(Login::parse("  Alice ").unwrap().as_str(), "alice");
        assert!(Login::parse("   ").is_err());
        assert!(Login::parse("a\u{0}b").is_err());
        assert!(Login::parse(&"x".repeat(257)).is_err());
    }

    #[test]
    fn email_parsing_and_masking() {
        let e = Email::parse("Alice.Private@Example.NET").unwrap();
        assert_eq!(e.as_str(), "Alice.Private@example.net");
        assert_eq!(e.masked(), "A•••@e•••.net");
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.org",
            "a@b",
            "a b@example.org",
            "a@exa mple.org",
            "a@-x.org",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} should be refused");
        }
        assert!(!format!("{e:?}").contains("Private"));
    }

    #[test]
    fn parsed_values_parse_to_themselves_even_when_lower_casing_grows_them() {
        // Inputs found by fuzzing (fuzz/artifacts-found): `İ` lower-cases to two characters, `Ⱥ`
        // (2 bytes) to `ⱥ` (3 bytes); the limits apply to the stored, lower-cased form.
        let login = Login::parse(&"İ".repeat(100)).unwrap();
        assert_eq!(login.as_str().chars().count(), 200);
        assert_eq!(Login::parse(login.as_str()).unwrap(), login);
        assert!(
            Login::parse(&"İ".repeat(200)).is_err(),
            "400 characters once lower-cased"
        );
        let email = Email::parse(&format!("a@{}.com", "Ⱥ".repeat(20))).unwrap();
        assert_eq!(Email::parse(email.as_str()).unwrap(), email);
        assert!(
            Email::parse(&format!("a@{}.com", "Ⱥ".repeat(22))).is_err(),
            "a 66-byte label once lower-cased"
        );
        assert!(
            Email::parse("a@İx.com").is_err(),
            "a combining dot once lower-cased"
        );
    }

    #[test]
    fn method_ids_are_twenty_hex_digits() {
        assert!(MethodId::parse("0123456789abcdef0123").is_ok());
        assert!(MethodId::parse("0123456789abcdef012").is_err());
        assert!(MethodId::parse("0123456789abcdef012G").is_err());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,80}") {
            let _ = Login::parse(&s);
            if let Ok(e) = Email::parse(&s) { let _ = e.masked(); }
            let _ = MethodId::parse(&s);
            let _ = FlowKind::parse(&s);
        }
    }
}
