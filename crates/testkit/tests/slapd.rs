//! Tests of the OpenLDAP fixture against a real slapd (Debian `slapd` and
//! `ldap-utils`). Skipped with a loud note when they are missing, unless
//! `CI` or `GATEHOUSE_REQUIRE_ALL` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use gatehouse_testkit::slapd::{is_installed, NOT_INSTALLED};
use gatehouse_testkit::{ci_requires_all, init_test_tracing, LdapUser, Slapd};
use tokio::io::AsyncWriteExt as _;

/// Whether slapd tests can run; fails under CI / GATEHOUSE_REQUIRE_ALL.
fn slapd_available(test: &str) -> bool {
    init_test_tracing();
    if is_installed() {
        return true;
    }
    if ci_requires_all() {
        panic!("{test}: {NOT_INSTALLED} (CI or GATEHOUSE_REQUIRE_ALL is set, so this fails)");
    }
    let bar = "!".repeat(78);
    let _ = writeln!(
        std::io::stderr(),
        "\n{bar}\nSKIPPED {test}: {NOT_INSTALLED}\n(set CI=1 or GATEHOUSE_REQUIRE_ALL=1 to make this a failure)\n{bar}\n"
    );
    false
}

/// The shared slapd and a new OU in it for the test `test`, or `None` when
/// the test is skipped (see [`slapd_available`]).
async fn shared_with_fresh_ou(test: &str) -> Option<(&'static Slapd, String)> {
    if !slapd_available(test) {
        return None;
    }
    let ldap = Slapd::shared().await.unwrap();
    let ou = ldap.fresh_ou().await.unwrap();
    Some((ldap, ou))
}

fn values(attrs: &[(String, String)], name: &str) -> Vec<String> {
    attrs
        .iter()
        .filter(|(a, _)| a == &name.to_ascii_lowercase())
        .map(|(_, v)| v.clone())
        .collect()
}

/// Runs an LDAP client tool as `dn`/`pw` with `args` (and LDIF on stdin).
async fn ldap_tool(
    ldap: &Slapd,
    tool: &str,
    dn: &str,
    pw: &str,
    args: &[&str],
    ldif: Option<&str>,
) -> std::process::Output {
    let mut child = tokio::process::Command::new(tool)
        .args(["-x", "-H", &ldap.url(), "-D", dn, "-w", pw])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(ldif.unwrap_or("").as_bytes()).await.unwrap();
    drop(stdin);
    child.wait_with_output().await.unwrap()
}

/// Runs `ldapmodify` as `dn`/`pw` with `ldif` and asserts its exit code
/// (0: success), showing its error output otherwise.
async fn assert_ldapmodify(ldap: &Slapd, dn: &str, pw: &str, ldif: &str, code: i32) {
    let out = ldap_tool(ldap, "ldapmodify", dn, pw, &[], Some(ldif)).await;
    assert_eq!(
        out.status.code(),
        Some(code),
        "ldapmodify as {dn}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The values of `attr` of the entry `dn`, read as the rootdn.
async fn read_values(ldap: &Slapd, dn: &str, attr: &str) -> Vec<String> {
    values(&ldap.read(dn, &[attr]).await.unwrap(), attr)
}

/// Adds the user `uid` with `password` and nothing else to `ou`.
async fn add_user(ldap: &Slapd, ou: &str, uid: &str, password: &str) -> String {
    let user = LdapUser {
        uid,
        password: Some(password),
        ..Default::default()
    };
    ldap.add_user(ou, &user).await.unwrap()
}

/// Asserts that the error's text (with its causes) contains `expected`.
fn assert_err_contains(err: &anyhow::Error, expected: &str) {
    assert!(format!("{err:#}").contains(expected), "{err:#}");
}

/// How many entries a subtree search as `dn` returns.
async fn count_entries(ldap: &Slapd, dn: &str, pw: &str, base: &str, filter: &str) -> usize {
    let out = ldap_tool(
        ldap,
        "ldapsearch",
        dn,
        pw,
        &["-LLL", "-b", base, filter, "1.1"],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("dn:"))
        .count()
}

#[tokio::test]
async fn shared_is_one_instance() {
    if !slapd_available("shared_is_one_instance") {
        return;
    }
    let a = Slapd::shared().await.unwrap();
    let b = Slapd::shared().await.unwrap();
    assert!(std::ptr::eq(a, b));
    assert_eq!(a.url(), format!("ldap://127.0.0.1:{}", a.port()));
    assert!(a.can_bind(Slapd::ROOT_DN, Slapd::ROOT_PW).await.unwrap());
    for (dn, pw) in [
        (Slapd::SERVICE_DN, Slapd::SERVICE_PW),
        (Slapd::WRITEONLY_DN, Slapd::WRITEONLY_PW),
        (Slapd::READONLY_DN, Slapd::READONLY_PW),
    ] {
        assert!(a.can_bind(dn, pw).await.unwrap(), "{dn}");
    }
}

#[tokio::test]
async fn user_is_added_and_binds() {
    let Some((ldap, ou)) = shared_with_fresh_ou("user_is_added_and_binds").await else {
        return;
    };
    assert!(ou.ends_with(",ou=people,dc=example,dc=org"), "{ou}");
    let alice = LdapUser {
        uid: "alice",
        password: Some("Initial-Alice-1"),
        mail: Some("alice@example.org"),
        mobile: Some("+1 555 0100 42"),
        personal_email: Some("alice@home.example"),
    };
    let dn = ldap.add_user(&ou, &alice).await.unwrap();
    assert_eq!(dn, format!("uid=alice,{ou}"));

    assert!(ldap.can_bind(&dn, "Initial-Alice-1").await.unwrap());
    assert!(!ldap.can_bind(&dn, "wrong-password").await.unwrap());

    let attrs = ldap
        .read(
            &dn,
            &[
                "cn",
                "sn",
                "givenName",
                "mail",
                "mobile",
                Slapd::PERSONAL_EMAIL_ATTR,
                "userPassword",
                "pwdReset",
            ],
        )
        .await
        .unwrap();
    assert_eq!(values(&attrs, "cn"), ["Alice Example"]);
    assert_eq!(values(&attrs, "givenName"), ["Alice"]);
    assert_eq!(values(&attrs, "mail"), ["alice@example.org"]);
    assert_eq!(values(&attrs, "mobile"), ["+1 555 0100 42"]);
    assert_eq!(values(&attrs, Slapd::PERSONAL_EMAIL_ATTR), ["alice@home.example"]);
    let hash = values(&attrs, "userPassword");
    assert!(hash.len() == 1 && hash[0].starts_with("{SSHA}"), "{hash:?}");
    assert!(
        values(&attrs, "pwdReset").is_empty(),
        "root add must not set pwdReset"
    );

    // The personal email is searchable (equality rule) as the service account.
    let found = count_entries(
        ldap,
        Slapd::READONLY_DN,
        Slapd::READONLY_PW,
        &ou,
        "(mailLocalAddress=ALICE@home.example)",
    )
    .await;
    assert_eq!(found, 1);

    // A user without the optional attributes, and one needing base64 LDIF.
    let bare = ldap
        .add_user(
            &ou,
            &LdapUser {
                uid: "bare",
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(read_values(ldap, &bare, "mail").await, Vec::<String>::new());
    let jurgen = add_user(ldap, &ou, "jürgen", "Grüße-1234").await;
    assert_eq!(read_values(ldap, &jurgen, "cn").await, ["Jürgen Example"]);
    assert!(ldap.can_bind(&jurgen, "Grüße-1234").await.unwrap());

    // Unknown entries are errors, with ldapsearch's message.
    let err = ldap.read(&format!("uid=nobody,{ou}"), &["cn"]).await.unwrap_err();
    assert_err_contains(&err, "No such object");
    let err = ldap.add_user(&ou, &alice).await.unwrap_err();
    assert_err_contains(&err, "Already exists");
}

#[tokio::test]
async fn three_wrong_binds_lock_the_account() {
    let Some((ldap, ou)) = shared_with_fresh_ou("three_wrong_binds_lock_the_account").await else {
        return;
    };
    let dn = add_user(ldap, &ou, "bob", "Bob-Good-Pass-9").await;
    for n in 1..=3 {
        assert!(!ldap.can_bind(&dn, &format!("wrong-{n}")).await.unwrap());
    }
    let state = ldap
        .read(&dn, &["pwdAccountLockedTime", "pwdFailureTime"])
        .await
        .unwrap();
    assert_eq!(values(&state, "pwdAccountLockedTime").len(), 1, "{state:?}");
    assert_eq!(values(&state, "pwdFailureTime").len(), 3, "{state:?}");
    assert!(!ldap.can_bind(&dn, "Bob-Good-Pass-9").await.unwrap(), "locked");

    // The write-only and read-only accounts may not unlock; the service may.
    let unlock = format!("dn: {dn}\nchangetype: modify\ndelete: pwdAccountLockedTime\n");
    for (who, pw) in [
        (Slapd::WRITEONLY_DN, Slapd::WRITEONLY_PW),
        (Slapd::READONLY_DN, Slapd::READONLY_PW),
    ] {
        assert_ldapmodify(ldap, who, pw, &unlock, 50).await;
    }
    assert_ldapmodify(ldap, Slapd::SERVICE_DN, Slapd::SERVICE_PW, &unlock, 0).await;
    assert!(ldap.can_bind(&dn, "Bob-Good-Pass-9").await.unwrap());

    // Service accounts are exempt from lockout (shared instance safety).
    for n in 1..=4 {
        assert!(!ldap
            .can_bind(Slapd::READONLY_DN, &format!("wrong-{n}"))
            .await
            .unwrap());
    }
    assert!(ldap
        .can_bind(Slapd::READONLY_DN, Slapd::READONLY_PW)
        .await
        .unwrap());
}

#[tokio::test]
async fn rights_of_the_service_accounts() {
    let Some((ldap, ou)) = shared_with_fresh_ou("rights_of_the_service_accounts").await else {
        return;
    };
    let dn = add_user(ldap, &ou, "carol", "Carol-Pass-123").await;
    let reset =
        |pw: &str| format!("dn: {dn}\nchangetype: modify\nreplace: userPassword\nuserPassword: {pw}\n");

    // Read-only: no password write.
    let (ro, ro_pw) = (Slapd::READONLY_DN, Slapd::READONLY_PW);
    assert_ldapmodify(ldap, ro, ro_pw, &reset("Ro-Reset-123"), 50).await;

    // Write-only: the policy applies (pwdMinLength 8), and no pwdReset.
    let (wo, wo_pw) = (Slapd::WRITEONLY_DN, Slapd::WRITEONLY_PW);
    assert_ldapmodify(ldap, wo, wo_pw, &reset("short"), 19).await;
    assert_ldapmodify(ldap, wo, wo_pw, &reset("Wo-Reset-123"), 0).await;
    assert!(read_values(ldap, &dn, "pwdReset").await.is_empty());

    // Service (password administrator): no length check, sets pwdReset.
    let (svc, svc_pw) = (Slapd::SERVICE_DN, Slapd::SERVICE_PW);
    assert_ldapmodify(ldap, svc, svc_pw, &reset("short"), 0).await;
    assert_eq!(read_values(ldap, &dn, "pwdReset").await, ["TRUE"]);
    assert!(ldap.can_bind(&dn, "short").await.unwrap());
}

#[tokio::test]
async fn own_policy_and_groups() {
    let Some((ldap, ou)) = shared_with_fresh_ou("own_policy_and_groups").await else {
        return;
    };
    let name = ou.split([',', '=']).nth(1).unwrap().to_owned();
    let policy = ldap
        .add_policy(
            &format!("{name}-long"),
            &[("pwdMinLength", "12"), ("pwdCheckQuality", "2")],
        )
        .await
        .unwrap();
    assert_eq!(read_values(ldap, &policy, "pwdAttribute").await, ["userPassword"]);
    let dave = add_user(ldap, &ou, "dave", "Dave-Pass-123").await;
    let erin = add_user(ldap, &ou, "erin", "Erin-Pass-123").await;
    ldap.modify(&format!(
        "dn: {dave}\nchangetype: modify\nreplace: pwdPolicySubentry\npwdPolicySubentry: {policy}\n"
    ))
    .await
    .unwrap();
    // Self-change to 11 characters: dave (min 12) fails, erin (min 8) succeeds.
    let change = |dn: &str, old: &str| {
        format!(
            "dn: {dn}\nchangetype: modify\ndelete: userPassword\nuserPassword: {old}\n-\n\
             add: userPassword\nuserPassword: Eleven-Char\n"
        )
    };
    let dave_change = change(&dave, "Dave-Pass-123");
    assert_ldapmodify(ldap, &dave, "Dave-Pass-123", &dave_change, 19).await;
    let erin_change = change(&erin, "Erin-Pass-123");
    assert_ldapmodify(ldap, &erin, "Erin-Pass-123", &erin_change, 0).await;

    let group = ldap
        .add_group(&ou, "helpdesk", &[dave.clone(), erin.clone()])
        .await
        .unwrap();
    assert_eq!(group, format!("cn=helpdesk,{ou}"));
    assert_eq!(read_values(ldap, &dave, "memberOf").await, [group.as_str()]);
    let members = count_entries(
        ldap,
        Slapd::SERVICE_DN,
        Slapd::SERVICE_PW,
        &ou,
        &format!("(memberOf={group})"),
    )
    .await;
    assert_eq!(members, 2);
    assert!(ldap.add_group(&ou, "empty", &[]).await.is_err());
}

#[tokio::test]
async fn stop_and_restart_keep_the_data() {
    if !slapd_available("stop_and_restart_keep_the_data") {
        return;
    }
    let started = Instant::now();
    let mut ldap = Slapd::start().await.unwrap();
    eprintln!("Slapd::start took {:?}", started.elapsed());
    let dir = ldap.dir().to_owned();
    let port = ldap.port();
    let ou = ldap.fresh_ou().await.unwrap();
    let dn = add_user(&ldap, &ou, "frank", "Frank-Pass-123").await;
    assert!(ldap.is_running());

    ldap.stop().await.unwrap();
    assert!(!ldap.is_running());
    let err = ldap.can_bind(&dn, "Frank-Pass-123").await.unwrap_err();
    assert_err_contains(&err, "Can't contact LDAP server");
    ldap.stop().await.unwrap(); // again: nothing to do

    let restarted = Instant::now();
    ldap.restart().await.unwrap();
    eprintln!("Slapd::restart took {:?}", restarted.elapsed());
    assert_eq!(ldap.port(), port);
    assert!(ldap.can_bind(&dn, "Frank-Pass-123").await.unwrap());
    ldap.restart().await.unwrap(); // while running: stop + start
    assert!(ldap.can_bind(&dn, "Frank-Pass-123").await.unwrap());

    // Someone else holds the port for a moment: restart retries the bind.
    ldap.stop().await.unwrap();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        drop(squatter);
    });
    let retried = Instant::now();
    ldap.restart().await.unwrap();
    assert!(
        retried.elapsed() >= Duration::from_millis(300),
        "{:?}",
        retried.elapsed()
    );
    release.await.unwrap();
    assert!(ldap.can_bind(&dn, "Frank-Pass-123").await.unwrap());
    assert!(ldap.log().contains("errno=98"), "{}", ldap.log());

    // cn=config over ldapi as EXTERNAL: stop hashing cleartext passwords.
    ldap.modify_config(
        "dn: olcOverlay={0}ppolicy,olcDatabase={1}mdb,cn=config\nchangetype: modify\n\
         replace: olcPPolicyHashCleartext\nolcPPolicyHashCleartext: FALSE\n",
    )
    .await
    .unwrap();
    let gina = add_user(&ldap, &ou, "gina", "Gina-Pass-123").await;
    assert_eq!(read_values(&ldap, &gina, "userPassword").await, ["Gina-Pass-123"]);

    // Dropping it stops slapd and removes the directory.
    drop(ldap);
    let deadline = Instant::now() + Duration::from_secs(10);
    while dir.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!dir.exists(), "{} still there", dir.display());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test]
async fn bulk_add_1000_users() {
    bulk_add("bulk_add_1000_users", 1000).await;
}

/// The size of the sync benchmark (about 4 s on 2 cores; `-- --nocapture` prints the timings).
#[tokio::test]
async fn bulk_add_10000_users() {
    bulk_add("bulk_add_10000_users", 10_000).await;
}

async fn bulk_add(test: &str, count: usize) {
    let Some((ldap, ou)) = shared_with_fresh_ou(test).await else {
        return;
    };
    let started = Instant::now();
    ldap.bulk_add_users(&ou, count, "bulk").await.unwrap();
    eprintln!("bulk_add_users({count}) took {:?}", started.elapsed());

    let started = Instant::now();
    let found = count_entries(
        ldap,
        Slapd::READONLY_DN,
        Slapd::READONLY_PW,
        &ou,
        "(objectClass=inetOrgPerson)",
    )
    .await;
    eprintln!(
        "search of {found} users as the read-only account took {:?}",
        started.elapsed()
    );
    assert_eq!(found, count, "the size limit must not cut the search");

    let last = format!("bulk{:05}", count - 1);
    let dn = format!("uid={last},{ou}");
    let attrs = ldap
        .read(&dn, &["mail", "mobile", Slapd::PERSONAL_EMAIL_ATTR])
        .await
        .unwrap();
    assert_eq!(values(&attrs, "mail"), [format!("{last}@example.org")]);
    assert_eq!(
        values(&attrs, Slapd::PERSONAL_EMAIL_ATTR),
        [format!("{last}@home.example")]
    );
    assert!(ldap
        .can_bind(&dn, &Slapd::bulk_user_password(&last))
        .await
        .unwrap());
}
