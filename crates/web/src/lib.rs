//! Gatehouse web layer: the HTML portal, the JSON API and the middleware around them.
//!
//! Handlers extract, call one use case of [`gatehouse_core::Gatehouse`], and map the result to a
//! response. Status codes and public wording are chosen only in [`error`].
#![forbid(unsafe_code)]

mod api;
pub mod error;
mod extract;
mod portal;
mod security;
mod templates;

use axum::routing::{delete, get, post};
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
}

impl WebConfig {
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
        .route("/account/methods/{id}/verify", post(portal::account_verify))
        .route("/account/methods/{id}/remove", post(portal::account_remove))
        .route("/static/app.css", get(security::stylesheet))
        .route("/static/password.js", get(security::password_script))
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
        .layer(tower_http::trace::TraceLayer::new_for_http())
}
