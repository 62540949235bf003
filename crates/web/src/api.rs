//! The JSON API `/api/v1`. Secrets (flow token, code, password) travel in bodies and headers only.
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiSession, Meta};
use crate::security::session_cookie;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gatehouse_core::ports::Method;
use gatehouse_core::secret::Password;
use gatehouse_core::service::FlowView;
use gatehouse_core::types::FlowKind;
use serde::Deserialize;
use serde_json::{json, Value};

fn methods_json(v: &FlowView) -> Value {
    Value::Array(
        v.methods
            .iter()
            .map(|m| json!({"id": m.id.as_str(), "type": m.kind.as_str(), "hint": m.hint}))
            .collect(),
    )
}

#[derive(Deserialize)]
pub struct StartFlow {
    kind: String,
    login: String,
}

pub async fn start_flow(
    State(s): State<AppState>,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<StartFlow>,
) -> Result<Response, ApiError> {
    let kind = FlowKind::parse(&body.kind).map_err(gatehouse_core::ServiceError::from)?;
    let started = s.app.start_flow(kind, &body.login, &meta).await?;
    let v = &started.view;
    let out = json!({
        "flow": started.token.expose_secret(),
        "kind": v.kind.as_str(),
        "step": v.step.as_str(),
        "required": v.required,
        "verified": v.verified,
        "methods": methods_json(v),
    });
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[derive(Deserialize)]
pub struct SendCode {
    flow: String,
    method: String,
}

pub async fn send_code(
    State(s): State<AppState>,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<SendCode>,
) -> Result<Response, ApiError> {
    s.app.send_code(&body.flow, &body.method, &meta).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"sent": true}))).into_response())
}

#[derive(Deserialize)]
pub struct VerifyCode {
    flow: String,
    method: String,
    code: String,
}

pub async fn verify_code(
    State(s): State<AppState>,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<VerifyCode>,
) -> Result<Json<Value>, ApiError> {
    let v = s
        .app
        .verify_code(&body.flow, &body.method, &body.code, &meta)
        .await?;
    let mut out = json!({"step": v.step.as_str(), "verified": v.verified, "required": v.required});
    if v.unlock_available {
        out["unlock_available"] = json!(true);
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
pub struct SetPassword {
    flow: String,
    password: String,
}

pub async fn set_password(
    State(s): State<AppState>,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<SetPassword>,
) -> Result<Json<Value>, ApiError> {
    s.app
        .set_password(&body.flow, &Password::new(body.password), &meta)
        .await?;
    Ok(Json(json!({"step": "done"})))
}

#[derive(Deserialize)]
pub struct FlowOnly {
    flow: String,
}

pub async fn unlock(
    State(s): State<AppState>,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<FlowOnly>,
) -> Result<Json<Value>, ApiError> {
    s.app.unlock(&body.flow, &meta).await?;
    Ok(Json(json!({"step": "done"})))
}

#[derive(Deserialize)]
pub struct ChangePassword {
    login: String,
    old_password: String,
    new_password: String,
}

pub async fn change_password(
    State(s): State<AppState>,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<ChangePassword>,
) -> Result<Json<Value>, ApiError> {
    let (old, new) = (Password::new(body.old_password), Password::new(body.new_password));
    s.app.change_password(&body.login, &old, &new, &meta).await?;
    Ok(Json(json!({"changed": true})))
}

#[derive(Deserialize)]
pub struct CheckPassword {
    #[serde(default)]
    login: String,
    password: String,
}

pub async fn check_password(State(s): State<AppState>, ApiJson(body): ApiJson<CheckPassword>) -> Json<Value> {
    let (rules, violations) = s
        .app
        .password_checklist(&body.login, &Password::new(body.password))
        .await;
    Json(json!({"ok": violations.is_empty(), "violations": violations, "rules": rules}))
}

pub async fn password_policy(State(s): State<AppState>) -> Json<Value> {
    Json(json!({"rules": s.app.password_rules().await}))
}

#[derive(Deserialize)]
pub struct SignIn {
    login: String,
    password: String,
}

pub async fn sign_in(
    State(s): State<AppState>,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<Response, ApiError> {
    let token = s
        .app
        .sign_in(&body.login, &Password::new(body.password), &meta)
        .await?;
    let cookie = session_cookie(&s.web, Some(token.expose_secret()));
    Ok((
        [(header::SET_COOKIE, cookie)],
        Json(json!({"token": token.expose_secret()})),
    )
        .into_response())
}

pub async fn sign_out(
    State(s): State<AppState>,
    ApiSession(ctx): ApiSession,
) -> Result<StatusCode, ApiError> {
    s.app.sign_out(ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn method_json(m: &Method) -> Value {
    json!({"id": m.id.as_str(), "type": m.kind.as_str(), "hint": m.address.masked(), "verified": m.verified})
}

pub async fn my_methods(
    State(s): State<AppState>,
    ApiSession(ctx): ApiSession,
) -> Result<Json<Value>, ApiError> {
    let methods = s.app.my_methods(&ctx).await?;
    Ok(Json(
        json!({"methods": methods.iter().map(method_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize)]
pub struct AddMethod {
    #[serde(rename = "type")]
    kind: String,
    address: String,
}

pub async fn add_method(
    State(s): State<AppState>,
    Meta(meta): Meta,
    ApiSession(ctx): ApiSession,
    ApiJson(body): ApiJson<AddMethod>,
) -> Result<Response, ApiError> {
    let m = s.app.add_method(&ctx, &body.kind, &body.address, &meta).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": m.id.as_str(), "verified": m.verified})),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct CodeOnly {
    code: String,
}

pub async fn verify_method(
    State(s): State<AppState>,
    Meta(meta): Meta,
    ApiSession(ctx): ApiSession,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CodeOnly>,
) -> Result<Json<Value>, ApiError> {
    s.app.verify_method(&ctx, &id, &body.code, &meta).await?;
    Ok(Json(json!({"verified": true})))
}

pub async fn remove_method(
    State(s): State<AppState>,
    Meta(meta): Meta,
    ApiSession(ctx): ApiSession,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.app.remove_method(&ctx, &id, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound
}
