//! OpenLDAP-only behaviour through the API and the CLI, against a real slapd: an outage in the middle
//! of a verified flow, "unlock only" for a locked user who started a reset, must change after a
//! helpdesk reset, and the `directory test` / `directory sync` commands.
use crate::harness::{ldap_config, spawn_ldap, spawn_on, Backend, TestApp};
use gatehouse_core::types::Login;
use gatehouse_testkit::{LdapUser, Slapd};
use serde_json::json;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

async fn verified_flow(t: &TestApp, kind: &str, login: &str, to: &str) -> (String, serde_json::Value) {
    let (flow, method, _) = t.start(kind, login).await;
    let code = t.send_and_read_code(&flow, &method, to).await;
    let (s, b) = t
        .post(
            "/api/v1/flows/verify",
            json!({"flow": flow, "method": method, "code": code}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    (flow, b)
}

#[tokio::test]
async fn a_directory_outage_mid_flow_keeps_the_verified_flow() {
    let mut slapd = Slapd::start().await.expect("slapd");
    let ou = slapd.fresh_ou().await.unwrap();
    let url = slapd.url();
    let backend = Backend::Builtin; // the instance is this test's own; the harness does not own it
    let t = spawn_on(backend, |raw| ldap_config(raw, &url, &ou)).await;
    let dn = slapd
        .add_user(
            &ou,
            &LdapUser {
                uid: "olga",
                password: Some("Initial-Olga-1"),
                mail: Some("olga@corp.example"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    t.add_user("olga", None, Some("olga.home@example.net")).await;
    let (flow, _) = verified_flow(&t, "reset", "olga", "olga.home@example.net").await;

    slapd.stop().await.unwrap();
    let (s, b) = t
        .post(
            "/api/v1/flows/password",
            json!({"flow": flow, "password": "Chosen-During-Outage-2"}),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (503, Some("directory_unavailable")),
        "{b}"
    );
    assert!(b["message"].as_str().unwrap().contains("try again"));
    let r = t.http.get(format!("{}/readyz", t.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);

    slapd.restart().await.unwrap();
    let (s, b) = t
        .post(
            "/api/v1/flows/password",
            json!({"flow": flow, "password": "Chosen-After-Outage-3"}),
        )
        .await;
    assert_eq!((s, b), (200, json!({"step": "done"})));
    assert!(slapd.can_bind(&dn, "Chosen-After-Outage-3").await.unwrap());
    assert_eq!(t.sign_in("olga", "Chosen-After-Outage-3").await.0, 200);
}

#[tokio::test]
async fn a_locked_user_who_starts_a_reset_may_unlock_only() {
    let t = spawn_ldap().await;
    t.add_user("luke", Some("Luke-Keeps-This-1"), Some("luke.home@example.net"))
        .await;
    t.lock(&Login::parse("luke").unwrap()).await;
    // The self-test feeding /readyz picks a sample user it cannot disturb (not luke, who is locked).
    t.add_user("rhea", Some("Rhea-Original-1"), None).await;
    let r = t.http.get(format!("{}/readyz", t.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["rights"],
        json!({"bind": true, "find_user": true, "read_policy": true, "reset_password": true, "unlock": true, "reset_flag": true}),
        "{body}"
    );
    let (flow, b) = verified_flow(&t, "reset", "luke", "luke.home@example.net").await;
    assert_eq!(
        b,
        json!({"step": "password", "verified": 1, "required": 1, "unlock_available": true})
    );
    let (s, b) = t.post("/api/v1/flows/unlock", json!({"flow": flow})).await;
    assert_eq!((s, b), (200, json!({"step": "done"})));
    assert_eq!(
        t.sign_in("luke", "Luke-Keeps-This-1").await.0,
        200,
        "the password stays"
    );
    // The flow is spent: no password may follow.
    let (s, _) = t
        .post(
            "/api/v1/flows/password",
            json!({"flow": flow, "password": "Another-Password-2"}),
        )
        .await;
    assert_eq!(s, 409);

    // Users who are not locked are not offered it.
    t.add_user("lena", Some("Lena-Original-1"), Some("lena.home@example.net"))
        .await;
    let (flow, b) = verified_flow(&t, "reset", "lena", "lena.home@example.net").await;
    assert!(b.get("unlock_available").is_none(), "{b}");
    let (s, _) = t.post("/api/v1/flows/unlock", json!({"flow": flow})).await;
    assert_eq!(s, 409);
}

fn write_config(
    dir: &std::path::Path,
    slapd: &Slapd,
    ou: &str,
    store: &std::path::Path,
) -> std::path::PathBuf {
    let path = dir.join("gatehouse.toml");
    let toml = format!(
        r#"[server]
public_url = "https://sspr.example.test"
[store]
url = "sqlite://{store}"
[mail]
smtp_url = "smtp://127.0.0.1:2525"
[directory]
kind = "ldap"
url = "{url}"
bind_dn = "{bind}"
bind_password_file = "{pwfile}"
base_dn = "{ou}"
policy_dn = "{policy}"
sync_interval_minutes = 0
[directory.attributes]
personal_email = "{personal}"
"#,
        store = store.display(),
        url = slapd.url(),
        bind = Slapd::SERVICE_DN,
        pwfile = dir.join("bind.secret").display(),
        policy = Slapd::POLICY_DN,
        personal = Slapd::PERSONAL_EMAIL_ATTR,
    );
    std::fs::write(dir.join("bind.secret"), format!("{}\n", Slapd::SERVICE_PW)).unwrap();
    std::fs::write(&path, toml).unwrap();
    path
}

async fn gatehouse(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn directory_test_sync_and_helpdesk_reset_from_the_command_line() {
    let slapd = Slapd::shared().await.expect("slapd");
    let ou = slapd.fresh_ou().await.unwrap();
    let dn = slapd
        .add_user(
            &ou,
            &LdapUser {
                uid: "cli",
                password: Some("Initial-Cli-1"),
                mail: Some("cli@corp.example"),
                personal_email: Some("cli@home.example"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), slapd, &ou, &dir.path().join("g.db"));
    let cfg = cfg.to_str().unwrap();

    let (ok, out) = gatehouse(&["directory", "test", "--config", cfg], None).await;
    assert!(ok, "{out}");
    for line in [
        "ok       bind",
        "ok       find_user",
        "ok       reset_password",
        "ok       unlock",
    ] {
        assert!(out.contains(line), "{line} in {out}");
    }
    assert!(out.contains("verdict: ready"), "{out}");

    // A read-only service account: the verdict names what is missing, and the exit code says so.
    let ro = std::fs::read_to_string(cfg)
        .unwrap()
        .replace(Slapd::SERVICE_DN, Slapd::READONLY_DN);
    std::fs::write(dir.path().join("bind.secret"), Slapd::READONLY_PW).unwrap();
    let ro_path = dir.path().join("ro.toml");
    std::fs::write(&ro_path, ro).unwrap();
    let (ok, out) = gatehouse(
        &["directory", "test", "--config", ro_path.to_str().unwrap()],
        None,
    )
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("MISSING  reset_password"), "{out}");
    assert!(out.contains("verdict: not ready"), "{out}");
    std::fs::write(dir.path().join("bind.secret"), Slapd::SERVICE_PW).unwrap();

    let (ok, out) = gatehouse(&["directory", "sync", "--config", cfg], None).await;
    assert!(ok, "{out}");
    assert!(out.contains("full sync: 1 users read, 0 disabled"), "{out}");
    let (ok, out) = gatehouse(&["directory", "sync", "--config", cfg], None).await;
    assert!(ok && out.contains("incremental sync"), "{out}");

    // Helpdesk reset with "must change at next logon".
    let (ok, out) = gatehouse(
        &[
            "users",
            "reset",
            "--config",
            cfg,
            "--login",
            "cli",
            "--must-change",
        ],
        Some("Helpdesk-Gave-This-1\n"),
    )
    .await;
    assert!(ok, "{out}");
    let state = slapd.read(&dn, &["pwdReset"]).await.unwrap();
    assert_eq!(state, vec![("pwdreset".to_owned(), "TRUE".to_owned())]);
}

#[tokio::test]
async fn must_change_then_change_through_the_api() {
    let t = spawn_ldap().await;
    // The directory's ppolicy (pwdCheckQuality 2) is part of the rules shown before typing.
    let b: serde_json::Value = t
        .http
        .get(format!("{}/api/v1/password/policy", t.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = b["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"directory_quality") && ids.contains(&"history"),
        "{b}"
    );
    t.add_user("quinn", Some("Initial-Pass-1"), None).await;
    t.core()
        .app
        .helpdesk_reset(
            &Login::parse("quinn").unwrap(),
            &gatehouse_core::secret::Password::new("Helpdesk-Temp-Pass-1"),
            true,
        )
        .await
        .unwrap();
    let account = t
        .core()
        .app
        .account(&Login::parse("quinn").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(account.must_change);
    let (s, b) = t
        .post(
            "/api/v1/password/change",
            json!({"login": "quinn", "old_password": "Helpdesk-Temp-Pass-1", "new_password": "Own-Choice-Pass-2"}),
        )
        .await;
    assert_eq!((s, b), (200, json!({"changed": true})));
    let account = t
        .core()
        .app
        .account(&Login::parse("quinn").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!account.must_change);
    assert_eq!(t.sign_in("quinn", "Own-Choice-Pass-2").await.0, 200);
}

#[tokio::test]
async fn a_synced_contact_counts_once_the_user_verifies_it() {
    let t = spawn_ldap().await;
    let Backend::Ldap { slapd, ou } = &t.backend else {
        unreachable!()
    };
    slapd
        .add_user(
            ou,
            &LdapUser {
                uid: "sync",
                password: Some("Initial-Pass-1"),
                mail: Some("sync@corp.example"),
                personal_email: Some("sync.home@example.net"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let r = t.core().app.sync_directory(false).await.unwrap();
    assert_eq!(r.read, 1);
    // Untrusted until verified: a reset flow gets a decoy, like a user with no method.
    let (_, _, body) = t.start("reset", "sync").await;
    assert_ne!(body["methods"][0]["hint"], "s•••@e•••.net");

    let (s, b) = t.sign_in("sync", "Initial-Pass-1").await;
    assert_eq!(s, 200, "{b}");
    let token = b["token"].as_str().unwrap().to_owned();
    let (_, b) = t
        .authed(reqwest::Method::GET, "/api/v1/me/methods", &token, None)
        .await;
    assert_eq!(b["methods"][0]["verified"], false, "{b}");
    let (s, b) = t
        .authed(
            reqwest::Method::POST,
            "/api/v1/me/methods",
            &token,
            Some(json!({"type": "email", "address": "sync.home@example.net"})),
        )
        .await;
    assert_eq!(s, 201, "re-adding an unverified candidate sends a code: {b}");
    let id = b["id"].as_str().unwrap().to_owned();
    let mail = t
        .sink
        .wait_for_message_to("sync.home@example.net", crate::harness::MAIL_WAIT)
        .await
        .unwrap();
    let code = crate::harness::code_in(&mail);
    let path = format!("/api/v1/me/methods/{id}/verify");
    let (s, _) = t
        .authed(reqwest::Method::POST, &path, &token, Some(json!({"code": code})))
        .await;
    assert_eq!(s, 200);
    // A later sync keeps the verified method (no second candidate).
    t.core().app.sync_directory(true).await.unwrap();
    let (_, b) = t
        .authed(reqwest::Method::GET, "/api/v1/me/methods", &token, None)
        .await;
    assert_eq!(b["methods"].as_array().unwrap().len(), 1, "{b}");
    assert_eq!(b["methods"][0]["verified"], true);
    let (_, _, body) = t.start("reset", "sync").await;
    assert_eq!(body["methods"][0]["hint"], "s•••@e•••.net");
}
