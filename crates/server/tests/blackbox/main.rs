//! Black-box tests: the real application on port 0, its own SQLite, a real SMTP server, and a real
//! headless Chromium for the portal. One test binary for the crate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail loudly
mod api_flows;
mod browser;
mod harness;
mod ldap;
mod properties;
