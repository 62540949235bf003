//! Secrets are types: redacted `Debug`, no `Display`, zeroised on drop, exposed only where they leave.
use crate::ports::SecureRng;
use crate::types::ParseError;
use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// A password typed by a person. Never logged, never displayed.
#[derive(Clone)]
pub struct Password(SecretString);

impl Password {
    pub fn new(raw: impl Into<String>) -> Self {
        Self(SecretString::from(raw.into()))
    }
    /// The only way to read the password: for hashing it or writing it to the directory.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}
impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(redacted)")
    }
}

/// SHA-256 of a high-entropy token, the only form in which tokens are stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}
impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", &self.to_hex()[..8])
    }
}

/// An opaque bearer token (flow token, session token, link token): 256 bits, base64url.
pub struct Token(SecretString);

impl Token {
    pub const BYTES: usize = 32;
    pub fn generate(rng: &dyn SecureRng) -> Self {
        let mut bytes = [0u8; Self::BYTES];
        rng.fill(&mut bytes);
        let s = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
        Self(SecretString::from(s))
    }
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let s = raw.trim();
        let ok = s.len() == 43
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(SecretString::from(s.to_owned())))
        } else {
            Err(ParseError::new("token", "the link or session is not valid"))
        }
    }
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.expose_secret().as_bytes()).into())
    }
}
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(redacted)")
    }
}

/// A one-time code of N ASCII digits (6–10), as sent to the user or as typed back.
pub struct OtpCode(SecretString);

impl OtpCode {
    pub fn generate(rng: &dyn SecureRng, digits: u8) -> Self {
        let digits = digits.clamp(6, 10);
        let mut s = String::with_capacity(usize::from(digits));
        for _ in 0..digits {
            s.push(char::from(b'0' + rng.below(10) as u8));
        }
        Self(SecretString::from(s))
    }
    /// Accepts what people type: spaces and dashes between digits are ignored.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let s: String = raw.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
        if (6..=10).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(SecretString::from(s)))
        } else {
            Err(ParseError::new(
                "code",
                "the code is the 6 or more digits from the message",
            ))
        }
    }
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}
impl fmt::Debug for OtpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpCode(redacted)")
    }
}

/// The instance key: keys the code hashes and derives the decoy methods of unknown logins.
#[derive(Clone)]
pub struct InstanceKey([u8; 32]);

impl InstanceKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    fn mac(&self, domain: &str, parts: &[&[u8]]) -> [u8; 32] {
        #[allow(clippy::expect_used)]
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(domain.as_bytes());
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }
    /// Keyed hash of a short code, bound to what it verifies (flow or method id).
    pub fn code_hash(&self, context: &str, code: &OtpCode) -> TokenHash {
        TokenHash(self.mac(
            "gatehouse/code/v1",
            &[context.as_bytes(), code.expose_secret().as_bytes()],
        ))
    }
    /// Deterministic bytes for a login, for decoys that stay the same for the same login.
    pub fn derive(&self, purpose: &str, input: &str) -> [u8; 32] {
        self.mac("gatehouse/derive/v1", &[purpose.as_bytes(), input.as_bytes()])
    }
}
impl fmt::Debug for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InstanceKey(redacted)")
    }
}

/// Constant-time equality of two hashes.
pub fn hashes_equal(a: &TokenHash, b: &TokenHash) -> bool {
    a.0.ct_eq(&b.0).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SeededRng;

    #[test]
    fn secrets_are_redacted_in_debug() {
        let rng = SeededRng::new(7);
        let t = Token::generate(&rng);
        assert!(!format!("{t:?}").contains(t.expose_secret()));
        let p = Password::new("canary-Pa55word");
        assert!(!format!("{p:?}").contains("canary"));
        let c = OtpCode::generate(&rng, 6);
        assert!(!format!("{c:?}").contains(c.expose_secret()));
    }

    #[test]
    fn tokens_round_trip_and_hash() {
        let rng = SeededRng::new(1);
        let t = Token::generate(&rng);
        assert_eq!(t.expose_secret().len(), 43);
        let parsed = Token::parse(t.expose_secret()).unwrap();
        assert_eq!(parsed.hash(), t.hash());
        assert!(Token::parse("short").is_err());
    }

    #[test]
    fn codes_have_the_requested_digits() {
        let rng = SeededRng::new(3);
        for d in 6..=10u8 {
            let c = OtpCode::generate(&rng, d);
            assert_eq!(c.expose_secret().len(), usize::from(d));
            assert!(c.expose_secret().bytes().all(|b| b.is_ascii_digit()));
        }
        assert_eq!(OtpCode::parse(" 123 456 ").unwrap().expose_secret(), "123456");
        assert!(OtpCode::parse("12345").is_err());
        assert!(OtpCode::parse("12345a").is_err());
    }

    #[test]
    fn code_hash_is_bound_to_context() {
        let key = InstanceKey::new([9; 32]);
        let c = OtpCode::parse("123456").unwrap();
        assert_ne!(key.code_hash("flow-a", &c), key.code_hash("flow-b", &c));
        assert!(hashes_equal(&key.code_hash("x", &c), &key.code_hash("x", &c)));
    }
}
