//! Active Directory behaviour through the API, against a Samba AD DC of each test's own: a disabled
//! account is indistinguishable from an unknown one, and a protected account needs two methods.
use crate::harness::{spawn_ad, Backend, TestApp};
use gatehouse_core::service::NewUser;
use gatehouse_core::types::{Email, Login};
use serde_json::{json, Value};

fn dc_of(t: &TestApp) -> (&gatehouse_testkit::SambaDc, &str) {
    match &t.backend {
        Backend::Ad { dc, ou } => (dc, ou),
        _ => unreachable!("an AD test"),
    }
}

/// The parts of a flow-start answer that must not depend on the account.
fn shape(b: &Value) -> Value {
    let methods = b["methods"].as_array().unwrap();
    json!({
        "keys": b.as_object().unwrap().keys().collect::<Vec<_>>(),
        "step": b["step"], "required": b["required"], "verified": b["verified"],
        "methods": methods.len(),
        "method_keys": methods.iter().map(|m| m.as_object().unwrap().keys().cloned().collect::<Vec<_>>()).collect::<Vec<_>>(),
        "types": methods.iter().map(|m| m["type"].clone()).collect::<Vec<_>>(),
    })
}

#[tokio::test]
async fn a_disabled_account_is_indistinguishable_from_an_unknown_one() {
    let t = spawn_ad().await;
    t.add_user("dora", Some("Initial-Dora-1"), Some("dora.home@example.net"))
        .await;
    let (dc, _) = dc_of(&t);
    dc.samba_tool(&["user", "disable", "dora"]).await.unwrap();

    let (s1, b1) = t
        .post("/api/v1/flows", json!({"kind": "reset", "login": "dora"}))
        .await;
    let (s2, b2) = t
        .post("/api/v1/flows", json!({"kind": "reset", "login": "ghost"}))
        .await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(shape(&b1), shape(&b2), "{b1} / {b2}");
    assert_ne!(
        b1["methods"][0]["hint"], "d•••@e•••.net",
        "the real method is not shown"
    );
    // A code "sent" to the decoy never arrives and no code verifies it.
    let flow = b1["flow"].as_str().unwrap();
    let method = b1["methods"][0]["id"].as_str().unwrap();
    let (s, _) = t
        .post("/api/v1/flows/send", json!({"flow": flow, "method": method}))
        .await;
    assert_eq!(s, 202);
    let (s, b) = t
        .post(
            "/api/v1/flows/verify",
            json!({"flow": flow, "method": method, "code": "123456"}),
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_code")));

    // Sign-in and change with the right password answer like a wrong one.
    let (s, b) = t.sign_in("dora", "Initial-Dora-1").await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_credentials")));
    let (s, b) = t
        .post(
            "/api/v1/password/change",
            json!({"login": "dora", "old_password": "Initial-Dora-1", "new_password": "Brand-New-Pass-2x"}),
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_credentials")));
    assert!(t.sink.messages_to("dora.home@example.net").is_empty());

    let rows = t.core().app.audit_page(0, None, 1000).await.unwrap();
    let reasons: Vec<Option<String>> = rows
        .iter()
        .filter(|r| r.event.activity.as_str() == "flow_started")
        .map(|r| r.event.reason.clone())
        .collect();
    assert_eq!(
        reasons,
        [
            Some("account_disabled".to_owned()),
            Some("unknown_account".to_owned())
        ],
        "the audit log tells them apart, the answers do not"
    );
}

async fn verify(t: &TestApp, flow: &str, method: &str, to: &str) -> Value {
    let code = t.send_and_read_code(flow, method, to).await;
    let (s, b) = t
        .post(
            "/api/v1/flows/verify",
            json!({"flow": flow, "method": method, "code": code}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b
}

#[tokio::test]
async fn a_protected_account_needs_two_methods() {
    let t = spawn_ad().await;
    t.add_user("pam", Some("Initial-Pam-1x"), Some("pam.home@example.net"))
        .await;
    // A second registered method.
    let second = NewUser {
        login: Login::parse("pam").unwrap(),
        display_name: "pam Example".into(),
        email: None,
        alternate_email: Some(Email::parse("pam.other@example.org").unwrap()),
        mobile_phone: None,
        groups: vec![],
        password: None,
    };
    t.core().app.import_user(&second, "test").await.unwrap();
    let (dc, ou) = dc_of(&t);
    dc.modify(&format!(
        "dn: CN=pam,{ou}\nchangetype: modify\nreplace: adminCount\nadminCount: 1\n"
    ))
    .await
    .unwrap();
    let account = t
        .core()
        .app
        .account(&Login::parse("pam").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(account.privileged);

    let (flow, _, b) = t.start("reset", "pam").await;
    assert_eq!(
        (b["required"].as_u64(), b["methods"].as_array().unwrap().len()),
        (Some(2), 2),
        "{b}"
    );
    let ids: Vec<String> = b["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    let hints: Vec<&str> = b["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["hint"].as_str().unwrap())
        .collect();
    let to = |hint: &str| {
        if hint.ends_with(".net") {
            "pam.home@example.net"
        } else {
            "pam.other@example.org"
        }
    };
    let after_one = verify(&t, &flow, &ids[0], to(hints[0])).await;
    assert_eq!(after_one, json!({"step": "verify", "verified": 1, "required": 2}));
    let (s, b) = t
        .post(
            "/api/v1/flows/password",
            json!({"flow": flow, "password": "Too-Early-Pass-2x"}),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (409, Some("wrong_step")),
        "one method is not enough"
    );
    let after_two = verify(&t, &flow, &ids[1], to(hints[1])).await;
    assert_eq!(after_two["step"], "password");
    // Delegation does not reach AdminSDHolder-protected accounts in real AD; in this test the OU's
    // delegation still applies, so the reset goes through.
    let (s, b) = t
        .post(
            "/api/v1/flows/password",
            json!({"flow": flow, "password": "Protected-Pass-2x"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}
