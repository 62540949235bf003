//! Importing a Have I Been Pwned "Pwned Passwords" (SHA-1) download.
//!
//! Two layouts:
//! - one file of `SHA1HEX:COUNT` lines (40 hex digits, any case, LF or CRLF), as in
//!   `pwned-passwords-sha1-ordered-by-hash-v8.txt`;
//! - a directory of per-prefix files named by the 5-hex prefix (`00000`, `00000.txt`), each line
//!   the 35-hex suffix `:COUNT`, as written by the PwnedPasswordsDownloader or the range API.
//!
//! Files are streamed line by line through a bounded buffer; malformed lines are counted and the
//! first few reported, never fatal. `:COUNT` may be absent; lines whose count is below
//! [`ImportOptions::min_count`] (by default the range API's count-0 padding entries) are skipped.

use crate::builder::{BuildOptions, BuildReport, IndexBuilder};
use crate::BreachError;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// File name of the index inside the output directory of [`import`].
pub const INDEX_FILE_NAME: &str = "pwned-passwords.gbi";
/// How many bad lines (and ignored files) a report names.
pub const BAD_LINE_SAMPLES: usize = 10;
/// Longer lines are bad lines (and are skipped without being buffered).
pub const MAX_LINE_LEN: usize = 256;
const READ_BUFFER: usize = 1 << 20;

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Also store the sorted SHA-1s for exact confirmation (`--exact`; 20 more bytes per hash).
    pub exact: bool,
    /// Skip hashes seen fewer times than this. 1 (the default) drops only the count-0 padding
    /// entries of the range API; a larger value trades coverage for a smaller index.
    pub min_count: u64,
    /// log2 of the shard count; `None` for automatic.
    pub shard_bits: Option<u32>,
    /// Where the temporary spill files go (8 bytes per hash, 20 with `exact`); default: the
    /// output directory.
    pub spill_dir: Option<PathBuf>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            exact: false,
            min_count: 1,
            shard_bits: None,
            spill_dir: None,
        }
    }
}

/// The input layout that was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One file of `SHA1HEX:COUNT` lines.
    SingleFile,
    /// A directory of per-prefix files.
    PrefixDirectory,
}

/// A malformed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// The file it is in.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: u64,
}

/// What [`import`] read and built.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// Input layout.
    pub layout: Layout,
    /// Input files read.
    pub files_read: u64,
    /// Bytes read from them.
    pub bytes_read: u64,
    /// Lines read (all kinds).
    pub lines: u64,
    /// Hashes accepted and indexed (before de-duplication).
    pub hashes: u64,
    /// Well-formed lines skipped because their count is below `min_count`.
    pub below_min_count: u64,
    /// Empty lines (ignored, not bad).
    pub blank_lines: u64,
    /// Malformed lines.
    pub bad_lines: u64,
    /// The first [`BAD_LINE_SAMPLES`] malformed lines.
    pub bad_line_samples: Vec<BadLine>,
    /// Directory entries that are not per-prefix files (directory layout only).
    pub ignored_files: u64,
    /// The first [`BAD_LINE_SAMPLES`] of them.
    pub ignored_file_samples: Vec<PathBuf>,
    /// Time spent reading, parsing and spilling.
    pub parse_time: Duration,
    /// The build.
    pub build: BuildReport,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "read {} file(s), {} lines, {} MB in {:.1} s ({:.1} M lines/s)",
            self.files_read,
            self.lines,
            self.bytes_read / 1_000_000,
            self.parse_time.as_secs_f64(),
            self.lines as f64 / self.parse_time.as_secs_f64().max(1e-9) / 1e6
        )?;
        writeln!(
            f,
            "{} hashes accepted, {} below min count, {} blank, {} bad lines",
            self.hashes, self.below_min_count, self.blank_lines, self.bad_lines
        )?;
        for b in &self.bad_line_samples {
            writeln!(f, "  bad line: {}:{}", b.file.display(), b.line)?;
        }
        if self.ignored_files > 0 {
            writeln!(
                f,
                "{} file(s) ignored (not named by a 5-hex prefix)",
                self.ignored_files
            )?;
            for p in &self.ignored_file_samples {
                writeln!(f, "  ignored: {}", p.display())?;
            }
        }
        let b = &self.build;
        write!(
            f,
            "index {}: {} keys in {} shards, {} bytes ({:.2} bits/hash){}, built in {:.1} s",
            b.path.display(),
            b.keys,
            1u64 << b.shard_bits,
            b.file_bytes,
            b.bits_per_hash(),
            if b.exact_records > 0 { ", exact" } else { "" },
            b.build_time.as_secs_f64()
        )
    }
}

/// Imports `input` (a file or a per-prefix directory) into `out_dir/`[`INDEX_FILE_NAME`] with the
/// default options.
pub fn import(input: impl AsRef<Path>, out_dir: impl AsRef<Path>) -> Result<ImportReport, BreachError> {
    import_with(input, out_dir, &ImportOptions::default())
}

/// Imports `input` into `out_dir/`[`INDEX_FILE_NAME`]. The index is written to a temporary file
/// and renamed into place, so an index already at that path stays intact until the new one is
/// complete (and an open one keeps working). Fails, writing nothing, if no valid hash was read.
pub fn import_with(
    input: impl AsRef<Path>,
    out_dir: impl AsRef<Path>,
    options: &ImportOptions,
) -> Result<ImportReport, BreachError> {
    let input = input.as_ref();
    let out_dir = out_dir.as_ref();
    let meta = fs::metadata(input).map_err(|e| BreachError::io(input, e))?;
    fs::create_dir_all(out_dir).map_err(|e| BreachError::io(out_dir, e))?;
    let spill_parent = options.spill_dir.as_deref().unwrap_or(out_dir);
    let builder = IndexBuilder::new(
        spill_parent,
        &BuildOptions {
            exact: options.exact,
            shard_bits: options.shard_bits,
        },
    )?;
    let mut st = Importer {
        builder,
        min_count: options.min_count,
        stats: Stats::default(),
        line: Vec::with_capacity(MAX_LINE_LEN),
    };
    let started = Instant::now();
    let layout = if meta.is_dir() {
        let mut files = Vec::new();
        for entry in fs::read_dir(input).map_err(|e| BreachError::io(input, e))? {
            let entry = entry.map_err(|e| BreachError::io(input, e))?;
            let path = entry.path();
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            match prefix_of_name(&entry.file_name().to_string_lossy()) {
                Some(prefix) if is_file => files.push((prefix, path)),
                _ => {
                    st.stats.ignored_files += 1;
                    if st.stats.ignored_file_samples.len() < BAD_LINE_SAMPLES {
                        st.stats.ignored_file_samples.push(path);
                    }
                }
            }
        }
        if files.is_empty() {
            return Err(BreachError::Input {
                path: input.to_path_buf(),
                reason:
                    "no per-prefix file (named by 5 hex digits, e.g. 00000 or 00000.txt) in this directory"
                        .into(),
            });
        }
        files.sort();
        for (prefix, path) in &files {
            st.read_file(path, Some(prefix))?;
        }
        Layout::PrefixDirectory
    } else {
        st.read_file(input, None)?;
        Layout::SingleFile
    };
    let parse_time = started.elapsed();
    let Importer { builder, stats, .. } = st;
    if stats.hashes == 0 {
        let first: Vec<String> = stats
            .bad_line_samples
            .iter()
            .map(|b| format!("{}:{}", b.file.display(), b.line))
            .collect();
        return Err(BreachError::Input {
            path: input.to_path_buf(),
            reason: format!(
                "no valid SHA-1 line: {} lines, {} bad{}{} (expected SHA1HEX:COUNT, or SUFFIX:COUNT in per-prefix files)",
                stats.lines,
                stats.bad_lines,
                if first.is_empty() { "" } else { ", first at " },
                first.join(", ")
            ),
        });
    }
    let build = builder.finish(&out_dir.join(INDEX_FILE_NAME))?;
    Ok(ImportReport {
        layout,
        files_read: stats.files_read,
        bytes_read: stats.bytes_read,
        lines: stats.lines,
        hashes: stats.hashes,
        below_min_count: stats.below_min_count,
        blank_lines: stats.blank_lines,
        bad_lines: stats.bad_lines,
        bad_line_samples: stats.bad_line_samples,
        ignored_files: stats.ignored_files,
        ignored_file_samples: stats.ignored_file_samples,
        parse_time,
        build,
    })
}

#[derive(Debug, Default)]
struct Stats {
    files_read: u64,
    bytes_read: u64,
    lines: u64,
    hashes: u64,
    below_min_count: u64,
    blank_lines: u64,
    bad_lines: u64,
    bad_line_samples: Vec<BadLine>,
    ignored_files: u64,
    ignored_file_samples: Vec<PathBuf>,
}

struct Importer {
    builder: IndexBuilder,
    min_count: u64,
    stats: Stats,
    line: Vec<u8>,
}

impl Importer {
    fn read_file(&mut self, path: &Path, prefix: Option<&[u8; 5]>) -> Result<(), BreachError> {
        let file = File::open(path).map_err(|e| BreachError::io(path, e))?;
        let mut reader = BufReader::with_capacity(READ_BUFFER, file);
        let head = reader.fill_buf().map_err(|e| BreachError::io(path, e))?;
        if let Some(kind) = archive_kind(head) {
            return Err(BreachError::Input {
                path: path.to_path_buf(),
                reason: format!("this is a {kind} archive: extract the text file first"),
            });
        }
        self.stats.files_read += 1;
        let mut line_no = 0u64;
        while let Some(overlong) = next_line(&mut reader, &mut self.line, &mut self.stats.bytes_read)
            .map_err(|e| BreachError::io(path, e))?
        {
            line_no += 1;
            self.stats.lines += 1;
            let mut text: &[u8] = &self.line;
            if line_no == 1 {
                text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
            }
            let parsed = if overlong {
                Line::Bad
            } else {
                parse_line(text, prefix)
            };
            match parsed {
                Line::Hash(sha1, count) => {
                    if count.is_some_and(|c| c < self.min_count) {
                        self.stats.below_min_count += 1;
                    } else {
                        self.builder.push_sha1(&sha1)?;
                        self.stats.hashes += 1;
                    }
                }
                Line::Blank => self.stats.blank_lines += 1,
                Line::Bad => {
                    self.stats.bad_lines += 1;
                    if self.stats.bad_line_samples.len() < BAD_LINE_SAMPLES {
                        self.stats.bad_line_samples.push(BadLine {
                            file: path.to_path_buf(),
                            line: line_no,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// Reads the next line (without its `\n`) into `out`. `Ok(None)` at end of input; `Ok(Some(true))`
/// for a line longer than [`MAX_LINE_LEN`], whose bytes are skipped rather than buffered.
fn next_line<R: BufRead>(reader: &mut R, out: &mut Vec<u8>, consumed: &mut u64) -> io::Result<Option<bool>> {
    out.clear();
    let mut overlong = false;
    let mut any = false;
    loop {
        let avail = match reader.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(if any { Some(overlong) } else { None });
        }
        any = true;
        let (chunk, found) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (&avail[..i], true),
            None => (avail, false),
        };
        if !overlong {
            if out.len() + chunk.len() > MAX_LINE_LEN {
                overlong = true;
                out.clear();
            } else {
                out.extend_from_slice(chunk);
            }
        }
        let used = chunk.len() + usize::from(found);
        reader.consume(used);
        *consumed += used as u64;
        if found {
            return Ok(Some(overlong));
        }
    }
}

fn archive_kind(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(&[0x37, 0x7A, 0xBC, 0xAF, 0x27, 0x1C]) {
        Some("7-Zip")
    } else if head.starts_with(&[0x1F, 0x8B]) {
        Some("gzip")
    } else if head.starts_with(b"PK\x03\x04") {
        Some("zip")
    } else {
        None
    }
}

/// `ABCDE` or `ABCDE.txt` (hex in any case) → the prefix.
fn prefix_of_name(name: &str) -> Option<[u8; 5]> {
    let stem = match name.len() {
        5 => name,
        9 if name.get(5..).is_some_and(|ext| ext.eq_ignore_ascii_case(".txt")) => name.get(..5)?,
        _ => return None,
    };
    let b: [u8; 5] = stem.as_bytes().try_into().ok()?;
    b.iter().all(u8::is_ascii_hexdigit).then_some(b)
}

#[derive(Debug, PartialEq, Eq)]
enum Line {
    Hash([u8; 20], Option<u64>),
    Blank,
    Bad,
}

const INVALID: u8 = 0xFF;
const HEX: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Decodes 40 hex digits (any case).
pub(crate) fn decode_sha1_hex(hex: &[u8; 40]) -> Option<[u8; 20]> {
    let mut out = [0u8; 20];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let hi = HEX[usize::from(pair[0])];
        let lo = HEX[usize::from(pair[1])];
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0x0F);
    }
    (bad & 0xF0 == 0).then_some(out)
}

fn parse_line(line: &[u8], prefix: Option<&[u8; 5]>) -> Line {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Line::Blank;
    }
    let mut hex = [0u8; 40];
    let rest = match prefix {
        None => {
            let Some((h, rest)) = line.split_first_chunk::<40>() else {
                return Line::Bad;
            };
            hex = *h;
            rest
        }
        Some(p) => {
            let Some((h, rest)) = line.split_first_chunk::<35>() else {
                return Line::Bad;
            };
            hex[..5].copy_from_slice(p);
            hex[5..].copy_from_slice(h);
            rest
        }
    };
    let Some(sha1) = decode_sha1_hex(&hex) else {
        return Line::Bad;
    };
    let count = match rest {
        [] => None,
        [b':', digits @ ..] if !digits.is_empty() && digits.len() <= 20 => {
            let mut c: u64 = 0;
            for &d in digits {
                if !d.is_ascii_digit() {
                    return Line::Bad;
                }
                match c.checked_mul(10).and_then(|c| c.checked_add(u64::from(d - b'0'))) {
                    Some(v) => c = v,
                    None => return Line::Bad,
                }
            }
            Some(c)
        }
        _ => return Line::Bad,
    };
    Line::Hash(sha1, count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn lines_of(data: &[u8]) -> Vec<(Vec<u8>, bool)> {
        let mut r = BufReader::with_capacity(7, data);
        let mut out = Vec::new();
        let mut line = Vec::new();
        let mut n = 0;
        while let Ok(Some(overlong)) = next_line(&mut r, &mut line, &mut n) {
            out.push((line.clone(), overlong));
        }
        let mut rest = Vec::new();
        let _ = r.read_to_end(&mut rest);
        assert!(rest.is_empty());
        assert_eq!(n, data.len() as u64);
        out
    }

    const H: &[u8] = b"7C4A8D09CA3762AF61E59520943DC26494F8941B";

    fn sha1_123456() -> [u8; 20] {
        let mut a = [0u8; 20];
        for (i, o) in a.iter_mut().enumerate() {
            *o = u8::from_str_radix(std::str::from_utf8(&H[2 * i..2 * i + 2]).unwrap(), 16).unwrap();
        }
        a
    }

    #[test]
    fn parses_single_file_lines() {
        let want = sha1_123456();
        let with = |s: &[u8]| parse_line(s, None);
        assert_eq!(
            with(b"7C4A8D09CA3762AF61E59520943DC26494F8941B:37359195"),
            Line::Hash(want, Some(37359195))
        );
        assert_eq!(
            with(b"7c4a8d09ca3762af61e59520943dc26494f8941b:1\r"),
            Line::Hash(want, Some(1))
        );
        assert_eq!(
            with(b"7C4A8D09CA3762AF61E59520943DC26494F8941B"),
            Line::Hash(want, None)
        );
        assert_eq!(with(b""), Line::Blank);
        assert_eq!(with(b"\r"), Line::Blank);
        assert_eq!(with(b"7C4A8D09CA3762AF61E59520943DC26494F8941"), Line::Bad);
        assert_eq!(with(b"7C4A8D09CA3762AF61E59520943DC26494F8941G:1"), Line::Bad);
        assert_eq!(with(b"7C4A8D09CA3762AF61E59520943DC26494F8941B:"), Line::Bad);
        assert_eq!(with(b"7C4A8D09CA3762AF61E59520943DC26494F8941B:1x"), Line::Bad);
        assert_eq!(with(b"7C4A8D09CA3762AF61E59520943DC26494F8941B 1"), Line::Bad);
        assert_eq!(
            with(b"7C4A8D09CA3762AF61E59520943DC26494F8941B:99999999999999999999"),
            Line::Bad
        );
        assert_eq!(with(b"7C4A8D09CA3762AF61E59520943DC26494F8941B\r\r"), Line::Bad);
        assert_eq!(
            with("7C4A8D09CA3762AF61E59520943DC26494F8941\u{e9}:1".as_bytes()),
            Line::Bad
        );
    }

    #[test]
    fn parses_prefix_file_lines() {
        let want = sha1_123456();
        let p = *b"7c4a8";
        assert_eq!(
            parse_line(b"D09CA3762AF61E59520943DC26494F8941B:5\r", Some(&p)),
            Line::Hash(want, Some(5))
        );
        assert_eq!(
            parse_line(b"D09CA3762AF61E59520943DC26494F8941B:0", Some(&p)),
            Line::Hash(want, Some(0))
        );
        assert_eq!(
            parse_line(b"7C4A8D09CA3762AF61E59520943DC26494F8941B:5", Some(&p)),
            Line::Bad
        );
    }

    #[test]
    fn prefix_file_names() {
        assert_eq!(prefix_of_name("00000"), Some(*b"00000"));
        assert_eq!(prefix_of_name("ABCDE.txt"), Some(*b"ABCDE"));
        assert_eq!(prefix_of_name("abcde.TXT"), Some(*b"abcde"));
        assert_eq!(prefix_of_name("ABCDG"), None);
        assert_eq!(prefix_of_name("ABCD"), None);
        assert_eq!(prefix_of_name("ABCDE.csv"), None);
        assert_eq!(prefix_of_name("README.md"), None);
        assert_eq!(prefix_of_name("ABCDé"), None);
    }

    #[test]
    fn line_reader_bounds_long_lines() {
        let long = vec![b'A'; MAX_LINE_LEN + 10];
        let mut data = b"one\r\ntwo\n".to_vec();
        data.extend_from_slice(&long);
        data.extend_from_slice(b"\nlast");
        let lines = lines_of(&data);
        assert_eq!(
            lines,
            vec![
                (b"one\r".to_vec(), false),
                (b"two".to_vec(), false),
                (Vec::new(), true),
                (b"last".to_vec(), false)
            ]
        );
        assert!(lines_of(b"").is_empty());
        assert_eq!(lines_of(b"\n"), vec![(Vec::new(), false)]);
    }

    #[test]
    fn detects_archives() {
        assert_eq!(
            archive_kind(&[0x37, 0x7A, 0xBC, 0xAF, 0x27, 0x1C, 0]),
            Some("7-Zip")
        );
        assert_eq!(archive_kind(b"7C4A8D"), None);
    }
}
