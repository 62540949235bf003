//! Black-box tests: the real application on port 0, its own SQLite, a real SMTP server, a real
//! headless Chromium for the portal, and real directories (OpenLDAP slapd, Samba AD DC) started by the
//! tests. One test binary for the crate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail loudly
mod abuse;
mod ad;
mod api_flows;
mod browser;
mod harness;
mod ldap;
mod methods;
mod password;
mod properties;
mod throttle;
