//! One SMTP connection (RFC 5321 server side, without TLS or AUTH).

use std::io;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::io::{AsyncWriteExt as _, BufReader};

use super::mail::{strip_brackets, CapturedMail};

/// Largest message accepted (advertised as `SIZE`).
pub(crate) const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;
/// Longest command line read (RFC 5321 asks for at least 512).
const MAX_COMMAND_LINE: u64 = 4096;
/// Bytes read at once inside DATA; longer lines are read in pieces.
const DATA_CHUNK: u64 = 64 * 1024;
const MAX_RECIPIENTS: usize = 1000;
const SERVER_NAME: &str = "127.0.0.1";

pub(crate) type MailStore = Arc<Mutex<Vec<CapturedMail>>>;

/// The envelope being built by MAIL/RCPT.
#[derive(Default)]
struct Transaction {
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
}

enum Line {
    Eof,
    TooLong,
    Text(String),
}

/// Runs the SMTP dialogue on `stream` until QUIT, EOF or an I/O error,
/// pushing every accepted message to `store`.
pub(crate) async fn serve<S>(stream: S, store: MailStore) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (read_half, mut writer) = tokio::io::split(stream);
    let mut reader = BufReader::new(read_half);
    let mut greeted = false;
    let mut tx = Transaction::default();

    reply(
        &mut writer,
        &format!("220 {SERVER_NAME} Gatehouse testkit ESMTP ready"),
    )
    .await?;
    loop {
        let line = match read_command_line(&mut reader).await? {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                reply(&mut writer, "500 Line too long").await?;
                continue;
            }
            Line::Text(line) => line,
        };
        tracing::trace!(command = %line, "smtp sink received");
        let (verb, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let arg = arg.trim();
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" | "HELO" if arg.is_empty() => {
                reply(&mut writer, "501 Syntax: EHLO hostname").await?;
            }
            "EHLO" => {
                greeted = true;
                tx = Transaction::default();
                let text = format!(
                    "250-{SERVER_NAME} Hello {arg}\r\n250-8BITMIME\r\n250-SIZE {MAX_MESSAGE_BYTES}\r\n\
                     250-PIPELINING\r\n250 SMTPUTF8"
                );
                reply(&mut writer, &text).await?;
            }
            "HELO" => {
                greeted = true;
                tx = Transaction::default();
                reply(&mut writer, &format!("250 {SERVER_NAME} Hello {arg}")).await?;
            }
            "MAIL" => {
                let answer = mail_from(greeted, &mut tx, arg);
                reply(&mut writer, answer).await?;
            }
            "RCPT" => {
                let answer = rcpt_to(&mut tx, arg);
                reply(&mut writer, answer).await?;
            }
            "DATA" => {
                if !arg.is_empty() {
                    reply(&mut writer, "501 Syntax: DATA takes no argument").await?;
                    continue;
                }
                let Some(from) = tx.mail_from.clone() else {
                    reply(&mut writer, "503 Need MAIL command").await?;
                    continue;
                };
                if tx.rcpt_to.is_empty() {
                    reply(&mut writer, "554 No valid recipients").await?;
                    continue;
                }
                reply(&mut writer, "354 End data with <CR><LF>.<CR><LF>").await?;
                let data = read_data(&mut reader).await?;
                let rcpt_to = std::mem::take(&mut tx.rcpt_to);
                tx = Transaction::default();
                let Some(data) = data else {
                    reply(&mut writer, "552 Message exceeds fixed maximum message size").await?;
                    continue;
                };
                let mail = CapturedMail {
                    mail_from: from,
                    rcpt_to,
                    raw: String::from_utf8_lossy(&data).into_owned(),
                };
                tracing::debug!(from = %mail.mail_from, to = ?mail.rcpt_to, bytes = data.len(),
                    "smtp sink captured a message");
                let queued = {
                    let mut messages = store.lock().unwrap_or_else(|e| e.into_inner());
                    messages.push(mail);
                    messages.len()
                };
                reply(&mut writer, &format!("250 Ok: queued as {queued}")).await?;
            }
            "RSET" => {
                tx = Transaction::default();
                reply(&mut writer, "250 Ok").await?;
            }
            "NOOP" => reply(&mut writer, "250 Ok").await?,
            "QUIT" => {
                reply(&mut writer, &format!("221 {SERVER_NAME} Bye")).await?;
                writer.shutdown().await?;
                return Ok(());
            }
            _ => reply(&mut writer, "500 Command unrecognized").await?,
        }
    }
}

/// Writes one reply in a single write (two small writes would meet Nagle's
/// algorithm and the peer's delayed ACK: ~40 ms per reply).
async fn reply<W: AsyncWrite + Unpin>(writer: &mut W, text: &str) -> io::Result<()> {
    let mut line = Vec::with_capacity(text.len() + 2);
    line.extend_from_slice(text.as_bytes());
    line.extend_from_slice(b"\r\n");
    writer.write_all(&line).await?;
    writer.flush().await
}

fn mail_from(greeted: bool, tx: &mut Transaction, arg: &str) -> &'static str {
    if !greeted {
        return "503 Send EHLO/HELO first";
    }
    if tx.mail_from.is_some() {
        return "503 Nested MAIL command";
    }
    let Some((path, params)) = parse_path(arg, "FROM:") else {
        return "501 Syntax: MAIL FROM:<address>";
    };
    for param in params.split_whitespace() {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        if key.eq_ignore_ascii_case("SIZE") {
            match value.parse::<usize>() {
                Ok(size) if size > MAX_MESSAGE_BYTES => {
                    return "552 Message size exceeds fixed maximum message size";
                }
                Ok(_) => {}
                Err(_) => return "501 Bad SIZE parameter",
            }
        }
    }
    tx.mail_from = Some(path);
    "250 Ok"
}

fn rcpt_to(tx: &mut Transaction, arg: &str) -> &'static str {
    if tx.mail_from.is_none() {
        return "503 Need MAIL command";
    }
    let Some((path, _params)) = parse_path(arg, "TO:") else {
        return "501 Syntax: RCPT TO:<address>";
    };
    if path.is_empty() {
        return "501 Empty recipient";
    }
    if tx.rcpt_to.len() >= MAX_RECIPIENTS {
        return "452 Too many recipients";
    }
    tx.rcpt_to.push(path);
    "250 Ok"
}

/// Parses `FROM:<path> params` / `TO:<path> params` (keyword
/// case-insensitive, blanks after the colon tolerated). Returns the address
/// without brackets or source route, and the parameter string.
fn parse_path<'a>(arg: &'a str, keyword: &str) -> Option<(String, &'a str)> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg.get(keyword.len()..)?.trim_start();
    let (path, params) = if rest.starts_with('<') {
        let end = rest.find('>')?;
        (rest.get(..=end)?, rest.get(end + 1..)?)
    } else {
        rest.split_once(' ').unwrap_or((rest, ""))
    };
    let path = strip_brackets(path);
    // Drop an obsolete source route: <@a,@b:user@example.org>.
    let path = match path.split_once(':') {
        Some((route, mailbox)) if route.starts_with('@') => mailbox,
        _ => path,
    };
    Some((path.to_owned(), params.trim()))
}

async fn read_command_line<R>(reader: &mut BufReader<R>) -> io::Result<Line>
where
    R: AsyncRead + Unpin,
{
    let mut buf = Vec::new();
    let n = (&mut *reader)
        .take(MAX_COMMAND_LINE)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if !buf.ends_with(b"\n") {
        if (n as u64) < MAX_COMMAND_LINE {
            // The peer closed in the middle of a line.
            return Ok(Line::Eof);
        }
        // Drain the rest of the overlong line.
        loop {
            buf.clear();
            let n = (&mut *reader)
                .take(MAX_COMMAND_LINE)
                .read_until(b'\n', &mut buf)
                .await?;
            if n == 0 {
                return Ok(Line::Eof);
            }
            if buf.ends_with(b"\n") {
                return Ok(Line::TooLong);
            }
        }
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(Line::Text(text.trim_end_matches(['\r', '\n']).to_owned()))
}

/// Reads the message after `354` up to the line holding a single dot, and
/// undoes dot-stuffing. `None` when it was larger than [`MAX_MESSAGE_BYTES`]
/// (the rest is read and dropped so the dialogue can go on).
async fn read_data<R>(reader: &mut BufReader<R>) -> io::Result<Option<Vec<u8>>>
where
    R: AsyncRead + Unpin,
{
    let mut data = Vec::new();
    let mut too_big = false;
    let mut at_line_start = true;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut *reader)
            .take(DATA_CHUNK)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside DATA",
            ));
        }
        let piece: &[u8] = if at_line_start {
            if buf == b".\r\n" || buf == b".\n" {
                return Ok((!too_big).then_some(data));
            }
            buf.strip_prefix(b".").unwrap_or(&buf)
        } else {
            &buf
        };
        if data.len() + piece.len() > MAX_MESSAGE_BYTES {
            too_big = true;
            data = Vec::new();
        }
        if !too_big {
            data.extend_from_slice(piece);
        }
        at_line_start = buf.ends_with(b"\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let (p, rest) = parse_path("FROM:<a@b.example> BODY=8BITMIME", "FROM:").unwrap();
        assert_eq!((p.as_str(), rest), ("a@b.example", "BODY=8BITMIME"));
        let (p, _) = parse_path("from: <>", "FROM:").unwrap();
        assert_eq!(p, "");
        let (p, _) = parse_path("TO:<@relay.example:u@x.example>", "TO:").unwrap();
        assert_eq!(p, "u@x.example");
        let (p, _) = parse_path("to:bare@x.example", "TO:").unwrap();
        assert_eq!(p, "bare@x.example");
        assert!(parse_path("FROM <a@b>", "FROM:").is_none());
        assert!(parse_path("FROM:<a@b", "FROM:").is_none());
    }

    #[tokio::test]
    async fn dialogue_over_a_pipe() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let store = MailStore::default();
        let task = tokio::spawn(serve(server, store.clone()));
        let (r, mut w) = tokio::io::split(client);
        let mut r = BufReader::new(r);
        // Pipelined: everything sent at once.
        w.write_all(
            b"MAIL FROM:<x@y>\r\nEHLO t\r\nMAIL FROM:<a@b> SIZE=20\r\nRCPT TO:<C@D>\r\n\
              DATA\r\nSubject: s\r\n\r\n..dot\r\n.\r\nBOGUS\r\nRSET\r\nNOOP\r\nQUIT\r\n",
        )
        .await
        .unwrap();
        let mut out = String::new();
        r.read_to_string(&mut out).await.unwrap();
        task.await.unwrap().unwrap();
        let codes: Vec<&str> = out.lines().map(|l| &l[..4]).collect();
        assert_eq!(
            codes,
            [
                "220 ", "503 ", "250-", "250-", "250-", "250-", "250 ", "250 ", "250 ", "354 ", "250 ",
                "500 ", "250 ", "250 ", "221 "
            ],
            "{out}"
        );
        let mails = store.lock().unwrap();
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].mail_from, "a@b");
        assert_eq!(mails[0].rcpt_to, ["C@D"]);
        assert_eq!(mails[0].raw, "Subject: s\r\n\r\n.dot\r\n");
    }
}
