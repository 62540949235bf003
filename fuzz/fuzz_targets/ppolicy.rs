//! What an LDAP server sends back about passwords: the password policy response control (BER,
//! draft-behera-ldap-password-policy) and generalized times (`pwdChangedTime`, `pwdAccountLockedTime`).
//!
//! Properties: no panic; a decoded control re-encodes (canonical DER) to bytes that decode to the
//! same value; bytes after the outer SEQUENCE do not change the result; a control the fuzzer
//! encodes itself from chosen fields (short or long length forms, leading zero octets) decodes to
//! exactly those fields; an accepted generalized time prints back as the digits it was read from.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use gatehouse_directory::ldap::parse_generalized_time;
use gatehouse_directory::ldap::ppolicy::{decode, PolicyError, PolicyResponse};
use libfuzzer_sys::fuzz_target;

const ERRORS: [PolicyError; 10] = [
    PolicyError::PasswordExpired,
    PolicyError::AccountLocked,
    PolicyError::ChangeAfterReset,
    PolicyError::PasswordModNotAllowed,
    PolicyError::MustSupplyOldPassword,
    PolicyError::InsufficientPasswordQuality,
    PolicyError::PasswordTooShort,
    PolicyError::PasswordTooYoung,
    PolicyError::PasswordInHistory,
    PolicyError::PasswordTooLong,
];

fn error_code(e: PolicyError) -> u32 {
    match e {
        PolicyError::Unknown(n) => n,
        known => ERRORS
            .iter()
            .position(|k| *k == known)
            .unwrap_or_else(|| unreachable!()) as u32,
    }
}

fn error_of(code: u32) -> PolicyError {
    ERRORS
        .get(code as usize)
        .copied()
        .unwrap_or(PolicyError::Unknown(code))
}

/// A definite length, in the short form or a long form of `long` octets (at least the minimum).
fn length(len: usize, long: Option<u8>) -> Vec<u8> {
    let be = (len as u32).to_be_bytes();
    let minimal: Vec<u8> = be.iter().copied().skip_while(|b| *b == 0).collect();
    match long {
        None if len < 0x80 => vec![len as u8],
        other => {
            let n = usize::from(other.unwrap_or(0)).clamp(minimal.len().max(1), 4);
            let mut out = vec![0x80 | n as u8];
            out.extend(std::iter::repeat_n(0u8, n - minimal.len()));
            out.extend(&minimal);
            out
        }
    }
}

fn tlv(tag: u8, content: &[u8], long: Option<u8>) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(length(content.len(), long));
    out.extend(content);
    out
}

/// A non-negative INTEGER's content octets: minimal two's complement, plus `pad` zero octets (BER
/// allows them; the decoder reads at most 5 octets).
fn integer(v: u32, pad: u8) -> Vec<u8> {
    let mut bytes: Vec<u8> = v.to_be_bytes().iter().copied().skip_while(|b| *b == 0).collect();
    if bytes.first().is_none_or(|b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    let pad = usize::from(pad % 8).min(5 - bytes.len());
    let mut out = vec![0u8; pad];
    out.extend(bytes);
    out
}

fn encode(r: &PolicyResponse, long: Option<u8>, pad: u8) -> Vec<u8> {
    let mut body = Vec::new();
    if let Some(s) = r.seconds_before_expiration {
        body.extend(tlv(0xa0, &tlv(0x80, &integer(s, pad), long), long));
    }
    if let Some(g) = r.grace_logins_left {
        body.extend(tlv(0xa0, &tlv(0x81, &integer(g, pad), long), long));
    }
    if let Some(e) = r.error {
        body.extend(tlv(0x81, &integer(error_code(e), pad), long));
    }
    tlv(0x30, &body, long)
}

#[derive(Arbitrary, Debug)]
struct Chosen {
    seconds: Option<u32>,
    grace: Option<u32>,
    error: Option<u32>,
    long: Option<u8>,
    pad: u8,
    trailing: Vec<u8>,
}

fn control(data: &[u8]) {
    let decoded = decode(data);
    if let Some(r) = decoded {
        let again = encode(&r, None, 0);
        assert_eq!(decode(&again), Some(r), "re-encoded {again:02x?}");
        // Only the first element counts.
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"\x30\x03\x81\x01\x05trailing");
        assert_eq!(decode(&longer), Some(r));
    }

    // The same bytes as fields to encode: the decoder must read back exactly what was written.
    if let Ok(c) = Chosen::arbitrary(&mut Unstructured::new(data)) {
        let r = PolicyResponse {
            seconds_before_expiration: c.seconds,
            grace_logins_left: c.grace,
            error: c.error.map(error_of),
        };
        let mut bytes = encode(&r, c.long, c.pad);
        bytes.extend(&c.trailing);
        assert_eq!(decode(&bytes), Some(r), "{bytes:02x?}");
    }
}

fn generalized_time(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Some(t) = parse_generalized_time(&s) {
        let digits: String = s.chars().take_while(char::is_ascii_digit).take(14).collect();
        let printed = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        assert_eq!(printed, digits, "{s:?} read as {t}");
        assert_eq!(t.offset(), time::UtcOffset::UTC);
    }
}

fuzz_target!(|data: &[u8]| {
    control(data);
    generalized_time(data);
});
