//! The password engine through the API: the shipped list of common passwords, an imported breach
//! index (built by the real importer and by the CLI) and swapping a rebuilt index in while serving.
use crate::harness::spawn_with;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

fn sha1_hex(password: &str) -> String {
    gatehouse_breach::sha1_of_password(password)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// A Pwned Passwords-style file: the given passwords plus filler hashes, CRLF line ends.
fn corpus(dir: &Path, name: &str, passwords: &[&str]) -> std::path::PathBuf {
    let mut text = String::new();
    for (i, p) in passwords.iter().enumerate() {
        text.push_str(&format!("{}:{}\r\n", sha1_hex(p), i + 3));
    }
    for i in 0..2000 {
        text.push_str(&format!("{}:1\r\n", sha1_hex(&format!("filler-{name}-{i}"))));
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn broken(b: &Value) -> Vec<String> {
    b["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["rule"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn breached_passwords_are_refused_and_a_rebuilt_index_is_swapped_in_while_serving() {
    let work = tempfile::tempdir().unwrap();
    let first = corpus(work.path(), "first.txt", &["Velvet-Lagoon-Orbit-42"]);
    let out = work.path().join("index");
    std::fs::create_dir_all(&out).unwrap();
    gatehouse_breach::import(&first, &out).unwrap();
    let index = out.join(gatehouse_breach::INDEX_FILE_NAME);
    let path = index.clone();
    let t = spawn_with(move |raw| {
        raw.password.breach_index = Some(path);
        raw.password.breach_reload_seconds = 1;
    })
    .await;
    let check = |pw: &'static str| {
        let t = &t;
        async move {
            let (s, b) = t
                .post(
                    "/api/v1/password/check",
                    json!({"login": "someone", "password": pw}),
                )
                .await;
            assert_eq!(s, 200);
            b
        }
    };
    // The shipped list of common passwords needs no download.
    assert!(broken(&check("iloveyou").await).contains(&"breached".to_owned()));
    let b = check("Velvet-Lagoon-Orbit-42").await;
    assert_eq!(broken(&b), ["breached"], "{b}");
    assert!(b["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["rule"] == "breached" && r["met"] == false));
    assert_eq!(
        broken(&check("Quartz-Ember-Saffron-77").await),
        Vec::<String>::new()
    );

    // A rebuilt index (written aside and renamed into place) replaces the old one without a restart.
    let second = corpus(work.path(), "second.txt", &["Quartz-Ember-Saffron-77"]);
    gatehouse_breach::import(&second, &out).unwrap();
    let mut swapped = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if broken(&check("Quartz-Ember-Saffron-77").await) == ["breached"] {
            swapped = true;
            break;
        }
    }
    assert!(swapped, "the new index was not swapped in");
    assert_eq!(
        broken(&check("Velvet-Lagoon-Orbit-42").await),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn the_cli_imports_both_download_layouts() {
    let work = tempfile::tempdir().unwrap();
    let file = corpus(work.path(), "pwned.txt", &["Velvet-Lagoon-Orbit-42"]);
    std::fs::write(
        work.path().join("with-bad-line.txt"),
        format!("{}\nnot-a-hash\n", std::fs::read_to_string(&file).unwrap()),
    )
    .unwrap();
    let out = work.path().join("out");
    let run = |args: Vec<String>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, text) = run(vec![
        "breach".into(),
        "import".into(),
        work.path().join("with-bad-line.txt").display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("2001 hashes") && text.contains("1 bad lines"),
        "{text}"
    );
    assert!(text.contains("breach_index = "), "{text}");
    let index = gatehouse_breach::BreachIndex::open(out.join(gatehouse_breach::INDEX_FILE_NAME)).unwrap();
    assert!(index.contains_password("Velvet-Lagoon-Orbit-42"));

    // The per-prefix layout of the range API download.
    let dir = work.path().join("ranges");
    std::fs::create_dir_all(&dir).unwrap();
    let h = sha1_hex("Quartz-Ember-Saffron-77");
    std::fs::write(dir.join(&h[..5]), format!("{}:12\r\n", &h[5..])).unwrap();
    let (ok, text) = run(vec![
        "breach".into(),
        "import".into(),
        dir.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ]);
    assert!(ok, "{text}");
    let index = gatehouse_breach::BreachIndex::open(out.join(gatehouse_breach::INDEX_FILE_NAME)).unwrap();
    assert!(index.contains_password("Quartz-Ember-Saffron-77"));
}

#[tokio::test]
async fn a_verified_reset_checks_the_users_own_name_and_email() {
    let t = crate::harness::spawn().await;
    t.add_user(
        "nora",
        Some("Original-Nora-Pass-1"),
        Some("nora.home@example.net"),
    )
    .await;
    let (flow, method, _) = t.start("reset", "nora").await;
    let code = t
        .send_and_read_code(&flow, &method, "nora.home@example.net")
        .await;
    let (s, _) = t
        .post(
            "/api/v1/flows/verify",
            json!({"flow": flow, "method": method, "code": code}),
        )
        .await;
    assert_eq!(s, 200);
    // The display name is "nora Example": its part "Example", even reversed, is personal information.
    for pw in ["Example-Quartz-Lagoon-9", "elpmaxe-Quartz-Lagoon-9"] {
        let (s, b) = t
            .post("/api/v1/flows/password", json!({"flow": flow, "password": pw}))
            .await;
        assert_eq!(s, 422, "{b}");
        assert!(broken(&b).contains(&"contains_personal".to_owned()), "{b}");
    }
    let (s, b) = t
        .post(
            "/api/v1/flows/password",
            json!({"flow": flow, "password": "Velvet-Quartz-Lagoon-9"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}
