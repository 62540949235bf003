//! Audit events: domain records written in the same transaction as the change they record.
use crate::types::{FlowId, Login, MethodKind};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use time::OffsetDateTime;

/// What happened. The names are stable: reports and SIEM rules match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    FlowStarted,
    CodeSent,
    CodeVerified,
    CodeFailed,
    PasswordReset,
    PasswordChanged,
    AccountUnlocked,
    MethodRegistered,
    MethodVerified,
    MethodRemoved,
    SignedIn,
    SignInFailed,
    Blocked,
    UserImported,
    UserAdded,
    DirectorySynced,
    UserDisabled,
    LinkSent,
    MethodsReconfirmed,
    MethodsCleared,
    ReportedNotMe,
    FlagCleared,
}

impl Activity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FlowStarted => "flow_started",
            Self::CodeSent => "code_sent",
            Self::CodeVerified => "code_verified",
            Self::CodeFailed => "code_failed",
            Self::PasswordReset => "password_reset",
            Self::PasswordChanged => "password_changed",
            Self::AccountUnlocked => "account_unlocked",
            Self::MethodRegistered => "method_registered",
            Self::MethodVerified => "method_verified",
            Self::MethodRemoved => "method_removed",
            Self::SignedIn => "signed_in",
            Self::SignInFailed => "sign_in_failed",
            Self::Blocked => "blocked",
            Self::UserImported => "user_imported",
            Self::UserAdded => "user_added",
            Self::DirectorySynced => "directory_synced",
            Self::UserDisabled => "user_disabled",
            Self::LinkSent => "link_sent",
            Self::MethodsReconfirmed => "methods_reconfirmed",
            Self::MethodsCleared => "methods_cleared",
            Self::ReportedNotMe => "reported_not_me",
            Self::FlagCleared => "flag_cleared",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

/// One audit record. `reason` is a stable code (`unknown_account`, `invalid_code`, …), never a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub activity: Activity,
    pub actor: String,
    pub target: Option<Login>,
    pub result: Outcome,
    pub reason: Option<String>,
    pub method: Option<MethodKind>,
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub flow_id: Option<FlowId>,
    pub directory: Option<String>,
}
