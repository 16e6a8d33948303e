//! Multi-factor sign-in for roles in `[security] mfa_roles`:
//! - local accounts without a second factor enrol during sign-in, before
//!   any session exists;
//! - a TOTP code is accepted once (replay within its time step refused);
//! - OIDC: a provider that reports a second factor (`amr`/`acr`) is
//!   honoured; one that does not leads to the local second factor first.

use crate::helpers::{hidden_field, spawn_app_with, Backend, TestApp};
use crate::oidc::{arm, authorize, client, free_port, spawn_with_provider, start_provider};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use server::db::entities::{sessions, users};
use server::services::totp::{current_code, next_code};

fn between<'a>(html: &'a str, start: &str, end: &str) -> Vec<&'a str> {
    html.split(start)
        .skip(1)
        .filter_map(|p| p.split(end).next())
        .collect()
}

async fn user_sessions(app: &TestApp, username: &str) -> u64 {
    let u = users::Entity::find()
        .filter(users::Column::Username.eq(username))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    sessions::Entity::find()
        .filter(sessions::Column::UserId.eq(u.id))
        .count(&app.db)
        .await
        .unwrap()
}

async fn password_step(app: &TestApp, b: &reqwest::Client, user: &str, pw: &str) -> String {
    let page = b
        .get(app.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden_field(&page, "csrf");
    let res = b
        .post(app.url("/login"))
        .form(&[("username", user), ("password", pw), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

/// Enrol on the page `page` (the sign-in enrolment step): a wrong code
/// first, then the right one; returns the secret.
async fn enrol_during_sign_in(app: &TestApp, b: &reqwest::Client, page: &str) -> String {
    assert!(page.contains(r#"action="/login/totp/enrol""#), "{page}");
    assert!(page.contains(r#"src="data:image/png;base64,"#));
    let secret = between(page, r#"<code id="totp-secret">"#, "</code>")[0].to_owned();
    // Not usable yet: no session.
    let res = b.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.url().path(), "/login");
    let csrf = hidden_field(page, "csrf");
    let res = b
        .post(app.url("/login/totp/enrol"))
        .form(&[("csrf", csrf.as_str()), ("code", "000000")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let page = res.text().await.unwrap();
    // Same pending secret after a mistyped code.
    assert!(page.contains(&secret), "{page}");
    assert_eq!(
        b.get(app.url("/")).send().await.unwrap().url().path(),
        "/login"
    );
    let csrf = hidden_field(&page, "csrf");
    let code = current_code(&secret).unwrap();
    let res = b
        .post(app.url("/login/totp/enrol"))
        .form(&[("csrf", csrf.as_str()), ("code", code.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert_eq!(between(&page, "<li><code>", "</code>").len(), 10, "{page}");
    assert!(page.contains(r#"id="continue" href="/""#));
    // Now signed in.
    let res = b.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.url().path(), "/");
    assert_eq!(res.status(), 200);
    secret
}

async fn local_flow(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.security.mfa_roles = vec!["radiologist".into()];
    })
    .await
    else {
        return;
    };
    server::services::auth::upsert_user(&app.db, "rad", "rad password 1", "radiologist")
        .await
        .unwrap();

    // Password right, no second factor enrolled: enrolment, no session.
    let b = app.browser();
    let page = password_step(&app, &b, "rad", "rad password 1").await;
    assert_eq!(user_sessions(&app, "rad").await, 0);
    // A stale or forged MFA cookie cannot enrol: back to the login page.
    let res = app
        .browser()
        .post(app.url("/login/totp/enrol"))
        .header(
            "cookie",
            "mado_mfa=1.99999999999.00; mado_login_csrf=aaaaaaaaaaaaaaaaaaaaaa",
        )
        .form(&[("csrf", "aaaaaaaaaaaaaaaaaaaaaa"), ("code", "123456")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.url().path(), "/login");
    let secret = enrol_during_sign_in(&app, &b, &page).await;
    assert_eq!(user_sessions(&app, "rad").await, 1);

    // Next sign-in: the TOTP step; a code is accepted once (a later step
    // than the one consumed by enrolment).
    let code = next_code(&secret).unwrap();
    let step = |b: reqwest::Client, code: String| {
        let app = &app;
        async move {
            let page = password_step(app, &b, "rad", "rad password 1").await;
            assert!(page.contains(r#"action="/login/totp""#), "{page}");
            let csrf = hidden_field(&page, "csrf");
            b.post(app.url("/login/totp"))
                .form(&[("csrf", csrf.as_str()), ("code", code.as_str())])
                .send()
                .await
                .unwrap()
        }
    };
    let res = step(app.browser(), code.clone()).await;
    assert_eq!((res.status().as_u16(), res.url().path()), (200, "/"));
    let res = step(app.browser(), code.clone()).await;
    assert_eq!(res.status(), 401, "replayed code accepted");
    assert!(res.text().await.unwrap().contains("Invalid code."));
    assert_eq!(user_sessions(&app, "rad").await, 2);

    // The audit trail tells the steps apart.
    use server::db::entities::audit_events;
    let details: Vec<String> = audit_events::Entity::find()
        .filter(audit_events::Column::Action.eq("login"))
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}", e.outcome, e.detail))
        .collect();
    for want in [
        "success password verified, second factor enrolment due",
        "success second factor enrolled",
        "success password verified, second factor due",
        "failure second factor",
    ] {
        assert!(details.iter().any(|d| d == want), "{want}: {details:?}");
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfa_local_sqlite() {
    local_flow(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfa_local_postgres() {
    local_flow(Backend::Postgres).await;
}

/// OIDC with `mfa_roles = ["radiologist"]`: `rad-*` logins get the
/// radiologist role from the provider's role claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfa_oidc() {
    let port = free_port();
    let redirect = format!("http://127.0.0.1:{port}/auth/oidc/callback");
    let (_provider, issuer) = start_provider(&redirect)
        .await
        .expect("the OpenID Provider did not start");
    let Some(app) = spawn_with_provider(Backend::Sqlite, port, &issuer, |s| {
        s.security.mfa_roles = vec!["radiologist".into()];
    })
    .await
    else {
        return;
    };

    // The provider reports a second factor (amr otp, acr mfa): honoured,
    // signed in directly.
    let c = client();
    arm(&issuer, "mfa").await;
    let callback = authorize(&c, &app, &issuer, "rad-hwk").await;
    let res = c.get(&callback).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/");
    assert_eq!(user_sessions(&app, "oidc:rad-hwk").await, 1);

    // No second factor from the provider: local enrolment first, no session
    // until it is done.
    let c = client();
    let callback = authorize(&c, &app, &issuer, "rad-pwd").await;
    let res = c.get(&callback).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert_eq!(user_sessions(&app, "oidc:rad-pwd").await, 0);
    {
        assert!(page.contains(r#"action="/login/totp/enrol""#), "{page}");
        let secret = between(&page, r#"<code id="totp-secret">"#, "</code>")[0].to_owned();
        let csrf = hidden_field(&page, "csrf");
        let code = current_code(&secret).unwrap();
        let res = c
            .post(app.url("/login/totp/enrol"))
            .form(&[("csrf", csrf.as_str()), ("code", code.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.text().await.unwrap().contains("<li><code>"));
    }
    assert_eq!(user_sessions(&app, "oidc:rad-pwd").await, 1);
    assert_eq!(c.get(app.url("/")).send().await.unwrap().status(), 200);

    // Enrolled: the next OIDC sign-in without provider MFA asks for the
    // local code.
    let c = client();
    let callback = authorize(&c, &app, &issuer, "rad-pwd").await;
    let res = c.get(&callback).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains(r#"action="/login/totp""#), "{page}");
    assert_eq!(user_sessions(&app, "oidc:rad-pwd").await, 1);
    app.cleanup().await;
}

/// `GET /login/totp/enrol` with `cookie`: 200 (the enrolment step) or the
/// redirect back to `/login`.
async fn enrol_page_status(app: &TestApp, cookie: &str) -> u16 {
    let res = app
        .api
        .get(app.url("/login/totp/enrol"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    if res.status() == 303 {
        assert_eq!(res.headers()["location"], "/login");
    }
    res.status().as_u16()
}

/// The enrolment cookie is signed with its own key (from `[security]
/// secret`, not the audit key), expires, and is bound to a nonce cookie of
/// the same browser.
async fn enrolment_cookie(backend: Backend) {
    use server::services::auth::{derive_key, KEY_MFA_COOKIE};
    use server::services::totp::{mfa_cookie_value_at, MFA_WINDOW_SECS};
    let secret = "a test server secret, 0123456789abcdef";
    let Some(app) = spawn_app_with(backend, |s| {
        s.security.mfa_roles = vec!["radiologist".into()];
        s.security.secret = server::config::Secret::new(secret);
        s.audit.key = server::config::Secret::new("a test audit key 0123456789");
    })
    .await
    else {
        return;
    };
    server::services::auth::upsert_user(&app.db, "rad", "rad password 1", "radiologist")
        .await
        .unwrap();
    let uid = users::Entity::find()
        .filter(users::Column::Username.eq("rad"))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
        .id;
    let now = chrono::Utc::now().timestamp();
    let nonce = "n".repeat(43);
    let pair = |value: String| format!("mado_mfa={value}; mado_mfa_nonce={nonce}");
    let mfa_key = derive_key(secret.as_bytes(), KEY_MFA_COOKIE);

    // Control: a cookie signed with the MFA key is accepted.
    let good = mfa_cookie_value_at(&mfa_key, uid, &nonce, now);
    assert_eq!(enrol_page_status(&app, &pair(good.clone())).await, 200);
    // Forged with the audit key (which auditors hold), directly or with
    // the old derivation: refused.
    let audit_key = b"a test audit key 0123456789";
    let old_derivation = {
        use hmac::{Hmac, Mac};
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(audit_key).unwrap();
        m.update(b"mado-mfa-key-v1");
        m.finalize().into_bytes().to_vec()
    };
    for key in [audit_key.to_vec(), old_derivation] {
        let forged = mfa_cookie_value_at(&key, uid, &nonce, now);
        assert_eq!(enrol_page_status(&app, &pair(forged)).await, 303);
    }
    // Older than the limit: refused.
    let old = mfa_cookie_value_at(&mfa_key, uid, &nonce, now - MFA_WINDOW_SECS - 1);
    assert_eq!(enrol_page_status(&app, &pair(old)).await, 303);
    // Without its nonce cookie, or with another one: refused.
    assert_eq!(
        enrol_page_status(&app, &format!("mado_mfa={good}")).await,
        303
    );
    assert_eq!(
        enrol_page_status(
            &app,
            &format!("mado_mfa={good}; mado_mfa_nonce={}", "m".repeat(43))
        )
        .await,
        303
    );

    // A real sign-in: the cookie replayed from another browser without the
    // companion nonce is refused; with it, the step continues.
    let res = app
        .api
        .post(app.url("/login"))
        .header("cookie", "mado_login_csrf=aaaaaaaaaaaaaaaaaaaaaa")
        .form(&[
            ("username", "rad"),
            ("password", "rad password 1"),
            ("csrf", "aaaaaaaaaaaaaaaaaaaaaa"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let set: Vec<String> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap().to_owned())
        .collect();
    let mfa = set.iter().find(|c| c.starts_with("mado_mfa=")).unwrap();
    let nonce_cookie = set
        .iter()
        .find(|c| c.starts_with("mado_mfa_nonce="))
        .unwrap();
    assert_eq!(enrol_page_status(&app, mfa).await, 303);
    assert_eq!(
        enrol_page_status(&app, &format!("{mfa}; {nonce_cookie}")).await,
        200
    );
    // Both cookies are HttpOnly.
    let raw: Vec<&str> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.starts_with("mado_mfa"))
        .collect();
    assert_eq!(raw.len(), 2);
    assert!(raw.iter().all(|v| v.contains("HttpOnly")), "{raw:?}");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfa_enrolment_cookie_sqlite() {
    enrolment_cookie(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfa_enrolment_cookie_postgres() {
    enrolment_cookie(Backend::Postgres).await;
}
