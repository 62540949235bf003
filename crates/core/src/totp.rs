//! Time-based one-time passwords (RFC 6238): HMAC-SHA-1, 6 digits, 30-second steps, one step of
//! drift either way, each step usable once.
use crate::ports::SecureRng;
use crate::types::ParseError;
use hmac::{Hmac, Mac};
use qrcode::render::svg;
use qrcode::QrCode;
use sha1::Sha1;
use std::fmt;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use zeroize::Zeroize;

/// Seconds per step.
pub const PERIOD: u64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;

/// The shared secret of an authenticator app: 160 random bits (the length RFC 4226 recommends).
/// Redacted `Debug`, no `Display`, zeroised on drop.
pub struct TotpSecret([u8; TotpSecret::BYTES]);

impl TotpSecret {
    pub const BYTES: usize = 20;

    pub fn generate(rng: &dyn SecureRng) -> Self {
        let mut bytes = [0u8; Self::BYTES];
        rng.fill(&mut bytes);
        let secret = Self(bytes);
        bytes.zeroize();
        secret
    }

    /// The stored form back into a secret.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ParseError> {
        let arr: [u8; Self::BYTES] = bytes
            .try_into()
            .map_err(|_| ParseError::new("totp", "an authenticator secret has 20 bytes"))?;
        Ok(Self(arr))
    }

    /// The raw bytes, for storing (encrypted or not, the store decides).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// RFC 4648 base32 without padding: what a person types into an app that cannot scan.
    pub fn to_base32(&self) -> String {
        data_encoding::BASE32_NOPAD.encode(&self.0)
    }
}
impl Drop for TotpSecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}
impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(redacted)")
    }
}

/// The code of step `unix_step` (Unix time / 30): HOTP of the step, 6 digits, zero-padded.
pub fn code_at(secret: &TotpSecret, unix_step: u64) -> String {
    #[allow(clippy::expect_used)]
    let mut mac = Hmac::<Sha1>::new_from_slice(&secret.0).expect("HMAC accepts any key length");
    mac.update(&unix_step.to_be_bytes());
    let h = mac.finalize().into_bytes();
    // Dynamic truncation (RFC 4226 §5.3): the low nibble of the last byte picks 4 bytes.
    let offset = usize::from(h[h.len() - 1] & 0x0f);
    let bin = u32::from_be_bytes([h[offset], h[offset + 1], h[offset + 2], h[offset + 3]]) & 0x7fff_ffff;
    format!("{:06}", bin % 1_000_000)
}

/// The step at `now`, or `None` before 1970.
pub fn step_at(now: OffsetDateTime) -> Option<u64> {
    u64::try_from(now.unix_timestamp()).ok().map(|t| t / PERIOD)
}

/// Checks a typed code against the steps before, at and after `now`. Returns the step it matched,
/// to be stored as the new `last_used_step`; a code of that step or of an earlier one is refused,
/// so a code works once. Spaces in `typed` are ignored; codes are compared in constant time.
pub fn verify(
    secret: &TotpSecret,
    typed: &str,
    now: OffsetDateTime,
    last_used_step: Option<u64>,
) -> Option<u64> {
    let typed: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
    if typed.len() != DIGITS || !typed.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let step = step_at(now)?;
    let mut matched = None;
    // Every candidate is computed and compared, whatever matched before.
    for candidate in [step.checked_sub(1), Some(step), step.checked_add(1)]
        .into_iter()
        .flatten()
    {
        let same = bool::from(code_at(secret, candidate).as_bytes().ct_eq(typed.as_bytes()));
        let fresh = last_used_step.is_none_or(|last| candidate > last);
        if same && fresh && matched.is_none() {
            matched = Some(candidate);
        }
    }
    matched
}

/// Percent-encodes everything but RFC 3986's unreserved characters (so a space is `%20`, not `+`).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The provisioning URI of the Key Uri Format:
/// `otpauth://totp/Issuer:account?secret=…&issuer=Issuer&algorithm=SHA1&digits=6&period=30`.
/// The format forbids a colon inside the issuer or the account name, so colons there become spaces.
pub fn otpauth_uri(secret: &TotpSecret, issuer: &str, account: &str) -> String {
    let clean = |s: &str| percent_encode(s.trim().replace(':', " ").trim());
    let issuer = clean(issuer);
    let account = clean(account);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={PERIOD}",
        secret.to_base32()
    )
}

/// The URI as a QR code in a self-contained `<svg>` element (no XML declaration, so it can go
/// inline in a page): dark modules on a light background with the quiet zone, at least 200 px.
/// `None` when the text is too long for a QR code.
pub fn qr_svg(uri: &str) -> Option<String> {
    let code = QrCode::new(uri.as_bytes()).ok()?;
    let image = code
        .render::<svg::Color<'_>>()
        .min_dimensions(200, 200)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .quiet_zone(true)
        .build();
    let start = image.find("<svg")?;
    Some(image[start..].replacen("<svg ", "<svg role=\"img\" aria-label=\"QR code\" ", 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SeededRng;
    use proptest::prelude::*;

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(b"12345678901234567890").unwrap()
    }

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    #[test]
    fn rfc_6238_sha1_vectors() {
        // Appendix B gives 8 digits; a 6-digit code is the same number modulo 10^6.
        let s = rfc_secret();
        for (t, eight) in [
            (59_u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(code_at(&s, t / PERIOD), eight[2..], "T = {t}");
        }
    }

    #[test]
    fn codes_are_six_zero_padded_digits() {
        // Step 37037036 (T = 1111111109) gives 081804: the leading zero stays.
        let code = code_at(&rfc_secret(), 1_111_111_109 / PERIOD);
        assert_eq!(code, "081804");
        for step in 0..200 {
            let c = code_at(&rfc_secret(), step);
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn one_step_of_drift_either_way_is_accepted() {
        let s = rfc_secret();
        let now = at(1_234_567_890);
        let step = step_at(now).unwrap();
        assert_eq!(verify(&s, &code_at(&s, step), now, None), Some(step));
        assert_eq!(verify(&s, &code_at(&s, step - 1), now, None), Some(step - 1));
        assert_eq!(verify(&s, &code_at(&s, step + 1), now, None), Some(step + 1));
        assert_eq!(verify(&s, &code_at(&s, step - 2), now, None), None);
        assert_eq!(verify(&s, &code_at(&s, step + 2), now, None), None);
        // T = 1234567890 starts its step: one second earlier the code is the next step's, still
        // accepted; it is the previous step's until T + 59 and too old from T + 60.
        assert_eq!(verify(&s, "005924", at(1_234_567_889), None), Some(step));
        assert_eq!(verify(&s, "005924", at(1_234_567_890 + 59), None), Some(step));
        assert_eq!(verify(&s, "005924", at(1_234_567_890 + 60), None), None);
        assert_eq!(verify(&s, "005924", at(1_234_567_890 - 31), None), None);
    }

    #[test]
    fn a_code_works_once_and_older_codes_never_after() {
        let s = rfc_secret();
        let now = at(1_234_567_890);
        let step = step_at(now).unwrap();
        let code = code_at(&s, step);
        let used = verify(&s, &code, now, None).unwrap();
        assert_eq!(verify(&s, &code, now, Some(used)), None);
        // The previous step's code is refused once a later one was used…
        assert_eq!(verify(&s, &code_at(&s, step - 1), now, Some(used)), None);
        // …and the next step's code is still good.
        assert_eq!(
            verify(&s, &code_at(&s, step + 1), now, Some(used)),
            Some(step + 1)
        );
        assert_eq!(verify(&s, &code_at(&s, step + 1), now, Some(step + 1)), None);
    }

    #[test]
    fn typed_codes_are_read_strictly() {
        let s = rfc_secret();
        let now = at(1_234_567_890);
        assert_eq!(verify(&s, " 005 924 ", now, None), step_at(now));
        for bad in [
            "",
            "5924",
            "0059245",
            "00592a",
            "００５９２４",
            "-05924",
            "005924\u{0}",
        ] {
            assert_eq!(verify(&s, bad, now, None), None, "{bad:?}");
        }
        assert_eq!(verify(&s, "005924", at(-1), None), None);
        assert_eq!(step_at(at(0)), Some(0));
        // At step 0 there is no step before.
        assert_eq!(verify(&s, &code_at(&s, 0), at(0), None), Some(0));
        assert_eq!(verify(&s, &code_at(&s, 1), at(0), None), Some(1));
    }

    #[test]
    fn secrets_are_random_redacted_and_round_trip() {
        let rng = SeededRng::new(7);
        let a = TotpSecret::generate(&rng);
        let b = TotpSecret::generate(&rng);
        assert_ne!(a.as_bytes(), b.as_bytes());
        assert_eq!(a.as_bytes().len(), 20);
        assert_eq!(
            TotpSecret::from_bytes(a.as_bytes()).unwrap().as_bytes(),
            a.as_bytes()
        );
        assert!(TotpSecret::from_bytes(&[0; 19]).is_err());
        assert!(TotpSecret::from_bytes(&[0; 21]).is_err());
        assert_eq!(format!("{a:?}"), "TotpSecret(redacted)");
        let b32 = a.to_base32();
        assert_eq!(b32.len(), 32);
        assert!(b32
            .bytes()
            .all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c)));
        assert_eq!(rfc_secret().to_base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    }

    #[test]
    fn the_uri_follows_the_key_uri_format() {
        let s = rfc_secret();
        let uri = otpauth_uri(&s, "Example Corp", "alice@example.org");
        assert_eq!(
            uri,
            "otpauth://totp/Example%20Corp:alice%40example.org?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Example%20Corp&algorithm=SHA1&digits=6&period=30"
        );
        let weird = otpauth_uri(&s, "Ça & co: R+D", "bob/é?#=");
        let parsed = url::Url::parse(&weird).unwrap();
        assert_eq!(parsed.scheme(), "otpauth");
        assert_eq!(parsed.host_str(), Some("totp"));
        assert_eq!(
            parsed.path(),
            "/%C3%87a%20%26%20co%20%20R%2BD:bob%2F%C3%A9%3F%23%3D"
        );
        let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        assert_eq!(pairs[0], ("secret".into(), s.to_base32()));
        assert_eq!(pairs[1], ("issuer".into(), "Ça & co  R+D".into()));
        assert_eq!(pairs.len(), 5);
    }

    #[test]
    fn the_qr_code_is_an_inline_svg() {
        let uri = otpauth_uri(&rfc_secret(), "Gatehouse", "alice");
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.starts_with("<svg "), "{}", &svg[..40]);
        assert!(svg.ends_with("</svg>"));
        assert!(svg.contains("<rect") && svg.contains("<path"));
        assert!(svg.contains("fill=\"#000000\"") && svg.contains("fill=\"#ffffff\""));
        let width: u32 = svg
            .split("width=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(width >= 200, "{width}");
        assert!(qr_svg(&"x".repeat(5000)).is_none());
    }

    proptest! {
        #[test]
        fn verify_and_uri_never_panic(
            typed in "\\PC{0,12}",
            t in any::<i32>(),
            last in proptest::option::of(any::<u64>()),
            issuer in "\\PC{0,20}",
            account in "\\PC{0,20}",
        ) {
            let s = rfc_secret();
            let _ = verify(&s, &typed, at(i64::from(t)), last);
            let uri = otpauth_uri(&s, &issuer, &account);
            prop_assert!(uri.starts_with("otpauth://totp/"));
            prop_assert!(uri.is_ascii());
            prop_assert!(url::Url::parse(&uri).is_ok());
        }

        #[test]
        fn the_code_of_now_verifies(t in 0i64..4_000_000_000) {
            let s = rfc_secret();
            let step = step_at(at(t)).unwrap();
            prop_assert_eq!(verify(&s, &code_at(&s, step), at(t), None), Some(step));
            prop_assert_eq!(verify(&s, &code_at(&s, step), at(t), Some(step)), None);
        }
    }
}
