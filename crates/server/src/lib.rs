//! The Gatehouse binary's library: configuration, wiring, and the running application. The only
//! crate that names concrete adapters.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod demo;

use anyhow::Context;
use config::{Config, DirectoryKind, MailTransportKind};
use gatehouse_core::clock::{OsRng, SystemClock};
use gatehouse_core::ports::{Clock, Directory, SecureRng, Store};
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

/// The use cases with their adapters, without the HTTP server (for the admin CLI).
pub struct Core {
    pub app: Gatehouse,
    pub store: Arc<SqliteStore>,
    pub builtin: BuiltinDirectory,
    pub clock: Arc<dyn Clock>,
}

impl Core {
    pub async fn open(cfg: &Config) -> anyhow::Result<Self> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
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
        let app = Gatehouse::new(directory, store_port, clock.clone(), rng, cfg.settings.clone()).await?;
        Ok(Self {
            app,
            store,
            builtin,
            clock,
        })
    }
}

/// A running Gatehouse: HTTP server plus outbox worker.
pub struct Application {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    worker: JoinHandle<()>,
    sync: Option<JoinHandle<()>>,
    pub core: Core,
}

impl Application {
    /// Opens the store, binds the listener (port 0 picks a free one) and starts serving.
    pub async fn build(cfg: &Config) -> anyhow::Result<Self> {
        let core = Core::open(cfg).await?;
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

        let web = WebConfig {
            public_url: cfg.public_url.clone(),
            demo: cfg.mail_transport == MailTransportKind::DevMailbox,
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

/// Synchronises users from the directory at start and then every `every`, until shutdown.
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
