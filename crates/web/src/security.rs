//! Security headers, cookies and CSRF protection.
use crate::WebConfig;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rand::RngCore;
use subtle::ConstantTimeEq;

const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the security headers to every response.
pub async fn headers(tls: bool, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let mut set = |name: header::HeaderName, value: &'static str| {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    };
    set(header::CONTENT_SECURITY_POLICY, CSP);
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::CACHE_CONTROL, "no-store");
    set(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    if tls {
        set(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        );
    }
    resp
}

/// Cookie names get the `__Host-` prefix over TLS (Secure, Path=/, no Domain).
pub fn cookie_name(web: &WebConfig, base: &str) -> String {
    if web.tls() {
        format!("__Host-{base}")
    } else {
        base.to_owned()
    }
}

fn build_cookie(web: &WebConfig, base: &str, value: Option<&str>) -> String {
    let secure = if web.tls() { "; Secure" } else { "" };
    match value {
        Some(v) => format!(
            "{}={v}; Path=/; HttpOnly; SameSite=Lax{secure}",
            cookie_name(web, base)
        ),
        None => format!(
            "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}",
            cookie_name(web, base)
        ),
    }
}

pub fn session_cookie(web: &WebConfig, token: Option<&str>) -> String {
    build_cookie(web, "gh_session", token)
}

pub fn flow_cookie(web: &WebConfig, token: Option<&str>) -> String {
    build_cookie(web, "gh_flow", token)
}

/// The CSRF token of this browser (double-submit cookie), and the cookie to set if it is new.
pub fn csrf_token(web: &WebConfig, headers: &HeaderMap) -> (String, Option<String>) {
    let name = cookie_name(web, "gh_csrf");
    match crate::extract::cookie(headers, &name).filter(|v| v.len() == 43) {
        Some(v) => (v, None),
        None => {
            let mut b = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut b);
            let v = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
            let cookie = build_cookie(web, "gh_csrf", Some(&v)).replace("SameSite=Lax", "SameSite=Strict");
            (v.clone(), Some(cookie))
        }
    }
}

/// True when the form's token matches the browser's CSRF cookie.
pub fn csrf_ok(web: &WebConfig, headers: &HeaderMap, submitted: &str) -> bool {
    let name = cookie_name(web, "gh_csrf");
    match crate::extract::cookie(headers, &name) {
        Some(expected) if expected.len() == 43 => expected.as_bytes().ct_eq(submitted.as_bytes()).into(),
        _ => false,
    }
}

/// The few lines that turn the password rules into a live checklist (the pages work without it).
pub async fn password_script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../static/password.js"),
    )
}

/// The proof-of-work widget (it also runs as its own Web Worker).
pub async fn pow_script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../static/pow.js"),
    )
}

pub async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../static/app.css"),
    )
}
