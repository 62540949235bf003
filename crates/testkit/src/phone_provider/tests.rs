use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::clock::{FixedClock, SystemClock};
use gatehouse_core::ports::Clock as _;
use hmac::{Hmac, Mac as _};
use serde_json::{json, Value};
use sha2::Sha256;

use super::twilio::parse_twiml;
use super::*;

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-auth-token";
const SECRET: &str = "webhook-secret-0123456789";
const WAIT: Duration = Duration::from_secs(5);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn endpoint(fake: &FakeTwilio, account: &str, resource: &str) -> String {
    format!("{}2010-04-01/Accounts/{account}/{resource}", fake.base_url())
}

async fn post_form(
    fake: &FakeTwilio,
    resource: &str,
    auth: (&str, &str),
    form: &[(&str, &str)],
) -> (u16, Value) {
    let response = client()
        .post(endpoint(fake, SID, resource))
        .basic_auth(auth.0, Some(auth.1))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn assert_twilio_error(answer: &(u16, Value), status: u16, code: u64) {
    assert_eq!(answer.0, status, "{answer:?}");
    assert_eq!(answer.1["code"], code, "{answer:?}");
    assert_eq!(answer.1["status"], status, "{answer:?}");
    assert_eq!(
        answer.1["more_info"],
        format!("https://www.twilio.com/docs/errors/{code}"),
        "{answer:?}"
    );
    assert!(
        answer.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{answer:?}"
    );
}

fn assert_sid(value: &Value, prefix: &str) {
    let sid = value.as_str().unwrap();
    assert!(sid.starts_with(prefix), "{sid}");
    assert_eq!(sid.len(), 34, "{sid}");
    assert!(sid[2..].bytes().all(|b| b.is_ascii_hexdigit()), "{sid}");
}

#[tokio::test]
async fn twilio_accepts_an_sms_and_answers_like_twilio() {
    let fake = FakeTwilio::start(SID, TOKEN).await.unwrap();
    let answer = post_form(
        &fake,
        "Messages.json",
        (SID, TOKEN),
        &[
            ("To", "+4915112345678"),
            ("From", "+15005550006"),
            ("Body", "Code 123 456"),
        ],
    )
    .await;
    assert_eq!(answer.0, 201, "{answer:?}");
    assert_sid(&answer.1["sid"], "SM");
    assert_eq!(answer.1["status"], "queued");
    assert_eq!(answer.1["to"], "+4915112345678");
    assert_eq!(answer.1["from"], "+15005550006");
    assert_eq!(answer.1["body"], "Code 123 456");
    assert_eq!(answer.1["account_sid"], SID);
    assert!(answer.1["date_created"].as_str().unwrap().ends_with("+0000"));

    let messages = fake.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].sid, answer.1["sid"]);
    assert_eq!(messages[0].from.as_deref(), Some("+15005550006"));
    assert_eq!(fake.last_code_to("+4915112345678").as_deref(), Some("123456"));
    assert_eq!(fake.last_code_to("+4915100000000"), None);
    fake.wait_for(1, WAIT).await.unwrap();
    assert!(fake.wait_for(2, Duration::from_millis(50)).await.is_err());
}

#[tokio::test]
async fn twilio_accepts_a_messaging_service_and_distinct_sids() {
    let fake = FakeTwilio::start(SID, TOKEN).await.unwrap();
    let service = "MG0123456789abcdef0123456789abcdef";
    let form = [
        ("To", "+4915112345678"),
        ("MessagingServiceSid", service),
        ("Body", "hi"),
    ];
    let a = post_form(&fake, "Messages.json", (SID, TOKEN), &form).await;
    let b = post_form(&fake, "Messages.json", (SID, TOKEN), &form).await;
    assert_eq!(a.0, 201, "{a:?}");
    assert_eq!(a.1["status"], "accepted");
    assert_eq!(a.1["messaging_service_sid"], service);
    assert_ne!(a.1["sid"], b.1["sid"]);
    let bad = post_form(
        &fake,
        "Messages.json",
        (SID, TOKEN),
        &[
            ("To", "+4915112345678"),
            ("MessagingServiceSid", "MG12"),
            ("Body", "hi"),
        ],
    )
    .await;
    assert_twilio_error(&bad, 400, 21701);
}

#[tokio::test]
async fn twilio_refuses_bad_credentials_and_other_accounts() {
    let fake = FakeTwilio::start(SID, TOKEN).await.unwrap();
    let form = [("To", "+4915112345678"), ("From", "+15005550006"), ("Body", "x")];
    let wrong_token = post_form(&fake, "Messages.json", (SID, "nope"), &form).await;
    assert_twilio_error(&wrong_token, 401, 20003);
    assert_eq!(wrong_token.1["message"], "Authenticate");

    let no_auth = client()
        .post(endpoint(&fake, SID, "Messages.json"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(no_auth.status().as_u16(), 401);
    assert_eq!(
        no_auth.headers()["www-authenticate"].to_str().unwrap(),
        "Basic realm=\"Twilio API\""
    );

    let other = "AC99999999999999999999999999999999";
    let other_path = client()
        .post(endpoint(&fake, other, "Messages.json"))
        .basic_auth(SID, Some(TOKEN))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(other_path.status().as_u16(), 401);
    let other_user = post_form(&fake, "Messages.json", (other, TOKEN), &form).await;
    assert_twilio_error(&other_user, 401, 20003);

    assert!(fake.messages().is_empty());
    assert_eq!(fake.request_count(), 4);
}

#[tokio::test]
async fn twilio_checks_parameters() {
    let fake = FakeTwilio::start(SID, TOKEN).await.unwrap();
    let auth = (SID, TOKEN);
    let to = ("To", "+4915112345678");
    let from = ("From", "+15005550006");
    let body = ("Body", "hello");
    let cases: Vec<(Vec<(&str, &str)>, u64)> = vec![
        (vec![from, body], 21604),
        (vec![to, body], 21603),
        (vec![to, from], 21602),
        (vec![to, from, ("Body", "")], 21602),
        (vec![("To", "015112345678"), from, body], 21211),
        (vec![("To", "+49 151 12345678"), from, body], 21211),
        (vec![to, ("From", "not a valid sender id"), body], 21212),
    ];
    for (form, code) in cases {
        let answer = post_form(&fake, "Messages.json", auth, &form).await;
        assert_twilio_error(&answer, 400, code);
    }
    let long = "x".repeat(1601);
    let answer = post_form(&fake, "Messages.json", auth, &[to, from, ("Body", &long)]).await;
    assert_twilio_error(&answer, 400, 21617);
    let alphanumeric = post_form(&fake, "Messages.json", auth, &[to, ("From", "Gatehouse"), body]).await;
    assert_eq!(alphanumeric.0, 201, "{alphanumeric:?}");
    assert_eq!(fake.messages().len(), 1);
}

#[tokio::test]
async fn twilio_wants_a_form_encoded_body() {
    let fake = FakeTwilio::start(SID, TOKEN).await.unwrap();
    let response = client()
        .post(endpoint(&fake, SID, "Messages.json"))
        .basic_auth(SID, Some(TOKEN))
        .json(&json!({"To": "+4915112345678", "From": "+15005550006", "Body": "x"}))
        .send()
        .await
        .unwrap();
    let answer = (
        response.status().as_u16(),
        response.json::<Value>().await.unwrap(),
    );
    assert_twilio_error(&answer, 400, 21604);
    assert!(answer.1["message"]
        .as_str()
        .unwrap()
        .contains("x-www-form-urlencoded"));
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn twilio_paths_and_methods() {
    let fake = FakeTwilio::start(SID, TOKEN).await.unwrap();
    let get = client()
        .get(endpoint(&fake, SID, "Messages.json"))
        .basic_auth(SID, Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 405);
    let unknown = client()
        .post(endpoint(&fake, SID, "Faxes.json"))
        .basic_auth(SID, Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    assert_eq!(unknown.json::<Value>().await.unwrap()["code"], 20404);
}

#[tokio::test]
async fn twilio_places_a_call_and_reads_its_twiml() {
    let fake = FakeTwilio::start(SID, TOKEN).await.unwrap();
    let twiml = "<?xml version=\"1.0\"?><Response><Say loop=\"2\" voice='alice'>Code 1, 2, 3, 4, 5, 6 &amp; \
                 bye.</Say><Pause length=\"1\"/></Response>";
    let answer = post_form(
        &fake,
        "Calls.json",
        (SID, TOKEN),
        &[
            ("To", "+4915112345678"),
            ("From", "+15005550006"),
            ("Twiml", twiml),
        ],
    )
    .await;
    assert_eq!(answer.0, 201, "{answer:?}");
    assert_sid(&answer.1["sid"], "CA");
    assert_eq!(answer.1["status"], "queued");
    assert_eq!(answer.1["to"], "+4915112345678");
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].twiml, twiml);
    assert_eq!(calls[0].spoken, "Code 1, 2, 3, 4, 5, 6 & bye.");
    assert_eq!(fake.last_code_to("+4915112345678").as_deref(), Some("123456"));
}

#[tokio::test]
async fn twilio_checks_call_parameters() {
    let fake = FakeTwilio::start(SID, TOKEN).await.unwrap();
    let auth = (SID, TOKEN);
    let to = ("To", "+4915112345678");
    let from = ("From", "+15005550006");
    let twiml = ("Twiml", "<Response><Say>hi</Say></Response>");
    let cases: Vec<(Vec<(&str, &str)>, u64)> = vec![
        (vec![from, twiml], 21201),
        (vec![to, twiml], 21213),
        (vec![to, from], 21200),
        (vec![to, from, ("Url", "https://example.net/twiml")], 21200),
        (vec![("To", "4915112345678"), from, twiml], 21211),
        (vec![to, ("From", "Gatehouse"), twiml], 21212),
        (
            vec![to, from, ("Twiml", "<Response><Say>a & b</Say></Response>")],
            12100,
        ),
        (vec![to, from, ("Twiml", "<Response><Say>hi</Response>")], 12100),
        (vec![to, from, ("Twiml", "<Say>hi</Say>")], 12100),
    ];
    for (form, code) in cases {
        let answer = post_form(&fake, "Calls.json", auth, &form).await;
        assert_twilio_error(&answer, 400, code);
    }
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn twilio_injected_failures_come_first_and_run_out() {
    let fake = FakeTwilio::start(SID, TOKEN).await.unwrap();
    fake.fail_next(1, TwilioFailure::Unavailable);
    fake.fail_next(1, TwilioFailure::TooManyRequests);
    fake.fail_next(
        1,
        TwilioFailure::bad_request(21610, "Attempt to send to unsubscribed recipient"),
    );
    let form = [("To", "+4915112345678"), ("From", "+15005550006"), ("Body", "x")];
    assert_twilio_error(
        &post_form(&fake, "Messages.json", (SID, TOKEN), &form).await,
        503,
        20503,
    );
    assert_twilio_error(
        &post_form(&fake, "Messages.json", (SID, TOKEN), &form).await,
        429,
        20429,
    );
    let refused = post_form(&fake, "Messages.json", (SID, TOKEN), &form).await;
    assert_twilio_error(&refused, 400, 21610);
    assert_eq!(refused.1["message"], "Attempt to send to unsubscribed recipient");
    assert_eq!(
        post_form(&fake, "Messages.json", (SID, TOKEN), &form).await.0,
        201
    );
    assert_eq!(fake.messages().len(), 1);
    assert_eq!(fake.request_count(), 4);
}

#[tokio::test]
async fn twilio_delay_holds_the_answer() {
    let fake = FakeTwilio::start(SID, TOKEN).await.unwrap();
    fake.set_delay(Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    let answer = post_form(
        &fake,
        "Messages.json",
        (SID, TOKEN),
        &[("To", "+4915112345678"), ("From", "+15005550006"), ("Body", "x")],
    )
    .await;
    assert_eq!(answer.0, 201);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn twiml_parser() {
    assert_eq!(parse_twiml("<Response/>").unwrap(), "");
    assert_eq!(
        parse_twiml("<Response><Say>a &lt;b&gt; &#65;&#x42;</Say><Say>c</Say></Response>").unwrap(),
        "a <b> AB c"
    );
    assert_eq!(
        parse_twiml("<!-- x --><Response>\n  <Say language=\"en-GB\">hi</Say>\n</Response>\n").unwrap(),
        "hi"
    );
    for bad in [
        "",
        "hello",
        "<Response>",
        "<Response></Say>",
        "<Response></Response><Response/>",
        "<Response><Say>&nbsp;</Say></Response>",
        "<Response><Say loop=2>x</Say></Response>",
        "<Response><Say loop=\"2\" loop=\"3\">x</Say></Response>",
        "<Response><Say loop=\"2\"voice=\"a\">x</Say></Response>",
        "<Response><Say x=\"<\">x</Say></Response>",
        "text<Response/>",
    ] {
        assert!(parse_twiml(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn codes_are_found_in_texts() {
    let cases = [
        ("Your Gatehouse code is 123456.", Some("123456")),
        ("Code 123 456, valid 15 minutes", Some("123456")),
        ("Code 123456, valid 15 minutes", Some("123456")),
        (
            "Your code is 1, 2, 3, 4, 5, 6. Again: 1, 2, 3, 4, 5, 6.",
            Some("123456"),
        ),
        ("1-2-3-4-5-6-7-8", Some("12345678")),
        ("For +4915112345678: 654321", Some("654321")),
        ("valid 15 minutes", None),
        ("12345", None),
        ("12345678901", None),
        ("", None),
    ];
    for (text, code) in cases {
        assert_eq!(extract_code(text).as_deref(), code, "{text:?}");
    }
}

#[test]
fn e164() {
    assert!(is_e164("+4915112345678"));
    assert!(!is_e164("4915112345678"));
    assert!(!is_e164("+0123456789"));
    assert!(!is_e164("+1234567"));
}

fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn hook_body(ts: i64, id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "to": "+4915112345678", "channel": "sms", "text": "Your code is 123456", "id": id, "timestamp": ts,
    }))
    .unwrap()
}

async fn post_hook(hook: &FakeWebhook, ts: &str, signature: &str, body: Vec<u8>) -> u16 {
    client()
        .post(hook.url())
        .header("content-type", "application/json")
        .header("x-gatehouse-timestamp", ts)
        .header("x-gatehouse-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn webhook_accepts_a_signed_message_once() {
    let hook = FakeWebhook::start(SECRET).await.unwrap();
    let ts = SystemClock.now().unix_timestamp();
    let body = hook_body(ts, "id-1");
    let sig = sign(SECRET, &ts.to_string(), &body);
    assert_eq!(post_hook(&hook, &ts.to_string(), &sig, body.clone()).await, 200);
    hook.wait_for(1, WAIT).await.unwrap();
    let messages = hook.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].to, "+4915112345678");
    assert_eq!(messages[0].channel, "sms");
    assert_eq!(messages[0].id, "id-1");
    assert_eq!(messages[0].timestamp, ts);
    assert_eq!(hook.last_code_to("+4915112345678").as_deref(), Some("123456"));
    // The same id again is a replay.
    assert_eq!(post_hook(&hook, &ts.to_string(), &sig, body).await, 409);
    assert_eq!(hook.messages().len(), 1);
}

#[tokio::test]
async fn webhook_refuses_bad_signatures_and_stale_timestamps() {
    let hook = FakeWebhook::start(SECRET).await.unwrap();
    let ts = SystemClock.now().unix_timestamp();
    let body = hook_body(ts, "id-2");
    let t = ts.to_string();
    assert_eq!(
        post_hook(&hook, &t, &sign("other secret", &t, &body), body.clone()).await,
        401
    );
    assert_eq!(post_hook(&hook, &t, "sha256=00", body.clone()).await, 401);
    assert_eq!(post_hook(&hook, &t, "md5=abc", body.clone()).await, 401);
    // Signed over another body.
    let sig = sign(SECRET, &t, &hook_body(ts, "id-3"));
    assert_eq!(post_hook(&hook, &t, &sig, body).await, 401);
    // Correctly signed but six minutes old.
    let old = ts - 360;
    let old_body = hook_body(old, "id-4");
    let sig = sign(SECRET, &old.to_string(), &old_body);
    assert_eq!(post_hook(&hook, &old.to_string(), &sig, old_body).await, 401);
    assert!(hook.messages().is_empty());
    let rejections = hook.rejections();
    assert_eq!(rejections.len(), 5, "{rejections:?}");
    assert!(rejections[4].contains("stale"), "{rejections:?}");
}

#[tokio::test]
async fn webhook_checks_the_body_shape() {
    let hook = FakeWebhook::start(SECRET).await.unwrap();
    let ts = SystemClock.now().unix_timestamp();
    let t = ts.to_string();
    let bodies = [
        json!({"to": "+4915112345678", "channel": "sms", "text": "x", "id": "a"}),
        json!({"to": "+4915112345678", "channel": "fax", "text": "x", "id": "a", "timestamp": ts}),
        json!({"to": "015112345678", "channel": "sms", "text": "x", "id": "a", "timestamp": ts}),
        json!({"to": "+4915112345678", "channel": "sms", "text": " ", "id": "a", "timestamp": ts}),
        json!({"to": "+4915112345678", "channel": "sms", "text": "x", "id": "a", "timestamp": ts + 1}),
        json!({"to": "+4915112345678", "channel": "sms", "text": "x", "id": "a", "timestamp": ts, "x": 1}),
        json!(["not", "an", "object"]),
    ];
    for body in bodies {
        let body = serde_json::to_vec(&body).unwrap();
        let sig = sign(SECRET, &t, &body);
        assert_eq!(post_hook(&hook, &t, &sig, body).await, 400);
    }
    let form = client()
        .post(hook.url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body("to=%2B4915112345678")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status().as_u16(), 415);
    assert!(hook.messages().is_empty());
}

#[tokio::test]
async fn webhook_uses_its_clock_and_injected_failures() {
    let past = time::macros::datetime!(2020-01-01 00:00 UTC);
    let hook = FakeWebhook::start_with_clock(SECRET, Arc::new(FixedClock::new(past)))
        .await
        .unwrap();
    let ts = past.unix_timestamp() + 200;
    let body = hook_body(ts, "id-5");
    let sig = sign(SECRET, &ts.to_string(), &body);
    hook.fail_next(1, 503);
    assert_eq!(post_hook(&hook, &ts.to_string(), &sig, body.clone()).await, 503);
    assert_eq!(post_hook(&hook, &ts.to_string(), &sig, body).await, 200);
    assert_eq!(hook.request_count(), 2);
}
