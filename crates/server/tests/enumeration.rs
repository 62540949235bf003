//! No user enumeration, measured. Unknown, disabled, unregistered and locked accounts get the same
//! status, headers and body (apart from tokens) from flow start, send, verify, password change and
//! sign-in (the way into registration), and the same latency: at least 1,000 interleaved trials per
//! class and endpoint, medians within 1 ms of each other, and two-sample Kolmogorov–Smirnov tests
//! that do not reject equality at α = 0.01.
//!
//! The classes, several accounts each so that per-account state (wrong codes, failed logins) grows
//! alike in every class:
//! - unknown: the login never existed;
//! - disabled: disabled in the builtin directory, with a password and a registered alternate email;
//! - unregistered: exists with a password, no method;
//! - locked: locked in the builtin directory, with a registered alternate email (its reset flow is
//!   genuine: its codes really go out).
//!
//! A test binary of its own: cargo runs test binaries one after another, so nothing else of the
//! suite runs while it measures. One test walks the endpoints one after another. Within an endpoint
//! every round runs one trial per class in a fresh random order, so any load from outside falls on
//! all classes alike. Latency is wall-clock on the harness's keep-alive client, from sending the
//! request to the last byte of the body.
//!
//! Response headers are compared by name and value except:
//! - `date`: the server's clock;
//! - `content-length`: follows the body, whose flow token, method ids and hints may differ in
//!   length; the bodies themselves are compared after replacing those by placeholders.
//!
//! Every pair of classes is compared on every endpoint (30 comparisons). α = 0.01 is the level of
//! the whole family: each comparison must reach p ≥ α / 30 (Bonferroni). At α = 0.01 per
//! comparison, 30 comparisons of identical distributions fail about one run in four by chance alone (1 − 0.99³⁰ ≈ 0.26).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail loudly

#[path = "blackbox/harness.rs"]
#[allow(dead_code)]
mod harness;

use gatehouse_core::types::Login;
use harness::{long_password, spawn_with, TestApp, MAIL_WAIT};
use rand::rngs::OsRng;
use rand::seq::SliceRandom;
use serde_json::{json, Value};
use std::time::Instant;

/// Measured trials per class and endpoint.
const TRIALS: usize = 1000;
/// Rounds run first and dropped (connection, caches, lazily built state).
const WARMUP: usize = 8;
/// Accounts per class; round `r` uses account `r % ACCOUNTS`. With the rounds above each account
/// sees at most 16 wrong codes (the limit is set to 20) and 32 wrong passwords (lockout at 100).
const ACCOUNTS: usize = 64;
const MAX_MEDIAN_DIFF_MS: f64 = 1.0;
/// The significance level of the family of comparisons.
const ALPHA: f64 = 0.01;
const PASSWORD: &str = "Enumeration-Pass-1";
const WRONG_PASSWORD: &str = "Not-The-Password-9";
/// Well formed, and never the code: the policy's codes have six digits.
const WRONG_CODE: &str = "0000000";
/// Headers whose values are not compared (see the module documentation).
const IGNORED_HEADERS: [&str; 2] = ["date", "content-length"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Unknown,
    Disabled,
    Unregistered,
    Locked,
}

const CLASSES: [Class; 4] = [
    Class::Unknown,
    Class::Disabled,
    Class::Unregistered,
    Class::Locked,
];

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Unknown => "unknown",
            Class::Disabled => "disabled",
            Class::Unregistered => "unregistered",
            Class::Locked => "locked",
        }
    }

    /// Logins of one length and shape in every class (the login feeds the password checks).
    fn login(self, i: usize) -> String {
        let c = match self {
            Class::Unknown => 'u',
            Class::Disabled => 'd',
            Class::Unregistered => 'n',
            Class::Locked => 'l',
        };
        format!("enum{c}{i:03}")
    }

    fn index(self) -> usize {
        CLASSES.iter().position(|c| *c == self).unwrap()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Start,
    Send,
    Verify,
    Change,
    SignIn,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Start => "/api/v1/flows",
            Endpoint::Send => "/api/v1/flows/send",
            Endpoint::Verify => "/api/v1/flows/verify",
            Endpoint::Change => "/api/v1/password/change",
            Endpoint::SignIn => "/api/v1/session",
        }
    }
}

/// Status, headers (ignored values blanked) and normalised body: what every class must share.
type Shape = (u16, Vec<(String, String)>, Value);

/// One answer as the client saw it.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
    ms: f64,
}

impl Answer {
    /// What must be identical across classes.
    fn shape(&self) -> Shape {
        (self.status, self.headers.clone(), normalise(&self.body))
    }
}

/// Times one POST on the keep-alive client: from sending the request to the last byte of the body.
async fn call(t: &TestApp, path: &str, body: &Value) -> Answer {
    let req = t.http.post(format!("{}{path}", t.base)).json(body);
    let started = Instant::now();
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let mut headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            let name = k.as_str().to_ascii_lowercase();
            let value = if IGNORED_HEADERS.contains(&name.as_str()) {
                "<ignored>".to_owned()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (name, value)
        })
        .collect();
    let bytes = resp.bytes().await.expect("body");
    let ms = started.elapsed().as_secs_f64() * 1e3;
    headers.sort();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
    Answer {
        status,
        headers,
        body,
        ms,
    }
}

/// A hint's shape: `a•••@e•••.net` becomes `?•••@?•••.?` (the letters and the top-level domain
/// vary per address, real or decoy); anything else stays as it is (and then differs).
fn hint_shape(hint: &str) -> String {
    let masked = |part: &str| {
        let mut chars = part.chars();
        let first = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        first && chars.as_str() == "•••"
    };
    let shaped = hint.split_once('@').and_then(|(local, domain)| {
        let (name, tld) = domain.rsplit_once('.')?;
        let ok =
            masked(local) && masked(name) && !tld.is_empty() && tld.chars().all(|c| c.is_ascii_lowercase());
        ok.then(|| "?•••@?•••.?".to_owned())
    });
    shaped.unwrap_or_else(|| hint.to_owned())
}

/// The body with its tokens replaced: the flow token and method ids by their length, hints by their
/// shape.
fn normalise(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(flow) = v.get_mut("flow") {
        *flow = json!(format!("<token:{}>", flow.as_str().map_or(0, str::len)));
    }
    for m in v
        .get_mut("methods")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(id) = m.get_mut("id") {
            *id = json!(format!("<id:{}>", id.as_str().map_or(0, str::len)));
        }
        if let Some(hint) = m.get_mut("hint") {
            *hint = json!(hint.as_str().map(hint_shape));
        }
    }
    v
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Kolmogorov's limiting distribution: Q(λ) = 2 Σ_{k≥1} (−1)^{k−1} e^{−2k²λ²}.
fn kolmogorov_q(lambda: f64) -> f64 {
    let mut sum = 0.0;
    let mut sign = 1.0;
    for k in 1..=100 {
        let k = f64::from(k);
        let term = sign * 2.0 * (-2.0 * k * k * lambda * lambda).exp();
        sum += term;
        if term.abs() <= 1e-12 * sum.abs() {
            return sum.clamp(0.0, 1.0);
        }
        sign = -sign;
    }
    1.0 // no convergence: λ is tiny, the samples agree
}

/// The two-sample Kolmogorov–Smirnov statistic D of sorted samples and its asymptotic p-value.
fn kolmogorov_smirnov(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0, 0, 0.0_f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    let ne = n * m / (n + m);
    let lambda = (ne.sqrt() + 0.12 + 0.11 / ne.sqrt()) * d;
    (d, kolmogorov_q(lambda))
}

/// What the trials of one endpoint need: the flow each account started last.
struct Accounts {
    flows: Vec<Vec<Option<(String, String)>>>,
}

impl Accounts {
    fn flow(&self, class: Class, i: usize) -> (String, String) {
        self.flows[class.index()][i].clone().expect("a flow was started")
    }

    fn request(&self, endpoint: Endpoint, class: Class, i: usize) -> Value {
        let login = class.login(i);
        match endpoint {
            Endpoint::Start => json!({"kind": "reset", "login": login}),
            Endpoint::Send => {
                let (flow, method) = self.flow(class, i);
                json!({"flow": flow, "method": method})
            }
            Endpoint::Verify => {
                let (flow, method) = self.flow(class, i);
                json!({"flow": flow, "method": method, "code": WRONG_CODE})
            }
            Endpoint::Change => json!({
                "login": login,
                "old_password": WRONG_PASSWORD,
                "new_password": long_password(24),
            }),
            Endpoint::SignIn => json!({"login": login, "password": WRONG_PASSWORD}),
        }
    }
}

struct Row {
    endpoint: Endpoint,
    a: Class,
    b: Class,
    n: (usize, usize),
    medians: (f64, f64),
    diff: f64,
    d: f64,
    p: f64,
}

impl Row {
    fn ok(&self, per_comparison: f64) -> bool {
        self.diff.abs() <= MAX_MEDIAN_DIFF_MS && self.p >= per_comparison
    }
}

/// Runs the rounds of one endpoint (the first `WARMUP` unmeasured); every answer must look like
/// the first one. The latencies come back per class, in round order.
async fn measure(t: &TestApp, accounts: &mut Accounts, endpoint: Endpoint) -> Vec<Vec<f64>> {
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(TRIALS); CLASSES.len()];
    let mut reference: Option<Shape> = None;
    let mut order = CLASSES;
    for round in 0..WARMUP + TRIALS {
        order.shuffle(&mut OsRng);
        let i = round % ACCOUNTS;
        let bodies: Vec<(Class, Value)> = order
            .iter()
            .map(|&class| (class, accounts.request(endpoint, class, i)))
            .collect();
        let mut answers: Vec<Answer> = vec![];
        for (_, body) in &bodies {
            answers.push(call(t, endpoint.path(), body).await);
        }
        for ((class, _), answer) in bodies.into_iter().zip(answers) {
            let shape = answer.shape();
            let expected = reference.get_or_insert_with(|| shape.clone());
            assert_eq!(
                &shape,
                expected,
                "{endpoint:?}: the {} login {} was answered differently",
                class.name(),
                class.login(i)
            );
            if endpoint == Endpoint::Start {
                let flow = answer.body["flow"].as_str().expect("flow").to_owned();
                let method = answer.body["methods"][0]["id"]
                    .as_str()
                    .expect("method")
                    .to_owned();
                accounts.flows[class.index()][i] = Some((flow, method));
            }
            if round >= WARMUP {
                times[class.index()].push(answer.ms);
            }
        }
    }
    let (status, _, body) = reference.expect("answers");
    println!("{endpoint:?}: every class answered {status} {body}");
    times
}

fn compare(endpoint: Endpoint, times: &mut [Vec<f64>]) -> Vec<Row> {
    for (c, t) in times.iter_mut().enumerate() {
        t.sort_by(f64::total_cmp);
        let q = |f: f64| t[((t.len() - 1) as f64 * f) as usize];
        println!(
            "{endpoint:?} {:<12} p05 {:7.3} p25 {:7.3} p50 {:7.3} p75 {:7.3} p95 {:7.3}",
            CLASSES[c].name(),
            q(0.05),
            q(0.25),
            q(0.5),
            q(0.75),
            q(0.95)
        );
    }
    let mut rows = vec![];
    for (x, &a) in CLASSES.iter().enumerate() {
        for &b in &CLASSES[x + 1..] {
            let (ta, tb) = (&times[a.index()], &times[b.index()]);
            let medians = (median(ta), median(tb));
            let (d, p) = kolmogorov_smirnov(ta, tb);
            rows.push(Row {
                endpoint,
                a,
                b,
                n: (ta.len(), tb.len()),
                medians,
                diff: medians.1 - medians.0,
                d,
                p,
            });
        }
    }
    rows
}

#[tokio::test]
async fn unknown_disabled_unregistered_and_locked_accounts_are_indistinguishable() {
    let started = Instant::now();
    let t = spawn_with(|raw| {
        // Room for every trial: wrong codes count per account (at most 16 here), wrong passwords
        // lock an account at the threshold (32 at most here); locked accounts are locked on purpose.
        raw.flow.max_code_attempts = 20;
        raw.flow.flow_lifetime_minutes = 120;
        raw.directory.lockout_threshold = 100;
    })
    .await;
    for i in 0..ACCOUNTS {
        for class in [Class::Disabled, Class::Unregistered, Class::Locked] {
            let name = class.login(i);
            let alternate = (class != Class::Unregistered).then(|| format!("{name}.home@example.net"));
            t.add_user(&name, Some(PASSWORD), alternate.as_deref()).await;
            let login = Login::parse(&name).unwrap();
            match class {
                Class::Disabled => t.core().builtin.set_disabled(&login, true).await.unwrap(),
                Class::Locked => t.lock(&login).await,
                _ => {}
            }
        }
    }
    let account = t
        .core()
        .app
        .account(&Login::parse("enuml000").unwrap())
        .await
        .unwrap();
    assert!(account.is_some_and(|a| a.locked), "locked accounts are locked");
    println!("setup: {:.1} s", started.elapsed().as_secs_f64());

    let mut accounts = Accounts {
        flows: vec![vec![None; ACCOUNTS]; CLASSES.len()],
    };
    let mut rows = vec![];
    for endpoint in [
        Endpoint::Start,
        Endpoint::Send,
        Endpoint::Verify,
        Endpoint::Change,
        Endpoint::SignIn,
    ] {
        let at = Instant::now();
        let mut times = measure(&t, &mut accounts, endpoint).await;
        println!("{endpoint:?}: {:.1} s", at.elapsed().as_secs_f64());
        rows.extend(compare(endpoint, &mut times));
    }

    let per_comparison = ALPHA / rows.len() as f64;
    println!(
        "{:<8} {:<25} {:>11} {:>9} {:>9} {:>8} {:>7} {:>7}",
        "endpoint", "classes (a / b)", "n", "med a ms", "med b ms", "b−a ms", "D", "p"
    );
    for r in &rows {
        println!(
            "{:<8} {:<25} {:>11} {:>9.3} {:>9.3} {:>8.3} {:>7.4} {:>7.3}{}",
            format!("{:?}", r.endpoint),
            format!("{} / {}", r.a.name(), r.b.name()),
            format!("{}/{}", r.n.0, r.n.1),
            r.medians.0,
            r.medians.1,
            r.diff,
            r.d,
            r.p,
            if r.ok(per_comparison) { "" } else { "  <- FAIL" }
        );
    }
    println!(
        "pass: |b−a| ≤ {MAX_MEDIAN_DIFF_MS} ms and p ≥ {ALPHA} / {} = {per_comparison:.2e}",
        rows.len()
    );
    println!("total: {:.1} s", started.elapsed().as_secs_f64());

    // The locked accounts' flows were genuine: their codes went out, and nothing else did.
    let locked_mail = |i: usize| format!("{}.home@example.net", Class::Locked.login(i));
    for i in [0, ACCOUNTS - 1] {
        t.sink
            .wait_for_message_to(&locked_mail(i), MAIL_WAIT)
            .await
            .expect("a locked account's code mail");
    }
    let mail = t.sink.messages();
    assert!(
        mail.iter()
            .all(|m| m.rcpt_to.iter().all(|r| r.starts_with("enuml"))),
        "mail only to the locked accounts' addresses"
    );

    let failed = rows.iter().filter(|r| !r.ok(per_comparison)).count();
    assert!(
        failed == 0,
        "timing tells the classes apart in {failed} comparison(s) (median difference > {MAX_MEDIAN_DIFF_MS} ms \
         or KS p < {per_comparison:.2e}); see the table"
    );
}
