//! The proof-of-work answer a client submits (ALTCHA v1 payload: base64 JSON or raw JSON).
//!
//! Properties: no panic on any payload or clock; anything accepted is a real solution (the
//! signature is our HMAC of the challenge, the challenge is SHA-256 of salt + number, the salt
//! carries a `&`-terminated `expires` that is still in the future) — checked independently of the
//! crate; for payloads the fuzzer builds and signs itself, the outcome (accepted, expired, invalid,
//! malformed) is the one an independent model of the protocol predicts.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use gatehouse_core::pow::{verify, PowError, MAX_PAYLOAD_LEN};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

const KEY: &[u8] = b"fuzzing key, not a real secret!!";
/// 2026-01-01T00:00:00Z.
const NOW: i64 = 1_767_225_600;

fn sha_hex(salt: &str, number: u64) -> String {
    hex::encode(Sha256::digest(format!("{salt}{number}").as_bytes()))
}

fn sign(challenge: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(KEY).unwrap_or_else(|_| unreachable!());
    mac.update(challenge.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The salt's `expires`, as the protocol defines it: `<anything>?k=v&…&` with the list ending in
/// `&`, `expires` (and `maxnumber`, when there) exactly once and plain decimal digits.
fn model_expires(salt: &str) -> Option<i64> {
    let (_, query) = salt.split_once('?')?;
    let query = query.strip_suffix('&')?;
    let mut expires: Option<u64> = None;
    let mut maxnumber: Option<u64> = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=')?;
        let slot = match k {
            "expires" => &mut expires,
            "maxnumber" => &mut maxnumber,
            _ => continue,
        };
        let digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
        if slot.is_some() || !digits {
            return None;
        }
        *slot = Some(v.parse().ok()?);
    }
    i64::try_from(expires?).ok()
}

#[derive(Arbitrary, Debug)]
enum Encoding {
    Padded,
    Unpadded,
    RawJson,
    /// Padded, with white space around.
    Spaced,
}

#[derive(Arbitrary, Debug)]
enum Build {
    /// Any bytes as the payload.
    Raw(String),
    /// A JSON object with a correct signature of whatever `challenge` is given.
    Signed {
        challenge: String,
        number: u64,
        salt: String,
    },
    /// A real solution of `salt` + `number` (signature and hash right): the salt decides.
    Solved {
        number: u64,
        salt_prefix: String,
        expires_in: i32,
        maxnumber: Option<u64>,
        extra_params: String,
        terminated: bool,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    build: Build,
    encoding: Encoding,
    algorithm: Option<String>,
    extra_field: bool,
    clock_skew: i32,
}

fn encode(v: &Value, how: &Encoding) -> String {
    let s = v.to_string();
    match how {
        Encoding::Padded => STANDARD.encode(&s),
        Encoding::Unpadded => STANDARD_NO_PAD.encode(&s),
        Encoding::RawJson => s,
        Encoding::Spaced => format!(" \n{}\t ", STANDARD.encode(&s)),
    }
}

/// Independent check of an accepted payload: decode it the way the protocol says and redo the
/// cryptography.
fn assert_real_solution(payload: &str, now: OffsetDateTime, replay_key: &str, expires: OffsetDateTime) {
    let p = payload.trim();
    let bytes = if p.starts_with('{') {
        p.as_bytes().to_vec()
    } else {
        let unpadded = p.trim_end_matches('=');
        STANDARD_NO_PAD
            .decode(unpadded)
            .unwrap_or_else(|e| panic!("accepted undecodable {p:?}: {e}"))
    };
    // The five fields of the protocol; other fields are ignored unread (ALTCHA's widget adds some,
    // and an ignored `"took": 1e999` is fine), so this is not a `serde_json::Value`.
    #[derive(serde::Deserialize)]
    struct Submitted {
        algorithm: String,
        challenge: String,
        number: u64,
        salt: String,
        signature: String,
    }
    let v: Submitted = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("accepted non-JSON: {e}"));
    assert_eq!(v.algorithm, "SHA-256");
    let (challenge, salt, number, signature) =
        (v.challenge.as_str(), v.salt.as_str(), v.number, &v.signature);
    assert_eq!(
        signature.to_ascii_lowercase(),
        sign(challenge),
        "accepted a forged signature"
    );
    assert_eq!(challenge, sha_hex(salt, number), "accepted a wrong number");
    assert_eq!(replay_key, challenge);
    let exp =
        model_expires(salt).unwrap_or_else(|| panic!("accepted a salt without a valid expiry: {salt:?}"));
    assert_eq!(expires.unix_timestamp(), exp);
    assert!(now.unix_timestamp() < exp, "accepted an expired challenge");
}

// Byte 0 zero: the rest is the payload as sent (seeds are real payloads). Otherwise the rest
// builds a payload through `Input`.
fuzz_target!(|data: &[u8]| {
    let input = match data.split_first() {
        Some((0, rest)) => Input {
            build: Build::Raw(String::from_utf8_lossy(rest).into_owned()),
            encoding: Encoding::RawJson,
            algorithm: None,
            extra_field: false,
            clock_skew: 0,
        },
        Some((_, rest)) => match Input::arbitrary_take_rest(Unstructured::new(rest)) {
            Ok(i) => i,
            Err(_) => return,
        },
        None => return,
    };
    let now = OffsetDateTime::from_unix_timestamp(NOW + i64::from(input.clock_skew))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let algorithm = input.algorithm.clone().unwrap_or_else(|| "SHA-256".into());
    let with_extras = |mut v: Value| {
        if input.extra_field {
            v["took"] = json!(12);
            v["test"] = json!(true);
        }
        v
    };

    let (payload, expected): (String, Option<Result<i64, PowError>>) = match &input.build {
        Build::Raw(s) => (s.clone(), None),
        Build::Signed {
            challenge,
            number,
            salt,
        } => {
            let v = with_extras(json!({
                "algorithm": algorithm, "challenge": challenge, "number": number,
                "salt": salt, "signature": sign(challenge),
            }));
            let solved = *challenge == sha_hex(salt, *number);
            let expected = if algorithm != "SHA-256" || !solved {
                Err(PowError::Invalid)
            } else {
                model_expires(salt).ok_or(PowError::Invalid)
            };
            (encode(&v, &input.encoding), Some(expected))
        }
        Build::Solved {
            number,
            salt_prefix,
            expires_in,
            maxnumber,
            extra_params,
            terminated,
        } => {
            let expires = NOW + i64::from(*expires_in);
            let mut salt = format!("{salt_prefix}?expires={expires}&");
            if let Some(m) = maxnumber {
                salt.push_str(&format!("maxnumber={m}&"));
            }
            salt.push_str(extra_params);
            if !terminated {
                salt.pop();
            }
            let challenge = sha_hex(&salt, *number);
            let v = with_extras(json!({
                "algorithm": algorithm, "challenge": challenge, "number": number,
                "salt": salt, "signature": sign(&challenge),
            }));
            let expected = if algorithm != "SHA-256" {
                Err(PowError::Invalid)
            } else {
                model_expires(&salt).ok_or(PowError::Invalid)
            };
            (encode(&v, &input.encoding), Some(expected))
        }
    };

    let result = verify(KEY, &payload, now);
    if let Ok(solved) = &result {
        assert_real_solution(&payload, now, solved.replay_key(), solved.expires());
    }
    match (&result, expected) {
        (_, None) => {}
        (Err(PowError::Malformed), Some(_)) => {
            // Only a too-long payload (or a raw JSON one that does not start with `{`) may be
            // unreadable when the JSON was built right.
            assert!(
                payload.trim().len() > MAX_PAYLOAD_LEN,
                "well-formed payload refused as malformed"
            );
        }
        (r, Some(Err(e))) => assert_eq!(r.as_ref().map(|_| ()), Err(&e), "{payload:?}"),
        (r, Some(Ok(exp))) => {
            if payload.trim().len() > MAX_PAYLOAD_LEN {
                assert_eq!(r.as_ref().map(|_| ()), Err(&PowError::Malformed));
            } else if now.unix_timestamp() >= exp {
                assert_eq!(r.as_ref().map(|_| ()), Err(&PowError::Expired), "{payload:?}");
            } else if OffsetDateTime::from_unix_timestamp(exp).is_err() {
                // An expiry past what a date can hold is refused, not accepted forever.
                assert_eq!(r.as_ref().map(|_| ()), Err(&PowError::Invalid), "{payload:?}");
            } else {
                let solved = r
                    .as_ref()
                    .unwrap_or_else(|e| panic!("a real solution refused: {e:?} {payload:?}"));
                assert_eq!(solved.expires().unix_timestamp(), exp);
            }
        }
    }
    // The empty payload is "missing", never anything else.
    assert_eq!(verify(KEY, " ", now), Err(PowError::Missing));
});
