//! Reading an index: a memory-mapped file, one `BinaryFuse8Ref` per shard borrowed from the map.

use crate::checksum::xxh64;
use crate::format::{
    self, Header, ShardEntry, ENTRY_LEN, EXACT_RECORD_LEN, FLAG_EXACT, HEADER_LEN, MAGIC, MAX_SHARD_BITS,
    VERSION,
};
use crate::{key_of, sha1_of_password, BreachError};
use memmap2::Mmap;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use xorf::{BinaryFuse8Ref, Filter, FilterRef};

/// How much of the file [`BreachIndex::open_with`] checks before answering lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verify {
    /// Header, shard table and every data checksum: reads the whole file once (about 0.1 s per
    /// 100 MB when it is in the page cache). The default.
    #[default]
    Full,
    /// Header, shard table and the layout only (offsets, lengths, descriptors): never reads the
    /// data sections, so opening costs the same for any size. A damaged data byte can then only
    /// change answers, never crash a lookup. [`BreachIndex::verify_data`] does the rest later.
    Structure,
}

#[derive(Debug, Clone)]
struct Shard {
    /// xorf's DMA descriptor bytes, parsed by `BinaryFuse8Ref::from_dma` at each lookup.
    descriptor: [u8; 20],
    key_count: u64,
    fingerprints: Range<usize>,
    exact: Range<usize>,
    fp_checksum: u64,
    exact_checksum: u64,
}

/// An immutable, memory-mapped Pwned Passwords index.
///
/// Lookups read three fingerprint bytes (plus, in exact mode, a binary search over the shard's
/// sorted SHA-1s when the filter says yes) straight from the mapping: the index is never copied
/// into the process's memory, the kernel pages it in and out as needed.
///
/// The file must not be modified or truncated in place while it is open (a write would change
/// answers, a truncation would fault the process): build a new file and open that instead (see
/// [`crate::SwappableIndex`]); replacing the path with `rename` is safe, the open index keeps the
/// old file.
#[derive(Debug)]
pub struct BreachIndex {
    path: PathBuf,
    map: Mmap,
    shard_bits: u32,
    shards: Box<[Shard]>,
    exact: bool,
    total_keys: u64,
    total_exact: u64,
    fingerprint_bytes: u64,
}

/// Maps `file` read-only.
#[allow(unsafe_code)]
fn map_read_only(file: &File) -> io::Result<Mmap> {
    // SAFETY: `Mmap::map` is unsafe because the mapped bytes change (or the process faults) if
    // the file is modified or truncated by anyone while mapped. The file is opened read-only here,
    // the index treats its content as immutable and never writes through the map, and every length
    // is validated against the mapping's own length before use. Importers always write a new file
    // and rename it into place (an atomic replace that leaves this mapping on the old inode);
    // modifying an index file in place while it is open is documented as unsupported.
    unsafe { Mmap::map(file) }
}

fn to_usize(v: u64, path: &Path, what: &str) -> Result<usize, BreachError> {
    usize::try_from(v).map_err(|_| BreachError::corrupt(path, format!("{what} {v} does not fit in memory")))
}

fn checked_range(
    path: &Path,
    offset: u64,
    len: u64,
    file_len: u64,
    what: &str,
) -> Result<Range<usize>, BreachError> {
    let end = offset
        .checked_add(len)
        .filter(|&end| end <= file_len)
        .ok_or_else(|| {
            BreachError::corrupt(
                path,
                format!("{what} at {offset}+{len} is outside the file ({file_len} bytes)"),
            )
        })?;
    Ok(to_usize(offset, path, what)?..to_usize(end, path, what)?)
}

impl BreachIndex {
    /// Opens and fully verifies an index file ([`Verify::Full`]).
    pub fn open(path: impl AsRef<Path>) -> Result<BreachIndex, BreachError> {
        Self::open_with(path, Verify::Full)
    }

    /// Opens an index file, checking as much as `verify` says. A file that is not an index, of
    /// another version, truncated or corrupt is refused with an error; nothing here panics.
    pub fn open_with(path: impl AsRef<Path>, verify: Verify) -> Result<BreachIndex, BreachError> {
        let path = path.as_ref().to_path_buf();
        let mut file = File::open(&path).map_err(|e| BreachError::io(&path, e))?;
        let meta = file.metadata().map_err(|e| BreachError::io(&path, e))?;
        if !meta.is_file() {
            return Err(BreachError::io(
                &path,
                io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        if meta.len() < HEADER_LEN as u64 {
            // Too short to map usefully: tell a cut-off index from something else.
            let mut head = Vec::new();
            file.read_to_end(&mut head)
                .map_err(|e| BreachError::io(&path, e))?;
            let n = head.len().min(MAGIC.len());
            return Err(if head.get(..n) == MAGIC.get(..n) && !head.is_empty() {
                BreachError::Truncated {
                    path,
                    expected: HEADER_LEN as u64,
                    actual: head.len() as u64,
                }
            } else {
                BreachError::NotAnIndex { path }
            });
        }
        let map = map_read_only(&file).map_err(|e| BreachError::io(&path, e))?;
        #[cfg(unix)]
        {
            // Lookups touch three random bytes per shard: read-ahead would only waste I/O.
            let _ = map.advise(memmap2::Advice::Random);
        }
        let index = Self::from_map(path, map)?;
        if verify == Verify::Full {
            index.verify_data()?;
        }
        Ok(index)
    }

    fn from_map(path: PathBuf, map: Mmap) -> Result<BreachIndex, BreachError> {
        let actual = map.len() as u64;
        let header_bytes: &[u8; HEADER_LEN] = map
            .get(..HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| BreachError::Truncated {
                path: path.clone(),
                expected: HEADER_LEN as u64,
                actual,
            })?;
        if header_bytes[..MAGIC.len()] != MAGIC {
            return Err(BreachError::NotAnIndex { path });
        }
        let header = Header::decode(header_bytes);
        if header.version != VERSION {
            return Err(BreachError::UnsupportedVersion {
                path,
                found: header.version,
                supported: VERSION,
            });
        }
        if actual < header.file_len {
            return Err(BreachError::Truncated {
                path,
                expected: header.file_len,
                actual,
            });
        }
        if actual > header.file_len {
            return Err(BreachError::corrupt(
                path,
                format!("{actual} bytes, but the header says {}", header.file_len),
            ));
        }
        if header.shard_bits > MAX_SHARD_BITS || header.entry_len as usize != ENTRY_LEN {
            return Err(BreachError::corrupt(
                path,
                format!(
                    "header fields out of range (shard_bits {}, entry length {}): checksum not trusted",
                    header.shard_bits, header.entry_len
                ),
            ));
        }
        let shard_count = 1usize << header.shard_bits;
        let table_end = HEADER_LEN + shard_count * ENTRY_LEN;
        let table = map
            .get(HEADER_LEN..table_end)
            .ok_or_else(|| BreachError::Truncated {
                path: path.clone(),
                expected: table_end as u64,
                actual,
            })?;
        let computed = format::meta_checksum(header_bytes, table);
        if computed != header.meta_checksum {
            return Err(BreachError::corrupt(
                path,
                format!(
                    "header checksum mismatch (stored {:016x}, computed {computed:016x})",
                    header.meta_checksum
                ),
            ));
        }
        if header.flags & !FLAG_EXACT != 0 {
            return Err(BreachError::corrupt(
                path,
                format!("unknown flags {:#x}", header.flags),
            ));
        }
        let exact = header.flags & FLAG_EXACT != 0;

        let mut shards = Vec::with_capacity(shard_count);
        let (mut keys, mut records, mut fingerprint_bytes) = (0u64, 0u64, 0u64);
        for (i, raw) in table.chunks_exact(ENTRY_LEN).enumerate() {
            let raw: &[u8; ENTRY_LEN] = raw
                .try_into()
                .map_err(|_| BreachError::corrupt(&path, "short shard table entry"))?;
            let e = ShardEntry::decode(raw);
            e.check_descriptor()
                .map_err(|why| BreachError::corrupt(&path, format!("shard {i}: {why}")))?;
            let fingerprints = checked_range(&path, e.fp_offset, e.fp_len, actual, "fingerprints")?;
            if !exact && e.exact_count != 0 {
                return Err(BreachError::corrupt(
                    &path,
                    format!("shard {i}: exact records without the exact flag"),
                ));
            }
            if exact && e.exact_count < e.key_count {
                return Err(BreachError::corrupt(
                    &path,
                    format!("shard {i}: fewer exact records than keys"),
                ));
            }
            let exact_len = e
                .exact_count
                .checked_mul(EXACT_RECORD_LEN as u64)
                .ok_or_else(|| BreachError::corrupt(&path, format!("shard {i}: exact count overflows")))?;
            let exact_range = checked_range(&path, e.exact_offset, exact_len, actual, "exact records")?;
            keys = keys.saturating_add(e.key_count);
            records = records.saturating_add(e.exact_count);
            fingerprint_bytes = fingerprint_bytes.saturating_add(e.fp_len);
            shards.push(Shard {
                descriptor: e.dma_descriptor(),
                key_count: e.key_count,
                fingerprints,
                exact: exact_range,
                fp_checksum: e.fp_checksum,
                exact_checksum: e.exact_checksum,
            });
        }
        if keys != header.total_keys || records != header.total_exact {
            return Err(BreachError::corrupt(
                &path,
                format!(
                    "shard counts ({keys} keys, {records} records) do not add up to the header's ({}, {})",
                    header.total_keys, header.total_exact
                ),
            ));
        }
        Ok(BreachIndex {
            path,
            map,
            shard_bits: header.shard_bits,
            shards: shards.into_boxed_slice(),
            exact,
            total_keys: header.total_keys,
            total_exact: header.total_exact,
            fingerprint_bytes,
        })
    }

    /// Checks every data section against its checksum (reads the whole file once).
    pub fn verify_data(&self) -> Result<(), BreachError> {
        for (i, s) in self.shards.iter().enumerate() {
            let fp = self.map.get(s.fingerprints.clone()).unwrap_or_default();
            if xxh64(fp, 0) != s.fp_checksum {
                return Err(BreachError::corrupt(
                    &self.path,
                    format!("shard {i}: fingerprint checksum mismatch"),
                ));
            }
            let ex = self.map.get(s.exact.clone()).unwrap_or_default();
            if xxh64(ex, 0) != s.exact_checksum {
                return Err(BreachError::corrupt(
                    &self.path,
                    format!("shard {i}: exact records checksum mismatch"),
                ));
            }
        }
        Ok(())
    }

    /// True if the SHA-1 is (probably, or in exact mode certainly) in the corpus. Never a false
    /// negative; without exact mode about 0.4 % of absent hashes also answer true.
    #[inline]
    pub fn contains_sha1(&self, sha1: &[u8; 20]) -> bool {
        let key = key_of(sha1);
        let Some(shard) = self.shards.get(shard_of(key, self.shard_bits)) else {
            return false;
        };
        if shard.key_count == 0 {
            return false;
        }
        let Some(fingerprints) = self.map.get(shard.fingerprints.clone()) else {
            return false;
        };
        if !BinaryFuse8Ref::from_dma(&shard.descriptor, fingerprints).contains(&key) {
            return false;
        }
        !self.exact || self.exact_contains(shard, sha1)
    }

    /// True if the SHA-1 of the password's UTF-8 bytes is in the index (see
    /// [`contains_sha1`](Self::contains_sha1)). The password itself is case-sensitive, as in
    /// Pwned Passwords; the hex case of the imported hashes does not matter.
    pub fn contains_password(&self, password: &str) -> bool {
        self.contains_sha1(&sha1_of_password(password))
    }

    fn exact_contains(&self, shard: &Shard, sha1: &[u8; 20]) -> bool {
        self.map
            .get(shard.exact.clone())
            .is_some_and(|records| search_records(records, sha1))
    }

    /// Number of distinct 64-bit keys (SHA-1 prefixes) in the index.
    pub fn len(&self) -> u64 {
        self.total_keys
    }

    /// True if the index holds no hash.
    pub fn is_empty(&self) -> bool {
        self.total_keys == 0
    }

    /// File bytes per stored hash: the whole file (header, fingerprints, padding and, in exact
    /// mode, the 20-byte records) divided by [`len`](Self::len).
    pub fn bytes_per_hash(&self) -> f64 {
        self.map.len() as f64 / self.total_keys.max(1) as f64
    }

    /// Fingerprint bytes only per stored hash (the filter's own size; 8x this is bits per hash).
    pub fn filter_bytes_per_hash(&self) -> f64 {
        self.fingerprint_bytes as f64 / self.total_keys.max(1) as f64
    }

    /// True if lookups confirm filter hits against the exact SHA-1 list (no false positives).
    pub fn is_exact(&self) -> bool {
        self.exact
    }

    /// Number of exact records (0 without exact mode).
    pub fn exact_len(&self) -> u64 {
        self.total_exact
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// File size in bytes.
    pub fn file_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// The file this index was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The shard of a key: its top `shard_bits` bits.
#[inline]
pub(crate) fn shard_of(key: u64, shard_bits: u32) -> usize {
    key.checked_shr(64 - shard_bits).unwrap_or(0) as usize
}

fn record(records: &[u8], i: usize) -> Option<&[u8]> {
    records.get(i * EXACT_RECORD_LEN..(i + 1) * EXACT_RECORD_LEN)
}

fn record_key(r: &[u8]) -> u64 {
    let mut k = [0u8; 8];
    for (d, s) in k.iter_mut().zip(r) {
        *d = *s;
    }
    u64::from_be_bytes(k)
}

/// Searches sorted 20-byte records for `sha1`: a binary search whose first few probes are placed
/// by interpolation on the 64-bit key (SHA-1s are uniform, so that lands within a few records in
/// ~log log n probes instead of log n); it falls back to plain halving after 8 probes, so
/// unusual data costs at most 8 extra probes. Out-of-range reads answer false.
pub(crate) fn search_records(records: &[u8], sha1: &[u8; 20]) -> bool {
    let target = key_of(sha1);
    let (mut lo, mut hi) = (0usize, records.len() / EXACT_RECORD_LEN);
    let mut interpolations = 0;
    while lo < hi {
        let mid = if interpolations < 8 && hi - lo > 8 {
            interpolations += 1;
            let (Some(first), Some(last)) = (record(records, lo), record(records, hi - 1)) else {
                return false;
            };
            let (k_lo, k_hi) = (record_key(first), record_key(last));
            if target < k_lo || target > k_hi {
                return false;
            }
            if k_hi == k_lo {
                lo + (hi - lo) / 2
            } else {
                let span = (hi - 1 - lo) as u128;
                lo + (u128::from(target - k_lo) * span / u128::from(k_hi - k_lo)) as usize
            }
        } else {
            lo + (hi - lo) / 2
        };
        let Some(r) = record(records, mid) else {
            return false;
        };
        match r.cmp(&sha1[..]) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn flat(mut v: Vec<[u8; 20]>) -> (Vec<[u8; 20]>, Vec<u8>) {
        v.sort_unstable();
        v.dedup();
        let bytes = v.as_flattened().to_vec();
        (v, bytes)
    }

    proptest! {
        // Records drawn from a tiny alphabet so that many share their 64-bit key, plus random ones.
        #[test]
        fn search_matches_a_linear_scan(
            small in proptest::collection::vec(proptest::array::uniform20(0u8..3), 0..200),
            random in proptest::collection::vec(any::<[u8; 20]>(), 0..200),
            probes in proptest::collection::vec(proptest::array::uniform20(0u8..3), 0..50),
            more in proptest::collection::vec(any::<[u8; 20]>(), 0..50),
        ) {
            let mut all = small;
            all.extend(random);
            let (sorted, bytes) = flat(all);
            for p in probes.iter().chain(&more).chain(&sorted) {
                prop_assert_eq!(search_records(&bytes, p), sorted.contains(p));
            }
            // A torn tail is ignored, never read past.
            let torn = &bytes[..bytes.len().saturating_sub(7)];
            for p in &sorted {
                let _ = search_records(torn, p);
            }
        }
    }
}
