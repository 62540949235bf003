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
    if !slapd_available("user_is_added_and_binds") {
        return;
    }
    let ldap = Slapd::shared().await.unwrap();
    let ou = ldap.fresh_ou().await.unwrap();
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
    assert_eq!(
        values(&ldap.read(&bare, &["mail"]).await.unwrap(), "mail"),
        Vec::<String>::new()
    );
    let jurgen = ldap
        .add_user(
            &ou,
            &LdapUser {
                uid: "jürgen",
                password: Some("Grüße-1234"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        values(&ldap.read(&jurgen, &["cn"]).await.unwrap(), "cn"),
        ["Jürgen Example"]
    );
    assert!(ldap.can_bind(&jurgen, "Grüße-1234").await.unwrap());

    // Unknown entries are errors, with ldapsearch's message.
    let err = ldap.read(&format!("uid=nobody,{ou}"), &["cn"]).await.unwrap_err();
    assert!(format!("{err:#}").contains("No such object"), "{err:#}");
    let err = ldap.add_user(&ou, &alice).await.unwrap_err();
    assert!(format!("{err:#}").contains("Already exists"), "{err:#}");
}

#[tokio::test]
async fn three_wrong_binds_lock_the_account() {
    if !slapd_available("three_wrong_binds_lock_the_account") {
        return;
    }
    let ldap = Slapd::shared().await.unwrap();
    let ou = ldap.fresh_ou().await.unwrap();
    let bob = LdapUser {
        uid: "bob",
        password: Some("Bob-Good-Pass-9"),
        ..Default::default()
    };
    let dn = ldap.add_user(&ou, &bob).await.unwrap();
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
        let out = ldap_tool(ldap, "ldapmodify", who, pw, &[], Some(&unlock)).await;
        assert_eq!(
            out.status.code(),
            Some(50),
            "{who}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = ldap_tool(
        ldap,
        "ldapmodify",
        Slapd::SERVICE_DN,
        Slapd::SERVICE_PW,
        &[],
        Some(&unlock),
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
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
    if !slapd_available("rights_of_the_service_accounts") {
        return;
    }
    let ldap = Slapd::shared().await.unwrap();
    let ou = ldap.fresh_ou().await.unwrap();
    let carol = LdapUser {
        uid: "carol",
        password: Some("Carol-Pass-123"),
        ..Default::default()
    };
    let dn = ldap.add_user(&ou, &carol).await.unwrap();
    let reset =
        |pw: &str| format!("dn: {dn}\nchangetype: modify\nreplace: userPassword\nuserPassword: {pw}\n");

    // Read-only: no password write.
    let out = ldap_tool(
        ldap,
        "ldapmodify",
        Slapd::READONLY_DN,
        Slapd::READONLY_PW,
        &[],
        Some(&reset("Ro-Reset-123")),
    )
    .await;
    assert_eq!(out.status.code(), Some(50));

    // Write-only: the policy applies (pwdMinLength 8), and no pwdReset.
    let out = ldap_tool(
        ldap,
        "ldapmodify",
        Slapd::WRITEONLY_DN,
        Slapd::WRITEONLY_PW,
        &[],
        Some(&reset("short")),
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(19),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ldap_tool(
        ldap,
        "ldapmodify",
        Slapd::WRITEONLY_DN,
        Slapd::WRITEONLY_PW,
        &[],
        Some(&reset("Wo-Reset-123")),
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(values(&ldap.read(&dn, &["pwdReset"]).await.unwrap(), "pwdReset").is_empty());

    // Service (password administrator): no length check, sets pwdReset.
    let out = ldap_tool(
        ldap,
        "ldapmodify",
        Slapd::SERVICE_DN,
        Slapd::SERVICE_PW,
        &[],
        Some(&reset("short")),
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        values(&ldap.read(&dn, &["pwdReset"]).await.unwrap(), "pwdReset"),
        ["TRUE"]
    );
    assert!(ldap.can_bind(&dn, "short").await.unwrap());
}

#[tokio::test]
async fn own_policy_and_groups() {
    if !slapd_available("own_policy_and_groups") {
        return;
    }
    let ldap = Slapd::shared().await.unwrap();
    let ou = ldap.fresh_ou().await.unwrap();
    let name = ou.split([',', '=']).nth(1).unwrap().to_owned();
    let policy = ldap
        .add_policy(
            &format!("{name}-long"),
            &[("pwdMinLength", "12"), ("pwdCheckQuality", "2")],
        )
        .await
        .unwrap();
    assert_eq!(
        values(
            &ldap.read(&policy, &["pwdAttribute"]).await.unwrap(),
            "pwdAttribute"
        ),
        ["userPassword"]
    );
    let dave = ldap
        .add_user(
            &ou,
            &LdapUser {
                uid: "dave",
                password: Some("Dave-Pass-123"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let erin = ldap
        .add_user(
            &ou,
            &LdapUser {
                uid: "erin",
                password: Some("Erin-Pass-123"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
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
    let out = ldap_tool(
        ldap,
        "ldapmodify",
        &dave,
        "Dave-Pass-123",
        &[],
        Some(&change(&dave, "Dave-Pass-123")),
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(19),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ldap_tool(
        ldap,
        "ldapmodify",
        &erin,
        "Erin-Pass-123",
        &[],
        Some(&change(&erin, "Erin-Pass-123")),
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let group = ldap
        .add_group(&ou, "helpdesk", &[dave.clone(), erin.clone()])
        .await
        .unwrap();
    assert_eq!(group, format!("cn=helpdesk,{ou}"));
    assert_eq!(
        values(&ldap.read(&dave, &["memberOf"]).await.unwrap(), "memberOf"),
        [group.as_str()]
    );
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
    let dn = ldap
        .add_user(
            &ou,
            &LdapUser {
                uid: "frank",
                password: Some("Frank-Pass-123"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(ldap.is_running());

    ldap.stop().await.unwrap();
    assert!(!ldap.is_running());
    let err = ldap.can_bind(&dn, "Frank-Pass-123").await.unwrap_err();
    assert!(
        format!("{err:#}").contains("Can't contact LDAP server"),
        "{err:#}"
    );
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
    let gina = ldap
        .add_user(
            &ou,
            &LdapUser {
                uid: "gina",
                password: Some("Gina-Pass-123"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        values(
            &ldap.read(&gina, &["userPassword"]).await.unwrap(),
            "userPassword"
        ),
        ["Gina-Pass-123"]
    );

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
    if !slapd_available("bulk_add_1000_users") {
        return;
    }
    bulk_add(1000).await;
}

/// The size of the sync benchmark (about 3 s on 2 cores):
/// `cargo test -p gatehouse-testkit --test slapd -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "slow-ish: 10,000 users"]
async fn bulk_add_10000_users() {
    if !slapd_available("bulk_add_10000_users") {
        return;
    }
    bulk_add(10_000).await;
}

async fn bulk_add(count: usize) {
    let ldap = Slapd::shared().await.unwrap();
    let ou = ldap.fresh_ou().await.unwrap();
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
