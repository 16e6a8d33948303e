//! TOTP enrolment (QR page), the second sign-in step, recovery codes,
//! and account lockout after repeated failures.

use crate::helpers::{hidden_field, TestApp};
use server::services::totp::{current_code, next_code};

fn between<'a>(html: &'a str, start: &str, end: &str) -> Vec<&'a str> {
    html.split(start)
        .skip(1)
        .filter_map(|p| p.split(end).next())
        .collect()
}

async fn password_step(
    app: &TestApp,
    b: &reqwest::Client,
    user: &str,
    pw: &str,
) -> reqwest::Response {
    let page = b
        .get(app.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden_field(&page, "csrf");
    b.post(app.url("/login"))
        .form(&[
            ("username", user),
            ("password", pw),
            ("csrf", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap()
}

async fn totp_flow(app: &TestApp) {
    app.create_user("mfa", "mfa password 1").await;
    let b = app.signed_in_browser("mfa", "mfa password 1").await;
    let page = b
        .get(app.url("/account/totp"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"src="data:image/png;base64,"#),
        "QR code shown"
    );
    let secret = between(&page, r#"<code id="totp-secret">"#, "</code>")[0].to_owned();
    let csrf = hidden_field(&page, "csrf");
    // Wrong code: not enrolled.
    let res = b
        .post(app.url("/account/totp"))
        .form(&[("csrf", csrf.as_str()), ("code", "000000")])
        .send()
        .await
        .unwrap();
    let page = res.text().await.unwrap();
    assert!(page.contains("Invalid code."));
    let secret = between(&page, r#"<code id="totp-secret">"#, "</code>")
        .first()
        .map(|s| (*s).to_owned())
        .unwrap_or(secret);
    let enrol_code = current_code(&secret).unwrap();
    let code = enrol_code.clone();
    let res = b
        .post(app.url("/account/totp"))
        .form(&[("csrf", csrf.as_str()), ("code", code.as_str())])
        .send()
        .await
        .unwrap();
    let page = res.text().await.unwrap();
    let recovery: Vec<String> = between(&page, "<li><code>", "</code>")
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(recovery.len(), 10, "{page}");

    // Password alone no longer signs in: the second step is asked.
    let b = app.browser();
    let res = password_step(app, &b, "mfa", "mfa password 1").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.url().path(), "/login");
    let page = res.text().await.unwrap();
    assert!(page.contains(r#"action="/login/totp""#));
    assert_eq!(
        b.get(app.url("/")).send().await.unwrap().url().path(),
        "/login"
    );
    let csrf = hidden_field(&page, "csrf");
    let res = b
        .post(app.url("/login/totp"))
        .form(&[("csrf", csrf.as_str()), ("code", "123456")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let csrf = hidden_field(&res.text().await.unwrap(), "csrf");
    // The code that confirmed enrolment was consumed with its time step.
    let res = b
        .post(app.url("/login/totp"))
        .form(&[("csrf", csrf.as_str()), ("code", enrol_code.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "enrolment code replayed");
    let csrf = hidden_field(&res.text().await.unwrap(), "csrf");
    let code = next_code(&secret).unwrap();
    let res = b
        .post(app.url("/login/totp"))
        .form(&[("csrf", csrf.as_str()), ("code", code.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.url().path(), "/");
    assert_eq!(res.status(), 200);

    // A recovery code works once.
    for (i, expect_ok) in [(0, true), (1, false)] {
        let b = app.browser();
        let page = password_step(app, &b, "mfa", "mfa password 1")
            .await
            .text()
            .await
            .unwrap();
        let csrf = hidden_field(&page, "csrf");
        let res = b
            .post(app.url("/login/totp"))
            .form(&[("csrf", csrf.as_str()), ("code", recovery[0].as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status() == 200 && res.url().path() == "/",
            expect_ok,
            "attempt {i}"
        );
    }

    // Lockout: 5 wrong passwords lock the account, even for the right one.
    app.create_user("locky", "locky password 1").await;
    let b = app.browser();
    for _ in 0..5 {
        assert_eq!(password_step(app, &b, "locky", "wrong").await.status(), 401);
    }
    assert_eq!(
        password_step(app, &b, "locky", "locky password 1")
            .await
            .status(),
        401
    );
}

crate::both_backends!(totp_and_lockout, crate::totp::totp_flow);
