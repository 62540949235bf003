//! The HTML portal. Works without JavaScript; every form carries a CSRF token; the flow token lives
//! in an HttpOnly cookie, never in a form field (only a mailed one-time link carries one in its URL,
//! and `/link/…` trades it for the cookie at once).
use crate::error::{log_cause, status_of};
use crate::extract::{cookie, Meta};
use crate::security::{cookie_name, csrf_ok, csrf_token, flow_cookie, session_cookie};
use crate::templates::{self as t, MethodItem};
use crate::AppState;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use gatehouse_core::flow::FlowStep;
use gatehouse_core::secret::Password;
use gatehouse_core::service::{FlowView, MethodView, NewMethod, Proof, SessionCtx};
use gatehouse_core::types::{FlowKind, MethodKind};
use gatehouse_core::ServiceError;
use serde::Deserialize;
use serde_json::json;

fn render(status: StatusCode, page: impl Template, set_cookies: Vec<String>) -> Response {
    match page.render() {
        Ok(html) => {
            let mut resp = (status, Html(html)).into_response();
            for c in set_cookies {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    resp.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on our side.",
            )
                .into_response()
        }
    }
}

fn org(s: &AppState) -> String {
    s.app.settings().branding.organisation.clone()
}

fn message(s: &AppState, status: StatusCode, title: &str, text: String, ok: bool) -> Response {
    render(
        status,
        t::Message {
            org: org(s),
            title: title.into(),
            message: text,
            ok,
        },
        vec![],
    )
}

fn error_page(s: &AppState, e: &ServiceError) -> Response {
    log_cause(e);
    message(s, status_of(e), "That did not work", e.public_message(), false)
}

fn csrf_refused(s: &AppState) -> Response {
    message(
        s,
        StatusCode::FORBIDDEN,
        "Please try again",
        "This form expired or came from another site. Go back, reload the page and submit it again.".into(),
        false,
    )
}

fn with_csrf(s: &AppState, headers: &HeaderMap) -> (String, Vec<String>) {
    let (token, set) = csrf_token(&s.web, headers);
    (token, set.into_iter().collect())
}

async fn rules(s: &AppState) -> Vec<(String, String)> {
    s.app
        .password_rules()
        .await
        .into_iter()
        .map(|r| (r.rule.to_owned(), r.text))
        .collect()
}

fn violation_texts(e: &ServiceError) -> Vec<String> {
    match e {
        ServiceError::PasswordRejected(v) => v.iter().map(|x| x.message.clone()).collect(),
        _ => vec![],
    }
}

pub async fn home(State(s): State<AppState>) -> Response {
    render(StatusCode::OK, t::Home { org: org(&s) }, vec![])
}

fn start_page(
    s: &AppState,
    headers: &HeaderMap,
    kind: FlowKind,
    login: String,
    error: Option<String>,
) -> Response {
    let (csrf, set) = with_csrf(s, headers);
    let (action, title, intro) = match kind {
        FlowKind::Reset => (
            "/reset",
            "Reset my password",
            "Enter your user name. We will send a code to a method you registered to confirm it is you.",
        ),
        FlowKind::Unlock => (
            "/unlock",
            "Unlock my account",
            "Enter your user name. After you confirm it is you, your account is unlocked and your password stays the same.",
        ),
    };
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    render(
        status,
        t::Start {
            org: org(s),
            csrf,
            action,
            title,
            intro,
            login,
            captcha: s.app.settings().captcha.is_some(),
            error,
        },
        set,
    )
}

pub async fn start_reset_page(State(s): State<AppState>, headers: HeaderMap) -> Response {
    start_page(&s, &headers, FlowKind::Reset, String::new(), None)
}

pub async fn start_unlock_page(State(s): State<AppState>, headers: HeaderMap) -> Response {
    start_page(&s, &headers, FlowKind::Unlock, String::new(), None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    csrf: String,
    login: String,
    #[serde(default)]
    altcha: Option<String>,
}

async fn start(s: AppState, headers: HeaderMap, meta: Meta, kind: FlowKind, form: LoginForm) -> Response {
    if !csrf_ok(&s.web, &headers, &form.csrf) {
        return csrf_refused(&s);
    }
    match s
        .app
        .start_flow(kind, &form.login, form.altcha.as_deref(), &meta.0)
        .await
    {
        Ok(started) => {
            let mut resp = Redirect::to("/flow").into_response();
            if let Ok(v) = HeaderValue::from_str(&flow_cookie(&s.web, Some(started.token.expose_secret()))) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
            resp
        }
        Err(e @ (ServiceError::Invalid(_) | ServiceError::CaptchaRequired | ServiceError::Throttled)) => {
            start_page(&s, &headers, kind, form.login, Some(e.public_message()))
        }
        Err(e) => error_page(&s, &e),
    }
}

pub async fn start_reset(
    State(s): State<AppState>,
    headers: HeaderMap,
    meta: Meta,
    Form(f): Form<LoginForm>,
) -> Response {
    start(s, headers, meta, FlowKind::Reset, f).await
}

pub async fn start_unlock(
    State(s): State<AppState>,
    headers: HeaderMap,
    meta: Meta,
    Form(f): Form<LoginForm>,
) -> Response {
    start(s, headers, meta, FlowKind::Unlock, f).await
}

fn flow_token(s: &AppState, headers: &HeaderMap) -> Option<String> {
    cookie(headers, &cookie_name(&s.web, "gh_flow")).filter(|v| !v.is_empty())
}

struct FlowExtras {
    error: Option<String>,
    notice: Option<String>,
    violations: Vec<String>,
    status: StatusCode,
}

impl FlowExtras {
    fn none() -> Self {
        Self {
            error: None,
            notice: None,
            violations: vec![],
            status: StatusCode::OK,
        }
    }
}

fn method_item(s: &AppState, m: &MethodView) -> MethodItem {
    let set = s.app.question_set();
    MethodItem {
        id: m.id.to_string(),
        kind: m.kind.as_str(),
        label: m.kind.label(),
        hint: m.hint.clone(),
        verified: false,
        questions: m
            .questions
            .iter()
            .filter_map(|id| set.get(id))
            .map(|q| (q.id.clone(), q.text.clone()))
            .collect(),
    }
}

async fn flow_view_page(s: &AppState, headers: &HeaderMap, v: &FlowView, x: FlowExtras) -> Response {
    let (csrf, set) = with_csrf(s, headers);
    let methods: Vec<MethodItem> = v.methods.iter().map(|m| method_item(s, m)).collect();
    let code_for = v
        .code_sent_to
        .as_ref()
        .and_then(|id| v.methods.iter().find(|m| &m.id == id).map(|m| method_item(s, m)));
    let page = t::FlowPage {
        org: org(s),
        csrf,
        title: match v.kind {
            FlowKind::Reset => "Reset my password",
            FlowKind::Unlock => "Unlock my account",
        },
        step: v.step.as_str(),
        unlock_available: v.unlock_available,
        required: v.required,
        verified: v.verified,
        has_senders: methods.iter().any(|m| m.sends_code()),
        has_phones: methods.iter().any(|m| m.is_phone()),
        methods,
        code_for,
        rules: rules(s).await,
        violations: x.violations,
        error: x.error,
        notice: x.notice,
    };
    render(x.status, page, set)
}

fn no_flow(s: &AppState) -> Response {
    message(
        s,
        StatusCode::NOT_FOUND,
        "Please start again",
        "This request is not valid any more (it may have expired). Please start again.".into(),
        false,
    )
}

async fn show_flow(s: &AppState, headers: &HeaderMap, x: FlowExtras) -> Response {
    let Some(token) = flow_token(s, headers) else {
        return no_flow(s);
    };
    match s.app.flow(&token).await {
        Ok(v) if v.step == FlowStep::Done => no_flow(s),
        Ok(v) => flow_view_page(s, headers, &v, x).await,
        Err(ServiceError::FlowNotFound) => no_flow(s),
        Err(e) => error_page(s, &e),
    }
}

pub async fn flow_page(State(s): State<AppState>, headers: HeaderMap) -> Response {
    show_flow(&s, &headers, FlowExtras::none()).await
}

#[derive(Deserialize)]
pub struct SendForm {
    csrf: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    confirm: Option<String>,
}

pub async fn flow_send(
    State(s): State<AppState>,
    headers: HeaderMap,
    meta: Meta,
    Form(f): Form<SendForm>,
) -> Response {
    if !csrf_ok(&s.web, &headers, &f.csrf) {
        return csrf_refused(&s);
    }
    let Some(token) = flow_token(&s, &headers) else {
        return no_flow(&s);
    };
    let confirm = f.confirm.as_deref().filter(|c| !c.trim().is_empty());
    let x = match s.app.send_code(&token, &f.method, confirm, &meta.0).await {
        Ok(()) => FlowExtras {
            notice: Some(
                "We sent a code (to a phone only if the number you typed matches). It can take a minute \
                 to arrive; check your spam folder too."
                    .into(),
            ),
            ..FlowExtras::none()
        },
        Err(e) => FlowExtras {
            error: Some(e.public_message()),
            status: status_of(&e),
            ..FlowExtras::none()
        },
    };
    show_flow(&s, &headers, x).await
}

/// The value of a form field (the first one of that name).
fn field<'a>(f: &'a [(String, String)], name: &str) -> &'a str {
    f.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

pub async fn flow_verify(
    State(s): State<AppState>,
    headers: HeaderMap,
    meta: Meta,
    Form(f): Form<Vec<(String, String)>>,
) -> Response {
    if !csrf_ok(&s.web, &headers, field(&f, "csrf")) {
        return csrf_refused(&s);
    }
    let Some(token) = flow_token(&s, &headers) else {
        return no_flow(&s);
    };
    let answers: Vec<(String, String)> = f
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("answer:").map(|q| (q.to_owned(), v.clone())))
        .collect();
    let proof = if answers.is_empty() {
        Proof::Code(field(&f, "code"))
    } else {
        Proof::Answers(&answers)
    };
    match s.app.verify(&token, field(&f, "method"), proof, &meta.0).await {
        Ok(_) => Redirect::to("/flow").into_response(),
        Err(e) => {
            let x = FlowExtras {
                error: Some(e.public_message()),
                status: status_of(&e),
                ..FlowExtras::none()
            };
            show_flow(&s, &headers, x).await
        }
    }
}

/// A recovery or onboarding link from a mail: the flow it carries continues in the portal.
pub async fn open_link(State(s): State<AppState>, Path(token): Path<String>) -> Response {
    match s.app.flow(&token).await {
        Ok(v) if v.step != FlowStep::Done => {
            let mut resp = Redirect::to("/flow").into_response();
            if let Ok(v) = HeaderValue::from_str(&flow_cookie(&s.web, Some(&token))) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
            resp
        }
        _ => no_flow(&s),
    }
}

#[derive(Deserialize)]
pub struct PasswordForm {
    csrf: String,
    password: String,
    confirm: String,
}

fn finished(s: &AppState, title: &str, text: &str) -> Response {
    let mut resp = message(s, StatusCode::OK, title, text.into(), true);
    if let Ok(v) = HeaderValue::from_str(&flow_cookie(&s.web, None)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

pub async fn flow_password(
    State(s): State<AppState>,
    headers: HeaderMap,
    meta: Meta,
    Form(f): Form<PasswordForm>,
) -> Response {
    if !csrf_ok(&s.web, &headers, &f.csrf) {
        return csrf_refused(&s);
    }
    let Some(token) = flow_token(&s, &headers) else {
        return no_flow(&s);
    };
    if f.password != f.confirm {
        let x = FlowExtras {
            violations: vec!["The two passwords are not the same.".into()],
            status: StatusCode::UNPROCESSABLE_ENTITY,
            ..FlowExtras::none()
        };
        return show_flow(&s, &headers, x).await;
    }
    match s.app.set_password(&token, &Password::new(f.password), &meta.0).await {
        Ok(()) => finished(
            &s,
            "Your password was reset",
            "Your new password is active and your account is unlocked. We sent a confirmation to your addresses.",
        ),
        Err(e @ ServiceError::PasswordRejected(_)) => {
            let x = FlowExtras { violations: violation_texts(&e), status: status_of(&e), ..FlowExtras::none() };
            show_flow(&s, &headers, x).await
        }
        Err(e) => {
            let x = FlowExtras { error: Some(e.public_message()), status: status_of(&e), ..FlowExtras::none() };
            show_flow(&s, &headers, x).await
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: String,
}

pub async fn flow_unlock(
    State(s): State<AppState>,
    headers: HeaderMap,
    meta: Meta,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if !csrf_ok(&s.web, &headers, &f.csrf) {
        return csrf_refused(&s);
    }
    let Some(token) = flow_token(&s, &headers) else {
        return no_flow(&s);
    };
    match s.app.unlock(&token, &meta.0).await {
        Ok(()) => finished(
            &s,
            "Your account is unlocked",
            "You can sign in again with your current password.",
        ),
        Err(e) => {
            let x = FlowExtras {
                error: Some(e.public_message()),
                status: status_of(&e),
                ..FlowExtras::none()
            };
            show_flow(&s, &headers, x).await
        }
    }
}

async fn change_form(s: &AppState, headers: &HeaderMap, login: String, e: Option<&ServiceError>) -> Response {
    let (csrf, set) = with_csrf(s, headers);
    let (violations, error, status) = match e {
        None => (vec![], None, StatusCode::OK),
        Some(e @ ServiceError::PasswordRejected(_)) => (violation_texts(e), None, status_of(e)),
        Some(e) => (vec![], Some(e.public_message()), status_of(e)),
    };
    render(
        status,
        t::Change {
            org: org(s),
            csrf,
            login,
            rules: rules(s).await,
            violations,
            error,
        },
        set,
    )
}

pub async fn change_page(State(s): State<AppState>, headers: HeaderMap) -> Response {
    change_form(&s, &headers, String::new(), None).await
}

#[derive(Deserialize)]
pub struct ChangeForm {
    csrf: String,
    login: String,
    old_password: String,
    new_password: String,
    confirm: String,
}

pub async fn change(
    State(s): State<AppState>,
    headers: HeaderMap,
    meta: Meta,
    Form(f): Form<ChangeForm>,
) -> Response {
    if !csrf_ok(&s.web, &headers, &f.csrf) {
        return csrf_refused(&s);
    }
    if f.new_password != f.confirm {
        let e = ServiceError::PasswordRejected(vec![gatehouse_core::password::Violation::new(
            "confirm",
            "The two new passwords are not the same.",
        )]);
        return change_form(&s, &headers, f.login, Some(&e)).await;
    }
    let (old, new) = (Password::new(f.old_password), Password::new(f.new_password));
    match s.app.change_password(&f.login, &old, &new, &meta.0).await {
        Ok(()) => message(
            &s,
            StatusCode::OK,
            "Your password was changed",
            "Use your new password from now on.".into(),
            true,
        ),
        Err(e) => change_form(&s, &headers, f.login, Some(&e)).await,
    }
}

fn signin_form(s: &AppState, headers: &HeaderMap, login: String, error: Option<&ServiceError>) -> Response {
    let (csrf, set) = with_csrf(s, headers);
    let status = error.map(status_of).unwrap_or(StatusCode::OK);
    render(
        status,
        t::SignIn {
            org: org(s),
            csrf,
            login,
            error: error.map(|e| e.public_message()),
        },
        set,
    )
}

pub async fn signin_page(State(s): State<AppState>, headers: HeaderMap) -> Response {
    signin_form(&s, &headers, String::new(), None)
}

#[derive(Deserialize)]
pub struct SignInForm {
    csrf: String,
    login: String,
    password: String,
}

pub async fn signin(
    State(s): State<AppState>,
    headers: HeaderMap,
    meta: Meta,
    Form(f): Form<SignInForm>,
) -> Response {
    if !csrf_ok(&s.web, &headers, &f.csrf) {
        return csrf_refused(&s);
    }
    match s.app.sign_in(&f.login, &Password::new(f.password), &meta.0).await {
        Ok(token) => {
            let mut resp = Redirect::to("/account").into_response();
            if let Ok(v) = HeaderValue::from_str(&session_cookie(&s.web, Some(token.expose_secret()))) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
            resp
        }
        Err(e) => signin_form(&s, &headers, f.login, Some(&e)),
    }
}

async fn portal_session(s: &AppState, headers: &HeaderMap) -> Option<SessionCtx> {
    let token = cookie(headers, &cookie_name(&s.web, "gh_session"))?;
    s.app.session(&token).await.ok()
}

pub async fn signout(State(s): State<AppState>, headers: HeaderMap, Form(f): Form<CsrfOnly>) -> Response {
    if !csrf_ok(&s.web, &headers, &f.csrf) {
        return csrf_refused(&s);
    }
    if let Some(ctx) = portal_session(&s, &headers).await {
        if let Err(e) = s.app.sign_out(ctx).await {
            return error_page(&s, &e);
        }
    }
    let mut resp = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&session_cookie(&s.web, None)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

async fn account_view(
    s: &AppState,
    headers: &HeaderMap,
    ctx: &SessionCtx,
    error: Option<&ServiceError>,
    notice: Option<&str>,
) -> Response {
    account_render(s, headers, ctx, error, notice, None).await
}

async fn account_render(
    s: &AppState,
    headers: &HeaderMap,
    ctx: &SessionCtx,
    error: Option<&ServiceError>,
    notice: Option<&str>,
    enrol: Option<(String, String, String)>,
) -> Response {
    let (csrf, set) = with_csrf(s, headers);
    let r = match s.app.registration(ctx).await {
        Ok(r) => r,
        Err(e) => return error_page(s, &e),
    };
    let page = t::Account {
        org: org(s),
        csrf,
        login: ctx.login().to_string(),
        methods: r
            .methods
            .iter()
            .map(|m| MethodItem {
                id: m.id.to_string(),
                kind: m.kind.as_str(),
                label: m.kind.label(),
                hint: m.hint(),
                verified: m.verified,
                questions: vec![],
            })
            .collect(),
        allowed: t::Allowed {
            email: r.allowed.contains(&MethodKind::Email),
            sms: r.allowed.contains(&MethodKind::Sms),
            voice: r.allowed.contains(&MethodKind::Voice),
            totp: r.allowed.contains(&MethodKind::Totp),
            questions: r.allowed.contains(&MethodKind::Questions),
        },
        registration_required: r.registration_required,
        reconfirm_due: r.reconfirm_due,
        register_required: r.register_required,
        verified: r.verified,
        questions: s
            .app
            .question_set()
            .all()
            .iter()
            .map(|q| (q.id.clone(), q.text.clone()))
            .collect(),
        questions_register: r.questions_register,
        enrol,
        error: error.map(|e| e.public_message()),
        notice: notice.map(String::from),
    };
    render(error.map(status_of).unwrap_or(StatusCode::OK), page, set)
}

pub async fn account_page(State(s): State<AppState>, headers: HeaderMap) -> Response {
    match portal_session(&s, &headers).await {
        Some(ctx) => account_view(&s, &headers, &ctx, None, None).await,
        None => Redirect::to("/signin").into_response(),
    }
}

/// Checks the form's CSRF token and the portal session, runs one account action, and shows the
/// account page with its outcome.
async fn account_action<F, Fut>(
    s: &AppState,
    headers: &HeaderMap,
    csrf: &str,
    done: &str,
    action: F,
) -> Response
where
    F: FnOnce(SessionCtx) -> Fut,
    Fut: std::future::Future<Output = Result<(), ServiceError>>,
{
    if !csrf_ok(&s.web, headers, csrf) {
        return csrf_refused(s);
    }
    let Some(ctx) = portal_session(s, headers).await else {
        return Redirect::to("/signin").into_response();
    };
    match action(ctx.clone()).await {
        Ok(()) => account_view(s, headers, &ctx, None, Some(done)).await,
        Err(e) => account_view(s, headers, &ctx, Some(&e), None).await,
    }
}

pub async fn account_add(
    State(s): State<AppState>,
    headers: HeaderMap,
    meta: Meta,
    Form(f): Form<Vec<(String, String)>>,
) -> Response {
    if !csrf_ok(&s.web, &headers, field(&f, "csrf")) {
        return csrf_refused(&s);
    }
    let Some(ctx) = portal_session(&s, &headers).await else {
        return Redirect::to("/signin").into_response();
    };
    let kind = match MethodKind::parse(field(&f, "type")) {
        Ok(k) => k,
        Err(e) => return account_view(&s, &headers, &ctx, Some(&e.into()), None).await,
    };
    let questions: Vec<&str> = f
        .iter()
        .filter(|(k, _)| k == "question")
        .map(|(_, v)| v.as_str())
        .collect();
    let answers: Vec<(String, String)> = f
        .iter()
        .filter(|(k, _)| k == "answer")
        .zip(questions)
        .map(|((_, a), q)| (q.to_owned(), a.clone()))
        .collect();
    let new = match kind {
        MethodKind::Email => NewMethod::Email(field(&f, "address")),
        MethodKind::Sms | MethodKind::Voice => NewMethod::Phone {
            kind,
            number: field(&f, "phone"),
        },
        MethodKind::Totp => NewMethod::Totp,
        MethodKind::Questions => NewMethod::Questions(&answers),
    };
    match s.app.add_method(&ctx, new, &meta.0).await {
        Ok(r) => {
            let enrol = match (r.otpauth_uri, r.qr_svg) {
                (Some(uri), Some(svg)) => {
                    let key = uri
                        .split(['?', '&'])
                        .find_map(|p| p.strip_prefix("secret="))
                        .unwrap_or_default()
                        .to_owned();
                    Some((r.method.id.to_string(), svg, key))
                }
                _ => None,
            };
            let done = match kind {
                MethodKind::Totp => "Now scan the code with your app and enter the code it shows.",
                MethodKind::Questions => "Your answers are saved.",
                MethodKind::Voice => "We are calling the number with a code. Enter it below.",
                MethodKind::Sms => "We sent a text message with a code. Enter it below.",
                MethodKind::Email => "We sent a code to the new address. Enter it below.",
            };
            account_render(&s, &headers, &ctx, None, Some(done), enrol).await
        }
        Err(e) => account_view(&s, &headers, &ctx, Some(&e), None).await,
    }
}

pub async fn account_reconfirm(
    State(s): State<AppState>,
    headers: HeaderMap,
    meta: Meta,
    Form(f): Form<CsrfOnly>,
) -> Response {
    let app = s.app.clone();
    account_action(
        &s,
        &headers,
        &f.csrf,
        "Thank you: your methods are confirmed.",
        |ctx| async move { app.reconfirm(&ctx, &meta.0).await },
    )
    .await
}

#[derive(Deserialize)]
pub struct CodeForm {
    csrf: String,
    code: String,
}

pub async fn account_verify(
    State(s): State<AppState>,
    headers: HeaderMap,
    meta: Meta,
    Path(id): Path<String>,
    Form(f): Form<CodeForm>,
) -> Response {
    let app = s.app.clone();
    account_action(
        &s,
        &headers,
        &f.csrf,
        "The method is verified.",
        |ctx| async move { app.verify_method(&ctx, &id, &f.code, &meta.0).await },
    )
    .await
}

pub async fn account_remove(
    State(s): State<AppState>,
    headers: HeaderMap,
    meta: Meta,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    let app = s.app.clone();
    account_action(
        &s,
        &headers,
        &f.csrf,
        "The method was removed.",
        |ctx| async move { app.remove_method(&ctx, &id, &meta.0).await },
    )
    .await
}

pub async fn dev_mailbox(State(s): State<AppState>) -> Response {
    match s.app.recent_mail(50).await {
        Ok(mails) => {
            let fmt = time::format_description::well_known::Rfc3339;
            let items = mails
                .into_iter()
                .map(|m| t::MailItem {
                    id: m.id,
                    to: m.mail.to.to_string(),
                    subject: m.mail.subject,
                    body: m.mail.body,
                    status: match (m.sent_at, m.last_error) {
                        (Some(_), _) => "delivered".into(),
                        (None, Some(e)) => format!("queued, retrying ({e})"),
                        (None, None) => "queued".into(),
                    },
                    created: m.created_at.format(&fmt).unwrap_or_default(),
                })
                .collect();
            render(
                StatusCode::OK,
                t::Mailbox {
                    org: org(&s),
                    mails: items,
                },
                vec![],
            )
        }
        Err(e) => error_page(&s, &e),
    }
}

pub async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

pub async fn readyz(State(s): State<AppState>) -> Response {
    let r = s.app.readiness().await;
    let ok = r.ready();
    for c in r.rights.iter().filter(|c| !c.ok) {
        tracing::warn!(right = %c.right, detail = %c.detail, "readiness: directory self-test");
    }
    // Names and verdicts only: the details (DNs, texts) are for `gatehouse directory test`.
    let rights: serde_json::Map<String, serde_json::Value> =
        r.rights.iter().map(|c| (c.right.clone(), json!(c.ok))).collect();
    let word = |x: &Result<(), String>| if x.is_ok() { "ok" } else { "unavailable" };
    if let Err(e) = &r.store {
        tracing::warn!(error = %e, "readiness: store");
    }
    if let Err(e) = &r.directory {
        tracing::warn!(error = %e, "readiness: directory");
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(json!({"status": if ok {"ok"} else {"unavailable"}, "store": word(&r.store), "directory": word(&r.directory), "rights": rights})))
        .into_response()
}

pub async fn not_found(State(s): State<AppState>) -> Response {
    message(
        &s,
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no page here.".into(),
        false,
    )
}

/// "This wasn't me", step 1: a confirmation page (a mail scanner fetching the link changes nothing).
pub async fn not_me_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let (csrf, set) = with_csrf(&s, &headers);
    render(
        StatusCode::OK,
        t::NotMe {
            org: org(&s),
            csrf,
            token,
        },
        set,
    )
}

#[derive(Deserialize)]
pub struct NotMeForm {
    csrf: String,
    token: String,
}

/// "This wasn't me", step 2: lock (or flag) the account and alert the administrators.
pub async fn not_me(
    State(s): State<AppState>,
    headers: HeaderMap,
    meta: Meta,
    Form(f): Form<NotMeForm>,
) -> Response {
    if !csrf_ok(&s.web, &headers, &f.csrf) {
        return csrf_refused(&s);
    }
    match s.app.report_not_me(&f.token, &meta.0).await {
        Ok(()) => message(
            &s,
            StatusCode::OK,
            "Your account is locked",
            format!(
                "Thank you. Your account is locked and the helpdesk is alerted. Contact {} to get back in.",
                s.app.settings().branding.helpdesk
            ),
            true,
        ),
        Err(ServiceError::NotFound) => message(
            &s,
            StatusCode::NOT_FOUND,
            "This link is not valid",
            "This link was already used or has expired. If you think someone else is using your account, \
             contact the helpdesk now."
                .into(),
            false,
        ),
        Err(e) => error_page(&s, &e),
    }
}
