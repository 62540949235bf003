//! Phone numbers as people type them, in several default regions.
//!
//! Properties: no panic; an accepted number is E.164 (`+` and at most 15 digits) starting with its
//! country code and parses back to itself in any region (and through serde); the typed form
//! confirms it; confirmation agrees with parsing; the hint shows the country code and two digits
//! only; `prefix` is a prefix of the E.164 string of the documented length; a number in
//! international form reads the same in every region.
#![no_main]

use gatehouse_core::phone::{valid_region, Phone};
use libfuzzer_sys::fuzz_target;

/// The input, one field a line (so seeds are written by hand): the number as typed, its default
/// region, a confirmation as typed, the confirmation's region, a prefix length.
struct Input<'a> {
    raw: &'a str,
    region: &'a str,
    confirm: &'a str,
    confirm_region: &'a str,
    digits: usize,
}

impl<'a> Input<'a> {
    fn read(s: &'a str) -> Self {
        let mut lines = s.split('\n');
        let mut next = || lines.next().unwrap_or("");
        let (raw, region, confirm, confirm_region) = (next(), next(), next(), next());
        let digits = next().trim().parse().unwrap_or(0);
        Self {
            raw,
            region,
            confirm,
            confirm_region,
            digits,
        }
    }
}

fn check(p: &Phone, raw: &str, region: &str) {
    let e164 = p.as_str();
    assert!(e164.starts_with('+'), "{e164}");
    assert!(e164.len() > 2 && e164.len() <= 16, "{e164}");
    assert!(e164.bytes().skip(1).all(|b| b.is_ascii_digit()), "{e164}");
    let cc = p.country_code().to_string();
    assert!(e164[1..].starts_with(&cc), "{e164} has country code {cc}");

    // Round trips: the stored form reads back as itself, whatever the default region.
    for r in ["", "US", "FR", region] {
        assert_eq!(Phone::parse(e164, r).as_ref(), Ok(p), "{e164} in {r:?}");
    }
    assert_eq!(Phone::try_from(String::from(p.clone())).as_ref(), Ok(p));
    let json = serde_json::to_string(p).unwrap_or_default();
    assert_eq!(serde_json::from_str::<Phone>(&json).ok().as_ref(), Some(p));
    assert_eq!(p.to_string(), e164);

    // What the person typed confirms the number.
    assert!(
        p.matches_confirmation(raw, region),
        "{raw:?} in {region:?} -> {e164}"
    );
    assert!(p.matches_confirmation(e164, "ZZ"));

    // The hint: `+<cc> •••… <last two>`, no other digit.
    let masked = p.masked();
    assert!(masked.starts_with(&format!("+{cc} ")), "{masked}");
    let shown: String = masked.chars().filter(char::is_ascii_digit).collect();
    assert!(shown.len() <= cc.len() + 2, "{masked} shows too much of {e164}");
    let national = &e164[1 + cc.len()..];
    if national.len() > 2 {
        assert!(masked.ends_with(&national[national.len() - 2..]), "{masked}");
    }
    assert!(masked.chars().count() <= 1 + cc.len() + 1 + 15 + 1 + 2);
    assert_eq!(format!("{p:?}"), format!("Phone({masked})"));
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let input = Input::read(&text);
    let region = input.region;
    let _ = valid_region(region);
    let parsed = Phone::parse(input.raw, region);
    match &parsed {
        Ok(p) => {
            check(p, input.raw, region);
            let d = input.digits;
            let prefix = p.prefix(d);
            assert!(p.as_str().starts_with(prefix));
            assert_eq!(prefix.len(), d.saturating_add(1).min(p.as_str().len()));
            assert_eq!(p.prefix(usize::MAX), p.as_str());

            // Confirmation says yes exactly when the typed text is the same number.
            let same = Phone::parse(input.confirm, input.confirm_region).is_ok_and(|q| &q == p);
            assert_eq!(p.matches_confirmation(input.confirm, input.confirm_region), same);
        }
        Err(e) => {
            assert_eq!(e.field, "phone");
            assert!(!e.message.is_empty());
        }
    }
    // A number in international form reads the same whatever the region, and as a stored value.
    if input.raw.trim().starts_with('+') {
        assert_eq!(Phone::try_from(input.raw.to_owned()), parsed, "{:?}", input.raw);
        assert_eq!(Phone::parse(input.raw, "FR"), parsed, "{:?}", input.raw);
    }
});
