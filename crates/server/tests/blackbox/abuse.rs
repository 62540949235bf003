//! Abuse resistance through the real server: the client address comes from the socket unless a
//! trusted proxy says otherwise, links never follow the request's Host headers, and codes and flows
//! are single use under races.
use crate::harness::{code_in, spawn, spawn_with, TestApp, MAIL_WAIT, PUBLIC_URL};
use serde_json::{json, Value};

async fn last_flow_ip(t: &TestApp) -> Option<String> {
    let rows = t.core().app.audit_page(0, None, 10_000).await.unwrap();
    rows.iter()
        .rev()
        .find(|r| r.event.activity.as_str() == "flow_started")
        .and_then(|r| r.event.client_ip.map(|ip| ip.to_string()))
}

async fn start_with(t: &TestApp, headers: &[(&str, &str)]) -> Value {
    let mut req = t
        .http
        .post(format!("{}/api/v1/flows", t.base))
        .json(&json!({"kind": "reset", "login": "alice"}));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
    let direct = spawn().await;
    start_with(
        &direct,
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=198.51.100.1"),
        ],
    )
    .await;
    assert_eq!(
        last_flow_ip(&direct).await.as_deref(),
        Some("127.0.0.1"),
        "a client cannot pick its address"
    );

    let proxied = spawn_with(|raw| raw.server.trusted_proxies = vec!["127.0.0.1".into()]).await;
    start_with(&proxied, &[("x-forwarded-for", "1.2.3.4, 203.0.113.9")]).await;
    assert_eq!(last_flow_ip(&proxied).await.as_deref(), Some("203.0.113.9"));
    start_with(&proxied, &[("forwarded", "for=\"[2001:db8::5]:443\"")]).await;
    assert_eq!(last_flow_ip(&proxied).await.as_deref(), Some("2001:db8::5"));
}

#[tokio::test]
async fn links_come_only_from_public_url_whatever_the_request_headers_say() {
    let t = spawn().await;
    for i in 0..10 {
        t.add_user(
            &format!("user{i}"),
            Some("Original-Pass-Word-1"),
            Some(&format!("user{i}@home.example")),
        )
        .await;
    }
    let poison: [(&str, &str); 5] = [
        ("host", "evil.example"),
        ("x-forwarded-host", "evil.example"),
        ("forwarded", "host=evil.example;proto=http"),
        ("x-forwarded-proto", "http"),
        ("x-original-url", "http://evil.example/"),
    ];
    for n in 0..100 {
        let user = format!("user{}", n % 10);
        let (k, v) = poison[n % poison.len()];
        let resp = t
            .http
            .post(format!("{}/api/v1/flows", t.base))
            .header(k, v)
            .json(&json!({"kind": "reset", "login": user}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
        let b: Value = resp.json().await.unwrap();
        let resp = t
            .http
            .post(format!("{}/api/v1/flows/send", t.base))
            .header(k, v)
            .json(&json!({"flow": b["flow"], "method": b["methods"][0]["id"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
    }
    for i in 0..10 {
        let to = format!("user{i}@home.example");
        let mails = t.sink.wait_for_count_to(&to, 10, MAIL_WAIT).await.unwrap();
        for m in mails {
            let body = m.text_body();
            assert!(body.contains(PUBLIC_URL), "{body}");
            assert!(!body.contains("evil.example"), "{body}");
        }
    }
    assert_eq!(t.sink.messages().len(), 100);
}

#[tokio::test]
async fn one_code_and_one_flow_succeed_once_under_twenty_parallel_submissions() {
    let t = spawn().await;
    t.add_user("racer", Some("Original-Pass-Word-1"), Some("racer@home.example"))
        .await;
    let (flow, method, _) = t.start("reset", "racer").await;
    let code = t.send_and_read_code(&flow, &method, "racer@home.example").await;
    let verify = json!({"flow": flow, "method": method, "code": code});
    let results =
        futures::future::join_all((0..20).map(|_| t.post("/api/v1/flows/verify", verify.clone()))).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 1, "{results:?}");

    let set = json!({"flow": flow, "password": "Velvet-Lagoon-Orbit-42"});
    let results =
        futures::future::join_all((0..20).map(|_| t.post("/api/v1/flows/password", set.clone()))).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 1, "{results:?}");
    assert!(results.iter().all(|(s, _)| *s == 200 || *s == 409), "{results:?}");
    let resets = t
        .audit_activities()
        .await
        .iter()
        .filter(|a| a.as_str() == "password_reset")
        .count();
    assert_eq!(resets, 1);

    // A registration code too.
    let (_, b) = t.sign_in("racer", "Velvet-Lagoon-Orbit-42").await;
    let token = b["token"].as_str().unwrap().to_owned();
    let (s, b) = t
        .authed(
            reqwest::Method::POST,
            "/api/v1/me/methods",
            &token,
            Some(json!({"type": "email", "address": "racer.second@example.org"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();
    let mail = t
        .sink
        .wait_for_message_to("racer.second@example.org", MAIL_WAIT)
        .await
        .unwrap();
    let code = code_in(&mail);
    let path = format!("/api/v1/me/methods/{id}/verify");
    let results = futures::future::join_all(
        (0..20).map(|_| t.authed(reqwest::Method::POST, &path, &token, Some(json!({"code": code})))),
    )
    .await;
    assert_eq!(
        results.iter().filter(|(s, _)| *s == 200).count(),
        1,
        "{results:?}"
    );
}

#[tokio::test]
async fn a_reset_or_a_change_ends_the_users_other_portal_sessions() {
    let t = spawn().await;
    t.add_user("sess", Some("Original-Pass-Word-1"), Some("sess@home.example"))
        .await;
    let me = |token: String| {
        let t = &t;
        async move {
            t.authed(reqwest::Method::GET, "/api/v1/me/methods", &token, None)
                .await
                .0
        }
    };
    let (_, b) = t.sign_in("sess", "Original-Pass-Word-1").await;
    let before_reset = b["token"].as_str().unwrap().to_owned();
    assert_eq!(me(before_reset.clone()).await, 200);

    let (flow, method, _) = t.start("reset", "sess").await;
    let code = t.send_and_read_code(&flow, &method, "sess@home.example").await;
    t.post(
        "/api/v1/flows/verify",
        json!({"flow": flow, "method": method, "code": code}),
    )
    .await;
    let (s, _) = t
        .post(
            "/api/v1/flows/password",
            json!({"flow": flow, "password": "Velvet-Lagoon-Orbit-42"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        me(before_reset).await,
        401,
        "the session from before the reset is over"
    );

    let (_, b) = t.sign_in("sess", "Velvet-Lagoon-Orbit-42").await;
    let before_change = b["token"].as_str().unwrap().to_owned();
    assert_eq!(me(before_change.clone()).await, 200);
    let (s, _) = t
        .post(
            "/api/v1/password/change",
            json!({"login": "sess", "old_password": "Velvet-Lagoon-Orbit-42", "new_password": "Quartz-Ember-Saffron-77"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        me(before_change).await,
        401,
        "the session from before the change is over"
    );
}

/// The "this wasn't me" link from a notification mail.
fn report_link(t: &TestApp, to: &str) -> String {
    let mail = t.sink.messages_to(to).pop().expect("notification");
    let body = mail.text_body();
    let line = body
        .lines()
        .find(|l| l.starts_with(&format!("{PUBLIC_URL}/not-me/")))
        .unwrap_or_else(|| panic!("no report link in {body}"));
    line.rsplit('/').next().unwrap().trim().to_owned()
}

/// GET shows a confirmation page (a mail scanner following the link changes nothing); the form
/// with its CSRF token does the locking.
async fn report(t: &TestApp, token: &str) -> (u16, String) {
    let client = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let page = client
        .get(format!("{}/not-me/{token}", t.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    let r = client
        .post(format!("{}/not-me", t.base))
        .form(&[("csrf", csrf.as_str()), ("token", token)])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The whole report; `action` is what the audit row says was done. Returns the app for checks of
/// the directory's own.
async fn this_wasnt_me(t: TestApp, action: &str) -> TestApp {
    t.add_user("vic", Some("Original-Pass-Word-1"), Some("vic@home.example"))
        .await;
    let (flow, method, _) = t.start("reset", "vic").await;
    let code = t.send_and_read_code(&flow, &method, "vic@home.example").await;
    t.post(
        "/api/v1/flows/verify",
        json!({"flow": flow, "method": method, "code": code}),
    )
    .await;
    let (s, _) = t
        .post(
            "/api/v1/flows/password",
            json!({"flow": flow, "password": "Velvet-Lagoon-Orbit-42"}),
        )
        .await;
    assert_eq!(s, 200);
    t.sink
        .wait_for_count_to("vic@home.example", 2, MAIL_WAIT)
        .await
        .unwrap();
    let token = report_link(&t, "vic@home.example");
    let (_, b) = t.sign_in("vic", "Velvet-Lagoon-Orbit-42").await;
    let session = b["token"].as_str().unwrap().to_owned();

    // Looking at the page changes nothing.
    let r = t
        .http
        .get(format!("{}/not-me/{token}", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (s, _) = t.sign_in("vic", "Velvet-Lagoon-Orbit-42").await;
    assert_eq!(s, 200, "a GET does not lock");

    let (s, page) = report(&t, &token).await;
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("locked"), "{page}");
    // Used once.
    let (s, _) = report(&t, &token).await;
    assert_eq!(s, 404);

    // The thief's session is over, the password no longer signs in, self-service is off.
    let (s, _) = t
        .authed(reqwest::Method::GET, "/api/v1/me/methods", &session, None)
        .await;
    assert_eq!(s, 401);
    let (s, b) = t.sign_in("vic", "Velvet-Lagoon-Orbit-42").await;
    assert_ne!(s, 200, "{b}");
    let (flow, method, _) = t.start("reset", "vic").await;
    let before = t.sink.messages_to("vic@home.example").len();
    t.post("/api/v1/flows/send", json!({"flow": flow, "method": method}))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        t.sink.messages_to("vic@home.example").len(),
        before,
        "a decoy flow now"
    );

    // The administrators are alerted; the audit log says what happened.
    let alert = t
        .sink
        .wait_for_message_to("secops@corp.example", MAIL_WAIT)
        .await
        .unwrap();
    assert!(alert.text_body().contains("vic"));
    let rows = t.core().app.audit_page(0, None, 10_000).await.unwrap();
    let reported = rows
        .iter()
        .find(|r| r.event.activity.as_str() == "reported_not_me")
        .expect("audited");
    assert!(
        reported.event.reason.as_deref().unwrap().contains(action),
        "{:?}",
        reported.event.reason
    );
    assert!(alert.text_body().contains(action), "{}", alert.text_body());

    // The helpdesk clears the flag; the account stays locked until unlocked in the directory.
    let login = gatehouse_core::types::Login::parse("vic").unwrap();
    t.core().app.admin_clear_flag(&login, "admin:test").await.unwrap();
    let state = t.core().app.registration_of(&login).await.unwrap();
    assert_eq!(state.flagged, None);
    t
}

#[tokio::test]
async fn this_wasnt_me_locks_the_account_and_alerts_the_helpdesk() {
    let t = spawn_with(|raw| raw.server.security_alerts = vec!["secops@corp.example".into()]).await;
    this_wasnt_me(t, "locked in the directory").await;
}

#[tokio::test]
async fn this_wasnt_me_sets_the_openldap_administrative_lock() {
    let t = crate::harness::spawn_ldap_with(|raw| {
        raw.server.security_alerts = vec!["secops@corp.example".into()]
    })
    .await;
    this_wasnt_me(t, "locked in the directory").await;
}

/// Active Directory gives a delegated service account no way to lock an account (lockoutTime can
/// only be cleared): the password is replaced by a random one nobody knows, so whoever set the last
/// one is shut out at the directory itself, not only at Gatehouse.
#[tokio::test]
async fn this_wasnt_me_replaces_the_password_in_active_directory() {
    let t =
        crate::harness::spawn_ad_with(|raw| raw.server.security_alerts = vec!["secops@corp.example".into()])
            .await;
    let t = this_wasnt_me(t, "replaced by a random one nobody knows").await;
    let crate::harness::Backend::Ad { dc, .. } = &t.backend else {
        unreachable!()
    };
    let upn = gatehouse_testkit::SambaDc::upn("vic");
    assert!(
        !dc.can_bind(&upn, "Velvet-Lagoon-Orbit-42").await.unwrap(),
        "the password set in the reported reset no longer binds to the DC"
    );
}
