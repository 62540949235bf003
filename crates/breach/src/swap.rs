//! Replacing the index while serving.

use crate::{builtin_common_contains, BreachError, BreachIndex, Verify};
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

/// The index currently in use, replaceable while lookups run.
///
/// Lookups take a read lock for the duration of one lookup (a few hundred nanoseconds); a swap
/// takes the write lock only to exchange the `Arc`. Loading and verifying a new file happens
/// before, outside the lock. Lookups still running on the old index finish on it; its mapping is
/// released when the last `Arc` is dropped. Always load a *new* file (or one renamed into place):
/// an index file must not be rewritten in place while mapped.
#[derive(Debug, Default)]
pub struct SwappableIndex {
    current: RwLock<Option<Arc<BreachIndex>>>,
}

impl SwappableIndex {
    /// Starts with `index`.
    pub fn new(index: impl Into<Arc<BreachIndex>>) -> SwappableIndex {
        SwappableIndex {
            current: RwLock::new(Some(index.into())),
        }
    }

    /// Starts without an index (only the built-in list applies, see [`is_breached`](Self::is_breached)).
    pub fn empty() -> SwappableIndex {
        SwappableIndex::default()
    }

    /// The index in use, if any.
    pub fn current(&self) -> Option<Arc<BreachIndex>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `new` in use and returns the previous index.
    pub fn swap(&self, new: impl Into<Arc<BreachIndex>>) -> Option<Arc<BreachIndex>> {
        let new = Some(new.into());
        std::mem::replace(
            &mut *self.current.write().unwrap_or_else(PoisonError::into_inner),
            new,
        )
    }

    /// Removes the index; returns the previous one.
    pub fn clear(&self) -> Option<Arc<BreachIndex>> {
        self.current
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Opens and fully verifies the index at `path`, then swaps it in and returns the previous
    /// one. On error the current index stays in use.
    pub fn reload_from(&self, path: impl AsRef<Path>) -> Result<Option<Arc<BreachIndex>>, BreachError> {
        self.reload_with(path, Verify::Full)
    }

    /// Like [`reload_from`](Self::reload_from) with a choice of verification.
    pub fn reload_with(
        &self,
        path: impl AsRef<Path>,
        verify: Verify,
    ) -> Result<Option<Arc<BreachIndex>>, BreachError> {
        let index = BreachIndex::open_with(path, verify)?;
        Ok(self.swap(index))
    }

    /// [`BreachIndex::contains_sha1`] on the current index; false without one.
    pub fn contains_sha1(&self, sha1: &[u8; 20]) -> bool {
        let guard = self.current.read().unwrap_or_else(PoisonError::into_inner);
        guard.as_ref().is_some_and(|i| i.contains_sha1(sha1))
    }

    /// [`BreachIndex::contains_password`] on the current index; false without one.
    pub fn contains_password(&self, password: &str) -> bool {
        self.contains_sha1(&crate::sha1_of_password(password))
    }

    /// True if the password is on the built-in common list or in the current index.
    pub fn is_breached(&self, password: &str) -> bool {
        builtin_common_contains(password) || self.contains_password(password)
    }
}
