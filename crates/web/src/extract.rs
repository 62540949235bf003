//! Extractors: JSON bodies with JSON errors, request metadata for the audit log, cookies, sessions.
use crate::error::ApiError;
use crate::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use gatehouse_core::service::SessionCtx;
use gatehouse_core::{RequestMeta, ServiceError};
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};

/// A JSON body whose rejection is a JSON problem naming what is wrong.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::BadRequest(
                "Send the body as JSON with Content-Type: application/json.".into(),
            )),
            Err(e) => Err(ApiError::BadRequest(format!(
                "The JSON body is not valid: {}",
                e.body_text()
            ))),
        }
    }
}

/// Query string as `T`, its rejection answered as an API problem (JSON) like every other error.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(e) => Err(ApiError::BadRequest(format!(
                "The query string is not valid: {}",
                e.body_text()
            ))),
        }
    }
}

/// Client IP and user agent, for the audit log (and, later, throttling).
pub struct Meta(pub RequestMeta);

/// The client's address: the socket peer, or — only when the peer is a trusted proxy — the nearest
/// address in `Forwarded` (RFC 7239) or else `X-Forwarded-For` that is not itself a trusted proxy.
/// Headers from anyone else are ignored, so a client cannot choose the address it is seen as.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_node(v.trim()))?
            })
        })
        .collect();
    let chain: Vec<IpAddr> = if forwarded.is_empty() {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| parse_node(s.trim()))
            .collect()
    } else {
        forwarded
    };
    // Right to left: the last hop was added by the proxy we trust, earlier ones by whoever sent it.
    chain
        .iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .copied()
        .unwrap_or(peer)
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `"[2001:db8::1]:4711"`.
fn parse_node(raw: &str) -> Option<IpAddr> {
    let s = raw.trim_matches('"');
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    s.parse()
        .ok()
        .or_else(|| s.rsplit_once(':').and_then(|(h, _)| h.parse().ok()))
}

impl FromRequestParts<AppState> for Meta {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| client_ip(c.0.ip(), &parts.headers, &state.web.trusted_proxies));
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect());
        Ok(Self(RequestMeta { ip, user_agent }))
    }
}

/// The value of one cookie.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// A signed-in API caller (`Authorization: Bearer <token>`).
pub struct ApiSession(pub SessionCtx);

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

impl FromRequestParts<AppState> for ApiSession {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(ApiError::Service(ServiceError::Unauthorized))?;
        Ok(Self(state.app.session(token).await?))
    }
}

/// An optional session: signed-out callers get `None`, a bad token is still refused.
impl axum::extract::OptionalFromRequestParts<AppState> for ApiSession {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        match bearer(parts) {
            None => Ok(None),
            Some(token) => Ok(Some(Self(state.app.session(token).await?))),
        }
    }
}

/// A helpdesk / administration API caller: `Authorization: Bearer <admin token>`, checked against
/// the SHA-256 digests in `[admin] api_tokens`. Carries the token's name for the audit log.
pub struct AdminCaller(pub String);

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(ApiError::Service(ServiceError::Unauthorized))?;
        state
            .web
            .admin_token(token)
            .map(|name| Self(format!("admin:api:{name}")))
            .ok_or(ApiError::Service(ServiceError::Unauthorized))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let xff = headers(&[("x-forwarded-for", "203.0.113.7, 10.1.2.3")]);
        // An untrusted peer cannot choose its address.
        assert_eq!(client_ip(ip("198.51.100.9"), &xff, &trusted), ip("198.51.100.9"));
        // Behind a trusted proxy: the nearest untrusted hop.
        assert_eq!(client_ip(ip("10.0.0.5"), &xff, &trusted), ip("203.0.113.7"));
        // A spoofed left-most entry does not win over what the proxy appended.
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.7")]);
        assert_eq!(client_ip(ip("10.0.0.5"), &spoofed, &trusted), ip("203.0.113.7"));
        // RFC 7239, with ports, quotes and IPv6; preferred over X-Forwarded-For.
        let fwd = headers(&[
            (
                "forwarded",
                "for=\"[2001:db8::7]:4711\";proto=https, for=10.9.9.9",
            ),
            ("x-forwarded-for", "192.0.2.1"),
        ]);
        assert_eq!(client_ip(ip("::1"), &fwd, &trusted), ip("2001:db8::7"));
        let fwd4 = headers(&[("forwarded", "for=192.0.2.60:8080;by=10.0.0.1")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &fwd4, &trusted), ip("192.0.2.60"));
        // Garbage or nothing: the peer.
        let junk = headers(&[("x-forwarded-for", "unknown, _hidden")]);
        assert_eq!(client_ip(ip("10.0.0.5"), &junk, &trusted), ip("10.0.0.5"));
        assert_eq!(client_ip(ip("10.0.0.5"), &HeaderMap::new(), &[]), ip("10.0.0.5"));
    }
}
