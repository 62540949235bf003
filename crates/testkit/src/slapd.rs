//! A private OpenLDAP `slapd` (Debian's `slapd` 2.5 and `ldap-utils`) with
//! the ppolicy and memberof overlays, for tests against a real directory.
//!
//! Each [`Slapd`] lives in its own temporary directory under `/tmp`: its
//! `cn=config` is built offline with `slapadd -n0`, the base entries with
//! `slapadd -n1`, then `slapd -d none` listens on `ldap://127.0.0.1:PORT` and
//! on an `ldapi://` socket in that directory. Nothing outside the directory
//! is read or written (besides the schema files in `/etc/ldap/schema` and
//! the modules in `/usr/lib/ldap`); the system's slapd service is not used.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use gatehouse_testkit::{LdapUser, Slapd};
//! let ldap = Slapd::shared().await?; // one slapd per test binary
//! let ou = ldap.fresh_ou().await?; // this test's own users
//! let alice = LdapUser { uid: "alice", password: Some("Initial-Alice-1"), ..Default::default() };
//! let dn = ldap.add_user(&ou, &alice).await?;
//! // ... point the code under test at ldap.url(), bind as Slapd::SERVICE_DN ...
//! assert!(ldap.can_bind(&dn, "Initial-Alice-1").await?);
//! # Ok(()) }
//! ```
//!
//! # The directory
//!
//! * Suffix [`Slapd::BASE_DN`], rootdn [`Slapd::ROOT_DN`]; users go below
//!   [`Slapd::PEOPLE_DN`], best in a per-test OU from [`Slapd::fresh_ou`].
//! * Three service accounts below `ou=services`, with these rights
//!   (`olcAccess` on the database, in this order):
//!
//!   | access to | [`SERVICE_DN`](Slapd::SERVICE_DN) | [`WRITEONLY_DN`](Slapd::WRITEONLY_DN) | [`READONLY_DN`](Slapd::READONLY_DN) | the user itself |
//!   |---|---|---|---|---|
//!   | `userPassword` | manage | write | none | write (`anonymous auth`) |
//!   | `pwdAccountLockedTime`, `pwdFailureTime`, `pwdReset`, `pwdHistory`, `pwdPolicySubentry`, `pwdChangedTime`, `pwdGraceUseTime` | manage | read | read | read |
//!   | everything else | write | write | read | read |
//!
//!   `manage` on `userPassword` makes [`SERVICE_DN`](Slapd::SERVICE_DN) a
//!   ppolicy *password administrator*: its password writes skip the length
//!   and history checks and set `pwdReset`. The three accounts have no size
//!   or time limit (a 10,000-entry search is not cut at slapd's default 500).
//!   They are under their own policy [`Slapd::SERVICE_POLICY_DN`] without
//!   lockout, so a test that binds one with a wrong password cannot lock it
//!   for the other tests.
//! * The default password policy [`Slapd::POLICY_DN`] (`olcPPolicyDefault`):
//!   `pwdMinLength 8`, `pwdInHistory 5`, `pwdCheckQuality 2`, `pwdLockout
//!   TRUE`, `pwdMaxFailure 3`, `pwdLockoutDuration 0` (locked until unlocked),
//!   `pwdFailureCountInterval 0`, `pwdMustChange TRUE`, `pwdAllowUserChange
//!   TRUE`, `pwdSafeModify FALSE`. `olcPPolicyHashCleartext` is on (cleartext
//!   `userPassword` values are stored as `{SSHA}`), and so is
//!   `olcPPolicyUseLockout` (a bind on a locked account gets the "account
//!   locked" ppolicy error). A test that needs another policy makes its own
//!   with [`Slapd::add_policy`] and points its users at it through
//!   `pwdPolicySubentry`; changing the default one would affect every test
//!   sharing the instance.
//! * `memberOf` (memberof overlay) is maintained on the members of
//!   `groupOfNames` groups; it is operational, so ask for it by name.
//! * The personal email address is in [`Slapd::PERSONAL_EMAIL_ATTR`]
//!   (`mailLocalAddress`) from the auxiliary class
//!   [`Slapd::PERSONAL_EMAIL_CLASS`] (`inetLocalMailRecipient`, OpenLDAP's
//!   `misc` schema), which every user made here carries.
//! * Indexed (eq): `objectClass`, `uid`, `mail`, `mailLocalAddress`,
//!   `member`, `memberOf`, `entryCSN`, `entryUUID`, `modifyTimestamp`.
//! * The database runs with `olcDbNoSync` (no fsync per write): the data
//!   survives [`Slapd::stop`] / [`Slapd::restart`], not a machine crash.
//!
//! # Lifetime
//!
//! slapd runs under a small `sh` that holds the read end of a pipe whose
//! write end only this process holds. When that pipe closes (the [`Slapd`]
//! is dropped, or the test process exits or is killed), the shell stops
//! slapd with SIGTERM and removes the temporary directory, so even the
//! never-dropped [`Slapd::shared`] instance does not outlive the tests.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::ldif::{
    attrs_as_text, capitalized, escape_dn_value, fresh_ou_name, ldif_line, ou_record, parse_ldif_attrs,
    read_entry_args, LdifRecord,
};
use crate::tools::{check_success, ldap_bind_args, log_tail, tool_failure, Runner, Running, TOOL_WITHIN};

/// The error text when slapd or the OpenLDAP client tools are not installed.
pub const NOT_INSTALLED: &str = "OpenLDAP not found: install the Debian packages `slapd ldap-utils` \
     (apt-get install -y slapd ldap-utils); the fixture runs its own slapd, the system service can stay \
     stopped";

/// How long slapd may take from launch to the first successful root bind.
const READY_WITHIN: Duration = Duration::from_secs(15);
const READY_POLL_EVERY: Duration = Duration::from_millis(20);
/// Launch attempts with a new port when the picked one was taken first.
const PORT_ATTEMPTS: usize = 5;
/// How long [`Slapd::restart`] retries a port that is still in use.
const RESTART_PORT_RETRY_FOR: Duration = Duration::from_secs(5);
/// ldapi socket paths must fit in `sun_path` (108 bytes on Linux).
const MAX_SOCKET_PATH: usize = 100;

/// How the fixture runs its tools: as they are; a timeout error shows the
/// command line with the bind password hidden.
const RUNNER: Runner = Runner {
    env: &[],
    hide_passwords: true,
};

/// Starts slapd in the background under the supervising shell
/// ([`Running::spawn`]). Arguments: `$1` slapd binary, `$2` directory, `$3`
/// listener URLs. When slapd exits for another reason than the pipe closing
/// ([`Slapd::stop`] signals it directly), the directory stays.
const LAUNCH_START: &str = r#"exec 3<&0 </dev/null
"$1" -F "$2/slapd.d" -h "$3" -d none >>"$2/slapd.log" 2>&1 3<&- &
"#;

static SHARED: OnceCell<Slapd> = OnceCell::const_new();

/// A user for [`Slapd::add_user`]: an `inetOrgPerson` (plus
/// [`Slapd::PERSONAL_EMAIL_CLASS`]) `uid=<uid>,<ou>` with `cn` "<Uid>
/// Example", `sn` "Example" and `givenName` "<Uid>". `None` fields are left
/// out of the entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LdapUser<'a> {
    pub uid: &'a str,
    /// Cleartext; slapd stores it hashed (`{SSHA}`).
    pub password: Option<&'a str>,
    /// `mail`, the work address.
    pub mail: Option<&'a str>,
    /// `mobile`.
    pub mobile: Option<&'a str>,
    /// [`Slapd::PERSONAL_EMAIL_ATTR`].
    pub personal_email: Option<&'a str>,
}

/// A private slapd on `127.0.0.1` (see the [module docs](self)).
///
/// Dropping it stops slapd and removes its directory;
/// [`Slapd::stop`] stops it but keeps the data for [`Slapd::restart`].
#[derive(Debug)]
pub struct Slapd {
    port: u16,
    tools: Tools,
    // Declared before `dir`: dropping it closes the pipe first, so slapd is
    // told to stop before its directory is removed.
    running: Option<Running>,
    dir: tempfile::TempDir,
}

/// The binaries the fixture runs.
#[derive(Debug, Clone)]
struct Tools {
    sh: PathBuf,
    slapd: PathBuf,
    slapadd: PathBuf,
    ldapmodify: PathBuf,
    ldapsearch: PathBuf,
    ldapwhoami: PathBuf,
}

impl Tools {
    fn find() -> anyhow::Result<Tools> {
        let find = |binary: &str, package: &str| crate::require_tool(binary, package).context(NOT_INSTALLED);
        Ok(Tools {
            sh: crate::require_tool("sh", "dash")?,
            slapd: find("slapd", "slapd")?,
            slapadd: find("slapadd", "slapd")?,
            ldapmodify: find("ldapmodify", "ldap-utils")?,
            ldapsearch: find("ldapsearch", "ldap-utils")?,
            ldapwhoami: find("ldapwhoami", "ldap-utils")?,
        })
    }
}

/// True when slapd and the OpenLDAP client tools are installed.
pub fn is_installed() -> bool {
    Tools::find().is_ok()
}

impl Slapd {
    /// The suffix of the one database.
    pub const BASE_DN: &str = "dc=example,dc=org";
    /// The rootdn (bypasses ACLs and password policy).
    pub const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
    pub const ROOT_PW: &str = "rootsecret";
    /// Where users go (in a per-test OU, see [`Slapd::fresh_ou`]).
    pub const PEOPLE_DN: &str = "ou=people,dc=example,dc=org";
    /// The service account of the reset server: `manage` on `userPassword`
    /// and the ppolicy state attributes (a ppolicy password administrator),
    /// `write` on everything else.
    pub const SERVICE_DN: &str = "cn=sspr,ou=services,dc=example,dc=org";
    pub const SERVICE_PW: &str = "svcsecret";
    /// A service account with only `write` on `userPassword` (its resets get
    /// the policy checks and do not set `pwdReset`), `read` on the ppolicy
    /// state attributes, `write` on everything else.
    pub const WRITEONLY_DN: &str = "cn=sspr-writeonly,ou=services,dc=example,dc=org";
    pub const WRITEONLY_PW: &str = "svcwsecret";
    /// A service account that can only read (not `userPassword`): for a
    /// rights check that must report what is missing.
    pub const READONLY_DN: &str = "cn=sspr-readonly,ou=services,dc=example,dc=org";
    pub const READONLY_PW: &str = "svcrsecret";
    /// The default password policy (`olcPPolicyDefault`).
    pub const POLICY_DN: &str = "cn=default,ou=policies,dc=example,dc=org";
    /// The policy of the three service accounts: no lockout.
    pub const SERVICE_POLICY_DN: &str = "cn=service-accounts,ou=policies,dc=example,dc=org";
    /// The parent of [`Slapd::add_policy`]'s entries.
    pub const POLICIES_DN: &str = "ou=policies,dc=example,dc=org";
    /// The attribute holding a user's personal email address: neither
    /// inetOrgPerson nor the core schemas have one, so this is
    /// `mailLocalAddress` (multi-valued IA5 string, case-insensitive
    /// equality) from OpenLDAP's `misc` schema. `otherMailbox` (cosine) does
    /// not work: inetOrgPerson does not allow it and it has no equality
    /// rule (filters never match it, deleting one value fails).
    pub const PERSONAL_EMAIL_ATTR: &str = "mailLocalAddress";
    /// The auxiliary object class that allows [`Slapd::PERSONAL_EMAIL_ATTR`];
    /// every user added by this fixture has it.
    pub const PERSONAL_EMAIL_CLASS: &str = "inetLocalMailRecipient";

    /// Starts a private slapd on a free loopback port and returns once a
    /// root bind works. A port taken between picking and binding is retried
    /// with a new one.
    pub async fn start() -> anyhow::Result<Slapd> {
        let tools = Tools::find()?;
        let dir = make_dir()?;
        build_database(&tools, dir.path()).await?;
        let mut last_err = None;
        for attempt in 1..=PORT_ATTEMPTS {
            let port = crate::free_port()?;
            match launch(&tools, dir.path(), port).await {
                Ok(running) => {
                    tracing::debug!(port, dir = %dir.path().display(), "slapd started");
                    return Ok(Slapd {
                        port,
                        tools,
                        running: Some(running),
                        dir,
                    });
                }
                Err(LaunchError::PortInUse(err)) => {
                    tracing::debug!(
                        attempt,
                        port,
                        err = format!("{err:#}"),
                        "slapd port taken, retrying"
                    );
                    last_err = Some(err);
                }
                Err(LaunchError::Failed(err)) => return Err(err),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("slapd launch never attempted")))
            .context(format!("slapd: no free port after {PORT_ATTEMPTS} attempts"))
    }

    /// The slapd of this test binary, started on first use and shared by all
    /// its tests (from any tokio runtime). Never stopped by the tests: it
    /// ends with the test process. Tests keep out of each other's way with
    /// [`Slapd::fresh_ou`] and their own policies ([`Slapd::add_policy`]).
    pub async fn shared() -> anyhow::Result<&'static Slapd> {
        SHARED.get_or_try_init(Slapd::start).await
    }

    /// `ldap://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The TCP port slapd listens on (the same after [`Slapd::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `ldapi://` URL of slapd's Unix socket; a client there binding
    /// with SASL EXTERNAL may change `cn=config` ([`Slapd::modify_config`]).
    pub fn ldapi_url(&self) -> String {
        ldapi_url(self.dir.path())
    }

    /// The directory holding the configuration, the database and
    /// `slapd.log`; removed when the [`Slapd`] is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last 8 KiB of slapd's log. slapd runs with `-d none`: only
    /// errors and its start and stop lines (`-d 0` would hide errors too).
    pub fn log(&self) -> String {
        log_tail(&log_path(self.dir.path()), 0)
    }

    /// Whether slapd is running (not stopped, and has not exited).
    pub fn is_running(&mut self) -> bool {
        self.running.as_mut().is_some_and(Running::is_alive)
    }

    /// Stops slapd (SIGTERM; SIGKILL after 10 s) and waits until it has
    /// exited; connections to [`Slapd::port`] are refused afterwards. The
    /// data stays for [`Slapd::restart`]. Calling it again does nothing.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut running) = self.running.take() else {
            return Ok(());
        };
        running.terminate().await?;
        tracing::debug!(port = self.port, "slapd stopped");
        Ok(())
    }

    /// Starts slapd again on the same port with the same data (stopping it
    /// first if it is running) and returns once a root bind works. While the
    /// port is still in use, binding is retried for up to 5 s.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        let deadline = Instant::now() + RESTART_PORT_RETRY_FOR;
        loop {
            match launch(&self.tools, self.dir.path(), self.port).await {
                Ok(running) => {
                    self.running = Some(running);
                    tracing::debug!(port = self.port, "slapd restarted");
                    return Ok(());
                }
                Err(LaunchError::PortInUse(err)) if Instant::now() >= deadline => {
                    return Err(err.context(format!(
                        "slapd restart: port {} still in use after {RESTART_PORT_RETRY_FOR:?}",
                        self.port
                    )));
                }
                Err(LaunchError::PortInUse(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(LaunchError::Failed(err)) => return Err(err),
            }
        }
    }

    /// Runs `ldapmodify` as the rootdn with `ldif` (records with
    /// `changetype:`; the rootdn bypasses ACLs and password policy). The
    /// error carries ldapmodify's output.
    pub async fn modify(&self, ldif: &str) -> anyhow::Result<()> {
        self.modify_within(ldif, TOOL_WITHIN).await
    }

    async fn modify_within(&self, ldif: &str, within: Duration) -> anyhow::Result<()> {
        let args = self.root_args();
        RUNNER
            .ldapmodify(
                &self.tools.ldapmodify,
                &args,
                ldif,
                within,
                "ldapmodify as the rootdn",
            )
            .await
    }

    /// Runs `ldapmodify` over [`Slapd::ldapi_url`] with SASL EXTERNAL, the
    /// identity that may change `cn=config` (e.g. `olcPPolicyUseLockout` on
    /// `olcOverlay={0}ppolicy,olcDatabase={1}mdb,cn=config`). Do this on a
    /// private [`Slapd::start`] instance, not on the shared one.
    pub async fn modify_config(&self, ldif: &str) -> anyhow::Result<()> {
        let args: Vec<String> = ["-Y", "EXTERNAL", "-Q", "-H", &self.ldapi_url()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let what = "ldapmodify on cn=config (ldapi, EXTERNAL)";
        RUNNER
            .ldapmodify(&self.tools.ldapmodify, &args, ldif, TOOL_WITHIN, what)
            .await
    }

    /// Creates a new, uniquely named OU below [`Slapd::PEOPLE_DN`]
    /// (`ou=t<counter>-<random>`) and returns its DN, so tests sharing one
    /// slapd do not see each other's users.
    pub async fn fresh_ou(&self) -> anyhow::Result<String> {
        let name = fresh_ou_name();
        let dn = format!("ou={name},{}", Self::PEOPLE_DN);
        self.modify(&ou_record(&dn, &name))
            .await
            .with_context(|| format!("creating {dn}"))?;
        Ok(dn)
    }

    /// Adds the user `uid=<uid>,<ou_dn>` (see [`LdapUser`]) as the rootdn
    /// and returns its DN. The password is sent in cleartext and stored
    /// hashed; no `pwdReset` is set (the user can bind and work right away).
    pub async fn add_user(&self, ou_dn: &str, user: &LdapUser<'_>) -> anyhow::Result<String> {
        let dn = user_dn(user.uid, ou_dn);
        let mut ldif = LdifRecord::add(&dn);
        user_attrs(&mut ldif, user);
        self.modify(&ldif.finish())
            .await
            .with_context(|| format!("adding user {dn}"))?;
        Ok(dn)
    }

    /// Adds the `groupOfNames` `cn=<name>,<ou_dn>` with these members (at
    /// least one: `member` is required) and returns its DN. The members get
    /// `memberOf: <group DN>` (an operational attribute: read it by name).
    pub async fn add_group(&self, ou_dn: &str, name: &str, members: &[String]) -> anyhow::Result<String> {
        let dn = format!("cn={},{ou_dn}", escape_dn_value(name));
        anyhow::ensure!(
            !members.is_empty(),
            "group {dn}: a groupOfNames needs at least one member"
        );
        let mut ldif = LdifRecord::add(&dn);
        ldif.attr("objectClass", "groupOfNames");
        ldif.attr("cn", name);
        for member in members {
            ldif.attr("member", member);
        }
        self.modify(&ldif.finish())
            .await
            .with_context(|| format!("adding group {dn}"))?;
        Ok(dn)
    }

    /// Adds the password policy `cn=<name>,ou=policies,dc=example,dc=org`
    /// (`objectClass: device` + `pwdPolicy`) with these attributes, e.g.
    /// `[("pwdMinLength", "12"), ("pwdLockout", "FALSE")]`
    /// (`pwdAttribute: userPassword` is added unless given), and returns its
    /// DN. Point a user at it as the rootdn: `replace: pwdPolicySubentry`.
    /// The name must be unique in the instance (e.g. take it from the
    /// [`Slapd::fresh_ou`] name on the shared one).
    pub async fn add_policy(&self, name: &str, attrs: &[(&str, &str)]) -> anyhow::Result<String> {
        let dn = format!("cn={},{}", escape_dn_value(name), Self::POLICIES_DN);
        let mut ldif = LdifRecord::add(&dn);
        ldif.attr("objectClass", "device");
        ldif.attr("objectClass", "pwdPolicy");
        ldif.attr("cn", name);
        if !attrs.iter().any(|(a, _)| a.eq_ignore_ascii_case("pwdAttribute")) {
            ldif.attr("pwdAttribute", "userPassword");
        }
        for (attr, value) in attrs {
            ldif.attr(attr, value);
        }
        self.modify(&ldif.finish())
            .await
            .with_context(|| format!("adding policy {dn}"))?;
        Ok(dn)
    }

    /// Reads attributes of the entry `dn` as the rootdn, as (lowercased
    /// attribute name, value) pairs in the order slapd returns them, one
    /// pair per value (base64 values decoded; bytes that are not UTF-8 are
    /// replaced). Operational attributes (`pwdAccountLockedTime`,
    /// `memberOf`, ...) come back only when named; `"+"` asks for all of
    /// them, no `attrs` for all user attributes. A missing entry is an
    /// error, a missing attribute is just absent.
    pub async fn read(&self, dn: &str, attrs: &[&str]) -> anyhow::Result<Vec<(String, String)>> {
        let mut args = self.root_args();
        args.extend(read_entry_args(dn, attrs));
        let output = RUNNER
            .run(&self.tools.ldapsearch, &args, None, TOOL_WITHIN)
            .await?;
        check_success(&format!("ldapsearch of {dn}"), &output)?;
        parse_ldif_attrs(&String::from_utf8_lossy(&output.stdout))
            .map(attrs_as_text)
            .with_context(|| format!("parsing ldapsearch output for {dn}"))
    }

    /// Tries a simple bind as `dn` with `password` (`ldapwhoami -x`):
    /// `Ok(true)` when it succeeds, `Ok(false)` on invalidCredentials (49,
    /// also what a locked account gets), an error otherwise (e.g. slapd is
    /// down, or 53 for an empty password).
    pub async fn can_bind(&self, dn: &str, password: &str) -> anyhow::Result<bool> {
        let output = whoami(&self.tools, &self.url(), dn, password, TOOL_WITHIN).await?;
        match output.status.code() {
            Some(0) => Ok(true),
            Some(49) => Ok(false),
            _ => Err(tool_failure(&format!("bind as {dn} ({})", self.url()), &output)),
        }
    }

    /// Adds `count` users to `ou_dn` in one `ldapmodify` run as the rootdn
    /// (for sync benchmarks): uid `<prefix><i>` with `i` zero-padded to 5
    /// digits from 0 (`bulk00000`, `bulk00001`, ...), `mail`
    /// `<uid>@example.org`, `mobile` `+1 555 <i, 7 digits>`, personal email
    /// `<uid>@home.example` and the password
    /// [`Slapd::bulk_user_password`]`(uid)`.
    pub async fn bulk_add_users(&self, ou_dn: &str, count: usize, prefix: &str) -> anyhow::Result<()> {
        let mut ldif = String::with_capacity(count.saturating_mul(400));
        for i in 0..count {
            let uid = format!("{prefix}{i:05}");
            let mail = format!("{uid}@example.org");
            let mobile = format!("+1 555 {i:07}");
            let personal = format!("{uid}@home.example");
            let password = Self::bulk_user_password(&uid);
            let user = LdapUser {
                uid: &uid,
                password: Some(&password),
                mail: Some(&mail),
                mobile: Some(&mobile),
                personal_email: Some(&personal),
            };
            let mut record = LdifRecord::add(&user_dn(&uid, ou_dn));
            user_attrs(&mut record, &user);
            ldif.push_str(&record.finish());
        }
        let count_u64 = u64::try_from(count).unwrap_or(u64::MAX);
        let within = TOOL_WITHIN + Duration::from_millis(count_u64.saturating_mul(20));
        self.modify_within(&ldif, within)
            .await
            .with_context(|| format!("bulk-adding {count} users to {ou_dn}"))
    }

    /// The password [`Slapd::bulk_add_users`] gives the user `uid`.
    pub fn bulk_user_password(uid: &str) -> String {
        format!("Bulk-{uid}-Pw1")
    }

    fn root_args(&self) -> Vec<String> {
        ldap_bind_args(&self.url(), Self::ROOT_DN, Self::ROOT_PW)
    }
}

enum LaunchError {
    /// The port was taken (retry with another one).
    PortInUse(anyhow::Error),
    Failed(anyhow::Error),
}

/// Starts slapd in `dir` on `port` and waits for a root bind.
async fn launch(tools: &Tools, dir: &Path, port: u16) -> Result<Running, LaunchError> {
    let log_start = std::fs::metadata(log_path(dir)).map_or(0, |m| m.len());
    let urls = format!("ldap://127.0.0.1:{port}/ {}", ldapi_url(dir));
    let args = [tools.slapd.as_os_str(), dir.as_os_str(), OsStr::new(&urls)];
    let mut running = Running::spawn("slapd", &tools.sh, LAUNCH_START, &args, Stdio::null())
        .await
        .map_err(LaunchError::Failed)?;
    let url = format!("ldap://127.0.0.1:{port}");
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let exited = running
            .try_exited()
            .context("polling slapd")
            .map_err(LaunchError::Failed)?;
        if let Some(status) = exited {
            let log = log_tail(&log_path(dir), log_start);
            let err =
                anyhow::anyhow!("slapd on port {port} exited during startup ({status}); its log:\n{log}");
            let port_taken = log.contains("errno=98")
                || log.contains("Address already in use")
                || std::net::TcpListener::bind(("127.0.0.1", port))
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::AddrInUse);
            return Err(if port_taken {
                LaunchError::PortInUse(err)
            } else {
                LaunchError::Failed(err)
            });
        }
        let probe = whoami(
            tools,
            &url,
            Slapd::ROOT_DN,
            Slapd::ROOT_PW,
            Duration::from_secs(5),
        )
        .await;
        if matches!(&probe, Ok(output) if output.status.success()) {
            return Ok(running);
        }
        if Instant::now() >= deadline {
            let last = match probe {
                Ok(output) => tool_failure("root bind", &output),
                Err(err) => err,
            };
            // Best effort: dropping `running` closes the pipe as well.
            let _ = running.terminate().await;
            return Err(LaunchError::Failed(last.context(format!(
                "slapd on port {port}: no successful root bind within {READY_WITHIN:?}; its log:\n{}",
                log_tail(&log_path(dir), log_start)
            ))));
        }
        tokio::time::sleep(READY_POLL_EVERY).await;
    }
}

async fn whoami(
    tools: &Tools,
    url: &str,
    dn: &str,
    password: &str,
    within: Duration,
) -> anyhow::Result<Output> {
    let args = ldap_bind_args(url, dn, password);
    RUNNER.run(&tools.ldapwhoami, &args, None, within).await
}

/// A temporary directory with a path short enough for the ldapi socket:
/// under `$TMPDIR` when that is short, else under `/tmp`.
fn make_dir() -> anyhow::Result<tempfile::TempDir> {
    let dir = crate::tools::short_temp_dir("slapd", "gh-slapd-", MAX_SOCKET_PATH - "/ldapi".len())?;
    for sub in ["slapd.d", "db"] {
        let path = dir.path().join(sub);
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
    }
    Ok(dir)
}

/// `cn=config` with `slapadd -n0`, the base entries with `slapadd -n1`.
async fn build_database(tools: &Tools, dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    // The directory was just created by this process: its owner is our uid.
    let uid = std::fs::metadata(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .uid();
    let config_path = dir.join("config.ldif");
    std::fs::write(&config_path, config_ldif(dir, uid))
        .with_context(|| format!("writing {}", config_path.display()))?;
    let data_path = dir.join("data.ldif");
    std::fs::write(&data_path, data_ldif()).with_context(|| format!("writing {}", data_path.display()))?;
    let config_dir = dir.join("slapd.d");
    for (db, ldif) in [("0", &config_path), ("1", &data_path)] {
        let args = vec![
            "-q".to_owned(),
            "-n".to_owned(),
            db.to_owned(),
            "-F".to_owned(),
            config_dir.display().to_string(),
            "-l".to_owned(),
            ldif.display().to_string(),
        ];
        let output = RUNNER.run(&tools.slapadd, &args, None, TOOL_WITHIN).await?;
        check_success(&format!("slapadd -n{db} of {}", ldif.display()), &output)?;
    }
    Ok(())
}

fn config_ldif(dir: &Path, uid: u32) -> String {
    let dir_str = dir.display().to_string();
    let base = Slapd::BASE_DN;
    let service_limits = [Slapd::SERVICE_DN, Slapd::WRITEONLY_DN, Slapd::READONLY_DN]
        .iter()
        .enumerate()
        .map(|(i, dn)| format!("olcLimits: {{{i}}}dn.exact=\"{dn}\" size=unlimited time=unlimited\n"))
        .collect::<String>();
    let svc = Slapd::SERVICE_DN;
    let wo = Slapd::WRITEONLY_DN;
    let pp_default = Slapd::POLICY_DN;
    // The paths are the only values that could need base64.
    let pid_file = ldif_line("olcPidFile", &format!("{dir_str}/slapd.pid"));
    let args_file = ldif_line("olcArgsFile", &format!("{dir_str}/slapd.args"));
    let db_dir = ldif_line("olcDbDirectory", &format!("{dir_str}/db"));
    format!(
        "dn: cn=config
objectClass: olcGlobal
cn: config
{pid_file}{args_file}
dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb
olcModuleLoad: ppolicy
olcModuleLoad: memberof

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif
include: file:///etc/ldap/schema/cosine.ldif
include: file:///etc/ldap/schema/inetorgperson.ldif
include: file:///etc/ldap/schema/misc.ldif

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by dn.regex=\"^gidNumber=[0-9]+\\+uidNumber={uid},cn=peercred,cn=external,cn=auth$\" manage by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
{db_dir}olcDbMaxSize: 1073741824
olcDbNoSync: TRUE
olcSuffix: {base}
olcRootDN: {root}
olcRootPW: {root_pw}
olcDbIndex: objectClass eq
olcDbIndex: uid eq
olcDbIndex: mail eq
olcDbIndex: mailLocalAddress eq
olcDbIndex: member eq
olcDbIndex: memberOf eq
olcDbIndex: entryCSN eq
olcDbIndex: entryUUID eq
olcDbIndex: modifyTimestamp eq
{service_limits}\
olcAccess: {{0}}to attrs=userPassword by dn.exact=\"{svc}\" manage by dn.exact=\"{wo}\" write by self write by anonymous auth by * none
olcAccess: {{1}}to attrs=pwdAccountLockedTime,pwdFailureTime,pwdReset,pwdHistory,pwdPolicySubentry,pwdChangedTime,pwdGraceUseTime by dn.exact=\"{svc}\" manage by dn.exact=\"{wo}\" read by users read by * none
olcAccess: {{2}}to * by dn.exact=\"{svc}\" write by dn.exact=\"{wo}\" write by users read by * none

dn: olcOverlay={{0}}ppolicy,olcDatabase={{1}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcPPolicyConfig
olcOverlay: {{0}}ppolicy
olcPPolicyDefault: {pp_default}
olcPPolicyHashCleartext: TRUE
olcPPolicyUseLockout: TRUE

dn: olcOverlay={{1}}memberof,olcDatabase={{1}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {{1}}memberof
olcMemberOfRefInt: TRUE
olcMemberOfGroupOC: groupOfNames
olcMemberOfMemberAD: member
olcMemberOfMemberOfAD: memberOf
",
        root = Slapd::ROOT_DN,
        root_pw = Slapd::ROOT_PW,
    )
}

fn data_ldif() -> String {
    let base = Slapd::BASE_DN;
    let default_policy = Slapd::POLICY_DN;
    let service_policy = Slapd::SERVICE_POLICY_DN;
    let services = [
        (Slapd::SERVICE_DN, "sspr", Slapd::SERVICE_PW),
        (Slapd::WRITEONLY_DN, "sspr-writeonly", Slapd::WRITEONLY_PW),
        (Slapd::READONLY_DN, "sspr-readonly", Slapd::READONLY_PW),
    ]
    .iter()
    .map(|(dn, cn, pw)| {
        // slapadd bypasses ppolicy: the password is stored in cleartext
        // (simple binds work the same).
        format!(
            "dn: {dn}\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject\ncn: {cn}\n\
             userPassword: {pw}\npwdPolicySubentry: {service_policy}\n\n"
        )
    })
    .collect::<String>();
    format!(
        "dn: {base}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: {policies}
objectClass: organizationalUnit
ou: policies

dn: {default_policy}
objectClass: device
objectClass: pwdPolicy
cn: default
pwdAttribute: userPassword
pwdMinLength: 8
pwdInHistory: 5
pwdCheckQuality: 2
pwdLockout: TRUE
pwdMaxFailure: 3
pwdLockoutDuration: 0
pwdFailureCountInterval: 0
pwdMustChange: TRUE
pwdAllowUserChange: TRUE
pwdSafeModify: FALSE

dn: {service_policy}
objectClass: device
objectClass: pwdPolicy
cn: service-accounts
pwdAttribute: userPassword
pwdLockout: FALSE

dn: ou=services,{base}
objectClass: organizationalUnit
ou: services

{services}\
dn: {people}
objectClass: organizationalUnit
ou: people
",
        policies = Slapd::POLICIES_DN,
        people = Slapd::PEOPLE_DN,
    )
}

fn user_dn(uid: &str, ou_dn: &str) -> String {
    format!("uid={},{ou_dn}", escape_dn_value(uid))
}

fn user_attrs(ldif: &mut LdifRecord, user: &LdapUser<'_>) {
    let capitalized = capitalized(user.uid);
    ldif.attr("objectClass", "inetOrgPerson");
    ldif.attr("objectClass", Slapd::PERSONAL_EMAIL_CLASS);
    ldif.attr("uid", user.uid);
    ldif.attr("cn", &format!("{capitalized} Example"));
    ldif.attr("sn", "Example");
    ldif.attr("givenName", &capitalized);
    let optional = [
        ("mail", user.mail),
        ("mobile", user.mobile),
        (Slapd::PERSONAL_EMAIL_ATTR, user.personal_email),
        ("userPassword", user.password),
    ];
    for (attr, value) in optional {
        if let Some(value) = value {
            ldif.attr(attr, value);
        }
    }
}

/// `ldapi://` + the URL-encoded path of the socket in `dir`.
fn ldapi_url(dir: &Path) -> String {
    let path = dir.join("ldapi");
    let mut url = String::from("ldapi://");
    for b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            url.push(char::from(*b));
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

/// slapd's log file.
fn log_path(dir: &Path) -> PathBuf {
    dir.join("slapd.log")
}
