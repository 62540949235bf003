//! LDIF and DN text shared by the directory fixtures ([`crate::slapd`] and
//! [`crate::samba`]), which both talk to their server with the OpenLDAP
//! client tools: records for `ldapmodify`, the output of `ldapsearch -LLL
//! -o ldif-wrap=no`, RFC 4514 escaping, base64, and the values the fixtures
//! derive for new entries (per-test OU names, `givenName`).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;

static OU_COUNTER: AtomicU64 = AtomicU64::new(0);
static RANDOM_COUNTER: AtomicU64 = AtomicU64::new(0);

/// One LDIF record (values via [`ldif_line`]).
pub(crate) struct LdifRecord(String);

impl LdifRecord {
    /// A `changetype: add` record (for ldapmodify).
    pub(crate) fn add(dn: &str) -> LdifRecord {
        LdifRecord::with_changetype(dn, "add")
    }

    /// A `changetype: modify` record (add changes with
    /// [`LdifRecord::replace`]).
    pub(crate) fn modify(dn: &str) -> LdifRecord {
        LdifRecord::with_changetype(dn, "modify")
    }

    fn with_changetype(dn: &str, changetype: &str) -> LdifRecord {
        let mut record = LdifRecord(String::new());
        record.attr("dn", dn);
        record.attr("changetype", changetype);
        record
    }

    pub(crate) fn attr(&mut self, name: &str, value: &str) {
        self.0.push_str(&ldif_line(name, value));
    }

    /// `replace: <name>` with one value.
    pub(crate) fn replace(&mut self, name: &str, value: &str) {
        self.attr("replace", name);
        self.attr(name, value);
        self.0.push_str("-\n");
    }

    /// The record with its terminating empty line.
    pub(crate) fn finish(mut self) -> String {
        self.0.push('\n');
        self.0
    }
}

/// The `organizationalUnit` entry `dn` (`ou: <name>`) as an add record.
pub(crate) fn ou_record(dn: &str, name: &str) -> String {
    let mut ldif = LdifRecord::add(dn);
    ldif.attr("objectClass", "organizationalUnit");
    ldif.attr("ou", name);
    ldif.finish()
}

/// `name: value\n`, or `name:: base64\n` when `value` is not a
/// SAFE-STRING (RFC 2849).
pub(crate) fn ldif_line(name: &str, value: &str) -> String {
    if is_safe_ldif_value(value) {
        format!("{name}: {value}\n")
    } else {
        format!("{name}:: {}\n", base64_encode(value.as_bytes()))
    }
}

fn is_safe_ldif_value(value: &str) -> bool {
    let starts_ok = !matches!(value.bytes().next(), Some(b' ' | b':' | b'<'));
    let ends_ok = !value.ends_with(' ');
    starts_ok
        && ends_ok
        && value
            .bytes()
            .all(|b| b.is_ascii() && !matches!(b, 0 | b'\n' | b'\r'))
}

/// Escapes an RDN value (RFC 4514).
pub(crate) fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        if c == '\0' {
            out.push_str("\\00");
            continue;
        }
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && matches!(c, ' ' | '#'))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The arguments after the bind arguments for reading the entry `dn` with
/// `ldapsearch`: a base search in unwrapped LDIF (for
/// [`parse_ldif_attrs`]), for `attrs` (none: all user attributes).
pub(crate) fn read_entry_args(dn: &str, attrs: &[&str]) -> Vec<String> {
    [
        "-LLL",
        "-o",
        "ldif-wrap=no",
        "-b",
        dn,
        "-s",
        "base",
        "(objectClass=*)",
    ]
    .iter()
    .chain(attrs)
    .map(|s| s.to_string())
    .collect()
}

/// The attribute values in `ldapsearch -LLL` output (entries' `dn:` lines
/// are skipped) as (lowercased name, value) pairs, base64 values decoded.
pub(crate) fn parse_ldif_attrs(text: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut lines: Vec<String> = Vec::new();
    for line in text.lines() {
        if let (Some(rest), Some(last)) = (line.strip_prefix(' '), lines.last_mut()) {
            last.push_str(rest);
        } else {
            lines.push(line.to_owned());
        }
    }
    let mut attrs = Vec::new();
    for line in lines {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = line
            .split_once(':')
            .with_context(|| format!("LDIF line without a colon: {line:?}"))?;
        if name.eq_ignore_ascii_case("dn") {
            continue;
        }
        let value = if let Some(encoded) = rest.strip_prefix(':') {
            base64_decode(encoded.trim())
                .with_context(|| format!("bad base64 in the value of {name}: {encoded:?}"))?
        } else if rest.starts_with('<') {
            anyhow::bail!("URL values are not supported: {line:?}");
        } else {
            rest.trim_start_matches(' ').as_bytes().to_vec()
        };
        attrs.push((name.to_ascii_lowercase(), value));
    }
    Ok(attrs)
}

/// [`parse_ldif_attrs`]'s pairs with the values as text (bytes that are not
/// UTF-8 are replaced).
pub(crate) fn attrs_as_text(attrs: Vec<(String, Vec<u8>)>) -> Vec<(String, String)> {
    attrs
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect()
}

const BASE64_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].iter().enumerate() {
            if i <= chunk.len() {
                let index = usize::try_from((n >> shift) & 0x3f).unwrap_or(0);
                out.push(char::from(BASE64_ALPHABET.get(index).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(crate) fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            break;
        }
        let value = BASE64_ALPHABET
            .iter()
            .position(|&a| a == c)
            .with_context(|| format!("invalid base64 character {:?}", char::from(c)))?;
        acc = ((acc << 6) | u32::try_from(value).unwrap_or(0)) & 0xff_ffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap_or(0));
        }
    }
    Ok(out)
}

/// A new OU name `t<counter>-<8 random hex digits>`: unique in this process
/// by the counter, and across test processes sharing a server by chance.
pub(crate) fn fresh_ou_name() -> String {
    let n = OU_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("t{n}-{:08x}", random_u64() & 0xffff_ffff)
}

/// A random number (not for secrets: the std hasher's random keys over the
/// process id, a counter and the time).
pub(crate) fn random_u64() -> u64 {
    let n = RANDOM_COUNTER.fetch_add(1, Ordering::Relaxed);
    RandomState::new().hash_one((std::process::id(), n, std::time::Instant::now()))
}

/// `name` with its first character in upper case (the `givenName` the
/// fixtures derive from an account name).
pub(crate) fn capitalized(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for (plain, encoded) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"\xff\x00\xfe\x01", "/wD+AQ=="),
        ] {
            assert_eq!(base64_encode(plain), encoded);
            assert_eq!(base64_decode(encoded).unwrap(), plain);
        }
        let long: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&long)).unwrap(), long);
        assert!(base64_decode("a*b=").is_err());
    }

    #[test]
    fn unsafe_values_are_base64() {
        assert_eq!(ldif_line("cn", "Alice Example"), "cn: Alice Example\n");
        assert_eq!(ldif_line("cn", "Jürgen"), "cn:: SsO8cmdlbg==\n");
        for value in [" lead", "trail ", ":colon", "<url", "a\nb"] {
            assert!(ldif_line("x", value).starts_with("x:: "), "{value:?}");
        }
        let mut record = LdifRecord::modify("uid=a,dc=x");
        record.replace("mobile", "+1 555");
        assert_eq!(
            record.finish(),
            "dn: uid=a,dc=x\nchangetype: modify\nreplace: mobile\nmobile: +1 555\n-\n\n"
        );
        assert_eq!(
            ou_record("ou=t1,dc=x", "t1"),
            "dn: ou=t1,dc=x\nchangetype: add\nobjectClass: organizationalUnit\nou: t1\n\n"
        );
    }

    #[test]
    fn dn_values_are_escaped() {
        assert_eq!(escape_dn_value("a,b+c=d"), "a\\,b\\+c\\=d");
        assert_eq!(escape_dn_value(" #x "), "\\ #x\\ ");
        assert_eq!(escape_dn_value("#x"), "\\#x");
        assert_eq!(escape_dn_value("a\0b"), "a\\00b");
        assert_eq!(escape_dn_value(""), "");
    }

    #[test]
    fn search_output_is_parsed() {
        let text = "dn: uid=a,dc=x\ncn: Alice\n  Example\nmail:: w6TDtg==\n# comment\n\nsn:  two\n";
        let attrs = parse_ldif_attrs(text).unwrap();
        assert_eq!(
            attrs_as_text(attrs),
            [
                ("cn".to_owned(), "Alice Example".to_owned()),
                ("mail".to_owned(), "äö".to_owned()),
                ("sn".to_owned(), "two".to_owned()),
            ]
        );
        assert!(parse_ldif_attrs("jpegPhoto:< file:///x\n").is_err());
        assert!(parse_ldif_attrs("no colon\n").is_err());
        assert_eq!(
            read_entry_args("dc=x", &["cn"]),
            [
                "-LLL",
                "-o",
                "ldif-wrap=no",
                "-b",
                "dc=x",
                "-s",
                "base",
                "(objectClass=*)",
                "cn"
            ]
        );
    }

    #[test]
    fn names() {
        let (a, b) = (fresh_ou_name(), fresh_ou_name());
        assert_ne!(a, b);
        assert!(a.starts_with('t') && a.len() >= 11, "{a}");
        assert_eq!(capitalized("jürgen"), "Jürgen");
        assert_eq!(capitalized(""), "");
    }
}
