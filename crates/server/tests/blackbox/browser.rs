//! The portal in a real headless Chromium: a whole reset, as a person would do it.
use crate::harness::{code_in, spawn_with, TestApp, MAIL_WAIT};
use fantoccini::Locator;
use gatehouse::config::RawConfig;
use gatehouse_testkit::{ci_requires_all, Browser};

#[tokio::test]
async fn reset_in_a_real_browser() {
    let Some((browser, t)) = portal("reset_in_a_real_browser", "alice", |_| {}).await else {
        return;
    };
    let c = browser.client();
    let go = |p: &str| format!("{}{p}", t.base);

    c.goto(&go("/")).await.unwrap();
    click(c, "go-reset").await;
    fill(c, "login", "alice").await;
    click(c, "start").await;

    c.wait().for_element(Locator::Id("send")).await.unwrap();
    let page = c.source().await.unwrap();
    assert!(page.contains("a•••@e•••.net"), "masked method shown: {page}");
    assert!(
        !c.current_url().await.unwrap().as_str().contains("flow="),
        "no token in the URL"
    );
    click(c, "send").await;
    let code = code_in(
        &t.sink
            .wait_for_message_to("alice.private@example.net", MAIL_WAIT)
            .await
            .unwrap(),
    );

    fill(c, "code", &code).await;
    click(c, "verify").await;

    // The rules are shown; a bad password is explained, every violation at once.
    c.wait().for_element(Locator::Id("set-password")).await.unwrap();
    let page = c.source().await.unwrap();
    assert!(page.contains("At least 12 characters."), "{page}");
    fill(c, "password", "alice").await;
    // The live checklist marks the rules as the user types (a few lines of script calling the API).
    c.wait()
        .for_element(Locator::Css("li[data-rule='min_length'].unmet"))
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("li[data-rule='max_length'].met"))
        .await
        .unwrap();
    fill(c, "confirm", "alice").await;
    click(c, "set-password").await;
    let violations = c
        .wait()
        .for_element(Locator::Id("violations"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        violations.contains("at least 12") && violations.contains("user name"),
        "{violations}"
    );

    fill(c, "password", "Browser-New-Password-7").await;
    c.wait()
        .for_element(Locator::Css("li[data-rule='min_length'].met"))
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("li[data-rule='strength'].met"))
        .await
        .unwrap();
    fill(c, "confirm", "Browser-New-Password-7").await;
    click(c, "set-password").await;
    let msg = c
        .wait()
        .for_element(Locator::Id("message"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(msg.contains("new password is active"), "{msg}");

    assert_eq!(t.sign_in("alice", "Browser-New-Password-7").await.0, 200);
    browser.close().await.unwrap();
}

/// The registration portal: an authenticator app enrolled from the server-rendered QR code.
#[tokio::test]
async fn enrol_an_authenticator_app_from_the_qr_page() {
    let Some((browser, t)) = portal("enrol_an_authenticator_app_from_the_qr_page", "erin", |_| {}).await
    else {
        return;
    };
    let c = browser.client();
    let go = |p: &str| format!("{}{p}", t.base);

    c.goto(&go("/signin")).await.unwrap();
    fill(c, "login", "erin").await;
    fill(c, "password", ORIGINAL_PASSWORD).await;
    click(c, "signin").await;
    click(c, "add-totp").await;
    let qr = c.wait().for_element(Locator::Css("#enrol svg")).await.unwrap();
    assert!(
        qr.html(false).await.unwrap().contains("<path") || qr.html(false).await.unwrap().contains("<rect")
    );
    let key = c
        .find(Locator::Css("#enrol code"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let bytes = data_encoding::BASE32_NOPAD.decode(key.trim().as_bytes()).unwrap();
    let secret = gatehouse_core::totp::TotpSecret::from_bytes(&bytes).unwrap();
    let step = gatehouse_core::totp::step_at(gatehouse_core::ports::Clock::now(
        &gatehouse_core::clock::SystemClock,
    ))
    .unwrap();
    fill(c, "enrol-code", &gatehouse_core::totp::code_at(&secret, step)).await;
    click(c, "enrol-verify").await;
    c.wait()
        .for_element(Locator::Css("tr[data-kind='totp']"))
        .await
        .unwrap();
    let page = c.source().await.unwrap();
    assert!(page.contains("The method is verified."), "{page}");

    browser.close().await.unwrap();
}

/// The proof-of-work browser check on flow start, with its default difficulty: the page's own
/// script fetches a challenge, solves it (Web Workers under the strict CSP) and submits the form;
/// the server accepts the solution once.
#[tokio::test]
async fn flow_start_passes_the_browser_check() {
    let Some((browser, t)) = portal("flow_start_passes_the_browser_check", "paula", |raw| {
        raw.captcha = Default::default();
    })
    .await
    else {
        return;
    };
    let c = browser.client();
    let go = |p: &str| format!("{}{p}", t.base);

    // Without a solution the server refuses to start a flow (what a script without JS would get).
    let (status, _) = t
        .post(
            "/api/v1/flows",
            serde_json::json!({"kind": "reset", "login": "paula"}),
        )
        .await;
    assert_eq!(status, 400);

    // A person who types slowly: the check has finished (it starts when the form gets focus) before
    // the click. The click's own submit event must not swallow the submission it holds back.
    start_through_check(c, &t, &go("/reset"), true).await;
    let page = c.source().await.unwrap();
    assert!(page.contains("p•••@e•••.net"), "{page}");

    // A quick one: the click comes while the check may still run; the page submits once it is done.
    start_through_check(c, &t, &go("/reset"), false).await;
    let rows = t.core().app.audit_page(0, None, 1000).await.unwrap();
    assert_eq!(
        rows.iter()
            .filter(|r| r.event.activity.as_str() == "flow_started")
            .count(),
        2
    );
    browser.close().await.unwrap();
}

/// Opens the start page, types the login and clicks Continue (after the browser check says "Done"
/// when `after_check`), then waits for the flow page; on failure, says what the page did.
async fn start_through_check(
    c: &fantoccini::Client,
    t: &crate::harness::TestApp,
    url: &str,
    after_check: bool,
) {
    c.goto(url).await.unwrap();
    c.execute(TRACE_FORM, vec![]).await.unwrap();
    fill(c, "login", "paula").await;
    if after_check {
        c.wait()
            .at_most(std::time::Duration::from_secs(60))
            .for_element(Locator::XPath("//p[@data-pow-status][text()='Done']"))
            .await
            .unwrap();
    }
    click(c, "start").await;
    let sent = c
        .wait()
        .at_most(std::time::Duration::from_secs(60))
        .for_element(Locator::Id("send"))
        .await;
    if sent.is_err() {
        let state = c
            .execute(
                "const f = document.querySelector('form[data-pow]'); return JSON.stringify({ \
                 trace: window.__trace, url: location.href, login: f && f.login.value, \
                 altcha: f && f.altcha.value, valid: f && f.checkValidity(), \
                 active: document.activeElement && document.activeElement.id });",
                vec![],
            )
            .await
            .map(|v| v.to_string())
            .unwrap_or_else(|e| format!("(could not read the page state: {e})"));
        let page = c.source().await.unwrap_or_default();
        let audit = t.audit_activities().await;
        panic!(
            "the flow did not start after the browser check (checked first: {after_check}); \
             the form's state: {state}\naudit: {audit:?}\nthe page: {page}"
        );
    }
}

/// Records what the form saw (focus, clicks, submit events and whether they were held back,
/// requestSubmit calls, the status text, script errors) in `window.__trace`, for the failure message.
const TRACE_FORM: &str = r#"
window.__trace = [];
const t0 = performance.now();
const note = (what) => window.__trace.push(Math.round(performance.now() - t0) + "ms " + what);
const f = document.querySelector("form[data-pow]");
["focusin", "click", "invalid"].forEach((k) => f.addEventListener(k, (e) => note(k + " " + (e.target.id || e.target.name)), true));
f.addEventListener("submit", (e) => { note("submit (altcha " + (f.altcha.value ? "set" : "empty") + ")");
  setTimeout(() => note("after submit: prevented " + e.defaultPrevented), 0); });
const rs = f.requestSubmit.bind(f);
f.requestSubmit = (s) => { note("requestSubmit"); try { rs(s); } catch (err) { note("requestSubmit threw " + err); throw err; } };
const status = f.querySelector("[data-pow-status]");
new MutationObserver(() => note("status: " + status.textContent)).observe(status, { childList: true, characterData: true, subtree: true });
window.addEventListener("pagehide", () => note("pagehide"));
window.addEventListener("error", (e) => note("error " + e.message));
window.addEventListener("unhandledrejection", (e) => note("unhandled " + e.reason));
note("readyState " + document.readyState + ", active " + (document.activeElement && document.activeElement.id));
"#;

/// The password of the user [`portal`] imports.
const ORIGINAL_PASSWORD: &str = "Browser-Original-1";

/// Chromium (see [`browser_or_skip`]) and Gatehouse on the builtin directory, its links built from
/// `http://localhost` and `tweak` applied, with `login` imported: password [`ORIGINAL_PASSWORD`],
/// alternate email `<login>.private@example.net`.
async fn portal(test: &str, login: &str, tweak: impl FnOnce(&mut RawConfig)) -> Option<(Browser, TestApp)> {
    let browser = browser_or_skip(test).await?;
    let t = spawn_with(|raw| {
        raw.server.public_url = "http://localhost".into();
        tweak(raw);
    })
    .await;
    let alternate = format!("{login}.private@example.net");
    t.add_user(login, Some(ORIGINAL_PASSWORD), Some(&alternate)).await;
    Some((browser, t))
}

/// Chromium, or `None` (the test then skips, saying so) when it is missing outside CI; under CI
/// a missing browser fails the test.
async fn browser_or_skip(test: &str) -> Option<Browser> {
    match Browser::launch().await {
        Ok(b) => Some(b),
        Err(e) if !ci_requires_all() => {
            eprintln!("!!! SKIPPED {test}: {e:#}");
            None
        }
        Err(e) => panic!("{e:#}"),
    }
}

/// Waits for the field `id` and types `text` into it.
async fn fill(c: &fantoccini::Client, id: &str, text: &str) {
    c.wait()
        .for_element(Locator::Id(id))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

/// Waits for the element `id` and clicks it.
async fn click(c: &fantoccini::Client, id: &str) {
    c.wait()
        .for_element(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}
