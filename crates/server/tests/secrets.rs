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
    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    let twilio_token = "Canary-Twilio-Auth-Token-5151";
    let admin_token = "Canary-Admin-Api-Token-6262";
    let fake = gatehouse_testkit::phone_provider::FakeTwilio::start(SID, twilio_token)
        .await
        .unwrap();
    let t = spawn_with(|raw| {
        raw.flow.code_digits = 10;
        raw.flow.methods = ["email", "sms", "voice", "totp", "questions"]
            .map(String::from)
            .to_vec();
        raw.phone.provider = "twilio".into();
        raw.phone.default_region = "FR".into();
        raw.phone.twilio_base_url = fake.base_url().to_string();
        raw.phone.twilio_account_sid = SID.into();
        raw.phone.twilio_auth_token = Some(twilio_token.into());
        raw.phone.twilio_from = Some("+15005550006".into());
        raw.server.security_alerts = vec!["secops@corp.example".into()];
        use sha2::Digest;
        let digest = hex::encode(sha2::Sha256::digest(admin_token.as_bytes()));
        raw.admin.api_tokens = vec![format!("helpdesk:{digest}")];
    })
    .await;
    let mut secrets: Vec<String> = vec![];
    let original = "Canary-Original-Pw-1337";
    let fresh = "Canary-Velvet-Lagoon-7331";
    let changed = "Canary-Quartz-Orbit-4242";
    let wrong = "Canary-Wrong-Guess-9999";
    secrets.extend([original, fresh, changed, wrong, twilio_token, admin_token].map(String::from));
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
    // Phone, authenticator app and security questions: registered, then used in a flow.
    let (_, b) = t.sign_in("quill", changed).await;
    let token = b["token"].as_str().unwrap().to_owned();
    secrets.push(token.clone());
    let (s, b) = t
        .authed(
            Method::POST,
            "/api/v1/me/methods",
            &token,
            Some(json!({"type": "sms", "phone": "06 12 34 56 78"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let sms_code = fake.last_code_to("+33612345678").unwrap();
    secrets.push(sms_code.clone());
    let path = format!("/api/v1/me/methods/{}/verify", b["id"].as_str().unwrap());
    t.authed(Method::POST, &path, &token, Some(json!({"code": "0000000000"})))
        .await;
    let (s, _) = t
        .authed(Method::POST, &path, &token, Some(json!({"code": sms_code})))
        .await;
    assert_eq!(s, 200);
    let (_, b) = t
        .authed(
            Method::POST,
            "/api/v1/me/methods",
            &token,
            Some(json!({"type": "totp"})),
        )
        .await;
    let uri = b["otpauth_uri"].as_str().unwrap().to_owned();
    let key = uri
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("secret="))
        .unwrap()
        .to_owned();
    secrets.push(key);
    let answers = [
        "Canary-Answer-Lilas",
        "Canary-Answer-Dubois",
        "Canary-Answer-Kilimanjaro",
    ];
    secrets.extend(answers.map(String::from));
    let (_, q) = t.authed(Method::GET, "/api/v1/questions", &token, None).await;
    let given: Vec<serde_json::Value> = q["questions"].as_array().unwrap()[..3]
        .iter()
        .zip(answers)
        .map(|(x, a)| json!({"question": x["id"], "answer": a}))
        .collect();
    let (s, b) = t
        .authed(
            Method::POST,
            "/api/v1/me/methods",
            &token,
            Some(json!({"type": "questions", "answers": given})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (pflow, _, body) = t.start("reset", "quill").await;
    secrets.push(pflow.clone());
    let methods = body["methods"].as_array().unwrap();
    let sms = methods.iter().find(|m| m["type"] == "sms").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let qm = methods.iter().find(|m| m["type"] == "questions").unwrap();
    t.post(
        "/api/v1/flows/send",
        json!({"flow": pflow, "method": sms, "confirm": "+33612345678"}),
    )
    .await;
    let flow_sms = fake.last_code_to("+33612345678").unwrap();
    secrets.push(flow_sms.clone());
    t.post(
        "/api/v1/flows/verify",
        json!({"flow": pflow, "method": sms, "code": flow_sms}),
    )
    .await;
    let asked: Vec<serde_json::Value> = qm["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| json!({"question": x["id"], "answer": "Canary-Wrong-Answer"}))
        .collect();
    secrets.push("Canary-Wrong-Answer".into());
    t.post(
        "/api/v1/flows/verify",
        json!({"flow": pflow, "method": qm["id"], "answers": asked}),
    )
    .await;

    // Helpdesk: a recovery link by the admin API, then "this wasn't me" from a notification.
    let before = t.sink.messages_to("quill.home@example.net").len();
    let (s, b) = t
        .authed(
            Method::POST,
            "/api/v1/admin/users/quill/link",
            admin_token,
            Some(json!({"kind": "recovery"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    t.sink
        .wait_for_count_to("quill.home@example.net", before + 1, MAIL_WAIT)
        .await
        .unwrap();
    let bodies: Vec<String> = t.sink.messages().iter().map(|m| m.text_body()).collect();
    for b in &bodies {
        for l in b.lines() {
            for prefix in ["/link/", "/not-me/"] {
                if let Some(i) = l.find(prefix) {
                    let tok = l[i + prefix.len()..].trim().to_owned();
                    let _ = t.http.get(format!("{}{prefix}{tok}", t.base)).send().await;
                    secrets.push(tok);
                }
            }
        }
    }

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
