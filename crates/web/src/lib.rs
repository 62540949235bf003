//! Gatehouse web layer: the HTML portal, the JSON API and the middleware around them.
//!
//! Handlers extract, call one use case of [`gatehouse_core::Gatehouse`], and map the result to a
//! response. Status codes and public wording are chosen only in [`error`].
#![forbid(unsafe_code)]

mod admin;
mod api;
pub use api::registration_json;
pub mod error;
mod extract;
mod portal;
mod security;
mod templates;

use axum::routing::{delete, get, post, put};
use axum::Router;
use gatehouse_core::Gatehouse;
use std::sync::Arc;

/// Settings of the web layer, checked by the configuration layer.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Every link is built from this, never from the request's Host header.
    pub public_url: String,
    /// Demo mode: adds `/dev/mailbox`.
    pub demo: bool,
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` headers are believed for the client IP.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Helpdesk API tokens: (name, SHA-256 of the token).
    pub admin_tokens: Vec<(String, [u8; 32])>,
}

impl WebConfig {
    /// The name of the admin token `token` is, if any (constant-time digest comparison).
    pub fn admin_token(&self, token: &str) -> Option<&str> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (name, expected) in &self.admin_tokens {
            if bool::from(subtle::ConstantTimeEq::ct_eq(&digest[..], &expected[..])) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// Cookies are `Secure` and `__Host-` prefixed when the portal is served over TLS.
    pub fn tls(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

#[derive(Clone)]
pub struct AppState {
    pub app: Gatehouse,
    pub web: Arc<WebConfig>,
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/flows", post(api::start_flow))
        .route("/flows/send", post(api::send_code))
        .route("/flows/verify", post(api::verify_code))
        .route("/flows/password", post(api::set_password))
        .route("/flows/unlock", post(api::unlock))
        .route("/password/change", post(api::change_password))
        .route("/password/check", post(api::check_password))
        .route("/password/policy", get(api::password_policy))
        .route("/session", post(api::sign_in).delete(api::sign_out))
        .route("/me/methods", get(api::my_methods).post(api::add_method))
        .route("/me/reconfirm", post(api::reconfirm))
        .route("/questions", get(api::questions))
        .route("/captcha", get(api::captcha))
        .route("/flows/link", post(api::open_link))
        .route("/admin/users/{login}", get(admin::registration))
        .route("/admin/users/{login}/contact", put(admin::set_contact))
        .route("/admin/users/{login}/methods", delete(admin::clear_methods))
        .route("/admin/users/{login}/link", post(admin::send_link))
        .route("/admin/users/{login}/flag", delete(admin::clear_flag))
        .route("/me/methods/{id}/verify", post(api::verify_method))
        .route("/me/methods/{id}", delete(api::remove_method))
        .fallback(api::not_found);

    let mut portal = Router::new()
        .route("/", get(portal::home))
        .route("/reset", get(portal::start_reset_page).post(portal::start_reset))
        .route(
            "/unlock",
            get(portal::start_unlock_page).post(portal::start_unlock),
        )
        .route("/flow", get(portal::flow_page))
        .route("/flow/send", post(portal::flow_send))
        .route("/flow/verify", post(portal::flow_verify))
        .route("/flow/password", post(portal::flow_password))
        .route("/flow/unlock", post(portal::flow_unlock))
        .route("/change", get(portal::change_page).post(portal::change))
        .route("/signin", get(portal::signin_page).post(portal::signin))
        .route("/signout", post(portal::signout))
        .route("/account", get(portal::account_page))
        .route("/account/methods", post(portal::account_add))
        .route("/account/reconfirm", post(portal::account_reconfirm))
        .route("/link/{token}", get(portal::open_link))
        .route("/not-me/{token}", get(portal::not_me_page))
        .route("/not-me", post(portal::not_me))
        .route("/account/methods/{id}/verify", post(portal::account_verify))
        .route("/account/methods/{id}/remove", post(portal::account_remove))
        .route("/static/app.css", get(security::stylesheet))
        .route("/static/password.js", get(security::password_script))
        .route("/static/pow.js", get(security::pow_script))
        .route("/healthz", get(portal::healthz))
        .route("/readyz", get(portal::readyz));
    if state.web.demo {
        portal = portal.route("/dev/mailbox", get(portal::dev_mailbox));
    }

    let tls = state.web.tls();
    Router::new()
        .nest("/api/v1", api)
        .merge(portal)
        .fallback(portal::not_found)
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::from_fn(move |req, next| {
            security::headers(tls, req, next)
        }))
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(
            |req: &axum::http::Request<_>| {
                // Paths only (no query), and a link's token never reaches the log.
                let path = req.uri().path();
                let path = if path.starts_with("/link/") {
                    "/link/…"
                } else if path.starts_with("/not-me/") {
                    "/not-me/…"
                } else {
                    path
                };
                tracing::debug_span!("request", method = %req.method(), path = %path)
            },
        ))
}
