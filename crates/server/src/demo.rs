//! `gatehouse demo`: the embedded default with demo users and a development mailbox.
use crate::config::{Config, RawConfig};
use crate::Application;
use gatehouse_core::secret::Password;
use gatehouse_core::service::NewUser;
use gatehouse_core::types::{Email, Login};
use std::path::Path;

pub struct DemoUser {
    pub login: &'static str,
    pub name: &'static str,
    pub alternate: Option<&'static str>,
    pub password: Option<&'static str>,
    pub locked: bool,
}

pub const DEMO_USERS: &[DemoUser] = &[
    DemoUser {
        login: "alice",
        name: "Alice Example",
        alternate: Some("alice.private@example.net"),
        password: Some("Demo-Password-Alice-1"),
        locked: false,
    },
    DemoUser {
        login: "bob",
        name: "Bob Locked",
        alternate: Some("bob.home@example.com"),
        password: Some("Demo-Password-Bob-1"),
        locked: true,
    },
    DemoUser {
        login: "carol",
        name: "Carol Newhire",
        alternate: Some("carol.personal@example.org"),
        password: None,
        locked: false,
    },
    DemoUser {
        login: "dave",
        name: "Dave Unregistered",
        alternate: None,
        password: Some("Demo-Password-Dave-1"),
        locked: false,
    },
];

/// The demo configuration: SQLite in `data_dir`, mail kept in the development mailbox.
pub fn demo_config(listen: &str, data_dir: &Path) -> anyhow::Result<Config> {
    let mut raw = RawConfig::from_env()?;
    raw.server.listen = listen.to_owned();
    raw.server.public_url = format!("http://{listen}");
    raw.server.organisation = "Gatehouse demo".into();
    raw.store.url = format!("sqlite://{}", data_dir.join("gatehouse.db").display());
    raw.mail.transport = "dev-mailbox".into();
    Config::try_from(raw)
}

/// Seeds the demo users (idempotent: existing users keep their passwords).
pub async fn seed(app: &Application) -> anyhow::Result<()> {
    for u in DEMO_USERS {
        let login = Login::parse(u.login)?;
        let exists = app.core.app.account(&login).await?.is_some();
        let user = NewUser {
            login: login.clone(),
            display_name: u.name.into(),
            email: Some(Email::parse(&format!("{}@corp.example", u.login))?),
            alternate_email: u.alternate.map(Email::parse).transpose()?,
            mobile_phone: None,
            groups: vec!["staff".into()],
            password: if exists {
                None
            } else {
                u.password.map(Password::new)
            },
        };
        app.core.app.import_user(&user, "demo").await?;
        if u.locked && !exists {
            app.core.builtin.lock(&login).await?;
        }
    }
    Ok(())
}

pub async fn run(listen: &str, data_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let cfg = demo_config(listen, data_dir)?;
    crate::init_tracing(cfg.log_json);
    let app = Application::build(&cfg).await?;
    seed(&app).await?;
    let url = format!("http://{}", app.addr());
    println!(
        "\nGatehouse demo is running at {url}\n\n\
         Demo users (builtin directory, data in {dir}):\n\
         \x20 alice  password Demo-Password-Alice-1   alternate email alice.private@example.net\n\
         \x20 bob    locked out (try \"I'm locked out\")  alternate email bob.home@example.com\n\
         \x20 carol  new hire, no password yet (use \"I forgot my password\" to set the first one)\n\
         \x20 dave   password Demo-Password-Dave-1    no method registered (sign in and add one)\n\n\
         Codes and notifications do not leave this machine: read them at {url}/dev/mailbox\n\
         Stop with Ctrl-C.\n",
        dir = data_dir.display()
    );
    app.run_until_signal().await
}
