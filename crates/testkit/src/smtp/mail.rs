//! A message as the sink received it, with decoding helpers for tests.

use mail_parser::{HeaderForm, HeaderName, HeaderValue, Message, MessageParser};

/// One message accepted by [`super::SmtpSink`]: the SMTP envelope and the
/// message exactly as received after DATA (dot-unstuffed, CRLF line ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedMail {
    /// The reverse-path of `MAIL FROM` without angle brackets (empty for `<>`).
    pub mail_from: String,
    /// The forward-paths of every accepted `RCPT TO`, without angle brackets.
    pub rcpt_to: Vec<String>,
    /// The message text (header and body). Bytes that are not UTF-8 were
    /// replaced by U+FFFD.
    pub raw: String,
}

impl CapturedMail {
    fn parsed(&self) -> Option<Message<'_>> {
        MessageParser::default().parse(self.raw.as_bytes())
    }

    /// True when `addr` is one of the envelope recipients (ASCII
    /// case-insensitive, angle brackets around `addr` ignored).
    pub fn is_to(&self, addr: &str) -> bool {
        let addr = strip_brackets(addr);
        self.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(addr))
    }

    /// The first header field called `name` (case-insensitive), unfolded,
    /// with RFC 2047 encoded-words decoded. `None` when absent.
    pub fn header(&self, name: &str) -> Option<String> {
        let header_name = HeaderName::parse(name.to_owned())?;
        if let Some(message) = self.parsed() {
            let first = message
                .header_as(header_name, HeaderForm::Text)
                .into_iter()
                .next()?;
            return Some(header_value_text(first));
        }
        raw_header(&self.raw, name)
    }

    /// Every header field called `name`, in order (see [`Self::header`]).
    pub fn header_all(&self, name: &str) -> Vec<String> {
        let (Some(header_name), Some(message)) = (HeaderName::parse(name.to_owned()), self.parsed()) else {
            return Vec::new();
        };
        message
            .header_as(header_name, HeaderForm::Text)
            .into_iter()
            .map(header_value_text)
            .collect()
    }

    /// The decoded `Subject` header.
    pub fn subject(&self) -> Option<String> {
        self.header("Subject")
    }

    /// The plain-text body, decoded: the transfer encoding
    /// (quoted-printable, base64, 7bit, 8bit) and the charset are undone.
    /// For a multipart message this is the first text/plain part (in a
    /// multipart/alternative, the text/plain alternative); a message with
    /// only HTML gives that HTML converted to text. Empty when there is no
    /// text at all.
    pub fn text_body(&self) -> String {
        match self.parsed() {
            Some(message) => message
                .body_text(0)
                .map(|text| text.into_owned())
                .unwrap_or_default(),
            None => raw_body(&self.raw).to_owned(),
        }
    }

    /// The decoded text/html body, when the message has one.
    pub fn html_body(&self) -> Option<String> {
        let message = self.parsed()?;
        if !message.html_part(0)?.is_text_html() {
            return None;
        }
        message.body_html(0).map(|html| html.into_owned())
    }
}

fn header_value_text(value: HeaderValue<'_>) -> String {
    match value {
        HeaderValue::Text(text) => text.into_owned(),
        HeaderValue::TextList(list) => list.join(", "),
        _ => String::new(),
    }
}

pub(crate) fn strip_brackets(addr: &str) -> &str {
    let addr = addr.trim();
    addr.strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(addr)
}

/// Fallback when mail-parser cannot parse the message: unfolded raw value.
fn raw_header(raw: &str, name: &str) -> Option<String> {
    let head = raw.split("\r\n\r\n").next().unwrap_or(raw);
    let mut value: Option<String> = None;
    for line in head.split("\r\n") {
        match value.as_mut() {
            Some(v) if line.starts_with([' ', '\t']) => v.push_str(line),
            Some(_) => break,
            None => {
                if let Some((field, rest)) = line.split_once(':') {
                    if field.trim().eq_ignore_ascii_case(name) {
                        value = Some(rest.trim_start().to_owned());
                    }
                }
            }
        }
    }
    value.map(|v| v.trim().to_owned())
}

fn raw_body(raw: &str) -> &str {
    raw.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}
