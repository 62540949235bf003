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

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::OnceCell;
use tokio::time::Instant;

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
/// How long slapd may take to exit after SIGTERM before it gets SIGKILL.
const STOP_WITHIN: Duration = Duration::from_secs(10);
/// Time limit for one run of an LDAP client tool or slapadd.
const TOOL_WITHIN: Duration = Duration::from_secs(30);
/// Network timeout passed to the client tools (`-o nettimeout=`).
const NET_TIMEOUT_SECS: u32 = 10;
/// ldapi socket paths must fit in `sun_path` (108 bytes on Linux).
const MAX_SOCKET_PATH: usize = 100;
/// How much of slapd's log goes into error messages.
const LOG_TAIL: usize = 8 * 1024;

/// Runs slapd under `sh` and stops it when stdin reaches EOF. Arguments:
/// `$1` slapd binary, `$2` directory, `$3` listener URLs. It prints slapd's
/// pid, then exits with slapd's exit status. On EOF (our end of the pipe
/// closed) it SIGTERMs slapd and removes the directory once slapd is gone;
/// when slapd exits for another reason ([`Slapd::stop`] signals it
/// directly), the directory stays and the watcher is killed.
const LAUNCH_SCRIPT: &str = r#"exec 3<&0 </dev/null
"$1" -F "$2/slapd.d" -h "$3" -d none >>"$2/slapd.log" 2>&1 3<&- &
pid=$!
echo "$pid"
exec >/dev/null
(
  read -r _ <&3
  : >"$2/closing"
  kill -TERM "$pid" 2>/dev/null
) &
watcher=$!
exec 3<&-
wait "$pid"
rc=$?
if [ -e "$2/closing" ]; then rm -rf "$2"; else kill "$watcher" 2>/dev/null; fi
exit "$rc"
"#;

static SHARED: OnceCell<Slapd> = OnceCell::const_new();
static OU_COUNTER: AtomicU64 = AtomicU64::new(0);

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
        log_tail(self.dir.path(), 0)
    }

    /// Whether slapd is running (not stopped, and has not exited).
    pub fn is_running(&mut self) -> bool {
        match self.running.as_mut().map(Running::try_exited) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) | None => false,
        }
    }

    /// Stops slapd (SIGTERM; SIGKILL after 10 s) and waits until it has
    /// exited; connections to [`Slapd::port`] are refused afterwards. The
    /// data stays for [`Slapd::restart`]. Calling it again does nothing.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut running) = self.running.take() else {
            return Ok(());
        };
        running.terminate(&self.tools).await?;
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
        let output = run_tool(
            &self.tools.ldapmodify,
            &args,
            Some(ldif.as_bytes().to_vec()),
            within,
        )
        .await?;
        check_success("ldapmodify as the rootdn", &output)
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
        let output = run_tool(
            &self.tools.ldapmodify,
            &args,
            Some(ldif.as_bytes().to_vec()),
            TOOL_WITHIN,
        )
        .await?;
        check_success("ldapmodify on cn=config (ldapi, EXTERNAL)", &output)
    }

    /// Creates a new, uniquely named OU below [`Slapd::PEOPLE_DN`]
    /// (`ou=t<counter>-<random>`) and returns its DN, so tests sharing one
    /// slapd do not see each other's users.
    pub async fn fresh_ou(&self) -> anyhow::Result<String> {
        let n = OU_COUNTER.fetch_add(1, Ordering::Relaxed);
        let random = RandomState::new().hash_one((std::process::id(), n, std::time::Instant::now()));
        let name = format!("t{n}-{:08x}", random & 0xffff_ffff);
        let dn = format!("ou={name},{}", Self::PEOPLE_DN);
        let mut ldif = LdifRecord::add(&dn);
        ldif.attr("objectClass", "organizationalUnit");
        ldif.attr("ou", &name);
        self.modify(&ldif.finish())
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
        args.extend(
            [
                "-LLL",
                "-o",
                "ldif-wrap=no",
                "-b",
                dn,
                "-s",
                "base",
                "(objectClass=*)",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        args.extend(attrs.iter().map(|s| s.to_string()));
        let output = run_tool(&self.tools.ldapsearch, &args, None, TOOL_WITHIN).await?;
        check_success(&format!("ldapsearch of {dn}"), &output)?;
        parse_ldif_attrs(&String::from_utf8_lossy(&output.stdout))
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
        [
            "-x",
            "-H",
            &self.url(),
            "-D",
            Self::ROOT_DN,
            "-w",
            Self::ROOT_PW,
            "-o",
            &format!("nettimeout={NET_TIMEOUT_SECS}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// A running `sh` + slapd (see [`LAUNCH_SCRIPT`]). Dropping it closes the
/// pipe, so the shell stops slapd and removes the directory.
#[derive(Debug)]
struct Running {
    /// None once it has been waited for (then `exit` is set).
    shell: Option<std::process::Child>,
    exit: Option<ExitStatus>,
    /// Our end of the shell's stdin: the shell stops slapd when it closes.
    keepalive: Option<std::process::ChildStdin>,
    slapd_pid: u32,
}

impl Running {
    /// The exit status of the shell (= slapd's) once it has exited.
    fn try_exited(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            if let Some(shell) = self.shell.as_mut() {
                self.exit = shell.try_wait()?;
                if self.exit.is_some() {
                    self.shell = None;
                }
            }
        }
        Ok(self.exit)
    }

    /// SIGTERM to slapd, then waits for the shell to exit (SIGKILL to both
    /// after [`STOP_WITHIN`]).
    async fn terminate(&mut self, tools: &Tools) -> anyhow::Result<()> {
        if self.try_exited()?.is_some() {
            return Ok(());
        }
        signal(tools, "TERM", self.slapd_pid).await;
        if self.wait_exit(STOP_WITHIN).await? {
            return Ok(());
        }
        tracing::warn!(
            pid = self.slapd_pid,
            "slapd ignored SIGTERM for {STOP_WITHIN:?}, killing it"
        );
        signal(tools, "KILL", self.slapd_pid).await;
        if let Some(shell) = self.shell.as_mut() {
            if let Err(err) = shell.kill() {
                tracing::debug!(%err, "slapd shell already gone");
            }
        }
        anyhow::ensure!(
            self.wait_exit(Duration::from_secs(5)).await?,
            "slapd (pid {}) did not exit even after SIGKILL",
            self.slapd_pid
        );
        Ok(())
    }

    /// Polls until the shell has exited; false on timeout.
    async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + within;
        loop {
            if self.try_exited().context("waiting for slapd")?.is_some() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // EOF on the shell's stdin: it SIGTERMs slapd and removes the dir.
        drop(self.keepalive.take());
        if let Some(mut shell) = self.shell.take() {
            // Reap the shell without blocking this thread (no zombies).
            let reaper = std::thread::Builder::new()
                .name("slapd-reaper".to_owned())
                .spawn(move || shell.wait());
            if let Err(err) = reaper {
                tracing::debug!(%err, "could not start the slapd reaper thread");
            }
        }
    }
}

enum LaunchError {
    /// The port was taken (retry with another one).
    PortInUse(anyhow::Error),
    Failed(anyhow::Error),
}

/// Starts slapd in `dir` on `port` and waits for a root bind.
async fn launch(tools: &Tools, dir: &Path, port: u16) -> Result<Running, LaunchError> {
    let log_start = std::fs::metadata(dir.join("slapd.log")).map_or(0, |m| m.len());
    let urls = format!("ldap://127.0.0.1:{port}/ {}", ldapi_url(dir));
    let mut running = spawn_shell(tools, dir, &urls)
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
            let log = log_tail(dir, log_start);
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
            let _ = running.terminate(tools).await;
            return Err(LaunchError::Failed(last.context(format!(
                "slapd on port {port}: no successful root bind within {READY_WITHIN:?}; its log:\n{}",
                log_tail(dir, log_start)
            ))));
        }
        tokio::time::sleep(READY_POLL_EVERY).await;
    }
}

async fn spawn_shell(tools: &Tools, dir: &Path, urls: &str) -> anyhow::Result<Running> {
    let mut shell = std::process::Command::new(&tools.sh)
        .arg("-c")
        .arg(LAUNCH_SCRIPT)
        .arg("gatehouse-slapd")
        .arg(&tools.slapd)
        .arg(dir)
        .arg(urls)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {} for slapd", tools.sh.display()))?;
    let keepalive = shell.stdin.take();
    let stdout = shell.stdout.take();
    // From here on, dropping `running` stops everything.
    let mut running = Running {
        shell: Some(shell),
        exit: None,
        keepalive,
        slapd_pid: 0,
    };
    let stdout = stdout.context("slapd shell has no stdout")?;
    // The shell prints slapd's pid right after forking it.
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .context("reading slapd's pid")?
    .context("reading slapd's pid")?;
    running.slapd_pid = line
        .trim()
        .parse()
        .with_context(|| format!("slapd shell printed {line:?} instead of a pid"))?;
    Ok(running)
}

/// Sends a signal with the shell's `kill` builtin; failures (the process is
/// already gone) are only logged.
async fn signal(tools: &Tools, signal: &str, pid: u32) {
    let result = tokio::process::Command::new(&tools.sh)
        .args(["-c", "kill -s \"$1\" \"$2\"", "kill", signal, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    match result {
        Ok(status) if status.success() => {}
        Ok(status) => tracing::debug!(pid, signal, %status, "kill failed (process gone?)"),
        Err(err) => tracing::debug!(pid, signal, %err, "could not run kill"),
    }
}

async fn whoami(
    tools: &Tools,
    url: &str,
    dn: &str,
    password: &str,
    within: Duration,
) -> anyhow::Result<Output> {
    let args: Vec<String> = [
        "-x",
        "-H",
        url,
        "-D",
        dn,
        "-w",
        password,
        "-o",
        &format!("nettimeout={NET_TIMEOUT_SECS}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    run_tool(&tools.ldapwhoami, &args, None, within).await
}

/// A temporary directory with a path short enough for the ldapi socket:
/// under `$TMPDIR` when that is short, else under `/tmp`.
fn make_dir() -> anyhow::Result<tempfile::TempDir> {
    let tmp = std::env::temp_dir();
    // "gh-slapd-" + 6 random characters + "/ldapi"
    let fits = tmp.as_os_str().len() + 1 + 15 + 6 < MAX_SOCKET_PATH;
    let base = if fits { tmp } else { PathBuf::from("/tmp") };
    let dir = tempfile::Builder::new()
        .prefix("gh-slapd-")
        .tempdir_in(&base)
        .with_context(|| format!("creating slapd's temporary directory in {}", base.display()))?;
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
        let output = run_tool(&tools.slapadd, &args, None, TOOL_WITHIN).await?;
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
    let mut chars = user.uid.chars();
    let capitalized: String = chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default();
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

/// One LDIF record (values via [`ldif_line`]).
struct LdifRecord(String);

impl LdifRecord {
    /// A `changetype: add` record (for ldapmodify).
    fn add(dn: &str) -> LdifRecord {
        let mut record = LdifRecord(String::new());
        record.attr("dn", dn);
        record.attr("changetype", "add");
        record
    }

    fn attr(&mut self, name: &str, value: &str) {
        self.0.push_str(&ldif_line(name, value));
    }

    /// The record with its terminating empty line.
    fn finish(mut self) -> String {
        self.0.push('\n');
        self.0
    }
}

/// `name: value\n`, or `name:: base64\n` when `value` is not a
/// SAFE-STRING (RFC 2849).
fn ldif_line(name: &str, value: &str) -> String {
    if is_safe_ldif_value(value) {
        format!("{name}: {value}\n")
    } else {
        format!("{name}:: {}\n", base64_encode(value.as_bytes()))
    }
}

fn is_safe_ldif_value(value: &str) -> bool {
    let starts_ok = !matches!(value.bytes().next(), Some(b' ' | b':' | b'<'));
    let ends_ok = !value.ends_with(' ');
    starts_ok
        && ends_ok
        && value
            .bytes()
            .all(|b| b.is_ascii() && !matches!(b, 0 | b'\n' | b'\r'))
}

/// Escapes an RDN value (RFC 4514).
fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && matches!(c, ' ' | '#'))
            || (i == last && c == ' ');
        if c == '\0' {
            out.push_str("\\00");
            continue;
        }
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The attribute values in `ldapsearch -LLL` output (entries' `dn:` lines
/// are skipped).
fn parse_ldif_attrs(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut lines: Vec<String> = Vec::new();
    for line in text.lines() {
        if let (Some(rest), Some(last)) = (line.strip_prefix(' '), lines.last_mut()) {
            last.push_str(rest);
        } else {
            lines.push(line.to_owned());
        }
    }
    let mut attrs = Vec::new();
    for line in lines {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = line
            .split_once(':')
            .with_context(|| format!("LDIF line without a colon: {line:?}"))?;
        if name.eq_ignore_ascii_case("dn") {
            continue;
        }
        let value = if let Some(encoded) = rest.strip_prefix(':') {
            let bytes = base64_decode(encoded.trim())
                .with_context(|| format!("bad base64 in the value of {name}: {encoded:?}"))?;
            String::from_utf8_lossy(&bytes).into_owned()
        } else if rest.starts_with('<') {
            anyhow::bail!("URL values are not supported: {line:?}");
        } else {
            rest.trim_start_matches(' ').to_owned()
        };
        attrs.push((name.to_ascii_lowercase(), value));
    }
    Ok(attrs)
}

const BASE64_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].iter().enumerate() {
            if i <= chunk.len() {
                let index = usize::try_from((n >> shift) & 0x3f).unwrap_or(0);
                out.push(char::from(BASE64_ALPHABET.get(index).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            break;
        }
        let value = BASE64_ALPHABET
            .iter()
            .position(|&a| a == c)
            .with_context(|| format!("invalid base64 character {:?}", char::from(c)))?;
        acc = (acc << 6) | u32::try_from(value).unwrap_or(0);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap_or(0));
        }
    }
    Ok(out)
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

/// slapd's log from byte `from` on (its last [`LOG_TAIL`] bytes).
fn log_tail(dir: &Path, from: u64) -> String {
    let bytes = std::fs::read(dir.join("slapd.log")).unwrap_or_default();
    let from = usize::try_from(from).unwrap_or(0).min(bytes.len());
    let tail = bytes.get(from..).unwrap_or_default();
    let tail = tail
        .get(tail.len().saturating_sub(LOG_TAIL)..)
        .unwrap_or_default();
    let text = String::from_utf8_lossy(tail).trim().to_owned();
    if text.is_empty() {
        "(empty)".to_owned()
    } else {
        text
    }
}

/// Runs `program` (stdin fed from `input`, closed when `None`), killing it
/// after `within`. A non-zero exit is not an error here.
async fn run_tool(
    program: &Path,
    args: &[String],
    input: Option<Vec<u8>>,
    within: Duration,
) -> anyhow::Result<Output> {
    let name = program.file_name().map_or_else(
        || program.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let stdin = child.stdin.take();
    let feed = async move {
        if let (Some(mut stdin), Some(input)) = (stdin, input) {
            // A tool that stops early closes the pipe; its stderr says why.
            if let Err(err) = stdin.write_all(&input).await {
                tracing::debug!(%err, "writing to the tool's stdin failed");
            }
        }
    };
    let run = async { tokio::join!(feed, child.wait_with_output()).1 };
    match tokio::time::timeout(within, run).await {
        Ok(output) => output.with_context(|| format!("running {name}")),
        Err(_) => anyhow::bail!("{name} {} did not finish within {within:?}", args.join(" ")),
    }
}

fn check_success(what: &str, output: &Output) -> anyhow::Result<()> {
    if output.status.success() {
        Ok(())
    } else {
        Err(tool_failure(what, output))
    }
}

fn tool_failure(what: &str, output: &Output) -> anyhow::Error {
    let text = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim();
        let start = text.len().saturating_sub(4096);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text.get(start..).unwrap_or_default().to_owned()
    };
    let exit = output
        .status
        .code()
        .map_or_else(|| output.status.to_string(), |code| format!("exit code {code}"));
    anyhow::anyhow!(
        "{what} failed ({exit}): {}{}",
        text(&output.stderr),
        match text(&output.stdout) {
            out if out.is_empty() => String::new(),
            out => format!("\n(stdout: {out})"),
        }
    )
}
