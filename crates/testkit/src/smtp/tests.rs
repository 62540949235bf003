use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::*;

const WAIT: Duration = Duration::from_secs(5);

fn transport(port: u16) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .timeout(Some(Duration::from_secs(5)))
        .pool_config(PoolConfig::new().max_size(1))
        .build()
}

fn from() -> Mailbox {
    "Gatehouse <noreply@gatehouse.example>".parse().unwrap()
}

fn plain(to: &str, subject: &str, body: &str) -> Message {
    Message::builder()
        .from(from())
        .to(to.parse().unwrap())
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body.to_owned())
        .unwrap()
}

#[tokio::test]
async fn two_mails_over_one_lettre_connection() {
    crate::init_test_tracing();
    let sink = SmtpSink::start().await.unwrap();
    assert_eq!(sink.url(), format!("smtp://127.0.0.1:{}", sink.port()));
    let smtp = transport(sink.port());

    smtp.send(plain("Alice@Example.org", "Your code", "gültig 123456"))
        .await
        .unwrap();
    let alice = sink.wait_for_message_to("alice@example.org", WAIT).await.unwrap();
    // lettre parks the connection in its pool from a spawned task; give it a
    // moment so the second mail goes over the same connection.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let html = Message::builder()
        .from(from())
        .to("bob@example.org".parse().unwrap())
        .subject("Passwort zurücksetzen – Bestätigung")
        .multipart(MultiPart::alternative_plain_html(
            "Hallo Bob,\r\nCode: 654321 ist gültig.\r\n.leading dot\r\n".to_owned(),
            "<p>Hallo Bob, Code: <b>654321</b></p>".to_owned(),
        ))
        .unwrap();
    smtp.send(html).await.unwrap();

    assert_eq!(alice.mail_from, "noreply@gatehouse.example");
    assert_eq!(alice.rcpt_to, ["Alice@Example.org"]);
    assert_eq!(alice.subject().as_deref(), Some("Your code"));
    assert!(alice.text_body().contains("gültig 123456"), "{}", alice.raw);
    assert_eq!(
        alice.header("from").as_deref(),
        Some("Gatehouse <noreply@gatehouse.example>")
    );
    assert_eq!(alice.html_body(), None);

    let bob = sink.wait_for_message_to("<BOB@example.org>", WAIT).await.unwrap();
    assert_eq!(
        bob.subject().as_deref(),
        Some("Passwort zurücksetzen – Bestätigung"),
        "{}",
        bob.raw
    );
    let text = bob.text_body();
    assert!(text.contains("Code: 654321 ist gültig."), "{text:?}\n{}", bob.raw);
    assert!(text.contains("\n.leading dot"), "{text:?}");
    assert!(!text.contains("<p>"), "{text:?}");
    assert!(bob.html_body().unwrap().contains("<b>654321</b>"));

    assert_eq!(sink.messages().len(), 2);
    assert_eq!(sink.messages_to("nobody@example.org").len(), 0);
    assert_eq!(sink.connection_count(), 1, "lettre should reuse its connection");
}

#[tokio::test]
async fn stop_refuses_connections_and_start_on_brings_it_back() {
    crate::init_test_tracing();
    let sink = SmtpSink::start().await.unwrap();
    let port = sink.port();
    let smtp = transport(port);
    smtp.send(plain("a@example.org", "one", "first")).await.unwrap();
    sink.wait_for_message_to("a@example.org", WAIT).await.unwrap();

    // lettre now holds an idle pooled connection; stop() must close it too.
    sink.stop().await;
    sink.stop().await;
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err());
    assert!(smtp.send(plain("a@example.org", "two", "lost")).await.is_err());
    assert_eq!(sink.messages().len(), 1, "messages stay readable after stop");

    let sink = SmtpSink::start_on(port).await.unwrap();
    assert_eq!(sink.port(), port);
    smtp.send(plain("a@example.org", "three", "back again"))
        .await
        .unwrap();
    let mail = sink.wait_for_message_to("a@example.org", WAIT).await.unwrap();
    assert_eq!(mail.subject().as_deref(), Some("three"));
    assert_eq!(sink.messages().len(), 1);

    drop(sink);
    // Drop aborts the tasks; the port is released shortly after.
    let again = SmtpSink::start_on(port).await.unwrap();
    assert_eq!(again.port(), port);
}

#[tokio::test]
async fn wait_times_out_naming_who_got_mail() {
    let sink = SmtpSink::start().await.unwrap();
    let err = sink
        .wait_for_message_to("x@example.org", Duration::from_millis(50))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no mail arrived"), "{err}");

    transport(sink.port())
        .send(plain("carol@example.org", "hi", "hello"))
        .await
        .unwrap();
    let all = sink
        .wait_for_count_to("carol@example.org", 1, WAIT)
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    let err = sink
        .wait_for_count_to("carol@example.org", 2, Duration::from_millis(60))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected 2 message(s) to carol@example.org"),
        "{err}"
    );
    assert!(err.contains("for: carol@example.org"), "{err}");
    sink.clear();
    assert!(sink.messages().is_empty());
}

fn captured(raw: &str) -> CapturedMail {
    CapturedMail {
        mail_from: "a@b".into(),
        rcpt_to: vec!["c@d".into()],
        raw: raw.replace('\n', "\r\n"),
    }
}

#[test]
fn decodes_transfer_encodings_and_encoded_words() {
    let qp = captured(
        "Subject: =?UTF-8?Q?Ihr_Code_=E2=80=93?=\n =?UTF-8?B?IGfDvGx0aWc=?=\n\
         X-Custom: folded\n\tvalue\nContent-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: quoted-printable\n\n\
         g=C3=BCltig 123456 and a soft=\n break\n",
    );
    assert_eq!(qp.subject().as_deref(), Some("Ihr Code – gültig"));
    assert_eq!(qp.header("x-custom").as_deref(), Some("folded value"));
    assert_eq!(qp.header("X-Missing"), None);
    assert_eq!(qp.text_body(), "gültig 123456 and a soft break\r\n");

    let b64 = captured(
        "Subject: plain\nContent-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: base64\n\nZ8O8bHRpZyAxMjM0NTY=\n",
    );
    assert_eq!(b64.text_body(), "gültig 123456");

    let eight_bit = captured(
        "Subject: x\nContent-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: 8bit\n\ngültig 123456\n",
    );
    assert!(eight_bit.text_body().contains("gültig 123456"));

    let alternative = captured(
        "Subject: alt\nMIME-Version: 1.0\n\
         Content-Type: multipart/alternative; boundary=\"XYZ\"\n\n\
         --XYZ\nContent-Type: text/html; charset=utf-8\n\n<p>html 1</p>\n\
         --XYZ\nContent-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: quoted-printable\n\nplain =3D 1\n--XYZ--\n",
    );
    assert_eq!(alternative.text_body().trim_end(), "plain = 1");
    assert!(alternative.is_to("C@D"));
}
