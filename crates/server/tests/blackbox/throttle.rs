//! Throttling with the real defaults (counters in the store, so every node shares them) and the
//! proof-of-work CAPTCHA on flow start.
use crate::harness::{spawn_with, TestApp, MAIL_WAIT};
use gatehouse::config::{RawConfig, ThrottleSection};
use gatehouse_testkit::phone_provider::FakeTwilio;
use serde_json::{json, Value};

fn real_defaults(raw: &mut RawConfig) {
    raw.throttle = ThrottleSection::default();
}

/// Starts a reset as if from `ip` (the test server trusts 127.0.0.1 as a proxy).
async fn start_from(t: &TestApp, login: &str, ip: &str) -> (u16, Value) {
    let resp = t
        .http
        .post(format!("{}/api/v1/flows", t.base))
        .header("x-forwarded-for", ip)
        .json(&json!({"kind": "reset", "login": login}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn blocked_rows(t: &TestApp) -> Vec<String> {
    let rows = t.core().app.audit_page(0, None, 100_000).await.unwrap();
    rows.into_iter()
        .filter(|r| r.event.activity.as_str() == "blocked")
        .filter_map(|r| r.event.reason)
        .collect()
}

#[tokio::test]
async fn five_attempts_an_hour_block_an_account_and_unknown_logins_alike() {
    let t = spawn_with(|raw| {
        real_defaults(raw);
        raw.server.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    t.add_user(
        "alice",
        Some("Original-Password-1"),
        Some("alice.private@example.net"),
    )
    .await;
    // Different addresses each time: only the per-account limit applies.
    for login in ["alice", "ghost"] {
        for i in 0..5 {
            let (s, b) = start_from(&t, login, &format!("198.51.100.{}", i + 1)).await;
            assert_eq!(s, 201, "attempt {i} for {login}: {b}");
        }
        let (s, b) = start_from(&t, login, "198.51.100.99").await;
        assert_eq!((s, b["error"].as_str()), (429, Some("too_many_requests")), "{b}");
    }
    // Identical answers, real account or not.
    let (_, real) = start_from(&t, "alice", "203.0.113.1").await;
    let (_, ghost) = start_from(&t, "ghost", "203.0.113.1").await;
    assert_eq!(real, ghost);
    let blocked = blocked_rows(&t).await;
    assert!(
        blocked
            .iter()
            .any(|r| r == "blocked from self-service password reset: account_rate"),
        "{blocked:?}"
    );
    // Blocked sign-ins too (password spraying), before any password check.
    let (s, _) = t.sign_in("alice", "Original-Password-1").await;
    assert_eq!(s, 429);
}

#[tokio::test]
async fn one_address_and_its_network_are_limited() {
    let t = spawn_with(|raw| {
        real_defaults(raw);
        raw.throttle.ip_requests = 8;
        raw.throttle.network_requests = 12;
        raw.server.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    // Many logins from one address: the address limit (8) stops it, not the account limit.
    let mut statuses = vec![];
    for i in 0..9 {
        statuses.push(start_from(&t, &format!("user{i}"), "203.0.113.7").await.0);
    }
    assert_eq!(statuses[..8], [201; 8]);
    assert_eq!(statuses[8], 429);
    // Neighbours in the same /24 share the network limit (12); another network is not affected.
    for i in 0..4 {
        assert_eq!(
            start_from(&t, &format!("n{i}"), &format!("203.0.113.{}", 20 + i))
                .await
                .0,
            201
        );
    }
    assert_eq!(start_from(&t, "n9", "203.0.113.50").await.0, 429);
    assert_eq!(start_from(&t, "n9", "192.0.2.50").await.0, 201);
    // IPv6: a /64 is one network.
    let t6 = spawn_with(|raw| {
        real_defaults(raw);
        raw.throttle.ip_requests = 100;
        raw.throttle.network_requests = 3;
        raw.server.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    for i in 0..3 {
        assert_eq!(
            start_from(&t6, &format!("v{i}"), &format!("2001:db8:1:2::{i}"))
                .await
                .0,
            201
        );
    }
    assert_eq!(start_from(&t6, "v9", "2001:db8:1:2:ffff::1").await.0, 429);
    assert_eq!(start_from(&t6, "v9", "2001:db8:1:3::1").await.0, 201);
}

#[tokio::test]
async fn a_destination_gets_three_codes_in_ten_minutes() {
    let t = spawn_with(real_defaults).await;
    t.add_user(
        "alice",
        Some("Original-Password-1"),
        Some("alice.private@example.net"),
    )
    .await;
    let (flow, method, _) = t.start("reset", "alice").await;
    // An unknown login whose decoy offers an email method (decoys vary by login, like real users).
    let mut ghost = None;
    for i in 0..50 {
        let (f, _, body) = t.start("reset", &format!("ghost{i}")).await;
        let email = body["methods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["type"] == "email")
            .cloned();
        if let Some(m) = email {
            ghost = Some((f, m["id"].as_str().unwrap().to_owned()));
            break;
        }
    }
    let (ghost_flow, ghost_method) = ghost.expect("some decoy offers an email method");
    for _ in 0..3 {
        let (s, _) = t
            .post("/api/v1/flows/send", json!({"flow": flow, "method": method}))
            .await;
        assert_eq!(s, 202);
        let (s, _) = t
            .post(
                "/api/v1/flows/send",
                json!({"flow": ghost_flow, "method": ghost_method}),
            )
            .await;
        assert_eq!(s, 202);
    }
    t.sink
        .wait_for_count_to("alice.private@example.net", 3, MAIL_WAIT)
        .await
        .unwrap();
    let (s, real) = t
        .post("/api/v1/flows/send", json!({"flow": flow, "method": method}))
        .await;
    let (s2, ghost) = t
        .post(
            "/api/v1/flows/send",
            json!({"flow": ghost_flow, "method": ghost_method}),
        )
        .await;
    assert_eq!(
        (s, s2),
        (429, 429),
        "a decoy is limited exactly like a real address"
    );
    assert_eq!(real, ghost);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(t.sink.messages_to("alice.private@example.net").len(), 3);
}

#[tokio::test]
async fn sms_pumping_trips_the_circuit_breaker_and_the_prefix_limit() {
    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    let fake = FakeTwilio::start(SID, "tok-0123456789").await.unwrap();
    let t = spawn_with(|raw| {
        real_defaults(raw);
        raw.phone.provider = "twilio".into();
        raw.phone.default_region = "GB".into();
        raw.phone.twilio_base_url = fake.base_url().to_string();
        raw.phone.twilio_account_sid = SID.into();
        raw.phone.twilio_auth_token = Some("tok-0123456789".into());
        raw.phone.twilio_from = Some("+15005550006".into());
        raw.throttle.breaker_min_sends = 6;
        raw.throttle.breaker_ratio = 2;
        raw.throttle.phone_prefix_per_hour = 4;
    })
    .await;
    // A pumper registers premium-rate numbers it controls and never verifies anything.
    let mut tokens = vec![];
    for i in 0..4 {
        let login = format!("pump{i}");
        t.add_user(&login, Some("Original-Password-1"), None).await;
        let (_, b) = t.sign_in(&login, "Original-Password-1").await;
        tokens.push(b["token"].as_str().unwrap().to_owned());
    }
    let mut statuses = vec![];
    for (i, number) in [
        "+447911100001",
        "+447911100002",
        "+447911100003",
        "+447911100004",
        "+447911100005",
    ]
    .iter()
    .enumerate()
    {
        let (s, _) = t
            .authed(
                reqwest::Method::POST,
                "/api/v1/me/methods",
                &tokens[i % 4],
                Some(json!({"type": "sms", "phone": number})),
            )
            .await;
        statuses.push(s);
    }
    assert_eq!(statuses[..4], [201; 4], "{statuses:?}");
    assert_eq!(
        statuses[4], 503,
        "the fifth number in one prefix is refused: {statuses:?}"
    );
    // Other prefixes: sends climb with no verification until the breaker trips.
    let mut results = vec![];
    for (i, n) in ["+447911000001", "+447922000002", "+447933000003", "+447944000004"]
        .iter()
        .enumerate()
    {
        let (s, _) = t
            .authed(
                reqwest::Method::POST,
                "/api/v1/me/methods",
                &tokens[i],
                Some(json!({"type": "sms", "phone": n})),
            )
            .await;
        results.push(s);
    }
    assert!(results.contains(&503), "{results:?}");
    let sent_before = fake.messages().len();
    assert!(sent_before <= 6, "{sent_before} texts went out");
    let blocked = blocked_rows(&t).await;
    assert!(
        blocked.iter().any(|r| r.ends_with("sms_circuit_breaker")),
        "{blocked:?}"
    );
    assert!(
        blocked.iter().any(|r| r.ends_with("phone_prefix_rate")),
        "{blocked:?}"
    );
}

#[tokio::test]
async fn flow_start_needs_a_solved_proof_of_work_used_once() {
    let t = spawn_with(|raw| {
        raw.captcha.enabled = true;
        raw.captcha.difficulty = 2_000;
        raw.server.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let (s, b) = start_from(&t, "alice", "198.51.100.1").await;
    assert_eq!((s, b["error"].as_str()), (400, Some("captcha_required")), "{b}");
    let challenge = |ip: &'static str| {
        let t = &t;
        async move {
            let r = t
                .http
                .get(format!("{}/api/v1/captcha", t.base))
                .header("x-forwarded-for", ip)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.json::<gatehouse_core::pow::Challenge>().await.unwrap()
        }
    };
    let c = challenge("198.51.100.1").await;
    assert_eq!((c.algorithm.as_str(), c.maxnumber), ("SHA-256", 2_000));
    let payload = gatehouse_core::pow::solve(&c).unwrap();
    let start = |payload: String| {
        let t = &t;
        async move {
            let r = t
                .http
                .post(format!("{}/api/v1/flows", t.base))
                .header("x-forwarded-for", "198.51.100.1")
                .json(&json!({"kind": "reset", "login": "alice", "altcha": payload}))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    };
    assert_eq!(start(payload.clone()).await, 201);
    assert_eq!(start(payload).await, 400, "a solution works once");
    // Under pressure the next challenges get harder, and an easy old one no longer does.
    let easy = challenge("198.51.100.1").await;
    let easy = gatehouse_core::pow::solve(&easy).unwrap();
    for _ in 0..5 {
        let c = challenge("198.51.100.1").await;
        assert_eq!(start(gatehouse_core::pow::solve(&c).unwrap()).await, 201);
    }
    let hard = challenge("198.51.100.1").await;
    assert!(hard.maxnumber > 2_000, "{}", hard.maxnumber);
    assert_eq!(start(easy).await, 400);
    // Another address is not affected.
    assert_eq!(challenge("192.0.2.1").await.maxnumber, 2_000);
}
