//! The builtin directory: accounts stored in Gatehouse's own database, passwords as argon2id
//! (m = 19 MiB, t = 2, p = 1, hashed off the async executor), a history of recent passwords, and a
//! lockout after repeated wrong passwords.
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use async_trait::async_trait;
use gatehouse_core::password::Violation;
use gatehouse_core::ports::{Account, AccountSpec, Clock, Directory, DirectoryError, SecureRng};
use gatehouse_core::secret::Password;
use gatehouse_core::types::{Email, Login};
use sqlx::{Row, SqlitePool};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct BuiltinOptions {
    /// Wrong passwords in a row that lock the account (0 = never).
    pub lockout_threshold: u32,
    /// Recent passwords that cannot be used again (the current one included).
    pub history: u32,
}

impl Default for BuiltinOptions {
    fn default() -> Self {
        Self {
            lockout_threshold: 5,
            history: 5,
        }
    }
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS builtin_accounts (
        login TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        email TEXT,
        groups TEXT NOT NULL DEFAULT '[]',
        disabled INTEGER NOT NULL DEFAULT 0,
        password_hash TEXT,
        failed_logins INTEGER NOT NULL DEFAULT 0,
        locked_at INTEGER
    )",
    "CREATE TABLE IF NOT EXISTS builtin_history (
        login TEXT NOT NULL,
        hash TEXT NOT NULL,
        at INTEGER NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS builtin_history_login ON builtin_history (login, at)",
];

/// The address an unknown login's stand-in row carries (a reserved domain: never a mailbox).
const STAND_IN_EMAIL: &str = "nobody@stand-in.invalid";

fn unavailable(e: sqlx::Error) -> DirectoryError {
    DirectoryError::Unavailable(e.to_string())
}

fn argon2() -> Result<Argon2<'static>, DirectoryError> {
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|e| DirectoryError::Other(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

struct Row_ {
    account: Account,
    hash: Option<String>,
    failed: i64,
}

#[derive(Clone)]
pub struct BuiltinDirectory {
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRng>,
    options: BuiltinOptions,
    /// Verified against when the account is unknown, so every answer costs the same.
    dummy_hash: String,
}

impl BuiltinDirectory {
    pub async fn new(
        pool: SqlitePool,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRng>,
        options: BuiltinOptions,
    ) -> Result<Self, DirectoryError> {
        for stmt in SCHEMA {
            sqlx::query(stmt).execute(&pool).await.map_err(unavailable)?;
        }
        let mut me = Self {
            pool,
            clock,
            rng,
            options,
            dummy_hash: String::new(),
        };
        me.dummy_hash = me.hash(&Password::new("gatehouse-dummy-password")).await?;
        Ok(me)
    }

    async fn hash(&self, password: &Password) -> Result<String, DirectoryError> {
        let mut salt = [0u8; 16];
        self.rng.fill(&mut salt);
        let password = password.clone();
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::encode_b64(&salt).map_err(|e| DirectoryError::Other(e.to_string()))?;
            argon2()?
                .hash_password(password.expose_secret().as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| DirectoryError::Other(e.to_string()))
        })
        .await
        .map_err(|e| DirectoryError::Other(e.to_string()))?
    }

    /// True when `password` matches one of `hashes` (checked off the executor).
    async fn matches_any(&self, password: &Password, hashes: Vec<String>) -> Result<bool, DirectoryError> {
        let password = password.clone();
        tokio::task::spawn_blocking(move || {
            let a = argon2()?;
            Ok(hashes.iter().any(|h| {
                PasswordHash::new(h)
                    .map(|parsed| {
                        a.verify_password(password.expose_secret().as_bytes(), &parsed)
                            .is_ok()
                    })
                    .unwrap_or(false)
            }))
        })
        .await
        .map_err(|e| DirectoryError::Other(e.to_string()))?
    }

    /// The account. Every login gets one row back, an unknown one filled with stand-ins (its own
    /// login as the name, an address in a reserved domain, the dummy hash), read and decoded alike,
    /// so an unknown login costs what a known one does.
    async fn load(&self, login: &Login) -> Result<Option<Row_>, DirectoryError> {
        let r = sqlx::query(
            "SELECT a.login IS NOT NULL AS found, \
             CASE WHEN a.login IS NULL THEN w.wanted ELSE a.display_name END AS display_name, \
             CASE WHEN a.login IS NULL THEN ?2 ELSE a.email END AS email, \
             CASE WHEN a.login IS NULL THEN '[]' ELSE a.groups END AS groups, \
             CASE WHEN a.login IS NULL THEN 0 ELSE a.disabled END AS disabled, \
             CASE WHEN a.login IS NULL THEN ?3 ELSE a.password_hash END AS password_hash, \
             CASE WHEN a.login IS NULL THEN 0 ELSE a.failed_logins END AS failed_logins, \
             a.locked_at \
             FROM (SELECT ?1 AS wanted) AS w LEFT JOIN builtin_accounts AS a ON a.login = w.wanted",
        )
        .bind(login.as_str())
        .bind(STAND_IN_EMAIL)
        .bind(&self.dummy_hash)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        let get_err = |e: sqlx::Error| DirectoryError::Other(e.to_string());
        let found: bool = r.try_get("found").map_err(get_err)?;
        let email: Option<String> = r.try_get("email").map_err(get_err)?;
        let groups: String = r.try_get("groups").map_err(get_err)?;
        let hash: Option<String> = r.try_get("password_hash").map_err(get_err)?;
        let locked_at: Option<i64> = r.try_get("locked_at").map_err(get_err)?;
        let row = Row_ {
            account: Account {
                login: login.clone(),
                display_name: r.try_get("display_name").map_err(get_err)?,
                email: email.and_then(|e| Email::parse(&e).ok()),
                disabled: r.try_get("disabled").map_err(get_err)?,
                locked: locked_at.is_some(),
                has_password: hash.is_some(),
                groups: serde_json::from_str(&groups).unwrap_or_default(),
                must_change: false,
                expired: false,
                grace_logins_left: None,
                privileged: false,
            },
            hash,
            failed: r.try_get("failed_logins").map_err(get_err)?,
        };
        Ok(found.then_some(row))
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }

    async fn history(&self, login: &Login) -> Result<Vec<String>, DirectoryError> {
        sqlx::query_scalar(
            "SELECT hash FROM builtin_history WHERE login = ? ORDER BY at DESC, rowid DESC LIMIT ?",
        )
        .bind(login.as_str())
        .bind(i64::from(self.options.history))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)
    }

    /// Writes a new password (after the history check); clears the lockout.
    async fn write_password(&self, login: &Login, new: &Password) -> Result<(), DirectoryError> {
        if self.options.history > 0 && self.matches_any(new, self.history(login).await?).await? {
            return Err(DirectoryError::Rejected(vec![Violation::new(
                "history",
                format!(
                    "Choose a password you have not used for your last {} passwords.",
                    self.options.history
                ),
            )]));
        }
        let hash = self.hash(new).await?;
        let now = self.now_ms();
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query("UPDATE builtin_accounts SET password_hash = ?, failed_logins = 0, locked_at = NULL WHERE login = ?")
            .bind(&hash)
            .bind(login.as_str())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query("INSERT INTO builtin_history (login, hash, at) VALUES (?, ?, ?)")
            .bind(login.as_str())
            .bind(&hash)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query(
            "DELETE FROM builtin_history WHERE login = ?1 AND rowid NOT IN \
             (SELECT rowid FROM builtin_history WHERE login = ?1 ORDER BY at DESC, rowid DESC LIMIT ?2)",
        )
        .bind(login.as_str())
        .bind(i64::from(self.options.history.max(1)))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    /// Counts a wrong password; the account locks at the threshold. Run for every wrong password,
    /// matching no row when the login is unknown, disabled or has no password.
    async fn count_failure(&self, login: &Login) -> Result<(), DirectoryError> {
        let threshold = i64::from(self.options.lockout_threshold);
        sqlx::query(
            "UPDATE builtin_accounts SET failed_logins = failed_logins + 1, \
             locked_at = CASE WHEN ?1 > 0 AND failed_logins + 1 >= ?1 AND locked_at IS NULL THEN ?2 ELSE locked_at END \
             WHERE login = ?3 AND disabled = 0 AND password_hash IS NOT NULL",
        )
        .bind(threshold)
        .bind(self.now_ms())
        .bind(login.as_str())
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    /// Locks an account as if it had too many wrong passwords (demo data, helpdesk tests).
    pub async fn lock(&self, login: &Login) -> Result<(), DirectoryError> {
        sqlx::query("UPDATE builtin_accounts SET locked_at = ? WHERE login = ?")
            .bind(self.now_ms())
            .bind(login.as_str())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub async fn set_disabled(&self, login: &Login, disabled: bool) -> Result<(), DirectoryError> {
        sqlx::query("UPDATE builtin_accounts SET disabled = ? WHERE login = ?")
            .bind(disabled)
            .bind(login.as_str())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl Directory for BuiltinDirectory {
    fn name(&self) -> &str {
        "builtin"
    }

    async fn find_account(&self, login: &Login) -> Result<Option<Account>, DirectoryError> {
        Ok(self.load(login).await?.map(|r| r.account))
    }

    async fn authenticate(&self, login: &Login, password: &Password) -> Result<Account, DirectoryError> {
        // Unknown, disabled or never set: checked against the dummy hash, so every answer costs the
        // same; and every wrong password runs the same counter update (a no-op for those).
        let usable = self
            .load(login)
            .await?
            .filter(|r| !r.account.disabled && r.hash.is_some());
        let hash = usable
            .as_ref()
            .and_then(|r| r.hash.clone())
            .unwrap_or_else(|| self.dummy_hash.clone());
        let matched = self.matches_any(password, vec![hash]).await?;
        match usable {
            Some(row) if matched => {
                if row.account.locked {
                    return Err(DirectoryError::Locked);
                }
                if row.failed > 0 {
                    sqlx::query("UPDATE builtin_accounts SET failed_logins = 0 WHERE login = ?")
                        .bind(login.as_str())
                        .execute(&self.pool)
                        .await
                        .map_err(unavailable)?;
                }
                Ok(row.account)
            }
            _ => {
                self.count_failure(login).await?;
                Err(DirectoryError::InvalidCredentials)
            }
        }
    }

    async fn reset_password(&self, login: &Login, new: &Password) -> Result<(), DirectoryError> {
        match self.load(login).await? {
            None => Err(DirectoryError::NotFound),
            Some(r) if r.account.disabled => Err(DirectoryError::Disabled),
            Some(_) => self.write_password(login, new).await,
        }
    }

    async fn change_password(
        &self,
        login: &Login,
        old: &Password,
        new: &Password,
    ) -> Result<(), DirectoryError> {
        self.authenticate(login, old).await?;
        self.write_password(login, new).await
    }

    async fn unlock(&self, login: &Login) -> Result<(), DirectoryError> {
        let done =
            sqlx::query("UPDATE builtin_accounts SET failed_logins = 0, locked_at = NULL WHERE login = ?")
                .bind(login.as_str())
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(DirectoryError::NotFound)
        }
    }

    async fn lock(&self, login: &Login) -> Result<(), DirectoryError> {
        let done = sqlx::query("UPDATE builtin_accounts SET locked_at = ? WHERE login = ?")
            .bind(self.now_ms())
            .bind(login.as_str())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(DirectoryError::NotFound)
        }
    }

    async fn provision(&self, spec: &AccountSpec) -> Result<bool, DirectoryError> {
        let groups = serde_json::to_string(&spec.groups).map_err(|e| DirectoryError::Other(e.to_string()))?;
        let created = sqlx::query(
            "INSERT INTO builtin_accounts (login, display_name, email, groups) VALUES (?, ?, ?, ?) \
             ON CONFLICT (login) DO NOTHING",
        )
        .bind(spec.login.as_str())
        .bind(&spec.display_name)
        .bind(spec.email.as_ref().map(|e| e.as_str()))
        .bind(&groups)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected()
            == 1;
        if !created {
            sqlx::query(
                "UPDATE builtin_accounts SET display_name = ?, email = ?, groups = ? WHERE login = ?",
            )
            .bind(&spec.display_name)
            .bind(spec.email.as_ref().map(|e| e.as_str()))
            .bind(&groups)
            .bind(spec.login.as_str())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        }
        if let Some(pw) = &spec.password {
            self.write_password(&spec.login, pw).await?;
        }
        Ok(created)
    }

    async fn health(&self) -> Result<(), DirectoryError> {
        sqlx::query("SELECT 1 FROM builtin_accounts LIMIT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
