//! The portal in a real headless Chromium: a whole reset, as a person would do it.
use crate::harness::{code_in, spawn_with, MAIL_WAIT};
use fantoccini::Locator;
use gatehouse_testkit::{ci_requires_all, Browser};

#[tokio::test]
async fn reset_in_a_real_browser() {
    let browser = match Browser::launch().await {
        Ok(b) => b,
        Err(e) if !ci_requires_all() => {
            eprintln!("!!! SKIPPED reset_in_a_real_browser: {e:#}");
            return;
        }
        Err(e) => panic!("{e:#}"),
    };
    let t = spawn_with(|raw| raw.server.public_url = "http://localhost".into()).await;
    t.add_user(
        "alice",
        Some("Browser-Original-1"),
        Some("alice.private@example.net"),
    )
    .await;
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
        .find(Locator::Id("violations"))
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
        .find(Locator::Id("message"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(msg.contains("new password is active"), "{msg}");

    assert_eq!(t.sign_in("alice", "Browser-New-Password-7").await.0, 200);
    browser.close().await.unwrap();
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
