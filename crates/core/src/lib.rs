//! Gatehouse core: domain types, password rules, flow state machines and use cases.
//!
//! Pure: no sockets, no SQL, no files, no clock reads. Everything outside comes in through the
//! ports in [`ports`].
#![forbid(unsafe_code)]

pub mod audit;
pub mod banned;
pub mod clock;
pub mod error;
pub mod flow;
pub mod messages;
pub mod password;
pub mod phone;
pub mod policy;
pub mod ports;
pub mod pow;
pub mod questions;
pub mod secret;
pub mod service;
pub mod throttle;
pub mod totp;
pub mod types;

pub use error::ServiceError;
pub use service::{Gatehouse, RequestMeta, Settings};
