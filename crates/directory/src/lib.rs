//! Gatehouse directories behind the one [`Directory`] port.
//!
//! The builtin directory (accounts held by Gatehouse itself, argon2id) and LDAP directories
//! (OpenLDAP with ppolicy, and other RFC 4519 servers).
#![forbid(unsafe_code)]

pub mod ad;
pub mod builtin;
pub mod ldap;

pub use builtin::{BuiltinDirectory, BuiltinOptions};
