//! Share links: creation through the API, passcode + lockout, use limit
//! under concurrency, pixels-only, revocation, no other study visible.

use crate::dicom::{ct_slice, Options};
use crate::helpers::{hidden_field, put_object, registration, TestApp, Uids};
use chrono::Duration;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use server::db::entities::{share_links, studies};
use server::services::shares::{self, NewShare};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn add_study(app: &TestApp, u: &Uids) {
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
}

async fn study_pk(app: &TestApp, u: &Uids) -> i64 {
    studies::Entity::find()
        .filter(studies::Column::StudyUid.eq(u.study.as_str()))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
        .id
}

async fn share_flow(app: &TestApp) {
    let a = Uids::new("2.25.800", "2.25.801", "2.25.802");
    let b = Uids::new("2.25.810", "2.25.811", "2.25.812");
    add_study(app, &a).await;
    add_study(app, &b).await;
    app.create_user("rad", "rad password 1").await;
    let browser = app.signed_in_browser("rad", "rad password 1").await;
    let page = browser
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden_field(&page, "csrf");

    // CSRF is required.
    let res = browser
        .post(app.url("/studies/2.25.800/shares"))
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    // Create with a passcode and two uses.
    let res = browser
        .post(app.url("/studies/2.25.800/shares"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("passcode", "open sesame"),
            ("max_uses", "2"),
            ("expires_hours", "2"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: serde_json::Value = res.json().await.unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.len() >= 22, "≥128-bit token");
    let id = created["id"].as_i64().unwrap();
    // Stored as a digest only.
    let row = share_links::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(row.token_hash, token);
    assert_eq!(row.token_hash.len(), 64);

    // Landing asks for the passcode.
    let c = client();
    let res = c.get(app.url(&format!("/s/{token}"))).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let form = res.text().await.unwrap();
    let pcsrf = hidden_field(&form, "csrf");
    // Wrong passcode.
    let res = c
        .post(app.url(&format!("/s/{token}")))
        .form(&[("csrf", pcsrf.as_str()), ("passcode", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let pcsrf = hidden_field(&res.text().await.unwrap(), "csrf");
    // Right passcode: session, redirect to the study.
    let res = c
        .post(app.url(&format!("/s/{token}")))
        .form(&[("csrf", pcsrf.as_str()), ("passcode", "open sesame")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/studies/2.25.800");
    assert_eq!(
        c.get(app.url("/studies/2.25.800"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(app.url("/studies/2.25.800/series/2.25.801/instances/2.25.802/rendered.png"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Never another study.
    assert_eq!(
        c.get(app.url("/studies/2.25.810"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // Not a user: no worklist, no share management.
    assert_eq!(c.get(app.url("/")).send().await.unwrap().status(), 303);

    // Revocation ends the session.
    let res = browser
        .post(app.url(&format!("/studies/2.25.800/shares/{id}/revoke")))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        c.get(app.url("/studies/2.25.800"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client()
            .get(app.url(&format!("/s/{token}")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Use limit under concurrency: 3 uses, 12 concurrent openings.
    let pk = study_pk(app, &b).await;
    let link = shares::create(
        &app.db,
        pk,
        None,
        NewShare {
            expires_in: Duration::hours(1),
            passcode: None,
            max_uses: Some(3),
            pixels_only: true,
        },
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let url = app.url(&format!("/s/{}", link.token));
        tasks.push(tokio::spawn(async move {
            client().get(url).send().await.unwrap().status().as_u16()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            303 => ok += 1,
            404 => {}
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(ok, 3);
    let row = share_links::Entity::find_by_id(link.id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.uses, 3);

    // Pixels-only: rendered images, no DICOM download.
    let px = shares::create(
        &app.db,
        pk,
        None,
        NewShare {
            expires_in: Duration::hours(1),
            passcode: None,
            max_uses: None,
            pixels_only: true,
        },
    )
    .await
    .unwrap();
    let c = client();
    let res = c
        .get(app.url(&format!("/s/{}", px.token)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let png = "/studies/2.25.810/series/2.25.811/instances/2.25.812/rendered.png";
    assert_eq!(c.get(app.url(png)).send().await.unwrap().status(), 200);
    assert_eq!(
        c.get(app.url("/dicomweb/studies/2.25.810/series/2.25.811/instances/2.25.812"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Passcode lockout after 5 wrong attempts.
    let locked = shares::create(
        &app.db,
        pk,
        None,
        NewShare {
            expires_in: Duration::hours(1),
            passcode: Some("right".into()),
            max_uses: None,
            pixels_only: false,
        },
    )
    .await
    .unwrap();
    let c = client();
    let url = app.url(&format!("/s/{}", locked.token));
    let mut pcsrf = hidden_field(
        &c.get(&url).send().await.unwrap().text().await.unwrap(),
        "csrf",
    );
    let mut last = 0;
    for _ in 0..5 {
        let res = c
            .post(&url)
            .form(&[("csrf", pcsrf.as_str()), ("passcode", "wrong")])
            .send()
            .await
            .unwrap();
        last = res.status().as_u16();
        let body = res.text().await.unwrap();
        if last == 401 {
            pcsrf = hidden_field(&body, "csrf");
        }
    }
    assert_eq!(last, 429);
    let res = c
        .post(&url)
        .form(&[("csrf", pcsrf.as_str()), ("passcode", "right")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429, "locked even with the right passcode");
}

crate::both_backends!(share_links_flow, crate::shares::share_flow);
