//! OIDC sign-in against a real OpenID Provider: `tests/oidc/provider.mjs`
//! (npm `oidc-provider`, PKCE required, dev interactions) on a loopback
//! port. The login and consent forms are posted with plain HTTP.
//!
//! Skipped (with a message) when `node` or `tests/oidc/node_modules` is
//! missing (`cd tests/oidc && npm install`).

use crate::helpers::{spawn_app_with, Backend, TestApp};
use server::config::{OidcSettings, Secret};
use std::path::PathBuf;
use tokio::io::{AsyncBufReadExt, BufReader};

const CLIENT_ID: &str = "mado";
const CLIENT_SECRET: &str = "mado-test-client-secret-0123456789";

fn provider_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/oidc")
}

pub(crate) async fn start_provider(redirect: &str) -> Option<(tokio::process::Child, String)> {
    let dir = provider_dir();
    if !dir.join("node_modules/oidc-provider").exists() {
        // Not a silent skip: the test command installs it (scripts/install-test-deps.sh).
        panic!("oidc-provider is missing: run `npm install` in tests/oidc (scripts/install-test-deps.sh does)");
    }
    let mut child = tokio::process::Command::new("node")
        .arg("provider.mjs")
        .arg(redirect)
        .arg(CLIENT_ID)
        .arg(CLIENT_SECRET)
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let stdout = child.stdout.take()?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
        .await
        .ok()?
        .ok()??;
    let issuer = line
        .strip_prefix("oidc-provider listening ")?
        .trim()
        .to_owned();
    Some((child, issuer))
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn form_action(html: &str) -> String {
    let start = html.find("<form").unwrap();
    let a = html[start..].find("action=\"").unwrap() + start + 8;
    let e = html[a..].find('"').unwrap() + a;
    html[a..e].replace("&amp;", "&")
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") {
        location.to_owned()
    } else {
        format!("{base}{location}")
    }
}

/// Follow redirects by hand, answering the provider's login and consent
/// forms, until the redirect to Mado's callback; returns its URL.
pub(crate) async fn authorize(
    c: &reqwest::Client,
    app: &TestApp,
    issuer: &str,
    login: &str,
) -> String {
    let res = c.get(app.url("/auth/oidc/login")).send().await.unwrap();
    assert_eq!(res.status(), 303);
    let mut url = res.headers()["location"].to_str().unwrap().to_owned();
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(url.contains("nonce="));
    for _ in 0..20 {
        if url.starts_with(&app.url("/auth/oidc/callback")) {
            return url;
        }
        let res = c.get(&url).send().await.unwrap();
        if res.status().is_redirection() {
            url = absolute(issuer, res.headers()["location"].to_str().unwrap());
            continue;
        }
        let html = res.text().await.unwrap();
        let action = absolute(issuer, &form_action(&html));
        let res = if html.contains(r#"name="password""#) {
            c.post(&action)
                .form(&[("prompt", "login"), ("login", login), ("password", "x")])
                .send()
                .await
                .unwrap()
        } else {
            c.post(&action)
                .form(&[("prompt", "consent")])
                .send()
                .await
                .unwrap()
        };
        assert!(res.status().is_redirection(), "{}", res.status());
        url = absolute(issuer, res.headers()["location"].to_str().unwrap());
    }
    panic!("no redirect to the callback");
}

/// The app on `port`, signing in through the provider at `issuer`.
pub(crate) async fn spawn_with_provider(
    backend: Backend,
    port: u16,
    issuer: &str,
    customise: impl FnOnce(&mut server::config::Settings),
) -> Option<TestApp> {
    let issuer = issuer.to_owned();
    spawn_app_with(backend, move |s| {
        s.http.bind = format!("127.0.0.1:{port}");
        s.oidc = Some(OidcSettings {
            issuer_url: issuer,
            client_id: CLIENT_ID.into(),
            client_secret: Secret::new(CLIENT_SECRET),
            redirect_url: format!("http://127.0.0.1:{port}/auth/oidc/callback"),
            scopes: vec!["openid".into(), "profile".into()],
            role_claim: Some("mado_role".into()),
            default_role: "referring".into(),
            org: "default".into(),
            api_audience: Some("urn:mado:api".into()),
            api_scope: "mado.read".into(),
            api_role: "radiologist".into(),
        });
        customise(s);
    })
    .await
}

async fn run(backend: Backend) {
    log_capture::install();
    let port = free_port();
    let redirect = format!("http://127.0.0.1:{port}/auth/oidc/callback");
    let Some((_provider, issuer)) = start_provider(&redirect).await else {
        return;
    };
    let Some(app) = spawn_with_provider(backend, port, &issuer, |_| {}).await else {
        return;
    };

    // Full flow: a session for the local account `oidc:<sub>`.
    let c = client();
    let callback = authorize(&c, &app, &issuer, "alice").await;
    let res = c.get(&callback).send().await.unwrap();
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
    assert_eq!(res.headers()["location"], "/");
    let res = c.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("oidc:alice"));
    // Created with the default role.
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let u = server::db::entities::users::Entity::find()
        .filter(server::db::entities::users::Column::Username.eq("oidc:alice"))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.role, "referring");

    // Replaying the callback (state is single use): refused.
    let replay = client();
    let state = callback
        .split("state=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let res = replay
        .get(&callback)
        .header("cookie", format!("mado_oidc_state={state}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // Wrong state: the cookie does not match.
    let c = client();
    let callback = authorize(&c, &app, &issuer, "bob").await;
    let tampered = callback.replace("state=", "state=x");
    assert_eq!(c.get(&tampered).send().await.unwrap().status(), 403);
    // No state cookie at all (login CSRF).
    assert_eq!(client().get(&callback).send().await.unwrap().status(), 403);

    // ID tokens that fail validation, each re-signed by the provider's own
    // key (or with one signature byte flipped): no session, an audit row
    // naming the failed check, a generic 401 problem, no token in the logs.
    for (mode, check) in [
        ("wrong_nonce", "nonce"),
        ("expired", "expired"),
        ("wrong_aud", "audience"),
        ("wrong_iss", "issuer"),
        ("bad_sig", "signature"),
    ] {
        rejected_id_token(&app, &issuer, mode, check).await;
    }

    // Tampered code: the exchange fails.
    let c = client();
    let callback = authorize(&c, &app, &issuer, "carol").await;
    let tampered = callback.replace("code=", "code=x");
    assert_eq!(c.get(&tampered).send().await.unwrap().status(), 401);

    // The provider enforces PKCE: a code redeemed without the verifier is
    // refused.
    let c = client();
    let callback = authorize(&c, &app, &issuer, "dave").await;
    let code = callback
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let res = reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("invalid_grant"));

    // Role claim honoured on first sign-in.
    let c = client();
    let callback = authorize(&c, &app, &issuer, "rad-ray").await;
    assert_eq!(c.get(&callback).send().await.unwrap().status(), 303);
    let u = server::db::entities::users::Entity::find()
        .filter(server::db::entities::users::Column::Username.eq("oidc:rad-ray"))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.role, "radiologist");

    // API clients: bearer JWT access tokens (client credentials).
    let uids = crate::helpers::Uids::new("2.25.900", "2.25.901", "2.25.902");
    assert_eq!(
        app.register(&crate::helpers::registration(
            &uids,
            crate::helpers::simple_metadata(&uids, "CT", "P-API"),
            b"x"
        ))
        .await
        .status(),
        201
    );
    let token = |scope: &'static str, resource: &'static str| {
        let issuer = issuer.clone();
        async move {
            let res = reqwest::Client::new()
                .post(format!("{issuer}/token"))
                .basic_auth("mado-api", Some(CLIENT_SECRET))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("scope", scope),
                    ("resource", resource),
                ])
                .send()
                .await
                .unwrap();
            let v: serde_json::Value = res.json().await.unwrap();
            v["access_token"]
                .as_str()
                .unwrap_or_else(|| panic!("{v}"))
                .to_owned()
        }
    };
    let good = token("mado.read", "urn:mado:api").await;
    assert_eq!(good.split('.').count(), 3, "JWT access token");
    let get = |path: &str, bearer: String| app.api.get(app.url(path)).bearer_auth(bearer).send();
    assert_eq!(
        get("/studies/2.25.900", good.clone())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get("/studies/2.25.999", good.clone())
            .await
            .unwrap()
            .status(),
        404
    );
    // Tampered signature.
    let (head, sig) = good.rsplit_once('.').unwrap();
    let mut sig: Vec<char> = sig.chars().collect();
    sig[10] = if sig[10] == 'A' { 'B' } else { 'A' };
    let tampered = format!("{head}.{}", sig.into_iter().collect::<String>());
    assert_eq!(
        get("/studies/2.25.900", tampered).await.unwrap().status(),
        401
    );
    // Tampered payload (signature no longer matches).
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!("{}.{}x.{}", parts[0], parts[1], parts[2]);
    assert_eq!(
        get("/studies/2.25.900", forged).await.unwrap().status(),
        401
    );
    // Wrong audience.
    let other = token("mado.read", "urn:other:api").await;
    assert_eq!(get("/studies/2.25.900", other).await.unwrap().status(), 401);
    // Missing scope.
    let noscope = token("other.scope", "urn:mado:api").await;
    assert_eq!(
        get("/studies/2.25.900", noscope).await.unwrap().status(),
        401
    );

    app.cleanup().await;
}

/// Arm the provider to spoil the next ID token (`mode`, see
/// tests/oidc/provider.mjs).
pub(crate) async fn arm(issuer: &str, mode: &str) {
    let res = reqwest::get(format!("{issuer}/__test/id-token?mode={mode}"))
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "arming {mode}");
}

async fn rejected_id_token(app: &TestApp, issuer: &str, mode: &str, check: &str) {
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
    use server::db::entities::{audit_events, sessions};
    let sessions_before = sessions::Entity::find().count(&app.db).await.unwrap();
    let login = format!("neg-{mode}");
    let c = client();
    arm(issuer, mode).await;
    let callback = authorize(&c, app, issuer, &login).await;
    let res = c.get(&callback).send().await.unwrap();
    assert_eq!(res.status(), 401, "{mode}");
    assert!(
        res.headers().get("set-cookie").is_none_or(|v| !v
            .to_str()
            .unwrap()
            .starts_with(server::services::auth::SESSION_COOKIE)),
        "{mode}: session cookie set"
    );
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "{mode}"
    );
    let body = res.text().await.unwrap();
    assert!(
        body.contains("missing or invalid credentials") && !body.contains(check),
        "{mode}: {body}"
    );
    let id_token = reqwest::get(format!("{issuer}/__test/last-id-token"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(id_token.split('.').count(), 3, "{mode}: {id_token}");
    assert!(!body.contains(&id_token[id_token.len() - 20..]));
    // Not signed in, no session row, no account created.
    let res = c.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 303, "{mode}");
    assert_eq!(
        sessions::Entity::find().count(&app.db).await.unwrap(),
        sessions_before,
        "{mode}"
    );
    assert!(server::db::entities::users::Entity::find()
        .filter(server::db::entities::users::Column::Username.eq(format!("oidc:{login}")))
        .one(&app.db)
        .await
        .unwrap()
        .is_none());
    // The audit trail names the failed check.
    let last = audit_events::Entity::find()
        .filter(audit_events::Column::Action.eq("login"))
        .order_by_desc(audit_events::Column::Seq)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.outcome, "failure", "{mode}");
    assert_eq!(last.detail, format!("oidc: id token: {check}"), "{mode}");
    // Neither the token nor its signature reached the logs.
    if let Some(logs) = log_capture::text() {
        let sig = id_token.rsplit('.').next().unwrap();
        assert!(
            !logs.contains(sig) && !logs.contains(&id_token[..40]),
            "{mode}: token in the logs"
        );
        assert!(logs.contains("OIDC sign-in rejected"), "logs captured");
    }
}

/// The server's logs of this test binary, captured in memory (unless
/// `TEST_LOG` asks for them on stderr).
pub(crate) mod log_capture {
    use std::sync::{Mutex, OnceLock};

    static BUF: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    static INSTALLED: OnceLock<bool> = OnceLock::new();

    struct W;
    impl std::io::Write for W {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = BUF.lock() {
                v.extend_from_slice(b);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    pub fn install() {
        INSTALLED.get_or_init(|| {
            std::env::var_os("TEST_LOG").is_none()
                && tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::new(
                        "info,server=debug,sqlx=warn,sea_orm=warn",
                    ))
                    .with_writer(|| W)
                    .with_ansi(false)
                    .try_init()
                    .is_ok()
        });
    }

    pub fn text() -> Option<String> {
        if *INSTALLED.get()? {
            BUF.lock()
                .ok()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        } else {
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_sqlite() {
    run(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_postgres() {
    run(Backend::Postgres).await;
}
