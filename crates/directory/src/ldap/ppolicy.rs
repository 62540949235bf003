//! The password policy control (draft-behera-ldap-password-policy-10), as OpenLDAP's ppolicy overlay
//! speaks it: the request control and the decoding of the response, turned into plain words.
use gatehouse_core::password::Violation;
use ldap3::controls::{Control, RawControl};

pub const OID: &str = "1.3.6.1.4.1.42.2.27.8.5.1";

/// The request control: asks the server to say why a bind or password change failed.
pub fn request() -> RawControl {
    RawControl {
        ctype: OID.to_owned(),
        crit: false,
        val: None,
    }
}

/// The `error` field of the response control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyError {
    PasswordExpired,
    AccountLocked,
    ChangeAfterReset,
    PasswordModNotAllowed,
    MustSupplyOldPassword,
    InsufficientPasswordQuality,
    PasswordTooShort,
    PasswordTooYoung,
    PasswordInHistory,
    PasswordTooLong,
    Unknown(u32),
}

impl PolicyError {
    fn from_code(code: u32) -> Self {
        match code {
            0 => Self::PasswordExpired,
            1 => Self::AccountLocked,
            2 => Self::ChangeAfterReset,
            3 => Self::PasswordModNotAllowed,
            4 => Self::MustSupplyOldPassword,
            5 => Self::InsufficientPasswordQuality,
            6 => Self::PasswordTooShort,
            7 => Self::PasswordTooYoung,
            8 => Self::PasswordInHistory,
            9 => Self::PasswordTooLong,
            other => Self::Unknown(other),
        }
    }
}

/// The decoded response control.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyResponse {
    pub seconds_before_expiration: Option<u32>,
    pub grace_logins_left: Option<u32>,
    pub error: Option<PolicyError>,
}

/// Finds and decodes the password policy response among a result's controls.
pub fn response(ctrls: &[Control]) -> Option<PolicyResponse> {
    ctrls
        .iter()
        .find(|c| c.1.ctype == OID)
        .and_then(|c| c.1.val.as_deref())
        .and_then(decode)
}

/// One BER element: (tag byte, content). Definite lengths only, as LDAP requires.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn integer(content: &[u8]) -> Option<u32> {
    if content.is_empty() || content.len() > 5 {
        return None;
    }
    let v = content.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    u32::try_from(v).ok()
}

/// Decodes `PasswordPolicyResponseValue ::= SEQUENCE { warning [0] CHOICE { timeBeforeExpiration [0]
/// INTEGER, graceAuthNsRemaining [1] INTEGER } OPTIONAL, error [1] ENUMERATED OPTIONAL }`.
/// Never panics; `None` for anything malformed.
pub fn decode(value: &[u8]) -> Option<PolicyResponse> {
    let (tag, mut body, _) = element(value)?;
    if tag != 0x30 {
        return None;
    }
    let mut out = PolicyResponse::default();
    while !body.is_empty() {
        let (tag, content, rest) = element(body)?;
        match tag {
            0xa0 => {
                let (inner, v, _) = element(content)?;
                match inner {
                    0x80 => out.seconds_before_expiration = integer(v),
                    0x81 => out.grace_logins_left = integer(v),
                    _ => return None,
                }
            }
            0x81 => out.error = Some(PolicyError::from_code(integer(content)?)),
            _ => return None,
        }
        body = rest;
    }
    Some(out)
}

/// What the directory's policy says about a refused password, in plain words.
pub fn violation(error: PolicyError, policy: Option<&super::DirectoryPolicy>) -> Violation {
    match error {
        PolicyError::PasswordTooShort => Violation::new(
            "directory_min_length",
            match policy.and_then(|p| p.min_length) {
                Some(n) => format!("The directory needs at least {n} characters."),
                None => "The password is too short for the directory's policy.".into(),
            },
        ),
        PolicyError::PasswordInHistory => Violation::new(
            "history",
            match policy.and_then(|p| p.history) {
                Some(n) if n > 0 => {
                    format!("You have used this password before. Choose one that is not among your last {n}.")
                }
                _ => "You have used this password before. Choose a new one.".into(),
            },
        ),
        PolicyError::PasswordTooYoung => Violation::new(
            "directory_min_age",
            "Your password was changed too recently to be changed again yet. Try again later or ask the \
             helpdesk.",
        ),
        PolicyError::InsufficientPasswordQuality => Violation::new(
            "directory_quality",
            "The directory refused the password as too weak or could not check its quality. Choose a \
             different one.",
        ),
        PolicyError::PasswordTooLong => Violation::new(
            "directory_max_length",
            "The password is too long for the directory's policy.",
        ),
        PolicyError::MustSupplyOldPassword => Violation::new(
            "directory_old_password",
            "The directory needs your current password to change it.",
        ),
        PolicyError::PasswordModNotAllowed => Violation::new(
            "directory_change_not_allowed",
            "The directory does not let you change this password yourself. Ask the helpdesk.",
        ),
        PolicyError::ChangeAfterReset => Violation::new(
            "directory_must_change",
            "Your password was reset by an administrator and must be changed first.",
        ),
        PolicyError::PasswordExpired | PolicyError::AccountLocked | PolicyError::Unknown(_) => {
            Violation::new("directory_policy", "The directory refused the password.")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_what_openldap_sends() {
        // error=passwordInHistory(8)
        assert_eq!(
            decode(&[0x30, 0x03, 0x81, 0x01, 0x08]).unwrap().error,
            Some(PolicyError::PasswordInHistory)
        );
        // warning graceAuthNsRemaining=2
        let r = decode(&[0x30, 0x05, 0xa0, 0x03, 0x81, 0x01, 0x02]).unwrap();
        assert_eq!((r.grace_logins_left, r.error), (Some(2), None));
        // timeBeforeExpiration=3600 and error=changeAfterReset(2)
        let r = decode(&[0x30, 0x09, 0xa0, 0x04, 0x80, 0x02, 0x0e, 0x10, 0x81, 0x01, 0x02]).unwrap();
        assert_eq!(r.seconds_before_expiration, Some(3600));
        assert_eq!(r.error, Some(PolicyError::ChangeAfterReset));
        // an empty sequence: no warning, no error
        assert_eq!(decode(&[0x30, 0x00]), Some(PolicyResponse::default()));
    }

    #[test]
    fn refuses_malformed_values() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0x30, 0x05, 0x81]), None);
        assert_eq!(decode(&[0x04, 0x00]), None);
        assert_eq!(decode(&[0x30, 0x03, 0x82, 0x01, 0x01]), None);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
