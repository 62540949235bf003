use std::io;
use std::path::PathBuf;

/// Everything that can go wrong importing, building or opening a breach index.
#[derive(Debug, thiserror::Error)]
pub enum BreachError {
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file does not start with the index magic.
    #[error("{}: not a Gatehouse breach index (bad magic)", path.display())]
    NotAnIndex {
        /// The file.
        path: PathBuf,
    },
    /// The file is an index of a format version this build does not read.
    #[error("{}: unsupported breach index version {found} (this build reads version {supported})", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The file is shorter than its header says (an interrupted copy or download).
    #[error("{}: breach index is truncated: {actual} bytes, expected {expected}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Length the header announces (or the minimum a header needs).
        expected: u64,
        /// Actual length.
        actual: u64,
    },
    /// The file is damaged: a checksum does not match or a field is inconsistent.
    #[error("{}: corrupt breach index: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The import input is unusable as a whole (not a file or directory, an archive, no valid line).
    #[error("{}: {reason}", path.display())]
    Input {
        /// The input path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A shard filter could not be built.
    #[error("building shard {shard}: {reason}")]
    Build {
        /// Shard number.
        shard: usize,
        /// What failed.
        reason: String,
    },
}

impl BreachError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        BreachError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        BreachError::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
