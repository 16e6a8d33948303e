use crate::helpers::{registration, simple_metadata, TestApp, Uids, GATEWAY_TOKEN};
use sea_orm::EntityTrait;
use server::db::entities::{series, studies};

async fn idempotent_and_guarded(app: &TestApp) {
    let uids = Uids::new("2.25.100", "2.25.101", "2.25.102");
    let body = registration(
        &uids,
        simple_metadata(&uids, "CT", "P-1"),
        b"fake object bytes",
    );

    let res = app.register(&body).await;
    assert_eq!(res.status(), 201);
    let json: serde_json::Value = res.json().await.unwrap();
    assert_eq!(json, serde_json::json!({"created": true}));

    let res = app.register(&body).await;
    assert_eq!(res.status(), 200);
    let json: serde_json::Value = res.json().await.unwrap();
    assert_eq!(json, serde_json::json!({"created": false}));

    let all = studies::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].num_instances, 1);
    assert_eq!(all[0].num_series, 1);
    assert_eq!(all[0].modalities_in_study, "CT");
    assert_eq!(all[0].study_date, "20240105");

    // The same SOP Instance UID re-sent with different bytes (a corrected
    // instance): the index follows the new object, counts are unchanged.
    let corrected = registration(
        &uids,
        simple_metadata(&uids, "CT", "P-1"),
        b"corrected object bytes",
    );
    assert_ne!(corrected["sha256"], body["sha256"]);
    let res = app.register(&corrected).await;
    assert_eq!(res.status(), 200);
    let row = server::db::entities::instances::Entity::find()
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(serde_json::json!(row.sha256), corrected["sha256"]);
    assert_eq!(serde_json::json!(row.size), corrected["size"]);
    let all = studies::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(all[0].num_instances, 1);

    // Bad or missing token: 401 problem+json, whatever the body.
    for auth in [Some("wrong-token-wrong-token"), None] {
        let mut req = app
            .api
            .post(app.url("/api/v1/ingest/instances"))
            .body("not json");
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        let res = req
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let p: serde_json::Value = res.json().await.unwrap();
        assert!(p["request_id"].is_string());
    }

    // Malformed bodies: 400 problem+json.
    let res = app
        .api
        .post(app.url("/api/v1/ingest/instances"))
        .bearer_auth(GATEWAY_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.headers()["content-type"], "application/problem+json");

    let mut wrong_key = body.clone();
    wrong_key["object_key"] = "studies/2.25.1/series/2.25.2/instances/2.25.3.dcm".into();
    assert_eq!(app.register(&wrong_key).await.status(), 400);

    let mut bad_uid = body.clone();
    bad_uid["study_uid"] = "../etc".into();
    assert_eq!(app.register(&bad_uid).await.status(), 400);

    let mut bad_meta = body.clone();
    bad_meta["metadata"] = serde_json::json!({"00100010": {"Value": ["no vr"]}});
    assert_eq!(app.register(&bad_meta).await.status(), 400);

    // A series UID cannot move to another study.
    let other = Uids::new("2.25.200", "2.25.101", "2.25.202");
    let res = app
        .register(&registration(
            &other,
            simple_metadata(&other, "CT", "P-1"),
            b"x",
        ))
        .await;
    assert_eq!(res.status(), 409);
}

crate::both_backends!(idempotent, crate::ingest::idempotent_and_guarded);

/// Many registrations of one study at once (two series, and the same
/// instance several times) must all succeed and leave consistent counts.
async fn concurrent_registrations(app: &TestApp) {
    let mut bodies = Vec::new();
    for i in 0..16 {
        let (series, modality) = if i % 2 == 0 {
            ("2.25.301", "CT")
        } else {
            ("2.25.302", "MR")
        };
        let uids = Uids::new("2.25.300", series, &format!("2.25.400{i}"));
        bodies.push(registration(
            &uids,
            simple_metadata(&uids, modality, "P-CONC"),
            b"bytes",
        ));
    }
    // Repeat the first instance a few times as well.
    for _ in 0..4 {
        bodies.push(bodies[0].clone());
    }
    let futures = bodies.iter().map(|b| app.register(b));
    let statuses: Vec<u16> = futures::future::join_all(futures)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 201),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        16,
        "{statuses:?}"
    );

    let study = studies::Entity::find().one(&app.db).await.unwrap().unwrap();
    assert_eq!(study.num_instances, 16);
    assert_eq!(study.num_series, 2);
    assert_eq!(study.modalities_in_study, "CT\\MR");
    let all_series = series::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(all_series.len(), 2);
    assert!(all_series.iter().all(|s| s.num_instances == 8));
}

crate::both_backends!(concurrent, crate::ingest::concurrent_registrations);
