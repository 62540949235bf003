//! The only place that chooses status codes and public wording. Internal causes go to the log.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use gatehouse_core::flow::FlowError;
use gatehouse_core::password::Violation;
use gatehouse_core::ServiceError;
use serde::Serialize;

pub fn status_of(e: &ServiceError) -> StatusCode {
    match e {
        ServiceError::Invalid(_) => StatusCode::BAD_REQUEST,
        ServiceError::FlowNotFound | ServiceError::NotFound => StatusCode::NOT_FOUND,
        ServiceError::Flow(FlowError::Expired) => StatusCode::GONE,
        ServiceError::Flow(FlowError::Finished | FlowError::WrongStep) => StatusCode::CONFLICT,
        ServiceError::Flow(FlowError::UnknownMethod | FlowError::InvalidCode | FlowError::CodeExpired) => {
            StatusCode::BAD_REQUEST
        }
        ServiceError::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
        ServiceError::PasswordRejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ServiceError::InvalidCredentials | ServiceError::Unauthorized => StatusCode::UNAUTHORIZED,
        ServiceError::AccountLocked | ServiceError::PasswordExpired | ServiceError::AccountRestricted(_) => {
            StatusCode::FORBIDDEN
        }
        ServiceError::DirectoryUnavailable(_)
        | ServiceError::PhoneUnavailable(_)
        | ServiceError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        ServiceError::NotAllowed(_) => StatusCode::FORBIDDEN,
        ServiceError::Throttled => StatusCode::TOO_MANY_REQUESTS,
        ServiceError::CaptchaRequired => StatusCode::BAD_REQUEST,
        ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Logs the internal cause of server-side errors (never user input or secrets).
pub fn log_cause(e: &ServiceError) {
    match e {
        ServiceError::DirectoryUnavailable(cause) => tracing::warn!(%cause, "directory unavailable"),
        ServiceError::Store(cause) => tracing::error!(%cause, "store error"),
        ServiceError::Internal(cause) => tracing::error!(%cause, "internal error"),
        _ => {}
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    error: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    violations: Option<&'a [Violation]>,
}

/// A JSON problem: `{"error":"<stable code>","message":"<for people>"}`.
#[derive(Debug)]
pub enum ApiError {
    Service(ServiceError),
    BadRequest(String),
    NotFound,
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        Self::Service(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Service(e) => {
                log_cause(&e);
                let violations = match &e {
                    ServiceError::PasswordRejected(v) => Some(v.as_slice()),
                    _ => None,
                };
                let body = Problem {
                    error: e.code(),
                    message: e.public_message(),
                    violations,
                };
                let mut resp = (status_of(&e), Json(body)).into_response();
                if matches!(e, ServiceError::TooManyAttempts) {
                    resp.headers_mut().insert(
                        axum::http::header::RETRY_AFTER,
                        axum::http::HeaderValue::from_static("3600"),
                    );
                }
                resp
            }
            Self::BadRequest(message) => (
                StatusCode::BAD_REQUEST,
                Json(Problem {
                    error: "invalid_request",
                    message,
                    violations: None,
                }),
            )
                .into_response(),
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                Json(Problem {
                    error: "not_found",
                    message: "No such endpoint.".into(),
                    violations: None,
                }),
            )
                .into_response(),
        }
    }
}
