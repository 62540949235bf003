#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The SMS / voice senders against the testkit's fake providers and SMTP sink.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::clock::{FixedClock, OsRng, SystemClock};
use gatehouse_core::ports::{Clock as _, PhoneChannel, PhoneMessage, PhoneSender, SendError};
use gatehouse_notify::{
    EmailGatewaySender, EmailGatewaySettings, SmtpSettings, SmtpTransport, TwilioSender, TwilioSettings,
    WebhookSender, WebhookSettings,
};
use gatehouse_testkit::{FakeTwilio, FakeWebhook, SmtpSink, TwilioFailure};
use secrecy::SecretString;

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "tw-auth-token-7f3a9c";
const FROM: &str = "+15005550006";
const SERVICE: &str = "MG0123456789abcdef0123456789abcdef";
const TO: &str = "+4915112345678";
const HOOK_SECRET: &str = "hook-secret-5d1e8b2a";
const WAIT: Duration = Duration::from_secs(5);

fn sms(text: &str) -> PhoneMessage {
    PhoneMessage {
        to: TO.into(),
        channel: PhoneChannel::Sms,
        text: text.into(),
    }
}

fn call(text: &str) -> PhoneMessage {
    PhoneMessage {
        channel: PhoneChannel::Voice,
        ..sms(text)
    }
}

fn twilio_settings(fake: &FakeTwilio, token: &str) -> TwilioSettings {
    let mut s = TwilioSettings::new(SID, SecretString::from(token));
    s.base_url = fake.base_url();
    s.from = Some(FROM.into());
    s.timeout = Duration::from_secs(5);
    s
}

fn twilio(fake: &FakeTwilio) -> TwilioSender {
    TwilioSender::new(twilio_settings(fake, TOKEN)).unwrap()
}

fn rejected(result: Result<(), SendError>) -> String {
    match result {
        Err(SendError::Rejected(detail)) => detail,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

fn unavailable(result: Result<(), SendError>) -> String {
    match result {
        Err(SendError::Unavailable(detail)) => detail,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Twilio
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn twilio_sends_an_sms() {
    gatehouse_testkit::init_test_tracing();
    let fake = FakeTwilio::start(SID, TOKEN).await.unwrap();
    let sender = twilio(&fake);
    assert_eq!(sender.name(), "twilio");
    assert_eq!(sender.channels(), [PhoneChannel::Sms, PhoneChannel::Voice]);

    sender
        .send(&sms("Your Gatehouse code is 482913. It expires in 15 minutes."))
        .await
        .unwrap();
    fake.wait_for(1, WAIT).await.unwrap();
    let messages = fake.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].to, TO);
    assert_eq!(messages[0].from.as_deref(), Some(FROM));
    assert_eq!(messages[0].messaging_service_sid, None);
    assert_eq!(
        messages[0].body,
        "Your Gatehouse code is 482913. It expires in 15 minutes."
    );
    assert_eq!(fake.last_code_to(TO).as_deref(), Some("482913"));
}

#[tokio::test]
async fn twilio_sends_through_a_messaging_service_which_cannot_call() {
    let fake = FakeTwilio::start(SID, TOKEN).await.unwrap();
    let sender = TwilioSender::new(TwilioSettings {
        from: None,
        messaging_service_sid: Some(SERVICE.into()),
        ..twilio_settings(&fake, TOKEN)
    })
    .unwrap();
    assert_eq!(sender.channels(), [PhoneChannel::Sms]);
    sender.send(&sms("Code 123456")).await.unwrap();
    let messages = fake.messages();
    assert_eq!(messages[0].messaging_service_sid.as_deref(), Some(SERVICE));
    assert_eq!(messages[0].from, None);

    assert_eq!(
        sender.send(&call("Code 123456")).await,
        Err(SendError::Unsupported("call"))
    );
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn twilio_places_a_call_reading_the_code_digit_by_digit() {
    let fake = FakeTwilio::start(SID, TOKEN).await.unwrap();
    let sender = twilio(&fake);
    sender
        .send(&call("Your <Gatehouse> & \"reset\" code is 705318"))
        .await
        .unwrap();
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].to, TO);
    assert_eq!(calls[0].from, FROM);
    assert!(
        calls[0].twiml.starts_with("<Response><Say loop=\"2\">"),
        "{}",
        calls[0].twiml
    );
    assert!(
        calls[0]
            .twiml
            .contains("&lt;Gatehouse&gt; &amp; &quot;reset&quot;"),
        "{}",
        calls[0].twiml
    );
    assert_eq!(
        calls[0].spoken,
        "Your <Gatehouse> & \"reset\" code is 7, 0, 5, 3, 1, 8."
    );
    assert_eq!(fake.last_code_to(TO).as_deref(), Some("705318"));
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn twilio_wrong_token_is_rejected_without_the_token_in_the_error() {
    let fake = FakeTwilio::start(SID, TOKEN).await.unwrap();
    let wrong = "wrong-token-9c8b7a";
    let sender = TwilioSender::new(twilio_settings(&fake, wrong)).unwrap();
    let result = sender.send(&sms("Code 123456")).await;
    let text = result.clone().unwrap_err().to_string();
    let detail = rejected(result);
    assert!(detail.contains("20003"), "{detail}");
    assert!(detail.contains("Authenticate"), "{detail}");
    for secret in [wrong, TOKEN] {
        assert!(!text.contains(secret), "{text}");
        assert!(!format!("{sender:?}").contains(secret));
    }
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn twilio_refuses_numbers_that_are_not_e164_without_a_request() {
    let fake = FakeTwilio::start(SID, TOKEN).await.unwrap();
    let sender = twilio(&fake);
    for to in [
        "015112345678",
        "4915112345678",
        "+49 151 12345678",
        "+1234567",
        "",
        "+0123456789",
    ] {
        for channel in [PhoneChannel::Sms, PhoneChannel::Voice] {
            let message = PhoneMessage {
                to: to.into(),
                channel,
                text: "Code 123456".into(),
            };
            let detail = rejected(sender.send(&message).await);
            assert!(detail.contains("E.164"), "{detail}");
        }
    }
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test]
async fn twilio_outages_are_unavailable() {
    let fake = FakeTwilio::start(SID, TOKEN).await.unwrap();
    let sender = twilio(&fake);
    fake.fail_next(1, TwilioFailure::Unavailable);
    fake.fail_next(1, TwilioFailure::TooManyRequests);
    fake.fail_next(
        1,
        TwilioFailure::Error {
            status: 500,
            code: 20500,
            message: "Internal Server Error".into(),
        },
    );
    let detail = unavailable(sender.send(&sms("Code 123456")).await);
    assert!(detail.contains("503"), "{detail}");
    let detail = unavailable(sender.send(&sms("Code 123456")).await);
    assert!(detail.contains("429"), "{detail}");
    let detail = unavailable(sender.send(&call("Code 123456")).await);
    assert!(detail.contains("500"), "{detail}");
    // The provider is back.
    sender.send(&sms("Code 123456")).await.unwrap();
    assert_eq!(fake.messages().len(), 1);
    assert_eq!(fake.request_count(), 4);
}

#[tokio::test]
async fn twilio_errors_are_rejected_with_twilios_message() {
    let fake = FakeTwilio::start(SID, TOKEN).await.unwrap();
    let sender = twilio(&fake);
    fake.fail_next(
        1,
        TwilioFailure::bad_request(21610, "Attempt to send to unsubscribed recipient"),
    );
    let detail = rejected(sender.send(&sms("Code 123456")).await);
    assert!(detail.contains("21610"), "{detail}");
    assert!(
        detail.contains("Attempt to send to unsubscribed recipient"),
        "{detail}"
    );

    // Twilio's messages name the number: the error masks it.
    fake.fail_next(
        1,
        TwilioFailure::bad_request(
            21211,
            format!("The 'To' number {TO} is not a valid phone number."),
        ),
    );
    let detail = rejected(sender.send(&sms("Code 123456")).await);
    assert!(detail.contains("21211"), "{detail}");
    assert!(!detail.contains("15112345678"), "{detail}");
    assert!(detail.contains("…78"), "{detail}");
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn twilio_timeouts_and_refused_connections_are_unavailable() {
    let fake = FakeTwilio::start(SID, TOKEN).await.unwrap();
    fake.set_delay(Duration::from_secs(3));
    let sender = TwilioSender::new(TwilioSettings {
        timeout: Duration::from_millis(200),
        ..twilio_settings(&fake, TOKEN)
    })
    .unwrap();
    let detail = unavailable(sender.send(&sms("Code 123456")).await);
    assert!(detail.contains("no answer within 200 ms"), "{detail}");

    let port = gatehouse_testkit::free_port().unwrap();
    let mut settings = twilio_settings(&fake, TOKEN);
    settings.base_url = format!("http://127.0.0.1:{port}/").parse().unwrap();
    let sender = TwilioSender::new(settings).unwrap();
    unavailable(sender.send(&sms("Code 123456")).await);
}

// ---------------------------------------------------------------------------------------------
// Signed webhook
// ---------------------------------------------------------------------------------------------

fn webhook_settings(hook: &FakeWebhook, secret: &str) -> WebhookSettings {
    WebhookSettings {
        url: hook.url(),
        secret: SecretString::from(secret),
        channels: vec![PhoneChannel::Sms, PhoneChannel::Voice],
        timeout: Duration::from_secs(5),
    }
}

fn webhook(hook: &FakeWebhook, secret: &str) -> WebhookSender {
    WebhookSender::new(
        webhook_settings(hook, secret),
        Arc::new(SystemClock),
        Arc::new(OsRng),
    )
    .unwrap()
}

#[tokio::test]
async fn webhook_delivers_signed_sms_and_voice() {
    gatehouse_testkit::init_test_tracing();
    let hook = FakeWebhook::start(HOOK_SECRET).await.unwrap();
    let sender = webhook(&hook, HOOK_SECRET);
    assert_eq!(sender.name(), "webhook");
    assert_eq!(sender.channels(), [PhoneChannel::Sms, PhoneChannel::Voice]);
    let before = SystemClock.now().unix_timestamp();

    sender.send(&sms("Your code is 246810")).await.unwrap();
    sender.send(&call("Your code is 135791")).await.unwrap();
    // The fake only records what carried a valid signature and a fresh timestamp.
    hook.wait_for(2, WAIT).await.unwrap();
    let messages = hook.messages();
    assert_eq!(messages[0].to, TO);
    assert_eq!(messages[0].channel, "sms");
    assert_eq!(messages[0].text, "Your code is 246810");
    assert_eq!(messages[1].channel, "voice");
    assert_eq!(messages[1].text, "Your code is 135791");
    for m in &messages {
        assert_eq!(m.id.len(), 32, "{}", m.id);
        assert!(m.id.bytes().all(|b| b.is_ascii_hexdigit()), "{}", m.id);
        assert!(m.timestamp >= before && m.timestamp <= SystemClock.now().unix_timestamp());
    }
    assert_ne!(messages[0].id, messages[1].id);
    assert_eq!(hook.last_code_to(TO).as_deref(), Some("135791"));
    assert!(hook.rejections().is_empty());
}

#[tokio::test]
async fn webhook_with_the_wrong_secret_is_rejected() {
    let hook = FakeWebhook::start(HOOK_SECRET).await.unwrap();
    let wrong = "not-the-hook-secret-1234";
    let sender = webhook(&hook, wrong);
    let result = sender.send(&sms("Code 123456")).await;
    let text = result.clone().unwrap_err().to_string();
    let detail = rejected(result);
    assert!(detail.contains("signature"), "{detail}");
    assert!(!text.contains(wrong) && !text.contains(HOOK_SECRET), "{text}");
    assert!(!format!("{sender:?}").contains(wrong));
    assert_eq!(hook.rejections(), ["bad signature"]);
    assert!(hook.messages().is_empty());
}

#[tokio::test]
async fn webhook_with_a_stale_clock_is_rejected() {
    let hook = FakeWebhook::start(HOOK_SECRET).await.unwrap();
    let ten_minutes_ago = SystemClock.now() - time::Duration::minutes(10);
    let sender = WebhookSender::new(
        webhook_settings(&hook, HOOK_SECRET),
        Arc::new(FixedClock::new(ten_minutes_ago)),
        Arc::new(OsRng),
    )
    .unwrap();
    rejected(sender.send(&sms("Code 123456")).await);
    assert!(hook.rejections()[0].contains("stale"), "{:?}", hook.rejections());
}

#[tokio::test]
async fn webhook_refuses_bad_numbers_and_channels_it_was_not_given() {
    let hook = FakeWebhook::start(HOOK_SECRET).await.unwrap();
    let sender = WebhookSender::new(
        WebhookSettings {
            channels: vec![PhoneChannel::Sms, PhoneChannel::Sms],
            ..webhook_settings(&hook, HOOK_SECRET)
        },
        Arc::new(SystemClock),
        Arc::new(OsRng),
    )
    .unwrap();
    assert_eq!(sender.channels(), [PhoneChannel::Sms]);
    assert_eq!(
        sender.send(&call("Code 123456")).await,
        Err(SendError::Unsupported("call"))
    );
    let detail = rejected(
        sender
            .send(&PhoneMessage {
                to: "0151 12345678".into(),
                ..sms("Code 123456")
            })
            .await,
    );
    assert!(detail.contains("E.164"), "{detail}");
    assert_eq!(hook.request_count(), 0);
}

#[tokio::test]
async fn webhook_outages_are_unavailable() {
    let hook = FakeWebhook::start(HOOK_SECRET).await.unwrap();
    let sender = webhook(&hook, HOOK_SECRET);
    hook.fail_next(1, 503);
    hook.fail_next(1, 429);
    hook.fail_next(1, 422);
    assert!(unavailable(sender.send(&sms("Code 123456")).await).contains("503"));
    assert!(unavailable(sender.send(&sms("Code 123456")).await).contains("429"));
    assert!(rejected(sender.send(&sms("Code 123456")).await).contains("422"));
    sender.send(&sms("Code 123456")).await.unwrap();
    assert_eq!(hook.messages().len(), 1);

    hook.set_delay(Duration::from_secs(3));
    let slow = WebhookSender::new(
        WebhookSettings {
            timeout: Duration::from_millis(200),
            ..webhook_settings(&hook, HOOK_SECRET)
        },
        Arc::new(SystemClock),
        Arc::new(OsRng),
    )
    .unwrap();
    unavailable(slow.send(&sms("Code 123456")).await);
}

#[tokio::test]
async fn webhook_settings_are_checked() {
    let hook = FakeWebhook::start(HOOK_SECRET).await.unwrap();
    let new = |s: WebhookSettings| WebhookSender::new(s, Arc::new(SystemClock), Arc::new(OsRng));
    assert!(new(webhook_settings(&hook, "short")).is_err());
    assert!(new(WebhookSettings {
        channels: vec![],
        ..webhook_settings(&hook, HOOK_SECRET)
    })
    .is_err());
    assert!(new(WebhookSettings {
        url: "ftp://example.net/hook".parse().unwrap(),
        ..webhook_settings(&hook, HOOK_SECRET)
    })
    .is_err());
}

// ---------------------------------------------------------------------------------------------
// Email-to-SMS gateway
// ---------------------------------------------------------------------------------------------

async fn gateway(sink: &SmtpSink, address: &str) -> EmailGatewaySender {
    let transport = SmtpTransport::new(&SmtpSettings {
        url: sink.url(),
        from: "Gatehouse <noreply@gatehouse.example>".into(),
        username: None,
        password: None,
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    EmailGatewaySender::new(
        EmailGatewaySettings {
            address: address.into(),
            subject: "Gatehouse".into(),
        },
        Arc::new(transport),
    )
    .unwrap()
}

#[tokio::test]
async fn gateway_mails_the_text_to_the_number_at_the_domain() {
    gatehouse_testkit::init_test_tracing();
    let sink = SmtpSink::start().await.unwrap();
    let sender = gateway(&sink, "{number}@sms.example.net").await;
    assert_eq!(sender.name(), "email-gateway");
    assert_eq!(sender.channels(), [PhoneChannel::Sms]);
    sender.send(&sms("Your Gatehouse code is 864209.")).await.unwrap();
    let mail = sink
        .wait_for_message_to("4915112345678@sms.example.net", WAIT)
        .await
        .unwrap();
    assert_eq!(mail.rcpt_to, ["4915112345678@sms.example.net"]);
    assert_eq!(mail.mail_from, "noreply@gatehouse.example");
    assert_eq!(mail.subject().as_deref(), Some("Gatehouse"));
    assert!(
        mail.text_body().contains("Your Gatehouse code is 864209."),
        "{}",
        mail.text_body()
    );
    assert!(mail.html_body().is_none());
}

#[tokio::test]
async fn gateway_template_can_keep_the_plus() {
    let sink = SmtpSink::start().await.unwrap();
    let sender = gateway(&sink, "{e164}@sms.example.net").await;
    sender.send(&sms("Code 123456")).await.unwrap();
    sink.wait_for_message_to("+4915112345678@sms.example.net", WAIT)
        .await
        .unwrap();
}

#[tokio::test]
async fn gateway_cannot_call_and_refuses_bad_numbers() {
    let sink = SmtpSink::start().await.unwrap();
    let sender = gateway(&sink, "{number}@sms.example.net").await;
    assert_eq!(
        sender.send(&call("Code 123456")).await,
        Err(SendError::Unsupported("call"))
    );
    let detail = rejected(
        sender
            .send(&PhoneMessage {
                to: "4915112345678".into(),
                ..sms("Code 123456")
            })
            .await,
    );
    assert!(detail.contains("E.164"), "{detail}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(sink.messages().is_empty());
    assert_eq!(sink.connection_count(), 0);
}

#[tokio::test]
async fn gateway_mail_failures_are_unavailable() {
    let sink = SmtpSink::start().await.unwrap();
    let sender = gateway(&sink, "{number}@sms.example.net").await;
    sink.stop().await;
    let detail = unavailable(sender.send(&sms("Code 123456")).await);
    assert!(detail.starts_with("email gateway:"), "{detail}");
    assert!(!detail.contains("123456"), "{detail}");
}
