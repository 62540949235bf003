//! Running external programs for the directory fixtures ([`crate::slapd`]
//! and [`crate::samba`]): one-shot tools with captured output and a time
//! limit ([`Runner`]), their failures as errors, the OpenLDAP client tools'
//! bind arguments, and the server itself under a supervising shell
//! ([`Running`]) that stops it and removes its directory when this process
//! lets go or dies.

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncWriteExt as _;
use tokio::time::Instant;

/// Time limit for one run of an LDAP client tool (and of the other quick
/// tools: slapadd, cp, flock, openssl).
pub(crate) const TOOL_WITHIN: Duration = Duration::from_secs(30);
/// Network timeout passed to the client tools (`-o nettimeout=`).
const NET_TIMEOUT_SECS: u32 = 10;
/// How long a server may take to exit after SIGTERM before it gets SIGKILL.
const STOP_WITHIN: Duration = Duration::from_secs(10);
/// How much of a server's log goes into error messages.
const LOG_TAIL: usize = 8 * 1024;

/// The end of a launch script, after the line that starts the server in the
/// background (`... &`) with the shell's stdin moved to fd 3. `$2` is the
/// server's directory. It prints the server's pid, then exits with the
/// server's exit status. On EOF on fd 3 (our end of the pipe closed) it
/// SIGTERMs the server and removes the directory once the server is gone;
/// when the server exits for another reason (`stop` signals it directly, or
/// it failed to start), the directory stays and the watcher is killed.
const SUPERVISE_SCRIPT: &str = r#"pid=$!
echo "$pid"
exec >/dev/null
(
  read -r _ <&3
  : >"$2/closing"
  kill -TERM "$pid" 2>/dev/null
) &
watcher=$!
exec 3<&-
wait "$pid"
rc=$?
if [ -e "$2/closing" ]; then rm -rf "$2"; else kill "$watcher" 2>/dev/null; fi
exit "$rc"
"#;

/// How a fixture runs its one-shot tools.
pub(crate) struct Runner {
    /// Environment variables set for every tool.
    pub(crate) env: &'static [(&'static str, &'static str)],
    /// Whether the timeout error shows `***` instead of the argument after
    /// `-w` (a bind password).
    pub(crate) hide_passwords: bool,
}

impl Runner {
    /// Runs `program` (stdin fed from `input`, closed when `None`), killing
    /// it after `within`. A non-zero exit is not an error here (see
    /// [`check_success`]).
    pub(crate) async fn run(
        &self,
        program: &Path,
        args: &[String],
        input: Option<Vec<u8>>,
        within: Duration,
    ) -> anyhow::Result<Output> {
        let name = program.file_name().map_or_else(
            || program.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .envs(self.env.iter().copied())
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stdin = child.stdin.take();
        let feed = async move {
            if let (Some(mut stdin), Some(input)) = (stdin, input) {
                // A tool that stops early closes the pipe; its stderr says why.
                if let Err(err) = stdin.write_all(&input).await {
                    tracing::debug!(%err, "writing to the tool's stdin failed");
                }
            }
        };
        let run = async { tokio::join!(feed, child.wait_with_output()).1 };
        match tokio::time::timeout(within, run).await {
            Ok(output) => output.with_context(|| format!("running {name}")),
            Err(_) => {
                let shown = if self.hide_passwords {
                    redact(args)
                } else {
                    args.to_vec()
                };
                anyhow::bail!("{name} {} did not finish within {within:?}", shown.join(" "))
            }
        }
    }

    /// Runs `ldapmodify` (at `program`) with `args` and `ldif` on stdin; the
    /// error (`<what> failed (...)`) carries its output.
    pub(crate) async fn ldapmodify(
        &self,
        program: &Path,
        args: &[String],
        ldif: &str,
        within: Duration,
        what: &str,
    ) -> anyhow::Result<()> {
        let output = self
            .run(program, args, Some(ldif.as_bytes().to_vec()), within)
            .await?;
        check_success(what, &output)
    }
}

/// `args` with the value after `-w` (a password) hidden.
fn redact(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut hide_next = false;
    for arg in args {
        out.push(if hide_next { "***".to_owned() } else { arg.clone() });
        hide_next = arg == "-w";
    }
    out
}

pub(crate) fn check_success(what: &str, output: &Output) -> anyhow::Result<()> {
    if output.status.success() {
        Ok(())
    } else {
        Err(tool_failure(what, output))
    }
}

/// `<what> failed (exit code N): <stderr>`, then the stdout, each cut to
/// its last 4 KiB.
pub(crate) fn tool_failure(what: &str, output: &Output) -> anyhow::Error {
    let text = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim();
        let start = text.len().saturating_sub(4096);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text.get(start..).unwrap_or_default().to_owned()
    };
    let exit = output
        .status
        .code()
        .map_or_else(|| output.status.to_string(), |code| format!("exit code {code}"));
    anyhow::anyhow!(
        "{what} failed ({exit}): {}{}",
        text(&output.stderr),
        match text(&output.stdout) {
            out if out.is_empty() => String::new(),
            out => format!("\n(stdout: {out})"),
        }
    )
}

/// Simple-bind arguments for the OpenLDAP client tools.
pub(crate) fn ldap_bind_args(url: &str, who: &str, password: &str) -> Vec<String> {
    [
        "-x",
        "-H",
        url,
        "-D",
        who,
        "-w",
        password,
        "-o",
        &format!("nettimeout={NET_TIMEOUT_SECS}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The log file `log` from byte `from` on (its last 8 KiB), or `(empty)`.
pub(crate) fn log_tail(log: &Path, from: u64) -> String {
    let bytes = std::fs::read(log).unwrap_or_default();
    let from = usize::try_from(from).unwrap_or(0).min(bytes.len());
    let tail = bytes.get(from..).unwrap_or_default();
    let tail = tail
        .get(tail.len().saturating_sub(LOG_TAIL)..)
        .unwrap_or_default();
    let text = String::from_utf8_lossy(tail).trim().to_owned();
    if text.is_empty() {
        "(empty)".to_owned()
    } else {
        text
    }
}

/// A temporary directory `<prefix>XXXXXX` for `server`'s files, with a
/// path shorter than `max_path` bytes: under `$TMPDIR` when that is short
/// enough, else under `/tmp`.
pub(crate) fn short_temp_dir(
    server: &str,
    prefix: &str,
    max_path: usize,
) -> anyhow::Result<tempfile::TempDir> {
    let tmp = std::env::temp_dir();
    // "/" + prefix + 6 random characters
    let fits = tmp.as_os_str().len() + 1 + prefix.len() + 6 < max_path;
    let base = if fits { tmp } else { PathBuf::from("/tmp") };
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .with_context(|| format!("creating {server}'s temporary directory in {}", base.display()))
}

/// A server running under `sh` (see [`Running::spawn`]). Dropping it closes
/// the pipe, so the shell stops the server and removes its directory.
#[derive(Debug)]
pub(crate) struct Running {
    /// The server's name in messages (`slapd`, `samba`).
    server: &'static str,
    sh: PathBuf,
    /// None once it has been waited for (then `exit` is set).
    shell: Option<std::process::Child>,
    exit: Option<ExitStatus>,
    /// Our end of the shell's stdin: the shell stops the server when it
    /// closes.
    keepalive: Option<std::process::ChildStdin>,
    pid: u32,
}

impl Running {
    /// Runs `start` followed by [`SUPERVISE_SCRIPT`] with `sh -c` (`$0`
    /// `gatehouse-<server>`, then `args`: `$2` must be the server's
    /// directory) and `stderr`, and returns once the shell has printed the
    /// server's pid. `start` must move the shell's stdin to fd 3 and start
    /// the server in the background with `&` as its last line.
    pub(crate) async fn spawn(
        server: &'static str,
        sh: &Path,
        start: &str,
        args: &[&OsStr],
        stderr: Stdio,
    ) -> anyhow::Result<Running> {
        let mut shell = std::process::Command::new(sh)
            .arg("-c")
            .arg(format!("{start}{SUPERVISE_SCRIPT}"))
            .arg(format!("gatehouse-{server}"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {} for {server}", sh.display()))?;
        let keepalive = shell.stdin.take();
        let stdout = shell.stdout.take();
        // From here on, dropping `running` stops everything.
        let mut running = Running {
            server,
            sh: sh.to_owned(),
            shell: Some(shell),
            exit: None,
            keepalive,
            pid: 0,
        };
        let stdout = stdout.with_context(|| format!("{server} shell has no stdout"))?;
        // The shell prints the server's pid right after forking it.
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await
        .with_context(|| format!("reading {server}'s pid"))?
        .with_context(|| format!("reading {server}'s pid"))?;
        running.pid = line
            .trim()
            .parse()
            .with_context(|| format!("{server} shell printed {line:?} instead of a pid"))?;
        Ok(running)
    }

    /// The exit status of the shell (= the server's) once it has exited.
    pub(crate) fn try_exited(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            if let Some(shell) = self.shell.as_mut() {
                self.exit = shell.try_wait()?;
                if self.exit.is_some() {
                    self.shell = None;
                }
            }
        }
        Ok(self.exit)
    }

    /// Whether the server has not exited (as far as the shell tells).
    pub(crate) fn is_alive(&mut self) -> bool {
        matches!(self.try_exited(), Ok(None))
    }

    /// SIGTERM to the server, then waits for the shell to exit (SIGKILL to
    /// both after [`STOP_WITHIN`]).
    pub(crate) async fn terminate(&mut self) -> anyhow::Result<()> {
        let server = self.server;
        if self.try_exited()?.is_some() {
            return Ok(());
        }
        signal(&self.sh, "TERM", self.pid).await;
        if self.wait_exit(STOP_WITHIN).await? {
            return Ok(());
        }
        tracing::warn!(
            pid = self.pid,
            "{server} ignored SIGTERM for {STOP_WITHIN:?}, killing it"
        );
        signal(&self.sh, "KILL", self.pid).await;
        if let Some(shell) = self.shell.as_mut() {
            if let Err(err) = shell.kill() {
                tracing::debug!(%err, "{server} shell already gone");
            }
        }
        anyhow::ensure!(
            self.wait_exit(Duration::from_secs(5)).await?,
            "{server} (pid {}) did not exit even after SIGKILL",
            self.pid
        );
        Ok(())
    }

    /// Polls until the shell has exited; false on timeout.
    async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<bool> {
        let server = self.server;
        let deadline = Instant::now() + within;
        loop {
            if self
                .try_exited()
                .with_context(|| format!("waiting for {server}"))?
                .is_some()
            {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // EOF on the shell's stdin: it SIGTERMs the server and removes the
        // directory.
        drop(self.keepalive.take());
        if let Some(shell) = self.shell.take() {
            reap_in_background(shell, &format!("{}-reaper", self.server));
        }
    }
}

/// Waits for `child` on a thread (no zombie, no blocking of the caller).
pub(crate) fn reap_in_background(mut child: std::process::Child, name: &str) {
    let reaper = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || child.wait());
    if let Err(err) = reaper {
        tracing::debug!(%err, "could not start the {name} thread");
    }
}

/// Sends a signal with the shell's `kill` builtin; failures (the process is
/// already gone) are only logged.
async fn signal(sh: &Path, signal: &str, pid: u32) {
    let result = tokio::process::Command::new(sh)
        .args(["-c", "kill -s \"$1\" \"$2\"", "kill", signal, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    match result {
        Ok(status) if status.success() => {}
        Ok(status) => tracing::debug!(pid, signal, %status, "kill failed (process gone?)"),
        Err(err) => tracing::debug!(pid, signal, %err, "could not run kill"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact(&["-D".into(), "x".into(), "-w".into(), "secret".into()]),
            ["-D", "x", "-w", "***"]
        );
    }

    #[test]
    fn log_tails() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        assert_eq!(log_tail(&log, 0), "(empty)");
        std::fs::write(&log, "first\nsecond\n").unwrap();
        assert_eq!(log_tail(&log, 0), "first\nsecond");
        assert_eq!(log_tail(&log, 6), "second");
        assert_eq!(log_tail(&log, 99), "(empty)");
    }

    #[tokio::test]
    async fn tools_run_with_input_env_and_time_limit() {
        let Ok(sh) = crate::require_tool("sh", "dash") else {
            return;
        };
        let runner = Runner {
            env: &[("GATEHOUSE_TOOLS_TEST", "set")],
            hide_passwords: true,
        };
        let script = |s: &str| vec!["-c".to_owned(), s.to_owned()];
        let out = runner
            .run(
                &sh,
                &script("cat; echo \"$GATEHOUSE_TOOLS_TEST\""),
                Some(b"in:".to_vec()),
                TOOL_WITHIN,
            )
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "in:set\n");
        check_success("cat", &out).unwrap();

        let out = runner
            .run(&sh, &script("echo oops >&2; exit 3"), None, TOOL_WITHIN)
            .await
            .unwrap();
        let err = check_success("failing", &out).unwrap_err().to_string();
        assert_eq!(err, "failing failed (exit code 3): oops");

        let mut args = script("sleep 5");
        args.extend(["-w".to_owned(), "secret".to_owned()]);
        let err = runner
            .run(&sh, &args, None, Duration::from_millis(100))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("-w *** did not finish"), "{err}");
    }
}
