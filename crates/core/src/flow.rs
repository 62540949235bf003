//! Reset and unlock flows as a state machine with pure transitions.
//!
//! Only a flow in [`FlowStep::Password`] can lead to a password write, and only one in
//! [`FlowStep::Unlock`] to an unlock. Decoy flows (unknown, disabled or unregistered logins) walk the
//! same states but can never verify.
use crate::phone::Phone;
use crate::secret::{hashes_equal, TokenHash};
use crate::types::{Email, FlowId, FlowKind, Login, MethodId, MethodKind};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowStep {
    Verify,
    Password,
    Unlock,
    Done,
}

impl FlowStep {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Password => "password",
            Self::Unlock => "unlock",
            Self::Done => "done",
        }
    }
}

/// Where a flow method's proof comes from. Secrets (authenticator key, answer hashes) stay in the
/// store; a flow only knows which questions it asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum FlowTarget {
    Email(Email),
    Phone(Phone),
    Totp,
    /// The ids of the questions this flow asks.
    Questions(Vec<String>),
}

/// A method offered in a flow: real (with its target) or a decoy (no target).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowMethod {
    pub id: MethodId,
    pub kind: MethodKind,
    pub hint: String,
    #[serde(default)]
    pub target: Option<FlowTarget>,
}

/// The code rules of the policy the flow started under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRules {
    pub digits: u8,
    pub lifetime_seconds: i64,
    pub attempts: u32,
}

impl Default for CodeRules {
    fn default() -> Self {
        Self {
            digits: 6,
            lifetime_seconds: 600,
            attempts: 5,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCode {
    pub method: MethodId,
    #[serde(with = "hex_hash")]
    pub hash: TokenHash,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    pub id: FlowId,
    #[serde(with = "hex_hash")]
    pub token_hash: TokenHash,
    pub kind: FlowKind,
    pub login: Login,
    /// False for decoys: the login is unknown, disabled or has no usable method.
    pub genuine: bool,
    pub methods: Vec<FlowMethod>,
    pub required: u8,
    pub verified: Vec<MethodId>,
    pub code: Option<PendingCode>,
    pub step: FlowStep,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub version: i64,
    /// A reset flow for a locked account: once verified, the user may unlock instead of resetting.
    #[serde(default)]
    pub offer_unlock: bool,
    #[serde(default)]
    pub codes: CodeRules,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error("this flow has expired; start again")]
    Expired,
    #[error("this flow is finished")]
    Finished,
    #[error("this step is not available now")]
    WrongStep,
    #[error("unknown method")]
    UnknownMethod,
    #[error("the code is not valid")]
    InvalidCode,
    #[error("the code has expired; send a new one")]
    CodeExpired,
}

impl Flow {
    fn active(&self, now: OffsetDateTime) -> Result<(), FlowError> {
        if self.step == FlowStep::Done {
            return Err(FlowError::Finished);
        }
        if now >= self.expires_at {
            return Err(FlowError::Expired);
        }
        Ok(())
    }

    fn method(&self, id: &MethodId) -> Result<&FlowMethod, FlowError> {
        self.methods
            .iter()
            .find(|m| &m.id == id)
            .ok_or(FlowError::UnknownMethod)
    }

    /// A new code was generated for `method`; it replaces any earlier one.
    pub fn code_sent(
        &mut self,
        method: &MethodId,
        hash: TokenHash,
        now: OffsetDateTime,
        lifetime: time::Duration,
    ) -> Result<FlowMethod, FlowError> {
        self.active(now)?;
        if self.step != FlowStep::Verify {
            return Err(FlowError::WrongStep);
        }
        let m = self.method(method)?.clone();
        if self.verified.contains(method) {
            return Err(FlowError::WrongStep);
        }
        self.code = Some(PendingCode {
            method: method.clone(),
            hash,
            expires_at: now + lifetime,
        });
        Ok(m)
    }

    /// Checks a typed code. On success the method counts as verified; once enough methods are,
    /// the flow moves on to the password (reset) or unlock step.
    pub fn verify(
        &mut self,
        method: &MethodId,
        typed: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<(), FlowError> {
        self.active(now)?;
        if self.step != FlowStep::Verify {
            return Err(FlowError::WrongStep);
        }
        self.method(method)?;
        let Some(pending) = self.code.as_ref().filter(|c| &c.method == method) else {
            return Err(FlowError::InvalidCode);
        };
        if now >= pending.expires_at {
            return Err(FlowError::CodeExpired);
        }
        if !hashes_equal(&pending.hash, typed) || !self.genuine {
            return Err(FlowError::InvalidCode);
        }
        self.code = None;
        self.accept(method, now)
    }

    /// Whether `method` may be proved now (before checking an authenticator code or answers).
    pub fn can_prove(&self, method: &MethodId, now: OffsetDateTime) -> Result<&FlowMethod, FlowError> {
        self.active(now)?;
        if self.step != FlowStep::Verify || self.verified.contains(method) {
            return Err(FlowError::WrongStep);
        }
        self.method(method)
    }

    /// A method was proved (a code matched here, or an authenticator code or answers were checked by
    /// the caller). Once enough distinct methods are, the flow moves on to the password (reset) or
    /// unlock step.
    pub fn accept(&mut self, method: &MethodId, now: OffsetDateTime) -> Result<(), FlowError> {
        self.can_prove(method, now)?;
        if !self.genuine {
            return Err(FlowError::InvalidCode);
        }
        self.verified.push(method.clone());
        if self.verified.len() >= usize::from(self.required) {
            self.code = None;
            self.step = match self.kind {
                FlowKind::Reset => FlowStep::Password,
                FlowKind::Unlock => FlowStep::Unlock,
            };
        }
        Ok(())
    }

    /// The flow may write a password now (reset flows, all methods verified).
    pub fn ready_for_password(&self, now: OffsetDateTime) -> Result<(), FlowError> {
        self.active(now)?;
        if self.step == FlowStep::Password && self.genuine {
            Ok(())
        } else {
            Err(FlowError::WrongStep)
        }
    }

    /// The flow may unlock now (unlock flows, all methods verified; or a verified reset flow of a
    /// locked account, whose user chose to keep the password).
    pub fn ready_for_unlock(&self, now: OffsetDateTime) -> Result<(), FlowError> {
        self.active(now)?;
        let unlock_instead = self.step == FlowStep::Password && self.offer_unlock;
        if (self.step == FlowStep::Unlock || unlock_instead) && self.genuine {
            Ok(())
        } else {
            Err(FlowError::WrongStep)
        }
    }

    pub fn finish(&mut self) {
        self.step = FlowStep::Done;
        self.code = None;
    }

    pub fn verified_addresses(&self) -> Vec<Email> {
        self.methods
            .iter()
            .filter(|m| self.verified.contains(&m.id))
            .filter_map(|m| match &m.target {
                Some(FlowTarget::Email(e)) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }
}

mod hex_hash {
    use crate::secret::TokenHash;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &TokenHash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&h.to_hex())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TokenHash, D::Error> {
        let s = String::deserialize(d)?;
        let bytes = hex::decode(s).map_err(serde::de::Error::custom)?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("hash length"))?;
        Ok(TokenHash(arr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use time::Duration;

    const T0: OffsetDateTime = datetime!(2026-11-21 10:00 UTC);

    fn mid(n: u8) -> MethodId {
        MethodId::parse(&format!("{:0>20}", n)).unwrap()
    }

    fn flow(kind: FlowKind, required: u8, genuine: bool) -> Flow {
        Flow {
            id: FlowId("f1".into()),
            token_hash: TokenHash([1; 32]),
            kind,
            login: Login::parse("alice").unwrap(),
            genuine,
            methods: vec![
                FlowMethod {
                    id: mid(1),
                    kind: MethodKind::Email,
                    hint: "a".into(),
                    target: None,
                },
                FlowMethod {
                    id: mid(2),
                    kind: MethodKind::Email,
                    hint: "b".into(),
                    target: None,
                },
            ],
            required,
            verified: vec![],
            code: None,
            step: FlowStep::Verify,
            created_at: T0,
            expires_at: T0 + Duration::minutes(15),
            version: 0,
            offer_unlock: false,
            codes: CodeRules::default(),
        }
    }

    #[test]
    fn reset_needs_the_right_code_then_reaches_password() {
        let mut f = flow(FlowKind::Reset, 1, true);
        f.code_sent(&mid(1), TokenHash([7; 32]), T0, Duration::minutes(10))
            .unwrap();
        assert_eq!(
            f.verify(&mid(1), &TokenHash([8; 32]), T0),
            Err(FlowError::InvalidCode)
        );
        assert_eq!(
            f.verify(&mid(2), &TokenHash([7; 32]), T0),
            Err(FlowError::InvalidCode)
        );
        f.verify(&mid(1), &TokenHash([7; 32]), T0).unwrap();
        assert_eq!(f.step, FlowStep::Password);
        assert!(f.ready_for_password(T0).is_ok());
        assert!(f.ready_for_unlock(T0).is_err());
        // the code was consumed
        assert_eq!(
            f.verify(&mid(1), &TokenHash([7; 32]), T0),
            Err(FlowError::WrongStep)
        );
        f.finish();
        assert_eq!(f.ready_for_password(T0), Err(FlowError::Finished));
    }

    #[test]
    fn two_required_methods_must_be_distinct() {
        let mut f = flow(FlowKind::Unlock, 2, true);
        f.code_sent(&mid(1), TokenHash([7; 32]), T0, Duration::minutes(10))
            .unwrap();
        f.verify(&mid(1), &TokenHash([7; 32]), T0).unwrap();
        assert_eq!(f.step, FlowStep::Verify);
        assert_eq!(
            f.code_sent(&mid(1), TokenHash([7; 32]), T0, Duration::minutes(10)),
            Err(FlowError::WrongStep)
        );
        f.code_sent(&mid(2), TokenHash([6; 32]), T0, Duration::minutes(10))
            .unwrap();
        f.verify(&mid(2), &TokenHash([6; 32]), T0).unwrap();
        assert_eq!(f.step, FlowStep::Unlock);
    }

    #[test]
    fn codes_and_flows_expire() {
        let mut f = flow(FlowKind::Reset, 1, true);
        f.code_sent(&mid(1), TokenHash([7; 32]), T0, Duration::minutes(10))
            .unwrap();
        let later = T0 + Duration::minutes(10);
        assert_eq!(
            f.verify(&mid(1), &TokenHash([7; 32]), later),
            Err(FlowError::CodeExpired)
        );
        let much_later = T0 + Duration::minutes(15);
        assert_eq!(
            f.verify(&mid(1), &TokenHash([7; 32]), much_later),
            Err(FlowError::Expired)
        );
    }

    #[test]
    fn decoys_never_verify() {
        let mut f = flow(FlowKind::Reset, 1, false);
        f.code_sent(&mid(1), TokenHash([7; 32]), T0, Duration::minutes(10))
            .unwrap();
        assert_eq!(
            f.verify(&mid(1), &TokenHash([7; 32]), T0),
            Err(FlowError::InvalidCode)
        );
        assert!(f.ready_for_password(T0).is_err());
    }

    #[test]
    fn serde_round_trip() {
        let mut f = flow(FlowKind::Reset, 1, true);
        f.code_sent(&mid(1), TokenHash([7; 32]), T0, Duration::minutes(10))
            .unwrap();
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<Flow>(&json).unwrap(), f);
    }
}
