//! A browser opening a study page without a session is sent to the login
//! page and back (`/login?next=…`); API clients keep their 401
//! problem+json. `next` only ever leads to a local path.

use crate::helpers::{hidden_field, registration, simple_metadata, spawn_app, Backend, Uids};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn study_page_redirects_browsers_to_login() {
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let uids = Uids::new("2.25.7701", "2.25.7702", "2.25.7703");
    let reg = registration(&uids, simple_metadata(&uids, "CT", "P-NEXT"), b"x");
    assert_eq!(app.register(&reg).await.status(), 201);
    app.create_user("nina", "nina password 1").await;
    const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

    // A browser: 303 to the login page, with the page to come back to.
    let res = app
        .api
        .get(app.url("/studies/2.25.7701?x=1"))
        .header("accept", HTML)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(location, "/login?next=%2Fstudies%2F2.25.7701%3Fx%3D1");
    // An API client (no text/html): 401 problem+json, as before.
    let res = app
        .api
        .get(app.url("/studies/2.25.7701"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    // Unknown study: same answer as a known one (nothing learnt unsigned).
    let res = app
        .api
        .get(app.url("/studies/2.25.7799"))
        .header("accept", HTML)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);

    // The login form carries `next` and the sign-in goes there.
    let b = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |next: &'static str| {
        let b = b.clone();
        let app = &app;
        async move {
            let page = b
                .get(app.url(&format!("/login?next={next}")))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let csrf = hidden_field(&page, "csrf");
            let mut form = vec![
                ("username", "nina".to_owned()),
                ("password", "nina password 1".to_owned()),
                ("csrf", csrf),
            ];
            if page.contains(r#"name="next""#) {
                let next = hidden_field(&page, "next")
                    .replace("&#38;", "&")
                    .replace("&amp;", "&")
                    .replace("&#x2f;", "/");
                form.push(("next", next));
            }
            let res = b.post(app.url("/login")).form(&form).send().await.unwrap();
            assert_eq!(res.status(), 303);
            res.headers()["location"].to_str().unwrap().to_owned()
        }
    };
    assert_eq!(
        sign_in("%2Fstudies%2F2.25.7701%3Fx%3D1").await,
        "/studies/2.25.7701?x=1"
    );
    let res = b
        .get(app.url("/studies/2.25.7701"))
        .header("accept", HTML)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Off-site or odd targets are dropped: the worklist instead.
    for evil in [
        "%2F%2Fevil.example%2F",
        "https%3A%2F%2Fevil.example%2F",
        "%2F%5Cevil.example",
        "%2Flogin",
    ] {
        let b2 = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let page = b2
            .get(app.url(&format!("/login?next={evil}")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!page.contains(r#"name="next""#), "{evil}");
        let csrf = hidden_field(&page, "csrf");
        let res = b2
            .post(app.url("/login"))
            .form(&[
                ("username", "nina"),
                ("password", "nina password 1"),
                ("csrf", csrf.as_str()),
                ("next", "//evil.example/"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["location"], "/", "{evil}");
    }
    app.cleanup().await;
}
