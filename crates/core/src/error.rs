//! The core's error enum, mapped to status codes and public wording once, at the web edge.
use crate::flow::FlowError;
use crate::password::Violation;
use crate::ports::{DirectoryError, StoreError};
use crate::types::ParseError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(#[from] ParseError),
    #[error("flow not found")]
    FlowNotFound,
    #[error(transparent)]
    Flow(#[from] FlowError),
    #[error("too many wrong codes")]
    TooManyAttempts,
    #[error("password rejected")]
    PasswordRejected(Vec<Violation>),
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("account locked")]
    AccountLocked,
    #[error("password expired")]
    PasswordExpired,
    #[error("account restricted: {0}")]
    AccountRestricted(String),
    #[error("not signed in")]
    Unauthorized,
    #[error("not found")]
    NotFound,
    #[error("directory unavailable: {0}")]
    DirectoryUnavailable(String),
    #[error("phone provider unavailable: {0}")]
    PhoneUnavailable(String),
    #[error("not allowed by policy")]
    NotAllowed(&'static str),
    #[error("throttled")]
    Throttled,
    #[error("proof of work missing or not valid")]
    CaptchaRequired,
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
}

impl ServiceError {
    /// The stable, greppable code that clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_request",
            Self::FlowNotFound => "flow_not_found",
            Self::Flow(FlowError::Expired) => "flow_expired",
            Self::Flow(FlowError::Finished) => "flow_finished",
            Self::Flow(FlowError::WrongStep) => "wrong_step",
            Self::Flow(FlowError::UnknownMethod) => "unknown_method",
            Self::Flow(FlowError::InvalidCode) => "invalid_code",
            Self::Flow(FlowError::CodeExpired) => "code_expired",
            Self::TooManyAttempts => "too_many_attempts",
            Self::PasswordRejected(_) => "password_rejected",
            Self::InvalidCredentials => "invalid_credentials",
            Self::AccountLocked => "account_locked",
            Self::PasswordExpired => "password_expired",
            Self::AccountRestricted(_) => "account_restricted",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::DirectoryUnavailable(_) => "directory_unavailable",
            Self::PhoneUnavailable(_) => "phone_unavailable",
            Self::NotAllowed(_) => "not_allowed",
            Self::Throttled => "too_many_requests",
            Self::CaptchaRequired => "captcha_required",
            Self::Store(_) => "service_unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// Words for people. Never contains internal causes.
    pub fn public_message(&self) -> String {
        match self {
            Self::Invalid(e) => e.message.clone(),
            Self::FlowNotFound => "This request is not valid any more. Please start again.".into(),
            Self::Flow(FlowError::Expired) => "This request has expired. Please start again.".into(),
            Self::Flow(FlowError::Finished) => "This request is already complete.".into(),
            Self::Flow(FlowError::WrongStep) => "That step is not available now.".into(),
            Self::Flow(FlowError::UnknownMethod) => "Choose one of the methods offered.".into(),
            Self::Flow(FlowError::InvalidCode) => "That code is not valid. Check it and try again.".into(),
            Self::Flow(FlowError::CodeExpired) => "That code has expired. Send a new one.".into(),
            Self::TooManyAttempts => {
                "Too many wrong codes. Self-service is blocked for this account for a while; \
                 contact the helpdesk if you need help now."
                    .into()
            }
            Self::PasswordRejected(_) => "The new password does not meet the rules.".into(),
            Self::InvalidCredentials => "The user name or password is not correct.".into(),
            Self::AccountLocked => "Your account is locked. Use \"I'm locked out\" to unlock it.".into(),
            Self::PasswordExpired => {
                "Your password has expired. Choose a new one on the \"Change password\" page with your \
                 current password."
                    .into()
            }
            Self::AccountRestricted(why) => why.clone(),
            Self::Unauthorized => "Please sign in.".into(),
            Self::NotFound => "Not found.".into(),
            Self::DirectoryUnavailable(_) => {
                "The directory cannot be reached right now. Nothing was changed; please try again in a \
                 few minutes."
                    .into()
            }
            Self::PhoneUnavailable(_) => {
                "The text message or call could not be sent right now. Try again in a few minutes, or \
                 choose another method."
                    .into()
            }
            Self::NotAllowed(what) => format!("Your organisation's policy does not allow {what}."),
            Self::Throttled => {
                "Too many attempts. For your security, self-service is paused for a while; try \
                                again later or contact the helpdesk."
                    .into()
            }
            Self::CaptchaRequired => {
                "Please let the page finish its browser check and try again (API clients: \
                                      solve a new challenge from /api/v1/captcha)."
                    .into()
            }
            Self::Store(_) | Self::Internal(_) => {
                "Something went wrong on our side. Please try again in a few minutes.".into()
            }
        }
    }
}

impl From<DirectoryError> for ServiceError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::Unavailable(m) => Self::DirectoryUnavailable(m),
            DirectoryError::InvalidCredentials | DirectoryError::NotFound | DirectoryError::Disabled => {
                Self::InvalidCredentials
            }
            DirectoryError::Rejected(v) => Self::PasswordRejected(v),
            DirectoryError::Locked => Self::AccountLocked,
            DirectoryError::PasswordExpired => Self::PasswordExpired,
            DirectoryError::Restricted(why) => Self::AccountRestricted(why),
            DirectoryError::InsufficientRights(m) => Self::Internal(format!("service account: {m}")),
            DirectoryError::Unsupported(m) => Self::Internal(m.into()),
            DirectoryError::Other(m) => Self::Internal(m),
        }
    }
}
