//! The Active Directory adapter against a real Samba AD domain controller (complexity on, minimum
//! length 8, history 5, lockout after 3 bad passwords), bound as a least-privilege delegated service
//! account over LDAPS verified against the test CA.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_core::clock::OsRng;
use gatehouse_core::ports::{Directory, DirectoryError};
use gatehouse_core::secret::Password;
use gatehouse_core::types::Login;
use gatehouse_directory::ad::{AdDirectory, AdSettings};
use gatehouse_directory::ldap::{
    AttributeMap, GroupLookup, LdapSettings, PasswordWrite, PolicyEnforcement, Security,
};
use gatehouse_testkit::{AdUser, SambaDc};
use std::sync::Arc;
use std::time::Duration;

fn settings(dc: &SambaDc, base: &str, bind: (&str, &str)) -> AdSettings {
    AdSettings {
        ldap: LdapSettings {
            url: dc.ldaps_url(),
            security: Security::Implicit,
            tls_ca_file: Some(dc.ca_file()),
            tls_insecure_skip_verify: false,
            bind_dn: bind.0.into(),
            bind_password: Password::new(bind.1),
            base_dn: base.into(),
            user_filter: "(&(objectCategory=person)(objectClass=user))".into(),
            login_attributes: vec!["sAMAccountName".into(), "userPrincipalName".into(), "mail".into()],
            attributes: AttributeMap {
                display_name: "displayName".into(),
                personal_email: Some("otherMailbox".into()),
                ..AttributeMap::default()
            },
            groups: GroupLookup::MemberOf {
                attribute: "memberOf".into(),
            },
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(15),
            enforce_directory_policy: true,
            policy_enforcement: PolicyEnforcement::UserChange,
            password_write: PasswordWrite::Exop,
            policy_dn: None,
        },
        privileged_groups: vec![],
        exclude_privileged: false,
    }
}

fn directory(s: AdSettings) -> AdDirectory {
    AdDirectory::new(s, Arc::new(OsRng)).unwrap()
}

fn login(s: &str) -> Login {
    Login::parse(s).unwrap()
}

fn pw(s: &str) -> Password {
    Password::new(s)
}

fn rules(e: DirectoryError) -> Vec<String> {
    match e {
        DirectoryError::Rejected(v) => v.into_iter().map(|v| v.rule).collect(),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

struct Fixture {
    dc: &'static SambaDc,
    ou: String,
    service: (String, String),
}

impl Fixture {
    async fn new() -> Self {
        gatehouse_testkit::init_test_tracing();
        let dc = SambaDc::shared().await.expect("samba AD DC (see scripts/test)");
        let ou = dc.fresh_ou().await.unwrap();
        let service = dc.delegate(&SambaDc::unique_name("sspr"), &ou).await.unwrap();
        Self { dc, ou, service }
    }

    fn dir(&self) -> AdDirectory {
        directory(settings(self.dc, &self.ou, (&self.service.0, &self.service.1)))
    }

    /// A user in this fixture's OU; returns (sAMAccountName, DN).
    async fn user(&self, prefix: &str, password: &str) -> (String, String) {
        let name = SambaDc::unique_name(prefix);
        let mail = format!("{name}@corp.example");
        let dn = self
            .dc
            .add_user(&AdUser {
                name: &name,
                password: Some(password),
                mail: Some(&mail),
                ou: Some(&self.ou),
                ..Default::default()
            })
            .await
            .unwrap();
        (name, dn)
    }

    /// Creates a fine-grained password policy (precedence, one `samba-tool` option) for `user`.
    async fn pso(&self, prefix: &str, precedence: &str, option: &str, user: &str) {
        let pso = SambaDc::unique_name(prefix);
        for args in [
            ["create", &pso, precedence, option].as_slice(),
            ["apply", &pso, user].as_slice(),
        ] {
            let mut all = vec!["domain", "passwordsettings", "pso"];
            all.extend_from_slice(args);
            self.dc.samba_tool(&all).await.unwrap();
        }
    }

    async fn attr(&self, dn: &str, name: &str) -> Option<String> {
        self.dc
            .read(dn, &[name])
            .await
            .unwrap()
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

#[tokio::test]
async fn reset_writes_unicode_pwd_unlocks_and_needs_no_change() {
    let f = Fixture::new().await;
    let dir = f.dir();
    let (name, dn) = f.user("rita", "Initial-Rita-1").await;
    let a = dir.find_account(&login(&name)).await.unwrap().unwrap();
    assert!(!a.locked && !a.disabled && !a.must_change && !a.privileged);
    // By UPN and mail too.
    assert!(dir
        .find_account(&login(&SambaDc::upn(&name)))
        .await
        .unwrap()
        .is_some());
    dir.reset_password(&login(&name), &pw("Brand-New-Rita-2"))
        .await
        .unwrap();
    assert!(f
        .dc
        .can_bind(&SambaDc::upn(&name), "Brand-New-Rita-2")
        .await
        .unwrap());
    assert!(!f
        .dc
        .can_bind(&SambaDc::upn(&name), "Initial-Rita-1")
        .await
        .unwrap());
    assert_ne!(f.attr(&dn, "pwdLastSet").await.as_deref(), Some("0"));
}

#[tokio::test]
async fn lockout_by_wrong_binds_then_self_service_unlock_and_reset_unlocks_too() {
    let f = Fixture::new().await;
    let dir = f.dir();
    let (name, _) = f.user("lou", "Initial-Lou-1").await;
    let upn = SambaDc::upn(&name);
    for i in 0..3 {
        let _ = f.dc.can_bind(&upn, &format!("Wrong-Guess-{i}")).await.unwrap();
    }
    assert!(dir.find_account(&login(&name)).await.unwrap().unwrap().locked);
    assert_eq!(
        dir.authenticate(&login(&name), &pw("Initial-Lou-1"))
            .await
            .unwrap_err(),
        DirectoryError::Locked
    );
    dir.unlock(&login(&name)).await.unwrap();
    assert!(!dir.find_account(&login(&name)).await.unwrap().unwrap().locked);
    dir.authenticate(&login(&name), &pw("Initial-Lou-1"))
        .await
        .unwrap();

    for i in 0..3 {
        let _ = f.dc.can_bind(&upn, &format!("Other-Guess-{i}")).await.unwrap();
    }
    assert!(dir.find_account(&login(&name)).await.unwrap().unwrap().locked);
    dir.reset_password(&login(&name), &pw("After-Lock-Lou-2"))
        .await
        .unwrap();
    assert!(!dir.find_account(&login(&name)).await.unwrap().unwrap().locked);
    assert!(f.dc.can_bind(&upn, "After-Lock-Lou-2").await.unwrap());
}

#[tokio::test]
async fn must_change_at_next_logon_then_change_with_the_old_password() {
    let f = Fixture::new().await;
    let dir = f.dir();
    let (name, dn) = f.user("mia", "Initial-Mia-1").await;
    dir.helpdesk_reset(&login(&name), &pw("Helpdesk-Temp-1"), true)
        .await
        .unwrap();
    assert_eq!(f.attr(&dn, "pwdLastSet").await.as_deref(), Some("0"));
    let a = dir.find_account(&login(&name)).await.unwrap().unwrap();
    assert!(a.must_change && !a.expired);
    assert_eq!(
        dir.authenticate(&login(&name), &pw("Helpdesk-Temp-1"))
            .await
            .unwrap_err(),
        DirectoryError::PasswordExpired
    );
    assert_eq!(
        dir.change_password(&login(&name), &pw("Not-The-Temp-1"), &pw("Mias-Own-Choice-2"))
            .await
            .unwrap_err(),
        DirectoryError::InvalidCredentials
    );
    dir.change_password(&login(&name), &pw("Helpdesk-Temp-1"), &pw("Mias-Own-Choice-2"))
        .await
        .unwrap();
    assert!(
        !dir.find_account(&login(&name))
            .await
            .unwrap()
            .unwrap()
            .must_change
    );
    assert!(f
        .dc
        .can_bind(&SambaDc::upn(&name), "Mias-Own-Choice-2")
        .await
        .unwrap());
}

#[tokio::test]
async fn history_is_honoured_on_reset_through_the_fallback() {
    let f = Fixture::new().await;
    let dir = f.dir();
    let (name, _) = f.user("hank", "Initial-Hank-1").await;
    dir.reset_password(&login(&name), &pw("Second-Hank-2"))
        .await
        .unwrap();
    let e = dir
        .reset_password(&login(&name), &pw("Initial-Hank-1"))
        .await
        .unwrap_err();
    assert_eq!(rules(e), ["history"]);
    // Without enforcement AD semantics apply: a reset ignores history.
    let mut s = settings(f.dc, &f.ou, (&f.service.0, &f.service.1));
    s.ldap.enforce_directory_policy = false;
    let lax = directory(s);
    lax.reset_password(&login(&name), &pw("Third-Hank-3"))
        .await
        .unwrap();
    lax.reset_password(&login(&name), &pw("Second-Hank-2"))
        .await
        .unwrap();
    assert!(f
        .dc
        .can_bind(&SambaDc::upn(&name), "Second-Hank-2")
        .await
        .unwrap());
}

#[tokio::test]
async fn every_refusal_in_plain_words() {
    let f = Fixture::new().await;
    let dir = f.dir();
    let (name, _) = f.user("cleo", "Initial-Cleo-1").await;
    let l = login(&name);
    let old = pw("Initial-Cleo-1");
    assert_eq!(
        rules(dir.change_password(&l, &old, &pw("Sh0rt!")).await.unwrap_err()),
        ["directory_min_length"]
    );
    assert_eq!(
        rules(
            dir.change_password(&l, &old, &pw("alllowercaseletters"))
                .await
                .unwrap_err()
        ),
        ["directory_complexity"]
    );
    assert_eq!(
        rules(dir.change_password(&l, &old, &old).await.unwrap_err()),
        ["history"]
    );
    dir.change_password(&l, &old, &pw("Second-Cleo-2")).await.unwrap();
    assert_eq!(
        rules(
            dir.change_password(&l, &pw("Second-Cleo-2"), &old)
                .await
                .unwrap_err()
        ),
        ["history"]
    );
    assert_eq!(
        dir.change_password(&l, &pw("Wrong-Old-Pass-9"), &pw("Third-Cleo-3"))
            .await
            .unwrap_err(),
        DirectoryError::InvalidCredentials
    );
    // The same reasons on a reset.
    assert_eq!(
        rules(dir.reset_password(&l, &pw("Sh0rt!")).await.unwrap_err()),
        ["directory_min_length"]
    );
    assert_eq!(
        rules(
            dir.reset_password(&l, &pw("alllowercaseletters"))
                .await
                .unwrap_err()
        ),
        ["directory_complexity"]
    );
    // The domain policy is read for the rules shown before typing.
    let r = dir.password_rules(None).await.unwrap();
    assert_eq!((r.min_length, r.history, r.complexity), (Some(8), Some(5), true));
}

#[tokio::test]
async fn disabled_critical_and_protected_accounts() {
    let f = Fixture::new().await;
    let dir = f.dir();
    let (name, _) = f.user("dora", "Initial-Dora-1").await;
    f.dc.samba_tool(&["user", "disable", &name]).await.unwrap();
    let a = dir.find_account(&login(&name)).await.unwrap().unwrap();
    assert!(a.disabled);
    assert_eq!(
        dir.reset_password(&login(&name), &pw("Some-New-Dora-2"))
            .await
            .unwrap_err(),
        DirectoryError::Disabled
    );
    assert_eq!(
        dir.authenticate(&login(&name), &pw("Initial-Dora-1"))
            .await
            .unwrap_err(),
        DirectoryError::InvalidCredentials,
        "a disabled account answers like a wrong password"
    );

    // Administrator is a critical system object: never touched.
    let admin = directory(settings(
        f.dc,
        SambaDc::BASE_DN,
        (SambaDc::ADMIN, SambaDc::ADMIN_PW),
    ));
    let a = admin
        .find_account(&login("Administrator"))
        .await
        .unwrap()
        .unwrap();
    assert!(a.disabled && a.privileged);
    assert_eq!(
        admin.unlock(&login("Administrator")).await.unwrap_err(),
        DirectoryError::Disabled
    );

    // A member (through a nested group) of a configured privileged group is protected.
    let (pat, pat_dn) = f.user("pat", "Initial-Pat-1").await;
    let inner =
        f.dc.add_group(&f.ou, &SambaDc::unique_name("ops"), &[pat_dn])
            .await
            .unwrap();
    let outer_name = SambaDc::unique_name("admins");
    f.dc.add_group(&f.ou, &outer_name, &[inner]).await.unwrap();
    let mut s = settings(f.dc, &f.ou, (&f.service.0, &f.service.1));
    s.privileged_groups = vec![outer_name.clone()];
    let strict = directory(s.clone());
    let a = strict.find_account(&login(&pat)).await.unwrap().unwrap();
    assert!(a.privileged && !a.disabled, "{a:?}");
    assert!(a.groups.iter().any(|g| g == &outer_name), "{:?}", a.groups);
    s.exclude_privileged = true;
    let excluding = directory(s);
    assert!(
        excluding
            .find_account(&login(&pat))
            .await
            .unwrap()
            .unwrap()
            .disabled
    );
}

#[tokio::test]
async fn self_test_names_each_right_in_ad_words() {
    let f = Fixture::new().await;
    f.user("sam", "Initial-Sam-1").await;
    let checks = f.dir().self_test(None).await;
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

    let (plain, plain_pw) =
        f.dc.add_plain_account(&SambaDc::unique_name("plain"))
            .await
            .unwrap();
    let weak = directory(settings(f.dc, &f.ou, (&plain, &plain_pw)));
    let checks = weak.self_test(None).await;
    let missing: Vec<&str> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.right.as_str())
        .collect();
    assert_eq!(missing, ["reset_password", "unlock", "reset_flag"], "{checks:#?}");
    assert!(
        checks.iter().any(|c| c.detail.contains("Reset Password")),
        "{checks:#?}"
    );
}

#[tokio::test]
async fn starttls_with_the_ca_works_and_plain_ldap_is_refused_by_the_server() {
    let f = Fixture::new().await;
    let (name, _) = f.user("tls", "Initial-Tls-1").await;
    let mut s = settings(f.dc, &f.ou, (&f.service.0, &f.service.1));
    s.ldap.url = f.dc.ldap_url();
    s.ldap.security = Security::StartTls;
    assert!(directory(s.clone())
        .find_account(&login(&name))
        .await
        .unwrap()
        .is_some());
    s.ldap.security = Security::None;
    let e = directory(s).find_account(&login(&name)).await.unwrap_err();
    assert!(matches!(e, DirectoryError::Unavailable(_)), "{e:?}");
}

mod sync {
    use super::*;
    use gatehouse_core::clock::SystemClock;
    use gatehouse_core::ports::Store;
    use gatehouse_core::{Gatehouse, Settings};
    use gatehouse_store::SqliteStore;

    #[tokio::test]
    async fn initial_then_incremental_by_usn_with_nested_groups() {
        let f = Fixture::new().await;
        let mut ann = AdUser {
            mobile: Some("+1 555 0100 11"),
            other_mailbox: Some("ann@home.example"),
            ..Default::default()
        };
        let ann_name = SambaDc::unique_name("ann");
        ann.name = &ann_name;
        ann.password = Some("Initial-Ann-1");
        ann.ou = Some(&f.ou);
        let ann_dn = f.dc.add_user(&ann).await.unwrap();
        let (ben, _) = f.user("ben", "Initial-Ben-1").await;
        let (cid, cid_dn) = f.user("cid", "Initial-Cid-1").await;
        let staff = SambaDc::unique_name("staff");
        let inner =
            f.dc.add_group(&f.ou, &staff, std::slice::from_ref(&ann_dn))
                .await
                .unwrap();
        let all_name = SambaDc::unique_name("all");
        f.dc.add_group(&f.ou, &all_name, &[inner]).await.unwrap();

        let db = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteStore::connect(&format!("sqlite://{}", db.path().join("g.db").display()))
                .await
                .unwrap(),
        );
        let app = Gatehouse::new(
            Arc::new(f.dir()),
            store.clone(),
            Arc::new(SystemClock),
            Arc::new(OsRng),
            Settings::default(),
        )
        .await
        .unwrap();
        let r = app.sync_directory(false).await.unwrap();
        assert!(r.full);
        assert_eq!((r.read, r.disabled), (3, 0), "{r:?}");
        let p = store.profile(&login(&ann_name)).await.unwrap().unwrap();
        assert_eq!(p.mobile_phone.as_deref(), Some("+1 555 0100 11"));
        let mut want = vec![all_name.to_lowercase(), staff.to_lowercase()];
        want.sort();
        let mut got: Vec<String> = p.groups.iter().map(|g| g.to_lowercase()).collect();
        got.sort();
        assert_eq!(got, want, "nested groups resolved");
        let m: Vec<_> = store
            .methods(&login(&ann_name))
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.kind == gatehouse_core::types::MethodKind::Email)
            .collect();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].target.address(), Some("ann@home.example"));
        assert!(!m[0].verified);

        // Changes: one modified, one disabled, one deleted, one added.
        f.dc.modify(&format!(
            "dn: {ann_dn}\nchangetype: modify\nreplace: mobile\nmobile: +44 20 7946 0000\n"
        ))
        .await
        .unwrap();
        f.dc.samba_tool(&["user", "disable", &ben]).await.unwrap();
        f.dc.modify(&format!("dn: {cid_dn}\nchangetype: delete\n"))
            .await
            .unwrap();
        let (dan, _) = f.user("dan", "Initial-Dan-1").await;
        let r = app.sync_directory(false).await.unwrap();
        assert!(!r.full);
        assert_eq!((r.read, r.disabled), (3, 1), "{r:?}");
        let p = store.profile(&login(&ann_name)).await.unwrap().unwrap();
        assert_eq!(p.mobile_phone.as_deref(), Some("+44 20 7946 0000"));
        assert!(store.profile(&login(&ben)).await.unwrap().unwrap().disabled);
        assert!(store.profile(&login(&cid)).await.unwrap().unwrap().disabled);
        assert!(!store.profile(&login(&dan)).await.unwrap().unwrap().disabled);
        // Nothing changed since: nothing read.
        let r = app.sync_directory(false).await.unwrap();
        assert_eq!((r.read, r.disabled), (0, 0), "{r:?}");
    }
}

#[tokio::test]
async fn a_fine_grained_policy_applies_to_its_users() {
    let f = Fixture::new().await;
    let (name, _) = f.user("fgp", "Initial-Fgp-1x").await;
    f.pso("pso", "10", "--min-pwd-length=14", &name).await;
    // An account that may read the PSO sees the user's own rules; the delegated account, which may
    // not, falls back to the domain's.
    let admin = directory(settings(f.dc, &f.ou, (SambaDc::ADMIN, SambaDc::ADMIN_PW)));
    let r = admin.password_rules(Some(&login(&name))).await.unwrap();
    assert_eq!(r.min_length, Some(14));
    let r = f.dir().password_rules(Some(&login(&name))).await.unwrap();
    assert_eq!(r.min_length, Some(8));
    // The directory enforces the PSO either way, and says so in words.
    let e = f
        .dir()
        .change_password(&login(&name), &pw("Initial-Fgp-1x"), &pw("Twelve-Char1"))
        .await
        .unwrap_err();
    assert_eq!(rules(e), ["directory_min_length"]);
}

#[tokio::test]
async fn a_minimum_age_does_not_block_self_service_resets_but_blocks_quick_changes() {
    let f = Fixture::new().await;
    let dir = f.dir();
    let (name, _) = f.user("age", "Initial-Age-1x").await;
    f.pso("agepso", "20", "--min-pwd-age=1", &name).await;
    let l = login(&name);
    // The temporary password is written "must change", so the change to the chosen one goes through.
    dir.reset_password(&l, &pw("Second-Age-2x")).await.unwrap();
    assert!(f
        .dc
        .can_bind(&SambaDc::upn(&name), "Second-Age-2x")
        .await
        .unwrap());
    let e = dir
        .change_password(&l, &pw("Second-Age-2x"), &pw("Third-Age-3x"))
        .await
        .unwrap_err();
    assert_eq!(rules(e), ["directory_min_age"]);
    dir.reset_password(&l, &pw("Fourth-Age-4x")).await.unwrap();
    assert!(f
        .dc
        .can_bind(&SambaDc::upn(&name), "Fourth-Age-4x")
        .await
        .unwrap());
}
