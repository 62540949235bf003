//! Checks a candidate password against the hashes an LDAP directory keeps (`userPassword`,
//! `pwdHistory`), so a reset can say "used before" without writing anything.
//!
//! Only the salted and unsalted SHA schemes are understood (OpenLDAP's default is `{SSHA}`); for any
//! other scheme the answer is "unknown" and the directory's own check decides.
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// `Some(true)` when `stored` (`{SCHEME}base64`) is the hash of `candidate`, `None` when the scheme
/// is unknown or the value malformed.
pub fn matches(stored: &str, candidate: &str) -> Option<bool> {
    let rest = stored.strip_prefix('{')?;
    let (scheme, encoded) = rest.split_once('}')?;
    let scheme = scheme.to_ascii_uppercase();
    let raw = STANDARD.decode(encoded.trim()).ok()?;
    let (len, salted) = match scheme.as_str() {
        "SHA" => (20, false),
        "SSHA" => (20, true),
        "SHA256" => (32, false),
        "SSHA256" => (32, true),
        "SHA512" => (64, false),
        "SSHA512" => (64, true),
        _ => return None,
    };
    if raw.len() < len || (!salted && raw.len() != len) {
        return None;
    }
    let (digest, salt) = raw.split_at(len);
    let computed = match len {
        20 => Sha1::new()
            .chain_update(candidate.as_bytes())
            .chain_update(salt)
            .finalize()
            .to_vec(),
        32 => Sha256::new()
            .chain_update(candidate.as_bytes())
            .chain_update(salt)
            .finalize()
            .to_vec(),
        _ => Sha512::new()
            .chain_update(candidate.as_bytes())
            .chain_update(salt)
            .finalize()
            .to_vec(),
    };
    Some(bool::from(computed.as_slice().ct_eq(digest)))
}

/// The hash inside one `pwdHistory` value: `time#syntaxOID#length#value`.
pub fn history_value(entry: &str) -> Option<&str> {
    let mut parts = entry.splitn(4, '#');
    let _time = parts.next()?;
    let _syntax = parts.next()?;
    let _len = parts.next()?;
    parts.next()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ssha(pw: &str, salt: &[u8]) -> String {
        let mut raw = Sha1::new()
            .chain_update(pw.as_bytes())
            .chain_update(salt)
            .finalize()
            .to_vec();
        raw.extend_from_slice(salt);
        format!("{{SSHA}}{}", STANDARD.encode(raw))
    }

    #[test]
    fn salted_sha_round_trip() {
        let stored = ssha("Alice-Fresh-6", b"salt1234");
        assert_eq!(matches(&stored, "Alice-Fresh-6"), Some(true));
        assert_eq!(matches(&stored, "Alice-Fresh-7"), Some(false));
    }

    #[test]
    fn known_vector_from_slappasswd() {
        // slappasswd -h {SHA} -s secret
        assert_eq!(matches("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "secret"), Some(true));
        assert_eq!(
            matches("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "Secret"),
            Some(false)
        );
    }

    #[test]
    fn unknown_or_broken_is_none() {
        assert_eq!(matches("{CRYPT}$6$abc", "x"), None);
        assert_eq!(matches("{SSHA}!!!", "x"), None);
        assert_eq!(matches("plain", "plain"), None);
        assert_eq!(matches("{SHA}AAAA", "x"), None);
    }

    #[test]
    fn history_values_split() {
        assert_eq!(
            history_value("20261121211521Z#1.3.6.1.4.1.1466.115.121.1.40#38#{SSHA}abc#d"),
            Some("{SSHA}abc#d")
        );
        assert_eq!(history_value("nonsense"), None);
    }
}
