//! Black-box tests: the real application on port 0, its own SQLite, a real SMTP server, and a real
//! headless Chromium for the portal. One test binary for the crate.
mod api_flows;
mod browser;
mod harness;
mod properties;
