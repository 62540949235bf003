//! A real SMTP server on loopback that keeps what it receives in memory.
//!
//! It speaks plain RFC 5321 (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT;
//! `8BITMIME`, `SIZE`, `PIPELINING` and `SMTPUTF8` are advertised, STARTTLS
//! and AUTH are not), so production code talks to it with its real SMTP
//! client, e.g. lettre's
//! `AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1").port(sink.port())`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! let sink = gatehouse_testkit::SmtpSink::start().await?;
//! // ... point the code under test at sink.url() and let it send ...
//! let mail = sink.wait_for_message_to("alice@example.org", Duration::from_secs(5)).await?;
//! assert!(mail.text_body().contains("123456"));
//! sink.stop().await; // an outage: connections now get refused
//! let sink = gatehouse_testkit::SmtpSink::start_on(sink.port()).await?;
//! # drop(sink); Ok(()) }
//! ```

mod mail;
mod session;

pub use mail::CapturedMail;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use session::MailStore;

/// How long [`SmtpSink::start_on`] keeps retrying a port that is in use.
const BIND_RETRY_FOR: Duration = Duration::from_secs(5);
const BIND_RETRY_EVERY: Duration = Duration::from_millis(50);
/// How often the `wait_for_*` methods look at the captured mail.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// A running SMTP server on `127.0.0.1` that captures every message.
///
/// Dropping it stops it too (its tasks are aborted); [`SmtpSink::stop`]
/// does the same and waits until the port and every connection are closed.
#[derive(Debug)]
pub struct SmtpSink {
    port: u16,
    store: MailStore,
    connections: Arc<AtomicUsize>,
    running: Mutex<Running>,
}

#[derive(Debug, Default)]
struct Running {
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl SmtpSink {
    /// Starts a sink on a port picked by the OS.
    pub async fn start() -> anyhow::Result<SmtpSink> {
        Self::listen(0).await
    }

    /// Starts a sink on `port` (e.g. the port of a sink stopped earlier).
    /// The socket has `SO_REUSEADDR`, and binding is retried for up to 5 s
    /// while the port is still in use.
    pub async fn start_on(port: u16) -> anyhow::Result<SmtpSink> {
        Self::listen(port).await
    }

    async fn listen(port: u16) -> anyhow::Result<SmtpSink> {
        let listener = bind_with_retry(port).await?;
        let port = listener
            .local_addr()
            .context("reading the SMTP sink's local address")?
            .port();
        let store = MailStore::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let (shutdown, shutdown_rx) = oneshot::channel();
        let server = tokio::spawn(accept_loop(
            listener,
            store.clone(),
            connections.clone(),
            shutdown_rx,
        ));
        tracing::debug!(port, "smtp sink listening");
        Ok(SmtpSink {
            port,
            store,
            connections,
            running: Mutex::new(Running {
                shutdown: Some(shutdown),
                server: Some(server),
            }),
        })
    }

    /// The TCP port the sink listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// How many SMTP connections the sink has accepted so far (e.g. to see
    /// that a client reuses its connection).
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// A snapshot of every message captured so far, oldest first.
    pub fn messages(&self) -> Vec<CapturedMail> {
        self.store.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The captured messages with `addr` among the envelope recipients
    /// (ASCII case-insensitive), oldest first.
    pub fn messages_to(&self, addr: &str) -> Vec<CapturedMail> {
        let messages = self.store.lock().unwrap_or_else(|e| e.into_inner());
        messages.iter().filter(|m| m.is_to(addr)).cloned().collect()
    }

    /// Forgets every message captured so far.
    pub fn clear(&self) {
        self.store.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Waits until a message to `addr` has arrived and returns the most
    /// recent one. The error on timeout lists who did get mail.
    pub async fn wait_for_message_to(&self, addr: &str, timeout: Duration) -> anyhow::Result<CapturedMail> {
        let mut found = self.wait_for_count_to(addr, 1, timeout).await?;
        found
            .pop()
            .with_context(|| format!("no message to {addr} in the SMTP sink"))
    }

    /// Waits until at least `n` messages to `addr` have arrived and returns
    /// all messages to `addr` (oldest first; there may be more than `n`).
    pub async fn wait_for_count_to(
        &self,
        addr: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<CapturedMail>> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.messages_to(addr);
            if found.len() >= n {
                return Ok(found);
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "SMTP sink on port {}: expected {n} message(s) to {addr} within {timeout:?}, \
                     got {}; {}",
                    self.port,
                    found.len(),
                    self.arrivals_summary()
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    fn arrivals_summary(&self) -> String {
        let messages = self.messages();
        if messages.is_empty() {
            return "no mail arrived at all".to_owned();
        }
        let mut recipients: Vec<String> = Vec::new();
        for rcpt in messages.iter().flat_map(|m| m.rcpt_to.iter()) {
            if !recipients.iter().any(|r| r.eq_ignore_ascii_case(rcpt)) {
                recipients.push(rcpt.clone());
            }
        }
        format!(
            "{} message(s) arrived, for: {}",
            messages.len(),
            recipients.join(", ")
        )
    }

    /// Stops the sink: closes the listening socket and every open
    /// connection, and returns once they are closed, so connecting to
    /// [`Self::port`] is refused afterwards. Captured messages stay readable.
    /// Calling it again does nothing.
    pub async fn stop(&self) {
        let (shutdown, server) = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            (running.shutdown.take(), running.server.take())
        };
        if let Some(shutdown) = shutdown {
            // An Err only means the server task has already ended.
            let _ = shutdown.send(());
        }
        if let Some(server) = server {
            if let Err(err) = server.await {
                tracing::warn!(%err, "smtp sink task ended abnormally");
            }
        }
        tracing::debug!(port = self.port, "smtp sink stopped");
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let running = self.running.get_mut().unwrap_or_else(|e| e.into_inner());
        // Aborting the server task drops the listener and its JoinSet, which
        // aborts every connection task.
        if let Some(server) = running.server.take() {
            server.abort();
        }
    }
}

async fn bind_with_retry(port: u16) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + BIND_RETRY_FOR;
    loop {
        match bind_once(addr) {
            Ok(listener) => return Ok(listener),
            Err(err)
                if port != 0 && err.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                tokio::time::sleep(BIND_RETRY_EVERY).await;
            }
            Err(err) => {
                return Err(err).with_context(|| format!("SMTP sink: binding {addr}"));
            }
        }
    }
}

fn bind_once(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

async fn accept_loop(
    listener: TcpListener,
    store: MailStore,
    counter: Arc<AtomicUsize>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // Fires on stop() and when the sink is dropped.
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                    if let Err(err) = stream.set_nodelay(true) {
                        tracing::debug!(%err, "smtp sink: TCP_NODELAY failed");
                    }
                    let store = store.clone();
                    connections.spawn(async move {
                        if let Err(err) = session::serve(stream, store).await {
                            tracing::debug!(%peer, %err, "smtp sink connection ended");
                        }
                    });
                }
                Err(err) => {
                    tracing::warn!(%err, "smtp sink accept failed");
                    tokio::time::sleep(BIND_RETRY_EVERY).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

#[cfg(test)]
mod tests;
