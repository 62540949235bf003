//! Tests of the Samba AD DC fixture against a real samba (Debian `samba`,
//! `samba-ad-provision`, `samba-dsdb-modules`, `samba-vfs-modules` and
//! `ldap-utils`; root only). Skipped with a loud note when that is missing,
//! unless `CI` or `GATEHOUSE_REQUIRE_ALL` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::time::{Duration, Instant};

use gatehouse_testkit::samba::{unavailable_reason, unicode_pwd_base64};
use gatehouse_testkit::{ci_requires_all, init_test_tracing, AdUser, SambaDc};

/// Whether the samba tests can run; fails under CI / GATEHOUSE_REQUIRE_ALL.
fn samba_available(test: &str) -> bool {
    init_test_tracing();
    let Some(reason) = unavailable_reason() else {
        return true;
    };
    if ci_requires_all() {
        panic!("{test}: {reason} (CI or GATEHOUSE_REQUIRE_ALL is set, so this fails)");
    }
    let bar = "!".repeat(78);
    let _ = writeln!(
        std::io::stderr(),
        "\n{bar}\nSKIPPED {test}: {reason}\n(set CI=1 or GATEHOUSE_REQUIRE_ALL=1 to make this a \
         failure)\n{bar}\n"
    );
    false
}

/// The shared DC and a new OU in it for the test `test`, or `None` when
/// the test is skipped (see [`samba_available`]).
async fn shared_with_fresh_ou(test: &str) -> Option<(&'static SambaDc, String)> {
    if !samba_available(test) {
        return None;
    }
    let dc = SambaDc::shared().await.unwrap();
    let ou = dc.fresh_ou().await.unwrap();
    Some((dc, ou))
}

fn values(attrs: &[(String, String)], name: &str) -> Vec<String> {
    attrs
        .iter()
        .filter(|(a, _)| a == &name.to_ascii_lowercase())
        .map(|(_, v)| v.clone())
        .collect()
}

/// An administrative reset: replace `unicodePwd`, unlock.
fn reset_ldif(dn: &str, password: &str) -> String {
    format!(
        "dn: {dn}\nchangetype: modify\nreplace: unicodePwd\nunicodePwd:: {}\n-\nreplace: lockoutTime\n\
         lockoutTime: 0\n-\n\n",
        unicode_pwd_base64(password)
    )
}

/// A password change: delete the old `unicodePwd` value, add the new one.
fn change_ldif(dn: &str, old: &str, new: &str) -> String {
    format!(
        "dn: {dn}\nchangetype: modify\ndelete: unicodePwd\nunicodePwd:: {}\n-\nadd: unicodePwd\n\
         unicodePwd:: {}\n-\n\n",
        unicode_pwd_base64(old),
        unicode_pwd_base64(new)
    )
}

/// Asserts that `who` can bind with `password`, showing the AD error if not.
async fn assert_binds(dc: &SambaDc, who: &str, password: &str) {
    let err = dc.bind_error(who, password).await.unwrap();
    assert_eq!(err, None, "bind as {who} with {password:?} failed");
}

fn replace_ldif(dn: &str, attr: &str, value: &str) -> String {
    format!("dn: {dn}\nchangetype: modify\nreplace: {attr}\n{attr}: {value}\n-\n\n")
}

/// The values of `attr` of the entry `dn`, read as the administrator.
async fn read_values(dc: &SambaDc, dn: &str, attr: &str) -> Vec<String> {
    values(&dc.read(dn, &[attr]).await.unwrap(), attr)
}

/// Creates a user named from `prefix` ([`SambaDc::unique_name`]) with
/// `password` in `ou` (`None`: `CN=Users`); returns its name and DN.
async fn add_user(dc: &SambaDc, prefix: &str, password: &str, ou: Option<&str>) -> (String, String) {
    let name = SambaDc::unique_name(prefix);
    let user = AdUser {
        name: &name,
        password: Some(password),
        ou,
        ..Default::default()
    };
    let dn = dc.add_user(&user).await.unwrap();
    (name, dn)
}

/// Asserts that the error's text (with its causes) contains `expected`.
fn assert_err_contains(err: &anyhow::Error, expected: &str) {
    assert!(format!("{err:#}").contains(expected), "{err:#}");
}

/// `ldapsearch` of the rootDSE's `dnsHostName` on `url` as the
/// administrator (the caller adds TLS settings).
fn ldapsearch_host_name(url: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("ldapsearch");
    command
        .args([
            "-x",
            "-LLL",
            "-H",
            url,
            "-D",
            SambaDc::ADMIN,
            "-w",
            SambaDc::ADMIN_PW,
        ])
        .args(["-b", "", "-s", "base", "dnsHostName"]);
    command
}

#[tokio::test]
async fn shared_is_one_instance() {
    if !samba_available("shared_is_one_instance") {
        return;
    }
    let a = SambaDc::shared().await.unwrap();
    let b = SambaDc::shared().await.unwrap();
    assert!(std::ptr::eq(a, b));
    let ip = a.ip();
    assert!(ip.starts_with("127.0.0."), "{ip}");
    assert_eq!(a.ldaps_url(), format!("ldaps://{ip}"));
    assert_eq!(a.ldap_url(), format!("ldap://{ip}"));
    assert!(a.ca_file().is_file());
    assert_binds(a, SambaDc::ADMIN, SambaDc::ADMIN_PW).await;

    let root = a
        .read(
            "",
            &[
                "supportedControl",
                "highestCommittedUSN",
                "dsServiceName",
                "defaultNamingContext",
            ],
        )
        .await
        .unwrap();
    assert_eq!(values(&root, "defaultNamingContext"), [SambaDc::BASE_DN]);
    assert!(values(&root, "highestCommittedUSN")[0].parse::<u64>().unwrap() > 0);
    assert!(values(&root, "dsServiceName")[0].starts_with("CN=NTDS Settings,CN=DC1,"));
    let controls = values(&root, "supportedControl");
    assert!(
        controls.iter().any(|c| c == "1.2.840.113556.1.4.319"),
        "{controls:?}"
    );
    // Samba 4.17 has no LDAP_SERVER_POLICY_HINTS (new or deprecated OID).
    assert!(
        !controls.iter().any(|c| c == "1.2.840.113556.1.4.2239"),
        "{controls:?}"
    );
    assert!(
        !controls.iter().any(|c| c == "1.2.840.113556.1.4.2066"),
        "{controls:?}"
    );

    // StartTLS on ldap:// and LDAPS both verify against ca_file() (the
    // certificate names the IP address); a simple bind without TLS is refused.
    let ca = a.ca_file().display().to_string();
    for (url, starttls) in [(a.ldap_url(), true), (a.ldaps_url(), false)] {
        let mut command = ldapsearch_host_name(&url);
        command
            .env("LDAPTLS_CACERT", &ca)
            .env("LDAPTLS_REQCERT", "demand");
        if starttls {
            command.arg("-ZZ");
        }
        let out = command.output().await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("dnsHostName: dc1.example.test"),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = ldapsearch_host_name(&a.ldap_url()).output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let policy = a
        .samba_tool(&["domain", "passwordsettings", "show"])
        .await
        .unwrap();
    for line in [
        "Password complexity: on",
        "Password history length: 5",
        "Minimum password length: 8",
        "Minimum password age (days): 0",
        "Maximum password age (days): 0",
        "Account lockout threshold (attempts): 3",
    ] {
        assert!(policy.contains(line), "{line:?} not in {policy}");
    }
}

#[tokio::test]
async fn user_is_created_and_binds() {
    let Some((dc, ou)) = shared_with_fresh_ou("user_is_created_and_binds").await else {
        return;
    };
    assert!(
        ou.starts_with("OU=t") && ou.ends_with(",DC=example,DC=test"),
        "{ou}"
    );
    let name = SambaDc::unique_name("alice");
    let upn = SambaDc::upn(&name);
    let alice = AdUser {
        name: &name,
        password: Some("Initial-Alice-1"),
        mail: Some("alice@example.test"),
        mobile: Some("+1 555 0100 42"),
        other_mailbox: Some("alice@home.example"),
        ou: Some(&ou),
    };
    let dn = dc.add_user(&alice).await.unwrap();
    assert_eq!(dn, format!("CN={name},{ou}"));

    assert_binds(dc, &upn, "Initial-Alice-1").await;
    assert_binds(dc, &dn, "Initial-Alice-1").await;
    assert!(!dc.can_bind(&upn, "Wrong-Password-1").await.unwrap());
    let err = dc.bind_error(&upn, "Wrong-Password-2").await.unwrap().unwrap();
    assert!(err.contains("AcceptSecurityContext error, data 52e"), "{err}");
    assert_eq!(dc.bind_error(&upn, "Initial-Alice-1").await.unwrap(), None);
    assert!(
        dc.can_bind(&upn, "").await.is_err(),
        "empty password must be refused"
    );

    let attrs = dc
        .read(
            &dn,
            &[
                "sAMAccountName",
                "userPrincipalName",
                "cn",
                "sn",
                "givenName",
                "mail",
                "mobile",
                "otherMailbox",
                "userAccountControl",
                "pwdLastSet",
                "uSNChanged",
                "msDS-User-Account-Control-Computed",
            ],
        )
        .await
        .unwrap();
    assert_eq!(values(&attrs, "sAMAccountName"), [name.as_str()]);
    assert_eq!(values(&attrs, "userPrincipalName"), [upn.as_str()]);
    assert_eq!(values(&attrs, "cn"), [name.as_str()]);
    assert_eq!(values(&attrs, "sn"), ["Example"]);
    assert_eq!(values(&attrs, "givenName"), [format!("A{}", &name[1..])]);
    assert_eq!(values(&attrs, "mail"), ["alice@example.test"]);
    assert_eq!(values(&attrs, "mobile"), ["+1 555 0100 42"]);
    assert_eq!(values(&attrs, "otherMailbox"), ["alice@home.example"]);
    assert_eq!(values(&attrs, "userAccountControl"), ["512"]);
    assert_ne!(values(&attrs, "pwdLastSet"), ["0"]);
    assert_eq!(values(&attrs, "uSNChanged").len(), 1);
    assert_eq!(values(&attrs, "msDS-User-Account-Control-Computed"), ["0"]);

    // No OU: CN=Users. No password: a random one (the account exists and
    // is enabled).
    let bare_name = SambaDc::unique_name("bare");
    let bare = dc
        .add_user(&AdUser {
            name: &bare_name,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(bare, format!("CN={bare_name},CN=Users,DC=example,DC=test"));
    let attrs = dc.read(&bare, &["mail", "userAccountControl"]).await.unwrap();
    assert_eq!(values(&attrs, "mail"), Vec::<String>::new());
    assert_eq!(values(&attrs, "userAccountControl"), ["512"]);

    // Unknown entries and duplicate names are errors with the tool's text.
    let err = dc.read(&format!("CN=nobody,{ou}"), &["cn"]).await.unwrap_err();
    assert_err_contains(&err, "No such object");
    let err = dc.add_user(&alice).await.unwrap_err();
    assert_err_contains(&err, "samba-tool user");
    let err = dc
        .add_user(&AdUser {
            name: &SambaDc::unique_name("elsewhere"),
            ou: Some("OU=x,DC=other,DC=test"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_err_contains(&err, "is not below");
}

#[tokio::test]
async fn groups_have_members() {
    let Some((dc, ou)) = shared_with_fresh_ou("groups_have_members").await else {
        return;
    };
    let mut members = Vec::new();
    for prefix in ["gm1", "gm2"] {
        let name = SambaDc::unique_name(prefix);
        let user = AdUser {
            name: &name,
            ou: Some(&ou),
            ..Default::default()
        };
        members.push(dc.add_user(&user).await.unwrap());
    }
    let group_name = SambaDc::unique_name("staff");
    let group = dc.add_group(&ou, &group_name, &members).await.unwrap();
    assert_eq!(group, format!("CN={group_name},{ou}"));
    let mut listed = read_values(dc, &group, "member").await;
    listed.sort();
    let mut expected = members.clone();
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(read_values(dc, &members[0], "memberOf").await, [group.as_str()]);
    let nested = dc
        .add_group(&ou, &SambaDc::unique_name("all"), std::slice::from_ref(&group))
        .await
        .unwrap();
    assert_eq!(read_values(dc, &nested, "member").await, [group.as_str()]);
}

#[tokio::test]
async fn policy_and_account_states_give_ad_error_texts() {
    let Some((dc, ou)) = shared_with_fresh_ou("policy_and_account_states_give_ad_error_texts").await else {
        return;
    };
    let (name, dn) = add_user(dc, "bob", "Initial-Bob-1", Some(&ou)).await;
    let upn = SambaDc::upn(&name);

    // Policy checks on an admin reset.
    let err = dc.modify(&reset_ldif(&dn, "Ab1!")).await.unwrap_err();
    assert_err_contains(&err, "Constraint violation (19)");
    assert_err_contains(
        &err,
        "0000052D: Constraint violation - check_password_restrictions: the password is too short",
    );
    let err = dc.modify(&reset_ldif(&dn, "alllowercaseonly")).await.unwrap_err();
    assert_err_contains(&err, "the password does not meet the complexity criteria!");

    // Self-service change: bind as the user, delete old + add new.
    dc.modify_as(
        &upn,
        "Initial-Bob-1",
        &change_ldif(&dn, "Initial-Bob-1", "Bob-Own-2x"),
    )
    .await
    .unwrap();
    assert_binds(dc, &upn, "Bob-Own-2x").await;
    // old password allowed period = 0: the previous password is dead at once.
    assert!(!dc.can_bind(&upn, "Initial-Bob-1").await.unwrap());
    let err = dc
        .modify_as(
            &upn,
            "Bob-Own-2x",
            &change_ldif(&dn, "Bob-Own-2x", "Initial-Bob-1"),
        )
        .await
        .unwrap_err();
    assert_err_contains(&err, "the password was already used (in history)!");
    let err = dc
        .modify_as(
            &upn,
            "Bob-Own-2x",
            &change_ldif(&dn, "Wrong-Old-9x", "Brand-New-9x"),
        )
        .await
        .unwrap_err();
    assert_err_contains(
        &err,
        "00000056: Constraint violation - check_password_restrictions: The old password specified \
         doesn't match!",
    );
    // That wrong old password counted as a bad attempt: unlock to start clean.
    dc.modify(&replace_ldif(&dn, "lockoutTime", "0")).await.unwrap();

    // Lockout after 3 bad passwords (never used ones: recent history
    // passwords do not count), AD data codes.
    for n in 1..=2 {
        let err = dc.bind_error(&upn, &format!("Wrong-Pass-{n}x")).await.unwrap();
        assert!(err.unwrap().contains("data 52e, v1db1"));
    }
    // The third bad password locks the account; its own answer is 52e or
    // (usually) already 775.
    let third = dc.bind_error(&upn, "Wrong-Pass-3x").await.unwrap().unwrap();
    assert!(
        third.contains("data 775") || third.contains("data 52e"),
        "{third}"
    );
    let locked = dc.bind_error(&upn, "Bob-Own-2x").await.unwrap().unwrap();
    assert_eq!(
        locked,
        "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 775, v1db1"
    );
    let attrs = dc
        .read(&dn, &["badPwdCount", "msDS-User-Account-Control-Computed"])
        .await
        .unwrap();
    assert_eq!(values(&attrs, "badPwdCount"), ["3"]);
    assert_eq!(values(&attrs, "msDS-User-Account-Control-Computed"), ["16"]);
    dc.modify(&replace_ldif(&dn, "lockoutTime", "0")).await.unwrap();
    assert_binds(dc, &upn, "Bob-Own-2x").await;

    // Disabled: 533.
    dc.samba_tool(&["user", "disable", &name]).await.unwrap();
    let err = dc.bind_error(&upn, "Bob-Own-2x").await.unwrap().unwrap();
    assert!(err.contains("data 533, v1db1"), "{err}");
    dc.samba_tool(&["user", "enable", &name]).await.unwrap();
    assert_binds(dc, &upn, "Bob-Own-2x").await;

    // Must change at next logon: 773.
    dc.modify(&replace_ldif(&dn, "pwdLastSet", "0")).await.unwrap();
    let err = dc.bind_error(&upn, "Bob-Own-2x").await.unwrap().unwrap();
    assert!(err.contains("data 773, v1db1"), "{err}");
    assert_eq!(
        read_values(dc, &dn, "msDS-User-Account-Control-Computed").await,
        ["8388608"]
    );
    dc.modify(&replace_ldif(&dn, "pwdLastSet", "-1")).await.unwrap();
    assert_binds(dc, &upn, "Bob-Own-2x").await;
}

#[tokio::test]
async fn delegated_account_resets_only_inside_its_ou() {
    let Some((dc, ou)) = shared_with_fresh_ou("delegated_account_resets_only_inside_its_ou").await else {
        return;
    };
    let (inside_name, inside) = add_user(dc, "in", "Initial-In-1x", Some(&ou)).await;
    let (outside_name, outside) = add_user(dc, "out", "Initial-Out-1x", None).await;
    let (svc, svc_pw) = dc.delegate(&SambaDc::unique_name("sspr"), &ou).await.unwrap();
    let (plain, plain_pw) = dc
        .add_plain_account(&SambaDc::unique_name("plain"))
        .await
        .unwrap();
    assert!(svc.ends_with("@example.test"), "{svc}");
    assert_binds(dc, &svc, &svc_pw).await;
    assert_binds(dc, &plain, &plain_pw).await;

    // Inside the OU: reset + unlock in one modify.
    dc.modify_as(&svc, &svc_pw, &reset_ldif(&inside, "Reset-In-2x"))
        .await
        .unwrap();
    assert_binds(dc, &SambaDc::upn(&inside_name), "Reset-In-2x").await;
    // pwdLastSet is writable too (must change at next logon).
    dc.modify_as(&svc, &svc_pw, &replace_ldif(&inside, "pwdLastSet", "0"))
        .await
        .unwrap();
    dc.modify_as(&svc, &svc_pw, &replace_ldif(&inside, "pwdLastSet", "-1"))
        .await
        .unwrap();
    // But nothing else.
    let err = dc
        .modify_as(&svc, &svc_pw, &replace_ldif(&inside, "mobile", "+1 555 0199"))
        .await
        .unwrap_err();
    assert_err_contains(&err, "Insufficient access (50)");

    // Outside the OU, and for the plain account anywhere: 50.
    let denied =
        "Insufficient access (50)\n\tadditional info: error in module acl: insufficient access rights \
                  during LDB_MODIFY (50)";
    let err = dc
        .modify_as(&svc, &svc_pw, &reset_ldif(&outside, "Reset-Out-2x"))
        .await
        .unwrap_err();
    assert_err_contains(&err, denied);
    let err = dc
        .modify_as(&plain, &plain_pw, &reset_ldif(&inside, "Reset-In-3x"))
        .await
        .unwrap_err();
    assert_err_contains(&err, denied);
    assert_binds(dc, &SambaDc::upn(&outside_name), "Initial-Out-1x").await;

    // allowedAttributesEffective, read as the service account, names the
    // delegated attributes; unicodePwd is a control access right, not a
    // property write, so it is not listed.
    let effective = values(
        &dc.read_as(&svc, &svc_pw, &inside, &["allowedAttributesEffective"])
            .await
            .unwrap(),
        "allowedAttributesEffective",
    );
    let mut sorted = effective.clone();
    sorted.sort();
    assert_eq!(sorted, ["lockoutTime", "pwdLastSet"], "{effective:?}");
    let outside_effective = dc
        .read_as(&svc, &svc_pw, &outside, &["allowedAttributesEffective"])
        .await
        .unwrap();
    assert_eq!(values(&outside_effective, "allowedAttributesEffective").len(), 0);

    // A harmless probe of the reset right: an unquoted unicodePwd value is
    // refused with 53 after the access check passed, with 50 before.
    let probe = format!("dn: {inside}\nchangetype: modify\nreplace: unicodePwd\nunicodePwd: probe\n-\n\n");
    let err = dc.modify_as(&svc, &svc_pw, &probe).await.unwrap_err();
    assert_err_contains(&err, "Server is unwilling to perform (53)");
    let err = dc.modify_as(&plain, &plain_pw, &probe).await.unwrap_err();
    assert_err_contains(&err, "Insufficient access (50)");
    assert_binds(dc, &SambaDc::upn(&inside_name), "Reset-In-2x").await;

    // State attributes are readable by the service account.
    let attrs = dc
        .read_as(
            &svc,
            &svc_pw,
            &inside,
            &[
                "msDS-User-Account-Control-Computed",
                "msDS-ResultantPSO",
                "uSNChanged",
                "pwdLastSet",
                "lockoutTime",
                "badPwdCount",
            ],
        )
        .await
        .unwrap();
    for attr in ["msDS-User-Account-Control-Computed", "uSNChanged", "pwdLastSet"] {
        assert_eq!(values(&attrs, attr).len(), 1, "{attr} in {attrs:?}");
    }

    // A user who must change the password (773) cannot bind, but any
    // account that knows the old password can change it on the user's
    // behalf (AD grants "Change Password" to everyone); history applies.
    let upn = SambaDc::upn(&inside_name);
    dc.modify(&replace_ldif(&inside, "pwdLastSet", "0"))
        .await
        .unwrap();
    assert!(dc
        .bind_error(&upn, "Reset-In-2x")
        .await
        .unwrap()
        .unwrap()
        .contains("data 773"));
    let err = dc
        .modify_as(
            &upn,
            "Reset-In-2x",
            &change_ldif(&inside, "Reset-In-2x", "Changed-In-3x"),
        )
        .await
        .unwrap_err();
    assert_err_contains(&err, "Invalid credentials (49)");
    let err = dc
        .modify_as(
            &plain,
            &plain_pw,
            &change_ldif(&inside, "Reset-In-2x", "Initial-In-1x"),
        )
        .await
        .unwrap_err();
    assert_err_contains(&err, "(in history)");
    dc.modify_as(
        &plain,
        &plain_pw,
        &change_ldif(&inside, "Reset-In-2x", "Changed-In-3x"),
    )
    .await
    .unwrap();
    assert_binds(dc, &upn, "Changed-In-3x").await;
}

#[tokio::test]
async fn restart_keeps_data_and_address() {
    if !samba_available("restart_keeps_data_and_address") {
        return;
    }
    let shared = SambaDc::shared().await.unwrap();
    let started = Instant::now();
    let mut dc = SambaDc::start().await.unwrap();
    eprintln!("private DC {} started in {:?}", dc.ip(), started.elapsed());
    assert_ne!(dc.ip(), shared.ip(), "two DCs must not share an address");
    assert!(dc.is_running());
    let ip = dc.ip();
    let dir = dc.dir().to_path_buf();

    let (name, dn) = add_user(&dc, "carol", "Initial-Carol-1", None).await;
    let upn = SambaDc::upn(&name);
    dc.modify(&reset_ldif(&dn, "Reset-Carol-2x")).await.unwrap();

    dc.stop().await.unwrap();
    assert!(!dc.is_running());
    assert!(
        dc.can_bind(&upn, "Reset-Carol-2x").await.is_err(),
        "stopped DC answered"
    );
    dc.stop().await.unwrap();

    let restarted = Instant::now();
    dc.restart().await.unwrap();
    eprintln!("DC {} restarted in {:?}", dc.ip(), restarted.elapsed());
    assert_eq!(dc.ip(), ip);
    assert_binds(&dc, &upn, "Reset-Carol-2x").await;
    assert!(!dc.can_bind(&upn, "Initial-Carol-1").await.unwrap());
    // The shared DC is another domain: it does not know this user.
    assert!(!shared.can_bind(&upn, "Reset-Carol-2x").await.unwrap());

    drop(dc);
    let deadline = Instant::now() + Duration::from_secs(15);
    while dir.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
}
