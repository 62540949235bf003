//! Reset, unlock, change and registration through the JSON API, against a real SMTP server.
use crate::harness::{code_in, TestApp, MAIL_WAIT, PUBLIC_URL};
use reqwest::Method;
use serde_json::json;

async fn reset_through_the_api_end_to_end(t: TestApp) {
    t.add_user(
        "alice",
        Some("Original-Password-1"),
        Some("alice.private@example.net"),
    )
    .await;

    let (flow, method, body) = t.start("reset", "alice").await;
    assert_eq!(body["step"], "verify");
    assert_eq!(body["required"], 1);
    assert_eq!(body["verified"], 0);
    assert_eq!(body["methods"][0]["type"], "email");
    assert_eq!(body["methods"][0]["hint"], "a•••@e•••.net");

    let code = t
        .send_and_read_code(&flow, &method, "alice.private@example.net")
        .await;
    assert!(code.len() >= 6);
    let mail = t.sink.messages_to("alice.private@example.net").pop().unwrap();
    assert!(
        mail.text_body().contains(PUBLIC_URL),
        "links come from public_url"
    );

    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (s, b) = t
        .post(
            "/api/v1/flows/verify",
            json!({"flow": flow, "method": method, "code": wrong}),
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_code")), "{b}");
    assert!(b["message"].is_string());

    let (s, b) = t
        .post(
            "/api/v1/flows/verify",
            json!({"flow": flow, "method": method, "code": code}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!({"step": "password", "verified": 1, "required": 1}));

    // Every violation is explained, not just the first.
    let (s, b) = t
        .post(
            "/api/v1/flows/password",
            json!({"flow": flow, "password": "alice1"}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["error"], "password_rejected");
    let rules: Vec<&str> = b["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["rule"].as_str().unwrap())
        .collect();
    // Active Directory's complexity rule is checked up front too, with the others.
    let extra: &[&str] = if t.is_ad() { &["directory_complexity"] } else { &[] };
    assert_eq!(
        rules,
        // "alice1" is also among the most common passwords that ship with Gatehouse.
        [
            &["min_length", "contains_login", "banned", "strength", "breached"][..],
            extra
        ]
        .concat()
    );

    // History: the current password cannot come back.
    let (s, b) = t
        .post(
            "/api/v1/flows/password",
            json!({"flow": flow, "password": "Original-Password-1"}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["violations"][0]["rule"], "history");

    let long = crate::harness::long_password(256);
    let (s, b) = t
        .post("/api/v1/flows/password", json!({"flow": flow, "password": long}))
        .await;
    assert_eq!((s, b.clone()), (200, json!({"step": "done"})), "{b}");

    // The flow is single use.
    let (s, b) = t
        .post(
            "/api/v1/flows/password",
            json!({"flow": flow, "password": "Another-Password-2"}),
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (409, Some("flow_finished")), "{b}");

    assert_eq!(t.sign_in("alice", "Original-Password-1").await.0, 401);
    assert_eq!(t.sign_in("alice", &long).await.0, 200);

    // A notification goes to the user's addresses.
    let note = t
        .sink
        .wait_for_message_to("alice@corp.example", MAIL_WAIT)
        .await
        .unwrap();
    assert!(note.subject().unwrap().contains("password was reset"));
    assert!(note.text_body().contains(PUBLIC_URL));

    let acts = t.audit_activities().await;
    for a in [
        "flow_started",
        "code_sent",
        "code_failed",
        "code_verified",
        "password_reset",
        "signed_in",
    ] {
        assert!(acts.iter().any(|x| x == a), "audit lacks {a}: {acts:?}");
    }
}

async fn a_reset_also_unlocks_and_unlock_works_without_reset(t: TestApp) {
    t.add_user("bob", Some("Bob-Original-Pass-1"), Some("bob.home@example.com"))
        .await;
    t.add_user("eve", Some("Eve-Original-Pass-1"), Some("eve.home@example.com"))
        .await;
    let bob = gatehouse_core::types::Login::parse("bob").unwrap();
    let eve = gatehouse_core::types::Login::parse("eve").unwrap();
    t.lock(&bob).await;
    t.lock(&eve).await;
    let (s, b) = t.sign_in("bob", "Bob-Original-Pass-1").await;
    assert_eq!((s, b["error"].as_str()), (403, Some("account_locked")));

    // Unlock without reset: the password stays.
    let (flow, method, _) = t.start("unlock", "bob").await;
    let code = t.send_and_read_code(&flow, &method, "bob.home@example.com").await;
    let (s, b) = t
        .post(
            "/api/v1/flows/verify",
            json!({"flow": flow, "method": method, "code": code}),
        )
        .await;
    assert_eq!((s, b["step"].as_str()), (200, Some("unlock")), "{b}");
    let (s, b) = t
        .post(
            "/api/v1/flows/password",
            json!({"flow": flow, "password": "Not-Allowed-Here-1"}),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (409, Some("wrong_step")),
        "an unlock flow never writes a password"
    );
    let (s, b) = t.post("/api/v1/flows/unlock", json!({"flow": flow})).await;
    assert_eq!((s, b), (200, json!({"step": "done"})));
    assert_eq!(t.sign_in("bob", "Bob-Original-Pass-1").await.0, 200);

    // A reset clears the lockout too.
    let (flow, method, _) = t.start("reset", "eve").await;
    let code = t.send_and_read_code(&flow, &method, "eve.home@example.com").await;
    t.post(
        "/api/v1/flows/verify",
        json!({"flow": flow, "method": method, "code": code}),
    )
    .await;
    let (s, _) = t
        .post(
            "/api/v1/flows/password",
            json!({"flow": flow, "password": "Brand-New-Secret-Pass-2"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(t.sign_in("eve", "Brand-New-Secret-Pass-2").await.0, 200);
    assert!(t.audit_activities().await.iter().any(|a| a == "account_unlocked"));
}

async fn change_password_through_the_api(t: TestApp) {
    t.add_user(
        "carol",
        Some("Orig-Secret-Pass-1"),
        Some("carol.home@example.org"),
    )
    .await;
    let change = |old: &str, new: &str| json!({"login": "carol", "old_password": old, "new_password": new});

    let (s, b) = t
        .post(
            "/api/v1/password/change",
            change("wrong-password-here", "Fresh-Secret-Pass-22"),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (401, Some("invalid_credentials")),
        "{b}"
    );
    let (s, b) = t
        .post(
            "/api/v1/password/change",
            json!({"login": "nobody", "old_password": "x", "new_password": "Fresh-Secret-Pass-22"}),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (401, Some("invalid_credentials")),
        "unknown login answers the same"
    );
    let (s, b) = t
        .post("/api/v1/password/change", change("Orig-Secret-Pass-1", "short"))
        .await;
    assert_eq!(
        (s, b["violations"][0]["rule"].as_str()),
        (422, Some("min_length")),
        "{b}"
    );
    let (s, b) = t
        .post(
            "/api/v1/password/change",
            change("Orig-Secret-Pass-1", "Fresh-Secret-Pass-22"),
        )
        .await;
    assert_eq!((s, b), (200, json!({"changed": true})));
    let (s, b) = t
        .post(
            "/api/v1/password/change",
            change("Fresh-Secret-Pass-22", "Orig-Secret-Pass-1"),
        )
        .await;
    assert_eq!(
        (s, b["violations"][0]["rule"].as_str()),
        (422, Some("history")),
        "{b}"
    );
    assert_eq!(t.sign_in("carol", "Fresh-Secret-Pass-22").await.0, 200);
    let note = t
        .sink
        .wait_for_message_to("carol.home@example.org", MAIL_WAIT)
        .await
        .unwrap();
    assert!(note.subject().unwrap().contains("password was changed"));

    let (s, b) = t
        .post(
            "/api/v1/password/check",
            json!({"login": "carol", "password": "carol"}),
        )
        .await;
    assert_eq!((s, b["ok"].as_bool()), (200, Some(false)));
    let extra = usize::from(t.is_ad()); // AD complexity
    let broken: Vec<&str> = b["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["rule"].as_str().unwrap())
        .collect();
    assert_eq!(broken.len(), 4 + extra, "{b}");
    assert_eq!(&broken[..4], ["min_length", "not_login", "banned", "strength"]);
    // The live checklist: every rule with met / unmet.
    let unmet: Vec<&str> = b["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["met"] == false)
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert!(
        unmet.contains(&"min_length") && unmet.contains(&"strength"),
        "{b}"
    );
    let (_, b) = t
        .post(
            "/api/v1/password/check",
            json!({"login": "carol", "password": "Velvet-Lagoon-Orbit-42"}),
        )
        .await;
    assert_eq!(b["ok"], true, "{b}");
    assert!(
        b["rules"].as_array().unwrap().iter().all(|r| r["met"] == true),
        "{b}"
    );
}

async fn register_verify_and_remove_an_alternate_email(t: TestApp) {
    t.add_user("dave", Some("Dave-Original-Pass-1"), None).await;
    let (s, b) = t.sign_in("dave", "Dave-Original-Pass-1").await;
    assert_eq!(s, 200, "{b}");
    let token = b["token"].as_str().unwrap().to_owned();

    let (s, _) = t
        .authed(Method::GET, "/api/v1/me/methods", "not-a-token", None)
        .await;
    assert_eq!(s, 401);
    let (s, b) = t.authed(Method::GET, "/api/v1/me/methods", &token, None).await;
    assert_eq!((s, &b["methods"]), (200, &json!([])), "{b}");
    assert_eq!(
        (b["policy"].as_str(), b["registration_required"].as_bool()),
        (Some("default"), Some(true))
    );

    let (s, b) = t
        .authed(
            Method::POST,
            "/api/v1/me/methods",
            &token,
            Some(json!({"type": "email", "address": "not an address"})),
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")));
    let (s, b) = t
        .authed(
            Method::POST,
            "/api/v1/me/methods",
            &token,
            Some(json!({"type": "email", "address": "dave.home@example.org"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["verified"], false);
    let id = b["id"].as_str().unwrap().to_owned();
    let code = code_in(
        &t.sink
            .wait_for_message_to("dave.home@example.org", MAIL_WAIT)
            .await
            .unwrap(),
    );

    let path = format!("/api/v1/me/methods/{id}/verify");
    let (s, b) = t
        .authed(Method::POST, &path, &token, Some(json!({"code": "999999x"})))
        .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_code")));
    let (s, b) = t
        .authed(Method::POST, &path, &token, Some(json!({"code": code})))
        .await;
    assert_eq!((s, b), (200, json!({"verified": true})));
    let (_, b) = t.authed(Method::GET, "/api/v1/me/methods", &token, None).await;
    assert_eq!(b["methods"][0]["verified"], true);
    assert_eq!(b["methods"][0]["hint"], "d•••@e•••.org");

    // Now dave can reset with it.
    let (flow, method, _) = t.start("reset", "dave").await;
    assert_eq!(method, id);
    t.send_and_read_code(&flow, &method, "dave.home@example.org")
        .await;

    let (s, _) = t
        .authed(Method::DELETE, &format!("/api/v1/me/methods/{id}"), &token, None)
        .await;
    assert_eq!(s, 204);
    let (_, b) = t.authed(Method::GET, "/api/v1/me/methods", &token, None).await;
    assert_eq!(b["methods"], json!([]));
    let acts = t.audit_activities().await;
    for a in ["method_registered", "method_verified", "method_removed"] {
        assert!(acts.iter().any(|x| x == a), "audit lacks {a}");
    }
}

async fn hr_import_gives_new_hires_their_first_password(t: TestApp) {
    let csv = "login,display_name,email,alternate_email,mobile_phone,groups\n\
               nina,Nina New,nina@corp.example,nina.home@example.net,+15551234567,staff;sales\n\
               bad,Bad Row,bad@corp.example,not-an-email,,\n\
               omar,Omar New,omar@corp.example,omar.home@example.net,,staff\n";
    // An LDAP directory holds its accounts already (HR creates them there); the builtin one creates them.
    t.directory_account("nina").await;
    t.directory_account("omar").await;
    let report = gatehouse::admin::import_csv(&t.core().app, csv.as_bytes())
        .await
        .unwrap();
    assert_eq!(report.rows, 3);
    assert_eq!(report.accounts_created, if t.is_ldap() { 0 } else { 2 });
    assert_eq!(report.errors.len(), 1);
    assert_eq!(
        report.errors[0].0, 3,
        "the bad row is reported with its line number"
    );
    assert!(
        report.errors[0].1.contains("alternate_email"),
        "{:?}",
        report.errors
    );

    let again = gatehouse::admin::import_csv(&t.core().app, csv.as_bytes())
        .await
        .unwrap();
    assert_eq!(
        (again.accounts_created, again.methods_added),
        (0, 0),
        "import is idempotent"
    );

    assert_eq!(
        t.sign_in("nina", "anything-at-all-1").await.0,
        401,
        "no password yet"
    );
    let (flow, method, _) = t.start("reset", "nina").await;
    let code = t
        .send_and_read_code(&flow, &method, "nina.home@example.net")
        .await;
    t.post(
        "/api/v1/flows/verify",
        json!({"flow": flow, "method": method, "code": code}),
    )
    .await;
    let (s, b) = t
        .post(
            "/api/v1/flows/password",
            json!({"flow": flow, "password": "First-Secret-Password-1"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(t.sign_in("nina", "First-Secret-Password-1").await.0, 200);
}

async fn audit_export_in_csv_and_jsonl(t: TestApp) {
    t.add_user(
        "alice",
        Some("Original-Password-1"),
        Some("alice.private@example.net"),
    )
    .await;
    t.start("reset", "alice").await;
    t.start("reset", "ghost").await;
    let mut csv = Vec::new();
    let n =
        gatehouse::admin::export_audit(&t.core().app, gatehouse::admin::ExportFormat::Csv, None, &mut csv)
            .await
            .unwrap();
    let csv = String::from_utf8(csv).unwrap();
    assert_eq!(csv.lines().count() as u64, n + 1);
    assert!(csv.starts_with(
        "id,time,activity,actor,target,result,reason,method,client_ip,user_agent,flow_id,directory"
    ));
    assert!(csv.contains("flow_started") && csv.contains("unknown_account"));
    let mut jsonl = Vec::new();
    let since = Some(t.core().clock.now() - time::Duration::hours(1));
    let m = gatehouse::admin::export_audit(
        &t.core().app,
        gatehouse::admin::ExportFormat::Jsonl,
        since,
        &mut jsonl,
    )
    .await
    .unwrap();
    assert_eq!(m, n);
    for line in String::from_utf8(jsonl).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["activity"].is_string() && v["at"].is_string() && v["id"].is_number());
    }
}

async fn health_and_errors_are_json(t: TestApp) {
    let r = t.http.get(format!("{}/healthz", t.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = t.http.get(format!("{}/readyz", t.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["directory"], "ok");
    let r = t
        .http
        .post(format!("{}/api/v1/flows", t.base))
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_request"
    );
    let (s, b) = t
        .post(
            "/api/v1/flows/send",
            json!({"flow": "x".repeat(43), "method": "0123456789abcdef0123"}),
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (404, Some("flow_not_found")));
    let (s, b) = t.post("/api/v1/nope", json!({})).await;
    assert_eq!((s, b["error"].as_str()), (404, Some("not_found")));
}

/// Every flow above runs against the builtin directory, a real OpenLDAP slapd and a real Samba AD DC.
macro_rules! on_every_directory {
    ($($name:ident),* $(,)?) => {
        mod builtin {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::harness::spawn().await).await
                }
            )*
        }
        mod ldap {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::harness::spawn_ldap().await).await
                }
            )*
        }
        mod ad {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::harness::spawn_ad().await).await
                }
            )*
        }
    };
}

on_every_directory!(
    reset_through_the_api_end_to_end,
    a_reset_also_unlocks_and_unlock_works_without_reset,
    change_password_through_the_api,
    register_verify_and_remove_an_alternate_email,
    hr_import_gives_new_hires_their_first_password,
    audit_export_in_csv_and_jsonl,
    health_and_errors_are_json,
);
