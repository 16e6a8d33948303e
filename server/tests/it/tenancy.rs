//! Isolation between organisations: writes (ingest, STOW) into another
//! organisation's study, patients per organisation, share links never
//! carrying more than their creator holds, the audit page scoped to the
//! auditor's organisation, and the admin's grant form.
//!
//! Organisation A is `default` (gateway token [`GATEWAY_TOKEN`]);
//! organisation B is `hospital-b` (gateway `site-b`, [`GATEWAY_B`]).

use crate::dicom::{ct_slice, Options};
use crate::helpers::{
    hidden_field, put_object, registration, simple_metadata, spawn_app_with, Backend, TestApp,
    Uids, GATEWAY_TOKEN,
};
use chrono::Utc;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use mado_store::ObjectStore;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{json, Value};
use server::config::{GatewaySettings, Secret};
use server::db::entities::{audit_events, instances, patients, series, share_links, studies};
use server::services::dicomweb::multipart;
use server::services::grants::{self, GrantPermission, Grantee};
use server::services::{auth, orgs};

pub const GATEWAY_B: &str = "test-gateway-token-of-hospital-b";
const ORG_B: &str = "hospital-b";
const PASSWORD: &str = "tenancy password 1";

/// An app with a second organisation's gateway.
pub async fn spawn_two_orgs(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |s| {
        s.ingest.gateways.push(GatewaySettings {
            name: "site-b".into(),
            org: ORG_B.into(),
            token: Secret::new(GATEWAY_B),
        });
    })
    .await
}

macro_rules! two_orgs {
    ($name:ident, $body:path) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(app) = super::spawn_two_orgs($crate::helpers::Backend::Sqlite).await {
                    $body(&app).await;
                    app.cleanup().await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) = super::spawn_two_orgs($crate::helpers::Backend::Postgres).await {
                    $body(&app).await;
                    app.cleanup().await;
                }
            }
        }
    };
}

async fn register_as(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.api
        .post(app.url("/api/v1/ingest/instances"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn metadata(uids: &Uids, patient_id: &str, name: &str) -> Value {
    let mut m = simple_metadata(uids, "CT", patient_id);
    m["00100010"] = json!({"vr": "PN", "Value": [{"Alphabetic": name}]});
    m
}

fn no_redirect_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A user of `org` with `role`, signed in: client and CSRF token.
async fn user(app: &TestApp, name: &str, role: &str, org: &str) -> (reqwest::Client, String) {
    auth::upsert_user_in_org(&app.db, name, PASSWORD, role, org)
        .await
        .unwrap();
    let c = no_redirect_client();
    let page = c
        .get(app.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden_field(&page, "csrf");
    let res = c
        .post(app.url("/login"))
        .form(&[
            ("username", name),
            ("password", PASSWORD),
            ("csrf", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "login of {name}");
    let page = c
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    (c, hidden_field(&page, "csrf"))
}

async fn study_row(app: &TestApp, uid: &str) -> Option<studies::Model> {
    studies::Entity::find()
        .filter(studies::Column::StudyUid.eq(uid))
        .one(&app.db)
        .await
        .unwrap()
}

async fn denied_rows(app: &TestApp, action: &str) -> usize {
    audit_events::Entity::find()
        .filter(audit_events::Column::Action.eq(action))
        .filter(audit_events::Column::Outcome.eq("denied"))
        .count(&app.db)
        .await
        .unwrap() as usize
}

fn with_identity_removed(bytes: &[u8]) -> Vec<u8> {
    let mut obj = dicom_object::OpenFileOptions::new()
        .from_reader(bytes)
        .unwrap();
    obj.put(DataElement::new(
        tags::PATIENT_IDENTITY_REMOVED,
        VR::CS,
        PrimitiveValue::from("YES"),
    ));
    let mut out = Vec::new();
    obj.write_all(&mut out).unwrap();
    out
}

async fn stow(
    app: &TestApp,
    client: &reqwest::Client,
    bearer: Option<&str>,
    part: Vec<u8>,
) -> (u16, Value) {
    let b = multipart::boundary();
    let body = multipart::encode(&b, &[("application/dicom".into(), part.into())]);
    let mut req = client
        .post(app.url("/dicomweb/studies"))
        .header(
            "content-type",
            multipart::content_type(&b, "application/dicom", None),
        )
        .body(body);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

/// Defect 1 and 11: no write crosses organisations; every write records
/// its owner; refusals are audited and reveal nothing.
async fn cross_org_writes(app: &TestApp) {
    let a = Uids::new("2.25.9100", "2.25.9101", "2.25.9102");
    let first = registration(&a, metadata(&a, "PA-1", "ALPHA^ONE"), b"A's bytes");
    assert_eq!(register_as(app, GATEWAY_TOKEN, &first).await.status(), 201);
    let org_a = orgs::find(&app.db, "default").await.unwrap().unwrap();
    let study = study_row(app, "2.25.9100").await.unwrap();
    assert_eq!(study.org_id, Some(org_a));

    // B adds a series to A's study: 404 problem+json, nothing changes.
    let intruder = Uids::new("2.25.9100", "2.25.9111", "2.25.9112");
    let res = register_as(
        app,
        GATEWAY_B,
        &registration(&intruder, metadata(&intruder, "PB-1", "BRAVO^ONE"), b"B"),
    )
    .await;
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let p: Value = res.json().await.unwrap();
    let unknown_answer = p["detail"].clone();
    // B overwrites A's instance (same UIDs, new bytes, new name): 404.
    let overwrite = registration(&a, metadata(&a, "PA-1", "MALLORY^EVE"), b"B's bytes");
    let res = register_as(app, GATEWAY_B, &overwrite).await;
    assert_eq!(res.status(), 404);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["detail"], unknown_answer);
    // B puts A's series into a study of its own: 404 as well.
    let moved = Uids::new("2.25.9120", "2.25.9101", "2.25.9122");
    assert_eq!(
        register_as(
            app,
            GATEWAY_B,
            &registration(&moved, metadata(&moved, "PB-1", "B"), b"x")
        )
        .await
        .status(),
        404
    );
    // The same answer as a study B cannot reach at all: a GET of an
    // unknown study.
    let study = study_row(app, "2.25.9100").await.unwrap();
    assert_eq!((study.num_instances, study.num_series), (1, 1));
    let inst = instances::Entity::find()
        .filter(instances::Column::SopInstanceUid.eq("2.25.9102"))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(serde_json::json!(inst.sha256), first["sha256"]);
    assert!(inst.metadata.contains("ALPHA^ONE"), "{}", inst.metadata);
    assert!(study_row(app, "2.25.9120").await.is_none());
    assert_eq!(
        series::Entity::find()
            .filter(series::Column::SeriesUid.eq("2.25.9111"))
            .count(&app.db)
            .await
            .unwrap(),
        0
    );
    assert_eq!(denied_rows(app, "ingest.register").await, 3);
    let ok = audit_events::Entity::find()
        .filter(audit_events::Column::Action.eq("ingest.register"))
        .filter(audit_events::Column::Outcome.eq("success"))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].actor_kind, "gateway");
    assert_eq!(ok[0].org_id, Some(org_a));

    // The owner may re-send a corrected instance.
    put_object(app, &a, b"A's new bytes").await;
    let corrected = registration(&a, metadata(&a, "PA-1", "ALPHA^ONE"), b"A's new bytes");
    assert_eq!(
        register_as(app, GATEWAY_TOKEN, &corrected).await.status(),
        200
    );

    // STOW-RS.
    let (admin_b, _) = user(app, "b-admin", "admin", ORG_B).await;
    let (admin_a, _) = user(app, "a-admin", "admin", "default").await;
    let org_b = orgs::find(&app.db, ORG_B).await.unwrap().unwrap();
    // B's admin and B's gateway: a new series, and an overwrite, of A's study.
    let a2 = Uids::new("2.25.9100", "2.25.9131", "2.25.9132");
    for (client, bearer) in [(&admin_b, None), (&app.api, Some(GATEWAY_B))] {
        for u in [&a2, &a] {
            let ct = ct_slice(&Options::ct(
                u.study.as_str(),
                u.series.as_str(),
                u.sop.as_str(),
            ));
            let (status, v) = stow(app, client, bearer, with_identity_removed(&ct.bytes)).await;
            assert_eq!(status, 409, "{v}");
            assert_eq!(v["00081198"]["Value"][0]["00081197"]["Value"][0], 0x0110);
            assert!(v.get("00081199").is_none());
        }
    }
    assert_eq!(denied_rows(app, "stow.store").await, 4);
    // A's object was not overwritten.
    let stored = app.store.get(a.key().as_str()).await.unwrap();
    assert_eq!(&stored[..], b"A's new bytes".as_slice());
    let study = study_row(app, "2.25.9100").await.unwrap();
    assert_eq!((study.num_instances, study.num_series), (1, 1));

    // Defect 11: every way in records the owner.
    let cases = [
        (&admin_a, None, "2.25.9140", org_a),
        (&admin_b, None, "2.25.9150", org_b),
        (&app.api, Some(GATEWAY_B), "2.25.9160", org_b),
        (&app.api, Some(GATEWAY_TOKEN), "2.25.9170", org_a),
    ];
    for (client, bearer, st, org) in cases {
        let u = Uids::new(st, &format!("{st}1"), &format!("{st}2"));
        let ct = ct_slice(&Options::ct(
            u.study.as_str(),
            u.series.as_str(),
            u.sop.as_str(),
        ));
        let (status, v) = stow(app, client, bearer, with_identity_removed(&ct.bytes)).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(study_row(app, st).await.unwrap().org_id, Some(org), "{st}");
    }
    let orphans = studies::Entity::find()
        .filter(studies::Column::OrgId.is_null())
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(orphans, 0);
}

two_orgs!(cross_org_writes, crate::tenancy::cross_org_writes);

/// Two organisations register the same new study at the same moment:
/// exactly one owns it, the other is refused.
async fn concurrent_first_registration(app: &TestApp) {
    let org_a = orgs::find(&app.db, "default").await.unwrap();
    for round in 0..6 {
        let st = format!("2.25.92{round}0");
        let ua = Uids::new(&st, &format!("{st}1"), &format!("{st}2"));
        let ub = Uids::new(&st, &format!("{st}3"), &format!("{st}4"));
        let body_a = registration(&ua, metadata(&ua, "P", "A"), b"a");
        let body_b = registration(&ub, metadata(&ub, "P", "B"), b"b");
        let (ra, rb) = tokio::join!(
            register_as(app, GATEWAY_TOKEN, &body_a),
            register_as(app, GATEWAY_B, &body_b)
        );
        let (sa, sb) = (ra.status().as_u16(), rb.status().as_u16());
        assert!(
            (sa, sb) == (201, 404) || (sa, sb) == (404, 201),
            "round {round}: {sa} {sb}"
        );
        let row = study_row(app, &st).await.unwrap();
        let org_b = orgs::find(&app.db, ORG_B).await.unwrap();
        assert_eq!(row.org_id, if sa == 201 { org_a } else { org_b });
        assert_eq!((row.num_series, row.num_instances), (1, 1));
    }
}

two_orgs!(
    concurrent_owner,
    crate::tenancy::concurrent_first_registration
);

/// Defect 2: the same Patient ID in two organisations is two patients.
async fn patients_per_org(app: &TestApp) {
    let a = Uids::new("2.25.9300", "2.25.9301", "2.25.9302");
    let b = Uids::new("2.25.9310", "2.25.9311", "2.25.9312");
    assert_eq!(
        register_as(
            app,
            GATEWAY_TOKEN,
            &registration(&a, metadata(&a, "SAME-ID", "ALPHA^SECRET"), b"a")
        )
        .await
        .status(),
        201
    );
    assert_eq!(
        register_as(
            app,
            GATEWAY_B,
            &registration(&b, metadata(&b, "SAME-ID", "BRAVO^OWN"), b"b")
        )
        .await
        .status(),
        201
    );
    let rows = patients::Entity::find()
        .filter(patients::Column::PatientId.eq("SAME-ID"))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let (c, _) = user(app, "b-rad", "radiologist", ORG_B).await;
    let res = c
        .get(app.url("/dicomweb/studies?PatientID=SAME-ID"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(body.contains("BRAVO^OWN"), "{body}");
    assert!(!body.contains("ALPHA"), "{body}");
    assert!(!body.contains("2.25.9300"), "{body}");
    let page = c
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("BRAVO"), "worklist");
    assert!(!page.contains("ALPHA"), "worklist leaks A's patient name");
}

two_orgs!(patients_per_org, crate::tenancy::patients_per_org);

/// Defect 3: a link made by a holder of `share` without `download` is
/// pixels-only, whatever was asked.
async fn share_grant_cannot_download(app: &TestApp) {
    let u = Uids::new("2.25.9400", "2.25.9401", "2.25.9402");
    let ct = ct_slice(&Options::ct(
        u.study.as_str(),
        u.series.as_str(),
        u.sop.as_str(),
    ));
    put_object(app, &u, &ct.bytes).await;
    assert_eq!(
        register_as(
            app,
            GATEWAY_TOKEN,
            &registration(&u, ct.metadata.clone(), &ct.bytes)
        )
        .await
        .status(),
        201
    );
    let study = study_row(app, "2.25.9400").await.unwrap();
    let (c, csrf) = user(app, "b-referrer", "referring", ORG_B).await;
    let me = server::db::entities::users::Entity::find()
        .filter(server::db::entities::users::Column::Username.eq("b-referrer"))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    grants::create(
        &app.db,
        study.id,
        Grantee::User(me.id),
        GrantPermission::Share,
        None,
        None,
    )
    .await
    .unwrap();
    let inst = "/dicomweb/studies/2.25.9400/series/2.25.9401/instances/2.25.9402";
    // The holder itself cannot download.
    assert_eq!(c.get(app.url(inst)).send().await.unwrap().status(), 404);
    let res = c
        .post(app.url("/studies/2.25.9400/shares"))
        .form(&[("csrf", csrf.as_str()), ("pixels_only", "false")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["pixels_only"], true);
    let link = share_links::Entity::find_by_id(v["id"].as_i64().unwrap())
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(link.pixels_only);
    let s = no_redirect_client();
    let res = s
        .get(app.url(v["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    for path in [
        inst.to_owned(),
        format!("{inst}/frames/1"),
        format!("{inst}/bulkdata/7FE00010"),
        "/dicomweb/studies/2.25.9400".to_owned(),
    ] {
        assert_eq!(
            s.get(app.url(&path)).send().await.unwrap().status(),
            404,
            "{path}"
        );
    }
    assert_eq!(
        s.get(app.url(&format!("{inst}/rendered")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A radiologist of the owning organisation may download: its link
    // carries download unless asked otherwise.
    let (r, rcsrf) = user(app, "a-rad", "radiologist", "default").await;
    let res = r
        .post(app.url("/studies/2.25.9400/shares"))
        .form(&[("csrf", rcsrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["pixels_only"], false);
}

two_orgs!(share_grant, crate::tenancy::share_grant_cannot_download);

/// Defect 4: an auditor reads its own organisation's trail only; the
/// platform auditor (a separate role) reads all of it.
async fn audit_scoped(app: &TestApp) {
    let a = Uids::new("2.25.9500", "2.25.9501", "2.25.9502");
    let b = Uids::new("2.25.9510", "2.25.9511", "2.25.9512");
    register_as(
        app,
        GATEWAY_TOKEN,
        &registration(&a, metadata(&a, "PA", "A"), b"a"),
    )
    .await;
    register_as(
        app,
        GATEWAY_B,
        &registration(&b, metadata(&b, "PB", "B"), b"b"),
    )
    .await;
    let (rb, _) = user(app, "bravo-rad", "radiologist", ORG_B).await;
    rb.get(app.url("/studies/2.25.9510")).send().await.unwrap();
    let (ra, _) = user(app, "alpha-rad", "radiologist", "default").await;
    ra.get(app.url("/studies/2.25.9500")).send().await.unwrap();

    let (aud_a, _) = user(app, "alpha-auditor", "auditor", "default").await;
    let page = aud_a.get(app.url("/audit")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("alpha-rad"), "own organisation's rows");
    assert!(page.contains("2.25.9500"));
    assert!(!page.contains("bravo-rad"), "another organisation's user");
    assert!(!page.contains("2.25.9510"), "another organisation's study");
    assert!(!page.contains("site-b"), "another organisation's gateway");

    // platform_auditor: only the operator sets it; an admin cannot.
    let (admin_a, csrf) = user(app, "alpha-admin", "admin", "default").await;
    let res = admin_a
        .post(app.url("/admin/users"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", "sneaky"),
            ("password", "a long password 123"),
            ("role", "platform_auditor"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let (plat, _) = user(app, "platform", "platform_auditor", "default").await;
    let page = plat
        .get(app.url("/audit"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("bravo-rad") && page.contains("alpha-rad"));
    // It sees no study.
    assert_eq!(
        plat.get(app.url("/studies/2.25.9500"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // Other roles: 404, audited.
    assert_eq!(
        ra.get(app.url("/audit")).send().await.unwrap().status(),
        404
    );
    assert_eq!(denied_rows(app, "audit.view").await, 1);
}

two_orgs!(audit_scoped, crate::tenancy::audit_scoped);

/// Defect 9 and 8: bounded grant lifetimes, refused grants audited.
async fn admin_grants(app: &TestApp) {
    let a = Uids::new("2.25.9600", "2.25.9601", "2.25.9602");
    let b = Uids::new("2.25.9610", "2.25.9611", "2.25.9612");
    register_as(
        app,
        GATEWAY_TOKEN,
        &registration(&a, metadata(&a, "PA", "A"), b"a"),
    )
    .await;
    register_as(
        app,
        GATEWAY_B,
        &registration(&b, metadata(&b, "PB", "B"), b"b"),
    )
    .await;
    let (admin_a, csrf) = user(app, "grant-admin", "admin", "default").await;
    let grant = |study: &'static str, hours: &'static str| {
        let c = admin_a.clone();
        let csrf = csrf.clone();
        let url = app.url("/admin/grants");
        async move {
            c.post(url)
                .form(&[
                    ("csrf", csrf.as_str()),
                    ("study", study),
                    ("org", ORG_B),
                    ("permission", "view"),
                    ("expires_hours", hours),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    for hours in ["4294967295", "0", "87841"] {
        let res = grant("2.25.9600", hours).await;
        assert_eq!(res.status(), 400, "{hours}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    let res = grant("2.25.9600", "87840").await;
    assert_eq!(res.status(), 201);
    let before = Utc::now();
    let res = grant("2.25.9600", "24").await;
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let g = server::db::entities::study_grants::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let deadline = g.expires_at.unwrap();
    assert!(deadline > before + chrono::Duration::hours(23));
    // B's study: 404 like an unknown one, and audited.
    assert_eq!(grant("2.25.9610", "24").await.status(), 404);
    assert_eq!(grant("2.25.9999", "24").await.status(), 404);
    assert_eq!(denied_rows(app, "grant.create").await, 2);
    // A non-admin: 404, audited.
    let (rad, rcsrf) = user(app, "grant-rad", "radiologist", "default").await;
    let res = rad
        .post(app.url("/admin/grants"))
        .form(&[
            ("csrf", rcsrf.as_str()),
            ("study", "2.25.9600"),
            ("org", ORG_B),
            ("permission", "view"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(denied_rows(app, "admin.access").await, 1);
}

two_orgs!(admin_grants, crate::tenancy::admin_grants);
