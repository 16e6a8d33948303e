//! Every attempt counter holds under concurrency: N simultaneous wrong
//! passwords, TOTP codes or share passcodes are each counted, at most the
//! threshold of them is ever checked, the lock follows, and the right
//! secret is refused while locked; a share link's use limit holds under
//! simultaneous openings (SQLite and PostgreSQL).

use crate::dicom::{ct_slice, Options};
use crate::helpers::{put_object, registration, spawn_app_with, Backend, TestApp, Uids};
use chrono::{Duration, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};
use server::db::entities::{audit_events, share_links, share_sessions, studies, users};
use server::services::shares::{self, NewShare};
use server::services::totp;

/// Concurrent attempts per counter.
const N: usize = 20;
/// A CSRF token of the issued shape, sent as cookie and field alike.
const CSRF: &str = "aaaaaaaaaaaaaaaaaaaaaa";

async fn app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |s| {
        // The per-address rate limit is another defence; this tests the
        // counters themselves.
        s.security.auth_rate_per_minute = 10_000;
        s.security.lockout_threshold = 5;
        s.security.share_passcode_attempts = 5;
    })
    .await
}

async fn user(app: &TestApp, name: &str) -> users::Model {
    users::Entity::find()
        .filter(users::Column::Username.eq(name))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
}

/// `POST /login` without a cookie store: (status, Set-Cookie name=value pairs).
async fn post_login(app: &TestApp, username: &str, password: &str) -> (u16, Vec<String>) {
    let res = app
        .api
        .post(app.url("/login"))
        .header("cookie", format!("mado_login_csrf={CSRF}"))
        .form(&[
            ("username", username),
            ("password", password),
            ("csrf", CSRF),
        ])
        .send()
        .await
        .unwrap();
    let cookies = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_owned)
        .collect();
    (res.status().as_u16(), cookies)
}

/// Run `n` copies of `f` at once; their results.
async fn all_at_once<F, Fut, T>(n: usize, f: F) -> Vec<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(f())).collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn passwords(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    app.create_user("victim", "the right password").await;
    let a = std::sync::Arc::new(app);
    let statuses = all_at_once(N, || {
        let a = a.clone();
        async move { post_login(&a, "victim", "a wrong password").await.0 }
    })
    .await;
    let app = std::sync::Arc::try_unwrap(a).ok().unwrap();
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let u = user(&app, "victim").await;
    // Exactly the threshold was claimed (and checked); the rest found the
    // account locked.
    assert_eq!(u.failed_logins, 5);
    assert!(u.locked_until.is_some_and(|t| t > Utc::now()));
    let locked_refusals = audit_events::Entity::find()
        .filter(audit_events::Column::Action.eq("login"))
        .filter(audit_events::Column::Detail.eq("account locked"))
        .count(&app.db)
        .await
        .unwrap();
    assert!(locked_refusals >= (N - 5) as u64, "{locked_refusals}");
    // The right password is refused while locked.
    assert_eq!(
        post_login(&app, "victim", "the right password").await.0,
        401
    );
    assert_eq!(user(&app, "victim").await.failed_logins, 5, "not counted");
    // Once the lock has passed, the right password works and resets.
    app.db
        .execute_unprepared("UPDATE users SET locked_until = NULL WHERE username = 'victim'")
        .await
        .unwrap();
    let (status, _) = post_login(&app, "victim", "the right password").await;
    assert_eq!(status, 303);
    let u = user(&app, "victim").await;
    assert_eq!((u.failed_logins, u.locked_until), (0, None));
    app.cleanup().await;
}

async fn totp_codes(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    app.create_user("otp", "otp password 1").await;
    let id = user(&app, "otp").await.id;
    let e = totp::begin(&app.db, id, "otp").await.unwrap();
    // Enrolled with the code of the previous step, so the current one is
    // still unused.
    let secret = e.secret_b32.clone();
    totp::confirm(&app.db, id, &totp::current_code(&secret).unwrap())
        .await
        .unwrap()
        .unwrap();
    app.db
        .execute_unprepared(&format!(
            "UPDATE users SET totp_last_step = NULL WHERE id = {id}"
        ))
        .await
        .unwrap();
    // The password step: the MFA cookie pair.
    let (status, cookies) = post_login(&app, "otp", "otp password 1").await;
    assert_eq!(status, 200);
    let jar: Vec<String> = cookies
        .into_iter()
        .filter(|c| c.starts_with("mado_mfa"))
        .chain([format!("mado_login_csrf={CSRF}")])
        .collect();
    assert_eq!(jar.len(), 3, "{jar:?}");
    let cookie = jar.join("; ");
    assert_eq!(
        user(&app, "otp").await.failed_logins,
        0,
        "a right password is not a failure"
    );
    let right = totp::current_code(&secret).unwrap();
    let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 1) % 1_000_000);
    let a = std::sync::Arc::new(app);
    let statuses = all_at_once(N, || {
        let (a, cookie, wrong) = (a.clone(), cookie.clone(), wrong.clone());
        async move {
            a.api
                .post(a.url("/login/totp"))
                .header("cookie", cookie)
                .form(&[("csrf", CSRF), ("code", wrong.as_str())])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    })
    .await;
    let app = std::sync::Arc::try_unwrap(a).ok().unwrap();
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let u = user(&app, "otp").await;
    assert_eq!(u.failed_logins, 5);
    assert!(u.locked_until.is_some_and(|t| t > Utc::now()));
    // The right code is refused while locked (and stays unused).
    let res = app
        .api
        .post(app.url("/login/totp"))
        .header("cookie", cookie)
        .form(&[("csrf", CSRF), ("code", right.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let sessions = server::db::entities::sessions::Entity::find()
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(sessions, 0);
    app.cleanup().await;
}

async fn add_study(app: &TestApp, u: &Uids) -> i64 {
    let ct = ct_slice(&Options::ct(
        u.study.as_str(),
        u.series.as_str(),
        u.sop.as_str(),
    ));
    put_object(app, u, &ct.bytes).await;
    assert_eq!(
        app.register(&registration(u, ct.metadata.clone(), &ct.bytes))
            .await
            .status(),
        201
    );
    studies::Entity::find()
        .filter(studies::Column::StudyUid.eq(u.study.as_str()))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
        .id
}

async fn post_passcode(app: &TestApp, token: &str, passcode: &str) -> u16 {
    app.api
        .post(app.url(&format!("/s/{token}")))
        .header("cookie", format!("mado_share_csrf={CSRF}"))
        .form(&[("csrf", CSRF), ("passcode", passcode)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn share_counters(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let pk = add_study(&app, &Uids::new("2.25.9100", "2.25.9101", "2.25.9102")).await;

    // Passcode lockout.
    let link = shares::create(
        &app.db,
        pk,
        None,
        NewShare {
            expires_in: Duration::hours(1),
            passcode: Some("the right passcode".into()),
            max_uses: None,
            pixels_only: false,
        },
    )
    .await
    .unwrap();
    let a = std::sync::Arc::new(app);
    let token = link.token.clone();
    let mut statuses = all_at_once(N, || {
        let (a, token) = (a.clone(), token.clone());
        async move { post_passcode(&a, &token, "a wrong passcode").await }
    })
    .await;
    let app = std::sync::Arc::try_unwrap(a).ok().unwrap();
    statuses.sort_unstable();
    // Four wrong (401), the fifth wrong one locks (429), the rest locked.
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        N - 4,
        "{statuses:?}"
    );
    let checked = audit_events::Entity::find()
        .filter(audit_events::Column::Action.eq("share.use"))
        .filter(audit_events::Column::Detail.eq("wrong passcode"))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(checked, 5, "passcodes checked");
    let row = share_links::Entity::find_by_id(link.id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(row.locked_until.is_some_and(|t| t > Utc::now()));
    assert_eq!(
        post_passcode(&app, &link.token, "the right passcode").await,
        429
    );
    assert_eq!(row.uses, 0);
    // Once the lock has passed, the right passcode opens the link.
    app.db
        .execute_unprepared(&format!(
            "UPDATE share_links SET locked_until = NULL WHERE id = {}",
            link.id
        ))
        .await
        .unwrap();
    assert_eq!(
        post_passcode(&app, &link.token, "the right passcode").await,
        303
    );

    // Use limit: N openings at once, 2 uses.
    let limited = shares::create(
        &app.db,
        pk,
        None,
        NewShare {
            expires_in: Duration::hours(1),
            passcode: None,
            max_uses: Some(2),
            pixels_only: true,
        },
    )
    .await
    .unwrap();
    let a = std::sync::Arc::new(app);
    let url = a.url(&format!("/s/{}", limited.token));
    let statuses = all_at_once(N, || {
        let (a, url) = (a.clone(), url.clone());
        async move { a.api.get(url).send().await.unwrap().status().as_u16() }
    })
    .await;
    let app = std::sync::Arc::try_unwrap(a).ok().unwrap();
    assert_eq!(
        statuses.iter().filter(|s| **s == 303).count(),
        2,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 303 || *s == 404),
        "{statuses:?}"
    );
    let row = share_links::Entity::find_by_id(limited.id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.uses, 2);
    let sessions = share_sessions::Entity::find()
        .filter(share_sessions::Column::ShareId.eq(limited.id))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(sessions, 2);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_passwords_sqlite() {
    passwords(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_passwords_postgres() {
    passwords(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_totp_codes_sqlite() {
    totp_codes(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_totp_codes_postgres() {
    totp_codes(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_share_counters_sqlite() {
    share_counters(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_share_counters_postgres() {
    share_counters(Backend::Postgres).await;
}
