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
use gatehouse_core::service::{FlowView, NewMethod, Proof, Registration};
use gatehouse_core::types::{FlowKind, MethodKind, ParseError};
use gatehouse_core::ServiceError;
use serde::Deserialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;

fn methods_json(s: &AppState, v: &FlowView) -> Value {
    Value::Array(
        v.methods
            .iter()
            .map(|m| {
                let mut o = json!({"id": m.id.as_str(), "type": m.kind.as_str(), "hint": m.hint});
                if m.kind == MethodKind::Questions {
                    o["questions"] = questions_json(s, &m.questions);
                }
                if m.kind.is_phone() {
                    o["confirm"] = json!("type the full number to receive the code");
                }
                o
            })
            .collect(),
    )
}

fn questions_json(s: &AppState, ids: &[String]) -> Value {
    let set = s.app.question_set();
    Value::Array(
        ids.iter()
            .filter_map(|id| set.get(id))
            .map(|q| json!({"id": q.id, "text": q.text}))
            .collect(),
    )
}

/// The body of a flow view (start, verify, link).
pub fn flow_json(s: &AppState, v: &FlowView) -> Value {
    let mut out = json!({
        "kind": v.kind.as_str(),
        "step": v.step.as_str(),
        "required": v.required,
        "verified": v.verified,
        "methods": methods_json(s, v),
    });
    if v.unlock_available {
        out["unlock_available"] = json!(true);
    }
    out
}

#[derive(Deserialize)]
pub struct StartFlow {
    kind: String,
    login: String,
    /// The solved proof-of-work challenge (see `GET /api/v1/captcha`): base64 text, or the JSON
    /// object itself.
    #[serde(default)]
    altcha: Option<Value>,
}

#[derive(Deserialize)]
pub struct CaptchaQuery {
    #[serde(default)]
    login: Option<String>,
}

/// A proof-of-work challenge (ALTCHA v1 shape); 204 when the CAPTCHA is off.
pub async fn captcha(
    State(s): State<AppState>,
    Meta(meta): Meta,
    crate::extract::ApiQuery(q): crate::extract::ApiQuery<CaptchaQuery>,
) -> Result<Response, ApiError> {
    match s.app.pow_challenge(q.login.as_deref(), &meta).await? {
        Some(c) => Ok(([(header::CACHE_CONTROL, "no-store")], Json(c)).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

pub async fn start_flow(
    State(s): State<AppState>,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<StartFlow>,
) -> Result<Response, ApiError> {
    let kind = FlowKind::parse(&body.kind).map_err(ServiceError::from)?;
    let altcha = match body.altcha {
        Some(Value::String(s)) => Some(s),
        Some(other @ Value::Object(_)) => Some(other.to_string()),
        _ => None,
    };
    let started = s
        .app
        .start_flow(kind, &body.login, altcha.as_deref(), &meta)
        .await?;
    let mut out = flow_json(&s, &started.view);
    out["flow"] = json!(started.token.expose_secret());
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[derive(Deserialize)]
pub struct SendCode {
    flow: String,
    method: String,
    /// Phone methods: the full number, typed by the user.
    #[serde(default)]
    confirm: Option<String>,
}

pub async fn send_code(
    State(s): State<AppState>,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<SendCode>,
) -> Result<Response, ApiError> {
    s.app
        .send_code(&body.flow, &body.method, body.confirm.as_deref(), &meta)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"sent": true}))).into_response())
}

#[derive(Deserialize)]
pub struct Answer {
    question: String,
    answer: String,
}

fn answer_pairs(answers: Vec<Answer>) -> Vec<(String, String)> {
    answers.into_iter().map(|a| (a.question, a.answer)).collect()
}

#[derive(Deserialize)]
pub struct VerifyCode {
    flow: String,
    method: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    answers: Option<Vec<Answer>>,
}

pub async fn verify_code(
    State(s): State<AppState>,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<VerifyCode>,
) -> Result<Json<Value>, ApiError> {
    let answers = body.answers.map(answer_pairs);
    let proof = match (&body.code, &answers) {
        (Some(code), _) => Proof::Code(code),
        (None, Some(a)) => Proof::Answers(a),
        (None, None) => {
            return Err(ServiceError::from(ParseError::new("code", "give the code, or the answers")).into())
        }
    };
    let v = s.app.verify(&body.flow, &body.method, proof, &meta).await?;
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
    json!({
        "id": m.id.as_str(),
        "type": m.kind.as_str(),
        "hint": m.hint(),
        "verified": m.verified,
        "source": m.source,
        "confirmed_at": m.confirmed_at.and_then(|t| t.format(&Rfc3339).ok()),
    })
}

/// A user's registration state (the user's own, or for the helpdesk).
pub fn registration_json(r: &Registration) -> Value {
    json!({
        "login": r.login.as_str(),
        "policy": r.policy,
        "methods": r.methods.iter().map(method_json).collect::<Vec<_>>(),
        "allowed": r.allowed.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        "flows": r.flows.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
        "reset_required": r.reset_required,
        "register_required": r.register_required,
        "verified": r.verified,
        "registration_required": r.registration_required,
        "reconfirm_due": r.reconfirm_due,
        "flagged": r.flagged,
    })
}

pub async fn my_methods(
    State(s): State<AppState>,
    ApiSession(ctx): ApiSession,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(registration_json(&s.app.registration(&ctx).await?)))
}

pub async fn reconfirm(
    State(s): State<AppState>,
    Meta(meta): Meta,
    ApiSession(ctx): ApiSession,
) -> Result<Json<Value>, ApiError> {
    s.app.reconfirm(&ctx, &meta).await?;
    Ok(Json(registration_json(&s.app.registration(&ctx).await?)))
}

pub async fn questions(
    State(s): State<AppState>,
    session: Option<ApiSession>,
) -> Result<Json<Value>, ApiError> {
    let register = s
        .app
        .questions_to_register(session.as_ref().map(|ApiSession(c)| c))
        .await?;
    let all: Vec<Value> = s
        .app
        .question_set()
        .all()
        .iter()
        .map(|q| json!({"id": q.id, "text": q.text}))
        .collect();
    Ok(Json(json!({"questions": all, "register": register})))
}

#[derive(Deserialize)]
pub struct AddMethod {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    answers: Option<Vec<Answer>>,
}

pub async fn add_method(
    State(s): State<AppState>,
    Meta(meta): Meta,
    ApiSession(ctx): ApiSession,
    ApiJson(body): ApiJson<AddMethod>,
) -> Result<Response, ApiError> {
    let kind = MethodKind::parse(&body.kind).map_err(ServiceError::from)?;
    let missing = |field: &'static str, what: &str| ServiceError::from(ParseError::new(field, what));
    let answers = body.answers.map(answer_pairs);
    let new = match kind {
        MethodKind::Email => NewMethod::Email(
            body.address
                .as_deref()
                .ok_or_else(|| missing("address", "give the email address"))?,
        ),
        MethodKind::Sms | MethodKind::Voice => NewMethod::Phone {
            kind,
            number: body
                .phone
                .as_deref()
                .ok_or_else(|| missing("phone", "give the phone number"))?,
        },
        MethodKind::Totp => NewMethod::Totp,
        MethodKind::Questions => NewMethod::Questions(
            answers
                .as_deref()
                .ok_or_else(|| missing("answers", "give the answers"))?,
        ),
    };
    let r = s.app.add_method(&ctx, new, &meta).await?;
    let mut out = json!({"id": r.method.id.as_str(), "type": kind.as_str(), "verified": r.method.verified});
    if let Some(uri) = r.otpauth_uri {
        out["otpauth_uri"] = json!(uri);
    }
    if let Some(svg) = r.qr_svg {
        out["qr_svg"] = json!(svg);
    }
    Ok((StatusCode::CREATED, Json(out)).into_response())
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

/// A recovery or onboarding link, for API clients: the token in the link is the flow token.
pub async fn open_link(
    State(s): State<AppState>,
    ApiJson(body): ApiJson<FlowOnly>,
) -> Result<Json<Value>, ApiError> {
    let v = s.app.flow(&body.flow).await?;
    Ok(Json(flow_json(&s, &v)))
}
