//! Every route of the server's route table (`server::access::routes::
//! routes()`) × every kind of principal (each role of organisation A, an
//! admin of organisation B, gateway tokens of A and B, share link sessions
//! with and without download, a revoked link, anonymous) × every kind of
//! study (A's own, B's, granted, expired grant, shared, revoked link,
//! unknown), asserting the exact status, and for every refused write that
//! nothing in the index changed.

use crate::dicom::{ct_slice, Options};
use crate::helpers::{
    hidden_field, put_object, registration, spawn_app_with, TestApp, Uids, GATEWAY_TOKEN,
};
use chrono::{Duration, Utc};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use server::access::routes::{routes, Need, RouteSpec};
use server::access::{Action, Role};
use server::config::{GatewaySettings, Secret};
use server::db::entities::{instances, studies, study_grants, users};
use server::services::dicomweb::multipart;
use server::services::grants::{self, GrantPermission, Grantee};
use server::services::shares::{self, NewShare};
use server::services::{auth, orgs};

const FOREIGN_GATEWAY: &str = "test-gateway-token-other-hospital";
const OTHER_ORG: &str = "other-hospital";
const SINK_ORG: &str = "grant-sink";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Own,
    Foreign,
    Granted,
    ExpiredGrant,
    Shared,
    RevokedLink,
    Unknown,
}

const KINDS: [Kind; 7] = [
    Kind::Own,
    Kind::Foreign,
    Kind::Granted,
    Kind::ExpiredGrant,
    Kind::Shared,
    Kind::RevokedLink,
    Kind::Unknown,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    /// A user of organisation A (`default`).
    User(Role),
    /// An admin of organisation B (which owns every non-own study).
    ForeignAdmin,
    Gateway,
    ForeignGateway,
    ShareLink,
    PixelsOnlyLink,
    RevokedShareLink,
}

impl Who {
    fn bearer(self) -> Option<&'static str> {
        match self {
            Who::Gateway => Some(GATEWAY_TOKEN),
            Who::ForeignGateway => Some(FOREIGN_GATEWAY),
            _ => None,
        }
    }
    /// Writes for organisation A (true), B (false), or no writer (None).
    fn writer_org_is_own(self) -> Option<bool> {
        match self {
            Who::Gateway | Who::User(Role::Admin) => Some(true),
            Who::ForeignGateway | Who::ForeignAdmin => Some(false),
            _ => None,
        }
    }
}

fn uids(kind: Kind) -> Uids {
    let n = KINDS.iter().position(|k| *k == kind).unwrap() + 1;
    Uids::new(
        &format!("2.25.70{n}"),
        &format!("2.25.70{n}1"),
        &format!("2.25.70{n}2"),
    )
}

/// The study policy, restated independently of the server.
fn study_allowed(who: Who, kind: Kind, action: Action) -> bool {
    let read = matches!(
        action,
        Action::ViewMetadata | Action::ViewPixels | Action::Download
    );
    match who {
        Who::Anonymous | Who::RevokedShareLink | Who::Gateway | Who::ForeignGateway => false,
        Who::ShareLink => kind == Kind::Shared && read,
        Who::PixelsOnlyLink => {
            kind == Kind::Shared && matches!(action, Action::ViewMetadata | Action::ViewPixels)
        }
        // Every non-own study belongs to organisation B.
        Who::ForeignAdmin => !matches!(kind, Kind::Own | Kind::Unknown),
        Who::User(role) => match kind {
            Kind::Own => match role {
                Role::Admin | Role::Radiologist => true,
                Role::Technologist => read,
                Role::Referring | Role::Auditor | Role::PlatformAuditor => false,
            },
            // Org-wide grant of `download`.
            Kind::Granted => !matches!(role, Role::Auditor | Role::PlatformAuditor) && read,
            _ => false,
        },
    }
}

fn no_redirect_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signed-in client and its CSRF token.
async fn sign_in(app: &TestApp, username: &str, password: &str) -> (reqwest::Client, String) {
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
            ("username", username),
            ("password", password),
            ("csrf", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "login of {username}");
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

async fn study_id(app: &TestApp, kind: Kind) -> Option<i64> {
    studies::Entity::find()
        .filter(studies::Column::StudyUid.eq(uids(kind).study.as_str()))
        .one(&app.db)
        .await
        .unwrap()
        .map(|s| s.id)
}

async fn open_link(app: &TestApp, token: &str) -> reqwest::Client {
    let c = no_redirect_client();
    let res = c.get(app.url(&format!("/s/{token}"))).send().await.unwrap();
    assert_eq!(res.status(), 303);
    c
}

fn link(pixels_only: bool) -> NewShare {
    NewShare {
        expires_in: Duration::hours(1),
        passcode: None,
        max_uses: None,
        pixels_only,
    }
}

/// Everything a write could change: studies (owner, counts), instances
/// (digest, metadata), grants, users.
async fn fingerprint(app: &TestApp) -> String {
    let st: Vec<_> = studies::Entity::find()
        .order_by_asc(studies::Column::Id)
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.study_uid, s.org_id, s.num_series, s.num_instances))
        .collect();
    let inst: Vec<_> = instances::Entity::find()
        .order_by_asc(instances::Column::Id)
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.sop_instance_uid, i.sha256, i.metadata))
        .collect();
    let grants = study_grants::Entity::find().count(&app.db).await.unwrap();
    let users = users::Entity::find().count(&app.db).await.unwrap();
    format!("{st:?} {inst:?} {grants} {users}")
}

fn stow_part(u: &Uids) -> Vec<u8> {
    let ct = ct_slice(&Options::ct(
        u.study.as_str(),
        u.series.as_str(),
        u.sop.as_str(),
    ));
    let mut obj = dicom_object::OpenFileOptions::new()
        .from_reader(&ct.bytes[..])
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

/// The status `who` must get from a write or organisation route on `kind`
/// (`None`: not asserted, e.g. public routes).
fn expected_other(route: &RouteSpec, who: Who, kind: Kind) -> Option<u16> {
    let session = matches!(who, Who::User(_) | Who::ForeignAdmin);
    match route.need {
        Need::Public => None,
        // Pages redirect to the sign-in page, APIs answer 401.
        Need::Session if session => Some(200),
        Need::Session if route.path.starts_with("/dicomweb") => Some(401),
        Need::Session => Some(303),
        Need::Admin => Some(match who {
            Who::User(Role::Admin) if route.path == "/admin" => 200,
            Who::User(Role::Admin) => match route.path {
                "/admin/users" => 201,
                "/admin/grants" if kind == Kind::Own => 201,
                "/admin/grants/{id}/revoke" if kind == Kind::Own => 200,
                _ => 404,
            },
            Who::ForeignAdmin if route.path == "/admin" => 200,
            Who::ForeignAdmin => match route.path {
                "/admin/users" => 201,
                "/admin/grants" if !matches!(kind, Kind::Own | Kind::Unknown) => 201,
                "/admin/grants/{id}/revoke" if !matches!(kind, Kind::Own | Kind::Unknown) => 200,
                _ => 404,
            },
            _ if session => 404,
            _ => 401,
        }),
        Need::Auditor => Some(match who {
            Who::User(Role::Auditor | Role::PlatformAuditor) => 200,
            _ if session => 404,
            _ => 401,
        }),
        Need::Gateway => Some(match who.bearer() {
            None => 401,
            // Unknown study: created (201); another organisation's: 404.
            Some(_) => match (kind, who.writer_org_is_own()) {
                (Kind::Unknown, _) => 201,
                (Kind::Own, Some(true)) => 201,
                (Kind::Own, _) => 404,
                (_, Some(false)) => 201,
                _ => 404,
            },
        }),
        Need::GatewayOrAdmin => Some(match who.writer_org_is_own() {
            Some(own) => match (kind, own) {
                (Kind::Unknown, _) | (Kind::Own, true) => 200,
                (Kind::Own, false) => 409,
                (_, false) => 200,
                _ => 409,
            },
            None if session => 403,
            None => 401,
        }),
        Need::Study(_) => unreachable!(),
    }
}

async fn matrix(app: &TestApp) {
    let own_org = orgs::ensure(&app.db, "default").await.unwrap();
    let other_org = orgs::ensure(&app.db, OTHER_ORG).await.unwrap();
    // Grants made by the matrix go to an organisation without users, so
    // they change no later cell.
    let sink_org = orgs::ensure(&app.db, SINK_ORG).await.unwrap();
    // One renderable study per kind (except unknown); every one but Own
    // registered by organisation B's gateway.
    for kind in KINDS {
        if kind == Kind::Unknown {
            continue;
        }
        let u = uids(kind);
        let ct = ct_slice(&Options::ct(
            u.study.as_str(),
            u.series.as_str(),
            u.sop.as_str(),
        ));
        put_object(app, &u, &ct.bytes).await;
        let token = if kind == Kind::Own {
            GATEWAY_TOKEN
        } else {
            FOREIGN_GATEWAY
        };
        let res = app
            .api
            .post(app.url("/api/v1/ingest/instances"))
            .bearer_auth(token)
            .json(&registration(&u, ct.metadata.clone(), &ct.bytes))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    let granted = study_id(app, Kind::Granted).await.unwrap();
    grants::create(
        &app.db,
        granted,
        Grantee::Org(own_org),
        GrantPermission::Download,
        Some(Utc::now() + Duration::hours(1)),
        None,
    )
    .await
    .unwrap();
    let expired = study_id(app, Kind::ExpiredGrant).await.unwrap();
    grants::create(
        &app.db,
        expired,
        Grantee::Org(own_org),
        GrantPermission::Download,
        Some(Utc::now() - Duration::minutes(1)),
        None,
    )
    .await
    .unwrap();
    let shared = study_id(app, Kind::Shared).await.unwrap();
    let live = shares::create(&app.db, shared, None, link(false))
        .await
        .unwrap();
    let share_client = open_link(app, &live.token).await;
    let pixels = shares::create(&app.db, shared, None, link(true))
        .await
        .unwrap();
    let pixels_client = open_link(app, &pixels.token).await;
    let revoked_study = study_id(app, Kind::RevokedLink).await.unwrap();
    let dead = shares::create(&app.db, revoked_study, None, link(false))
        .await
        .unwrap();
    let revoked_client = open_link(app, &dead.token).await;
    assert!(shares::revoke(&app.db, revoked_study, dead.id)
        .await
        .unwrap());

    // Principals.
    let mut clients: Vec<(Who, reqwest::Client, String)> = vec![
        (Who::Anonymous, no_redirect_client(), String::new()),
        (Who::Gateway, no_redirect_client(), String::new()),
        (Who::ForeignGateway, no_redirect_client(), String::new()),
        (Who::ShareLink, share_client, String::new()),
        (Who::PixelsOnlyLink, pixels_client, String::new()),
        (Who::RevokedShareLink, revoked_client, String::new()),
    ];
    for role in Role::ALL {
        let name = format!("u-{}", role.as_str());
        auth::upsert_user_in_org(&app.db, &name, "matrix password", role.as_str(), "default")
            .await
            .unwrap();
        let (c, csrf) = sign_in(app, &name, "matrix password").await;
        clients.push((Who::User(role), c, csrf));
    }
    auth::upsert_user_in_org(&app.db, "b-admin", "matrix password", "admin", OTHER_ORG)
        .await
        .unwrap();
    let (c, csrf) = sign_in(app, "b-admin", "matrix password").await;
    clients.push((Who::ForeignAdmin, c, csrf));

    let all = routes();
    assert!(all.len() >= 40);
    let mut cells = 0usize;
    let mut serial = 0u32;
    let mut failures = Vec::new();
    for route in all {
        // Signing out would end the session the next rows need.
        if route.path.starts_with("/logout") || route.path == "/account/totp" && route.is_write() {
            continue;
        }
        let study_scoped = route.path.contains("{study}")
            || matches!(
                route.need,
                Need::Gateway | Need::GatewayOrAdmin | Need::Admin
            ) && route.path != "/admin";
        let kinds: &[Kind] = if study_scoped { &KINDS } else { &[Kind::Own] };
        for (who, client, csrf) in &clients {
            for &kind in kinds {
                serial += 1;
                let u = uids(kind);
                let mut path = route
                    .path
                    .replace("{study}", u.study.as_str())
                    .replace("{series}", u.series.as_str())
                    .replace("{sop}", u.sop.as_str())
                    .replace("{frames}", "1")
                    .replace("{frame}", "1")
                    .replace("{tag}", "7FE00010")
                    .replace("{level}", "0")
                    .replace("{tile}", "0_0.jpg")
                    .replace("{name}", "mado.css")
                    .replace("{token}", "x")
                    .replace("{tail:.*}", "index.html");
                if path.contains("{id}") {
                    // A fresh live link, or grant, of that study to revoke.
                    let id = match study_id(app, kind).await {
                        Some(sid) if route.path.starts_with("/studies") => {
                            shares::create(&app.db, sid, None, link(false))
                                .await
                                .unwrap()
                                .id
                        }
                        Some(sid) => grants::create(
                            &app.db,
                            sid,
                            Grantee::Org(sink_org),
                            GrantPermission::View,
                            None,
                            None,
                        )
                        .await
                        .unwrap(),
                        None => 999_999,
                    };
                    path = path.replace("{id}", &id.to_string());
                }
                let before = if route.is_write() {
                    Some(fingerprint(app).await)
                } else {
                    None
                };
                let mut req = match route.method {
                    "GET" => client.get(app.url(&path)),
                    "POST" => client.post(app.url(&path)),
                    m => panic!("unexpected method {m}"),
                };
                if let Some(t) = who.bearer() {
                    req = req.bearer_auth(t);
                }
                // A new instance (new series) in the study of `kind` (for
                // an unknown study, a study nobody registered yet).
                let fresh_study = if kind == Kind::Unknown {
                    format!("2.25.82{serial}")
                } else {
                    u.study.to_string()
                };
                let fresh = Uids::new(
                    &fresh_study,
                    &format!("2.25.80{serial}"),
                    &format!("2.25.81{serial}"),
                );
                req = match route.need {
                    Need::Gateway => {
                        // A real object, so that later reads of the study
                        // (retrieve, rendered) find every instance.
                        let ct = ct_slice(&Options::ct(
                            fresh.study.as_str(),
                            fresh.series.as_str(),
                            fresh.sop.as_str(),
                        ));
                        put_object(app, &fresh, &ct.bytes).await;
                        req.json(&registration(&fresh, ct.metadata.clone(), &ct.bytes))
                    }
                    Need::GatewayOrAdmin => {
                        let b = multipart::boundary();
                        req.header(
                            "content-type",
                            multipart::content_type(&b, "application/dicom", None),
                        )
                        .body(multipart::encode(
                            &b,
                            &[("application/dicom".into(), stow_part(&fresh).into())],
                        ))
                    }
                    _ if route.path == "/admin/users" => req.form(&[
                        ("csrf", csrf.as_str()),
                        ("username", &format!("new-{serial}")),
                        ("password", "a long enough password"),
                        ("role", "referring"),
                    ]),
                    _ if route.path == "/admin/grants" => req.form(&[
                        ("csrf", csrf.as_str()),
                        ("study", u.study.as_str()),
                        ("org", SINK_ORG),
                        ("permission", "view"),
                        ("expires_hours", "24"),
                    ]),
                    _ if route.is_write() => req.form(&[("csrf", csrf.as_str())]),
                    _ => req,
                };
                let res = req.send().await.unwrap();
                let got = res.status().as_u16();
                cells += 1;
                let want = match route.need {
                    Need::Study(action) => {
                        let allowed = study_allowed(*who, kind, action);
                        Some(
                            if matches!(
                                who,
                                Who::Anonymous
                                    | Who::RevokedShareLink
                                    | Who::Gateway
                                    | Who::ForeignGateway
                            ) {
                                401
                            } else if !allowed {
                                404
                            } else if route.is_write() && !route.path.contains("{id}") {
                                201
                            } else {
                                200
                            },
                        )
                    }
                    _ => expected_other(route, *who, kind),
                };
                let ctx = format!("{} {} as {who:?} on {kind:?}", route.method, route.path);
                match want {
                    Some(want) if got != want => {
                        failures.push(format!("{ctx}: want {want}, got {got}"));
                    }
                    None if got >= 500 => failures.push(format!("{ctx}: got {got}")),
                    _ => {}
                }
                // A refused write changed nothing.
                if let Some(before) = before {
                    let refused = !(200..300).contains(&got);
                    if refused && before != fingerprint(app).await {
                        failures.push(format!("{ctx}: refused ({got}) but the index changed"));
                    }
                }
            }
        }
    }
    println!(
        "access matrix: {} routes x {} principals, {cells} cells, {} failures",
        all.len(),
        clients.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Every study decision was audited, and the chain verifies.
    let report = server::services::audit::verify(&app.db, b"mado-demo-audit-key-change-me")
        .await
        .unwrap();
    assert_eq!(report.problem, None);
    let _ = other_org;
}

async fn spawn(backend: crate::helpers::Backend) -> Option<TestApp> {
    spawn_app_with(backend, |s| {
        s.ingest.gateways.push(GatewaySettings {
            name: "other-site".into(),
            org: OTHER_ORG.into(),
            token: Secret::new(FOREIGN_GATEWAY),
        });
    })
    .await
}

mod all_routes {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        if let Some(app) = super::spawn(crate::helpers::Backend::Sqlite).await {
            super::matrix(&app).await;
            app.cleanup().await;
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if let Some(app) = super::spawn(crate::helpers::Backend::Postgres).await {
            super::matrix(&app).await;
            app.cleanup().await;
        }
    }
}
