//! The helpdesk API `/api/v1/admin/…`, for bearer tokens listed in `[admin] api_tokens`.
use crate::api::registration_json;
use crate::error::ApiError;
use crate::extract::{AdminCaller, ApiJson};
use crate::AppState;
use axum::extract::{Path, State};
use axum::Json;
use gatehouse_core::service::LinkKind;
use gatehouse_core::types::{Login, ParseError};
use gatehouse_core::ServiceError;
use serde::Deserialize;
use serde_json::{json, Value};

fn login(raw: &str) -> Result<Login, ApiError> {
    Ok(Login::parse(raw).map_err(ServiceError::from)?)
}

pub async fn registration(
    State(s): State<AppState>,
    AdminCaller(_): AdminCaller,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let r = s.app.registration_of(&login(&user)?).await?;
    Ok(Json(registration_json(&r)))
}

#[derive(Deserialize)]
pub struct Contact {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    phone: Option<String>,
}

pub async fn set_contact(
    State(s): State<AppState>,
    AdminCaller(actor): AdminCaller,
    Path(user): Path<String>,
    ApiJson(body): ApiJson<Contact>,
) -> Result<Json<Value>, ApiError> {
    let r = s
        .app
        .admin_set_contact(
            &login(&user)?,
            body.email.as_deref(),
            body.phone.as_deref(),
            &actor,
        )
        .await?;
    Ok(Json(registration_json(&r)))
}

pub async fn clear_methods(
    State(s): State<AppState>,
    AdminCaller(actor): AdminCaller,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let removed = s.app.admin_clear_methods(&login(&user)?, &actor).await?;
    Ok(Json(json!({"removed": removed})))
}

#[derive(Deserialize)]
pub struct SendLink {
    kind: String,
}

pub async fn send_link(
    State(s): State<AppState>,
    AdminCaller(actor): AdminCaller,
    Path(user): Path<String>,
    ApiJson(body): ApiJson<SendLink>,
) -> Result<Json<Value>, ApiError> {
    let kind = match body.kind.trim() {
        "onboarding" => LinkKind::Onboarding,
        "recovery" => LinkKind::Recovery,
        _ => {
            return Err(
                ServiceError::from(ParseError::new("kind", "kind is \"onboarding\" or \"recovery\"")).into(),
            )
        }
    };
    let to = s.app.send_link(&login(&user)?, kind, &actor).await?;
    Ok(Json(json!({"sent_to": to})))
}

pub async fn clear_flag(
    State(s): State<AppState>,
    AdminCaller(actor): AdminCaller,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.app.admin_clear_flag(&login(&user)?, &actor).await?;
    Ok(Json(json!({"flagged": false})))
}
