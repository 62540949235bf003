//! Verification methods, registration and per-group policies, end to end through the API: email (SMTP
//! sink), SMS and voice (a local server checking Twilio's API shape; a signed webhook; an email-to-SMS
//! gateway), an authenticator app on a fixed clock, security questions, helpdesk links and onboarding.
use crate::harness::{code_in, spawn_at, spawn_with, TestApp, MAIL_WAIT, PUBLIC_URL};
use gatehouse::config::{PolicySection, RawConfig};
use gatehouse_core::clock::FixedClock;
use gatehouse_core::service::NewUser;
use gatehouse_core::types::{Email, Login};
use gatehouse_testkit::phone_provider::{FakeTwilio, FakeWebhook};
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::Arc;
use time::macros::datetime;

const PASSWORD: &str = "Original-Password-1";
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "test-auth-token-0123456789";
const ADMIN_TOKEN: &str = "helpdesk-token-for-the-tests-000000000000";

fn twilio(raw: &mut RawConfig, fake: &FakeTwilio) {
    raw.phone.provider = "twilio".into();
    raw.phone.default_region = "FR".into();
    raw.phone.twilio_base_url = fake.base_url().to_string();
    raw.phone.twilio_account_sid = SID.into();
    raw.phone.twilio_auth_token = Some(TOKEN.into());
    raw.phone.twilio_from = Some("+15005550006".into());
}

fn all_methods(raw: &mut RawConfig) {
    raw.flow.methods = ["email", "sms", "voice", "totp", "questions"]
        .map(String::from)
        .to_vec();
}

fn admin(raw: &mut RawConfig) {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(ADMIN_TOKEN.as_bytes()));
    raw.admin.api_tokens = vec![format!("helpdesk:{digest}")];
}

async fn add(t: &TestApp, login: &str, alternate: Option<&str>, groups: &[&str]) {
    let user = NewUser {
        login: Login::parse(login).unwrap(),
        display_name: format!("{login} Example"),
        email: Some(Email::parse(&format!("{login}@corp.example")).unwrap()),
        alternate_email: alternate.map(|a| Email::parse(a).unwrap()),
        mobile_phone: None,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        password: Some(gatehouse_core::secret::Password::new(PASSWORD)),
    };
    t.core().app.import_user(&user, "test").await.unwrap();
}

async fn session(t: &TestApp, login: &str) -> String {
    let (s, b) = t.sign_in(login, PASSWORD).await;
    assert_eq!(s, 200, "{b}");
    b["token"].as_str().unwrap().to_owned()
}

async fn me(t: &TestApp, token: &str) -> Value {
    let (s, b) = t.authed(Method::GET, "/api/v1/me/methods", token, None).await;
    assert_eq!(s, 200, "{b}");
    b
}

async fn register(t: &TestApp, token: &str, body: Value) -> Value {
    let (s, b) = t
        .authed(Method::POST, "/api/v1/me/methods", token, Some(body))
        .await;
    assert_eq!(s, 201, "{b}");
    b
}

async fn verify_method(t: &TestApp, token: &str, id: &str, code: &str) -> (u16, Value) {
    t.authed(
        Method::POST,
        &format!("/api/v1/me/methods/{id}/verify"),
        token,
        Some(json!({ "code": code })),
    )
    .await
}

async fn verify(t: &TestApp, flow: &str, method: &str, code: &str) -> (u16, Value) {
    t.post(
        "/api/v1/flows/verify",
        json!({"flow": flow, "method": method, "code": code}),
    )
    .await
}

fn method_of<'a>(flow_body: &'a Value, kind: &str) -> &'a Value {
    flow_body["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} method in {flow_body}"))
}

async fn set_password_and_sign_in(t: &TestApp, flow: &str, login: &str) {
    let new = "Brand-New-Passphrase-7";
    let (s, b) = t
        .post("/api/v1/flows/password", json!({"flow": flow, "password": new}))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = t.sign_in(login, new).await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn sms_and_voice_through_a_twilio_shaped_provider() {
    let fake = FakeTwilio::start(SID, TOKEN).await.unwrap();
    let t = spawn_with(|raw| twilio(raw, &fake)).await;
    add(&t, "alice", None, &[]).await;
    let token = session(&t, "alice").await;

    // A national number with the configured region becomes E.164; the code goes by SMS.
    let sms = register(&t, &token, json!({"type": "sms", "phone": "06 12 34 56 78"})).await;
    assert_eq!(sms["verified"], false);
    let code = fake.last_code_to("+33612345678").expect("registration SMS");
    let (s, b) = verify_method(&t, &token, sms["id"].as_str().unwrap(), &code).await;
    assert_eq!(s, 200, "{b}");

    // A voice number: the call reads the code out.
    let voice = register(&t, &token, json!({"type": "voice", "phone": "+33 6 98 76 54 32"})).await;
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].twiml.contains("<Say"), "{}", calls[0].twiml);
    let code = fake.last_code_to("+33698765432").expect("call");
    let (s, b) = verify_method(&t, &token, voice["id"].as_str().unwrap(), &code).await;
    assert_eq!(s, 200, "{b}");
    let state = me(&t, &token).await;
    let hints: Vec<&str> = state["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["hint"].as_str().unwrap())
        .collect();
    assert!(hints.iter().all(|h| !h.contains("12 34 56")), "{hints:?}");

    // In a reset flow the masked number must be confirmed in full before anything is sent, and the
    // answer does not say whether it matched.
    let (flow, _, body) = t.start("reset", "alice").await;
    let sms_method = method_of(&body, "sms")["id"].as_str().unwrap().to_owned();
    assert!(method_of(&body, "sms")["hint"].as_str().unwrap().ends_with("78"));
    let before = fake.messages().len();
    for confirm in [None, Some("+33 6 99 99 99 99")] {
        let mut req = json!({"flow": flow, "method": sms_method});
        if let Some(c) = confirm {
            req["confirm"] = json!(c);
        }
        let (s, b) = t.post("/api/v1/flows/send", req).await;
        assert_eq!((s, b.clone()), (202, json!({"sent": true})), "{b}");
    }
    assert_eq!(
        fake.messages().len(),
        before,
        "nothing is sent to an unconfirmed number"
    );
    let (s, _) = t
        .post(
            "/api/v1/flows/send",
            json!({"flow": flow, "method": sms_method, "confirm": "0612345678"}),
        )
        .await;
    assert_eq!(s, 202);
    assert_eq!(fake.messages().len(), before + 1);
    let code = fake.last_code_to("+33612345678").unwrap();
    let (s, b) = verify(&t, &flow, &sms_method, &code).await;
    assert_eq!((s, b["step"].as_str()), (200, Some("password")), "{b}");
    set_password_and_sign_in(&t, &flow, "alice").await;

    // Provider outage: a clear 503, nothing else changes.
    let (flow, _, body) = t.start("reset", "alice").await;
    let sms_method = method_of(&body, "sms")["id"].as_str().unwrap().to_owned();
    fake.fail_next(1, gatehouse_testkit::phone_provider::TwilioFailure::Unavailable);
    let (s, b) = t
        .post(
            "/api/v1/flows/send",
            json!({"flow": flow, "method": sms_method, "confirm": "+33612345678"}),
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (503, Some("phone_unavailable")), "{b}");
    let (s, _) = t
        .post(
            "/api/v1/flows/send",
            json!({"flow": flow, "method": sms_method, "confirm": "+33612345678"}),
        )
        .await;
    assert_eq!(s, 202, "a retry works once the provider is back");
}

#[tokio::test]
async fn sms_through_a_signed_webhook_and_an_email_gateway() {
    let hook = FakeWebhook::start("webhook-secret-0123456789").await.unwrap();
    let t = spawn_with(|raw| {
        raw.phone.provider = "webhook".into();
        raw.phone.default_region = "GB".into();
        raw.phone.webhook_url = Some(hook.url().to_string());
        raw.phone.webhook_secret = Some("webhook-secret-0123456789".into());
    })
    .await;
    add(&t, "bob", None, &[]).await;
    let token = session(&t, "bob").await;
    let m = register(&t, &token, json!({"type": "sms", "phone": "07911 123456"})).await;
    let code = hook.last_code_to("+447911123456").expect("signed webhook call");
    let (s, b) = verify_method(&t, &token, m["id"].as_str().unwrap(), &code).await;
    assert_eq!(s, 200, "{b}");

    let g = spawn_with(|raw| {
        raw.phone.provider = "email_gateway".into();
        raw.phone.default_region = "US".into();
        raw.phone.email_gateway_address = Some("{number}@sms.example.net".into());
    })
    .await;
    add(&g, "carol", None, &[]).await;
    let token = session(&g, "carol").await;
    let m = register(&g, &token, json!({"type": "sms", "phone": "(201) 555-0123"})).await;
    let mail = g
        .sink
        .wait_for_message_to("12015550123@sms.example.net", MAIL_WAIT)
        .await
        .expect("email-to-SMS");
    let code: String = mail
        .text_body()
        .split_whitespace()
        .find(|w| w.len() >= 6 && w.chars().all(|c| c.is_ascii_digit()))
        .unwrap()
        .to_owned();
    let (s, b) = verify_method(&g, &token, m["id"].as_str().unwrap(), &code).await;
    assert_eq!(s, 200, "{b}");
    // A gateway cannot call: voice is not offered.
    let (s, b) = g
        .authed(
            Method::POST,
            "/api/v1/me/methods",
            &token,
            Some(json!({"type": "voice", "phone": "(201) 555-0199"})),
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (403, Some("not_allowed")), "{b}");
    let state = me(&g, &token).await;
    assert!(
        !state["allowed"].as_array().unwrap().contains(&json!("voice")),
        "{state}"
    );
}

fn totp_now(uri: &str, clock: &FixedClock) -> String {
    let secret = uri
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("secret="))
        .unwrap();
    let bytes = data_encoding::BASE32_NOPAD.decode(secret.as_bytes()).unwrap();
    let secret = gatehouse_core::totp::TotpSecret::from_bytes(&bytes).unwrap();
    let step = gatehouse_core::totp::step_at(gatehouse_core::ports::Clock::now(clock)).unwrap();
    gatehouse_core::totp::code_at(&secret, step)
}

#[tokio::test]
async fn authenticator_app_on_a_fixed_clock_and_no_code_twice() {
    let clock = Arc::new(FixedClock::new(datetime!(2026-11-22 09:00:05 UTC)));
    let t = spawn_at(clock.clone(), |_| {}).await;
    add(&t, "dave", None, &[]).await;
    let token = session(&t, "dave").await;
    let m = register(&t, &token, json!({"type": "totp"})).await;
    let uri = m["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(uri.contains("algorithm=SHA1") && uri.contains("digits=6") && uri.contains("period=30"));
    assert!(m["qr_svg"].as_str().unwrap().contains("<svg"));
    let (s, _) = verify_method(&t, &token, m["id"].as_str().unwrap(), "000000").await;
    assert_eq!(s, 400, "a wrong first code does not enrol");
    let first = totp_now(uri, &clock);
    let (s, b) = verify_method(&t, &token, m["id"].as_str().unwrap(), &first).await;
    assert_eq!(s, 200, "{b}");

    // The code that enrolled the app cannot be used again, even in a flow.
    let (flow, _, body) = t.start("reset", "dave").await;
    let id = method_of(&body, "totp")["id"].as_str().unwrap().to_owned();
    let (s, b) = t
        .post("/api/v1/flows/send", json!({"flow": flow, "method": id}))
        .await;
    assert_eq!(s, 409, "an app needs no sending: {b}");
    let (s, b) = verify(&t, &flow, &id, &first).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_code")), "{b}");
    clock.advance(time::Duration::seconds(30));
    let next = totp_now(uri, &clock);
    let (s, b) = verify(&t, &flow, &id, &next).await;
    assert_eq!((s, b["step"].as_str()), (200, Some("password")), "{b}");
    // The same code in a second flow is refused: single use.
    let (flow2, _, _) = t.start("reset", "dave").await;
    let (s, _) = verify(&t, &flow2, &id, &next).await;
    assert_eq!(s, 400);
    set_password_and_sign_in(&t, &flow, "dave").await;

    // One fresh code submitted to 20 flows at once: exactly one success.
    clock.advance(time::Duration::seconds(30));
    let code = totp_now(uri, &clock);
    let mut flows = vec![];
    for _ in 0..20 {
        flows.push(t.start("reset", "dave").await.0);
    }
    let results = futures::future::join_all(flows.iter().map(|f| verify(&t, f, &id, &code))).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 1, "{results:?}");
}

async fn questions_body(t: &TestApp, token: Option<&str>) -> Value {
    let (s, b) = match token {
        Some(tk) => t.authed(Method::GET, "/api/v1/questions", tk, None).await,
        None => {
            let r = t
                .http
                .get(format!("{}/api/v1/questions", t.base))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap())
        }
    };
    assert_eq!(s, 200, "{b}");
    b
}

#[tokio::test]
async fn security_questions_registered_hashed_and_asked() {
    let t = spawn_with(|raw| {
        all_methods(raw);
        raw.flow.questions_registered = 4;
        raw.flow.questions_asked = 3;
    })
    .await;
    add(&t, "erin", None, &[]).await;
    let token = session(&t, "erin").await;
    let q = questions_body(&t, Some(&token)).await;
    assert_eq!(q["register"], 4);
    let ids: Vec<String> = q["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.len() >= 10);
    let answers = [
        "Rue des Lilas",
        "Marguerite Dubois",
        "Kilimanjaro",
        "Blue Peugeot",
    ];
    let body: Vec<Value> = ids
        .iter()
        .zip(answers)
        .map(|(id, a)| json!({"question": id, "answer": a}))
        .collect();

    // The rules: N answers, 3–40 characters, no two alike, not the login.
    let mut bad = body.clone();
    bad[1]["answer"] = json!("ab");
    let (s, b) = t
        .authed(
            Method::POST,
            "/api/v1/me/methods",
            &token,
            Some(json!({"type": "questions", "answers": bad})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let mut same = body.clone();
    same[2]["answer"] = json!("  rue DES  lilas ");
    let (s, _) = t
        .authed(
            Method::POST,
            "/api/v1/me/methods",
            &token,
            Some(json!({"type": "questions", "answers": same})),
        )
        .await;
    assert_eq!(s, 400, "answers alike after normalisation are refused");
    let (s, _) = t
        .authed(
            Method::POST,
            "/api/v1/me/methods",
            &token,
            Some(json!({"type": "questions", "answers": body[..3]})),
        )
        .await;
    assert_eq!(s, 400, "four answers are asked for");

    let m = register(&t, &token, json!({"type": "questions", "answers": body})).await;
    assert_eq!(m["verified"], true);
    // Never shown, not even to the user.
    let state = me(&t, &token).await;
    let text = state.to_string();
    for a in answers {
        assert!(!text.to_lowercase().contains(&a.to_lowercase()), "{text}");
    }

    let (flow, _, body) = t.start("reset", "erin").await;
    let qm = method_of(&body, "questions");
    let id = qm["id"].as_str().unwrap().to_owned();
    let asked: Vec<String> = qm["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(asked.len(), 3, "M = 3 of the 4 registered");
    let answer_for = |qid: &str| answers[ids.iter().position(|i| i == qid).unwrap()];
    let mut given: Vec<Value> = asked
        .iter()
        .map(|q| json!({"question": q, "answer": answer_for(q)}))
        .collect();
    given[0]["answer"] = json!("wrong answer");
    let (s, b) = t
        .post(
            "/api/v1/flows/verify",
            json!({"flow": flow, "method": id, "answers": given}),
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_code")), "{b}");
    // Case, spacing and width do not matter.
    let given: Vec<Value> = asked
        .iter()
        .map(|q| json!({"question": q, "answer": format!("  {}  ", answer_for(q).to_uppercase())}))
        .collect();
    let (s, b) = t
        .post(
            "/api/v1/flows/verify",
            json!({"flow": flow, "method": id, "answers": given}),
        )
        .await;
    assert_eq!((s, b["step"].as_str()), (200, Some("password")), "{b}");
}

fn group_policy(name: &str, group: &str, required: u8, methods: &[&str]) -> PolicySection {
    PolicySection {
        name: name.into(),
        groups: vec![group.into()],
        methods: Some(methods.iter().map(|m| m.to_string()).collect()),
        methods_required: Some(required),
        ..PolicySection::default()
    }
}

#[tokio::test]
async fn n_of_m_under_two_group_policies_and_a_privileged_floor() {
    let t = spawn_with(|raw| {
        all_methods(raw);
        raw.directory.privileged_groups = vec!["domain-admins".into()];
        raw.policy = vec![
            group_policy("finance", "finance", 2, &["email", "questions"]),
            group_policy("staff", "staff", 1, &["email"]),
        ];
    })
    .await;
    add(&t, "fiona", Some("fiona.one@example.net"), &["finance"]).await;
    add(&t, "sam", Some("sam.one@example.net"), &["staff"]).await;
    add(&t, "root2", Some("root2.one@example.net"), &["domain-admins"]).await;

    // Finance: two of the registered methods, the user picks which.
    let token = session(&t, "fiona").await;
    let state = me(&t, &token).await;
    assert_eq!(
        (state["policy"].as_str(), state["reset_required"].as_u64()),
        (Some("finance"), Some(2))
    );
    assert_eq!(state["registration_required"], true, "{state}");
    let m = register(
        &t,
        &token,
        json!({"type": "email", "address": "fiona.two@example.net"}),
    )
    .await;
    let mail = t
        .sink
        .wait_for_message_to("fiona.two@example.net", MAIL_WAIT)
        .await
        .unwrap();
    let (s, _) = verify_method(&t, &token, m["id"].as_str().unwrap(), &code_in(&mail)).await;
    assert_eq!(s, 200);
    assert_eq!(me(&t, &token).await["registration_required"], false);
    let (flow, _, body) = t.start("reset", "fiona").await;
    assert_eq!(body["required"], 2);
    let ids: Vec<String> = body["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2);
    let code = t
        .send_and_read_code(&flow, &ids[1], "fiona.two@example.net")
        .await;
    let (s, b) = verify(&t, &flow, &ids[1], &code).await;
    assert_eq!(
        (s, b["step"].as_str(), b["verified"].as_u64()),
        (200, Some("verify"), Some(1)),
        "{b}"
    );
    // The same method again does not count twice.
    let (s, _) = t
        .post("/api/v1/flows/send", json!({"flow": flow, "method": ids[1]}))
        .await;
    assert_eq!(s, 409);
    let (s, b) = t
        .post(
            "/api/v1/flows/password",
            json!({"flow": flow, "password": "Brand-New-Passphrase-7"}),
        )
        .await;
    assert_eq!(s, 409, "one proof is not enough: {b}");
    let code = t
        .send_and_read_code(&flow, &ids[0], "fiona.one@example.net")
        .await;
    let (s, b) = verify(&t, &flow, &ids[0], &code).await;
    assert_eq!((s, b["step"].as_str()), (200, Some("password")), "{b}");

    // Staff: one method, and security questions are not offered to them.
    let (_, _, body) = t.start("reset", "sam").await;
    assert_eq!(body["required"], 1);
    let token = session(&t, "sam").await;
    let (s, b) = t
        .authed(
            Method::POST,
            "/api/v1/me/methods",
            &token,
            Some(json!({"type": "totp"})),
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (403, Some("not_allowed")), "{b}");

    // Privileged: two methods and never security questions, whatever the default says.
    let token = session(&t, "root2").await;
    let state = me(&t, &token).await;
    assert_eq!(state["reset_required"], 2, "{state}");
    assert!(!state["allowed"].as_array().unwrap().contains(&json!("questions")));
    let q = questions_body(&t, None).await;
    let answers: Vec<Value> = q["questions"].as_array().unwrap()[..3]
        .iter()
        .zip(["Rue des Lilas", "Marguerite Dubois", "Kilimanjaro"])
        .map(|(x, a)| json!({"question": x["id"], "answer": a}))
        .collect();
    let (s, b) = t
        .authed(
            Method::POST,
            "/api/v1/me/methods",
            &token,
            Some(json!({"type": "questions", "answers": answers})),
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (403, Some("not_allowed")), "{b}");
    // With one method the flow is a decoy: it looks like any other, but no code leaves.
    let (flow, method, body) = t.start("reset", "root2").await;
    assert!(matches!(body["required"].as_u64(), Some(1 | 2)), "{body}");
    let _ = method;
    for m in body["methods"].as_array().unwrap() {
        let (s, _) = t
            .post("/api/v1/flows/send", json!({"flow": flow, "method": m["id"]}))
            .await;
        // 202 for anything that sends a code, 409 for an app (as for a real one).
        assert!(matches!(s, 202 | 409), "{s}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(t.sink.messages_to("root2.one@example.net").is_empty());
    // A second method: now the real flow, held to two.
    let m = register(
        &t,
        &token,
        json!({"type": "email", "address": "root2.two@example.net"}),
    )
    .await;
    let mail = t
        .sink
        .wait_for_message_to("root2.two@example.net", MAIL_WAIT)
        .await
        .unwrap();
    let (s, _) = verify_method(&t, &token, m["id"].as_str().unwrap(), &code_in(&mail)).await;
    assert_eq!(s, 200);
    let (_, _, body) = t.start("reset", "root2").await;
    assert_eq!(
        (
            body["required"].as_u64(),
            body["methods"].as_array().unwrap().len()
        ),
        (Some(2), 2)
    );
}

#[tokio::test]
async fn re_confirmation_is_asked_after_the_interval() {
    let clock = Arc::new(FixedClock::new(datetime!(2026-01-10 08:00 UTC)));
    let t = spawn_at(clock.clone(), |raw| raw.flow.reconfirm_days = 90).await;
    add(&t, "gina", Some("gina.private@example.net"), &[]).await;
    let token = session(&t, "gina").await;
    assert_eq!(me(&t, &token).await["reconfirm_due"], false);
    clock.advance(time::Duration::days(91));
    let token = session(&t, "gina").await;
    let state = me(&t, &token).await;
    assert_eq!(state["reconfirm_due"], true, "{state}");
    let (s, b) = t.authed(Method::POST, "/api/v1/me/reconfirm", &token, None).await;
    assert_eq!((s, b["reconfirm_due"].as_bool()), (200, Some(false)), "{b}");
    assert!(t
        .audit_activities()
        .await
        .contains(&"methods_reconfirmed".to_string()));
}

#[tokio::test]
async fn an_imported_new_hire_is_onboarded_by_link_and_the_helpdesk_api_works() {
    let t = spawn_with(admin).await;
    // HR import: no password anywhere, a personal address.
    let csv = "login,display_name,email,alternate_email,mobile_phone,groups\n\
               nina,Nina New,nina@corp.example,nina.home@example.net,,staff\n";
    gatehouse::admin::import_csv(&t.core().app, csv.as_bytes())
        .await
        .unwrap();

    let h = |path: &str| format!("/api/v1/admin/users/{path}");
    let (s, _) = t.authed(Method::GET, &h("nina"), "not-the-token", None).await;
    assert_eq!(s, 401);
    let (s, state) = t.authed(Method::GET, &h("nina"), ADMIN_TOKEN, None).await;
    assert_eq!(s, 200, "{state}");
    assert_eq!(state["verified"], 1, "the HR address is trusted: {state}");

    let (s, b) = t
        .authed(
            Method::POST,
            &h("nina/link"),
            ADMIN_TOKEN,
            Some(json!({"kind": "onboarding"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let mail = t
        .sink
        .wait_for_message_to("nina.home@example.net", MAIL_WAIT)
        .await
        .unwrap();
    let body = mail.text_body();
    let link = body
        .lines()
        .find(|l| l.starts_with(PUBLIC_URL))
        .unwrap_or_else(|| panic!("no link in {body}"));
    let token = link.rsplit('/').next().unwrap().trim().to_owned();
    assert!(link.starts_with(&format!("{PUBLIC_URL}/link/")));

    // The link opens the portal flow (cookie) and, for API clients, is the flow itself.
    let portal = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = portal
        .get(format!("{}/link/{token}", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let (s, b) = t.post("/api/v1/flows/link", json!({"flow": token})).await;
    assert_eq!((s, b["step"].as_str()), (200, Some("password")), "{b}");
    set_password_and_sign_in(&t, &token, "nina").await;
    // Single use.
    let (s, _) = t
        .post(
            "/api/v1/flows/password",
            json!({"flow": token, "password": "Another-Passphrase-8"}),
        )
        .await;
    assert_eq!(s, 409);

    // Helpdesk tools: contact data, clearing methods.
    let (s, b) = t
        .authed(
            Method::PUT,
            &h("nina/contact"),
            ADMIN_TOKEN,
            Some(json!({"email": "nina.new@example.net"})),
        )
        .await;
    assert_eq!((s, b["verified"].as_u64()), (200, Some(2)), "{b}");
    let (s, b) = t
        .authed(Method::DELETE, &h("nina/methods"), ADMIN_TOKEN, None)
        .await;
    assert_eq!((s, b["removed"].as_u64()), (200, Some(2)), "{b}");
    let acts = t.audit_activities().await;
    for a in ["link_sent", "methods_cleared", "password_reset"] {
        assert!(acts.contains(&a.to_string()), "{a} in {acts:?}");
    }
}

/// Decoy flows look like the deployment's real ones: their methods are drawn from the combinations
/// users have registered, in proportion, the same for a login every time; a wrong proof on a decoy's
/// authenticator app or questions is answered like one on a real method.
#[tokio::test]
async fn decoys_are_drawn_from_the_registered_combinations() {
    use gatehouse_core::ports::{Changes, Method, Store, StoredAnswer, Target};
    use gatehouse_core::types::{MethodId, MethodKind};
    use std::collections::BTreeMap;

    let t = spawn_with(all_methods).await;
    let now = t.core().clock.now();
    let questions = gatehouse_core::questions::QuestionSet::builtin();
    let combinations: [&[MethodKind]; 3] = [
        &[MethodKind::Email],
        &[MethodKind::Email, MethodKind::Totp],
        &[MethodKind::Questions, MethodKind::Email],
    ];
    for (c, kinds) in combinations.iter().enumerate() {
        for u in 0..10 {
            let login = format!("pop{c}u{u}");
            t.add_user(&login, Some("Population-Pass-1"), None).await;
            for (i, &kind) in kinds.iter().enumerate() {
                let target = match kind {
                    MethodKind::Email => {
                        Target::Email(Email::parse(&format!("{login}@home.example")).unwrap())
                    }
                    MethodKind::Totp => Target::Totp {
                        secret: vec![7; 20],
                        last_step: None,
                    },
                    _ => Target::Questions(
                        questions.all()[..3]
                            .iter()
                            .map(|q| StoredAnswer {
                                question: q.id.clone(),
                                hash: gatehouse_core::questions::hash_answer(
                                    "an answer",
                                    &gatehouse_core::clock::OsRng,
                                )
                                .unwrap(),
                            })
                            .collect(),
                    ),
                };
                let method = Method {
                    id: MethodId::parse(&format!("{:020x}", c * 100 + u * 10 + i)).unwrap(),
                    login: Login::parse(&login).unwrap(),
                    kind,
                    target,
                    verified: true,
                    source: "test".into(),
                    created_at: now + time::Duration::seconds(i as i64),
                    confirmed_at: Some(now),
                };
                t.core()
                    .store
                    .insert_method(&method, None, Changes::default())
                    .await
                    .unwrap();
            }
        }
    }
    t.core().app.refresh_decoy_shapes().await.unwrap();
    let types = |body: &Value| -> Vec<String> {
        body["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["type"].as_str().unwrap().to_owned())
            .collect()
    };
    let registered: Vec<Vec<String>> = combinations
        .iter()
        .map(|k| k.iter().map(|k| k.as_str().to_owned()).collect())
        .collect();
    // The real flows show the registered combinations.
    for (c, expected) in registered.iter().enumerate() {
        let (_, _, body) = t.start("reset", &format!("pop{c}u0")).await;
        assert_eq!(&types(&body), expected, "{body}");
    }

    // 150 unknown logins: every decoy is one of the combinations, each about as often as users have it.
    let mut seen: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    let mut decoy_with = BTreeMap::new();
    for i in 0..150 {
        let login = format!("nobody{i}");
        let (flow, _, body) = t.start("reset", &login).await;
        let kinds = types(&body);
        assert!(registered.contains(&kinds), "{body}");
        let (_, _, again) = t.start("reset", &login).await;
        let fixed = |b: &Value| -> Vec<(Value, Value)> {
            b["methods"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| (m["id"].clone(), m["hint"].clone()))
                .collect()
        };
        assert_eq!(fixed(&body), fixed(&again), "the same decoy for the same login");
        *seen.entry(kinds.clone()).or_default() += 1;
        decoy_with.entry(kinds).or_insert((flow, body));
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    // 50 expected each; 20..=80 is more than five standard deviations either way.
    assert!(seen.values().all(|n| (20..=80).contains(n)), "{seen:?}");

    // A wrong proof on a decoy's app or questions: the answer a real method gives.
    let wrong = |flow: &str, m: &Value| {
        if m["type"] == "questions" {
            let answers: Vec<Value> = m["questions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|q| json!({"question": q["id"], "answer": "not the answer"}))
                .collect();
            json!({"flow": flow, "method": m["id"], "answers": answers})
        } else {
            json!({"flow": flow, "method": m["id"], "code": "000000"})
        }
    };
    for (c, kind) in [(1, "totp"), (2, "questions")] {
        let (real_flow, _, real) = t.start("reset", &format!("pop{c}u1")).await;
        let (decoy_flow, decoy) = &decoy_with[&registered[c]];
        let pick = |b: &Value| {
            b["methods"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["type"] == kind)
                .unwrap()
                .clone()
        };
        let (real_m, decoy_m) = (pick(&real), pick(decoy));
        if kind == "questions" {
            assert_eq!(
                real_m["hint"], decoy_m["hint"],
                "a decoy's questions hint says how many were registered, like a real one's"
            );
            assert_eq!(
                real_m["questions"].as_array().unwrap().len(),
                decoy_m["questions"].as_array().unwrap().len()
            );
        }
        let real_answer = t.post("/api/v1/flows/verify", wrong(&real_flow, &real_m)).await;
        let decoy_answer = t.post("/api/v1/flows/verify", wrong(decoy_flow, &decoy_m)).await;
        assert_eq!(real_answer.0, 400, "{}", real_answer.1);
        assert_eq!(real_answer, decoy_answer, "{kind}");
    }
}
