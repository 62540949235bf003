//! Damaged index files are refused with a clear error, never a panic; lookups never panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{corpus, non_members};
use gatehouse_breach::format::{self, Header, ShardEntry, ENTRY_LEN, HEADER_LEN, META_CHECKSUM_AT};
use gatehouse_breach::{
    builtin_common_contains, BreachError, BreachIndex, BuildOptions, IndexBuilder, SwappableIndex, Verify,
};
use proptest::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

struct Fixture {
    /// Opened from a file that is deleted since: the mapping keeps it alive, nothing is left on disk.
    index: BreachIndex,
    bytes: Vec<u8>,
    members: Vec<[u8; 20]>,
}

/// A small exact index with 4 shards, built once.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let members = corpus(5, 3_000);
        let mut b = IndexBuilder::new(
            dir.path(),
            &BuildOptions {
                exact: true,
                shard_bits: Some(2),
            },
        )
        .unwrap();
        for h in &members {
            b.push_sha1(h).unwrap();
        }
        let path = dir.path().join("fixture.gbi");
        let report = b.finish(&path).unwrap();
        assert_eq!(report.keys, 3_000);
        let bytes = std::fs::read(&path).unwrap();
        let index = BreachIndex::open(&path).unwrap();
        Fixture {
            index,
            bytes,
            members,
        }
    })
}

fn open_bytes(bytes: &[u8], verify: Verify) -> Result<BreachIndex, BreachError> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.gbi");
    std::fs::write(&p, bytes).unwrap();
    BreachIndex::open_with(&p, verify)
}

/// Rewrites the meta checksum so that a test reaches the checks behind it.
fn reseal(bytes: &mut [u8]) {
    let header: [u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().unwrap();
    let shards = 1usize << Header::decode(&header).shard_bits;
    let sum = format::meta_checksum(&header, &bytes[HEADER_LEN..HEADER_LEN + shards * ENTRY_LEN]);
    bytes[META_CHECKSUM_AT..META_CHECKSUM_AT + 8].copy_from_slice(&sum.to_le_bytes());
}

fn entry_at(bytes: &[u8], shard: usize) -> ShardEntry {
    let at = HEADER_LEN + shard * ENTRY_LEN;
    ShardEntry::decode(bytes[at..at + ENTRY_LEN].try_into().unwrap())
}

fn put_entry(bytes: &mut [u8], shard: usize, e: &ShardEntry) {
    let at = HEADER_LEN + shard * ENTRY_LEN;
    bytes[at..at + ENTRY_LEN].copy_from_slice(&e.encode());
}

fn err_text(r: Result<BreachIndex, BreachError>) -> String {
    match r {
        Ok(_) => panic!("a damaged index was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn intact_fixture_opens_and_answers() {
    let f = fixture();
    let index = open_bytes(&f.bytes, Verify::Full).unwrap();
    assert_eq!(index.len(), 3_000);
    assert_eq!(f.index.len(), 3_000);
    assert_eq!(index.shard_count(), 4);
    assert!(f.members.iter().all(|h| index.contains_sha1(h)));
    assert!(non_members(10_000).all(|h| !index.contains_sha1(&h)));
}

#[test]
fn truncated_files_are_refused() {
    let f = fixture();
    for len in [
        f.bytes.len() - 1,
        f.bytes.len() / 2,
        HEADER_LEN + 10,
        HEADER_LEN,
        10,
        3,
    ] {
        match open_bytes(&f.bytes[..len], Verify::Full) {
            Err(BreachError::Truncated { expected, actual, .. }) => {
                assert_eq!(actual, len as u64);
                assert!(expected > actual);
            }
            other => panic!("length {len}: {other:?}"),
        }
    }
    let msg = err_text(open_bytes(&f.bytes[..f.bytes.len() - 1], Verify::Full));
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn foreign_and_damaged_files_are_refused() {
    let f = fixture();
    assert!(matches!(
        open_bytes(b"", Verify::Full),
        Err(BreachError::NotAnIndex { .. })
    ));
    assert!(matches!(
        open_bytes(&[0xAB; 5000], Verify::Full),
        Err(BreachError::NotAnIndex { .. })
    ));
    assert!(matches!(
        open_bytes(
            b"7C4A8D09CA3762AF61E59520943DC26494F8941B:37359195\r\n",
            Verify::Full
        ),
        Err(BreachError::NotAnIndex { .. })
    ));

    // Trailing bytes.
    let mut longer = f.bytes.clone();
    longer.push(0);
    assert!(err_text(open_bytes(&longer, Verify::Full)).contains("corrupt"));

    // A header field (total keys) flipped: the meta checksum catches it.
    let mut b = f.bytes.clone();
    b[24] ^= 1;
    let msg = err_text(open_bytes(&b, Verify::Structure));
    assert!(msg.contains("header checksum mismatch"), "{msg}");

    // A shard table byte flipped.
    let mut b = f.bytes.clone();
    b[HEADER_LEN + ENTRY_LEN + 30] ^= 0x10;
    assert!(err_text(open_bytes(&b, Verify::Structure)).contains("checksum"));

    // Another version.
    let mut b = f.bytes.clone();
    b[8] = 2;
    assert!(matches!(
        open_bytes(&b, Verify::Full),
        Err(BreachError::UnsupportedVersion {
            found: 2,
            supported: 1,
            ..
        })
    ));

    // A fingerprint byte flipped: caught by the full check; structure-only opens and answers
    // without panicking (possibly wrongly for a few keys).
    let e = entry_at(&f.bytes, 1);
    let mut b = f.bytes.clone();
    b[e.fp_offset as usize + 5] ^= 0xFF;
    let msg = err_text(open_bytes(&b, Verify::Full));
    assert!(msg.contains("shard 1: fingerprint checksum mismatch"), "{msg}");
    let index = open_bytes(&b, Verify::Structure).unwrap();
    assert!(index.verify_data().is_err());
    let _ = f.members.iter().filter(|h| index.contains_sha1(h)).count();

    // An exact record flipped.
    let mut b = f.bytes.clone();
    b[e.exact_offset as usize + 3] ^= 1;
    assert!(err_text(open_bytes(&b, Verify::Full)).contains("exact records checksum mismatch"));
}

#[test]
fn inconsistent_layouts_are_refused_even_with_a_valid_checksum() {
    let f = fixture();
    let good = entry_at(&f.bytes, 2);
    let cases: Vec<(&str, ShardEntry)> = vec![
        (
            "segment_length",
            ShardEntry {
                segment_length: good.segment_length + 1,
                ..good.clone()
            },
        ),
        (
            "mask",
            ShardEntry {
                segment_length_mask: good.segment_length_mask ^ 1,
                ..good.clone()
            },
        ),
        (
            "segment_count_length",
            ShardEntry {
                segment_count_length: good.segment_count_length + 1,
                ..good.clone()
            },
        ),
        (
            "fingerprint length",
            ShardEntry {
                segment_count_length: good.segment_count_length * 2,
                ..good.clone()
            },
        ),
        (
            "outside the file",
            ShardEntry {
                fp_offset: f.bytes.len() as u64 - 10,
                ..good.clone()
            },
        ),
        (
            "outside the file",
            ShardEntry {
                fp_offset: u64::MAX - 3,
                ..good.clone()
            },
        ),
        (
            "outside the file",
            ShardEntry {
                exact_count: u64::MAX / 20,
                ..good.clone()
            },
        ),
        (
            "overflows",
            ShardEntry {
                exact_count: u64::MAX,
                ..good.clone()
            },
        ),
        (
            "fewer exact records",
            ShardEntry {
                exact_count: good.key_count - 1,
                ..good.clone()
            },
        ),
        (
            "do not add up",
            ShardEntry {
                key_count: good.key_count - 1,
                ..good.clone()
            },
        ),
        (
            "empty shard",
            ShardEntry {
                key_count: 0,
                ..good.clone()
            },
        ),
    ];
    for (want, e) in cases {
        let mut b = f.bytes.clone();
        put_entry(&mut b, 2, &e);
        reseal(&mut b);
        let msg = err_text(open_bytes(&b, Verify::Structure));
        assert!(msg.contains(want), "{want}: {msg}");
    }
    // Header fields out of range.
    for (at, value) in [(16usize, 40u32), (20, 81), (12, 6)] {
        let mut b = f.bytes.clone();
        b[at..at + 4].copy_from_slice(&value.to_le_bytes());
        reseal_if_possible(&mut b);
        assert!(err_text(open_bytes(&b, Verify::Structure)).contains("corrupt"));
    }
}

fn reseal_if_possible(b: &mut [u8]) {
    let header: [u8; HEADER_LEN] = b[..HEADER_LEN].try_into().unwrap();
    let h = Header::decode(&header);
    if h.shard_bits <= 16 && HEADER_LEN + (ENTRY_LEN << h.shard_bits) <= b.len() {
        reseal(b);
    }
}

#[test]
fn a_directory_or_missing_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        BreachIndex::open(dir.path()),
        Err(BreachError::Io { .. })
    ));
    assert!(matches!(
        BreachIndex::open(Path::new("/nonexistent/x.gbi")),
        Err(BreachError::Io { .. })
    ));
}

#[test]
fn builtin_common_list() {
    for pw in [
        "password",
        "123456",
        "123456789",
        "qwerty",
        "iloveyou",
        "PASSWORD",
        "Password",
        "QwErTy",
    ] {
        assert!(builtin_common_contains(pw), "{pw}");
    }
    for pw in [
        "kT7#vQ2!mZ9wLp",
        "",
        "password ",
        " 123456",
        "correct horse battery staple",
    ] {
        assert!(!builtin_common_contains(pw), "{pw:?}");
    }
    assert!(gatehouse_breach::builtin_common_len() >= 1_000);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn lookups_never_panic(password in any::<String>()) {
        let index = &fixture().index;
        let _ = index.contains_password(&password);
        let _ = builtin_common_contains(&password);
        let swappable = SwappableIndex::empty();
        let _ = swappable.is_breached(&password);
        swappable.swap(open_bytes(&fixture().bytes, Verify::Structure).unwrap());
        let _ = swappable.is_breached(&password);
    }

    #[test]
    fn damaged_files_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        reseal_header in any::<bool>(),
        probe in proptest::collection::vec(any::<[u8; 20]>(), 16),
    ) {
        let f = fixture();
        let mut b = f.bytes.clone();
        for (at, x) in &flips {
            let i = at.index(b.len());
            b[i] ^= x;
        }
        if reseal_header {
            reseal_if_possible(&mut b);
        }
        if let Some(cut) = cut {
            b.truncate(cut.index(b.len()));
        }
        for verify in [Verify::Full, Verify::Structure] {
            if let Ok(index) = open_bytes(&b, verify) {
                for h in probe.iter().chain(&f.members[..64]) {
                    let _ = index.contains_sha1(h);
                }
                let _ = index.verify_data();
            }
        }
    }
}
