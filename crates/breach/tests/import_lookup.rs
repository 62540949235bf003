//! Importing generated HIBP downloads in both layouts and looking every hash up again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{corpus, hex_upper, non_members, write_single_file, Rng};
use gatehouse_breach::{
    import, import_with, key_of, parse_sha1_hex, sha1_of_password, BreachError, BreachIndex, ImportOptions,
    Layout, SwappableIndex, INDEX_FILE_NAME,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

const N: usize = 200_000;
const NON_MEMBERS: usize = 1_000_000;

fn false_positive_rate(index: &BreachIndex) -> f64 {
    let hits = non_members(NON_MEMBERS)
        .filter(|h| index.contains_sha1(h))
        .count();
    hits as f64 / NON_MEMBERS as f64
}

#[test]
fn single_file_round_trip_with_crlf_and_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let hashes = corpus(1, N);
    let input = dir.path().join("pwned-passwords-sha1-ordered-by-hash.txt");
    let padding = hex_upper(&corpus(77, 1)[0]);
    let bad_lines = write_single_file(
        &input,
        &hashes,
        &[
            (10, "not a hash"),
            (20, "7C4A8D09CA3762AF61E59520943DC26494F8941:12"), // 39 digits
            (30, "7C4A8D09CA3762AF61E59520943DC26494F8941BZ:1"),
            (40, "8846F7EAEE8FB117AD06BDD830B7586C:5"), // an NTLM hash
            (50, ""),                                   // blank: not bad
            (60, &format!("{padding}:0")),              // padding: skipped
            (70, &format!("{}:x", hex_upper(&hashes[0]))),
        ],
    );
    let out = dir.path().join("index");
    let report = import(&input, &out).unwrap();
    println!("{report}");
    assert_eq!(report.layout, Layout::SingleFile);
    assert_eq!(report.hashes, N as u64);
    assert_eq!(report.bad_lines, 5);
    assert_eq!(report.blank_lines, 1);
    assert_eq!(report.below_min_count, 1);
    assert_eq!(report.lines, N as u64 + 7);
    let sampled: Vec<u64> = report.bad_line_samples.iter().map(|b| b.line).collect();
    let expected: Vec<u64> = bad_lines
        .iter()
        .enumerate()
        .filter(|(i, _)| ![4, 5].contains(i))
        .map(|(_, l)| *l)
        .collect();
    assert_eq!(sampled, expected);
    assert_eq!(report.bytes_read, std::fs::metadata(&input).unwrap().len());

    let index = BreachIndex::open(out.join(INDEX_FILE_NAME)).unwrap();
    assert_eq!(index.len(), N as u64);
    assert!(!index.is_exact());
    assert_eq!(index.shard_count(), 1);
    let missing = hashes.iter().filter(|h| !index.contains_sha1(h)).count();
    assert_eq!(missing, 0, "false negatives");
    let fpr = false_positive_rate(&index);
    println!(
        "single file: {} keys, {:.3} bytes/hash ({:.2} filter bits/hash), FPR {:.4} %",
        index.len(),
        index.bytes_per_hash(),
        index.filter_bytes_per_hash() * 8.0,
        fpr * 100.0
    );
    assert!(fpr <= 0.005, "false-positive rate {fpr}");
    // At 200,000 keys xorf sizes the filter a little above its large-set ~9.0 bits.
    assert!(
        index.filter_bytes_per_hash() * 8.0 < 9.6,
        "{}",
        index.filter_bytes_per_hash()
    );
}

#[test]
fn prefix_directory_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("hibp");
    std::fs::create_dir(&input).unwrap();
    // 200,000 hashes under 2,000 prefixes (the real download has 16^5 files of ~1,900 lines).
    let mut rng = Rng(2);
    let prefixes: Vec<u32> = (0..2_000).map(|_| (rng.next_u64() >> 44) as u32).collect();
    let mut hashes = Vec::with_capacity(N);
    let mut by_prefix: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for i in 0..N {
        let mut h = rng.sha1();
        let p = prefixes[i % prefixes.len()];
        h[0] = (p >> 12) as u8;
        h[1] = (p >> 4) as u8;
        h[2] = (h[2] & 0x0F) | ((p as u8 & 0x0F) << 4);
        let hex = hex_upper(&h);
        by_prefix
            .entry(p)
            .or_default()
            .push(format!("{}:{}", &hex[5..], i % 50 + 1));
        hashes.push(h);
    }
    let mut bad = 0;
    for (n, (p, lines)) in by_prefix.iter().enumerate() {
        // Alternate the naming and line-ending styles.
        let name = match n % 3 {
            0 => format!("{p:05X}"),
            1 => format!("{p:05X}.txt"),
            _ => format!("{p:05x}.TXT"),
        };
        let eol = if n % 2 == 0 { "\r\n" } else { "\n" };
        let mut f = std::io::BufWriter::new(std::fs::File::create(input.join(name)).unwrap());
        for (i, l) in lines.iter().enumerate() {
            write!(f, "{l}{eol}").unwrap();
            if n % 500 == 0 && i == 3 {
                write!(f, "{}:7{eol}", hex_upper(&hashes[0])).unwrap(); // a full hash: bad here
                bad += 1;
            }
        }
        f.flush().unwrap();
    }
    std::fs::write(input.join("README.md"), "not a prefix file").unwrap();
    std::fs::create_dir(input.join("12345")).unwrap(); // a directory with a prefix name
    let out = dir.path().join("index");
    let report = import_with(&input, &out, &ImportOptions::default()).unwrap();
    println!("{report}");
    assert_eq!(report.layout, Layout::PrefixDirectory);
    assert_eq!(report.files_read, by_prefix.len() as u64);
    assert_eq!(report.ignored_files, 2);
    assert_eq!(report.hashes, N as u64);
    assert_eq!(report.bad_lines, bad);
    assert!(report.bad_line_samples.iter().all(|b| b.line == 5));

    let index = BreachIndex::open(out.join(INDEX_FILE_NAME)).unwrap();
    let missing = hashes.iter().filter(|h| !index.contains_sha1(h)).count();
    assert_eq!(missing, 0, "false negatives");
    let fpr = false_positive_rate(&index);
    assert!(fpr <= 0.005, "false-positive rate {fpr}");
}

#[test]
fn sharded_exact_index_has_no_false_positives() {
    let dir = tempfile::tempdir().unwrap();
    let hashes = corpus(3, N);
    let input = dir.path().join("sha1.txt");
    write_single_file(&input, &hashes, &[]);
    let options = ImportOptions {
        exact: true,
        shard_bits: Some(4),
        ..ImportOptions::default()
    };
    let report = import_with(&input, dir.path(), &options).unwrap();
    assert_eq!(report.build.shard_bits, 4);
    let index = BreachIndex::open(dir.path().join(INDEX_FILE_NAME)).unwrap();
    assert!(index.is_exact());
    assert_eq!(index.shard_count(), 16);
    assert_eq!(index.exact_len(), N as u64);
    assert!(index.bytes_per_hash() > 20.0);
    assert_eq!(hashes.iter().filter(|h| !index.contains_sha1(h)).count(), 0);
    assert_eq!(false_positive_rate(&index), 0.0);

    // Hashes sharing a member's 64-bit key always pass the filter: only the exact list can tell.
    let mut rng = Rng(99);
    let twins: Vec<[u8; 20]> = hashes[..1000]
        .iter()
        .map(|h| {
            let mut t = rng.sha1();
            t[..8].copy_from_slice(&h[..8]);
            t
        })
        .collect();
    assert!(twins.iter().all(|t| !index.contains_sha1(t)));

    // The same corpus without exact mode: the twins are (necessarily) false positives.
    let plain_dir = dir.path().join("plain");
    import_with(
        &input,
        &plain_dir,
        &ImportOptions {
            shard_bits: Some(4),
            ..ImportOptions::default()
        },
    )
    .unwrap();
    let plain = BreachIndex::open(plain_dir.join(INDEX_FILE_NAME)).unwrap();
    assert!(twins.iter().all(|t| plain.contains_sha1(t)));
    assert_eq!(hashes.iter().filter(|h| !plain.contains_sha1(h)).count(), 0);
    // 16 shards of 12,500 keys: small filters are sized up (xorf's size factor is ~1.24 at this
    // size, ~1.125 from a million keys on), which is why the importer shards only large corpora.
    assert!(
        plain.filter_bytes_per_hash() < 1.45,
        "{}",
        plain.filter_bytes_per_hash()
    );
}

#[test]
fn duplicates_are_indexed_once_and_passwords_are_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("small.txt");
    let pw = sha1_of_password("correct horse battery staple");
    let mut lines = String::new();
    for _ in 0..3 {
        lines.push_str(&format!("{}:3\n", hex_upper(&pw)));
    }
    lines.push_str(&format!("{}:3\n", hex_upper(&pw).to_lowercase()));
    lines.push_str(&format!("{}\n", hex_upper(&sha1_of_password("P@ssw0rd"))));
    std::fs::write(&input, lines).unwrap();
    let report = import(&input, dir.path()).unwrap();
    assert_eq!(report.hashes, 5);
    let index = BreachIndex::open(dir.path().join(INDEX_FILE_NAME)).unwrap();
    assert_eq!(index.len(), 2);
    assert!(index.contains_password("correct horse battery staple"));
    assert!(index.contains_password("P@ssw0rd"));
    assert_eq!(
        parse_sha1_hex("7c4a8d09ca3762af61e59520943dc26494f8941b"),
        Some(sha1_of_password("123456"))
    );
    assert_eq!(key_of(&sha1_of_password("123456")), 0x7C4A_8D09_CA37_62AF);
}

#[test]
fn unusable_inputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.txt");
    std::fs::write(&junk, "hello\nworld\n").unwrap();
    let out = dir.path().join("out");
    match import(&junk, &out) {
        Err(BreachError::Input { reason, .. }) => assert!(reason.contains("junk.txt:1"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(!out.join(INDEX_FILE_NAME).exists());

    let archive = dir.path().join("pwned.7z");
    std::fs::write(&archive, [0x37, 0x7A, 0xBC, 0xAF, 0x27, 0x1C, 0, 4]).unwrap();
    let err = import(&archive, &out).unwrap_err();
    assert!(err.to_string().contains("7-Zip"), "{err}");

    let empty_dir = dir.path().join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    assert!(matches!(import(&empty_dir, &out), Err(BreachError::Input { .. })));
    assert!(matches!(
        import(dir.path().join("missing"), &out),
        Err(BreachError::Io { .. })
    ));
    // No spill directory is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn swappable_index_replaces_the_index_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (corpus(10, 5_000), corpus(11, 5_000));
    for (name, hashes) in [("a", &a), ("b", &b)] {
        let input = dir.path().join(format!("{name}.txt"));
        write_single_file(&input, hashes, &[]);
        import(&input, dir.path().join(name)).unwrap();
    }
    let path_a = dir.path().join("a").join(INDEX_FILE_NAME);
    let path_b = dir.path().join("b").join(INDEX_FILE_NAME);

    let swappable = Arc::new(SwappableIndex::empty());
    assert!(swappable.current().is_none());
    assert!(!swappable.contains_sha1(&a[0]));
    assert!(
        swappable.is_breached("password"),
        "the built-in list applies without an index"
    );
    assert!(!swappable.is_breached("d8Hq-unlikely-91xZ"));

    assert!(swappable.reload_from(&path_a).unwrap().is_none());
    assert!(a.iter().all(|h| swappable.contains_sha1(h)));

    // A reader keeps looking up while the index is swapped back and forth; each swap waits
    // until the reader has done a lookup since the previous one.
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let lookups = Arc::new(AtomicU64::new(0));
    let reader = {
        let (swappable, stop, lookups, a0, b0) =
            (swappable.clone(), stop.clone(), lookups.clone(), a[0], b[0]);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // Exactly one of the two indexes is in use at any instant.
                let current = swappable.current().unwrap();
                assert!(current.contains_sha1(&a0) || current.contains_sha1(&b0));
                let _ = swappable.contains_sha1(&a0); // (may see either index)
                lookups.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for i in 0..20 {
        let seen = lookups.load(Ordering::Relaxed);
        while lookups.load(Ordering::Relaxed) == seen && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        let old = swappable
            .reload_from(if i % 2 == 0 { &path_b } else { &path_a })
            .unwrap()
            .unwrap();
        // The previous index still answers for whoever holds it.
        assert!(old.contains_sha1(if i % 2 == 0 { &a[1] } else { &b[1] }));
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert!(lookups.load(Ordering::Relaxed) >= 20);

    // Current is `a` after an even number of swaps; a bad file leaves it in use.
    let garbage = dir.path().join("garbage.gbi");
    std::fs::write(&garbage, vec![0u8; 4096]).unwrap();
    assert!(swappable.reload_from(&garbage).is_err());
    assert!(a.iter().all(|h| swappable.contains_sha1(h)));
    let before = swappable.swap(BreachIndex::open(&path_b).unwrap()).unwrap();
    assert_eq!(before.path(), path_a);
    assert!(b.iter().all(|h| swappable.contains_sha1(h)));
    assert!(swappable.clear().is_some());
    assert!(!swappable.contains_sha1(&b[0]));
}
