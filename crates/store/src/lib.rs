//! Gatehouse store: the [`Store`] port on SQLite (the embedded default) through sqlx.
//!
//! Every state change and the audit events and outgoing mail that go with it are written in one
//! `BEGIN IMMEDIATE` transaction. Single use is enforced by conditional updates.
#![forbid(unsafe_code)]

mod rows;

use async_trait::async_trait;
use gatehouse_core::flow::Flow;
use gatehouse_core::ports::{
    AuditRow, Changes, FailureOp, Method, MethodCheck, MethodCode, MethodShape, MethodVerification,
    QueuedMail, Session, Store, StoreError, SyncWrite, UserProfile,
};
use gatehouse_core::secret::{hashes_equal, TokenHash};
use gatehouse_core::types::{Login, MethodId, MethodKind};
use rows::{audit_row, get, method_columns, method_row, millis, profile_row, queued_mail, time_of};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;

/// How long a claimed message stays with the worker that claimed it.
const MAIL_LEASE_MS: i64 = 60_000;
/// The address of stand-in rows (a reserved domain: never a mailbox).
const STAND_IN_EMAIL: &str = "nobody@stand-in.invalid";

fn err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            StoreError::Unavailable(e.to_string())
        }
        other => StoreError::Other(other.to_string()),
    }
}

/// The SQLite store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or `sqlite::memory:`) and
    /// runs the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("store.url: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {url}: {e}")))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Other(format!("migrations: {e}")))?;
        Ok(Self { pool })
    }

    /// The pool, for adapters that keep their own tables in the same database (the builtin directory).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(err)
    }

    /// Runs one statement and records `changes` with it, in one transaction. With `need_rows`, a
    /// statement that touched nothing records nothing (the caller lost a race, or the row is gone).
    /// Returns the rows touched.
    async fn write_one<'q>(
        &self,
        query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
        changes: Changes,
        need_rows: bool,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let rows = query.execute(&mut *tx).await.map_err(err)?.rows_affected();
        if need_rows && rows == 0 {
            return Ok(0);
        }
        apply(&mut tx, changes).await?;
        tx.commit().await.map_err(err)?;
        Ok(rows)
    }
}

async fn apply(tx: &mut Transaction<'static, Sqlite>, changes: Changes) -> Result<(), StoreError> {
    // Outgoing mail is stamped with the time of the event that caused it.
    let now = changes.audit.first().map(|e| millis(e.at)).unwrap_or(0);
    for e in &changes.audit {
        sqlx::query(
            "INSERT INTO audit (at, activity, actor, target, result, reason, method, client_ip, user_agent, \
             flow_id, directory) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(millis(e.at))
        .bind(e.activity.as_str())
        .bind(&e.actor)
        .bind(e.target.as_ref().map(|t| t.as_str()))
        .bind(e.result.as_str())
        .bind(&e.reason)
        .bind(e.method.map(|m| m.as_str()))
        .bind(e.client_ip.map(|ip| ip.to_string()))
        .bind(&e.user_agent)
        .bind(e.flow_id.as_ref().map(|f| f.0.as_str()))
        .bind(&e.directory)
        .execute(&mut **tx)
        .await
        .map_err(err)?;
    }
    for m in &changes.mail {
        sqlx::query(
            "INSERT INTO outbox (recipient, subject, body, created_at, next_attempt_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(m.to.as_str())
        .bind(&m.subject)
        .bind(&m.body)
        .bind(now)
        .bind(0_i64)
        .execute(&mut **tx)
        .await
        .map_err(err)?;
    }
    for (hash, login, expires) in &changes.report_links {
        sqlx::query("INSERT INTO report_links (token_hash, login, expires_at) VALUES (?, ?, ?)")
            .bind(hash.0.as_slice())
            .bind(login.as_str())
            .bind(millis(*expires))
            .execute(&mut **tx)
            .await
            .map_err(err)?;
    }
    for (key, at) in &changes.hits {
        sqlx::query("INSERT INTO failures (key, at) VALUES (?, ?)")
            .bind(key)
            .bind(millis(*at))
            .execute(&mut **tx)
            .await
            .map_err(err)?;
    }
    match changes.failure {
        Some(FailureOp::Increment { key, at }) => {
            sqlx::query("INSERT INTO failures (key, at) VALUES (?, ?)")
                .bind(key)
                .bind(millis(at))
                .execute(&mut **tx)
                .await
                .map_err(err)?;
        }
        Some(FailureOp::Clear { key }) => {
            sqlx::query("DELETE FROM failures WHERE key = ?")
                .bind(key)
                .execute(&mut **tx)
                .await
                .map_err(err)?;
        }
        None => {}
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn instance_key(&self, candidate: [u8; 32]) -> Result<[u8; 32], StoreError> {
        sqlx::query("INSERT OR IGNORE INTO instance (id, key) VALUES (1, ?)")
            .bind(candidate.as_slice())
            .execute(&self.pool)
            .await
            .map_err(err)?;
        let key: Vec<u8> = sqlx::query_scalar("SELECT key FROM instance WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(err)?;
        key.try_into()
            .map_err(|_| StoreError::Other("instance key has the wrong length".into()))
    }

    async fn methods(&self, login: &Login) -> Result<Vec<Method>, StoreError> {
        // Constant work for up to four methods: stand-in rows (an email method to a reserved domain)
        // fill the answer up to four and are decoded like the real ones, then dropped, so an unknown
        // or unregistered login costs what a registered one does.
        let rows = sqlx::query(
            "WITH mine AS (SELECT id, login, kind, address, verified, source, created_at, verified_at, \
             secret, last_step FROM methods WHERE login = ?1), \
             pad(n) AS (VALUES (1), (2), (3), (4)) \
             SELECT *, 1 AS real_row FROM mine \
             UNION ALL SELECT printf('%020d', n), ?1, 'email', ?2, 0, 'stand-in', 0, NULL, NULL, NULL, 0 \
             FROM pad WHERE n > (SELECT count(*) FROM mine) \
             ORDER BY real_row DESC, created_at, id",
        )
        .bind(login.as_str())
        .bind(STAND_IN_EMAIL)
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        let mut methods = Vec::with_capacity(rows.len());
        for r in &rows {
            let m = method_row(r)?;
            if get::<bool>(r, "real_row")? {
                methods.push(m);
            }
        }
        Ok(methods)
    }

    async fn method_shapes(&self) -> Result<Vec<MethodShape>, StoreError> {
        let rows = sqlx::query(
            "SELECT login, kind, CASE WHEN kind = 'questions' THEN json_array_length(secret) ELSE 0 END \
             AS answers FROM methods WHERE verified = 1 ORDER BY login, created_at, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        let rows = rows
            .iter()
            .map(|r| {
                let kind = MethodKind::parse(&get::<String>(r, "kind")?)
                    .map_err(|e| StoreError::Other(format!("corrupt method kind: {e}")))?;
                let answers = u8::try_from(get::<i64>(r, "answers")?).unwrap_or(u8::MAX);
                Ok((get::<String>(r, "login")?, (kind, answers)))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut users: std::collections::BTreeMap<Vec<(MethodKind, u8)>, u64> = Default::default();
        for one_user in rows.chunk_by(|a, b| a.0 == b.0) {
            *users
                .entry(one_user.iter().map(|(_, kind)| *kind).collect())
                .or_default() += 1;
        }
        Ok(users
            .into_iter()
            .map(|(kinds, users)| MethodShape { kinds, users })
            .collect())
    }

    async fn insert_method(
        &self,
        m: &Method,
        code: Option<&MethodCode>,
        changes: Changes,
    ) -> Result<(), StoreError> {
        let (address, secret) = method_columns(m)?;
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO methods (id, login, kind, address, verified, source, created_at, verified_at, \
             code_hash, code_expires_at, secret) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(m.id.as_str())
        .bind(m.login.as_str())
        .bind(m.kind.as_str())
        .bind(address)
        .bind(m.verified)
        .bind(&m.source)
        .bind(millis(m.created_at))
        .bind(m.confirmed_at.map(millis))
        .bind(code.map(|c| c.hash.0.to_vec()))
        .bind(code.map(|c| millis(c.expires_at)))
        .bind(secret)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        apply(&mut tx, changes).await?;
        tx.commit().await.map_err(err)
    }

    async fn verify_method(
        &self,
        check: MethodCheck<'_>,
        on_success: Changes,
        on_failure: Changes,
    ) -> Result<MethodVerification, StoreError> {
        let MethodCheck {
            login,
            id,
            code,
            now,
            max_attempts,
        } = check;
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT code_hash, code_expires_at, code_attempts FROM methods WHERE id = ? AND login = ?",
        )
        .bind(id.as_str())
        .bind(login.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(err)?;
        let Some(row) = row else {
            return Ok(MethodVerification::NotFound);
        };
        let hash: Option<Vec<u8>> = row.try_get("code_hash").map_err(err)?;
        let expires: Option<i64> = row.try_get("code_expires_at").map_err(err)?;
        let attempts: i64 = row.try_get("code_attempts").map_err(err)?;
        let stored = hash.and_then(|h| <[u8; 32]>::try_from(h).ok()).map(TokenHash);
        let outcome = match (stored, expires) {
            _ if attempts >= i64::from(max_attempts) => MethodVerification::TooManyAttempts,
            (Some(_), Some(exp)) if millis(now) >= exp => MethodVerification::Expired,
            (Some(stored), Some(_)) if hashes_equal(&stored, code) => {
                let done = sqlx::query(
                    "UPDATE methods SET verified = 1, verified_at = ?, code_hash = NULL, code_expires_at = NULL \
                     WHERE id = ? AND code_hash = ?",
                )
                .bind(millis(now))
                .bind(id.as_str())
                .bind(stored.0.as_slice())
                .execute(&mut *tx)
                .await
                .map_err(err)?;
                if done.rows_affected() == 1 {
                    MethodVerification::Verified
                } else {
                    MethodVerification::WrongCode
                }
            }
            _ => MethodVerification::WrongCode,
        };
        match outcome {
            MethodVerification::Verified => apply(&mut tx, on_success).await?,
            MethodVerification::WrongCode | MethodVerification::Expired => {
                sqlx::query("UPDATE methods SET code_attempts = code_attempts + 1 WHERE id = ?")
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                apply(&mut tx, on_failure).await?;
            }
            _ => apply(&mut tx, on_failure).await?,
        }
        tx.commit().await.map_err(err)?;
        Ok(outcome)
    }

    async fn remove_method(
        &self,
        login: &Login,
        id: &MethodId,
        changes: Changes,
    ) -> Result<bool, StoreError> {
        let q = sqlx::query("DELETE FROM methods WHERE id = ? AND login = ?")
            .bind(id.as_str())
            .bind(login.as_str());
        Ok(self.write_one(q, changes, true).await? > 0)
    }

    async fn mark_verified(
        &self,
        login: &Login,
        id: &MethodId,
        at: OffsetDateTime,
        totp_step: Option<u64>,
        changes: Changes,
    ) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE methods SET verified = 1, verified_at = ?, code_hash = NULL, code_expires_at = NULL, \
             last_step = coalesce(?, last_step) WHERE id = ? AND login = ? AND verified = 0",
        )
        .bind(millis(at))
        .bind(totp_step.and_then(|s| i64::try_from(s).ok()))
        .bind(id.as_str())
        .bind(login.as_str());
        Ok(self.write_one(q, changes, true).await? > 0)
    }

    async fn use_totp_step(&self, id: &MethodId, step: u64, changes: Changes) -> Result<bool, StoreError> {
        let step = i64::try_from(step).map_err(|_| StoreError::Other("time step out of range".into()))?;
        let q = sqlx::query(
            "UPDATE methods SET last_step = ? WHERE id = ? AND verified = 1 AND (last_step IS NULL OR last_step < ?)",
        )
        .bind(step)
        .bind(id.as_str())
        .bind(step);
        Ok(self.write_one(q, changes, true).await? > 0)
    }

    async fn reconfirm_methods(
        &self,
        login: &Login,
        at: OffsetDateTime,
        changes: Changes,
    ) -> Result<u64, StoreError> {
        let q = sqlx::query("UPDATE methods SET verified_at = ? WHERE login = ? AND verified = 1")
            .bind(millis(at))
            .bind(login.as_str());
        self.write_one(q, changes, false).await
    }

    async fn clear_methods(&self, login: &Login, changes: Changes) -> Result<u64, StoreError> {
        let q = sqlx::query("DELETE FROM methods WHERE login = ?").bind(login.as_str());
        self.write_one(q, changes, false).await
    }

    async fn upsert_profile(&self, p: &UserProfile, changes: Changes) -> Result<(), StoreError> {
        let groups = serde_json::to_string(&p.groups).map_err(|e| StoreError::Other(e.to_string()))?;
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO profiles (login, display_name, email, mobile_phone, groups, updated_at, disabled) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (login) DO UPDATE SET display_name = excluded.display_name, \
             email = excluded.email, mobile_phone = excluded.mobile_phone, groups = excluded.groups, \
             updated_at = excluded.updated_at, disabled = excluded.disabled",
        )
        .bind(p.login.as_str())
        .bind(&p.display_name)
        .bind(p.email.as_ref().map(|e| e.as_str()))
        .bind(&p.mobile_phone)
        .bind(groups)
        .bind(changes.audit.first().map(|e| millis(e.at)).unwrap_or(0))
        .bind(p.disabled)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        apply(&mut tx, changes).await?;
        tx.commit().await.map_err(err)
    }

    async fn profile(&self, login: &Login) -> Result<Option<UserProfile>, StoreError> {
        // One row for every login, a stand-in for one without a profile, decoded alike (constant work).
        let r = sqlx::query(
            "SELECT p.login IS NOT NULL AS found, w.wanted AS login, \
             COALESCE(p.display_name, w.wanted) AS display_name, \
             CASE WHEN p.login IS NULL THEN ?2 ELSE p.email END AS email, \
             p.mobile_phone AS mobile_phone, COALESCE(p.groups, '[]') AS groups, \
             COALESCE(p.disabled, 0) AS disabled \
             FROM (SELECT ?1 AS wanted) AS w LEFT JOIN profiles AS p ON p.login = w.wanted",
        )
        .bind(login.as_str())
        .bind(STAND_IN_EMAIL)
        .fetch_one(&self.pool)
        .await
        .map_err(err)?;
        let profile = profile_row(&r)?;
        Ok(get::<bool>(&r, "found")?.then_some(profile))
    }

    async fn apply_sync(&self, w: &SyncWrite, changes: Changes) -> Result<(), StoreError> {
        let now = changes.audit.first().map(|e| millis(e.at)).unwrap_or(0);
        let mut tx = self.begin().await?;
        for p in &w.profiles {
            let groups = serde_json::to_string(&p.groups).map_err(|e| StoreError::Other(e.to_string()))?;
            sqlx::query(
                "INSERT INTO profiles (login, display_name, email, mobile_phone, groups, updated_at, source, \
                 disabled) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (login) DO UPDATE SET \
                 display_name = excluded.display_name, email = excluded.email, \
                 mobile_phone = excluded.mobile_phone, groups = excluded.groups, updated_at = excluded.updated_at, \
                 source = excluded.source, disabled = excluded.disabled",
            )
            .bind(p.login.as_str())
            .bind(&p.display_name)
            .bind(p.email.as_ref().map(|e| e.as_str()))
            .bind(&p.mobile_phone)
            .bind(groups)
            .bind(now)
            .bind(&w.source)
            .bind(p.disabled)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        for m in &w.candidates {
            let (address, _) = method_columns(m)?;
            // The directory's candidate replaces the one it gave before; methods the user registered stay.
            sqlx::query(
                "DELETE FROM methods WHERE login = ? AND source = ? AND kind = ? AND lower(address) <> lower(?)",
            )
            .bind(m.login.as_str())
            .bind(&m.source)
            .bind(m.kind.as_str())
            .bind(&address)
            .execute(&mut *tx)
                .await
                .map_err(err)?;
            sqlx::query(
                "INSERT INTO methods (id, login, kind, address, verified, source, created_at, verified_at) \
                 SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM methods WHERE login = ? \
                 AND kind = ? AND lower(address) = lower(?))",
            )
            .bind(m.id.as_str())
            .bind(m.login.as_str())
            .bind(m.kind.as_str())
            .bind(&address)
            .bind(m.verified)
            .bind(&m.source)
            .bind(millis(m.created_at))
            .bind(m.confirmed_at.map(millis))
            .bind(m.login.as_str())
            .bind(m.kind.as_str())
            .bind(&address)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        for login in &w.disable {
            sqlx::query("UPDATE profiles SET disabled = 1, updated_at = ? WHERE login = ? AND source = ?")
                .bind(now)
                .bind(login.as_str())
                .bind(&w.source)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        if let Some(mark) = &w.watermark {
            sqlx::query(
                "INSERT INTO sync_state (source, watermark, updated_at) VALUES (?, ?, ?) ON CONFLICT (source) \
                 DO UPDATE SET watermark = excluded.watermark, updated_at = excluded.updated_at",
            )
            .bind(&w.source)
            .bind(mark)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        apply(&mut tx, changes).await?;
        tx.commit().await.map_err(err)
    }

    async fn synced_logins(&self, source: &str) -> Result<Vec<Login>, StoreError> {
        let rows = sqlx::query("SELECT login FROM profiles WHERE source = ? AND disabled = 0")
            .bind(source)
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
        rows.iter()
            .map(|r| {
                let l: String = r.try_get("login").map_err(err)?;
                Login::parse(&l).map_err(|e| StoreError::Other(e.to_string()))
            })
            .collect()
    }

    async fn sync_watermark(&self, source: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT watermark FROM sync_state WHERE source = ?")
            .bind(source)
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
        Ok(row.and_then(|r| r.try_get::<Option<String>, _>("watermark").ok().flatten()))
    }

    async fn insert_flow(&self, flow: &Flow, changes: Changes) -> Result<(), StoreError> {
        let data = serde_json::to_string(flow).map_err(|e| StoreError::Other(e.to_string()))?;
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM flows WHERE expires_at < ?")
            .bind(millis(flow.created_at) - 86_400_000)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        sqlx::query(
            "INSERT INTO flows (token_hash, id, login, version, expires_at, data) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(flow.token_hash.0.as_slice())
        .bind(&flow.id.0)
        .bind(flow.login.as_str())
        .bind(flow.version)
        .bind(millis(flow.expires_at))
        .bind(data)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        apply(&mut tx, changes).await?;
        tx.commit().await.map_err(err)
    }

    async fn flow_by_token(&self, token: &TokenHash) -> Result<Option<Flow>, StoreError> {
        let data: Option<String> = sqlx::query_scalar("SELECT data FROM flows WHERE token_hash = ?")
            .bind(token.0.as_slice())
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
        data.map(|d| serde_json::from_str(&d).map_err(|e| StoreError::Other(format!("flow record: {e}"))))
            .transpose()
    }

    async fn save_flow(
        &self,
        flow: &Flow,
        expected_version: i64,
        changes: Changes,
    ) -> Result<bool, StoreError> {
        let data = serde_json::to_string(flow).map_err(|e| StoreError::Other(e.to_string()))?;
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE flows SET version = ?, data = ? WHERE token_hash = ? AND version = ?")
            .bind(flow.version)
            .bind(data)
            .bind(flow.token_hash.0.as_slice())
            .bind(expected_version)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        apply(&mut tx, changes).await?;
        tx.commit().await.map_err(err)?;
        Ok(true)
    }

    async fn claim_report_link(
        &self,
        token: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<Option<Login>, StoreError> {
        let login: Option<String> = sqlx::query_scalar(
            "UPDATE report_links SET used_at = ? WHERE token_hash = ? AND used_at IS NULL AND expires_at > ? \
             RETURNING login",
        )
        .bind(millis(now))
        .bind(token.0.as_slice())
        .bind(millis(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(err)?;
        login
            .map(|l| Login::parse(&l).map_err(|e| StoreError::Other(format!("corrupt login: {e}"))))
            .transpose()
    }

    async fn set_flag(
        &self,
        login: &Login,
        reason: Option<&str>,
        changes: Changes,
    ) -> Result<(), StoreError> {
        let at = changes.audit.first().map(|e| millis(e.at)).unwrap_or(0);
        let q = match reason {
            Some(r) => sqlx::query(
                "INSERT INTO flags (login, reason, at) VALUES (?, ?, ?) ON CONFLICT (login) DO UPDATE SET \
                 reason = excluded.reason, at = excluded.at",
            )
            .bind(login.as_str())
            .bind(r)
            .bind(at),
            None => sqlx::query("DELETE FROM flags WHERE login = ?").bind(login.as_str()),
        };
        self.write_one(q, changes, false).await.map(|_| ())
    }

    async fn flag(&self, login: &Login) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT reason FROM flags WHERE login = ?")
            .bind(login.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(err)
    }

    async fn prune(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let at = millis(before);
        let mut tx = self.begin().await?;
        let mut n = 0;
        for q in [
            "DELETE FROM failures WHERE at < ?",
            "DELETE FROM flows WHERE expires_at < ?",
            "DELETE FROM sessions WHERE expires_at < ?",
            "DELETE FROM used_once WHERE expires_at < ?",
            "DELETE FROM report_links WHERE expires_at < ?",
        ] {
            n += sqlx::query(q)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(err)?
                .rows_affected();
        }
        tx.commit().await.map_err(err)?;
        Ok(n)
    }

    async fn use_once(&self, key: &str, expires_at: OffsetDateTime) -> Result<bool, StoreError> {
        let done =
            sqlx::query("INSERT INTO used_once (key, expires_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")
                .bind(key)
                .bind(millis(expires_at))
                .execute(&self.pool)
                .await
                .map_err(err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn failures(&self, key: &str, since: OffsetDateTime) -> Result<u32, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM failures WHERE key = ? AND at >= ?")
            .bind(key)
            .bind(millis(since))
            .fetch_one(&self.pool)
            .await
            .map_err(err)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn insert_session(&self, s: &Session, changes: Changes) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE expires_at < ?")
            .bind(millis(s.created_at))
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        sqlx::query("INSERT INTO sessions (token_hash, login, created_at, expires_at) VALUES (?, ?, ?, ?)")
            .bind(s.token_hash.0.as_slice())
            .bind(s.login.as_str())
            .bind(millis(s.created_at))
            .bind(millis(s.expires_at))
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        apply(&mut tx, changes).await?;
        tx.commit().await.map_err(err)
    }

    async fn session(&self, token: &TokenHash) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query("SELECT login, created_at, expires_at FROM sessions WHERE token_hash = ?")
            .bind(token.0.as_slice())
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
        row.map(|r| {
            let login: String = r.try_get("login").map_err(err)?;
            Ok(Session {
                token_hash: *token,
                login: Login::parse(&login).map_err(|e| StoreError::Other(e.to_string()))?,
                created_at: time_of(r.try_get("created_at").map_err(err)?),
                expires_at: time_of(r.try_get("expires_at").map_err(err)?),
            })
        })
        .transpose()
    }

    async fn delete_session(&self, token: &TokenHash) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = ?")
            .bind(token.0.as_slice())
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn delete_sessions_of(&self, login: &Login) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE login = ?")
            .bind(login.as_str())
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(done.rows_affected())
    }

    async fn record(&self, changes: Changes) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        apply(&mut tx, changes).await?;
        tx.commit().await.map_err(err)
    }

    async fn due_mail(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<QueuedMail>, StoreError> {
        // Claim with a lease so that two workers (two nodes) never send the same message at once.
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "SELECT id, recipient, subject, body, attempts, created_at, sent_at, last_error FROM outbox \
             WHERE sent_at IS NULL AND next_attempt_at <= ? ORDER BY id LIMIT ?",
        )
        .bind(millis(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(err)?;
        let mail = rows.iter().map(queued_mail).collect::<Result<Vec<_>, _>>()?;
        for m in &mail {
            sqlx::query("UPDATE outbox SET next_attempt_at = ? WHERE id = ?")
                .bind(millis(now) + MAIL_LEASE_MS)
                .bind(m.id)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(mail)
    }

    async fn mail_sent(&self, id: i64, at: OffsetDateTime, scrub: bool) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET sent_at = ?, attempts = attempts + 1, last_error = NULL, \
             body = CASE WHEN ? THEN '(delivered; body removed)' ELSE body END WHERE id = ?",
        )
        .bind(millis(at))
        .bind(scrub)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(())
    }

    async fn mail_failed(
        &self,
        id: i64,
        next_attempt: OffsetDateTime,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?",
        )
        .bind(millis(next_attempt))
        .bind(error)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(())
    }

    async fn recent_mail(&self, limit: u32) -> Result<Vec<QueuedMail>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, recipient, subject, body, attempts, created_at, sent_at, last_error FROM outbox \
             ORDER BY id DESC LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.iter().map(queued_mail).collect()
    }

    async fn audit_after(
        &self,
        after_id: i64,
        since: Option<OffsetDateTime>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, activity, actor, target, result, reason, method, client_ip, user_agent, flow_id, \
             directory FROM audit WHERE id > ? AND at >= ? ORDER BY id LIMIT ?",
        )
        .bind(after_id)
        .bind(since.map(millis).unwrap_or(i64::MIN))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.iter().map(audit_row).collect()
    }

    async fn health(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(err)?;
        Ok(())
    }
}
