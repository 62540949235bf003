//! Connections to the directory: a small pool bound as the service account, reconnecting after an
//! outage, and one-off connections for binds as a user.
use super::{LdapSettings, Security};
use gatehouse_core::ports::DirectoryError;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry, SearchOptions};
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

pub struct Pool {
    settings: Arc<LdapSettings>,
    tls: Option<Arc<rustls::ClientConfig>>,
    idle: Mutex<Vec<Ldap>>,
    permits: Semaphore,
}

/// Errors that mean the connection (not the request) failed: retry on a fresh one.
pub fn is_transport(e: &LdapError) -> bool {
    !matches!(
        e,
        LdapError::LdapResult { .. } | LdapError::FilterParsing | LdapError::AddNoValues
    )
}

pub fn unavailable(e: &LdapError) -> DirectoryError {
    DirectoryError::Unavailable(format!("LDAP connection failed: {e}"))
}

impl Pool {
    pub fn new(settings: Arc<LdapSettings>) -> Result<Self, DirectoryError> {
        // rustls needs one process-wide crypto provider; when several are compiled in (other crates
        // may bring aws-lc) it cannot pick one by itself. An error only means one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = match &settings.tls_ca_file {
            Some(path) => Some(Arc::new(client_config(path)?)),
            None => None,
        };
        let size = settings.pool_size.max(1);
        Ok(Self {
            settings,
            tls,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Semaphore::new(size),
        })
    }

    /// Opens a connection (StartTLS when configured) without binding.
    pub async fn open(&self) -> Result<Ldap, DirectoryError> {
        let s = &self.settings;
        let mut cs = LdapConnSettings::new()
            .set_conn_timeout(s.connect_timeout)
            .set_starttls(s.security == Security::StartTls)
            .set_no_tls_verify(s.tls_insecure_skip_verify);
        if let Some(cfg) = &self.tls {
            cs = cs.set_config(cfg.clone());
        }
        let (conn, ldap) = LdapConnAsync::with_settings(cs, &s.url)
            .await
            .map_err(|e| unavailable(&e))?;
        ldap3::drive!(conn);
        Ok(ldap)
    }

    async fn open_service(&self) -> Result<Ldap, DirectoryError> {
        let mut ldap = self.open().await?;
        let s = &self.settings;
        let res = ldap
            .with_timeout(s.operation_timeout)
            .simple_bind(&s.bind_dn, s.bind_password.expose_secret())
            .await
            .map_err(|e| unavailable(&e))?;
        match res.rc {
            0 => Ok(ldap),
            49 => Err(DirectoryError::Unavailable(format!(
                "the service account {} could not bind: invalid credentials (check directory.bind_dn and \
                 directory.bind_password)",
                s.bind_dn
            ))),
            rc => Err(DirectoryError::Unavailable(format!(
                "the service account {} could not bind: {} ({rc})",
                s.bind_dn, res.text
            ))),
        }
    }

    fn checkout_idle(&self) -> Option<Ldap> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(mut l) = idle.pop() {
            if !l.is_closed() {
                return Some(l);
            }
        }
        None
    }

    fn checkin(&self, ldap: Ldap) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(ldap);
        }
    }

    /// Runs `op` on a service connection. A stale pooled connection (the directory restarted) is
    /// replaced and the operation retried once on a fresh one.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, DirectoryError>
    where
        F: Fn(Ldap) -> Fut,
        Fut: Future<Output = Result<T, LdapError>>,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| DirectoryError::Unavailable("the connection pool is closed".into()))?;
        loop {
            let (ldap, fresh) = match self.checkout_idle() {
                Some(l) => (l, false),
                None => (self.open_service().await?, true),
            };
            let mut handle = ldap.clone();
            handle.with_timeout(self.settings.operation_timeout);
            match op(handle).await {
                Ok(v) => {
                    self.checkin(ldap);
                    return Ok(v);
                }
                Err(e) if is_transport(&e) => {
                    drop(ldap);
                    if fresh {
                        return Err(unavailable(&e));
                    }
                    tracing::debug!(error = %e, "stale directory connection, reconnecting");
                }
                Err(e) => {
                    self.checkin(ldap);
                    return Err(super::map_error(&e));
                }
            }
        }
    }

    /// Entries matching `filter` under `base` (a search on a service connection).
    pub async fn search(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[String],
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        self.search_at_most(base, scope, filter, attrs, None).await
    }

    /// Like [`Pool::search`], stopping after `limit` entries (the server's "size limit exceeded"
    /// then just means there were more).
    pub async fn search_at_most(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[String],
        limit: Option<i32>,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        self.run(|mut l| async move {
            if let Some(n) = limit {
                l.with_search_options(SearchOptions::new().sizelimit(n));
            }
            let res = l.search(base, scope, filter, attrs.to_vec()).await?;
            // 4 = size limit exceeded: the first entries are what was asked for.
            let (rs, _) = if limit.is_some() && res.1.rc == 4 {
                (res.0, res.1)
            } else {
                res.success()?
            };
            Ok(rs.into_iter().map(SearchEntry::construct).collect())
        })
        .await
    }

    /// One entry by its DN, or `None` when it does not exist or is not visible.
    pub async fn read_entry(
        &self,
        dn: &str,
        attrs: &[String],
    ) -> Result<Option<SearchEntry>, DirectoryError> {
        match self.search(dn, Scope::Base, "(objectClass=*)", attrs).await {
            Ok(found) => Ok(found.into_iter().next()),
            Err(DirectoryError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A separate connection for binding as a user (never returned to the pool).
    pub async fn user_connection(&self) -> Result<Ldap, DirectoryError> {
        self.open().await
    }
}

fn client_config(path: &std::path::Path) -> Result<rustls::ClientConfig, DirectoryError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let bad = |m: String| DirectoryError::Other(format!("directory.tls_ca_file {}: {m}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}
