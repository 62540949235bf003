//! The LDAP adapter against a real OpenLDAP 2.5 slapd with ppolicy (min length 8, history 5,
//! lockout after 3 failures, must change after an administrator's reset), started by the tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_core::clock::{OsRng, SystemClock};
use gatehouse_core::ports::{Directory, DirectoryError};
use gatehouse_core::secret::Password;
use gatehouse_core::types::Login;
use gatehouse_directory::ldap::{
    AttributeMap, GroupLookup, LdapDirectory, LdapSettings, PasswordWrite, PolicyEnforcement, Security,
};
use gatehouse_testkit::{LdapUser, Slapd};
use std::sync::Arc;
use std::time::Duration;

fn settings(slapd: &Slapd, base: &str, bind: (&str, &str)) -> LdapSettings {
    LdapSettings {
        url: slapd.url(),
        security: Security::None,
        tls_ca_file: None,
        tls_insecure_skip_verify: false,
        bind_dn: bind.0.into(),
        bind_password: Password::new(bind.1),
        base_dn: base.into(),
        user_filter: "(objectClass=inetOrgPerson)".into(),
        login_attributes: vec!["uid".into(), "mail".into()],
        attributes: AttributeMap {
            personal_email: Some(Slapd::PERSONAL_EMAIL_ATTR.into()),
            ..AttributeMap::default()
        },
        groups: GroupLookup::MemberOf {
            attribute: "memberOf".into(),
        },
        pool_size: 4,
        connect_timeout: Duration::from_secs(3),
        operation_timeout: Duration::from_secs(5),
        enforce_directory_policy: true,
        policy_enforcement: PolicyEnforcement::UserChange,
        password_write: PasswordWrite::Exop,
        policy_dn: Some(Slapd::POLICY_DN.into()),
    }
}

fn directory(s: LdapSettings) -> LdapDirectory {
    LdapDirectory::new(s, Arc::new(SystemClock), Arc::new(OsRng)).unwrap()
}

fn login(s: &str) -> Login {
    Login::parse(s).unwrap()
}

fn pw(s: &str) -> Password {
    Password::new(s)
}

/// A fresh OU with one user, and the adapter bound as the password-administrator service account.
async fn setup(uid: &str, password: &str) -> (&'static Slapd, String, String, LdapDirectory) {
    gatehouse_testkit::init_test_tracing();
    let slapd = Slapd::shared()
        .await
        .expect("slapd (apt-get install -y slapd ldap-utils)");
    let ou = slapd.fresh_ou().await.unwrap();
    let dn = slapd
        .add_user(
            &ou,
            &LdapUser {
                uid,
                password: Some(password),
                mail: Some(&format!("{uid}@example.org")),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let dir = directory(settings(slapd, &ou, (Slapd::SERVICE_DN, Slapd::SERVICE_PW)));
    (slapd, ou, dn, dir)
}

/// LDIF pointing `dn` at its own password policy.
fn policy_of(dn: &str, policy: &str) -> String {
    format!("dn: {dn}\nchangetype: modify\nreplace: pwdPolicySubentry\npwdPolicySubentry: {policy}\n")
}

/// A user in `ou` governed by the policy entry `policy`; returns its DN.
async fn user_under_policy(slapd: &Slapd, ou: &str, uid: &str, password: &str, policy: &str) -> String {
    let user = LdapUser {
        uid,
        password: Some(password),
        ..Default::default()
    };
    let dn = slapd.add_user(ou, &user).await.unwrap();
    slapd.modify(&policy_of(&dn, policy)).await.unwrap();
    dn
}

fn rules(e: DirectoryError) -> Vec<String> {
    match e {
        DirectoryError::Rejected(v) => v.into_iter().map(|v| v.rule).collect(),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

async fn attr(slapd: &Slapd, dn: &str, name: &str) -> Option<String> {
    slapd
        .read(dn, &[name])
        .await
        .unwrap()
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

#[tokio::test]
async fn finds_users_by_any_login_attribute() {
    let (_, _, _, dir) = setup("finn", "Initial-Finn-1").await;
    let by_uid = dir.find_account(&login("finn")).await.unwrap().unwrap();
    let by_mail = dir
        .find_account(&login("Finn@Example.org"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_uid, by_mail);
    assert_eq!(by_uid.login.as_str(), "finn");
    assert_eq!(by_uid.display_name, "Finn Example");
    assert!(!by_uid.locked && !by_uid.disabled && !by_uid.must_change && !by_uid.expired);
    assert!(dir.find_account(&login("nobody")).await.unwrap().is_none());
    // Filter injection finds nothing rather than everything.
    assert!(dir.find_account(&login("*")).await.unwrap().is_none());
    assert!(dir.find_account(&login("f*)(uid=*")).await.unwrap().is_none());
}

#[tokio::test]
async fn reset_sets_the_password_and_leaves_no_must_change() {
    let (slapd, _, dn, dir) = setup("rita", "Initial-Rita-1").await;
    dir.reset_password(&login("rita"), &pw("Brand-New-Rita-2"))
        .await
        .unwrap();
    assert!(slapd.can_bind(&dn, "Brand-New-Rita-2").await.unwrap());
    assert!(!slapd.can_bind(&dn, "Initial-Rita-1").await.unwrap());
    assert_eq!(
        attr(slapd, &dn, "pwdReset").await,
        None,
        "a self-service reset is final"
    );
    assert!(
        !dir.find_account(&login("rita"))
            .await
            .unwrap()
            .unwrap()
            .must_change
    );
}

#[tokio::test]
async fn enforced_reset_honours_history_and_length_even_for_a_password_administrator() {
    let (slapd, _, dn, dir) = setup("hank", "Initial-Hank-1").await;
    dir.reset_password(&login("hank"), &pw("Second-Hank-2"))
        .await
        .unwrap();
    dir.reset_password(&login("hank"), &pw("Third-Hank-3"))
        .await
        .unwrap();
    // An earlier password, and the current one: refused before anything is written.
    let e = dir
        .reset_password(&login("hank"), &pw("Initial-Hank-1"))
        .await
        .unwrap_err();
    assert_eq!(rules(e), vec!["history"]);
    let e = dir
        .reset_password(&login("hank"), &pw("Third-Hank-3"))
        .await
        .unwrap_err();
    assert_eq!(rules(e), vec!["history"]);
    assert!(
        slapd.can_bind(&dn, "Third-Hank-3").await.unwrap(),
        "nothing was written"
    );
    // Too short for pwdMinLength 8: the directory itself refuses the change bound as the user.
    let e = dir
        .reset_password(&login("hank"), &pw("Sh0rt!"))
        .await
        .unwrap_err();
    assert_eq!(rules(e), vec!["directory_min_length"]);

    // Without enforcement the password administrator bypasses history (the lab's finding).
    let ou = slapd.fresh_ou().await.unwrap();
    let dn2 = slapd
        .add_user(
            &ou,
            &LdapUser {
                uid: "hal",
                password: Some("Initial-Hal-1"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut s = settings(slapd, &ou, (Slapd::SERVICE_DN, Slapd::SERVICE_PW));
    s.enforce_directory_policy = false;
    let lax = directory(s);
    lax.reset_password(&login("hal"), &pw("Second-Hal-2"))
        .await
        .unwrap();
    lax.reset_password(&login("hal"), &pw("Initial-Hal-1"))
        .await
        .unwrap();
    assert!(slapd.can_bind(&dn2, "Initial-Hal-1").await.unwrap());
}

#[tokio::test]
async fn a_write_only_service_account_gets_the_directory_checks_on_direct_resets() {
    let (slapd, ou, dn, _) = setup("wendy", "Initial-Wendy-1").await;
    let mut s = settings(slapd, &ou, (Slapd::WRITEONLY_DN, Slapd::WRITEONLY_PW));
    s.policy_enforcement = PolicyEnforcement::ServiceAccount;
    s.password_write = PasswordWrite::Modify;
    let dir = directory(s);
    dir.reset_password(&login("wendy"), &pw("Second-Wendy-2"))
        .await
        .unwrap();
    assert!(slapd.can_bind(&dn, "Second-Wendy-2").await.unwrap());
    let e = dir
        .reset_password(&login("wendy"), &pw("Initial-Wendy-1"))
        .await
        .unwrap_err();
    assert_eq!(rules(e), vec!["history"]);
    let e = dir
        .reset_password(&login("wendy"), &pw("short"))
        .await
        .unwrap_err();
    assert_eq!(rules(e), vec!["directory_min_length"]);
}

#[tokio::test]
async fn unlock_after_a_real_lockout_and_only_the_right_password_hears_locked() {
    let (slapd, _, dn, dir) = setup("lou", "Initial-Lou-1").await;
    for i in 0..3 {
        let e = dir
            .authenticate(&login("lou"), &pw(&format!("wrong-{i}")))
            .await
            .unwrap_err();
        assert_eq!(e, DirectoryError::InvalidCredentials);
    }
    assert!(attr(slapd, &dn, "pwdAccountLockedTime").await.is_some());
    let e = dir
        .authenticate(&login("lou"), &pw("Initial-Lou-1"))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        DirectoryError::Locked,
        "the ppolicy control tells a locked account apart"
    );
    assert!(dir.find_account(&login("lou")).await.unwrap().unwrap().locked);

    // slapd says "locked" to any password; only the right one hears it.
    let e = dir
        .authenticate(&login("lou"), &pw("a-wrong-guess"))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        DirectoryError::InvalidCredentials,
        "no signal for a wrong password"
    );
    let e = dir
        .change_password(&login("lou"), &pw("a-wrong-guess"), &pw("Whatever-New-9"))
        .await
        .unwrap_err();
    assert_eq!(e, DirectoryError::InvalidCredentials);
    let e = dir
        .change_password(&login("lou"), &pw("Initial-Lou-1"), &pw("Whatever-New-9"))
        .await
        .unwrap_err();
    assert_eq!(e, DirectoryError::Locked);

    dir.unlock(&login("lou")).await.unwrap();
    assert_eq!(attr(slapd, &dn, "pwdAccountLockedTime").await, None);
    assert_eq!(attr(slapd, &dn, "pwdFailureTime").await, None);
    let a = dir
        .authenticate(&login("lou"), &pw("Initial-Lou-1"))
        .await
        .unwrap();
    assert!(!a.locked);
    // Unlocking an account that is not locked is fine.
    dir.unlock(&login("lou")).await.unwrap();

    for i in 0..3 {
        let _ = dir.authenticate(&login("lou"), &pw(&format!("again-{i}"))).await;
    }
    assert!(dir.find_account(&login("lou")).await.unwrap().unwrap().locked);
    dir.reset_password(&login("lou"), &pw("After-Lock-Lou-2"))
        .await
        .unwrap();
    assert!(!dir.find_account(&login("lou")).await.unwrap().unwrap().locked);
    assert!(slapd.can_bind(&dn, "After-Lock-Lou-2").await.unwrap());
}

#[tokio::test]
async fn an_administrative_lock_is_never_lifted_by_self_service() {
    let (slapd, _, dn, dir) = setup("adam", "Initial-Adam-1").await;
    slapd
        .modify(&format!(
            "dn: {dn}\nchangetype: modify\nreplace: pwdAccountLockedTime\npwdAccountLockedTime: 000001010000Z\n"
        ))
        .await
        .unwrap();
    let a = dir.find_account(&login("adam")).await.unwrap().unwrap();
    assert!(a.disabled);
    assert_eq!(
        dir.unlock(&login("adam")).await.unwrap_err(),
        DirectoryError::Disabled
    );
    assert_eq!(
        dir.reset_password(&login("adam"), &pw("Some-New-Adam-2"))
            .await
            .unwrap_err(),
        DirectoryError::Disabled
    );
    assert!(attr(slapd, &dn, "pwdAccountLockedTime").await.is_some());
}

#[tokio::test]
async fn must_change_after_a_helpdesk_reset_then_change_in_the_portal() {
    let (slapd, _, dn, dir) = setup("mia", "Initial-Mia-1").await;
    dir.helpdesk_reset(&login("mia"), &pw("Helpdesk-Temp-1"), true)
        .await
        .unwrap();
    assert_eq!(attr(slapd, &dn, "pwdReset").await.as_deref(), Some("TRUE"));
    assert!(
        dir.find_account(&login("mia"))
            .await
            .unwrap()
            .unwrap()
            .must_change
    );
    dir.change_password(&login("mia"), &pw("Helpdesk-Temp-1"), &pw("Mias-Own-Choice-2"))
        .await
        .unwrap();
    assert_eq!(attr(slapd, &dn, "pwdReset").await, None);
    assert!(slapd.can_bind(&dn, "Mias-Own-Choice-2").await.unwrap());
    // A helpdesk reset without "must change" leaves none.
    dir.helpdesk_reset(&login("mia"), &pw("Helpdesk-Temp-2"), false)
        .await
        .unwrap();
    assert_eq!(attr(slapd, &dn, "pwdReset").await, None);
}

#[tokio::test]
async fn change_explains_every_ppolicy_refusal() {
    let (slapd, ou, dn, dir) = setup("cleo", "Initial-Cleo-1").await;
    let l = login("cleo");
    let e = dir
        .change_password(&l, &pw("Initial-Cleo-1"), &pw("short"))
        .await
        .unwrap_err();
    assert_eq!(rules(e), vec!["directory_min_length"]);
    dir.change_password(&l, &pw("Initial-Cleo-1"), &pw("Second-Cleo-2"))
        .await
        .unwrap();
    let e = dir
        .change_password(&l, &pw("Second-Cleo-2"), &pw("Initial-Cleo-1"))
        .await
        .unwrap_err();
    assert_eq!(rules(e), vec!["history"]);
    let e = dir
        .change_password(&l, &pw("Second-Cleo-2"), &pw("Second-Cleo-2"))
        .await
        .unwrap_err();
    assert_eq!(rules(e), vec!["history"]);
    let e = dir
        .change_password(&l, &pw("not-my-password"), &pw("Third-Cleo-3"))
        .await
        .unwrap_err();
    assert_eq!(e, DirectoryError::InvalidCredentials);
    assert!(slapd.can_bind(&dn, "Second-Cleo-2").await.unwrap());

    // Too young: a policy with a minimum age.
    let young = slapd
        .add_policy(
            &format!("young-{}", ou.len()),
            &[("pwdMinAge", "3600"), ("pwdInHistory", "5")],
        )
        .await
        .unwrap();
    user_under_policy(slapd, &ou, "yara", "Initial-Yara-1", &young).await;
    dir.change_password(&login("yara"), &pw("Initial-Yara-1"), &pw("Second-Yara-2"))
        .await
        .unwrap();
    let e = dir
        .change_password(&login("yara"), &pw("Second-Yara-2"), &pw("Third-Yara-3"))
        .await
        .unwrap_err();
    assert_eq!(rules(e), vec!["directory_min_age"]);

    // Users not allowed to change their own password.
    let locked_down = slapd
        .add_policy(
            &format!("nochange-{}", ou.len()),
            &[("pwdAllowUserChange", "FALSE")],
        )
        .await
        .unwrap();
    user_under_policy(slapd, &ou, "nora", "Initial-Nora-1", &locked_down).await;
    let e = dir
        .change_password(&login("nora"), &pw("Initial-Nora-1"), &pw("Second-Nora-2"))
        .await
        .unwrap_err();
    assert_eq!(rules(e), vec!["directory_change_not_allowed"]);
}

#[tokio::test]
async fn an_expired_password_is_changed_with_the_old_one() {
    let (slapd, ou, dn, dir) = setup("exa", "Initial-Exa-1").await;
    let short_lived = slapd
        .add_policy(
            &format!("expiring-{}", ou.len()),
            &[
                ("pwdMaxAge", "1"),
                ("pwdGraceAuthNLimit", "0"),
                ("pwdInHistory", "5"),
            ],
        )
        .await
        .unwrap();
    slapd.modify(&policy_of(&dn, &short_lived)).await.unwrap();
    // pwdChangedTime is set by a password change.
    dir.change_password(&login("exa"), &pw("Initial-Exa-1"), &pw("Second-Exa-2"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let a = dir.find_account(&login("exa")).await.unwrap().unwrap();
    assert!(a.expired);
    assert_eq!(
        dir.authenticate(&login("exa"), &pw("Second-Exa-2"))
            .await
            .unwrap_err(),
        DirectoryError::PasswordExpired
    );
    assert_eq!(
        dir.change_password(&login("exa"), &pw("wrong-password"), &pw("Third-Exa-3"))
            .await
            .unwrap_err(),
        DirectoryError::InvalidCredentials
    );
    dir.change_password(&login("exa"), &pw("Second-Exa-2"), &pw("Third-Exa-3"))
        .await
        .unwrap();
    let e = dir
        .change_password(&login("exa"), &pw("Third-Exa-3"), &pw("Second-Exa-2"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, DirectoryError::Rejected(_) | DirectoryError::PasswordExpired),
        "{e:?}"
    );
}

#[tokio::test]
async fn self_test_names_each_right() {
    let (slapd, ou, _, dir) = setup("sam", "Initial-Sam-1").await;
    let checks = dir.self_test(None).await;
    assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
    let names: Vec<&str> = checks.iter().map(|c| c.right.as_str()).collect();
    assert_eq!(
        names,
        [
            "bind",
            "find_user",
            "read_policy",
            "reset_password",
            "unlock",
            "reset_flag"
        ]
    );

    let weak = directory(settings(slapd, &ou, (Slapd::READONLY_DN, Slapd::READONLY_PW)));
    let checks = weak.self_test(Some(&login("sam"))).await;
    let missing: Vec<&str> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.right.as_str())
        .collect();
    assert_eq!(missing, ["reset_password", "unlock", "reset_flag"], "{checks:#?}");
    assert!(checks
        .iter()
        .any(|c| c.detail.contains("may not write userPassword")));

    let wrong = directory(settings(slapd, &ou, (Slapd::SERVICE_DN, "not-the-password")));
    let checks = wrong.self_test(None).await;
    assert_eq!(checks.len(), 1);
    assert!(
        !checks[0].ok && checks[0].detail.contains("bind_password"),
        "{checks:#?}"
    );
}

#[tokio::test]
async fn an_outage_says_unavailable_and_the_pool_reconnects() {
    gatehouse_testkit::init_test_tracing();
    let mut slapd = Slapd::start().await.expect("slapd");
    let ou = slapd.fresh_ou().await.unwrap();
    let dn = slapd
        .add_user(
            &ou,
            &LdapUser {
                uid: "otto",
                password: Some("Initial-Otto-1"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let dir = directory(settings(&slapd, &ou, (Slapd::SERVICE_DN, Slapd::SERVICE_PW)));
    assert!(dir.find_account(&login("otto")).await.unwrap().is_some());
    slapd.stop().await.unwrap();
    let e = dir.find_account(&login("otto")).await.unwrap_err();
    assert!(matches!(e, DirectoryError::Unavailable(_)), "{e:?}");
    let e = dir
        .reset_password(&login("otto"), &pw("During-Outage-2"))
        .await
        .unwrap_err();
    assert!(matches!(e, DirectoryError::Unavailable(_)), "{e:?}");
    assert!(dir.health().await.is_err());
    slapd.restart().await.unwrap();
    dir.reset_password(&login("otto"), &pw("After-Outage-2"))
        .await
        .unwrap();
    assert!(slapd.can_bind(&dn, "After-Outage-2").await.unwrap());
    assert!(dir.health().await.is_ok());
}

mod sync {
    use super::*;
    use gatehouse_core::ports::Store;
    use gatehouse_core::{Gatehouse, Settings};
    use gatehouse_store::SqliteStore;

    async fn app(slapd: &Slapd, ou: &str, db: &std::path::Path) -> (Gatehouse, Arc<SqliteStore>) {
        let store = Arc::new(
            SqliteStore::connect(&format!("sqlite://{}", db.display()))
                .await
                .unwrap(),
        );
        let dir = directory(settings(slapd, ou, (Slapd::SERVICE_DN, Slapd::SERVICE_PW)));
        let app = Gatehouse::new(
            Arc::new(dir),
            store.clone(),
            Arc::new(SystemClock),
            Arc::new(OsRng),
            Settings::default(),
        )
        .await
        .unwrap();
        (app, store)
    }

    #[tokio::test]
    async fn initial_then_incremental_add_modify_delete() {
        gatehouse_testkit::init_test_tracing();
        let slapd = Slapd::shared().await.expect("slapd");
        let ou = slapd.fresh_ou().await.unwrap();
        let mut dns = vec![];
        for (uid, mobile, personal) in [
            ("ann", Some("+1 555 0100 11"), Some("ann@home.example")),
            ("ben", None, None),
            ("cid", None, Some("cid@home.example")),
        ] {
            let u = LdapUser {
                uid,
                password: Some("Initial-Pass-1"),
                mail: Some(&format!("{uid}@example.org")),
                mobile,
                personal_email: personal,
            };
            dns.push(slapd.add_user(&ou, &u).await.unwrap());
        }
        slapd.add_group(&ou, "staff", &dns[..2]).await.unwrap();
        let db = tempfile::tempdir().unwrap();
        let (app, store) = app(slapd, &ou, &db.path().join("g.db")).await;

        let r = app.sync_directory(false).await.unwrap();
        assert!(r.full);
        assert_eq!((r.read, r.disabled, r.skipped.len()), (3, 0, 0));
        let ann = store.profile(&login("ann")).await.unwrap().unwrap();
        assert_eq!(ann.display_name, "Ann Example");
        assert_eq!(ann.email.unwrap().as_str(), "ann@example.org");
        assert_eq!(ann.mobile_phone.as_deref(), Some("+1 555 0100 11"));
        assert_eq!(ann.groups, vec!["staff".to_owned()]);
        assert!(!ann.disabled);
        let emails = |m: Vec<gatehouse_core::ports::Method>| -> Vec<gatehouse_core::ports::Method> {
            m.into_iter()
                .filter(|m| m.kind == gatehouse_core::types::MethodKind::Email)
                .collect()
        };
        let methods = emails(store.methods(&login("ann")).await.unwrap());
        assert_eq!(methods.len(), 1);
        assert_eq!(methods[0].target.address(), Some("ann@home.example"));
        assert!(
            !methods[0].verified,
            "directory contacts are untrusted by default"
        );
        assert!(store.methods(&login("ben")).await.unwrap().is_empty());

        // modifyTimestamp has one-second resolution: changes in a later second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        slapd
            .add_user(
                &ou,
                &LdapUser {
                    uid: "dan",
                    password: Some("Initial-Pass-1"),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        slapd
            .modify(&format!(
                "dn: {}\nchangetype: modify\nreplace: mobile\nmobile: +44 20 7946 0000\n-\nreplace: {}\n{}: ben@home.example\n",
                dns[1],
                Slapd::PERSONAL_EMAIL_ATTR,
                Slapd::PERSONAL_EMAIL_ATTR
            ))
            .await
            .unwrap();
        slapd
            .modify(&format!(
                "dn: {}\nchangetype: modify\nreplace: {}\n{}: ann@new-home.example\n",
                dns[0],
                Slapd::PERSONAL_EMAIL_ATTR,
                Slapd::PERSONAL_EMAIL_ATTR
            ))
            .await
            .unwrap();
        slapd
            .modify(&format!("dn: {}\nchangetype: delete\n", dns[2]))
            .await
            .unwrap();

        let r = app.sync_directory(false).await.unwrap();
        assert!(!r.full);
        assert_eq!((r.read, r.disabled), (3, 1), "{r:?}");
        assert!(store.profile(&login("dan")).await.unwrap().is_some());
        let ben = store.profile(&login("ben")).await.unwrap().unwrap();
        assert_eq!(ben.mobile_phone.as_deref(), Some("+44 20 7946 0000"));
        let ben_methods = store.methods(&login("ben")).await.unwrap();
        assert_eq!(emails(ben_methods.clone()).len(), 1);
        // The mobile number became an (unverified) SMS candidate, in E.164.
        assert!(
            ben_methods
                .iter()
                .any(|m| m.target.address() == Some("+442079460000") && !m.verified),
            "{ben_methods:?}"
        );
        let ann_methods = emails(store.methods(&login("ann")).await.unwrap());
        assert_eq!(ann_methods.len(), 1, "the new candidate replaces the old one");
        assert_eq!(ann_methods[0].target.address(), Some("ann@new-home.example"));
        assert!(store.profile(&login("cid")).await.unwrap().unwrap().disabled);

        // The one who left gets what an unknown login gets (a decoy flow).
        let started = app
            .start_flow(
                gatehouse_core::types::FlowKind::Reset,
                "cid",
                None,
                &gatehouse_core::RequestMeta::default(),
            )
            .await
            .unwrap();
        let audit = app.audit_page(0, None, 1000).await.unwrap();
        let last = audit.last().unwrap();
        assert_eq!(last.event.reason.as_deref(), Some("unknown_account"));
        assert_eq!(started.view.methods.len(), 1);
        assert!(audit.iter().any(|r| r.event.activity.as_str() == "user_disabled"));
        assert!(audit
            .iter()
            .any(|r| r.event.activity.as_str() == "directory_synced"));

        // A full resync changes nothing further.
        let r = app.sync_directory(true).await.unwrap();
        assert_eq!((r.read, r.disabled), (3, 0));
    }
}

#[tokio::test]
async fn a_login_matching_several_entries_is_refused() {
    let (slapd, ou, _, dir) = setup("twin", "Initial-Twin-1").await;
    // Another entry whose mail is the first one's uid typed as a login.
    slapd
        .add_user(
            &ou,
            &LdapUser {
                uid: "other",
                password: Some("Initial-Other-1"),
                mail: Some("twin"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(dir.find_account(&login("twin")).await.unwrap().is_none());
    assert_eq!(
        dir.authenticate(&login("twin"), &pw("Initial-Twin-1"))
            .await
            .unwrap_err(),
        DirectoryError::InvalidCredentials
    );
}
