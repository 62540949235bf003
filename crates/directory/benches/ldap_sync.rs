//! Users per second for a directory synchronisation against a real slapd: an initial sync of 10,000
//! entries and incremental syncs of 100 changes, each next to a same-run baseline (the LDAP read
//! alone, without writing the store), so the ratio shows what the store side costs.
//!
//! `cargo bench -p gatehouse-directory --bench ldap_sync` (needs slapd and ldap-utils).
//! `GATEHOUSE_BENCH_USERS=N` changes the directory size.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use gatehouse_core::clock::{OsRng, SystemClock};
use gatehouse_core::ports::{Directory, Store};
use gatehouse_core::secret::Password;
use gatehouse_core::{Gatehouse, Settings};
use gatehouse_directory::ldap::{
    AttributeMap, GroupLookup, LdapDirectory, LdapSettings, PasswordWrite, PolicyEnforcement, Security,
};
use gatehouse_store::SqliteStore;
use gatehouse_testkit::Slapd;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHANGES: usize = 100;
const ROUNDS: usize = 5;

fn settings(slapd: &Slapd, base: &str) -> LdapSettings {
    LdapSettings {
        url: slapd.url(),
        security: Security::None,
        tls_ca_file: None,
        tls_insecure_skip_verify: false,
        bind_dn: Slapd::SERVICE_DN.into(),
        bind_password: Password::new(Slapd::SERVICE_PW),
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
        connect_timeout: Duration::from_secs(5),
        operation_timeout: Duration::from_secs(120),
        enforce_directory_policy: true,
        policy_enforcement: PolicyEnforcement::UserChange,
        password_write: PasswordWrite::Exop,
        policy_dn: Some(Slapd::POLICY_DN.into()),
    }
}

fn per_second(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let users: usize = std::env::var("GATEHOUSE_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let slapd = Slapd::start()
        .await
        .expect("slapd (apt-get install -y slapd ldap-utils)");
    let ou = slapd.fresh_ou().await.unwrap();
    let t = Instant::now();
    slapd.bulk_add_users(&ou, users, "bulk").await.unwrap();
    println!("setup: {users} users added to slapd in {:.2?}", t.elapsed());

    let dir =
        Arc::new(LdapDirectory::new(settings(&slapd, &ou), Arc::new(SystemClock), Arc::new(OsRng)).unwrap());
    let db = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::connect(&format!("sqlite://{}", db.path().join("bench.db").display()))
            .await
            .unwrap(),
    );
    let app = Gatehouse::new(
        dir.clone(),
        store.clone(),
        Arc::new(SystemClock),
        Arc::new(OsRng),
        Settings::default(),
    )
    .await
    .unwrap();

    // Warm-up (slapd's caches, connection pool), then baseline and sync, alternating.
    dir.sync_scan(None).await.unwrap();
    let t = Instant::now();
    let scan = dir.sync_scan(None).await.unwrap();
    let read_only = t.elapsed();
    assert_eq!(scan.users.len(), users);
    let t = Instant::now();
    let report = app.sync_directory(true).await.unwrap();
    let initial = t.elapsed();
    assert_eq!(report.read, users);
    println!(
        "initial sync of {users}: {:.2?} = {:.0} users/s (baseline LDAP read only: {:.2?} = {:.0} users/s; \
         sync/baseline time ratio {:.2})",
        initial,
        per_second(users, initial),
        read_only,
        per_second(users, read_only),
        initial.as_secs_f64() / read_only.as_secs_f64()
    );

    let mut incremental = Vec::new();
    let mut baseline = Vec::new();
    for round in 0..ROUNDS {
        // modifyTimestamp has one-second resolution: change in a later second than the watermark.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let mut ldif = String::new();
        for i in 0..CHANGES {
            let n = (round * CHANGES + i) * (users / (CHANGES * ROUNDS)).max(1) % users;
            ldif.push_str(&format!(
                "dn: uid=bulk{n:05},{ou}\nchangetype: modify\nreplace: mobile\nmobile: +1 555 {round:03} {i:04}\n\n"
            ));
        }
        slapd.modify(&ldif).await.unwrap();
        let before = store.sync_watermark("ldap").await.unwrap();
        let t = Instant::now();
        let mark = app.sync_directory(false).await.unwrap();
        incremental.push(t.elapsed());
        assert!(!mark.full);
        assert!(mark.read >= CHANGES, "{mark:?}");
        // Baseline: the same incremental LDAP read (changed entries + the in-scope login list).
        let t = Instant::now();
        let _ = dir.sync_scan(before.as_deref()).await.unwrap();
        baseline.push(t.elapsed());
    }
    let inc = median(incremental);
    let base = median(baseline);
    println!(
        "incremental sync of {CHANGES} changes among {users} (median of {ROUNDS}): {:.2?} = {:.0} changed users/s \
         (baseline LDAP read only: {:.2?}; sync/baseline time ratio {:.2})",
        inc,
        per_second(CHANGES, inc),
        base,
        inc.as_secs_f64() / base.as_secs_f64()
    );
}
