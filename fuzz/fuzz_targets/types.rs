//! The domain value parsers every request goes through: login, email, method id, flow and method
//! kinds, one-time codes and bearer tokens.
//!
//! Properties: no panic; a parsed value is in its documented normal form and parses back to itself
//! (also through serde, which is how JSON bodies reach them); refusals carry a field and a message;
//! the email hint is short and shaped `x•••@y•••.tld`.
#![no_main]

use gatehouse_core::secret::{OtpCode, Token};
use gatehouse_core::types::{Email, FlowKind, Login, MethodId, MethodKind, ParseError};
use libfuzzer_sys::fuzz_target;

fn refusal_is_meaningful(e: &ParseError, field: &str) {
    assert_eq!(e.field, field);
    assert!(!e.message.is_empty());
}

/// serde (`try_from = "String"`) must agree with `parse` on every string.
fn serde_agrees<T>(raw: &str, parsed: &Result<T, ParseError>)
where
    T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::Value::String(raw.to_owned()).to_string();
    let via_serde = serde_json::from_str::<T>(&json);
    match (parsed, via_serde) {
        (Ok(a), Ok(b)) => assert_eq!(a, &b, "serde and parse disagree on {raw:?}"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("serde and parse disagree on {raw:?}: {a:?} vs {b:?}"),
    }
}

fn login(s: &str) {
    let parsed = Login::parse(s);
    serde_agrees(s, &parsed);
    match parsed {
        Ok(l) => {
            let v = l.as_str();
            assert!(!v.is_empty());
            assert_eq!(v, v.trim(), "a login is trimmed");
            assert!(!v.chars().any(char::is_control));
            assert_eq!(v, v.to_lowercase(), "a login is case-folded");
            // Documented: 1–256 characters. The stored form must also read back as itself.
            assert!(v.chars().count() <= 256, "login of {} chars", v.chars().count());
            assert_eq!(Login::parse(v).as_ref(), Ok(&l), "a login re-parses to itself");
            assert_eq!(l.to_string(), v);
            assert_eq!(String::from(l.clone()), v);
        }
        Err(e) => refusal_is_meaningful(&e, "login"),
    }
}

fn email(s: &str) {
    let parsed = Email::parse(s);
    serde_agrees(s, &parsed);
    match parsed {
        Ok(e) => {
            let v = e.as_str();
            assert!(v.len() <= 254, "email of {} bytes", v.len());
            assert_eq!(v.matches('@').count(), 1);
            let (local, domain) = v.split_once('@').unwrap_or_default();
            assert!(!local.is_empty() && local.len() <= 64);
            assert_eq!(domain, domain.to_lowercase(), "the domain is lower-cased");
            assert!(!v.chars().any(|c| c.is_whitespace() || c.is_control()));
            assert_eq!(Email::parse(v).as_ref(), Ok(&e), "an email re-parses to itself");
            assert_eq!(e.to_string(), v);

            let masked = e.masked();
            let tld = domain.rsplit('.').next().unwrap_or("");
            let first = |t: &str| t.chars().next().map(String::from).unwrap_or_default();
            assert_eq!(
                masked,
                format!("{}•••@{}•••.{tld}", first(local), first(domain)),
                "hint of {v:?}"
            );
            assert!(masked.chars().count() <= 2 + 3 + 1 + 3 + 1 + 63);
            assert_eq!(format!("{e:?}"), format!("Email({masked})"));
        }
        Err(e) => refusal_is_meaningful(&e, "email"),
    }
}

fn method_id(s: &str) {
    let parsed = MethodId::parse(s);
    serde_agrees(s, &parsed);
    let t = s.trim();
    let expected = t.len() == MethodId::LEN && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    assert_eq!(parsed.is_ok(), expected, "{s:?}");
    match parsed {
        Ok(id) => {
            assert_eq!(id.as_str(), t);
            assert_eq!(MethodId::parse(id.as_str()).as_ref(), Ok(&id));
        }
        Err(e) => refusal_is_meaningful(&e, "method"),
    }
}

fn kinds(s: &str) {
    match FlowKind::parse(s) {
        Ok(k) => {
            assert_eq!(k.as_str(), s.trim());
            assert_eq!(FlowKind::parse(k.as_str()), Ok(k));
        }
        Err(e) => {
            assert!(!["reset", "unlock"].contains(&s.trim()));
            refusal_is_meaningful(&e, "kind");
        }
    }
    match MethodKind::parse(s) {
        Ok(k) => {
            assert_eq!(k.as_str(), s.trim());
            assert_eq!(MethodKind::parse(k.as_str()), Ok(k));
            assert!(MethodKind::ALL.contains(&k));
            assert!(!k.is_phone() || k.sends_code());
        }
        Err(e) => {
            assert!(!MethodKind::ALL.iter().any(|k| k.as_str() == s.trim()));
            refusal_is_meaningful(&e, "type");
        }
    }
}

fn otp(s: &str) {
    let typed: String = s.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
    match OtpCode::parse(s) {
        Ok(c) => {
            let v = c.expose_secret();
            assert!((6..=10).contains(&v.len()));
            assert!(v.bytes().all(|b| b.is_ascii_digit()));
            assert_eq!(v, typed, "a code is the digits typed, separators dropped");
            assert_eq!(OtpCode::parse(v).map(|c2| c2.expose_secret() == v), Ok(true));
            assert!(!format!("{c:?}").contains(v), "a code never shows in Debug");
        }
        Err(e) => {
            assert!(!((6..=10).contains(&typed.len()) && typed.bytes().all(|b| b.is_ascii_digit())));
            refusal_is_meaningful(&e, "code");
        }
    }
}

fn token(s: &str) {
    match Token::parse(s) {
        Ok(t) => {
            let v = t.expose_secret();
            assert_eq!(v, s.trim());
            assert_eq!(v.len(), 43);
            assert!(v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            let again = Token::parse(v).map(|t2| t2.hash());
            assert_eq!(again, Ok(t.hash()), "a token re-parses to the same hash");
            assert!(!format!("{t:?}").contains(v), "a token never shows in Debug");
        }
        Err(e) => refusal_is_meaningful(&e, "token"),
    }
}

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    login(&s);
    email(&s);
    method_id(&s);
    kinds(&s);
    otp(&s);
    token(&s);
});
