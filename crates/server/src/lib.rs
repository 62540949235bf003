//! The Gatehouse binary's library: configuration, wiring, and the running application. The only
//! crate that names concrete adapters.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod demo;

use anyhow::Context;
use config::{Config, DirectoryKind, MailTransportKind, PhoneProvider};
use gatehouse_core::clock::{OsRng, SystemClock};
use gatehouse_core::ports::{Clock, Directory, PhoneSender, SecureRng, Store};
use gatehouse_core::Gatehouse;
use gatehouse_directory::ad::AdDirectory;
use gatehouse_directory::ldap::LdapDirectory;
use gatehouse_directory::BuiltinDirectory;
use gatehouse_notify::{DevMailbox, MailTransport, OutboxWorker, SmtpTransport};
use gatehouse_store::SqliteStore;
use gatehouse_web::{router, AppState, WebConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The breach check: the shipped list of common passwords, plus the imported corpus when there is one.
#[derive(Debug)]
pub struct BreachCheck(pub Arc<gatehouse_breach::SwappableIndex>);

impl gatehouse_core::password::BreachCheck for BreachCheck {
    fn is_breached(&self, password: &str) -> bool {
        gatehouse_breach::builtin_common_contains(password) || self.0.contains_password(password)
    }
}

/// The use cases with their adapters, without the HTTP server (for the admin CLI).
pub struct Core {
    pub breach: Arc<gatehouse_breach::SwappableIndex>,
    pub app: Gatehouse,
    pub store: Arc<SqliteStore>,
    pub builtin: BuiltinDirectory,
    pub clock: Arc<dyn Clock>,
}

impl Core {
    pub async fn open(cfg: &Config) -> anyhow::Result<Self> {
        Self::open_with_clock(cfg, Arc::new(SystemClock)).await
    }

    /// As [`Core::open`] with another clock (tests move time forward with a fixed one).
    pub async fn open_with_clock(cfg: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let rng: Arc<dyn SecureRng> = Arc::new(OsRng);
        let store = Arc::new(
            SqliteStore::connect(&cfg.store_url)
                .await
                .with_context(|| format!("store.url = {}", cfg.store_url))?,
        );
        let builtin = BuiltinDirectory::new(
            store.pool().clone(),
            clock.clone(),
            rng.clone(),
            cfg.builtin.clone(),
        )
        .await?;
        let directory: Arc<dyn Directory> = match &cfg.directory {
            DirectoryKind::Builtin => Arc::new(builtin.clone()),
            DirectoryKind::Ldap { settings, .. } => Arc::new(
                LdapDirectory::new((**settings).clone(), clock.clone(), rng.clone())
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
            DirectoryKind::Ad { settings, .. } => Arc::new(
                AdDirectory::new((**settings).clone(), rng.clone()).map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
        };
        let store_port: Arc<dyn Store> = store.clone();
        let breach = Arc::new(gatehouse_breach::SwappableIndex::empty());
        if let Some((path, _)) = &cfg.breach_index {
            let index = gatehouse_breach::BreachIndex::open(path)
                .map_err(|e| anyhow::anyhow!("password.breach_index: {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), hashes = index.len(), "breach index loaded");
            breach.swap(index);
        }
        let mut settings = cfg.settings.clone();
        settings.password.breach = Some(Arc::new(BreachCheck(breach.clone())));
        let mut app = Gatehouse::new(directory, store_port, clock.clone(), rng.clone(), settings).await?;
        if let Some(sender) = phone_sender(cfg, clock.clone(), rng.clone())? {
            app = app.with_phone(sender);
        }
        Ok(Self {
            breach,
            app,
            store,
            builtin,
            clock,
        })
    }
}

/// The configured SMS / voice provider, if any.
fn phone_sender(
    cfg: &Config,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRng>,
) -> anyhow::Result<Option<Arc<dyn PhoneSender>>> {
    use gatehouse_notify::{EmailGatewaySender, EmailGatewaySettings, TwilioSender, WebhookSender};
    Ok(match &cfg.phone {
        PhoneProvider::None => None,
        PhoneProvider::Twilio(t) => Some(Arc::new(
            TwilioSender::new(t.clone()).map_err(anyhow::Error::msg)?,
        )),
        PhoneProvider::Webhook(w) => Some(Arc::new(
            WebhookSender::new(w.clone(), clock, rng).map_err(anyhow::Error::msg)?,
        )),
        PhoneProvider::EmailGateway { address } => {
            let transport: Arc<dyn MailTransport> = match cfg.mail_transport {
                MailTransportKind::Smtp => {
                    Arc::new(SmtpTransport::new(&cfg.mail).map_err(anyhow::Error::msg)?)
                }
                MailTransportKind::DevMailbox => Arc::new(DevMailbox),
            };
            let settings = EmailGatewaySettings {
                address: address.clone(),
                subject: String::new(),
            };
            Some(Arc::new(
                EmailGatewaySender::new(settings, transport).map_err(anyhow::Error::msg)?,
            ))
        }
    })
}

/// A running Gatehouse: HTTP server plus outbox worker.
pub struct Application {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    worker: JoinHandle<()>,
    sync: Option<JoinHandle<()>>,
    breach_watch: Option<JoinHandle<()>>,
    housekeeping: JoinHandle<()>,
    pub core: Core,
}

impl Application {
    /// Opens the store, binds the listener (port 0 picks a free one) and starts serving.
    pub async fn build(cfg: &Config) -> anyhow::Result<Self> {
        Self::build_with_clock(cfg, Arc::new(SystemClock)).await
    }

    /// As [`Application::build`] with another clock (tests).
    pub async fn build_with_clock(cfg: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let core = Core::open_with_clock(cfg, clock).await?;
        let transport: Arc<dyn MailTransport> = match cfg.mail_transport {
            MailTransportKind::Smtp => Arc::new(SmtpTransport::new(&cfg.mail).map_err(anyhow::Error::msg)?),
            MailTransportKind::DevMailbox => Arc::new(DevMailbox),
        };
        let (shutdown, rx) = watch::channel(false);
        let store: Arc<dyn Store> = core.store.clone();
        let worker = OutboxWorker {
            store,
            transport,
            clock: core.clock.clone(),
            retry: cfg.retry,
            // The demo's development mailbox shows delivered bodies; real transports scrub them.
            keep_bodies: cfg.mail_transport == MailTransportKind::DevMailbox,
        };
        let worker = tokio::spawn(worker.run(rx.clone()));
        let sync = cfg
            .directory
            .sync_interval()
            .map(|every| tokio::spawn(sync_schedule(core.app.clone(), every, rx.clone())));
        let breach_watch = cfg.breach_index.clone().map(|(path, every)| {
            tokio::spawn(watch_breach_index(core.breach.clone(), path, every, rx.clone()))
        });
        let housekeeping = tokio::spawn(housekeeping(
            core.store.clone(),
            core.app.clone(),
            core.clock.clone(),
            rx.clone(),
        ));

        let web = WebConfig {
            public_url: cfg.public_url.clone(),
            demo: cfg.mail_transport == MailTransportKind::DevMailbox,
            trusted_proxies: cfg.trusted_proxies.clone(),
            admin_tokens: cfg.admin_tokens.clone(),
        };
        let state = AppState {
            app: core.app.clone(),
            web: Arc::new(web),
        };
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("server.listen: cannot listen on {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let mut rx_srv = rx;
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                router(state).into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = rx_srv.wait_for(|stop| *stop).await;
            })
            .await
        });
        tracing::info!(%addr, "gatehouse listening");
        Ok(Self {
            addr,
            shutdown,
            server,
            worker,
            sync,
            breach_watch,
            housekeeping,
            core,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops accepting, lets requests in flight finish, stops the worker.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.server.await??;
        self.worker.await?;
        if let Some(sync) = self.sync {
            sync.await?;
        }
        if let Some(w) = self.breach_watch {
            w.await?;
        }
        self.housekeeping.await?;
        Ok(())
    }

    /// Serves until Ctrl-C or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        #[cfg(unix)]
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        ctrl_c.await?;
        tracing::info!("shutting down");
        self.stop().await
    }
}

/// Swaps in a new breach index when the file at `path` is replaced (`gatehouse breach import`
/// writes a temporary file and renames it), without a restart; lookups in flight keep the old one.
async fn watch_breach_index(
    index: Arc<gatehouse_breach::SwappableIndex>,
    path: std::path::PathBuf,
    every: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) {
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.ino(), m.len(), m.mtime(), m.mtime_nsec())
        })
    };
    let mut seen = stamp(&path);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = stamp(&path);
        if now.is_none() || now == seen {
            continue;
        }
        let (p, idx) = (path.clone(), index.clone());
        match tokio::task::spawn_blocking(move || idx.reload_from(&p)).await {
            Ok(Ok(_)) => {
                seen = now;
                let n = index.current().map(|i| i.len()).unwrap_or(0);
                tracing::info!(path = %path.display(), hashes = n, "new breach index swapped in");
            }
            Ok(Err(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "new breach index refused; keeping the old one")
            }
            Err(e) => tracing::warn!(error = %e, "breach index reload failed"),
        }
    }
}

/// Synchronises users from the directory at start and then every `every`, until shutdown.
/// Every ten minutes: forget throttling counters, flows, sessions and links past any window that
/// reads them (two days covers the daily limits), and re-read the population's combinations of
/// methods that decoy flows are drawn from.
async fn housekeeping(
    store: Arc<SqliteStore>,
    app: Gatehouse,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match store.prune(clock.now() - time::Duration::days(2)).await {
            Ok(n) if n > 0 => tracing::debug!(rows = n, "expired rows pruned"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning expired rows failed; will retry"),
        }
        if let Err(e) = app.refresh_decoy_shapes().await {
            tracing::warn!(error = %e, "reading the registered methods for decoys failed; will retry");
        }
    }
}

async fn sync_schedule(app: Gatehouse, every: std::time::Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match app.sync_directory(false).await {
            Ok(r) => tracing::info!(
                read = r.read,
                disabled = r.disabled,
                skipped = r.skipped.len(),
                full = r.full,
                "directory synchronised"
            ),
            Err(e) => tracing::warn!(error = %e, "directory synchronisation failed; will retry"),
        }
    }
}

/// Logs for operators: text or JSON, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
