//! Gatehouse directories behind the one [`Directory`] port.
//!
//! Today: the builtin directory (accounts held by Gatehouse itself, argon2id). OpenLDAP and Active
//! Directory adapters come next, behind the same port.
#![forbid(unsafe_code)]

pub mod builtin;

pub use builtin::{BuiltinDirectory, BuiltinOptions};
