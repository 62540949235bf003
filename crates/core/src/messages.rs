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
    OutgoingMail {
        to: to.clone(),
        subject: format!("{}: {what}", b.organisation),
        body: format!(
            "Hello {display_name},\n\n\
             This is to let you know: {what}.\n\n\
             If this was you, there is nothing more to do.\n\
             If this wasn't you, contact the helpdesk at once: {help}\n\
             and change your password at {url}\n\n\
             {org}\n",
            help = b.helpdesk,
            url = b.public_url,
            org = b.organisation,
        ),
    }
}
