//! LDAP filter and DN escaping of untrusted values, as the directory adapters use it: a login typed
//! by anyone goes into `(&<user filter>(|(uid=…)(mail=…)))`, a DN read from the directory into the
//! group filter `(member=…)` and the AD in-chain filter `(member:1.2.840.113556.1.4.1941:=…)`, a
//! watermark into `(modifyTimestamp>=…)`.
//!
//! Properties: no panic; the escaped value has no raw `*`, `(`, `)`, `\` or NUL (every `\` starts a
//! two-hex-digit escape) and unescapes to the input; every filter built from it parses, with exactly
//! the intended structure and the input as the assertion value (so no value can add a clause, a
//! wildcard or a closing parenthesis); the escaped length is bounded. For `dn_escape`: no raw RFC 4514
//! special, no leading space or `#`, no trailing space, every `\` a hex pair, and it unescapes to
//! the input.
#![no_main]

use gatehouse_core::types::Login;
use gatehouse_directory::ldap::rdn_value;
use ldap3::asn1::{OctetString, Sequence, Tag, TagClass};
use ldap3::{dn_escape, ldap_escape, ldap_unescape, parse_filter};
use libfuzzer_sys::fuzz_target;

fn octets(b: &[u8]) -> Tag {
    Tag::OctetString(OctetString {
        inner: b.to_vec(),
        ..Default::default()
    })
}

fn ctx_octets(id: u64, b: &[u8]) -> Tag {
    Tag::OctetString(OctetString {
        class: TagClass::Context,
        id,
        inner: b.to_vec(),
    })
}

fn ctx_seq(id: u64, inner: Vec<Tag>) -> Tag {
    Tag::Sequence(Sequence {
        class: TagClass::Context,
        id,
        inner,
    })
}

fn eq(attr: &str, value: &[u8]) -> Tag {
    ctx_seq(3, vec![octets(attr.as_bytes()), octets(value)])
}

/// Every `\` is followed by two hex digits; decodes those escapes.
fn unescape_hex_pairs(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let pair = s
                .get(i + 1..i + 3)
                .unwrap_or_else(|| panic!("dangling \\ in {s:?}"));
            assert!(pair.bytes().all(|c| c.is_ascii_hexdigit()), "\\{pair} in {s:?}");
            out.push(u8::from_str_radix(pair, 16).unwrap_or_else(|_| unreachable!()));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn filter_value(raw: &str) {
    let e = ldap_escape(raw);
    assert!(
        !e.bytes().any(|c| matches!(c, b'*' | b'(' | b')' | b'\0')),
        "{e:?}"
    );
    assert_eq!(unescape_hex_pairs(&e), raw.as_bytes(), "escape of {raw:?}");
    assert_eq!(ldap_unescape(e.as_ref()).ok().as_deref(), Some(raw));
    assert!(e.len() <= 3 * raw.len());

    // The login filter of the LDAP and AD adapters (user filter, then any login attribute).
    let login_filter = format!("(&(objectClass=inetOrgPerson)(|(uid={e})(mail={e})))");
    let expected = ctx_seq(
        0,
        vec![
            eq("objectClass", b"inetOrgPerson"),
            ctx_seq(1, vec![eq("uid", raw.as_bytes()), eq("mail", raw.as_bytes())]),
        ],
    );
    assert_eq!(parse_filter(&login_filter), Ok(expected), "{login_filter}");

    // The group search filter with the member's DN.
    let group_filter = format!("(&(objectClass=groupOfNames)(member={e}))");
    let expected = ctx_seq(
        0,
        vec![eq("objectClass", b"groupOfNames"), eq("member", raw.as_bytes())],
    );
    assert_eq!(parse_filter(&group_filter), Ok(expected), "{group_filter}");

    // Active Directory's nested-group filter (an extensible match).
    let chain = format!("(&(objectClass=group)(member:1.2.840.113556.1.4.1941:={e}))");
    let expected = ctx_seq(
        0,
        vec![
            eq("objectClass", b"group"),
            ctx_seq(
                9,
                vec![
                    ctx_octets(1, b"1.2.840.113556.1.4.1941"),
                    ctx_octets(2, b"member"),
                    ctx_octets(3, raw.as_bytes()),
                ],
            ),
        ],
    );
    assert_eq!(parse_filter(&chain), Ok(expected), "{chain}");

    // The sync watermark.
    let since = format!("(&(objectClass=person)(modifyTimestamp>={e}))");
    let expected = ctx_seq(
        0,
        vec![
            eq("objectClass", b"person"),
            ctx_seq(5, vec![octets(b"modifyTimestamp"), octets(raw.as_bytes())]),
        ],
    );
    assert_eq!(parse_filter(&since), Ok(expected), "{since}");
}

fn dn_value(raw: &str) {
    let d = dn_escape(raw);
    assert!(
        !d.bytes()
            .any(|c| matches!(c, b'"' | b'+' | b',' | b';' | b'<' | b'=' | b'>' | b'\0')),
        "{d:?}"
    );
    assert!(!d.starts_with(' ') && !d.starts_with('#'), "{d:?}");
    assert!(!d.ends_with(' '), "{d:?}");
    assert_eq!(unescape_hex_pairs(&d), raw.as_bytes(), "dn escape of {raw:?}");
    assert!(d.len() <= 3 * raw.len());
    // No value can add an RDN: the first RDN of the DN is the escaped value.
    let dn = format!("cn={d},ou=people,dc=example,dc=org");
    assert_eq!(rdn_value(&dn), d.trim());
}

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    filter_value(&raw);
    dn_value(&raw);
    if let Ok(login) = Login::parse(&raw) {
        filter_value(login.as_str());
    }
});
