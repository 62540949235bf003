//! Page models for the askama templates in `templates/`.
use askama::Template;

pub struct MethodItem {
    pub id: String,
    pub kind: &'static str,
    pub label: &'static str,
    pub hint: String,
    pub verified: bool,
    /// Security questions asked in a flow: (id, text).
    pub questions: Vec<(String, String)>,
}

/// The method kinds a user's policy lets them register.
pub struct Allowed {
    pub email: bool,
    pub sms: bool,
    pub voice: bool,
    pub totp: bool,
    pub questions: bool,
}

impl MethodItem {
    pub fn sends_code(&self) -> bool {
        matches!(self.kind, "email" | "sms" | "voice")
    }
    pub fn is_phone(&self) -> bool {
        matches!(self.kind, "sms" | "voice")
    }
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct Home {
    pub org: String,
}

#[derive(Template)]
#[template(path = "start.html")]
pub struct Start {
    pub org: String,
    pub csrf: String,
    pub action: &'static str,
    pub title: &'static str,
    pub intro: &'static str,
    pub login: String,
    /// The form carries the proof-of-work widget.
    pub captcha: bool,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "flow.html")]
pub struct FlowPage {
    pub org: String,
    pub csrf: String,
    pub title: &'static str,
    pub step: &'static str,
    pub unlock_available: bool,
    pub required: u8,
    pub verified: u8,
    pub methods: Vec<MethodItem>,
    pub has_senders: bool,
    pub has_phones: bool,
    pub code_for: Option<MethodItem>,
    pub rules: Vec<(String, String)>,
    pub violations: Vec<String>,
    pub error: Option<String>,
    pub notice: Option<String>,
}

#[derive(Template)]
#[template(path = "notme.html")]
pub struct NotMe {
    pub org: String,
    pub csrf: String,
    pub token: String,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct Message {
    pub org: String,
    pub title: String,
    pub message: String,
    pub ok: bool,
}

#[derive(Template)]
#[template(path = "change.html")]
pub struct Change {
    pub org: String,
    pub csrf: String,
    pub login: String,
    pub rules: Vec<(String, String)>,
    pub violations: Vec<String>,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "signin.html")]
pub struct SignIn {
    pub org: String,
    pub csrf: String,
    pub login: String,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "account.html")]
pub struct Account {
    pub org: String,
    pub csrf: String,
    pub login: String,
    pub methods: Vec<MethodItem>,
    pub allowed: Allowed,
    pub registration_required: bool,
    pub reconfirm_due: bool,
    pub register_required: u8,
    pub verified: usize,
    pub questions: Vec<(String, String)>,
    pub questions_register: u8,
    /// Just after adding an authenticator app: its id and QR code (SVG rendered by the server).
    pub enrol: Option<(String, String, String)>,
    pub error: Option<String>,
    pub notice: Option<String>,
}

pub struct MailItem {
    pub id: i64,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub status: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "mailbox.html")]
pub struct Mailbox {
    pub org: String,
    pub mails: Vec<MailItem>,
}
