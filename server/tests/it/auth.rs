use crate::helpers::{hidden_field, registration, simple_metadata, TestApp, Uids};

async fn login_flow(app: &TestApp) {
    app.create_user("alice", "correct horse battery").await;
    let uids = Uids::new("2.25.500", "2.25.501", "2.25.502");
    assert_eq!(
        app.register(&registration(
            &uids,
            simple_metadata(&uids, "CT", "PSEUDO-7"),
            b"x"
        ))
        .await
        .status(),
        201
    );

    // Not signed in: the worklist redirects to the login page.
    let browser = app.browser();
    let res = browser.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.url().path(), "/login");
    let page = res.text().await.unwrap();
    assert!(page.contains(r#"<html lang="en">"#));
    let csrf = hidden_field(&page, "csrf");

    // Wrong password: generic error, no session.
    let res = browser
        .post(app.url("/login"))
        .form(&[
            ("username", "alice"),
            ("password", "wrong"),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let page = res.text().await.unwrap();
    assert!(page.contains("Invalid username or password."));
    // Unknown user: the same message.
    let csrf = hidden_field(&page, "csrf");
    let res = browser
        .post(app.url("/login"))
        .form(&[
            ("username", "mallory"),
            ("password", "wrong"),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let page = res.text().await.unwrap();
    assert!(page.contains("Invalid username or password."));
    let res = browser.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.url().path(), "/login");

    // Missing / wrong CSRF token: refused even with the right password.
    let res = browser
        .post(app.url("/login"))
        .form(&[
            ("username", "alice"),
            ("password", "correct horse battery"),
            ("csrf", "forged"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    // Right password: session cookie, worklist shows the study.
    let csrf = hidden_field(&res.text().await.unwrap(), "csrf");
    let res = browser
        .post(app.url("/login"))
        .form(&[
            ("username", "alice"),
            ("password", "correct horse battery"),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.url().path(), "/");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let page = res.text().await.unwrap();
    assert!(page.contains("PSEUDO-7"), "{page}");
    assert!(page.contains("ANON PATIENT"));
    assert!(page.contains("/studies/2.25.500"));
    assert!(page.contains("2024-01-05"));

    // The study page lists the instance as a lazily loaded image.
    let study = browser
        .get(app.url("/studies/2.25.500"))
        .send()
        .await
        .unwrap();
    assert_eq!(study.status(), 200);
    let html = study.text().await.unwrap();
    assert!(
        html.contains(r#"src="/studies/2.25.500/series/2.25.501/instances/2.25.502/rendered.png""#)
    );
    assert!(html.contains(r#"loading="lazy""#));
    assert_eq!(
        browser
            .get(app.url("/studies/2.25.999"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        browser
            .get(app.url("/studies/not-a-uid"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Logout needs the session's CSRF token.
    let logout_csrf = hidden_field(&page, "csrf");
    let res = browser
        .post(app.url("/logout"))
        .form(&[("csrf", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = browser
        .post(app.url("/logout"))
        .form(&[("csrf", logout_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.url().path(), "/login");
    let res = browser.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.url().path(), "/login");

    // create-admin semantics: upsert resets the password.
    app.create_user("alice", "a new password").await;
    let b = app.signed_in_browser("alice", "a new password").await;
    assert_eq!(b.get(app.url("/")).send().await.unwrap().url().path(), "/");
}

crate::both_backends!(login, crate::auth::login_flow);
