#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

/// SplitMix64: a tiny seeded generator, so every run sees the same corpus.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn sha1(&mut self) -> [u8; 20] {
        let mut s = [0u8; 20];
        s[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        s[8..16].copy_from_slice(&self.next_u64().to_le_bytes());
        s[16..].copy_from_slice(&self.next_u64().to_le_bytes()[..4]);
        s
    }
}

pub fn hex_upper(sha1: &[u8; 20]) -> String {
    let mut s = String::with_capacity(40);
    for b in sha1 {
        write!(s, "{b:02X}").unwrap();
    }
    s
}

pub fn corpus(seed: u64, n: usize) -> Vec<[u8; 20]> {
    let mut rng = Rng(seed);
    (0..n).map(|_| rng.sha1()).collect()
}

/// Non-members: a different seed (a collision with 200,000 random 160-bit values is impossible
/// in practice).
pub fn non_members(n: usize) -> impl Iterator<Item = [u8; 20]> {
    let mut rng = Rng(0xDEAD_BEEF_0BAD_F00D);
    (0..n).map(move |_| rng.sha1())
}

/// Writes `hashes` as one HIBP file, CRLF, upper-case, with a count, plus extra lines inserted
/// after the given hash indexes. Returns the 1-based line numbers of those extra lines.
pub fn write_single_file(path: &Path, hashes: &[[u8; 20]], extra: &[(usize, &str)]) -> Vec<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut line = 0u64;
    let mut extra_lines = Vec::new();
    for (i, h) in hashes.iter().enumerate() {
        line += 1;
        write!(out, "{}:{}\r\n", hex_upper(h), i % 1000 + 1).unwrap();
        for (_, text) in extra.iter().filter(|(at, _)| *at == i) {
            line += 1;
            extra_lines.push(line);
            write!(out, "{text}\r\n").unwrap();
        }
    }
    out.flush().unwrap();
    extra_lines
}
