//! Building and querying a breach index at Pwned-Passwords-like scale, with a same-run baseline.
//!
//! `cargo bench -p gatehouse-breach --bench breach_index`
//!
//! - A synthetic corpus of `GATEHOUSE_BENCH_HASHES` (default 10⁸) random 20-byte SHA-1-like
//!   values from a seeded SplitMix64, pushed straight into `IndexBuilder` (the machinery the
//!   importer feeds), so no multi-gigabyte text file is written: build time, peak RSS of the
//!   build (VmHWM, reset before the phase through /proc/self/clear_refs), bytes and bits per hash.
//! - Lookups on the memory-mapped index: false negatives over every member, false-positive rate
//!   over 10⁷ non-members, latency p50/p99/p99.9/max over 10⁶ members and 10⁶ non-members, each
//!   call timed on its own with `Instant` (the timer's own cost is printed and included), plus the
//!   mean per lookup over batches of 1,000 (no timer in the loop).
//! - Baseline in the same run: an in-memory `HashSet<u64>` of 10⁷ keys (and a sorted `Vec<u64>`
//!   searched by binary search) looked up the same way, printed as index/baseline.
//! - Exact mode on min(N, 10⁷) hashes: size, false positives, latency.
//! - The text path: `GATEHOUSE_BENCH_PARSE_LINES` (default min(N, 10⁷)) `SHA1HEX:COUNT\r\n` lines
//!   imported with `import_with`: parse throughput and build.
//!
//! Scratch files go in a temporary directory under `GATEHOUSE_BENCH_DIR` (default /var/tmp),
//! removed at the end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use gatehouse_breach::{
    import_with, key_of, BreachIndex, BuildOptions, ImportOptions, IndexBuilder, Verify, INDEX_FILE_NAME,
};
use std::collections::HashSet;
use std::error::Error;
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MEMBER_SEED: u64 = 0x5EED_0001;
const NON_MEMBER_SEED: u64 = 0x5EED_0002;
const PASSWORD_SEED: u64 = 0x5EED_0003;
const LOOKUPS: usize = 1_000_000;
const FPR_PROBES: usize = 10_000_000;
const BASELINE_KEYS: usize = 10_000_000;
const EXACT_MAX: u64 = 10_000_000;
const BATCH: usize = 1_000;

struct SplitMix64(u64);

impl SplitMix64 {
    #[inline]
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[inline]
    fn sha1(&mut self) -> [u8; 20] {
        let mut s = [0u8; 20];
        s[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        s[8..16].copy_from_slice(&self.next_u64().to_le_bytes());
        s[16..].copy_from_slice(&self.next_u64().to_le_bytes()[..4]);
        s
    }
}

fn env_count(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse::<u64>()
            .ok()
            .or_else(|| v.trim().parse::<f64>().ok().map(|f| f as u64))
            .unwrap_or_else(|| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

/// A field of /proc/self/status in kB.
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux: writing 5 to /proc/self/clear_refs).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

struct Latency {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    batch_mean_ns: f64,
    hits: usize,
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:>4} ns  p99 {:>5} ns  p99.9 {:>6} ns  max {:>8} ns  | batched mean {:>6.1} ns/lookup",
            self.p50, self.p99, self.p999, self.max, self.batch_mean_ns
        )
    }
}

/// Times `lookup` on every input one call at a time, then in batches without a timer inside.
fn measure<T>(inputs: &[T], mut lookup: impl FnMut(&T) -> bool) -> Latency {
    // Warm-up pass (page faults, caches), not timed.
    let mut hits = 0;
    for x in inputs {
        hits += usize::from(black_box(lookup(black_box(x))));
    }
    let mut ns: Vec<u64> = Vec::with_capacity(inputs.len());
    for x in inputs {
        let t = Instant::now();
        let r = black_box(lookup(black_box(x)));
        ns.push(t.elapsed().as_nanos() as u64);
        black_box(r);
    }
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)];
    let t = Instant::now();
    for chunk in inputs.chunks(BATCH) {
        for x in chunk {
            black_box(lookup(black_box(x)));
        }
    }
    let batch_mean_ns = t.elapsed().as_nanos() as f64 / inputs.len() as f64;
    Latency {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: ns.last().copied().unwrap_or(0),
        batch_mean_ns,
        hits,
    }
}

fn timer_overhead() -> u64 {
    let mut ns: Vec<u64> = (0..LOOKUPS)
        .map(|_| {
            let t = Instant::now();
            black_box(());
            t.elapsed().as_nanos() as u64
        })
        .collect();
    ns.sort_unstable();
    ns[ns.len() / 2]
}

fn hashes(seed: u64, n: usize) -> Vec<[u8; 20]> {
    let mut rng = SplitMix64(seed);
    (0..n).map(|_| rng.sha1()).collect()
}

fn build(dir: &Path, name: &str, n: u64, exact: bool) -> Result<(PathBuf, u64, u64), Box<dyn Error>> {
    let rss_before = status_kb("VmRSS");
    let peak_reset = reset_peak_rss();
    let started = Instant::now();
    let mut builder = IndexBuilder::new(
        dir,
        &BuildOptions {
            exact,
            shard_bits: None,
        },
    )?;
    let mut rng = SplitMix64(MEMBER_SEED);
    for _ in 0..n {
        builder.push_sha1(&rng.sha1())?;
    }
    let path = dir.join(name);
    let r = builder.finish(&path)?;
    let total = started.elapsed();
    let hwm = status_kb("VmHWM");
    println!(
        "build{}: {} hashes -> {} keys, {} shards (largest {} keys), spill {:.1} GB",
        if exact { " (exact)" } else { "" },
        r.hashes_pushed,
        r.keys,
        1u64 << r.shard_bits,
        r.largest_shard,
        r.spill_bytes as f64 / 1e9
    );
    println!(
        "  time: generate+spill {:.1} s, shard build {:.1} s, total {:.1} s ({:.2} M hashes/s)",
        secs(r.spill_time),
        secs(r.build_time),
        secs(total),
        r.hashes_pushed as f64 / secs(total) / 1e6
    );
    println!(
        "  peak RSS during build (VmHWM{}): {:.0} MB (RSS before: {:.0} MB)",
        if peak_reset {
            ", reset before the phase"
        } else {
            ", process lifetime"
        },
        mb(hwm),
        mb(rss_before)
    );
    println!(
        "  size: {} bytes = {:.4} bytes/hash = {:.3} bits/hash (filters alone: {:.3} bits/hash)",
        r.file_bytes,
        r.file_bytes as f64 / r.keys as f64,
        r.bits_per_hash(),
        r.fingerprint_bytes as f64 * 8.0 / r.keys as f64
    );
    Ok((path, hwm.saturating_sub(rss_before), r.largest_shard))
}

fn main() -> Result<(), Box<dyn Error>> {
    let n = env_count("GATEHOUSE_BENCH_HASHES", 100_000_000);
    let parse_lines = env_count("GATEHOUSE_BENCH_PARSE_LINES", n.min(10_000_000));
    let base = std::env::var_os("GATEHOUSE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let scratch = tempfile::Builder::new()
        .prefix("gatehouse-breach-bench-")
        .tempdir_in(&base)?;
    let dir = scratch.path();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.to_string())
        })
        .and_then(|l| l.split(':').nth(1).map(|s| s.trim().to_string()))
        .unwrap_or_default();
    println!(
        "breach_index: N = {n}, {} CPUs ({cpu}), scratch {}",
        std::thread::available_parallelism().map(|p| p.get()).unwrap_or(1),
        dir.display()
    );

    // ---- build ----
    let (path, build_extra_kb, largest) = build(dir, "bench.gbi", n, false)?;
    // Extrapolation to the full corpus: the build holds one shard at a time, so its memory grows
    // with the largest shard (256 shards of ~7.8M keys for 2·10⁹ hashes).
    let per_key = build_extra_kb as f64 * 1024.0 / largest.max(1) as f64;
    let full_shard = 2_000_000_000u64 >> 8;
    println!(
        "  build memory above the starting RSS: {:.1} bytes per key of the largest shard; for 2e9 hashes \
         (256 shards of {full_shard}): ~{:.0} MB",
        per_key,
        per_key * full_shard as f64 / 1048576.0
    );

    // ---- open ----
    let t = Instant::now();
    let structure_only = BreachIndex::open_with(&path, Verify::Structure)?;
    let open_structure = t.elapsed();
    drop(structure_only);
    let t = Instant::now();
    let index = BreachIndex::open(&path)?;
    let open_full = t.elapsed();
    let bits_per_hash = index.bytes_per_hash() * 8.0;
    println!(
        "open: structure only {:.3} ms, full checksum verification {:.1} ms; len() = {}, bytes_per_hash() = {:.4}",
        open_structure.as_secs_f64() * 1e3,
        open_full.as_secs_f64() * 1e3,
        index.len(),
        index.bytes_per_hash()
    );

    // ---- false negatives over every member ----
    let t = Instant::now();
    let mut rng = SplitMix64(MEMBER_SEED);
    let mut false_negatives = 0u64;
    for _ in 0..n {
        false_negatives += u64::from(!index.contains_sha1(&rng.sha1()));
    }
    println!(
        "false negatives: {false_negatives} of {n} members ({:.1} s)",
        secs(t.elapsed())
    );

    // ---- false-positive rate ----
    let mut rng = SplitMix64(NON_MEMBER_SEED);
    let mut fp = 0u64;
    for _ in 0..FPR_PROBES {
        fp += u64::from(index.contains_sha1(&rng.sha1()));
    }
    let fpr = fp as f64 / FPR_PROBES as f64;
    println!(
        "false positives: {fp} of {FPR_PROBES} non-members = {:.4} %",
        fpr * 100.0
    );

    // ---- latency ----
    let members = hashes(MEMBER_SEED, LOOKUPS.min(n as usize));
    let others = hashes(NON_MEMBER_SEED ^ 0xFFFF, LOOKUPS);
    let overhead = timer_overhead();
    println!(
        "lookup latency, {} calls each, one Instant pair per call (timer alone: p50 {overhead} ns, included):",
        LOOKUPS
    );
    println!(
        "  resident memory now: anon {:.0} MB, file-backed {:.0} MB (index file {:.0} MB, mapped not loaded)",
        mb(status_kb("RssAnon")),
        mb(status_kb("RssFile")),
        index.file_len() as f64 / 1048576.0
    );
    let idx_members = measure(&members, |h| index.contains_sha1(h));
    let idx_others = measure(&others, |h| index.contains_sha1(h));
    println!("  index    members:     {idx_members}");
    println!("  index    non-members: {idx_others}");
    assert_eq!(idx_members.hits, members.len());
    let passwords: Vec<String> = {
        let mut rng = SplitMix64(PASSWORD_SEED);
        (0..LOOKUPS)
            .map(|_| format!("pw-{:016x}", rng.next_u64()))
            .collect()
    };
    let idx_pw = measure(&passwords, |p| index.contains_password(p));
    println!("  index    contains_password (SHA-1 + lookup): {idx_pw}");

    // ---- baseline ----
    let baseline_keys = BASELINE_KEYS.min(n as usize);
    let t = Instant::now();
    let mut set: HashSet<u64> = HashSet::with_capacity(baseline_keys);
    let mut sorted: Vec<u64> = Vec::with_capacity(baseline_keys);
    let mut rng = SplitMix64(MEMBER_SEED);
    for _ in 0..baseline_keys {
        let k = key_of(&rng.sha1());
        set.insert(k);
        sorted.push(k);
    }
    sorted.sort_unstable();
    println!(
        "baseline: HashSet<u64> and sorted Vec<u64> of {baseline_keys} keys in memory ({:.1} s to fill)",
        secs(t.elapsed())
    );
    let hs_members = measure(&members, |h| set.contains(&key_of(h)));
    let hs_others = measure(&others, |h| set.contains(&key_of(h)));
    let bs_members = measure(&members, |h| sorted.binary_search(&key_of(h)).is_ok());
    let bs_others = measure(&others, |h| sorted.binary_search(&key_of(h)).is_ok());
    println!("  HashSet  members:     {hs_members}");
    println!("  HashSet  non-members: {hs_others}");
    println!("  sorted   members:     {bs_members}");
    println!("  sorted   non-members: {bs_others}");
    let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    println!(
        "  index/baseline (HashSet): members p50 {:.2}, p99 {:.2}, batched {:.2}; non-members p50 {:.2}, p99 {:.2}, batched {:.2}",
        ratio(idx_members.p50, hs_members.p50),
        ratio(idx_members.p99, hs_members.p99),
        idx_members.batch_mean_ns / hs_members.batch_mean_ns,
        ratio(idx_others.p50, hs_others.p50),
        ratio(idx_others.p99, hs_others.p99),
        idx_others.batch_mean_ns / hs_others.batch_mean_ns
    );
    println!(
        "  index/baseline (sorted Vec): members p50 {:.2}, p99 {:.2}; non-members p50 {:.2}, p99 {:.2}",
        ratio(idx_members.p50, bs_members.p50),
        ratio(idx_members.p99, bs_members.p99),
        ratio(idx_others.p50, bs_others.p50),
        ratio(idx_others.p99, bs_others.p99)
    );
    drop((set, sorted, passwords));
    drop(index);
    std::fs::remove_file(&path)?;

    // ---- exact mode ----
    let exact_n = n.min(EXACT_MAX);
    let (exact_path, _, _) = build(dir, "exact.gbi", exact_n, true)?;
    let exact = BreachIndex::open(&exact_path)?;
    let mut rng = SplitMix64(NON_MEMBER_SEED);
    let exact_fp = (0..FPR_PROBES)
        .filter(|_| exact.contains_sha1(&rng.sha1()))
        .count();
    let mut rng = SplitMix64(MEMBER_SEED);
    let exact_fn = (0..exact_n).filter(|_| !exact.contains_sha1(&rng.sha1())).count();
    println!(
        "  exact: false positives {exact_fp} of {FPR_PROBES} non-members, false negatives {exact_fn} of {exact_n} members"
    );
    let ex_members = measure(&members, |h| exact.contains_sha1(h));
    let ex_others = measure(&others, |h| exact.contains_sha1(h));
    println!("  exact    members:     {ex_members}");
    println!("  exact    non-members: {ex_others}");
    drop(exact);
    std::fs::remove_file(&exact_path)?;
    drop(members);
    drop(others);

    // ---- text parsing path ----
    let text = dir.join("pwned-sha1.txt");
    let t = Instant::now();
    {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&text)?);
        let mut rng = SplitMix64(MEMBER_SEED ^ 0xABCD);
        let mut line = Vec::with_capacity(64);
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        for i in 0..parse_lines {
            line.clear();
            for b in rng.sha1() {
                line.push(HEX[usize::from(b >> 4)]);
                line.push(HEX[usize::from(b & 15)]);
            }
            write!(line, ":{}\r\n", 1 + (i * 7919) % 100_000)?;
            out.write_all(&line)?;
        }
        out.flush()?;
    }
    let text_bytes = std::fs::metadata(&text)?.len();
    println!(
        "text import: wrote {parse_lines} SHA1HEX:COUNT CRLF lines ({:.0} MB) in {:.1} s",
        text_bytes as f64 / 1e6,
        secs(t.elapsed())
    );
    let peak_reset = reset_peak_rss();
    let out_dir = dir.join("imported");
    let report = import_with(&text, &out_dir, &ImportOptions::default())?;
    let hwm = status_kb("VmHWM");
    println!(
        "  parse+spill {:.2} s = {:.1} M lines/s, {:.0} MB/s; shard build {:.2} s; {} shard(s); peak RSS {:.0} MB{}",
        secs(report.parse_time),
        report.lines as f64 / secs(report.parse_time) / 1e6,
        report.bytes_read as f64 / secs(report.parse_time) / 1e6,
        secs(report.build.build_time),
        1u64 << report.build.shard_bits,
        mb(hwm),
        if peak_reset { "" } else { " (process lifetime)" }
    );
    let imported = BreachIndex::open(out_dir.join(INDEX_FILE_NAME))?;
    let mut rng = SplitMix64(MEMBER_SEED ^ 0xABCD);
    let imported_fn = (0..parse_lines)
        .filter(|_| !imported.contains_sha1(&rng.sha1()))
        .count();
    println!(
        "  imported index: {} keys, {:.3} bits/hash, false negatives {imported_fn} of {parse_lines}, bad lines {}",
        imported.len(),
        imported.bytes_per_hash() * 8.0,
        report.bad_lines
    );
    drop(imported);

    let verdict = false_negatives == 0
        && exact_fn == 0
        && imported_fn == 0
        && exact_fp == 0
        && fpr <= 0.004
        && bits_per_hash <= 9.1
        && idx_members.p99 <= 5_000
        && idx_others.p99 <= 5_000;
    println!(
        "targets (FN = 0, FPR <= 0.4 %, exact FP = 0, p99 <= 5 us, {bits_per_hash:.3} bits/hash <= 9.1): {}",
        if verdict { "met" } else { "NOT MET" }
    );
    scratch.close()?;
    if !verdict {
        std::process::exit(1);
    }
    Ok(())
}
