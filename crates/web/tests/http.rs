//! HTTP mapping tests with `oneshot`: a fixed clock, a seeded RNG, an in-memory store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use gatehouse_core::clock::{FixedClock, SeededRng};
use gatehouse_core::ports::{Clock, Directory, SecureRng, Store};
use gatehouse_core::secret::Password;
use gatehouse_core::service::NewUser;
use gatehouse_core::types::{Email, Login};
use gatehouse_core::{Gatehouse, Settings};
use gatehouse_directory::{BuiltinDirectory, BuiltinOptions};
use gatehouse_store::SqliteStore;
use gatehouse_web::{router, AppState, WebConfig};
use serde_json::{json, Value};
use std::sync::Arc;
use time::macros::datetime;
use tower::ServiceExt;

async fn build(public_url: &str, demo: bool) -> Router {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    std::mem::forget(dir); // lives as long as the test process
    let store = Arc::new(SqliteStore::connect(&url).await.unwrap());
    let clock: Arc<dyn Clock> = Arc::new(FixedClock::new(datetime!(2026-11-21 12:00 UTC)));
    let rng: Arc<dyn SecureRng> = Arc::new(SeededRng::new(42));
    let directory = BuiltinDirectory::new(
        store.pool().clone(),
        clock.clone(),
        rng.clone(),
        BuiltinOptions::default(),
    )
    .await
    .unwrap();
    let directory: Arc<dyn Directory> = Arc::new(directory);
    let store: Arc<dyn Store> = store;
    let app = Gatehouse::new(directory, store, clock, rng, Settings::default())
        .await
        .unwrap();
    app.import_user(
        &NewUser {
            login: Login::parse("alice").unwrap(),
            display_name: "Alice".into(),
            email: None,
            alternate_email: Some(Email::parse("alice.private@example.net").unwrap()),
            mobile_phone: None,
            groups: vec![],
            password: Some(Password::new("Original-Secret-1")),
        },
        "test",
    )
    .await
    .unwrap();
    router(AppState {
        app,
        web: Arc::new(WebConfig {
            public_url: public_url.into(),
            demo,
            trusted_proxies: vec![],
            admin_tokens: vec![],
        }),
    })
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn json_post(uri: &str, body: Value) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn api_errors_are_json_problems_with_honest_status() {
    let app = build("http://127.0.0.1:8080", false).await;
    let cases = [
        (
            json_post("/api/v1/flows", json!({"kind": "explode", "login": "alice"})),
            400,
            "invalid_request",
        ),
        (
            json_post("/api/v1/flows", json!({"kind": "reset", "login": "  "})),
            400,
            "invalid_request",
        ),
        (
            json_post("/api/v1/flows/send", json!({"flow": "nope", "method": "x"})),
            400,
            "unknown_method",
        ),
        (
            json_post("/api/v1/flows/unlock", json!({"flow": "a".repeat(43)})),
            404,
            "flow_not_found",
        ),
        (
            json_post("/api/v1/session", json!({"login": "alice", "password": "wrong"})),
            401,
            "invalid_credentials",
        ),
        (
            Request::get("/api/v1/me/methods").body(Body::empty()).unwrap(),
            401,
            "unauthorized",
        ),
        (
            Request::post("/api/v1/flows")
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from("{}"))
                .unwrap(),
            400,
            "invalid_request",
        ),
        (
            Request::get("/api/v1/unknown").body(Body::empty()).unwrap(),
            404,
            "not_found",
        ),
        // A query string that does not deserialise (found by the `http` fuzz target).
        (
            Request::get("/api/v1/captcha?login=a&login=b")
                .body(Body::empty())
                .unwrap(),
            400,
            "invalid_request",
        ),
    ];
    for (req, status, code) in cases {
        let uri = req.uri().to_string();
        let (s, _, body) = call(&app, req).await;
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{uri}: not JSON: {body}"));
        assert_eq!(
            (s.as_u16(), v["error"].as_str()),
            (status, Some(code)),
            "{uri}: {body}"
        );
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{uri}");
    }
}

#[tokio::test]
async fn security_headers_on_every_response() {
    let app = build("https://sspr.example.org", false).await;
    for uri in ["/", "/reset", "/api/v1/password/policy", "/no-such-page"] {
        let (_, h, _) = call(&app, Request::get(uri).body(Body::empty()).unwrap()).await;
        assert!(
            h[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'"),
            "{uri}"
        );
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer", "{uri}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(
            h[header::STRICT_TRANSPORT_SECURITY]
                .to_str()
                .unwrap()
                .starts_with("max-age="),
            "HSTS over TLS"
        );
    }
    let app = build("http://127.0.0.1:8080", false).await;
    let (_, h, _) = call(&app, Request::get("/").body(Body::empty()).unwrap()).await;
    assert!(
        !h.contains_key(header::STRICT_TRANSPORT_SECURITY),
        "no HSTS without TLS"
    );
}

#[tokio::test]
async fn forms_without_the_csrf_token_are_refused() {
    let app = build("https://sspr.example.org", false).await;
    let (s, h, body) = call(&app, Request::get("/reset").body(Body::empty()).unwrap()).await;
    assert_eq!(s, 200);
    let cookie = h[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("__Host-gh_csrf=") && cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let token = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let pair = cookie.split(';').next().unwrap().to_owned();

    let form = |csrf: &str, with_cookie: bool| {
        let mut r = Request::post("/reset").header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if with_cookie {
            r = r.header(header::COOKIE, pair.clone());
        }
        r.body(Body::from(format!("csrf={csrf}&login=alice"))).unwrap()
    };
    assert_eq!(call(&app, form("", true)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(call(&app, form(&token, false)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        call(&app, form(&"x".repeat(43), true)).await.0,
        StatusCode::FORBIDDEN
    );
    let (s, h, _) = call(&app, form(&token, true)).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], "/flow");
    let flow_cookie = h[header::SET_COOKIE].to_str().unwrap();
    assert!(
        flow_cookie.starts_with("__Host-gh_flow=")
            && flow_cookie.contains("HttpOnly")
            && flow_cookie.contains("Secure")
    );
}

#[tokio::test]
async fn dev_mailbox_exists_only_in_demo_mode() {
    let prod = build("http://127.0.0.1:8080", false).await;
    assert_eq!(
        call(&prod, Request::get("/dev/mailbox").body(Body::empty()).unwrap())
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let demo = build("http://127.0.0.1:8080", true).await;
    assert_eq!(
        call(&demo, Request::get("/dev/mailbox").body(Body::empty()).unwrap())
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn flow_responses_have_the_contract_shape() {
    let app = build("http://127.0.0.1:8080", false).await;
    let (s, _, body) = call(
        &app,
        json_post("/api/v1/flows", json!({"kind": "reset", "login": "alice"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["flow"].as_str().unwrap().len(), 43, "256-bit token");
    assert_eq!(
        (v["kind"].as_str(), v["step"].as_str()),
        (Some("reset"), Some("verify"))
    );
    assert_eq!(v["methods"][0]["hint"], "a•••@e•••.net");
    let (s, _, body) = call(
        &app,
        json_post(
            "/api/v1/password/check",
            json!({"login": "alice", "password": "x"}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["violations"][0]["rule"], "min_length");
}
