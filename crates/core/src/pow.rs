//! Proof-of-work CAPTCHA, compatible with the ALTCHA v1 protocol (<https://altcha.org>), so the
//! ALTCHA widget and client libraries can solve it as well as Gatehouse's own `pow.js`.
//!
//! The server picks a secret `number` in `0..=maxnumber` and a random salt, and hands out
//! `challenge = hex(SHA-256(salt + number))` signed with `signature = hex(HMAC-SHA256(key, challenge))`.
//! The client tries `0, 1, 2, …` until `SHA-256(salt + n)` equals the challenge and sends back the
//! base64 of `{"algorithm","challenge","number","salt","signature"}`. Nothing is stored between the
//! two requests: the signature proves the challenge is ours, the hash proves the work was done, and
//! the salt carries its own expiry (`<random hex>?expires=<unix seconds>&maxnumber=<n>&`).
//!
//! The salt's parameter list always ends with `&`, and [`verify`] refuses salts that do not: without
//! that terminator the digits of `expires` and of the number could be shifted across the boundary
//! (`…expires=100987` + `5` read as `…expires=1009875` + nothing) to stretch a challenge's lifetime
//! (ALTCHA advisory CVE-2025-68113).
//!
//! **Replay is the caller's job.** A solved payload stays valid until its expiry; the caller must
//! store [`Solved::replay_key`] until [`Solved::expires`] and refuse it a second time.
use crate::ports::SecureRng;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

/// The only algorithm offered and accepted.
pub const ALGORITHM: &str = "SHA-256";
/// Submitted payloads longer than this are refused unread.
pub const MAX_PAYLOAD_LEN: usize = 2048;
/// The largest `maxnumber` handed out: JavaScript's `Number.MAX_SAFE_INTEGER`, so browsers count exactly.
pub const MAX_MAXNUMBER: u64 = (1 << 53) - 1;
/// Random bytes in a salt (hex-encoded, as ALTCHA's default).
const SALT_BYTES: usize = 12;

/// A challenge as served to the client (the JSON field names are ALTCHA's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub algorithm: String,
    pub challenge: String,
    pub maxnumber: u64,
    pub salt: String,
    pub signature: String,
}

/// What a client submits: the challenge plus the number it found. Extra fields the ALTCHA widget
/// adds (`took`, `test`) are ignored.
#[derive(Serialize, Deserialize)]
struct Payload {
    algorithm: String,
    challenge: String,
    number: u64,
    salt: String,
    signature: String,
}

/// A verified solution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Solved {
    replay_key: String,
    expires: OffsetDateTime,
    maxnumber: Option<u64>,
}

impl Solved {
    /// Identifies the solved challenge (its lowercase hex hash, canonical: no other spelling
    /// verifies). Store it until [`Solved::expires`] and refuse it if it comes again.
    pub fn replay_key(&self) -> &str {
        &self.replay_key
    }
    /// When the challenge stops being accepted; the replay key need not be kept past this.
    pub fn expires(&self) -> OffsetDateTime {
        self.expires
    }
    /// The difficulty the challenge was issued at, so a caller can refuse a solution that is easier
    /// than what it would ask for now. `None` for salts without the parameter.
    pub fn maxnumber(&self) -> Option<u64> {
        self.maxnumber
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PowError {
    #[error("Please complete the browser check before continuing (it needs JavaScript).")]
    Missing,
    #[error("The browser check answer could not be read. Please try again.")]
    Malformed,
    #[error("The browser check has expired. Please try again.")]
    Expired,
    #[error("The browser check failed. Please try again.")]
    Invalid,
}

/// Makes a challenge whose secret number is uniform in `0..=maxnumber` (capped at
/// [`MAX_MAXNUMBER`]), valid until `now + ttl`.
pub fn create(
    key: &[u8],
    rng: &dyn SecureRng,
    now: OffsetDateTime,
    maxnumber: u64,
    ttl: time::Duration,
) -> Challenge {
    let maxnumber = maxnumber.min(MAX_MAXNUMBER);
    let mut random = [0u8; SALT_BYTES];
    rng.fill(&mut random);
    // An overflowing expiry gives an already expired challenge rather than a panic.
    let expires = now.checked_add(ttl).unwrap_or(now).unix_timestamp();
    let salt = format!("{}?expires={expires}&maxnumber={maxnumber}&", hex::encode(random));
    signed(key, salt, uniform_inclusive(rng, maxnumber), maxnumber)
}

/// Checks a submitted payload: the widget's base64 JSON, or the raw JSON object (API clients).
///
/// On success the caller must still refuse a [`Solved::replay_key`] it has seen before.
pub fn verify(key: &[u8], payload: &str, now: OffsetDateTime) -> Result<Solved, PowError> {
    let payload = payload.trim();
    if payload.is_empty() {
        return Err(PowError::Missing);
    }
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(PowError::Malformed);
    }
    let json = if payload.starts_with('{') {
        payload.as_bytes().to_vec()
    } else {
        lenient_base64()
            .decode(payload)
            .map_err(|_| PowError::Malformed)?
    };
    let p: Payload = serde_json::from_slice(&json).map_err(|_| PowError::Malformed)?;
    if p.algorithm != ALGORITHM {
        return Err(PowError::Invalid);
    }
    // The signature proves the challenge is ours; the hash proves the number solves it and binds
    // the salt (with its parameters) to it.
    let signature = hex::decode(&p.signature).map_err(|_| PowError::Invalid)?;
    let mut mac = hmac_for(key);
    mac.update(p.challenge.as_bytes());
    mac.verify_slice(&signature).map_err(|_| PowError::Invalid)?;
    let expected = hash_hex(&p.salt, p.number);
    if !bool::from(expected.as_bytes().ct_eq(p.challenge.as_bytes())) {
        return Err(PowError::Invalid);
    }
    let params = SaltParams::parse(&p.salt).ok_or(PowError::Invalid)?;
    if now.unix_timestamp() >= params.expires {
        return Err(PowError::Expired);
    }
    Ok(Solved {
        replay_key: p.challenge,
        expires: OffsetDateTime::from_unix_timestamp(params.expires).map_err(|_| PowError::Invalid)?,
        maxnumber: params.maxnumber,
    })
}

/// Finds the number by brute force (at most `maxnumber + 1` hashes) and returns the payload to
/// submit (base64 JSON, as the widget sends it). `None` if the challenge cannot be solved.
pub fn solve(challenge: &Challenge) -> Option<String> {
    if challenge.algorithm != ALGORITHM {
        return None;
    }
    let target = hex::decode(&challenge.challenge).ok()?;
    let mut prefix = Sha256::new();
    prefix.update(challenge.salt.as_bytes());
    let mut digits = [0u8; 20];
    let number = (0..=challenge.maxnumber).find(|&n| {
        let mut h = prefix.clone();
        h.update(decimal(n, &mut digits));
        h.finalize().as_slice() == target.as_slice()
    })?;
    let json = serde_json::to_vec(&Payload {
        algorithm: challenge.algorithm.clone(),
        challenge: challenge.challenge.clone(),
        number,
        salt: challenge.salt.clone(),
        signature: challenge.signature.clone(),
    })
    .ok()?;
    Some(STANDARD.encode(json))
}

/// How hard a challenge to hand out.
///
/// A client needs on average about `maxnumber / 2` SHA-256 hashes (at most `maxnumber + 1`). With
/// `crypto.subtle` one browser thread manages very roughly 40 000 (low-end phone) to 300 000 (recent
/// laptop) hashes a second (ALTCHA's published benchmarks; `pow.js` uses up to four workers). So the
/// base of 50 000 (ALTCHA's default complexity) costs about 0.1 s to 0.6 s, while the cap of
/// 5 000 000 costs seconds on a laptop and up to a minute on a slow phone: a nuisance for a person,
/// real cost for a script hammering one IP address or account. Natively (Rust, one core) it is about
/// 3 million hashes a second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Difficulty {
    /// `maxnumber` without pressure.
    pub base: u64,
    /// `maxnumber` at most, however many attempts.
    pub max: u64,
}

impl Default for Difficulty {
    fn default() -> Self {
        Self {
            base: 50_000,
            max: 5_000_000,
        }
    }
}

impl Difficulty {
    /// Recent attempts (from one IP address or for one account) allowed at the base difficulty.
    pub const THRESHOLD: u32 = 3;
    /// Each attempt above the threshold multiplies `maxnumber` by this.
    pub const FACTOR: u64 = 4;

    /// `base` up to [`Self::THRESHOLD`] recent attempts, then ×[`Self::FACTOR`] per attempt, never
    /// above `max` (with the defaults: 50 000, 200 000, 800 000, 3 200 000, then 5 000 000).
    pub fn maxnumber_for(&self, recent_attempts: u32) -> u64 {
        let steps = recent_attempts.saturating_sub(Self::THRESHOLD);
        let factor = Self::FACTOR.checked_pow(steps).unwrap_or(u64::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// The parameters Gatehouse puts in a salt's query string.
struct SaltParams {
    expires: i64,
    maxnumber: Option<u64>,
}

impl SaltParams {
    /// `<random>?k=v&k=v&`: the list must end with `&` (see the module docs), `expires` must be there
    /// exactly once; numbers are plain digits.
    fn parse(salt: &str) -> Option<Self> {
        let (_, query) = salt.split_once('?')?;
        let query = query.strip_suffix('&')?;
        let (mut expires, mut maxnumber) = (None, None);
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=')?;
            let slot = match k {
                "expires" => &mut expires,
                "maxnumber" => &mut maxnumber,
                _ => continue,
            };
            if slot.is_some() || v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *slot = Some(v.parse::<u64>().ok()?);
        }
        Some(Self {
            expires: i64::try_from(expires?).ok()?,
            maxnumber,
        })
    }
}

fn signed(key: &[u8], salt: String, number: u64, maxnumber: u64) -> Challenge {
    let challenge = hash_hex(&salt, number);
    let mut mac = hmac_for(key);
    mac.update(challenge.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    Challenge {
        algorithm: ALGORITHM.to_owned(),
        challenge,
        maxnumber,
        salt,
        signature,
    }
}

fn hmac_for(key: &[u8]) -> Hmac<Sha256> {
    #[allow(clippy::expect_used)]
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length")
}

fn hash_hex(salt: &str, number: u64) -> String {
    let mut digits = [0u8; 20];
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(decimal(number, &mut digits));
    hex::encode(h.finalize())
}

/// `n` in decimal, without allocating (the solver formats millions of them).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Uniform in `0..=max` (rejection sampling, no modulo bias).
fn uniform_inclusive(rng: &dyn SecureRng, max: u64) -> u64 {
    let draw = || {
        let mut b = [0u8; 8];
        rng.fill(&mut b);
        u64::from_le_bytes(b)
    };
    let Some(n) = max.checked_add(1) else {
        return draw();
    };
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let v = draw();
        if v < zone {
            return v % n;
        }
    }
}

/// Standard alphabet, padding optional (`btoa` pads; some clients don't).
fn lenient_base64() -> GeneralPurpose {
    GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SeededRng;
    use proptest::prelude::*;
    use time::macros::datetime;
    use time::Duration;

    const KEY: &[u8] = b"test key, 32 bytes long, really";
    const NOW: OffsetDateTime = datetime!(2025-03-01 12:00 UTC);
    const TTL: Duration = Duration::minutes(5);

    fn challenge(seed: u64, maxnumber: u64) -> Challenge {
        create(KEY, &SeededRng::new(seed), NOW, maxnumber, TTL)
    }

    fn decode(payload: &str) -> serde_json::Value {
        serde_json::from_slice(&STANDARD.decode(payload).unwrap()).unwrap()
    }

    fn encode(v: &serde_json::Value) -> String {
        STANDARD.encode(v.to_string())
    }

    /// A solved payload with one field replaced.
    fn tampered(field: &str, value: serde_json::Value) -> String {
        let mut v = decode(&solve(&challenge(1, 1000)).unwrap());
        v[field] = value;
        encode(&v)
    }

    #[test]
    fn create_solve_verify() {
        for seed in 0..5 {
            let c = challenge(seed, 2000);
            assert_eq!(c.algorithm, "SHA-256");
            assert_eq!(c.challenge.len(), 64);
            assert_eq!(c.signature.len(), 64);
            assert!(c.salt.ends_with(&format!(
                "?expires={}&maxnumber=2000&",
                (NOW + TTL).unix_timestamp()
            )));
            let payload = solve(&c).unwrap();
            let solved = verify(KEY, &payload, NOW).unwrap();
            assert_eq!(solved.replay_key(), c.challenge);
            assert_eq!(solved.expires(), NOW + TTL);
            assert_eq!(solved.maxnumber(), Some(2000));
            assert!(decode(&payload)["number"].as_u64().unwrap() <= 2000);
        }
    }

    #[test]
    fn challenge_json_has_altchas_field_names() {
        let v = serde_json::to_value(challenge(1, 10)).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["algorithm", "challenge", "maxnumber", "salt", "signature"]);
    }

    #[test]
    fn raw_json_and_widget_extras_are_accepted() {
        let mut v = decode(&solve(&challenge(2, 500)).unwrap());
        v["took"] = 12.into();
        v["test"] = true.into();
        assert!(verify(KEY, &v.to_string(), NOW).is_ok());
        let unpadded = encode(&v).trim_end_matches('=').to_owned();
        assert!(verify(KEY, &format!("  {unpadded}\n"), NOW).is_ok());
    }

    #[test]
    fn numbers_are_uniform_over_the_whole_range() {
        let mut seen = [0u32; 4];
        for seed in 0..400 {
            let payload = solve(&challenge(seed, 3)).unwrap();
            seen[decode(&payload)["number"].as_u64().unwrap() as usize] += 1;
        }
        assert!(seen.iter().all(|&k| (60..=140).contains(&k)), "{seen:?}");
    }

    #[test]
    fn maxnumber_is_capped_for_javascript() {
        assert_eq!(challenge(1, u64::MAX).maxnumber, MAX_MAXNUMBER);
        let rng = SeededRng::new(3);
        assert!((0..100).all(|_| uniform_inclusive(&rng, 5) <= 5));
        let _ = uniform_inclusive(&rng, u64::MAX);
    }

    #[test]
    fn tampering_is_refused() {
        let good = decode(&solve(&challenge(1, 1000)).unwrap());
        let n = good["number"].as_u64().unwrap();
        let salt = good["salt"].as_str().unwrap().to_owned();
        let later = salt.replace("?expires=", "?expires=9");
        for (field, value) in [
            ("number", serde_json::Value::from(n + 1)),
            ("salt", later.into()),
            ("salt", format!("{salt}x").into()),
            ("signature", "00".repeat(32).into()),
            ("signature", "not hex".into()),
            ("challenge", "00".repeat(32).into()),
            (
                "challenge",
                good["challenge"].as_str().unwrap().to_uppercase().into(),
            ),
            ("algorithm", "SHA-1".into()),
            ("algorithm", "sha-256".into()),
        ] {
            assert_eq!(
                verify(KEY, &tampered(field, value.clone()), NOW),
                Err(PowError::Invalid),
                "{field}={value}"
            );
        }
        let payload = solve(&challenge(1, 1000)).unwrap();
        assert_eq!(verify(b"another key", &payload, NOW), Err(PowError::Invalid));
    }

    #[test]
    fn expiry() {
        let payload = solve(&challenge(4, 100)).unwrap();
        assert!(verify(KEY, &payload, NOW + TTL - Duration::seconds(1)).is_ok());
        assert_eq!(verify(KEY, &payload, NOW + TTL), Err(PowError::Expired));
        let stale = create(KEY, &SeededRng::new(1), NOW, 100, Duration::seconds(-1));
        assert_eq!(verify(KEY, &solve(&stale).unwrap(), NOW), Err(PowError::Expired));
        let huge = create(KEY, &SeededRng::new(1), NOW, 100, Duration::MAX);
        assert_eq!(verify(KEY, &solve(&huge).unwrap(), NOW), Err(PowError::Expired));
    }

    #[test]
    fn salts_must_carry_a_terminated_expiry() {
        let exp = (NOW + TTL).unix_timestamp();
        for salt in [
            "abc".to_owned(),
            format!("abc?expires={exp}"),
            format!("abc?expires={exp}&maxnumber=10"),
            "abc?maxnumber=10&".to_owned(),
            format!("abc?expires={exp}&expires={exp}&"),
            format!("abc?expires=+{exp}&"),
            "abc?expires=99999999999999999999999&".to_owned(),
            "abc?expires&".to_owned(),
        ] {
            let c = signed(KEY, salt.clone(), 7, 10);
            assert_eq!(
                verify(KEY, &solve(&c).unwrap(), NOW),
                Err(PowError::Invalid),
                "{salt}"
            );
        }
        let c = signed(KEY, format!("abc?x=1&expires={exp}&"), 7, 10);
        let solved = verify(KEY, &solve(&c).unwrap(), NOW).unwrap();
        assert_eq!(solved.maxnumber(), None);
    }

    #[test]
    fn digits_cannot_be_moved_between_expiry_and_number() {
        // The challenge hashes `salt + number`; moving the number's leading digit onto the salt keeps
        // the hash and signature but would read as a later expiry. The missing `&` gives it away.
        let c = challenge(9, 100_000);
        let v = decode(&solve(&c).unwrap());
        let digits = v["number"].as_u64().unwrap().to_string();
        assert!(digits.len() > 1, "pick a seed with a longer number");
        let mut spliced = v.clone();
        spliced["salt"] = format!("{}{}", c.salt, &digits[..1]).into();
        spliced["number"] = digits[1..].parse::<u64>().unwrap().into();
        assert!(verify(KEY, &encode(&v), NOW).is_ok());
        assert_eq!(verify(KEY, &encode(&spliced), NOW), Err(PowError::Invalid));
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(verify(KEY, "", NOW), Err(PowError::Missing));
        assert_eq!(verify(KEY, " \n", NOW), Err(PowError::Missing));
        let good = decode(&solve(&challenge(1, 100)).unwrap());
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("signature");
        for bad in [
            "!!!".to_owned(),
            "e30".to_owned(), // {}
            STANDARD.encode("not json"),
            "{".to_owned(),
            "[1,2]".to_owned(),
            "A".repeat(MAX_PAYLOAD_LEN + 1),
            encode(&missing),
            tampered("number", "12".into()),
            tampered("number", (-1).into()),
            tampered("number", 1.5.into()),
            tampered("number", serde_json::Value::Null),
            tampered("salt", 5.into()),
            tampered("signature", serde_json::json!(["a"])),
        ] {
            assert_eq!(verify(KEY, &bad, NOW), Err(PowError::Malformed), "{bad:.60}");
        }
    }

    #[test]
    fn unsolvable_challenges_give_none() {
        let mut c = challenge(1, 1000);
        c.challenge = "00".repeat(32);
        assert_eq!(solve(&c), None);
        c.challenge = "zz".into();
        assert_eq!(solve(&c), None);
        let mut c = challenge(1, 1000);
        c.algorithm = "SHA-512".into();
        assert_eq!(solve(&c), None);
    }

    #[test]
    fn difficulty_rises_geometrically_and_is_capped() {
        let d = Difficulty::default();
        assert_eq!((d.base, d.max), (50_000, 5_000_000));
        let seq: Vec<u64> = (0..9).map(|a| d.maxnumber_for(a)).collect();
        assert_eq!(
            seq,
            [50_000, 50_000, 50_000, 50_000, 200_000, 800_000, 3_200_000, 5_000_000, 5_000_000]
        );
        for d in [
            d,
            Difficulty { base: 0, max: 10 },
            Difficulty {
                base: u64::MAX / 3,
                max: u64::MAX,
            },
            Difficulty { base: 100, max: 10 },
        ] {
            let mut prev = 0;
            for a in (0..200).chain([u32::MAX - 1, u32::MAX]) {
                let n = d.maxnumber_for(a);
                assert!(n >= prev && n <= d.max, "{d:?} at {a}");
                prev = n;
            }
        }
    }

    proptest! {
        #[test]
        fn verify_never_panics_on_strings(s in "\\PC{0,300}") {
            prop_assert!(verify(KEY, &s, NOW).is_err());
        }

        #[test]
        fn verify_never_panics_on_base64_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1700)) {
            prop_assert!(verify(KEY, &STANDARD.encode(&bytes), NOW).is_err());
        }

        #[test]
        fn verify_never_panics_on_odd_fields(
            algorithm in "\\PC{0,12}", challenge in "[0-9a-fA-F]{0,70}", number in any::<u64>(),
            salt in "\\PC{0,80}", signature in "[0-9a-f]{0,70}",
        ) {
            let v = serde_json::json!({
                "algorithm": algorithm, "challenge": challenge, "number": number,
                "salt": salt, "signature": signature,
            });
            prop_assert!(verify(KEY, &encode(&v), NOW).is_err());
            prop_assert!(verify(KEY, &v.to_string(), NOW).is_err());
        }
    }
}
