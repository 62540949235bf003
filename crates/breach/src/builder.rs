//! Building an index with bounded memory: hashes are spilled to per-bucket files on disk
//! (bucketed by the first byte of the SHA-1), then each shard is loaded, sorted, de-duplicated,
//! turned into a `BinaryFuse8` and appended to the output, one shard at a time.

use crate::checksum::xxh64;
use crate::format::{self, Header, ShardEntry, ENTRY_LEN, EXACT_RECORD_LEN, FLAG_EXACT, HEADER_LEN, VERSION};
use crate::{key_of, BreachError};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xorf::BinaryFuse8;

/// Spill buckets: the first byte of the SHA-1 (the top 8 bits of the key).
pub const SPILL_BITS: u32 = 8;
const SPILL_BUCKETS: usize = 1 << SPILL_BITS;
/// With automatic sharding, the smallest shard count (a power of two, at most 2^SPILL_BITS) whose
/// average shard holds at most this many hashes. Building a shard takes about 33 bytes of RAM per
/// hash (the sorted keys plus xorf's construction arrays; 53 in exact mode), so 2^23 keeps a
/// build near 300 MB, and the full ~2·10⁹-hash corpus (256 shards of ~7.8·10⁶) well under 4 GB.
/// Shards of at least ~10⁶ hashes are what give BinaryFuse8 its ~9.0 bits per hash.
pub const TARGET_KEYS_PER_SHARD: u64 = 1 << 23;
const SPILL_BUFFER: usize = 64 * 1024;
const READ_CHUNK: usize = 1 << 20;

/// How to build an index.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Also store the sorted 20-byte SHA-1s, so filter hits are confirmed exactly (no false
    /// positives) at 20 more bytes per hash.
    pub exact: bool,
    /// log2 of the shard count, 0..=8; `None` chooses from the number of hashes
    /// (see [`TARGET_KEYS_PER_SHARD`]).
    pub shard_bits: Option<u32>,
}

/// What [`IndexBuilder::finish`] built.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The index file.
    pub path: PathBuf,
    /// Hashes pushed (with duplicates).
    pub hashes_pushed: u64,
    /// Distinct 64-bit keys in the index (`BreachIndex::len`).
    pub keys: u64,
    /// Distinct SHA-1s stored for exact confirmation (0 without exact mode).
    pub exact_records: u64,
    /// log2 of the shard count.
    pub shard_bits: u32,
    /// Keys in the largest shard.
    pub largest_shard: u64,
    /// Index file size.
    pub file_bytes: u64,
    /// Fingerprint bytes (the filters alone).
    pub fingerprint_bytes: u64,
    /// Bytes spilled to the temporary bucket files.
    pub spill_bytes: u64,
    /// Time from [`IndexBuilder::new`] to [`IndexBuilder::finish`] (reading and spilling).
    pub spill_time: Duration,
    /// Time inside [`IndexBuilder::finish`] (loading, sorting, building and writing the shards).
    pub build_time: Duration,
}

impl BuildReport {
    /// Index file bits per distinct key.
    pub fn bits_per_hash(&self) -> f64 {
        self.file_bytes as f64 * 8.0 / self.keys.max(1) as f64
    }
}

/// Streams SHA-1s into per-bucket spill files, then builds the sharded index file.
///
/// Memory while pushing: 256 write buffers (16 MB). Memory in [`finish`](Self::finish): one shard
/// at a time. Disk: 8 bytes per pushed hash (20 in exact mode) in a temporary directory, removed
/// as the shards are built (and on drop).
#[derive(Debug)]
pub struct IndexBuilder {
    spill: tempfile::TempDir,
    writers: Vec<BufWriter<File>>,
    counts: Vec<u64>,
    exact: bool,
    shard_bits: Option<u32>,
    pushed: u64,
    started: Instant,
}

fn bucket_path(dir: &Path, bucket: usize) -> PathBuf {
    dir.join(format!("{bucket:02x}.spill"))
}

impl IndexBuilder {
    /// Starts a build whose temporary spill files go in a new directory under `spill_parent`
    /// (needs 8 bytes per hash free, 20 in exact mode).
    pub fn new(spill_parent: &Path, options: &BuildOptions) -> Result<IndexBuilder, BreachError> {
        if let Some(bits) = options.shard_bits {
            if bits > SPILL_BITS {
                return Err(BreachError::Build {
                    shard: 0,
                    reason: format!("shard_bits {bits} is above the maximum {SPILL_BITS}"),
                });
            }
        }
        fs::create_dir_all(spill_parent).map_err(|e| BreachError::io(spill_parent, e))?;
        let spill = tempfile::Builder::new()
            .prefix(".gatehouse-breach-spill-")
            .tempdir_in(spill_parent)
            .map_err(|e| BreachError::io(spill_parent, e))?;
        let mut writers = Vec::with_capacity(SPILL_BUCKETS);
        for b in 0..SPILL_BUCKETS {
            let p = bucket_path(spill.path(), b);
            let f = File::create(&p).map_err(|e| BreachError::io(&p, e))?;
            writers.push(BufWriter::with_capacity(SPILL_BUFFER, f));
        }
        Ok(IndexBuilder {
            spill,
            writers,
            counts: vec![0; SPILL_BUCKETS],
            exact: options.exact,
            shard_bits: options.shard_bits,
            pushed: 0,
            started: Instant::now(),
        })
    }

    /// Adds one SHA-1 (duplicates are fine: they are removed per shard).
    #[inline]
    pub fn push_sha1(&mut self, sha1: &[u8; 20]) -> Result<(), BreachError> {
        let bucket = usize::from(sha1[0]);
        let (Some(w), Some(c)) = (self.writers.get_mut(bucket), self.counts.get_mut(bucket)) else {
            return Ok(());
        };
        let r = if self.exact {
            w.write_all(sha1)
        } else {
            w.write_all(&key_of(sha1).to_le_bytes())
        };
        r.map_err(|e| BreachError::io(bucket_path(self.spill.path(), bucket), e))?;
        *c += 1;
        self.pushed += 1;
        Ok(())
    }

    /// Hashes pushed so far.
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    fn record_len(&self) -> usize {
        if self.exact {
            EXACT_RECORD_LEN
        } else {
            8
        }
    }

    /// Builds the index and writes it to `out_path` atomically (a temporary file in the same
    /// directory, synced, then renamed over `out_path`).
    pub fn finish(self, out_path: &Path) -> Result<BuildReport, BreachError> {
        let spill_time = self.started.elapsed();
        let started = Instant::now();
        let record_len = self.record_len();
        let IndexBuilder {
            spill,
            writers,
            counts,
            exact,
            shard_bits,
            pushed,
            ..
        } = self;
        for (b, w) in writers.into_iter().enumerate() {
            let p = bucket_path(spill.path(), b);
            let f = w.into_inner().map_err(|e| BreachError::io(&p, e.into_error()))?;
            drop(f);
        }
        let shard_bits = shard_bits.unwrap_or_else(|| auto_shard_bits(pushed));
        let shard_count = 1usize << shard_bits;
        let buckets_per_shard = SPILL_BUCKETS >> shard_bits;

        let out_dir = match out_path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&out_dir).map_err(|e| BreachError::io(&out_dir, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(".gatehouse-breach-index-")
            .tempfile_in(&out_dir)
            .map_err(|e| BreachError::io(&out_dir, e))?;
        let tmp_path = tmp.path().to_path_buf();
        let io_err = |e: io::Error| BreachError::io(&tmp_path, e);
        let mut out = BufWriter::with_capacity(READ_CHUNK, tmp.as_file());
        let table_len = shard_count * ENTRY_LEN;
        let mut pos = format::align_up((HEADER_LEN + table_len) as u64);
        out.write_all(&vec![0u8; pos as usize]).map_err(io_err)?;

        let mut entries = Vec::with_capacity(shard_count);
        let (mut total_keys, mut total_exact, mut largest, mut fp_bytes) = (0u64, 0u64, 0u64, 0u64);
        for shard in 0..shard_count {
            let buckets = shard * buckets_per_shard..(shard + 1) * buckets_per_shard;
            let n: u64 = counts.get(buckets.clone()).unwrap_or_default().iter().sum();
            let n = usize::try_from(n).map_err(|_| BreachError::Build {
                shard,
                reason: "too many hashes for this platform".into(),
            })?;
            let mut entry = ShardEntry::default();
            let (keys, records) = if exact {
                let mut recs: Vec<[u8; 20]> = Vec::with_capacity(n);
                for b in buckets {
                    read_bucket(spill.path(), b, EXACT_RECORD_LEN, |r| {
                        let mut a = [0u8; 20];
                        a.copy_from_slice(r);
                        recs.push(a);
                    })?;
                }
                recs.sort_unstable();
                recs.dedup();
                let mut keys: Vec<u64> = recs.iter().map(key_of).collect();
                keys.dedup(); // sorted: the key is the big-endian prefix of the sorted SHA-1s
                (keys, Some(recs))
            } else {
                let mut keys: Vec<u64> = Vec::with_capacity(n);
                for b in buckets {
                    read_bucket(spill.path(), b, record_len, |r| {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(r);
                        keys.push(u64::from_le_bytes(a));
                    })?;
                }
                keys.sort_unstable();
                keys.dedup();
                (keys, None)
            };
            entry.key_count = keys.len() as u64;
            if keys.len() > u32::MAX as usize {
                return Err(BreachError::Build {
                    shard,
                    reason: format!(
                        "{} keys exceed a filter's 2^32 limit: use more shards",
                        keys.len()
                    ),
                });
            }
            let fingerprints: Box<[u8]> = if keys.is_empty() {
                Box::default()
            } else {
                let filter = BinaryFuse8::try_from(keys.as_slice()).map_err(|e| BreachError::Build {
                    shard,
                    reason: e.to_string(),
                })?;
                drop(keys);
                entry.seed = filter.descriptor.seed;
                entry.segment_length = filter.descriptor.segment_length;
                entry.segment_length_mask = filter.descriptor.segment_length_mask;
                entry.segment_count_length = filter.descriptor.segment_count_length;
                filter.fingerprints
            };
            entry.fp_len = fingerprints.len() as u64;
            entry
                .check_descriptor()
                .map_err(|reason| BreachError::Build { shard, reason })?;
            pos = pad_to(&mut out, pos).map_err(io_err)?;
            entry.fp_offset = pos;
            entry.fp_checksum = xxh64(&fingerprints, 0);
            out.write_all(&fingerprints).map_err(io_err)?;
            pos += entry.fp_len;
            drop(fingerprints);
            pos = pad_to(&mut out, pos).map_err(io_err)?;
            entry.exact_offset = pos;
            let exact_bytes: &[u8] = records.as_deref().map(|r| r.as_flattened()).unwrap_or_default();
            entry.exact_count = (exact_bytes.len() / EXACT_RECORD_LEN) as u64;
            entry.exact_checksum = xxh64(exact_bytes, 0);
            out.write_all(exact_bytes).map_err(io_err)?;
            pos += exact_bytes.len() as u64;

            total_keys += entry.key_count;
            total_exact += entry.exact_count;
            largest = largest.max(entry.key_count);
            fp_bytes += entry.fp_len;
            entries.push(entry);
        }
        drop(spill);

        let mut table = Vec::with_capacity(table_len);
        for e in &entries {
            table.extend_from_slice(&e.encode());
        }
        let mut header = Header {
            version: VERSION,
            flags: if exact { FLAG_EXACT } else { 0 },
            shard_bits,
            entry_len: ENTRY_LEN as u32,
            total_keys,
            total_exact,
            file_len: pos,
            meta_checksum: 0,
        };
        header.meta_checksum = format::meta_checksum(&header.encode(), &table);
        out.seek(SeekFrom::Start(0)).map_err(io_err)?;
        out.write_all(&header.encode()).map_err(io_err)?;
        out.write_all(&table).map_err(io_err)?;
        out.flush().map_err(io_err)?;
        drop(out);
        // World-readable like any data file (the temporary file is created 0600): the server may run as
        // another user than the importer. The index holds only public hashes.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(io_err)?;
        }
        tmp.as_file().sync_all().map_err(io_err)?;
        tmp.persist(out_path)
            .map_err(|e| BreachError::io(out_path, e.error))?;
        if let Ok(dir) = File::open(&out_dir) {
            let _ = dir.sync_all();
        }
        Ok(BuildReport {
            path: out_path.to_path_buf(),
            hashes_pushed: pushed,
            keys: total_keys,
            exact_records: total_exact,
            shard_bits,
            largest_shard: largest,
            file_bytes: pos,
            fingerprint_bytes: fp_bytes,
            spill_bytes: pushed * record_len as u64,
            spill_time,
            build_time: started.elapsed(),
        })
    }
}

/// The smallest shard count whose average shard holds at most [`TARGET_KEYS_PER_SHARD`].
pub fn auto_shard_bits(hashes: u64) -> u32 {
    let mut bits = 0;
    while bits < SPILL_BITS && (hashes >> bits) > TARGET_KEYS_PER_SHARD {
        bits += 1;
    }
    bits
}

fn pad_to<W: Write>(out: &mut W, pos: u64) -> io::Result<u64> {
    let aligned = format::align_up(pos);
    let pad = (aligned - pos) as usize;
    out.write_all(&[0u8; format::SECTION_ALIGN as usize][..pad])?;
    Ok(aligned)
}

/// Reads a bucket file record by record, then deletes it.
fn read_bucket(
    dir: &Path,
    bucket: usize,
    record_len: usize,
    mut each: impl FnMut(&[u8]),
) -> Result<(), BreachError> {
    let p = bucket_path(dir, bucket);
    let mut f = File::open(&p).map_err(|e| BreachError::io(&p, e))?;
    let mut buf = vec![0u8; (READ_CHUNK / record_len) * record_len];
    let mut filled = 0;
    loop {
        let n = f.read(&mut buf[filled..]).map_err(|e| BreachError::io(&p, e))?;
        filled += n;
        let whole = filled / record_len * record_len;
        if n == 0 || filled == buf.len() {
            for r in buf[..whole].chunks_exact(record_len) {
                each(r);
            }
            buf.copy_within(whole..filled, 0);
            filled -= whole;
        }
        if n == 0 {
            break;
        }
    }
    if filled != 0 {
        return Err(BreachError::io(
            &p,
            io::Error::new(io::ErrorKind::UnexpectedEof, "spill file ends inside a record"),
        ));
    }
    drop(f);
    fs::remove_file(&p).map_err(|e| BreachError::io(&p, e))
}
