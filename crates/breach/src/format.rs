//! The on-disk index format (version 1). All integers are little-endian.
//!
//! ```text
//! offset  size  header (HEADER_LEN = 64 bytes)
//!      0     8  magic  b"GHBREACH"
//!      8     4  version (1)
//!     12     4  flags: bit 0 = exact section present (FLAG_EXACT); other bits must be 0
//!     16     4  shard_bits b: 2^b shards, shard of a key = key >> (64 - b) (0 when b = 0), b <= 16
//!     20     4  shard table entry length (ENTRY_LEN = 80)
//!     24     8  total keys (sum of the shards' key counts)
//!     32     8  total exact records (sum of the shards' exact counts; 0 without FLAG_EXACT)
//!     40     8  file length in bytes (a shorter file is "truncated")
//!     48     8  reserved, 0
//!     56     8  meta checksum: XXH64 (seed 0) of the header with this field zeroed,
//!               followed by the whole shard table
//!
//! shard table: 2^b entries of ENTRY_LEN = 80 bytes, right after the header
//!      0     8  fingerprints offset
//!      8     8  fingerprints length (bytes; one byte per fingerprint)
//!     16     8  key count (distinct 64-bit keys in this shard; 0 = empty shard, no fingerprints)
//!     24     8  xorf Descriptor.seed
//!     32     4  xorf Descriptor.segment_length        (a power of two)
//!     36     4  xorf Descriptor.segment_length_mask   (segment_length - 1)
//!     40     4  xorf Descriptor.segment_count_length  (a multiple of segment_length)
//!     44     4  reserved, 0
//!     48     8  exact records offset
//!     56     8  exact record count (20-byte SHA-1s, sorted ascending, distinct)
//!     64     8  XXH64 of the fingerprints
//!     72     8  XXH64 of the exact records
//!
//! data: each shard's fingerprints, then its exact records, each section starting at a multiple
//! of 64 bytes, in shard order.
//! ```
//!
//! Keys: the first 8 bytes of the SHA-1, big-endian. A shard's fingerprints are exactly a
//! `xorf::BinaryFuse8` built from that shard's keys; `fingerprints length` must equal
//! `segment_count_length + 2 * segment_length`, which is how xorf lays a filter out and what
//! bounds every index a lookup computes, so a validated descriptor can never index outside the
//! fingerprints.

use crate::checksum::xxh64;

/// File magic.
pub const MAGIC: [u8; 8] = *b"GHBREACH";
/// The format version this build reads and writes.
pub const VERSION: u32 = 1;
/// Flag: the file carries the sorted 20-byte SHA-1s for exact confirmation.
pub const FLAG_EXACT: u32 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 64;
/// Shard table entry length in bytes.
pub const ENTRY_LEN: usize = 80;
/// Largest accepted `shard_bits`.
pub const MAX_SHARD_BITS: u32 = 16;
/// Data sections start at a multiple of this.
pub const SECTION_ALIGN: u64 = 64;
/// Length of one exact record (a SHA-1).
pub const EXACT_RECORD_LEN: usize = 20;
/// Byte range of the meta checksum inside the header.
pub const META_CHECKSUM_AT: usize = 56;

/// The fixed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u32,
    /// Flags (`FLAG_EXACT`).
    pub flags: u32,
    /// log2 of the number of shards.
    pub shard_bits: u32,
    /// Shard table entry length.
    pub entry_len: u32,
    /// Distinct keys over all shards.
    pub total_keys: u64,
    /// Exact records over all shards.
    pub total_exact: u64,
    /// Expected file length.
    pub file_len: u64,
    /// Meta checksum.
    pub meta_checksum: u64,
}

/// One shard table entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardEntry {
    /// Offset of the fingerprints.
    pub fp_offset: u64,
    /// Length of the fingerprints in bytes.
    pub fp_len: u64,
    /// Distinct keys in the shard.
    pub key_count: u64,
    /// `Descriptor.seed`.
    pub seed: u64,
    /// `Descriptor.segment_length`.
    pub segment_length: u32,
    /// `Descriptor.segment_length_mask`.
    pub segment_length_mask: u32,
    /// `Descriptor.segment_count_length`.
    pub segment_count_length: u32,
    /// Offset of the exact records.
    pub exact_offset: u64,
    /// Number of exact records.
    pub exact_count: u64,
    /// XXH64 of the fingerprints.
    pub fp_checksum: u64,
    /// XXH64 of the exact records.
    pub exact_checksum: u64,
}

fn put_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut [u8], at: usize, v: u64) {
    out[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

// Readers take fixed-size arrays so that no slice length can be wrong at run time.
fn get_u32<const N: usize>(b: &[u8; N], at: usize) -> u32 {
    let mut w = [0u8; 4];
    for (i, x) in w.iter_mut().enumerate() {
        *x = b.get(at + i).copied().unwrap_or(0);
    }
    u32::from_le_bytes(w)
}

fn get_u64<const N: usize>(b: &[u8; N], at: usize) -> u64 {
    let mut w = [0u8; 8];
    for (i, x) in w.iter_mut().enumerate() {
        *x = b.get(at + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(w)
}

impl Header {
    /// Serializes the header (the meta checksum as stored in `self`).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&MAGIC);
        put_u32(&mut out, 8, self.version);
        put_u32(&mut out, 12, self.flags);
        put_u32(&mut out, 16, self.shard_bits);
        put_u32(&mut out, 20, self.entry_len);
        put_u64(&mut out, 24, self.total_keys);
        put_u64(&mut out, 32, self.total_exact);
        put_u64(&mut out, 40, self.file_len);
        put_u64(&mut out, 48, 0);
        put_u64(&mut out, META_CHECKSUM_AT, self.meta_checksum);
        out
    }

    /// Parses a header; the magic is checked by the caller.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            version: get_u32(b, 8),
            flags: get_u32(b, 12),
            shard_bits: get_u32(b, 16),
            entry_len: get_u32(b, 20),
            total_keys: get_u64(b, 24),
            total_exact: get_u64(b, 32),
            file_len: get_u64(b, 40),
            meta_checksum: get_u64(b, META_CHECKSUM_AT),
        }
    }
}

impl ShardEntry {
    /// Serializes the entry.
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut out = [0u8; ENTRY_LEN];
        put_u64(&mut out, 0, self.fp_offset);
        put_u64(&mut out, 8, self.fp_len);
        put_u64(&mut out, 16, self.key_count);
        put_u64(&mut out, 24, self.seed);
        put_u32(&mut out, 32, self.segment_length);
        put_u32(&mut out, 36, self.segment_length_mask);
        put_u32(&mut out, 40, self.segment_count_length);
        put_u32(&mut out, 44, 0);
        put_u64(&mut out, 48, self.exact_offset);
        put_u64(&mut out, 56, self.exact_count);
        put_u64(&mut out, 64, self.fp_checksum);
        put_u64(&mut out, 72, self.exact_checksum);
        out
    }

    /// Parses an entry.
    pub fn decode(b: &[u8; ENTRY_LEN]) -> ShardEntry {
        ShardEntry {
            fp_offset: get_u64(b, 0),
            fp_len: get_u64(b, 8),
            key_count: get_u64(b, 16),
            seed: get_u64(b, 24),
            segment_length: get_u32(b, 32),
            segment_length_mask: get_u32(b, 36),
            segment_count_length: get_u32(b, 40),
            exact_offset: get_u64(b, 48),
            exact_count: get_u64(b, 56),
            fp_checksum: get_u64(b, 64),
            exact_checksum: get_u64(b, 72),
        }
    }

    /// The 20-byte descriptor in xorf's DMA layout (`FilterRef::from_dma`): seed u64,
    /// segment_length u32, segment_length_mask u32, segment_count_length u32, little-endian.
    pub fn dma_descriptor(&self) -> [u8; 20] {
        let mut d = [0u8; 20];
        d[0..8].copy_from_slice(&self.seed.to_le_bytes());
        d[8..12].copy_from_slice(&self.segment_length.to_le_bytes());
        d[12..16].copy_from_slice(&self.segment_length_mask.to_le_bytes());
        d[16..20].copy_from_slice(&self.segment_count_length.to_le_bytes());
        d
    }

    /// Checks that the descriptor and the fingerprint length are consistent, so that every index
    /// xorf's lookup computes (`h0 < segment_count_length`, `h1`, `h2 < segment_count_length +
    /// 2 * segment_length`) is inside the fingerprints and no `u32` addition in it overflows.
    pub fn check_descriptor(&self) -> Result<(), String> {
        if self.key_count == 0 {
            return if self.fp_len == 0 {
                Ok(())
            } else {
                Err("empty shard with fingerprints".into())
            };
        }
        let l = self.segment_length;
        if l == 0 || !l.is_power_of_two() {
            return Err(format!("segment_length {l} is not a power of two"));
        }
        if self.segment_length_mask != l - 1 {
            return Err(format!(
                "segment_length_mask {} does not match segment_length {l}",
                self.segment_length_mask
            ));
        }
        let scl = self.segment_count_length;
        if scl == 0 || scl & (l - 1) != 0 {
            return Err(format!(
                "segment_count_length {scl} is not a positive multiple of {l}"
            ));
        }
        let expected = u64::from(scl) + 2 * u64::from(l);
        if expected > u64::from(u32::MAX) {
            return Err(format!("filter of {expected} fingerprints is too large"));
        }
        if self.fp_len != expected {
            return Err(format!(
                "fingerprint length {} does not match the descriptor ({expected})",
                self.fp_len
            ));
        }
        Ok(())
    }
}

/// XXH64 of the header (meta checksum field zeroed) followed by the shard table.
pub fn meta_checksum(header: &[u8; HEADER_LEN], table: &[u8]) -> u64 {
    let mut buf = Vec::with_capacity(HEADER_LEN + table.len());
    buf.extend_from_slice(header);
    buf[META_CHECKSUM_AT..META_CHECKSUM_AT + 8].fill(0);
    buf.extend_from_slice(table);
    xxh64(&buf, 0)
}

/// Rounds `x` up to a multiple of `SECTION_ALIGN`.
pub fn align_up(x: u64) -> u64 {
    x.div_ceil(SECTION_ALIGN) * SECTION_ALIGN
}
