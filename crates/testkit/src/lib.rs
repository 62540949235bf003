//! Dev-only helpers for Gatehouse's integration tests.
//!
//! * [`smtp::SmtpSink`]: a real SMTP server on loopback that keeps every
//!   message it accepts in memory ([`smtp::CapturedMail`]).
//! * [`phone_provider::FakeTwilio`] and [`phone_provider::FakeWebhook`]:
//!   SMS / voice providers on loopback (Twilio's REST API, Gatehouse's
//!   signed webhook) that check requests and record what they accept.
//! * [`browser::Browser`]: headless Chromium driven through WebDriver
//!   (Debian's `chromium` and `chromium-driver`).
//! * [`slapd::Slapd`]: a private OpenLDAP slapd with ppolicy and memberOf
//!   (Debian's `slapd` and `ldap-utils`), and [`slapd::LdapUser`].
//! * [`samba::SambaDc`]: a private Samba Active Directory domain controller
//!   (Debian's `samba` and its AD packages; needs root), and
//!   [`samba::AdUser`].
//! * small helpers: [`require_tool`], [`ci_requires_all`], [`free_port`],
//!   [`init_test_tracing`].
//!
//! This crate is a test helper: failures come back as [`anyhow::Error`]s with
//! messages that say what to do, never as panics.

pub mod browser;
mod ldif;
pub mod phone_provider;
pub mod samba;
pub mod slapd;
pub mod smtp;
mod tools;

pub use browser::Browser;
pub use phone_provider::{FakeTwilio, FakeWebhook, TwilioCall, TwilioFailure, TwilioMessage, WebhookMessage};
pub use samba::{AdUser, SambaDc};
pub use slapd::{LdapUser, Slapd};
pub use smtp::{CapturedMail, SmtpSink};

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Directories searched after `PATH` by [`require_tool`] (`PATH` of a test
/// runner often lacks the sbin directories).
const EXTRA_TOOL_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// Finds the executable `binary` in `PATH`, then in `/usr/sbin` and `/usr/bin`.
///
/// The error names the Debian package that ships it and the `apt-get`
/// command that installs it.
pub fn require_tool(binary: &str, debian_package: &str) -> anyhow::Result<PathBuf> {
    find_executable(binary, std::env::var_os("PATH").as_deref()).ok_or_else(|| {
        anyhow::anyhow!(
            "required tool `{binary}` not found in PATH or /usr/sbin, /usr/bin: install the \
             Debian package `{debian_package}` (apt-get install -y {debian_package})"
        )
    })
}

/// Looks for `binary` in the directories of `path_var`, then in
/// [`EXTRA_TOOL_DIRS`]. A `binary` containing a `/` is taken as a path.
pub(crate) fn find_executable(binary: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if binary.contains('/') {
        let candidate = PathBuf::from(binary);
        return is_executable(&candidate).then_some(candidate);
    }
    let from_path = path_var
        .map(|p| std::env::split_paths(p).collect::<Vec<_>>())
        .unwrap_or_default();
    from_path
        .into_iter()
        .chain(EXTRA_TOOL_DIRS.iter().map(PathBuf::from))
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(binary))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// True when tests must not skip for a missing tool: the `CI` or
/// `GATEHOUSE_REQUIRE_ALL` environment variable is set to something other
/// than the empty string, `0` or `false`.
pub fn ci_requires_all() -> bool {
    ["CI", "GATEHOUSE_REQUIRE_ALL"]
        .iter()
        .any(|name| flag_is_set(std::env::var(name).ok().as_deref()))
}

fn flag_is_set(value: Option<&str>) -> bool {
    match value.map(str::trim) {
        None | Some("") | Some("0") => false,
        Some(v) => !v.eq_ignore_ascii_case("false"),
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it for
/// a listener that is closed again before returning).
pub fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", 0)).context("binding 127.0.0.1:0 to find a free port")?;
    let port = listener
        .local_addr()
        .context("reading the address of the port-probing listener")?
        .port();
    Ok(port)
}

/// Installs a `tracing` subscriber that writes through the test harness
/// (so output is captured per test) with the filter from `RUST_LOG`, or
/// `warn` when unset. Safe to call from every test: only the first call
/// installs anything.
pub fn init_test_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // An Err here only means a subscriber is already installed.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        assert!(!flag_is_set(None));
        assert!(!flag_is_set(Some("")));
        assert!(!flag_is_set(Some("0")));
        assert!(!flag_is_set(Some("false")));
        assert!(flag_is_set(Some("1")));
        assert!(flag_is_set(Some("true")));
    }

    #[test]
    fn finds_sh_and_names_the_package_when_missing() {
        assert!(require_tool("sh", "dash").is_ok());
        let err = require_tool("gatehouse-no-such-tool", "gatehouse-pkg")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("`gatehouse-pkg`"), "{err}");
        assert!(err.contains("apt-get install -y gatehouse-pkg"), "{err}");
    }

    #[test]
    fn searches_usr_bin_without_path() {
        assert!(find_executable("sh", None).is_some());
    }

    #[test]
    fn free_port_is_bindable() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }

    #[test]
    fn tracing_init_is_idempotent() {
        init_test_tracing();
        init_test_tracing();
        tracing::warn!("testkit tracing works");
    }
}
