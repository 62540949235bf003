//! The texts of outgoing messages. Links are built from the configured public URL only.
use crate::ports::OutgoingMail;
use crate::types::Email;

/// What every message needs to know about the installation.
#[derive(Clone, Debug)]
pub struct Branding {
    pub organisation: String,
    pub public_url: String,
    pub helpdesk: String,
}

pub fn code(b: &Branding, to: &Email, code: &str, minutes: i64, purpose: &str) -> OutgoingMail {
    OutgoingMail {
        to: to.clone(),
        subject: format!("{}: your verification code", b.organisation),
        body: format!(
            "Your verification code is: {code}\n\n\
             It is valid for {minutes} minutes and can be used once, to {purpose}.\n\n\
             If you did not ask for it, you can ignore this message: nothing changes without the code.\n\
             Never tell this code to anyone, including the helpdesk.\n\n\
             {org} — {url}\n",
            org = b.organisation,
            url = b.public_url,
        ),
    }
}

/// Sent to every known address of a user after a reset, change or unlock.
pub fn notification(b: &Branding, to: &Email, display_name: &str, what: &str) -> OutgoingMail {
    notification_with_report(b, to, display_name, what, None)
}

/// A notification that carries a one-time "this wasn't me" link (after a reset or change).
pub fn notification_with_report(
    b: &Branding,
    to: &Email,
    display_name: &str,
    what: &str,
    report_url: Option<&str>,
) -> OutgoingMail {
    let act = match report_url {
        Some(link) => format!(
            "If this wasn't you, open this link at once: it locks your account and alerts the helpdesk\n\
             {link}\n\
             (it works once, for 14 days), then contact the helpdesk: {}\n",
            b.helpdesk
        ),
        None => format!(
            "If this wasn't you, contact the helpdesk at once: {}\nand change your password at {}\n",
            b.helpdesk, b.public_url
        ),
    };
    OutgoingMail {
        to: to.clone(),
        subject: format!("{}: {what}", b.organisation),
        body: format!(
            "Hello {display_name},\n\n\
             This is to let you know: {what}.\n\n\
             If this was you, there is nothing more to do.\n\
             {act}\n\
             {org}\n",
            org = b.organisation,
        ),
    }
}

/// Sent to the administrators when a user reports a reset or change they did not make.
pub fn security_alert(b: &Branding, to: &Email, login: &str, action: &str) -> OutgoingMail {
    OutgoingMail {
        to: to.clone(),
        subject: format!("{}: security alert for {login}", b.organisation),
        body: format!(
            "The user {login} reported a password reset or change they did not make.\n\n\
             What Gatehouse did: {action}.\n\
             Self-service is off for this account until the helpdesk clears its flag \
             (`gatehouse users unflag --login {login}`). Check the audit log for the flow and the client address.\n"
        ),
    }
}

/// The text of a code for a phone: short for SMS, digit by digit (twice) for a call.
pub fn phone_code(b: &Branding, channel: crate::ports::PhoneChannel, code: &str, minutes: i64) -> String {
    match channel {
        crate::ports::PhoneChannel::Sms => format!(
            "{code} is your {org} verification code. Valid {minutes} min. Never share it, not even with the helpdesk.",
            org = b.organisation
        ),
        crate::ports::PhoneChannel::Voice => {
            let spoken: Vec<String> = code.chars().map(String::from).collect();
            let spoken = spoken.join(", ");
            format!(
                "Hello. This is {org}. Your verification code is: {spoken}. Again: {spoken}. Goodbye.",
                org = b.organisation
            )
        }
    }
}

/// A one-time link (helpdesk recovery or new-hire onboarding) to the user's personal address.
pub fn link(
    b: &Branding,
    to: &Email,
    display_name: &str,
    url: &str,
    hours: i64,
    onboarding: bool,
) -> OutgoingMail {
    let (subject, intro) = if onboarding {
        (
            format!("{}: set up your account", b.organisation),
            "Welcome! Use this link to choose the password of your new account.",
        )
    } else {
        (
            format!("{}: reset your password", b.organisation),
            "The helpdesk sent you this link so you can choose a new password yourself.",
        )
    };
    OutgoingMail {
        to: to.clone(),
        subject,
        body: format!(
            "Hello {display_name},\n\n{intro}\n\n{url}\n\n\
             The link works once and for {hours} hours. Nobody else, not even the helpdesk, will know your password.\n\
             If you did not expect this message, ignore it and tell the helpdesk: {help}\n\n{org}\n",
            help = b.helpdesk,
            org = b.organisation,
        ),
    }
}
