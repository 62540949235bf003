//! Headless Chromium driven through WebDriver (Debian's `chromium` and
//! `chromium-driver` packages) with a [`fantoccini::Client`].
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let browser = gatehouse_testkit::Browser::launch().await?;
//! browser.client().goto("http://127.0.0.1:8080/reset").await?;
//! let title = browser.client().title().await?;
//! browser.close().await?;
//! # let _ = title; Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use fantoccini::{Client, ClientBuilder};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The error text when the browser or its driver is not installed.
pub const NOT_INSTALLED: &str = "chromium/chromedriver not found: install the Debian packages \
     `chromium chromium-driver` (apt-get install -y chromium chromium-driver); the README test \
     command does this";

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long chromedriver may take to answer `/status`.
const DRIVER_READY_WITHIN: Duration = Duration::from_secs(15);
/// How long creating the WebDriver session (starting Chromium) may take.
const SESSION_WITHIN: Duration = Duration::from_secs(60);
/// How long ending the WebDriver session may take.
const CLOSE_WITHIN: Duration = Duration::from_secs(30);
/// Launch attempts (a picked port may be taken before chromedriver binds it).
const ATTEMPTS: usize = 3;

/// A headless Chromium session. Dropping it kills chromedriver and the
/// browser it started and removes the temporary profile; [`Browser::close`]
/// ends the WebDriver session politely first.
#[derive(Debug)]
pub struct Browser {
    client: Client,
    driver: Driver,
}

/// A running chromedriver, killed (with its process group) on drop.
#[derive(Debug)]
struct Driver {
    child: Child,
    port: u16,
    log_path: PathBuf,
    // Dropped after Drop::drop has killed the processes.
    dir: tempfile::TempDir,
}

/// The installed binaries, or the [`NOT_INSTALLED`] error.
fn find_binaries() -> anyhow::Result<(PathBuf, PathBuf)> {
    let path_var = std::env::var_os("PATH");
    let driver = Some(PathBuf::from(CHROMEDRIVER))
        .filter(|p| p.is_file())
        .or_else(|| crate::find_executable("chromedriver", path_var.as_deref()));
    let chromium = Some(PathBuf::from(CHROMIUM))
        .filter(|p| p.is_file())
        .or_else(|| crate::find_executable("chromium", path_var.as_deref()));
    match (driver, chromium) {
        (Some(driver), Some(chromium)) => Ok((driver, chromium)),
        _ => Err(anyhow::anyhow!(NOT_INSTALLED)),
    }
}

/// True when both `chromium` and `chromedriver` are installed.
pub fn is_installed() -> bool {
    find_binaries().is_ok()
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium
    /// session through it (fresh profile in a temporary directory, window
    /// 1200×900, no sandbox so it runs as root, no background networking).
    pub async fn launch() -> anyhow::Result<Browser> {
        let (driver_bin, chromium_bin) = find_binaries()?;
        let mut last_err = None;
        for attempt in 1..=ATTEMPTS {
            match Self::launch_once(&driver_bin, &chromium_bin).await {
                Ok(browser) => return Ok(browser),
                Err(err) => {
                    tracing::warn!(attempt, err = format!("{err:#}"), "browser launch failed");
                    last_err = Some(err);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("browser launch never attempted")))
    }

    async fn launch_once(driver_bin: &Path, chromium_bin: &Path) -> anyhow::Result<Browser> {
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-browser-")
            .tempdir()
            .context("creating the browser's temporary directory")?;
        let profile = dir.path().join("profile");
        let log_path = dir.path().join("chromedriver.log");
        let log =
            std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .context("duplicating the chromedriver log handle")?;
        let port = crate::free_port()?;

        let mut command = Command::new(driver_bin);
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true)
            // Its own process group, so Drop can kill Chromium along with it.
            .process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", driver_bin.display()))?;
        let mut driver = Driver {
            child,
            port,
            log_path,
            dir,
        };
        // On any error below, dropping `driver` kills chromedriver.
        driver.wait_until_ready().await?;
        let client = driver.connect(chromium_bin, &profile).await?;
        Ok(Browser { client, driver })
    }

    /// The WebDriver client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// What chromedriver printed so far (its last 8 KiB), for failure
    /// messages.
    pub fn driver_log(&self) -> String {
        self.driver.log()
    }

    /// The directory holding the Chromium profile and the chromedriver log;
    /// removed when the browser is dropped.
    pub fn temp_dir(&self) -> &Path {
        self.driver.dir.path()
    }

    /// Ends the WebDriver session (Chromium quits), then stops chromedriver
    /// and removes the temporary directory.
    pub async fn close(self) -> anyhow::Result<()> {
        let Browser { client, mut driver } = self;
        let closed = match tokio::time::timeout(CLOSE_WITHIN, client.close()).await {
            Ok(closed) => closed.context("closing the WebDriver session"),
            Err(_) => Err(anyhow::anyhow!(
                "closing the WebDriver session took over {CLOSE_WITHIN:?}"
            )),
        };
        driver.kill_group();
        if let Err(err) = driver.child.kill().await {
            tracing::debug!(%err, "chromedriver already gone");
        }
        closed
    }
}

impl Driver {
    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + DRIVER_READY_WITHIN;
        loop {
            if let Some(status) = self.child.try_wait().context("polling chromedriver")? {
                anyhow::bail!("chromedriver exited early ({status}); its log:\n{}", self.log());
            }
            match driver_status(self.port).await {
                Ok(true) => return Ok(()),
                Ok(false) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(false) => anyhow::bail!(
                    "chromedriver on port {} not ready within {DRIVER_READY_WITHIN:?}; its log:\n{}",
                    self.port,
                    self.log()
                ),
                Err(err) => {
                    return Err(err).context(format!(
                        "chromedriver on port {} did not answer within {DRIVER_READY_WITHIN:?}; \
                         its log:\n{}",
                        self.port,
                        self.log()
                    ))
                }
            }
        }
    }

    async fn connect(&self, chromium_bin: &Path, profile: &Path) -> anyhow::Result<Client> {
        let options = serde_json::json!({
            "binary": chromium_bin.to_string_lossy(),
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                format!("--user-data-dir={}", profile.display()),
                "--window-size=1200,900",
            ],
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), "chrome".into());
        capabilities.insert("goog:chromeOptions".into(), options);

        let url = format!("http://127.0.0.1:{}", self.port);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut builder = ClientBuilder::new(connector);
        builder.capabilities(capabilities);
        let session = tokio::time::timeout(SESSION_WITHIN, builder.connect(&url)).await;
        match session {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(err)) => Err(anyhow::anyhow!(
                "starting Chromium through chromedriver failed: {err}; chromedriver log:\n{}",
                self.log()
            )),
            Err(_) => Err(anyhow::anyhow!(
                "starting Chromium through chromedriver took over {SESSION_WITHIN:?}; \
                 chromedriver log:\n{}",
                self.log()
            )),
        }
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let tail_start = log.len().saturating_sub(8 * 1024);
        let tail_start = (tail_start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        log[tail_start..].to_owned()
    }

    /// Kills chromedriver's process group, i.e. chromedriver and the
    /// Chromium it started (a plain kill would leave Chromium running).
    fn kill_group(&self) {
        // id() is None once the child has been reaped; until then its pid
        // (and so the group id) cannot have been reused.
        if let Some(pgid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.kill_group();
        let _ = self.child.start_kill();
    }
}

/// Asks chromedriver's `/status` whether it is ready for new sessions.
async fn driver_status(port: u16) -> anyhow::Result<bool> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!("GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    // chromedriver keeps the connection open despite `Connection: close`,
    // so read by Content-Length instead of to EOF.
    let response = tokio::time::timeout(Duration::from_secs(2), read_http_response(&mut stream))
        .await
        .context("reading /status timed out")??;
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        return Ok(false);
    };
    if !head.starts_with("HTTP/1.1 200") {
        return Ok(false);
    }
    let status: serde_json::Value = serde_json::from_str(body).context("parsing /status")?;
    Ok(status["value"]["ready"].as_bool().unwrap_or(false))
}

/// Reads one HTTP response with a Content-Length body (or up to EOF).
async fn read_http_response(stream: &mut tokio::net::TcpStream) -> anyhow::Result<String> {
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(buf.get(..n).unwrap_or_default());
        let text = String::from_utf8_lossy(&response);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        });
        if length.is_some_and(|length| body.len() >= length) {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&response).into_owned())
}

#[cfg(test)]
mod tests;
