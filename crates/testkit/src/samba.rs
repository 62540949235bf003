//! A private Samba Active Directory domain controller (Debian's `samba` 4.17
//! with `samba-ad-provision`, `samba-dsdb-modules` and `samba-vfs-modules`;
//! the fixture talks to it with `ldap-utils`), for tests against real AD
//! semantics: `unicodePwd` resets and changes, the domain password policy,
//! lockout, `pwdLastSet`, delegated rights and AD's bind error codes.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use gatehouse_testkit::{AdUser, SambaDc};
//! let dc = SambaDc::shared().await?; // one DC per test binary
//! let ou = dc.fresh_ou().await?; // this test's own users
//! let name = SambaDc::unique_name("alice"); // unique in the whole domain
//! let alice = AdUser {
//!     name: &name,
//!     password: Some("Initial-Alice-1"),
//!     ou: Some(&ou),
//!     ..Default::default()
//! };
//! let dn = dc.add_user(&alice).await?;
//! let (service_upn, service_pw) = dc.delegate(&SambaDc::unique_name("sspr"), &ou).await?;
//! // ... point the code under test at dc.ldaps_url(), bind as service_upn ...
//! assert!(dc.can_bind(&SambaDc::upn(&name), "Initial-Alice-1").await?);
//! # let _ = (dn, service_pw);
//! # Ok(()) }
//! ```
//!
//! # Requirements
//!
//! * **root**: Samba's LDAP (389/636), global catalog (3268/3269) and KDC
//!   (88) ports are fixed and privileged, and samba only runs as a DC as
//!   root. [`unavailable_reason`] says why the fixture cannot run here.
//! * The Debian packages in [`NOT_INSTALLED`], `flock` (util-linux) and,
//!   optionally, `openssl` (else samba makes its own TLS key on every first
//!   start, which takes seconds).
//!
//! # The domain
//!
//! * Realm [`SambaDc::REALM`], NetBIOS domain [`SambaDc::DOMAIN`], base
//!   [`SambaDc::BASE_DN`], DC `dc1.example.test`; the domain administrator
//!   is [`SambaDc::ADMIN`] / [`SambaDc::ADMIN_PW`]. Nothing but LDAP,
//!   CLDAP, the KDC and RPC runs (`server services = ldap cldap kdc rpc`: no
//!   SMB, DNS or winbind).
//! * Domain password policy: complexity on, minimum length 8, history 5,
//!   minimum age 0, maximum age 0 (never expires), lockout after 3 bad
//!   passwords for 30 minutes (counter reset after 30 minutes). It applies
//!   to every account, the ones from [`SambaDc::delegate`] and
//!   [`SambaDc::add_plain_account`] included: bind them with a wrong
//!   password three times and they are locked.
//! * `old password allowed period = 0`: Samba's default (60 minutes) keeps
//!   accepting the *previous* password for binds after a change or reset.
//! * Simple binds need TLS (`ldap server require strong auth` is left at
//!   its default): use [`SambaDc::ldaps_url`], or StartTLS on
//!   [`SambaDc::ldap_url`]. A simple bind on plain `ldap://` gets
//!   `Strong(er) authentication required (8)`. The server certificate (for
//!   `DC1.example.test`, `dc1.example.test`, `localhost` and every
//!   `127.0.0.N`) is signed by the test CA in [`SambaDc::ca_file`]; the
//!   fixture's own client tools do not verify it (`LDAPTLS_REQCERT=never`).
//! * `sAMAccountName` is unique in the whole domain, not per OU, and at most
//!   20 characters long: tests sharing a DC take their account names from
//!   [`SambaDc::unique_name`]. The user principal name is
//!   `<sAMAccountName>@example.test` ([`SambaDc::upn`]).
//! * Users go into a per-test OU from [`SambaDc::fresh_ou`], or into
//!   `CN=Users`. The personal email address is `otherMailbox`, the phone
//!   number `mobile`.
//!
//! # Addresses
//!
//! As the ports cannot be changed, every DC gets its own loopback address
//! `127.0.0.N` (N from 2 up; `interfaces = 127.0.0.N/8`, `bind interfaces
//! only = yes`, no `ip addr add` needed). An address is skipped when another
//! DC of this fixture holds it (an `flock` on
//! `/tmp/gatehouse-samba-127.0.0.N.lock`, held until that DC has exited, so
//! test binaries running at the same time do not collide) or when something
//! already answers on its port 636 or 389.
//!
//! # Speed
//!
//! The first DC of a test process provisions the domain into a template
//! directory (`samba-tool domain provision`, about 3.5 s on an idle machine,
//! 10 s on a busy one) and sets the policy there. Every DC then is a `cp -a`
//! of the template (tens of milliseconds) plus `samba -i -M single`, ready
//! for an LDAPS bind after about 0.5 s. `samba-tool` calls
//! ([`SambaDc::add_user`], [`SambaDc::delegate`]) cost about 0.5 s each
//! (Python start-up); plain LDAP calls are fast.
//!
//! # Lifetime
//!
//! samba runs under a small `sh` that holds the read end of a pipe whose
//! write end only this process holds (samba's stdin is that pipe too:
//! `samba -i` exits at EOF). When the pipe closes (the [`SambaDc`] is
//! dropped, or the test process exits or is killed), samba stops and the
//! shell removes the DC's directory, so even the never-dropped
//! [`SambaDc::shared`] instance does not outlive the tests. The template
//! directory is removed the same way when the test process ends.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::ldif::{
    attrs_as_text, base64_encode, capitalized, escape_dn_value, fresh_ou_name, ou_record, parse_ldif_attrs,
    random_u64, read_entry_args, LdifRecord,
};
use crate::tools::{
    check_success, ldap_bind_args, log_tail, reap_in_background, tool_failure, Runner, Running, TOOL_WITHIN,
};

/// The error text when Samba or the OpenLDAP client tools are not installed.
pub const NOT_INSTALLED: &str = "Samba AD DC not found: install the Debian packages `samba \
     samba-ad-provision samba-dsdb-modules samba-vfs-modules ldap-utils` (apt-get install -y \
     --no-install-recommends samba samba-ad-provision samba-dsdb-modules samba-vfs-modules ldap-utils); \
     the fixture runs its own DC, the system's samba services can stay stopped";

/// The error text when the tests do not run as root.
pub const NEEDS_ROOT: &str = "the Samba AD DC fixture must run as root (samba listens on the \
     privileged ports 88, 389 and 636 and runs as a domain controller only as root)";

/// How long samba may take from launch to the first successful LDAPS bind.
const READY_WITHIN: Duration = Duration::from_secs(60);
const READY_POLL_EVERY: Duration = Duration::from_millis(50);
/// Time limit for `samba-tool domain provision`.
const PROVISION_WITHIN: Duration = Duration::from_secs(300);
/// Time limit for any other `samba-tool` run (Python start-up is slow on a
/// busy machine).
const SAMBA_TOOL_WITHIN: Duration = Duration::from_secs(120);
/// How long [`SambaDc::restart`] retries while the address is still in use.
const RESTART_RETRY_FOR: Duration = Duration::from_secs(10);
/// Addresses tried by [`SambaDc::start`] when samba finds its ports taken.
const ADDRESS_ATTEMPTS: usize = 5;
/// The loopback host numbers DCs may use: `127.0.0.2` to `127.0.0.254`.
const FIRST_HOST: u8 = 2;
const LAST_HOST: u8 = 254;
/// Where the per-address lock files live: fixed (not `$TMPDIR`), so every
/// test process on the machine sees the same ones.
const LOCK_DIR: &str = "/tmp";
/// How long a TCP connect may take to tell whether an address is in use.
const PROBE_CONNECT_WITHIN: Duration = Duration::from_secs(1);
/// Samba's Unix sockets live below the DC's directory (`run/ncalrpc/...`),
/// and `sun_path` holds 108 bytes: keep the directory short.
const MAX_DIR_PATH: usize = 60;
/// The IP address written into the template's `smb.conf` (replaced in each
/// copy).
const TEMPLATE_IP: &str = "127.0.0.1";

/// schemaIDGUID of the `user` class: the inherited object type of the
/// delegation ACEs (they apply to user objects below the OU).
const USER_CLASS_GUID: &str = "bf967aba-0de6-11d0-a285-00aa003049e2";
/// The `User-Force-Change-Password` control access right ("Reset Password").
const RESET_PASSWORD_RIGHT_GUID: &str = "00299570-246d-11d0-a768-00aa006e0529";
/// schemaIDGUID of `lockoutTime`.
const LOCKOUT_TIME_GUID: &str = "28630ebf-41d5-11d1-a9c1-0000f80367c1";
/// schemaIDGUID of `pwdLastSet`.
const PWD_LAST_SET_GUID: &str = "bf967a0a-0de6-11d0-a285-00aa003049e2";

/// How the fixture runs its tools: `LDAPTLS_REQCERT=never` (samba's
/// certificate is from a test CA), and a timeout error hides the bind
/// password.
const RUNNER: Runner = Runner {
    env: &[("LDAPTLS_REQCERT", "never")],
    hide_passwords: true,
};

/// Starts samba in the background under the supervising shell
/// ([`Running::spawn`]). Arguments: `$1` samba binary, `$2` directory. The
/// shell's stderr is the DC's address lock file: it is kept open as fd 4
/// (inherited by samba) so the address stays locked until samba has exited.
/// samba's stdin is the pipe too (`-i` exits at EOF). When samba exits for
/// another reason than the pipe closing ([`SambaDc::stop`] signals it
/// directly, or it failed to start), the directory stays.
const LAUNCH_START: &str = r#"exec 3<&0 </dev/null 4>&2 2>/dev/null
"$1" -i -M single -s "$2/etc/smb.conf" <&3 >>"$2/log/samba.out" 2>&1 3<&- &
"#;

/// Removes `$1` when stdin reaches EOF (the template directory, at the end
/// of the test process).
const JANITOR_SCRIPT: &str = r#"read -r _
rm -rf "$1"
"#;

static TEMPLATE: OnceCell<Template> = OnceCell::const_new();
static SHARED: OnceCell<SambaDc> = OnceCell::const_new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A user for [`SambaDc::add_user`], made with `samba-tool user create
/// --use-username-as-cn`: `CN=<name>,<ou>` with `sAMAccountName` `<name>`,
/// `userPrincipalName` `<name>@example.test`, `givenName` "<Name>" and `sn`
/// "Example". `None` fields are left out of the entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdUser<'a> {
    /// `sAMAccountName` and `cn`: unique in the domain, at most 20
    /// characters (see [`SambaDc::unique_name`]).
    pub name: &'a str,
    /// The initial password (must meet the policy: 8 characters, three of
    /// upper case, lower case, digits, symbols). `None`: a random strong
    /// password nobody knows (AD needs one at creation).
    pub password: Option<&'a str>,
    /// `mail`, the work address.
    pub mail: Option<&'a str>,
    /// `mobile`.
    pub mobile: Option<&'a str>,
    /// `otherMailbox`, the personal address.
    pub other_mailbox: Option<&'a str>,
    /// The DN of the OU to create the user in (below [`SambaDc::BASE_DN`]);
    /// `None`: `CN=Users,DC=example,DC=test`.
    pub ou: Option<&'a str>,
}

/// Why the fixture cannot run here (missing packages, not root), or `None`
/// when it can.
pub fn unavailable_reason() -> Option<String> {
    if let Err(err) = Tools::find() {
        return Some(format!("{err:#}"));
    }
    if !is_root() {
        return Some(NEEDS_ROOT.to_owned());
    }
    None
}

/// True when Samba, its AD data and modules and the OpenLDAP client tools
/// are installed (it may still need root: see [`unavailable_reason`]).
pub fn is_installed() -> bool {
    Tools::find().is_ok()
}

/// Whether this process runs as root (the owner of `/proc/self`).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The `unicodePwd` value for `password`, base64 for an LDIF `unicodePwd::`
/// line: the password in double quotes, UTF-16LE.
pub fn unicode_pwd_base64(password: &str) -> String {
    let quoted = format!("\"{password}\"");
    let bytes: Vec<u8> = quoted.encode_utf16().flat_map(u16::to_le_bytes).collect();
    base64_encode(&bytes)
}

/// A private Samba AD DC on `127.0.0.N` (see the [module docs](self)).
///
/// Dropping it stops samba and removes its directory; [`SambaDc::stop`]
/// stops it but keeps the data for [`SambaDc::restart`].
#[derive(Debug)]
pub struct SambaDc {
    tools: Tools,
    // Declared before `lock` and `dir`: dropping it closes the pipe first,
    // so samba is told to stop before the address is unlocked (the launch
    // shell keeps its own handle on the lock until samba has exited) and
    // before its directory is removed.
    running: Option<Running>,
    lock: AddressLock,
    dir: tempfile::TempDir,
}

/// The binaries the fixture runs.
#[derive(Debug, Clone)]
struct Tools {
    sh: PathBuf,
    samba: PathBuf,
    samba_tool: PathBuf,
    ldapsearch: PathBuf,
    ldapmodify: PathBuf,
    flock: PathBuf,
    cp: PathBuf,
    openssl: Option<PathBuf>,
}

impl Tools {
    fn find() -> anyhow::Result<Tools> {
        let find = |binary: &str, package: &str| crate::require_tool(binary, package).context(NOT_INSTALLED);
        let tools = Tools {
            sh: crate::require_tool("sh", "dash")?,
            samba: find("samba", "samba")?,
            samba_tool: find("samba-tool", "samba-common-bin")?,
            ldapsearch: find("ldapsearch", "ldap-utils")?,
            ldapmodify: find("ldapmodify", "ldap-utils")?,
            flock: crate::require_tool("flock", "util-linux")?,
            cp: crate::require_tool("cp", "coreutils")?,
            openssl: crate::find_executable("openssl", std::env::var_os("PATH").as_deref()),
        };
        let schema = Path::new("/usr/share/samba/setup/ad-schema");
        anyhow::ensure!(
            schema.is_dir(),
            "{} is missing (Debian package `samba-ad-provision`): {NOT_INSTALLED}",
            schema.display()
        );
        for (module, package) in [
            ("samba/ldb/acl.so", "samba-dsdb-modules"),
            ("samba/vfs/acl_xattr.so", "samba-vfs-modules"),
        ] {
            anyhow::ensure!(
                lib_file_exists(module),
                "/usr/lib/<arch>/{module} is missing (Debian package `{package}`): {NOT_INSTALLED}"
            );
        }
        Ok(tools)
    }
}

/// Whether `/usr/lib/<anything>/<relative>` exists (the multiarch
/// directory, e.g. `x86_64-linux-gnu`), or `/usr/lib/<relative>`.
fn lib_file_exists(relative: &str) -> bool {
    let lib = Path::new("/usr/lib");
    if lib.join(relative).exists() {
        return true;
    }
    std::fs::read_dir(lib)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|entry| entry.path().join(relative).exists())
        })
        .unwrap_or(false)
}

impl SambaDc {
    /// The Kerberos realm.
    pub const REALM: &str = "EXAMPLE.TEST";
    /// The NetBIOS domain name.
    pub const DOMAIN: &str = "EXAMPLE";
    /// The domain partition.
    pub const BASE_DN: &str = "DC=example,DC=test";
    /// The domain administrator's bind name (a UPN).
    pub const ADMIN: &str = "Administrator@example.test";
    pub const ADMIN_PW: &str = "Adm1n-Passw0rd!";
    /// The default container for users ([`AdUser::ou`] `None`).
    pub const USERS_DN: &str = "CN=Users,DC=example,DC=test";

    /// Starts a private DC on the next free `127.0.0.N` and returns once an
    /// LDAPS bind as [`SambaDc::ADMIN`] works. The domain is provisioned
    /// once per test process into a template (with the password policy of
    /// the [module docs](self)); each DC is a copy of it.
    pub async fn start() -> anyhow::Result<SambaDc> {
        let tools = Tools::find()?;
        anyhow::ensure!(is_root(), NEEDS_ROOT);
        let template = TEMPLATE
            .get_or_try_init(|| Template::build(&tools))
            .await
            .context("provisioning the Samba AD template domain")?;
        let started = Instant::now();
        let dir = make_dir("gh-samba-")?;
        copy_dir(&tools, template.dir.path(), dir.path()).await?;
        let copied = started.elapsed();
        let mut tried = Vec::new();
        let mut last_err = None;
        for attempt in 1..=ADDRESS_ATTEMPTS {
            let lock = claim_address(&tools, &tried).await?;
            tried.push(lock.host);
            write_conf(template.dir.path(), dir.path(), &lock.ip())?;
            match launch(&tools, dir.path(), &lock).await {
                Ok(running) => {
                    tracing::debug!(
                        ip = lock.ip(),
                        dir = %dir.path().display(),
                        copy_ms = copied.as_millis(),
                        total_ms = started.elapsed().as_millis(),
                        "samba DC started"
                    );
                    return Ok(SambaDc {
                        tools,
                        running: Some(running),
                        lock,
                        dir,
                    });
                }
                Err(LaunchError::AddressInUse(err)) => {
                    tracing::debug!(
                        attempt,
                        ip = lock.ip(),
                        err = format!("{err:#}"),
                        "samba: address taken, trying the next one"
                    );
                    last_err = Some(err);
                }
                Err(LaunchError::Failed(err)) => return Err(err),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("samba launch never attempted"))).context(format!(
            "samba: no usable 127.0.0.N address after {ADDRESS_ATTEMPTS} attempts"
        ))
    }

    /// The DC of this test binary, started on first use and shared by all
    /// its tests (from any tokio runtime). Never stopped by the tests: it
    /// ends with the test process. Tests keep out of each other's way with
    /// [`SambaDc::fresh_ou`] and [`SambaDc::unique_name`]; a test that
    /// changes domain-wide settings (the password policy) or stops the DC
    /// starts its own with [`SambaDc::start`].
    pub async fn shared() -> anyhow::Result<&'static SambaDc> {
        SHARED.get_or_try_init(SambaDc::start).await
    }

    /// The DC's address, `127.0.0.N` (the same after [`SambaDc::restart`]).
    pub fn ip(&self) -> String {
        self.lock.ip()
    }

    /// `ldaps://127.0.0.N` (port 636).
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://{}", self.ip())
    }

    /// `ldap://127.0.0.N` (port 389): simple binds need StartTLS first.
    pub fn ldap_url(&self) -> String {
        format!("ldap://{}", self.ip())
    }

    /// The PEM file of the CA that signed the DC's certificate (valid for
    /// `DC1.example.test`, `dc1.example.test`, `localhost` and every
    /// `127.0.0.N`), for clients that verify the server. Without `openssl`
    /// on the machine samba made its own self-signed pair: then this is
    /// samba's CA, and the certificate names only `DC1.example.test`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("private/tls/ca.pem")
    }

    /// The DC's `smb.conf` (for `samba-tool ... -s`, see
    /// [`SambaDc::samba_tool`]).
    pub fn conf_file(&self) -> PathBuf {
        conf_path(self.dir.path())
    }

    /// The directory holding the configuration, the databases and the logs;
    /// removed when the [`SambaDc`] is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last 8 KiB of samba's output (`log/samba.out`).
    pub fn log(&self) -> String {
        log_tail(&log_path(self.dir.path()), 0)
    }

    /// Whether samba is running (not stopped, and has not exited).
    pub fn is_running(&mut self) -> bool {
        self.running.as_mut().is_some_and(Running::is_alive)
    }

    /// Stops samba (SIGTERM; SIGKILL after 10 s) and waits until it has
    /// exited. The data and the address stay for [`SambaDc::restart`].
    /// Calling it again does nothing.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut running) = self.running.take() else {
            return Ok(());
        };
        running.terminate().await?;
        tracing::debug!(ip = self.ip(), "samba DC stopped");
        Ok(())
    }

    /// Starts samba again on the same address with the same data (stopping
    /// it first if it is running) and returns once an LDAPS bind as
    /// [`SambaDc::ADMIN`] works.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        let started = Instant::now();
        let deadline = started + RESTART_RETRY_FOR;
        loop {
            match launch(&self.tools, self.dir.path(), &self.lock).await {
                Ok(running) => {
                    self.running = Some(running);
                    tracing::debug!(
                        ip = self.ip(),
                        ms = started.elapsed().as_millis(),
                        "samba DC restarted"
                    );
                    return Ok(());
                }
                Err(LaunchError::AddressInUse(err)) if Instant::now() >= deadline => {
                    return Err(err.context(format!(
                        "samba restart: {} still in use after {RESTART_RETRY_FOR:?}",
                        self.ip()
                    )));
                }
                Err(LaunchError::AddressInUse(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(LaunchError::Failed(err)) => return Err(err),
            }
        }
    }

    /// Creates a new, uniquely named OU `OU=t<counter>-<random>` below
    /// [`SambaDc::BASE_DN`] and returns its DN, so tests sharing one DC do
    /// not see each other's users. (Account names must still be unique in
    /// the whole domain: [`SambaDc::unique_name`].)
    pub async fn fresh_ou(&self) -> anyhow::Result<String> {
        let name = fresh_ou_name();
        let dn = format!("OU={name},{}", Self::BASE_DN);
        self.modify(&ou_record(&dn, &name))
            .await
            .with_context(|| format!("creating {dn}"))?;
        Ok(dn)
    }

    /// A `sAMAccountName` no other call returns: up to 10 characters of
    /// `prefix`, `-` and 8 random hex digits (at most 19 characters; AD
    /// allows 20).
    pub fn unique_name(prefix: &str) -> String {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let short: String = prefix.chars().take(10).collect();
        let random = random_u64() ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        format!("{short}-{:08x}", random & 0xffff_ffff)
    }

    /// The user principal name of the account `name`: `name@example.test`.
    pub fn upn(name: &str) -> String {
        format!("{name}@example.test")
    }

    /// Creates the user with `samba-tool user create --use-username-as-cn`
    /// (see [`AdUser`]), then sets `mobile` and `otherMailbox` with an LDAP
    /// modify as [`SambaDc::ADMIN`]. Returns the user's DN. The account is
    /// enabled and the password does not have to be changed
    /// (`pwdLastSet` is now).
    pub async fn add_user(&self, user: &AdUser<'_>) -> anyhow::Result<String> {
        anyhow::ensure!(!user.name.is_empty(), "AdUser::name must not be empty");
        let container = user.ou.unwrap_or(Self::USERS_DN);
        let dn = format!("CN={},{container}", escape_dn_value(user.name));
        let random_password;
        let password = match user.password {
            Some(password) => password,
            None => {
                random_password = strong_password();
                &random_password
            }
        };
        let mut args = vec![
            "user".to_owned(),
            "create".to_owned(),
            user.name.to_owned(),
            password.to_owned(),
            "--use-username-as-cn".to_owned(),
            format!("--given-name={}", capitalized(user.name)),
            "--surname=Example".to_owned(),
        ];
        if let Some(mail) = user.mail {
            args.push(format!("--mail-address={mail}"));
        }
        if let Some(ou) = user.ou {
            args.push(format!("--userou={}", relative_to_base(ou)?));
        }
        self.samba_tool_owned(args)
            .await
            .with_context(|| format!("creating user {dn}"))?;
        let extra: Vec<(&str, &str)> = [("mobile", user.mobile), ("otherMailbox", user.other_mailbox)]
            .into_iter()
            .filter_map(|(attr, value)| value.map(|v| (attr, v)))
            .collect();
        if !extra.is_empty() {
            let mut ldif = LdifRecord::modify(&dn);
            for (attr, value) in extra {
                ldif.replace(attr, value);
            }
            self.modify(&ldif.finish())
                .await
                .with_context(|| format!("setting mobile/otherMailbox of {dn}"))?;
        }
        Ok(dn)
    }

    /// Adds the global security group `CN=<name>,<ou_dn>` (`sAMAccountName`
    /// `<name>`, unique in the domain) with these members (DNs of users or
    /// groups; may be empty) and returns its DN. The members get `memberOf`.
    pub async fn add_group(&self, ou_dn: &str, name: &str, members: &[String]) -> anyhow::Result<String> {
        let dn = format!("CN={},{ou_dn}", escape_dn_value(name));
        let mut ldif = LdifRecord::add(&dn);
        ldif.attr("objectClass", "group");
        ldif.attr("cn", name);
        ldif.attr("sAMAccountName", name);
        for member in members {
            ldif.attr("member", member);
        }
        self.modify(&ldif.finish())
            .await
            .with_context(|| format!("adding group {dn}"))?;
        Ok(dn)
    }

    /// Runs `ldapmodify` over LDAPS as [`SambaDc::ADMIN`] with `ldif`
    /// (records with `changetype:`). The error carries ldapmodify's output,
    /// e.g. `Constraint violation (19)` and Samba's `0000052D: ...` text.
    pub async fn modify(&self, ldif: &str) -> anyhow::Result<()> {
        self.modify_as(Self::ADMIN, Self::ADMIN_PW, ldif).await
    }

    /// [`SambaDc::modify`], bound as `who` (a UPN or a DN) with `password`:
    /// to check what an account may do, e.g. a reset by a delegated
    /// account.
    pub async fn modify_as(&self, who: &str, password: &str, ldif: &str) -> anyhow::Result<()> {
        let args = self.bind_args(who, password);
        let what = format!("ldapmodify as {who}");
        RUNNER
            .ldapmodify(&self.tools.ldapmodify, &args, ldif, TOOL_WITHIN, &what)
            .await
    }

    /// Reads attributes of the entry `dn` (`""`: the rootDSE) as
    /// [`SambaDc::ADMIN`] over LDAPS, as (lowercased attribute name, value)
    /// pairs, one pair per value (base64 values decoded; bytes that are not
    /// UTF-8, e.g. in `objectSid`, are replaced). Operational and
    /// constructed attributes (`msDS-User-Account-Control-Computed`,
    /// `allowedAttributesEffective`, ...) come back only when named. A
    /// missing entry is an error, a missing attribute is just absent.
    pub async fn read(&self, dn: &str, attrs: &[&str]) -> anyhow::Result<Vec<(String, String)>> {
        self.read_as(Self::ADMIN, Self::ADMIN_PW, dn, attrs).await
    }

    /// [`SambaDc::read`], bound as `who` with `password` (what that account
    /// may see, e.g. `allowedAttributesEffective`).
    pub async fn read_as(
        &self,
        who: &str,
        password: &str,
        dn: &str,
        attrs: &[&str],
    ) -> anyhow::Result<Vec<(String, String)>> {
        Ok(attrs_as_text(self.read_bytes(who, password, dn, attrs).await?))
    }

    /// Tries a simple bind over LDAPS as `who` (a UPN like
    /// `alice@example.test`, or a DN) with `password`: `Ok(true)` when it
    /// succeeds, `Ok(false)` on invalidCredentials (49: wrong password,
    /// locked, disabled, must change, expired; [`SambaDc::bind_error`] tells
    /// which), an error otherwise.
    pub async fn can_bind(&self, who: &str, password: &str) -> anyhow::Result<bool> {
        Ok(self.bind_error(who, password).await?.is_none())
    }

    /// Tries a simple bind like [`SambaDc::can_bind`]: `None` when it
    /// succeeds, on invalidCredentials (49) `Some` of the server's diagnostic
    /// text, e.g. `80090308: LdapErr: DSID-0C0903A9, comment:
    /// AcceptSecurityContext error, data 52e, v1db1` (`52e` wrong password or
    /// unknown user, `775` locked, `533` disabled, `773` must change,
    /// `532` expired). An empty password is refused here: LDAP would take it
    /// as an unauthenticated (anonymous) bind that succeeds.
    pub async fn bind_error(&self, who: &str, password: &str) -> anyhow::Result<Option<String>> {
        anyhow::ensure!(
            !password.is_empty(),
            "bind as {who}: an empty password is an unauthenticated bind, which succeeds"
        );
        let output = try_bind(&self.tools, &self.ldaps_url(), who, password, TOOL_WITHIN).await?;
        match output.status.code() {
            Some(0) => Ok(None),
            Some(49) => Ok(Some(additional_info(&output.stderr))),
            _ => Err(tool_failure(
                &format!("bind as {who} ({})", self.ldaps_url()),
                &output,
            )),
        }
    }

    /// Runs `samba-tool <args> -s <smb.conf>` on the DC's local database
    /// (e.g. `["user", "disable", "bob"]`) and returns its stdout. The
    /// error carries its output.
    pub async fn samba_tool(&self, args: &[&str]) -> anyhow::Result<String> {
        self.samba_tool_owned(args.iter().map(|s| s.to_string()).collect())
            .await
    }

    async fn samba_tool_owned(&self, mut args: Vec<String>) -> anyhow::Result<String> {
        let what = format!("samba-tool {}", args.first().map_or("", String::as_str));
        args.push("-s".to_owned());
        args.push(self.conf_file().display().to_string());
        let output = RUNNER
            .run(&self.tools.samba_tool, &args, None, SAMBA_TOOL_WITHIN)
            .await?;
        check_success(&what, &output)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Creates the service account `name` (in `CN=Users`, random strong
    /// password) and delegates to it on `ou_dn`, for the user objects below
    /// it, what a self-service reset needs and nothing more, the way the AD
    /// "Delegation of Control" wizard does (`samba-tool dsacl set`, object
    /// ACEs inherited only by `user` objects: `(OA;CIIO;...;bf967aba-...;SID)`):
    ///
    /// * the "Reset Password" extended right (`User-Force-Change-Password`,
    ///   `00299570-246d-11d0-a768-00aa006e0529`),
    /// * write `lockoutTime` (`28630ebf-41d5-11d1-a9c1-0000f80367c1`) and
    ///   `pwdLastSet` (`bf967a0a-0de6-11d0-a285-00aa003049e2`),
    /// * read all properties.
    ///
    /// Returns its bind name (UPN) and password. Users elsewhere (e.g. in
    /// `CN=Users`) get `Insufficient access (50)` for a reset by it. The
    /// domain lockout policy applies to the account.
    pub async fn delegate(&self, name: &str, ou_dn: &str) -> anyhow::Result<(String, String)> {
        let (upn, password) = self.add_plain_account(name).await?;
        let account_dn = format!("CN={},{}", escape_dn_value(name), Self::USERS_DN);
        let sid = self.object_sid(&account_dn).await?;
        let sddl: String = [
            ("CR", RESET_PASSWORD_RIGHT_GUID),
            ("WP", LOCKOUT_TIME_GUID),
            ("WP", PWD_LAST_SET_GUID),
            ("RP", ""),
        ]
        .iter()
        .map(|(rights, object)| format!("(OA;CIIO;{rights};{object};{USER_CLASS_GUID};{sid})"))
        .collect();
        self.samba_tool_owned(vec![
            "dsacl".to_owned(),
            "set".to_owned(),
            format!("--objectdn={ou_dn}"),
            format!("--trusteedn={account_dn}"),
            format!("--sddl={sddl}"),
        ])
        .await
        .with_context(|| format!("delegating password resets on {ou_dn} to {account_dn}"))?;
        Ok((upn, password))
    }

    /// Creates the ordinary account `name` in `CN=Users` with a random
    /// strong password and no delegated rights; returns its bind name (UPN)
    /// and password. (Note: like every authenticated account it may still
    /// *change* another user's password when it knows the old one: AD gives
    /// everyone the "Change Password" right.)
    pub async fn add_plain_account(&self, name: &str) -> anyhow::Result<(String, String)> {
        let password = strong_password();
        self.add_user(&AdUser {
            name,
            password: Some(&password),
            ..Default::default()
        })
        .await?;
        Ok((Self::upn(name), password))
    }

    /// The `objectSid` of `dn` in string form (`S-1-5-21-...`).
    async fn object_sid(&self, dn: &str) -> anyhow::Result<String> {
        let attrs = self
            .read_bytes(Self::ADMIN, Self::ADMIN_PW, dn, &["objectSid"])
            .await?;
        let bytes = attrs
            .into_iter()
            .find(|(name, _)| name == "objectsid")
            .map(|(_, value)| value)
            .with_context(|| format!("{dn} has no objectSid"))?;
        sid_to_string(&bytes).with_context(|| format!("decoding the objectSid of {dn}"))
    }

    async fn read_bytes(
        &self,
        who: &str,
        password: &str,
        dn: &str,
        attrs: &[&str],
    ) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let mut args = self.bind_args(who, password);
        args.extend(read_entry_args(dn, attrs));
        let output = RUNNER
            .run(&self.tools.ldapsearch, &args, None, TOOL_WITHIN)
            .await?;
        check_success(&format!("ldapsearch of {dn:?} as {who}"), &output)?;
        parse_ldif_attrs(&String::from_utf8_lossy(&output.stdout))
            .with_context(|| format!("parsing ldapsearch output for {dn:?}"))
    }

    fn bind_args(&self, who: &str, password: &str) -> Vec<String> {
        ldap_bind_args(&self.ldaps_url(), who, password)
    }
}

/// The provisioned domain every DC of this process is copied from.
struct Template {
    dir: tempfile::TempDir,
    _janitor: Janitor,
}

impl Template {
    /// Provisions the domain into a new directory, appends the settings
    /// provision does not carry into `smb.conf`, sets the password policy
    /// and makes the TLS key and certificates.
    async fn build(tools: &Tools) -> anyhow::Result<Template> {
        let started = Instant::now();
        let dir = make_dir("gh-samba-tpl-")?;
        let janitor = Janitor::start(tools, dir.path())?;
        let path = dir.path();
        for sub in ["etc", "run", "log"] {
            let sub = path.join(sub);
            std::fs::create_dir(&sub).with_context(|| format!("creating {}", sub.display()))?;
        }
        let empty_conf = path.join("etc/empty.conf");
        std::fs::write(&empty_conf, "").with_context(|| format!("writing {}", empty_conf.display()))?;
        let p = path.display();
        let mut args = argv(
            "domain provision --host-name=dc1 --server-role=dc --dns-backend=NONE --use-rfc2307",
            &["--realm", SambaDc::REALM, "--domain", SambaDc::DOMAIN],
        );
        args.extend([
            // Without -s, provision copies /etc/samba/smb.conf's shares and
            // log settings.
            "-s".to_owned(),
            empty_conf.display().to_string(),
            format!("--targetdir={p}"),
            format!("--adminpass={}", SambaDc::ADMIN_PW),
            format!("--option=interfaces={TEMPLATE_IP}/8"),
            "--option=bind interfaces only=yes".to_owned(),
            "--option=server services=ldap cldap kdc rpc".to_owned(),
            // Defaults outside the directory (found with `testparm -s -v`).
            format!("--option=pid directory={p}/run"),
            format!("--option=ncalrpc dir={p}/run/ncalrpc"),
            format!("--option=winbindd socket directory={p}/run/winbindd"),
            format!("--option=ntp signd socket directory={p}/run/ntp_signd"),
            format!("--option=log file={p}/log/log.%m"),
            format!("--option=usershare path={p}/usershares"),
            format!("--option=smb passwd file={p}/private/smbpasswd"),
        ]);
        let output = RUNNER
            .run(&tools.samba_tool, &args, None, PROVISION_WITHIN)
            .await?;
        check_success("samba-tool domain provision", &output)?;
        let provisioned = started.elapsed();

        // provision --option does not carry this into smb.conf.
        let conf = conf_path(path);
        let text = std::fs::read_to_string(&conf).with_context(|| format!("reading {}", conf.display()))?;
        let text = insert_into_global(&text, "old password allowed period = 0")
            .with_context(|| format!("{} has no [global] section", conf.display()))?;
        std::fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;

        let conf_arg = conf.display().to_string();
        let policy = argv(
            "domain passwordsettings set --complexity=on --min-pwd-length=8 --history-length=5 \
             --min-pwd-age=0 --max-pwd-age=0 --account-lockout-threshold=3 \
             --account-lockout-duration=30 --reset-account-lockout-after=30",
            &["-s", &conf_arg],
        );
        let output = RUNNER
            .run(&tools.samba_tool, &policy, None, SAMBA_TOOL_WITHIN)
            .await?;
        check_success("samba-tool domain passwordsettings set", &output)?;

        match &tools.openssl {
            Some(openssl) => make_tls_files(openssl, &path.join("private/tls")).await?,
            None => tracing::warn!(
                "openssl not found: every Samba DC makes its own TLS key on its first start (slow)"
            ),
        }
        tracing::debug!(
            dir = %path.display(),
            provision_ms = provisioned.as_millis(),
            total_ms = started.elapsed().as_millis(),
            "samba template domain provisioned"
        );
        Ok(Template {
            dir,
            _janitor: janitor,
        })
    }
}

/// A `sh` that removes a directory when this process's end of its stdin
/// pipe closes (at the latest when the process exits).
struct Janitor {
    child: Option<std::process::Child>,
    stdin: Option<std::process::ChildStdin>,
}

impl Janitor {
    fn start(tools: &Tools, dir: &Path) -> anyhow::Result<Janitor> {
        let mut child = std::process::Command::new(&tools.sh)
            .arg("-c")
            .arg(JANITOR_SCRIPT)
            .arg("gatehouse-samba-janitor")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} to clean up {}", tools.sh.display(), dir.display()))?;
        let stdin = child.stdin.take();
        Ok(Janitor {
            child: Some(child),
            stdin,
        })
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        // Only reached when the template could not be built: close the pipe
        // (the janitor removes the directory) and reap the shell.
        drop(self.stdin.take());
        if let Some(child) = self.child.take() {
            reap_in_background(child, "samba-janitor-reaper");
        }
    }
}

/// An address `127.0.0.<host>` this fixture holds: an `flock` on
/// `/tmp/gatehouse-samba-127.0.0.<host>.lock`, on the open file description
/// of `file` (shared with the launch shell, see [`LAUNCH_START`]).
#[derive(Debug)]
struct AddressLock {
    host: u8,
    file: File,
}

impl AddressLock {
    fn ip(&self) -> String {
        format!("127.0.0.{}", self.host)
    }

    /// Locks `path` for `host` without waiting: `None` when someone else
    /// holds it.
    async fn try_acquire(tools: &Tools, host: u8, path: &Path) -> anyhow::Result<Option<AddressLock>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        let for_flock = file
            .try_clone()
            .with_context(|| format!("duplicating the handle of {}", path.display()))?;
        // `flock -n 0` locks its stdin, i.e. our open file description: the
        // lock stays after flock exits, until every handle on it is closed.
        let command = tokio::process::Command::new(&tools.flock)
            .args(["-n", "0"])
            .stdin(Stdio::from(for_flock))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(TOOL_WITHIN, command)
            .await
            .with_context(|| {
                format!(
                    "flock on {} did not finish within {TOOL_WITHIN:?}",
                    path.display()
                )
            })?
            .with_context(|| format!("running flock on {}", path.display()))?;
        match output.status.code() {
            Some(0) => Ok(Some(AddressLock { host, file })),
            Some(1) => Ok(None),
            _ => Err(tool_failure(&format!("flock -n on {}", path.display()), &output)),
        }
    }
}

fn lock_path(host: u8) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("gatehouse-samba-127.0.0.{host}.lock"))
}

/// Locks the first address from [`FIRST_HOST`] on that is neither locked by
/// another DC nor in `skip`, and on which nothing answers on 636 or 389.
async fn claim_address(tools: &Tools, skip: &[u8]) -> anyhow::Result<AddressLock> {
    for host in FIRST_HOST..=LAST_HOST {
        if skip.contains(&host) {
            continue;
        }
        let Some(lock) = AddressLock::try_acquire(tools, host, &lock_path(host)).await? else {
            continue;
        };
        if something_listens(&lock.ip()).await {
            tracing::debug!(ip = lock.ip(), "samba: something else listens there, skipping");
            continue;
        }
        return Ok(lock);
    }
    anyhow::bail!(
        "samba: no free address in 127.0.0.{FIRST_HOST}-127.0.0.{LAST_HOST} (all locked in {LOCK_DIR} or \
         listening on 636/389)"
    )
}

/// Whether a TCP connect to `ip` port 636 or 389 succeeds (or hangs).
async fn something_listens(ip: &str) -> bool {
    for port in [636u16, 389] {
        match tokio::time::timeout(PROBE_CONNECT_WITHIN, tokio::net::TcpStream::connect((ip, port))).await {
            Ok(Err(_)) => {}
            Ok(Ok(_)) | Err(_) => return true,
        }
    }
    false
}

enum LaunchError {
    /// samba could not bind its ports on this address (try another one).
    AddressInUse(anyhow::Error),
    Failed(anyhow::Error),
}

/// Starts samba in `dir` (its `smb.conf` already names the address of
/// `lock`) and waits for an LDAPS bind as the administrator.
async fn launch(tools: &Tools, dir: &Path, lock: &AddressLock) -> Result<Running, LaunchError> {
    let log_start = std::fs::metadata(log_path(dir)).map_or(0, |m| m.len());
    let started = Instant::now();
    let mut running = spawn_shell(tools, dir, lock).await.map_err(LaunchError::Failed)?;
    let ip = lock.ip();
    let url = format!("ldaps://{ip}");
    let deadline = started + READY_WITHIN;
    let mut polls = 0u32;
    loop {
        let exited = running
            .try_exited()
            .context("polling samba")
            .map_err(LaunchError::Failed)?;
        if let Some(status) = exited {
            let log = log_tail(&log_path(dir), log_start);
            let err = anyhow::anyhow!("samba on {ip} exited during startup ({status}); its output:\n{log}");
            let in_use = log.contains("ADDRESS_ALREADY_ASSOCIATED") || log.contains("Address already in use");
            return Err(if in_use {
                LaunchError::AddressInUse(err)
            } else {
                LaunchError::Failed(err)
            });
        }
        let probe = try_bind(
            tools,
            &url,
            SambaDc::ADMIN,
            SambaDc::ADMIN_PW,
            Duration::from_secs(15),
        )
        .await;
        polls += 1;
        if matches!(&probe, Ok(output) if output.status.success()) {
            tracing::debug!(
                ip,
                polls,
                ms = started.elapsed().as_millis(),
                "samba: launch to first LDAPS bind"
            );
            return Ok(running);
        }
        if Instant::now() >= deadline {
            let last = match probe {
                Ok(output) => tool_failure("administrator bind", &output),
                Err(err) => err,
            };
            // Best effort: dropping `running` closes the pipe as well.
            let _ = running.terminate().await;
            return Err(LaunchError::Failed(last.context(format!(
                "samba on {ip}: no successful LDAPS bind within {READY_WITHIN:?}; its output:\n{}",
                log_tail(&log_path(dir), log_start)
            ))));
        }
        tokio::time::sleep(READY_POLL_EVERY).await;
    }
}

async fn spawn_shell(tools: &Tools, dir: &Path, lock: &AddressLock) -> anyhow::Result<Running> {
    let lock_handle = lock
        .file
        .try_clone()
        .context("duplicating the address lock handle for samba")?;
    let args = [tools.samba.as_os_str(), dir.as_os_str()];
    Running::spawn("samba", &tools.sh, LAUNCH_START, &args, Stdio::from(lock_handle)).await
}

/// Tries a simple bind as `who` on `url` with `password` (a base search of
/// the rootDSE for no attributes); the output is ldapsearch's.
async fn try_bind(
    tools: &Tools,
    url: &str,
    who: &str,
    password: &str,
    within: Duration,
) -> anyhow::Result<Output> {
    let mut args = ldap_bind_args(url, who, password);
    args.extend(
        ["-LLL", "-b", "", "-s", "base", "(objectClass=*)", "1.1"]
            .iter()
            .map(|s| s.to_string()),
    );
    RUNNER.run(&tools.ldapsearch, &args, None, within).await
}

/// A temporary directory with a short path: under `$TMPDIR` when that is
/// short, else under `/tmp`.
fn make_dir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    crate::tools::short_temp_dir("samba", prefix, MAX_DIR_PATH)
}

/// `cp -a from/. to` (ownership, modes and the sparse ldb files kept).
async fn copy_dir(tools: &Tools, from: &Path, to: &Path) -> anyhow::Result<()> {
    let args = vec![
        "-a".to_owned(),
        format!("{}/.", from.display()),
        to.display().to_string(),
    ];
    let output = RUNNER.run(&tools.cp, &args, None, TOOL_WITHIN).await?;
    check_success(
        &format!("copying the template {} to {}", from.display(), to.display()),
        &output,
    )
}

fn conf_path(dir: &Path) -> PathBuf {
    dir.join("etc/smb.conf")
}

/// samba's output.
fn log_path(dir: &Path) -> PathBuf {
    dir.join("log/samba.out")
}

/// Writes `dir`'s `smb.conf`: the template's, with the template's path
/// replaced by `dir` and the `interfaces` line by `ip/8`. (Only `smb.conf`
/// holds absolute paths or the address.)
fn write_conf(template: &Path, dir: &Path, ip: &str) -> anyhow::Result<()> {
    let source = conf_path(template);
    let text = std::fs::read_to_string(&source).with_context(|| format!("reading {}", source.display()))?;
    let text = text.replace(&template.display().to_string(), &dir.display().to_string());
    let mut out = String::with_capacity(text.len());
    let mut replaced = false;
    for line in text.lines() {
        let is_interfaces = line
            .trim_start()
            .split_once('=')
            .is_some_and(|(key, _)| key.trim().eq_ignore_ascii_case("interfaces"));
        if is_interfaces {
            out.push_str(&format!("\tinterfaces = {ip}/8\n"));
            replaced = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    anyhow::ensure!(replaced, "{} has no `interfaces` line", source.display());
    let target = conf_path(dir);
    std::fs::write(&target, out).with_context(|| format!("writing {}", target.display()))
}

/// `text` with `setting` added as the first line of the `[global]` section.
fn insert_into_global(text: &str, setting: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + setting.len() + 2);
    let mut inserted = false;
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        if !inserted && line.trim().eq_ignore_ascii_case("[global]") {
            out.push('\t');
            out.push_str(setting);
            out.push('\n');
            inserted = true;
        }
    }
    inserted.then_some(out)
}

/// A test CA and a server certificate signed by it (EC P-256, so it takes
/// milliseconds; samba would make a 4096-bit RSA key on the first start of
/// every DC, which takes seconds). Samba reads `key.pem` (mode 0600),
/// `cert.pem` and `ca.pem` from `private/tls`.
async fn make_tls_files(openssl: &Path, tls: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(tls).with_context(|| format!("creating {}", tls.display()))?;
    let path = |name: &str| tls.join(name).display().to_string();
    let mut san = String::from("DNS:DC1.example.test,DNS:dc1.example.test,DNS:localhost");
    for host in 1..=LAST_HOST {
        san.push_str(&format!(",IP:127.0.0.{host}"));
    }
    let ext = format!(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName={san}\n"
    );
    std::fs::write(path("leaf.ext"), ext).with_context(|| format!("writing {}", path("leaf.ext")))?;
    let (ca_key, ca_pem, key, csr, ext_file, cert) = (
        path("ca.key"),
        path("ca.pem"),
        path("key.pem"),
        path("leaf.csr"),
        path("leaf.ext"),
        path("cert.pem"),
    );
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let steps = [
        argv(
            &format!(
                "req -x509 -new {ec} -days 3650 -subj /CN=Gatehouse-test-CA \
                 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
            ),
            &["-keyout", &ca_key, "-out", &ca_pem],
        ),
        argv(
            &format!("req -new {ec} -subj /CN=DC1.example.test"),
            &["-keyout", &key, "-out", &csr],
        ),
        argv(
            "x509 -req -set_serial 1 -days 3650",
            &[
                "-in", &csr, "-CA", &ca_pem, "-CAkey", &ca_key, "-extfile", &ext_file, "-out", &cert,
            ],
        ),
    ];
    for args in &steps {
        let output = RUNNER.run(openssl, args, None, TOOL_WITHIN).await?;
        check_success(
            &format!("openssl {}", args.first().map_or("", String::as_str)),
            &output,
        )?;
    }
    for leftover in ["ca.key", "leaf.csr", "leaf.ext"] {
        std::fs::remove_file(path(leftover)).with_context(|| format!("removing {}", path(leftover)))?;
    }
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path("key.pem"), std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path("key.pem")))
}

/// The whitespace-separated `words`, then `tail` (values that may contain
/// spaces, such as paths), as arguments.
fn argv(words: &str, tail: &[&str]) -> Vec<String> {
    words
        .split_whitespace()
        .chain(tail.iter().copied())
        .map(str::to_owned)
        .collect()
}

/// The part of `dn` above [`SambaDc::BASE_DN`], for `samba-tool ...
/// --userou` (e.g. `OU=t1-abc`).
fn relative_to_base(dn: &str) -> anyhow::Result<String> {
    let suffix = format!(",{}", SambaDc::BASE_DN);
    let split = dn.len().checked_sub(suffix.len());
    let relative = split
        .and_then(|at| {
            let tail = dn.get(at..)?;
            tail.eq_ignore_ascii_case(&suffix).then(|| dn.get(..at))?
        })
        .filter(|rel| !rel.is_empty());
    relative
        .map(str::to_owned)
        .with_context(|| format!("OU {dn:?} is not below {}", SambaDc::BASE_DN))
}

/// A password that meets the domain policy and nobody can guess.
fn strong_password() -> String {
    format!("Gh-{:016x}-Pw9!", random_u64())
}

/// `S-<revision>-<authority>-<sub authorities...>` from a binary SID.
fn sid_to_string(bytes: &[u8]) -> anyhow::Result<String> {
    let (&revision, rest) = bytes.split_first().context("empty SID")?;
    let (&count, rest) = rest.split_first().context("SID without a sub-authority count")?;
    let authority = rest.get(..6).context("SID without an identifier authority")?;
    let authority = authority.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    let subs = rest.get(6..).unwrap_or_default();
    anyhow::ensure!(
        subs.len() == usize::from(count) * 4,
        "SID with {count} sub-authorities has {} bytes for them",
        subs.len()
    );
    let mut sid = format!("S-{revision}-{authority}");
    for chunk in subs.chunks_exact(4) {
        let value = chunk.iter().rev().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
        sid.push_str(&format!("-{value}"));
    }
    Ok(sid)
}

/// The `additional info:` text of an OpenLDAP client tool's error output,
/// or the whole output.
fn additional_info(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .find_map(|line| line.trim().strip_prefix("additional info:"))
        .map(|info| info.trim().to_owned())
        .unwrap_or_else(|| text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ldif::base64_decode;

    #[test]
    fn unicode_pwd_is_quoted_utf16le_base64() {
        // printf '"%s"' 'Ab1!' | iconv -t UTF-16LE | base64
        assert_eq!(unicode_pwd_base64("Ab1!"), "IgBBAGIAMQAhACIA");
        assert_eq!(
            base64_decode("IgBBAGIAMQAhACIA").unwrap(),
            b"\"\x00A\x00b\x001\x00!\x00\"\x00"
        );
    }

    #[test]
    fn sids_decode() {
        let bytes = base64_decode("AQUAAAAAAAUVAAAAe1g3pvcDoqaBlI1LTgQAAA==").unwrap();
        assert_eq!(
            sid_to_string(&bytes).unwrap(),
            "S-1-5-21-2788644987-2795635703-1267569793-1102"
        );
        assert!(sid_to_string(&bytes[..10]).is_err());
        assert!(sid_to_string(&[]).is_err());
    }

    #[test]
    fn ou_relative_to_base() {
        assert_eq!(
            relative_to_base("OU=t1-ab,DC=example,DC=test").unwrap(),
            "OU=t1-ab"
        );
        assert_eq!(
            relative_to_base("ou=x,OU=y,dc=Example,dc=Test").unwrap(),
            "ou=x,OU=y"
        );
        assert!(relative_to_base("DC=example,DC=test").is_err());
        assert!(relative_to_base("OU=x,DC=other,DC=test").is_err());
        assert!(relative_to_base("").is_err());
    }

    #[test]
    fn unique_names_fit_sam_account_name() {
        let a = SambaDc::unique_name("a-very-long-prefix-indeed");
        let b = SambaDc::unique_name("a-very-long-prefix-indeed");
        assert_ne!(a, b);
        assert!(a.len() <= 20, "{a}");
        assert!(a.starts_with("a-very-lon-"), "{a}");
    }

    #[test]
    fn strong_passwords_meet_complexity() {
        let pw = strong_password();
        assert!(pw.len() >= 8);
        assert!(pw.chars().any(|c| c.is_ascii_uppercase()));
        assert!(pw.chars().any(|c| c.is_ascii_lowercase()));
        assert!(pw.chars().any(|c| c.is_ascii_digit()));
        assert!(pw.chars().any(|c| !c.is_ascii_alphanumeric()));
        assert_ne!(pw, strong_password());
    }

    #[test]
    fn global_setting_and_conf_rewrite() {
        let conf = concat!(
            "# Global parameters\n[global]\n\tinterfaces = 127.0.0.1/8\n",
            "\tprivate dir = /t/tpl/private\n\n[sysvol]\n\tpath = /t/tpl/state/sysvol\n",
        );
        let with = insert_into_global(conf, "old password allowed period = 0").unwrap();
        assert!(with.contains("[global]\n\told password allowed period = 0\n\tinterfaces"));
        assert!(insert_into_global("[sysvol]\n", "x = 1").is_none());

        let tpl = tempfile::tempdir().unwrap();
        let dc = tempfile::tempdir().unwrap();
        std::fs::create_dir(tpl.path().join("etc")).unwrap();
        std::fs::create_dir(dc.path().join("etc")).unwrap();
        let text = conf.replace("/t/tpl", &tpl.path().display().to_string());
        std::fs::write(conf_path(tpl.path()), text).unwrap();
        write_conf(tpl.path(), dc.path(), "127.0.0.7").unwrap();
        let out = std::fs::read_to_string(conf_path(dc.path())).unwrap();
        assert!(out.contains("\tinterfaces = 127.0.0.7/8\n"), "{out}");
        assert!(!out.contains(&tpl.path().display().to_string()), "{out}");
        assert!(
            out.contains(&format!("path = {}/state/sysvol", dc.path().display())),
            "{out}"
        );
    }

    #[test]
    fn diagnostic_text_is_extracted() {
        let stderr = b"ldap_bind: Invalid credentials (49)\n\tadditional info: 80090308: LdapErr: \
DSID-0C0903A9, comment: AcceptSecurityContext error, data 52e, v1db1\n";
        assert_eq!(
            additional_info(stderr),
            "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 52e, v1db1"
        );
        assert_eq!(additional_info(b" other \n"), "other");
    }

    #[tokio::test]
    async fn address_locks_exclude_each_other() {
        let Ok(flock) = crate::require_tool("flock", "util-linux") else {
            return;
        };
        let tools = Tools {
            sh: PathBuf::from("/bin/sh"),
            samba: PathBuf::new(),
            samba_tool: PathBuf::new(),
            ldapsearch: PathBuf::new(),
            ldapmodify: PathBuf::new(),
            flock,
            cp: PathBuf::new(),
            openssl: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.lock");
        let first = AddressLock::try_acquire(&tools, 9, &path).await.unwrap();
        assert!(first.is_some());
        // A second open file description (same process) is refused ...
        assert!(AddressLock::try_acquire(&tools, 9, &path)
            .await
            .unwrap()
            .is_none());
        // ... while a duplicate of the first handle keeps the lock ...
        let dup = first.as_ref().unwrap().file.try_clone().unwrap();
        drop(first);
        assert!(AddressLock::try_acquire(&tools, 9, &path)
            .await
            .unwrap()
            .is_none());
        // ... and closing every handle releases it.
        drop(dup);
        assert!(AddressLock::try_acquire(&tools, 9, &path)
            .await
            .unwrap()
            .is_some());
    }
}
