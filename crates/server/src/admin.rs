//! Admin commands: HR import, `users add`, audit export.
use gatehouse_core::audit::AuditEvent;
use gatehouse_core::service::NewUser;
use gatehouse_core::types::{Email, Login};
use gatehouse_core::Gatehouse;
use serde::Deserialize;
use std::io::Write;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Debug, Deserialize)]
struct CsvRow {
    login: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    alternate_email: String,
    #[serde(default)]
    mobile_phone: String,
    #[serde(default)]
    groups: String,
}

fn optional_email(field: &str, raw: &str) -> Result<Option<Email>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    Email::parse(raw)
        .map(Some)
        .map_err(|e| format!("{field}: \"{raw}\": {}", e.message))
}

fn to_user(row: CsvRow) -> Result<NewUser, String> {
    let login = Login::parse(&row.login).map_err(|e| format!("login: {}", e.message))?;
    let display_name = if row.display_name.trim().is_empty() {
        login.to_string()
    } else {
        row.display_name.trim().into()
    };
    Ok(NewUser {
        display_name,
        email: optional_email("email", &row.email)?,
        alternate_email: optional_email("alternate_email", &row.alternate_email)?,
        mobile_phone: Some(row.mobile_phone.trim().to_owned()).filter(|s| !s.is_empty()),
        groups: row
            .groups
            .split([';', '|'])
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(String::from)
            .collect(),
        login,
        password: None,
    })
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub rows: usize,
    pub accounts_created: usize,
    pub methods_added: usize,
    /// (line number, what is wrong)
    pub errors: Vec<(u64, String)>,
}

/// Imports an HR feed (`login,display_name,email,alternate_email,mobile_phone,groups`). Idempotent; a
/// bad row is reported with its line number and the good rows still import.
pub async fn import_csv(app: &Gatehouse, input: impl std::io::Read) -> anyhow::Result<ImportReport> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(input);
    let headers = reader.headers()?.clone();
    if !headers.iter().any(|h| h == "login") {
        anyhow::bail!(
            "line 1: the header must name the columns login,display_name,email,alternate_email,mobile_phone,groups"
        );
    }
    let mut report = ImportReport::default();
    for record in reader.records() {
        report.rows += 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                report.errors.push((line, format!("cannot read the row: {e}")));
                continue;
            }
        };
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let user = record
            .deserialize::<CsvRow>(Some(&headers))
            .map_err(|e| format!("cannot read the row: {e}"))
            .and_then(to_user);
        match user {
            Ok(user) => match app.import_user(&user, "hr_import").await {
                Ok(outcome) => {
                    report.accounts_created += usize::from(outcome.account_created);
                    report.methods_added += usize::from(outcome.method_added);
                }
                Err(e) => report.errors.push((line, e.public_message())),
            },
            Err(msg) => report.errors.push((line, msg)),
        }
    }
    Ok(report)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

/// Parses `--since`: an RFC 3339 time, or a span back from now such as `24h`, `7d`, `30m`.
pub fn parse_since(raw: &str, now: OffsetDateTime) -> anyhow::Result<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Ok(t);
    }
    let (num, unit) = raw.split_at(raw.len().saturating_sub(1));
    let n: i64 = num.parse().map_err(|_| {
        anyhow::anyhow!(
            "--since: \"{raw}\" is neither an RFC 3339 time (2026-11-21T00:00:00Z) nor a span (24h, 7d)"
        )
    })?;
    let span = match unit {
        "m" => time::Duration::minutes(n),
        "h" => time::Duration::hours(n),
        "d" => time::Duration::days(n),
        _ => anyhow::bail!("--since: the unit of \"{raw}\" must be m, h or d"),
    };
    Ok(now - span)
}

const CSV_HEADER: [&str; 12] = [
    "id",
    "time",
    "activity",
    "actor",
    "target",
    "result",
    "reason",
    "method",
    "client_ip",
    "user_agent",
    "flow_id",
    "directory",
];

fn csv_fields(id: i64, e: &AuditEvent) -> [String; 12] {
    let o = |v: Option<String>| v.unwrap_or_default();
    [
        id.to_string(),
        e.at.format(&Rfc3339).unwrap_or_default(),
        e.activity.as_str().into(),
        e.actor.clone(),
        o(e.target.as_ref().map(|t| t.to_string())),
        e.result.as_str().into(),
        o(e.reason.clone()),
        o(e.method.map(|m| m.as_str().into())),
        o(e.client_ip.map(|i| i.to_string())),
        o(e.user_agent.clone()),
        o(e.flow_id.as_ref().map(|f| f.0.clone())),
        o(e.directory.clone()),
    ]
}

enum Sink<W: Write> {
    Csv(Box<csv::Writer<W>>),
    Jsonl(std::io::BufWriter<W>),
}

/// Streams the audit log page by page, without a record cap. Returns the number of records.
pub async fn export_audit(
    app: &Gatehouse,
    format: ExportFormat,
    since: Option<OffsetDateTime>,
    out: impl Write,
) -> anyhow::Result<u64> {
    let mut sink = match format {
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(CSV_HEADER)?;
            Sink::Csv(Box::new(w))
        }
        ExportFormat::Jsonl => Sink::Jsonl(std::io::BufWriter::new(out)),
    };
    let mut after = 0;
    let mut count = 0;
    loop {
        let page = app.audit_page(after, since, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for row in &page {
            count += 1;
            match &mut sink {
                Sink::Csv(w) => w.write_record(csv_fields(row.id, &row.event))?,
                Sink::Jsonl(w) => {
                    let mut v = serde_json::to_value(&row.event)?;
                    if let Some(obj) = v.as_object_mut() {
                        obj.insert("id".into(), row.id.into());
                    }
                    writeln!(w, "{v}")?;
                }
            }
        }
    }
    match &mut sink {
        Sink::Csv(w) => w.flush()?,
        Sink::Jsonl(w) => w.flush()?,
    }
    Ok(count)
}
