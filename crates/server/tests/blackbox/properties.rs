//! The must-hold properties: no enumeration, single use under races, attempts across re-sent codes,
//! outbox retry while SMTP is down, links only from public_url.
use crate::harness::{code_in, spawn, MAIL_WAIT, PUBLIC_URL};
use futures::future::join_all;
use gatehouse_core::types::Login;
use gatehouse_testkit::SmtpSink;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// The JSON shape with the secret token and per-login values blanked out.
fn shape(v: &Value) -> Value {
    let mut v = v.clone();
    v["flow"] = json!("<token>");
    for m in v["methods"].as_array_mut().into_iter().flatten() {
        m["id"] = json!(m["id"].as_str().map(|s| s.len()));
        m["hint"] = json!(m["hint"]
            .as_str()
            .map(|s| s.contains("•••@") && s.contains("•••.")));
    }
    v
}

#[tokio::test]
async fn unknown_disabled_and_unregistered_logins_look_like_real_ones() {
    let t = spawn().await;
    t.add_user(
        "real",
        Some("Real-User-Password-1"),
        Some("real.home@example.net"),
    )
    .await;
    t.add_user(
        "disabled",
        Some("Disabled-Password-1"),
        Some("disabled.home@example.net"),
    )
    .await;
    t.add_user("unregistered", Some("Unregistered-Pass-1"), None)
        .await;
    t.core()
        .builtin
        .set_disabled(&Login::parse("disabled").unwrap(), true)
        .await
        .unwrap();

    let (_, _, real) = t.start("reset", "real").await;
    let mails_before = t.sink.messages().len();
    for login in ["nobody-at-all", "disabled", "unregistered"] {
        let (flow, method, body) = t.start("reset", login).await;
        assert_eq!(shape(&body), shape(&real), "{login}: same status and shape");
        // Decoys stay the same for the same login.
        let (_, method2, body2) = t.start("reset", login).await;
        assert_eq!(
            (method2.as_str(), &body2["methods"]),
            (method.as_str(), &body["methods"]),
            "{login}: stable decoy"
        );

        let (s, b) = t
            .post("/api/v1/flows/send", json!({"flow": flow, "method": method}))
            .await;
        assert_eq!(
            (s, b),
            (202, json!({"sent": true})),
            "{login}: send answers the same"
        );
        let (s, b) = t
            .post(
                "/api/v1/flows/verify",
                json!({"flow": flow, "method": method, "code": "123456"}),
            )
            .await;
        assert_eq!(
            (s, b["error"].as_str()),
            (400, Some("invalid_code")),
            "{login}: verify fails the same way"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        t.sink.messages().len(),
        mails_before,
        "no mail leaves for unknown, disabled or unregistered logins"
    );

    // The same holds for unlock flows and for sign-in.
    let (_, _, real_unlock) = t.start("unlock", "real").await;
    let (_, _, ghost_unlock) = t.start("unlock", "nobody-at-all").await;
    assert_eq!(shape(&real_unlock), shape(&ghost_unlock));
    let (s1, b1) = t.sign_in("nobody-at-all", "whatever-password").await;
    let (s2, b2) = t.sign_in("real", "whatever-password").await;
    let (s3, b3) = t.sign_in("disabled", "Disabled-Password-1").await;
    assert_eq!((s1, &b1), (s2, &b2));
    assert_eq!((s1, &b1), (s3, &b3));
}

#[tokio::test]
async fn twenty_parallel_submissions_of_one_code_give_one_success() {
    let t = spawn().await;
    t.add_user(
        "race",
        Some("Race-Original-Pass-1"),
        Some("race.home@example.net"),
    )
    .await;
    let (flow, method, _) = t.start("reset", "race").await;
    let code = t
        .send_and_read_code(&flow, &method, "race.home@example.net")
        .await;
    let body = json!({"flow": flow, "method": method, "code": code});
    let results = join_all((0..20).map(|_| t.post("/api/v1/flows/verify", body.clone()))).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 1, "{results:?}");

    // The same for the code that verifies a newly registered method.
    let (_, b) = t.sign_in("race", "Race-Original-Pass-1").await;
    let token = b["token"].as_str().unwrap().to_owned();
    let (_, b) = t
        .authed(
            Method::POST,
            "/api/v1/me/methods",
            &token,
            Some(json!({"type": "email", "address": "race2@example.org"})),
        )
        .await;
    let id = b["id"].as_str().unwrap().to_owned();
    let code = code_in(
        &t.sink
            .wait_for_message_to("race2@example.org", MAIL_WAIT)
            .await
            .unwrap(),
    );
    let path = format!("/api/v1/me/methods/{id}/verify");
    let results =
        join_all((0..20).map(|_| t.authed(Method::POST, &path, &token, Some(json!({"code": code.clone()})))))
            .await;
    assert_eq!(
        results.iter().filter(|(s, _)| *s == 200).count(),
        1,
        "{results:?}"
    );
}

#[tokio::test]
async fn wrong_codes_count_per_account_across_resent_codes_and_flows() {
    let t = spawn().await;
    t.add_user(
        "guess",
        Some("Guess-Original-Pass-1"),
        Some("guess.home@example.net"),
    )
    .await;
    let mut last = (0, Value::Null);
    for round in 0..5 {
        // A new flow and a fresh code each time: the counter still goes on.
        let (flow, method, _) = t.start("reset", "guess").await;
        let code = t
            .send_and_read_code(&flow, &method, "guess.home@example.net")
            .await;
        let wrong = if code == "000000" { "111111" } else { "000000" };
        last = t
            .post(
                "/api/v1/flows/verify",
                json!({"flow": flow, "method": method, "code": wrong}),
            )
            .await;
        if round < 4 {
            assert_eq!(last.1["error"], "invalid_code", "round {round}");
        }
    }
    assert_eq!(
        (last.0, last.1["error"].as_str()),
        (429, Some("too_many_attempts"))
    );
    let (flow, method, _) = t.start("reset", "guess").await;
    let code = t
        .send_and_read_code(&flow, &method, "guess.home@example.net")
        .await;
    let (s, b) = t
        .post(
            "/api/v1/flows/verify",
            json!({"flow": flow, "method": method, "code": code}),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (429, Some("too_many_attempts")),
        "locked even with the right code"
    );
    assert!(t.audit_activities().await.iter().any(|a| a == "blocked"));
}

#[tokio::test]
async fn with_smtp_down_the_flow_answers_and_the_code_arrives_later() {
    let t = spawn().await;
    t.add_user(
        "patient",
        Some("Patient-Original-1"),
        Some("patient.home@example.net"),
    )
    .await;
    let port = t.sink.port();
    t.sink.stop().await;

    let (flow, method, _) = t.start("reset", "patient").await;
    let (s, b) = t
        .post("/api/v1/flows/send", json!({"flow": flow, "method": method}))
        .await;
    assert_eq!(
        (s, b),
        (202, json!({"sent": true})),
        "the flow answers while SMTP is down"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let queued = t.core().app.recent_mail(10).await.unwrap();
    assert!(
        queued
            .iter()
            .any(|m| m.sent_at.is_none() && m.last_error.is_some() && m.attempts >= 1),
        "retrying"
    );

    let sink = SmtpSink::start_on(port).await.unwrap();
    let mail = sink
        .wait_for_message_to("patient.home@example.net", MAIL_WAIT)
        .await
        .expect("delivered after SMTP came back");
    let code = code_in(&mail);
    let (s, b) = t
        .post(
            "/api/v1/flows/verify",
            json!({"flow": flow, "method": method, "code": code}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn links_are_built_from_public_url_never_from_host_headers() {
    let t = spawn().await;
    t.add_user(
        "victim",
        Some("Victim-Original-1"),
        Some("victim.home@example.net"),
    )
    .await;
    for i in 0..10 {
        let (status, body) = {
            let r = t
                .http
                .post(format!("{}/api/v1/flows", t.base))
                .header("Host", format!("evil{i}.example"))
                .header("X-Forwarded-Host", "evil.example")
                .header("Forwarded", "host=evil.example")
                .json(&json!({"kind": "reset", "login": "victim"}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        };
        assert_eq!(status, 201);
        let r = t
            .http
            .post(format!("{}/api/v1/flows/send", t.base))
            .header("Host", "evil.example")
            .header("X-Forwarded-Host", "evil.example")
            .json(&json!({"flow": body["flow"], "method": body["methods"][0]["id"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let mails = t
        .sink
        .wait_for_count_to("victim.home@example.net", 10, MAIL_WAIT)
        .await
        .unwrap();
    for m in mails {
        let body = m.text_body();
        assert!(body.contains(PUBLIC_URL) && !body.contains("evil"), "{body}");
    }
}

#[tokio::test]
async fn flow_tokens_codes_and_passwords_never_appear_in_urls_or_audit() {
    let t = spawn().await;
    t.add_user(
        "canary",
        Some("Canary-Original-Pw-1"),
        Some("canary.home@example.net"),
    )
    .await;
    let (flow, method, _) = t.start("reset", "canary").await;
    let code = t
        .send_and_read_code(&flow, &method, "canary.home@example.net")
        .await;
    t.post(
        "/api/v1/flows/verify",
        json!({"flow": flow, "method": method, "code": code}),
    )
    .await;
    t.post(
        "/api/v1/flows/password",
        json!({"flow": flow, "password": "Canary-Secret-New-Pw-9"}),
    )
    .await;
    let mut out = Vec::new();
    gatehouse::admin::export_audit(
        &t.core().app,
        gatehouse::admin::ExportFormat::Jsonl,
        None,
        &mut out,
    )
    .await
    .unwrap();
    let audit = String::from_utf8(out).unwrap();
    for secret in [
        flow.as_str(),
        code.as_str(),
        "Canary-Original-Pw-1",
        "Canary-Secret-New-Pw-9",
    ] {
        assert!(!audit.contains(secret), "audit contains a secret");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stored = t.core().app.recent_mail(100).await.unwrap();
    assert!(stored.iter().any(|m| m.sent_at.is_some()));
    for m in stored.iter().filter(|m| m.sent_at.is_some()) {
        assert!(
            !m.mail.body.contains(&code),
            "a delivered code stays in the outbox"
        );
    }
    for m in t.sink.messages() {
        for h in ["Subject", "From", "To"] {
            let v = m.header(h).unwrap_or_default();
            assert!(
                !v.contains(&code) && !v.contains(&flow),
                "header {h} carries a secret"
            );
        }
    }
}
