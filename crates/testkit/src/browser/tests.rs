use std::io::Write as _;

use fantoccini::Locator;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::*;

const PAGE: &str = "<!doctype html><html><head><meta charset=\"utf-8\">\
    <title>Gatehouse test form</title></head><body>\
    <form method=\"post\" action=\"/reset\"><label>User <input name=\"username\"></label>\
    <button type=\"submit\">Send code</button></form></body></html>";

/// Whether a browser test can run; fails under CI / GATEHOUSE_REQUIRE_ALL.
fn browser_available(test: &str) -> bool {
    if is_installed() {
        return true;
    }
    if crate::ci_requires_all() {
        panic!("{test}: {NOT_INSTALLED} (CI or GATEHOUSE_REQUIRE_ALL is set, so this fails)");
    }
    // Straight to the process's stderr: eprintln! would be captured by the
    // test harness and never shown for a passing test.
    let bar = "!".repeat(78);
    let _ = writeln!(
        std::io::stderr(),
        "\n{bar}\nSKIPPED {test}: {NOT_INSTALLED}\n(set CI=1 or GATEHOUSE_REQUIRE_ALL=1 to make this a failure)\n{bar}\n"
    );
    false
}

/// Serves `PAGE` for every request, one hand-written HTTP/1.1 response per
/// connection.
async fn serve_page() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                    PAGE.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (port, task)
}

/// Pids of live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn missing_message_is_exact() {
    assert_eq!(
        NOT_INSTALLED,
        "chromium/chromedriver not found: install the Debian packages `chromium chromium-driver` \
         (apt-get install -y chromium chromium-driver); the README test command does this"
    );
}

#[tokio::test]
async fn browser_renders_local_page() {
    crate::init_test_tracing();
    if !browser_available("browser_renders_local_page") {
        return;
    }
    let (port, server) = serve_page().await;
    let browser = Browser::launch().await.unwrap();
    let client = browser.client();
    client
        .goto(&format!("http://127.0.0.1:{port}/reset"))
        .await
        .unwrap();
    assert_eq!(client.title().await.unwrap(), "Gatehouse test form");
    let input = client.find(Locator::Css("input[name=username]")).await.unwrap();
    input.send_keys("alice").await.unwrap();
    assert_eq!(input.prop("value").await.unwrap().as_deref(), Some("alice"));
    let dir = browser.temp_dir().to_path_buf();
    browser.close().await.unwrap();
    assert!(!dir.exists(), "temp dir {} left behind", dir.display());
    server.abort();
}

#[tokio::test]
async fn drop_kills_chromium_and_removes_profile() {
    crate::init_test_tracing();
    if !browser_available("drop_kills_chromium_and_removes_profile") {
        return;
    }
    let browser = Browser::launch().await.unwrap();
    let dir = browser.temp_dir().to_path_buf();
    let needle = dir.to_string_lossy().into_owned();
    assert!(!processes_mentioning(&needle).is_empty(), "chromium not running?");
    drop(browser);
    let mut left = processes_mentioning(&needle);
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = processes_mentioning(&needle);
    }
    assert!(left.is_empty(), "processes left running after drop: {left:?}");
    assert!(!dir.exists(), "temp dir {} left behind", dir.display());
}
