//! Phone numbers, kept in E.164 form (`+` and digits) once checked against the numbering plans.
use crate::types::ParseError;
use phonenumber::country::Id;
use phonenumber::metadata::DATABASE;
use phonenumber::Mode;
use serde::{Deserialize, Serialize};
use std::fmt;
use subtle::ConstantTimeEq;
use unicode_normalization::UnicodeNormalization;

/// The longest input looked at: a formatted international number with an international prefix fits.
const MAX_INPUT_CHARS: usize = 40;

/// True when `code` is an ISO 3166 alpha-2 region the numbering plans know ("FR", "US", "GB"…),
/// in either case. For checking a configured default region.
pub fn valid_region(code: &str) -> bool {
    region(code).is_some()
}

fn region(code: &str) -> Option<Id> {
    let code = code.trim().to_ascii_uppercase();
    if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    DATABASE.by_id(code.as_str())?;
    code.parse().ok()
}

/// A masked hint shaped like the hint of a mobile number in `region` (its country code, its length),
/// ending in the two digits `last`: what a decoy flow shows for a phone method it does not have.
pub fn decoy_hint(region_code: &str, last: u8) -> String {
    let meta =
        region(region_code).and_then(|_| DATABASE.by_id(region_code.trim().to_ascii_uppercase().as_str()));
    let cc = meta.as_ref().map(|m| m.country_code()).unwrap_or(1);
    let len = meta
        .as_ref()
        .and_then(|m| m.descriptors().mobile().and_then(|d| d.example()).map(str::len))
        .unwrap_or(10)
        .max(3);
    format!("+{cc} {} {:02}", "•".repeat(len - 2), last % 100)
}

/// A phone number that the numbering plan of its country accepts, as E.164: `+33612345678`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone {
    e164: String,
    country_code: u16,
}

impl Phone {
    /// Reads a number in international form (`+44 7400 123456`, `0044 7400 123456`) or in the
    /// national form of `default_region` (`07400 123456` with "GB").
    pub fn parse(raw: &str, default_region: &str) -> Result<Self, ParseError> {
        Self::parse_in(raw, region(default_region))
    }

    fn parse_in(raw: &str, default_region: Option<Id>) -> Result<Self, ParseError> {
        let err = |m: &str| Err(ParseError::new("phone", m));
        let s: String = raw.trim().nfkc().collect();
        if s.is_empty() {
            return err("enter your phone number");
        }
        if s.chars().count() > MAX_INPUT_CHARS {
            return err("a phone number has at most 40 characters");
        }
        let allowed = |(i, c): (usize, char)| {
            c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')' | '/') || (c == '+' && i == 0)
        };
        if !s.chars().enumerate().all(allowed) {
            return err("a phone number has digits, spaces and + - . ( ) / only");
        }
        if !s.bytes().any(|b| b.is_ascii_digit()) {
            return err("enter your phone number");
        }
        let international = s.starts_with('+');
        if !international && default_region.is_none() {
            return err("enter the number in international form: + then the country code");
        }
        let region = if international { None } else { default_region };
        let Ok(number) = phonenumber::parse(region, &s) else {
            return err("this is not a phone number; check the digits and the country code");
        };
        if number.extension().is_some() {
            return err("a number with an extension cannot receive codes");
        }
        if !phonenumber::is_valid(&number) {
            return err("this number does not exist in its country's numbering plan; check the digits");
        }
        let e164 = number.format().mode(Mode::E164).to_string();
        let shape_ok = e164.len() > 2
            && e164.len() <= 16
            && e164.starts_with('+')
            && e164.bytes().skip(1).all(|b| b.is_ascii_digit());
        if !shape_ok {
            return err("this is not a phone number; check the digits and the country code");
        }
        Ok(Self {
            e164,
            country_code: number.code().value(),
        })
    }

    /// The number as E.164: `+` then the country code and the national number, no spaces.
    pub fn as_str(&self) -> &str {
        &self.e164
    }

    /// The country calling code: 33 for France, 1 for the NANP, 44 for the United Kingdom.
    pub fn country_code(&self) -> u16 {
        self.country_code
    }

    /// The E.164 string cut to `+` and its first `digits` digits (the whole number when shorter),
    /// for counting requests per number range.
    pub fn prefix(&self, digits: usize) -> &str {
        self.e164.get(..digits.saturating_add(1)).unwrap_or(&self.e164)
    }

    /// A hint that shows the country code and the last two digits only: `+33 ••••••• 78`.
    pub fn masked(&self) -> String {
        let cc = self.country_code.to_string();
        let national = self.e164.get(1 + cc.len()..).unwrap_or("");
        let n = national.len();
        if n <= 2 {
            return format!("+{cc} {}", "•".repeat(n));
        }
        let last = national.get(n - 2..).unwrap_or("");
        format!("+{cc} {} {last}", "•".repeat(n - 2))
    }

    /// True when `typed`, in any form [`Phone::parse`] reads, is this number. Compared in constant
    /// time, so a person confirming a masked number learns only yes or no.
    pub fn matches_confirmation(&self, typed: &str, default_region: &str) -> bool {
        match Self::parse(typed, default_region) {
            Ok(other) => bool::from(self.e164.as_bytes().ct_eq(other.e164.as_bytes())),
            Err(_) => false,
        }
    }
}

impl TryFrom<String> for Phone {
    type Error = ParseError;
    /// Stored numbers are E.164, so no region is needed (and one without `+` is refused).
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse_in(&value, None)
    }
}
impl From<Phone> for String {
    fn from(value: Phone) -> Self {
        value.e164
    }
}
impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.masked())
    }
}
impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.e164)
    }
}

#[cfg(test)]
mod decoy_tests {
    use super::*;

    #[test]
    fn decoy_hints_look_like_real_ones() {
        let real = Phone::parse("06 12 34 56 78", "FR").unwrap().masked();
        let decoy = decoy_hint("FR", 78);
        assert_eq!(real, decoy);
        let real = Phone::parse("07911 123456", "GB").unwrap().masked();
        assert_eq!(real.len(), decoy_hint("gb", 56).len());
        assert_eq!(decoy_hint("GB", 7), "+44 •••••••• 07");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fr(raw: &str) -> Result<Phone, ParseError> {
        Phone::parse(raw, "FR")
    }

    #[test]
    fn national_and_international_forms_give_one_e164() {
        for raw in [
            "06 12 34 56 78",
            "0612345678",
            "06.12.34.56.78",
            "06-12-34-56-78",
            "+33 6 12 34 56 78",
            "+33612345678",
            "+33 (0)6 12 34 56 78",
            "0033 6 12 34 56 78",
            "  +33 6 12 34 56 78  ",
            "＋３３６１２３４５６７８",
        ] {
            let p = fr(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(p.as_str(), "+33612345678", "{raw}");
            assert_eq!(p.country_code(), 33);
        }
    }

    #[test]
    fn the_default_region_reads_national_numbers_only() {
        let gb = Phone::parse("07400 123456", "GB").unwrap();
        assert_eq!(gb.as_str(), "+447400123456");
        assert_eq!(gb.country_code(), 44);
        let us = Phone::parse("(201) 555-0123", "US").unwrap();
        assert_eq!(us.as_str(), "+12015550123");
        assert_eq!(us.country_code(), 1);
        // An international number ignores the default region.
        assert_eq!(Phone::parse("+44 7400 123456", "FR").unwrap(), gb);
        assert_eq!(Phone::parse("+1 201 555 0123", "gb").unwrap(), us);
        // A national number with no usable region is refused with a hint.
        let e = Phone::parse("0612345678", "").unwrap_err();
        assert_eq!(e.field, "phone");
        assert!(e.message.contains("international"), "{e}");
        assert!(Phone::parse("0612345678", "XX").is_err());
    }

    #[test]
    fn invalid_numbers_are_refused_with_a_message() {
        for bad in [
            "",
            "   ",
            "abc",
            "+",
            "++33612345678",
            "06 12 34 56 7",
            "06 12 34 56 789",
            "+33 1",
            "+999 12345678",
            "0000000000",
            "+33 6 12 34 56 78 ext. 12",
            "tel:+33612345678",
            "+33612345678;phone-context=+33",
            "06 12 34 56 78 ☎",
            "1234567890123456789012345678901234567890123",
        ] {
            let e = fr(bad).expect_err(bad);
            assert_eq!(e.field, "phone");
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn regions_are_checked_against_the_numbering_plans() {
        for ok in ["FR", "US", "GB", "de", " CH "] {
            assert!(valid_region(ok), "{ok}");
        }
        for bad in ["", "F", "FRA", "XX", "ZZ", "33", "É1", "UK"] {
            assert!(!valid_region(bad), "{bad}");
        }
    }

    #[test]
    fn masked_shows_the_country_code_and_two_last_digits_only() {
        let p = fr("06 12 34 56 78").unwrap();
        assert_eq!(p.masked(), "+33 ••••••• 78");
        let us = Phone::parse("201-555-0123", "US").unwrap();
        assert_eq!(us.masked(), "+1 •••••••• 23");
        let dbg = format!("{p:?}");
        assert_eq!(dbg, "Phone(+33 ••••••• 78)");
        assert!(!dbg.contains("612"));
        assert_eq!(p.to_string(), "+33612345678");
    }

    #[test]
    fn confirmation_accepts_any_form_of_the_same_number() {
        let p = fr("+33 6 12 34 56 78").unwrap();
        assert!(p.matches_confirmation("06 12 34 56 78", "FR"));
        assert!(p.matches_confirmation("+33612345678", "US"));
        assert!(p.matches_confirmation("0033612345678", "FR"));
        assert!(!p.matches_confirmation("06 12 34 56 79", "FR"));
        assert!(!p.matches_confirmation("78", "FR"));
        assert!(!p.matches_confirmation("", "FR"));
        // The same national digits in another country are another number.
        assert!(!p.matches_confirmation("06 12 34 56 78", "BE"));
    }

    #[test]
    fn prefixes_cut_the_e164_string() {
        let p = fr("06 12 34 56 78").unwrap();
        assert_eq!(p.prefix(0), "+");
        assert_eq!(p.prefix(2), "+33");
        assert_eq!(p.prefix(5), "+33612");
        assert_eq!(p.prefix(11), "+33612345678");
        assert_eq!(p.prefix(50), "+33612345678");
        assert_eq!(p.prefix(usize::MAX), "+33612345678");
    }

    #[test]
    fn serde_uses_the_e164_string() {
        let p = fr("06 12 34 56 78").unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"+33612345678\"");
        let back: Phone = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.country_code(), 33);
        assert!(serde_json::from_str::<Phone>("\"0612345678\"").is_err());
        assert!(serde_json::from_str::<Phone>("\"+33 1\"").is_err());
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,50}", region in "[A-Za-z]{0,3}") {
            if let Ok(p) = Phone::parse(&s, &region) {
                prop_assert!(p.as_str().starts_with('+'));
                let _ = (p.masked(), p.prefix(4), p.matches_confirmation(&s, &region));
            }
            let _ = valid_region(&region);
        }

        #[test]
        fn digit_strings_never_panic(s in "\\+?[0-9 ()./-]{0,30}") {
            if let Ok(p) = Phone::parse(&s, "FR") {
                prop_assert!(p.as_str().len() <= 16);
                prop_assert!(p.matches_confirmation(p.as_str(), "US"));
                let masked = p.masked();
                let shown: String = masked.chars().filter(|c| c.is_ascii_digit()).collect();
                prop_assert!(shown.len() <= p.country_code().to_string().len() + 2);
            }
        }
    }
}
