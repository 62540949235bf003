//! Row ↔ domain conversions.
use gatehouse_core::audit::{Activity, AuditEvent, Outcome};
use gatehouse_core::phone::Phone;
use gatehouse_core::ports::{AuditRow, Method, OutgoingMail, QueuedMail, StoreError, Target, UserProfile};
use gatehouse_core::types::{Email, FlowId, Login, MethodId, MethodKind};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use time::OffsetDateTime;

pub fn millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

pub fn time_of(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn bad(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("corrupt {what}: {e}"))
}

pub fn get<'r, T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>>(
    r: &'r SqliteRow,
    col: &str,
) -> Result<T, StoreError> {
    r.try_get(col).map_err(|e| bad(col, e))
}

pub fn method_row(r: &SqliteRow) -> Result<Method, StoreError> {
    let kind = MethodKind::parse(&get::<String>(r, "kind")?).map_err(|e| bad("method kind", e))?;
    let address: String = get(r, "address")?;
    let secret: Option<String> = get(r, "secret")?;
    let target = match kind {
        MethodKind::Email => Target::Email(Email::parse(&address).map_err(|e| bad("address", e))?),
        MethodKind::Sms | MethodKind::Voice => {
            Target::Phone(Phone::parse(&address, "ZZ").map_err(|e| bad("phone number", e))?)
        }
        MethodKind::Totp => {
            let secret = hex::decode(secret.unwrap_or_default()).map_err(|e| bad("authenticator key", e))?;
            let last: Option<i64> = get(r, "last_step")?;
            Target::Totp {
                secret,
                last_step: last.and_then(|s| u64::try_from(s).ok()),
            }
        }
        MethodKind::Questions => Target::Questions(
            serde_json::from_str(&secret.unwrap_or_default()).map_err(|e| bad("answers", e))?,
        ),
    };
    Ok(Method {
        id: MethodId::parse(&get::<String>(r, "id")?).map_err(|e| bad("method id", e))?,
        login: Login::parse(&get::<String>(r, "login")?).map_err(|e| bad("login", e))?,
        kind,
        target,
        verified: get(r, "verified")?,
        source: get(r, "source")?,
        created_at: time_of(get(r, "created_at")?),
        confirmed_at: get::<Option<i64>>(r, "verified_at")?.map(time_of),
    })
}

/// The `address` and `secret` columns of a method.
pub fn method_columns(m: &Method) -> Result<(String, Option<String>), StoreError> {
    Ok(match &m.target {
        Target::Email(e) => (e.as_str().to_owned(), None),
        Target::Phone(p) => (p.as_str().to_owned(), None),
        Target::Totp { secret, .. } => (String::new(), Some(hex::encode(secret))),
        Target::Questions(a) => (
            String::new(),
            Some(serde_json::to_string(a).map_err(|e| StoreError::Other(e.to_string()))?),
        ),
    })
}

pub fn profile_row(r: &SqliteRow) -> Result<UserProfile, StoreError> {
    let groups: String = get(r, "groups")?;
    let email: Option<String> = get(r, "email")?;
    Ok(UserProfile {
        login: Login::parse(&get::<String>(r, "login")?).map_err(|e| bad("login", e))?,
        display_name: get(r, "display_name")?,
        email: email.and_then(|e| Email::parse(&e).ok()),
        mobile_phone: get(r, "mobile_phone")?,
        groups: serde_json::from_str(&groups).unwrap_or_default(),
        disabled: get(r, "disabled")?,
    })
}

pub fn queued_mail(r: &SqliteRow) -> Result<QueuedMail, StoreError> {
    let attempts: i64 = get(r, "attempts")?;
    Ok(QueuedMail {
        id: get(r, "id")?,
        mail: OutgoingMail {
            to: Email::parse(&get::<String>(r, "recipient")?).map_err(|e| bad("recipient", e))?,
            subject: get(r, "subject")?,
            body: get(r, "body")?,
        },
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        created_at: time_of(get(r, "created_at")?),
        sent_at: get::<Option<i64>>(r, "sent_at")?.map(time_of),
        last_error: get(r, "last_error")?,
    })
}

fn activity(s: &str) -> Result<Activity, StoreError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|e| bad("activity", e))
}

pub fn audit_row(r: &SqliteRow) -> Result<AuditRow, StoreError> {
    let result: String = get(r, "result")?;
    let method: Option<String> = get(r, "method")?;
    let target: Option<String> = get(r, "target")?;
    let ip: Option<String> = get(r, "client_ip")?;
    Ok(AuditRow {
        id: get(r, "id")?,
        event: AuditEvent {
            at: time_of(get(r, "at")?),
            activity: activity(&get::<String>(r, "activity")?)?,
            actor: get(r, "actor")?,
            target: target
                .map(|t| Login::parse(&t))
                .transpose()
                .map_err(|e| bad("target", e))?,
            result: if result == "success" {
                Outcome::Success
            } else {
                Outcome::Failure
            },
            reason: get(r, "reason")?,
            method: method
                .map(|m| MethodKind::parse(&m))
                .transpose()
                .map_err(|e| bad("method", e))?,
            client_ip: ip.and_then(|i| i.parse().ok()),
            user_agent: get(r, "user_agent")?,
            flow_id: get::<Option<String>>(r, "flow_id")?.map(FlowId),
            directory: get(r, "directory")?,
        },
    })
}
