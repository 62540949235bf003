//! Offline check of passwords against Have I Been Pwned's "Pwned Passwords" (SHA-1) corpus.
//!
//! - [`import`] streams a download (one `SHA1HEX:COUNT` file, or a directory of per-prefix
//!   files) into an index file: a sharded binary fuse filter (`xorf::BinaryFuse8`, ~9 bits and a
//!   ~0.4 % false-positive rate per hash) keyed by the first 8 bytes of each SHA-1, optionally
//!   with the sorted SHA-1s for exact confirmation. The build spills to disk and holds one shard
//!   in memory at a time. [`IndexBuilder`] is the same machinery for any source of SHA-1s.
//! - [`BreachIndex`] memory-maps an index and answers lookups from the mapping.
//! - [`SwappableIndex`] replaces the index in use while serving.
//! - [`builtin_common_contains`] checks a built-in list of the 10,000 most common passwords.
//!
//! The file format is described in [`format`].

mod builder;
mod checksum;
mod common;
mod error;
pub mod format;
mod import;
mod index;
mod swap;

pub use builder::{
    auto_shard_bits, BuildOptions, BuildReport, IndexBuilder, SPILL_BITS, TARGET_KEYS_PER_SHARD,
};
pub use checksum::xxh64;
pub use common::{builtin_common_contains, builtin_common_len, COMMON_PASSWORDS};
pub use error::BreachError;
pub use import::{
    import, import_with, BadLine, ImportOptions, ImportReport, Layout, BAD_LINE_SAMPLES, INDEX_FILE_NAME,
    MAX_LINE_LEN,
};
pub use index::{BreachIndex, Verify};
pub use swap::SwappableIndex;

use sha1::{Digest, Sha1};

/// The SHA-1 of the password's UTF-8 bytes, as Pwned Passwords hashes them.
pub fn sha1_of_password(password: &str) -> [u8; 20] {
    Sha1::digest(password.as_bytes()).into()
}

/// The 64-bit filter key of a SHA-1: its first 8 bytes, big-endian (so key order is SHA-1 order).
#[inline]
pub fn key_of(sha1: &[u8; 20]) -> u64 {
    let mut k = [0u8; 8];
    k.copy_from_slice(&sha1[..8]);
    u64::from_be_bytes(k)
}

/// Parses 40 hex digits (any case) into a SHA-1.
pub fn parse_sha1_hex(hex: &str) -> Option<[u8; 20]> {
    let b: &[u8; 40] = hex.as_bytes().try_into().ok()?;
    import::decode_sha1_hex(b)
}
