//! Forms and JSON into commands: the real router (builtin directory, SQLite store, default settings
//! with every kind of method allowed and a phone provider that accepts everything), called in memory
//! with fuzzed bodies, query strings and path segments.
//!
//! Input layout (so seeds can be written by hand): byte 0 picks the endpoint, byte 1 holds flags,
//! the rest is the body. Flags: 1 = a valid CSRF cookie, and for forms `csrf=<token>&` before the
//! body; 2 = a live flow (flow cookie for forms); 4 = a live session (bearer or session cookie);
//! 8 = bogus credentials instead; 16 = the wrong content type. In the body, `@F@` becomes the live
//! flow token, `@M@` / `@N@` the ids of its two methods, `@S@` the live session token, `@C@` the
//! CSRF token.
//!
//! `GATEHOUSE_FUZZ_DEBUG=1` prints each request body, path, status and the start of the answer.
//!
//! Properties: no panic; no 5xx other than 503; API errors are JSON problems with string `error`
//! and non-empty `message`, API successes are JSON; no body shows a panic message or a backtrace;
//! no body echoes a live token.
//!
//! The clock moves 25 hours before every input, so throttles and lockouts from earlier inputs do not
//! decide later ones; every input that asks for a live flow or session gets a fresh one (the
//! session stored as a sign-in stores it, without the argon2 check that would cost more than the
//! rest of the input), and the session user's methods are removed afterwards. The whole app is rebuilt on a fresh database
//! every `INPUTS_PER_APP` inputs.
#![no_main]

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use gatehouse_core::clock::{FixedClock, SeededRng};
use gatehouse_core::ports::{
    Changes, Clock, Directory, PhoneChannel, PhoneMessage, PhoneSender, SecureRng, SendError, Session, Store,
};
use gatehouse_core::secret::{Password, Token};
use gatehouse_core::service::NewUser;
use gatehouse_core::types::{Email, FlowKind, Login, MethodKind};
use gatehouse_core::{Gatehouse, RequestMeta, Settings};
use gatehouse_directory::{BuiltinDirectory, BuiltinOptions};
use gatehouse_store::SqliteStore;
use gatehouse_web::{router, AppState, WebConfig};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex, OnceLock};
use time::macros::datetime;
use tower::ServiceExt;

const INPUTS_PER_APP: u32 = 5_000;
const SESSION_LOGIN: &str = "fz-session-owner-4b1d";
const SESSION_PASSWORD: &str = "Fuzz-harness-Secret-93";
const CSRF: &str = "csrfcsrfcsrfcsrfcsrfcsrfcsrfcsrfcsrfcsrfcsr";
const BOGUS: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Json,
    Form,
    /// GET, the body percent-encoded into the query string.
    Query,
    /// GET, the body percent-encoded as the last path segment.
    PathSegment,
    /// GET, no body.
    Get,
}

const ENDPOINTS: &[(&str, Kind)] = &[
    ("/api/v1/flows", Kind::Json),
    ("/api/v1/flows/send", Kind::Json),
    ("/api/v1/flows/verify", Kind::Json),
    ("/api/v1/flows/password", Kind::Json),
    ("/api/v1/flows/unlock", Kind::Json),
    ("/api/v1/flows/link", Kind::Json),
    ("/api/v1/password/change", Kind::Json),
    ("/api/v1/password/check", Kind::Json),
    ("/api/v1/session", Kind::Json),
    ("/api/v1/me/methods", Kind::Json),
    ("/api/v1/me/methods", Kind::Get),
    ("/api/v1/me/reconfirm", Kind::Json),
    ("/api/v1/captcha", Kind::Query),
    ("/reset", Kind::Form),
    ("/unlock", Kind::Form),
    ("/flow/send", Kind::Form),
    ("/flow/verify", Kind::Form),
    ("/flow/password", Kind::Form),
    ("/change", Kind::Form),
    ("/signin", Kind::Form),
    ("/account/methods", Kind::Form),
    ("/not-me", Kind::Form),
    ("/link", Kind::PathSegment),
    ("/not-me", Kind::PathSegment),
];

const F_CSRF: u8 = 1;
const F_FLOW: u8 = 2;
const F_SESSION: u8 = 4;
const F_BOGUS: u8 = 8;
const F_WRONG_TYPE: u8 = 16;

struct App {
    router: Router,
    app: Gatehouse,
    clock: Arc<FixedClock>,
    store: Arc<SqliteStore>,
    _dir: tempfile_free::Dir,
    inputs: u32,
}

/// A temporary directory removed on drop (no extra dependency for it).
mod tempfile_free {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    pub struct Dir(pub PathBuf);

    impl Dir {
        pub fn new() -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "gatehouse-fuzz-http-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            Self(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A text and voice provider that accepts every message, so phone methods are offered.
struct NullPhone;

#[async_trait::async_trait]
impl PhoneSender for NullPhone {
    fn name(&self) -> &str {
        "fuzz"
    }
    fn channels(&self) -> &[PhoneChannel] {
        &[PhoneChannel::Sms, PhoneChannel::Voice]
    }
    async fn send(&self, _message: &PhoneMessage) -> Result<(), SendError> {
        Ok(())
    }
}

fn user(login: &str, password: &str, phone: Option<&str>) -> NewUser {
    NewUser {
        login: Login::parse(login).unwrap_or_else(|e| panic!("{e}")),
        display_name: login.to_owned(),
        email: None,
        alternate_email: Some(
            Email::parse(&format!("{login}.private@example.net")).unwrap_or_else(|e| panic!("{e}")),
        ),
        mobile_phone: phone.map(str::to_owned),
        groups: vec![],
        password: Some(Password::new(password)),
    }
}

async fn build() -> App {
    let dir = tempfile_free::Dir::new();
    let url = format!("sqlite://{}", dir.0.join("fuzz.db").display());
    let store = Arc::new(
        SqliteStore::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("store: {e}")),
    );
    let clock = Arc::new(FixedClock::new(datetime!(2026-11-21 12:00 UTC)));
    let dyn_clock: Arc<dyn Clock> = clock.clone();
    let rng: Arc<dyn SecureRng> = Arc::new(SeededRng::new(42));
    let directory = BuiltinDirectory::new(
        store.pool().clone(),
        dyn_clock.clone(),
        rng.clone(),
        BuiltinOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("directory: {e}"));
    let directory: Arc<dyn Directory> = Arc::new(directory);
    let dyn_store: Arc<dyn Store> = store.clone();
    // The defaults, with every kind of method allowed (so phone numbers and security answers in
    // forms and JSON reach their parsers).
    let mut settings = Settings::default();
    settings.policies.default.methods = MethodKind::ALL.to_vec();
    let app = Gatehouse::new(directory, dyn_store, dyn_clock, rng, settings)
        .await
        .unwrap_or_else(|e| panic!("app: {e}"))
        .with_phone(Arc::new(NullPhone));
    for u in [
        user("alice", "Original-Secret-1", Some("+33 6 12 34 56 78")),
        user(SESSION_LOGIN, SESSION_PASSWORD, None),
    ] {
        app.import_user(&u, "fuzz")
            .await
            .unwrap_or_else(|e| panic!("import: {e}"));
    }
    let router = router(AppState {
        app: app.clone(),
        web: Arc::new(WebConfig {
            public_url: "http://127.0.0.1:8080".into(),
            demo: false,
            trusted_proxies: vec![],
            admin_tokens: vec![],
        }),
    });
    App {
        router,
        app,
        clock,
        store,
        _dir: dir,
        inputs: 0,
    }
}

struct Harness {
    rt: tokio::runtime::Runtime,
    app: Mutex<Option<App>>,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| Harness {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}")),
        app: Mutex::new(None),
    })
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Percent-encodes everything but unreserved characters and, in a query, `=&+%`.
fn percent(bytes: &[u8], query: bool) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        let keep = b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (query && b"=&+%".contains(&b));
        if keep {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

struct Live {
    flow: Option<String>,
    methods: Vec<String>,
    session: Option<String>,
}

async fn run(app: &App, data: &[u8]) {
    let [which, flags, body @ ..] = data else {
        return;
    };
    let (path, kind) = ENDPOINTS[usize::from(*which) % ENDPOINTS.len()];
    let meta = RequestMeta::default();

    let mut live = Live {
        flow: None,
        methods: vec![],
        session: None,
    };
    if flags & F_FLOW != 0 || body.windows(3).any(|w| w == b"@F@" || w == b"@M@" || w == b"@N@") {
        if let Ok(started) = app.app.start_flow(FlowKind::Reset, "alice", None, &meta).await {
            live.flow = Some(started.token.expose_secret().to_owned());
            live.methods = started.view.methods.iter().map(|m| m.id.to_string()).collect();
        }
    }
    if flags & F_SESSION != 0 || body.windows(3).any(|w| w == b"@S@") {
        // What a successful sign-in stores, without its argon2 verification (65 ms here).
        let token = Token::generate(&SeededRng::new(u64::from(app.inputs)));
        let now = app.clock.now();
        let session = Session {
            token_hash: token.hash(),
            login: Login::parse(SESSION_LOGIN).unwrap_or_else(|e| panic!("{e}")),
            created_at: now,
            expires_at: now + time::Duration::minutes(30),
        };
        let stored = app.store.insert_session(&session, Changes::default()).await;
        live.session = stored.ok().map(|()| token.expose_secret().to_owned());
    }

    let mut body = body.to_vec();
    for (marker, value) in [
        (&b"@F@"[..], live.flow.as_deref()),
        (b"@M@", live.methods.first().map(String::as_str)),
        (b"@N@", live.methods.get(1).map(String::as_str)),
        (b"@S@", live.session.as_deref()),
        (b"@C@", Some(CSRF)),
    ] {
        body = replace(&body, marker, value.unwrap_or("").as_bytes());
    }

    let bogus = flags & F_BOGUS != 0;
    let mut cookies: Vec<String> = vec![];
    if flags & F_CSRF != 0 {
        cookies.push(format!("gh_csrf={CSRF}"));
    }
    if let Some(f) = live.flow.as_deref().filter(|_| flags & F_FLOW != 0) {
        cookies.push(format!("gh_flow={f}"));
    } else if bogus {
        cookies.push(format!("gh_flow={BOGUS}"));
    }
    if let Some(s) = live.session.as_deref().filter(|_| flags & F_SESSION != 0) {
        cookies.push(format!("gh_session={s}"));
    } else if bogus {
        cookies.push(format!("gh_session={BOGUS}"));
    }
    let bearer = match (&live.session, flags & F_SESSION != 0) {
        (Some(s), true) => Some(s.clone()),
        _ if bogus => Some(BOGUS.to_owned()),
        _ => None,
    };

    let (method, uri, content_type) = match kind {
        Kind::Json => (Method::POST, path.to_owned(), Some("application/json")),
        Kind::Form => {
            if flags & F_CSRF != 0 {
                let mut b = format!("csrf={CSRF}&").into_bytes();
                b.extend_from_slice(&body);
                body = b;
            }
            (
                Method::POST,
                path.to_owned(),
                Some("application/x-www-form-urlencoded"),
            )
        }
        Kind::Query => (Method::GET, format!("{path}?{}", percent(&body, true)), None),
        Kind::PathSegment => (Method::GET, format!("{path}/{}", percent(&body, false)), None),
        Kind::Get => (Method::GET, path.to_owned(), None),
    };
    let content_type = if flags & F_WRONG_TYPE != 0 {
        match kind {
            Kind::Json => Some("application/x-www-form-urlencoded"),
            Kind::Form => Some("application/json"),
            _ => Some("text/plain"),
        }
    } else {
        content_type
    };
    let body = if matches!(kind, Kind::Json | Kind::Form) {
        body
    } else {
        vec![]
    };
    let sent = body.clone();

    let mut req = Request::builder().method(method).uri(&uri);
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    if !cookies.is_empty() {
        req = req.header(header::COOKIE, cookies.join("; "));
    }
    if let Some(b) = bearer {
        req = req.header(header::AUTHORIZATION, format!("Bearer {b}"));
    }
    let Ok(req) = req.body(Body::from(body)) else {
        panic!("the harness built an invalid request for {uri:?}");
    };

    let resp = match app.router.clone().oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 8 << 20)
        .await
        .unwrap_or_else(|e| panic!("reading the body of {uri}: {e}"));
    let text = String::from_utf8_lossy(&bytes);

    let what = format!(
        "{uri} -> {status}: {}",
        text.chars().take(600).collect::<String>()
    );
    if std::env::var_os("GATEHOUSE_FUZZ_DEBUG").is_some() {
        eprintln!("{} {what}", String::from_utf8_lossy(&sent));
    }
    assert!(
        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "server error: {what}"
    );
    for needle in ["panicked at", "stack backtrace", "RUST_BACKTRACE"] {
        assert!(!text.contains(needle), "body shows {needle:?}: {what}");
    }
    // A token sent in a cookie or header never shows in a page (one typed into the body may be
    // echoed back to its sender, like any other field).
    for secret in [live.session.as_deref(), live.flow.as_deref()]
        .into_iter()
        .flatten()
    {
        let sent_in_body = sent.windows(secret.len()).any(|w| w == secret.as_bytes()) || uri.contains(secret);
        assert!(
            sent_in_body || !text.contains(secret),
            "body echoes a live token: {what}"
        );
    }
    assert!(!text.contains(SESSION_PASSWORD), "body echoes a password: {what}");

    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if uri.starts_with("/api/") && !bytes.is_empty() {
        assert!(is_json, "an API answer that is not JSON: {what}");
    }
    if is_json {
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("invalid JSON ({e}): {what}"));
        if status.is_client_error() || status.is_server_error() {
            assert!(v["error"].is_string(), "a JSON error without \"error\": {what}");
            assert!(
                v["message"].as_str().is_some_and(|m| !m.is_empty()),
                "a JSON error without \"message\": {what}"
            );
        }
    } else if uri.starts_with("/api/") && !status.is_success() {
        panic!("an API error without a JSON problem: {what}");
    }

    // Leave the session user as it was: no methods registered by this input.
    if let Some(token) = &live.session {
        if let Ok(ctx) = app.app.session(token).await {
            if let Ok(methods) = app.app.my_methods(&ctx).await {
                for m in methods {
                    let _ = app.app.remove_method(&ctx, m.id.as_str(), &meta).await;
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let mut slot = h.app.lock().unwrap_or_else(|p| p.into_inner());
    h.rt.block_on(async {
        if slot.as_ref().is_some_and(|a| a.inputs >= INPUTS_PER_APP) {
            if let Some(old) = slot.take() {
                old.store.pool().close().await;
            }
        }
        if slot.is_none() {
            *slot = Some(build().await);
        }
        let Some(app) = slot.as_mut() else { return };
        app.inputs += 1;
        app.clock.advance(time::Duration::hours(25));
        run(app, data).await;
    });
});
