//! Secrets never leak: every flow runs, failures included, with logging at debug level captured in
//! full, and canary passwords, codes and tokens are searched for in the log output, the audit log and
//! the headers of every outgoing mail. Codes may appear only in the body meant for the user.
//! Its own test binary, because it installs the process-wide log subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "blackbox/harness.rs"]
#[allow(dead_code)]
mod harness;

use harness::{code_in, spawn_with, MAIL_WAIT};
use reqwest::Method;
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn no_password_code_or_token_reaches_logs_audit_or_mail_headers() {
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(capture.clone())
        .with_ansi(false)
        .without_time()
        .init();

    // Ten-digit codes, so a code cannot turn up in the logs by coincidence.
    let t = spawn_with(|raw| raw.flow.code_digits = 10).await;
    let mut secrets: Vec<String> = vec![];
    let original = "Canary-Original-Pw-1337";
    let fresh = "Canary-Velvet-Lagoon-7331";
    let changed = "Canary-Quartz-Orbit-4242";
    let wrong = "Canary-Wrong-Guess-9999";
    secrets.extend([original, fresh, changed, wrong].map(String::from));
    t.add_user("quill", Some(original), Some("quill.home@example.net"))
        .await;

    // Reset: a wrong code, then the right one, a refused password, then a good one.
    let (flow, method, _) = t.start("reset", "quill").await;
    secrets.push(flow.clone());
    let code = t
        .send_and_read_code(&flow, &method, "quill.home@example.net")
        .await;
    secrets.push(code.clone());
    let wrong_code = if code == "000000" { "111111" } else { "000000" };
    t.post(
        "/api/v1/flows/verify",
        json!({"flow": flow, "method": method, "code": wrong_code}),
    )
    .await;
    let (s, _) = t
        .post(
            "/api/v1/flows/verify",
            json!({"flow": flow, "method": method, "code": code}),
        )
        .await;
    assert_eq!(s, 200);
    t.post(
        "/api/v1/flows/password",
        json!({"flow": flow, "password": "quill"}),
    )
    .await;
    let (s, _) = t
        .post("/api/v1/flows/password", json!({"flow": flow, "password": fresh}))
        .await;
    assert_eq!(s, 200);

    // Sign-in, wrong and right; change, wrong old and right; registration with its code.
    assert_eq!(t.sign_in("quill", wrong).await.0, 401);
    let (s, b) = t.sign_in("quill", fresh).await;
    assert_eq!(s, 200);
    let token = b["token"].as_str().unwrap().to_owned();
    secrets.push(token.clone());
    let (s, b) = t
        .authed(
            Method::POST,
            "/api/v1/me/methods",
            &token,
            Some(json!({"type": "email", "address": "quill.second@example.org"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();
    let mail = t
        .sink
        .wait_for_message_to("quill.second@example.org", MAIL_WAIT)
        .await
        .unwrap();
    let reg_code = code_in(&mail);
    secrets.push(reg_code.clone());
    let path = format!("/api/v1/me/methods/{id}/verify");
    let (s, _) = t
        .authed(Method::POST, &path, &token, Some(json!({"code": reg_code})))
        .await;
    assert_eq!(s, 200);
    let change = |old: &str, new: &str| json!({"login": "quill", "old_password": old, "new_password": new});
    t.post("/api/v1/password/change", change(wrong, changed)).await;
    let (s, _) = t.post("/api/v1/password/change", change(fresh, changed)).await;
    assert_eq!(s, 200);
    t.post(
        "/api/v1/password/check",
        json!({"login": "quill", "password": changed}),
    )
    .await;
    // The change notification first, so the unlock code below is the newest mail.
    for _ in 0..100 {
        let done = t
            .sink
            .messages_to("quill.home@example.net")
            .iter()
            .any(|m| m.subject().unwrap_or_default().contains("changed"));
        if done {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Unlock flow, and the portal pages with the flow cookie.
    let (uflow, umethod, _) = t.start("unlock", "quill").await;
    secrets.push(uflow.clone());
    let ucode = t
        .send_and_read_code(&uflow, &umethod, "quill.home@example.net")
        .await;
    secrets.push(ucode.clone());
    t.post(
        "/api/v1/flows/verify",
        json!({"flow": uflow, "method": umethod, "code": ucode}),
    )
    .await;
    t.post("/api/v1/flows/unlock", json!({"flow": uflow})).await;
    let _ = t
        .http
        .get(format!("{}/flow", t.base))
        .header("cookie", format!("gh_flow={uflow}"))
        .send()
        .await;
    // Let the outbox deliver the notifications.
    let _ = t.sink.wait_for_message_to("quill@corp.example", MAIL_WAIT).await;

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("DEBUG") || logs.contains("TRACE"),
        "debug logging was captured"
    );
    assert!(
        logs.len() > 1000,
        "the flows logged something: {} bytes",
        logs.len()
    );
    let audit = {
        let mut out = Vec::new();
        gatehouse::admin::export_audit(
            &t.core().app,
            gatehouse::admin::ExportFormat::Jsonl,
            None,
            &mut out,
        )
        .await
        .unwrap();
        String::from_utf8(out).unwrap()
    };
    let headers: String = t
        .sink
        .messages()
        .iter()
        .map(|m| m.raw.split("\r\n\r\n").next().unwrap_or("").to_owned())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(t.sink.messages().len() >= 5);
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "secret {s:?} in the logs");
        assert!(!audit.contains(s.as_str()), "secret {s:?} in the audit log");
        assert!(!headers.contains(s.as_str()), "secret {s:?} in a mail header");
    }
}
