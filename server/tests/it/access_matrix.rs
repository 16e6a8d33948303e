//! Every study-scoped route (from the server's own route table,
//! `server::access::study_routes()`) × every principal × every kind of
//! study, asserting the exact status.

use crate::dicom::{ct_slice, Options};
use crate::helpers::{hidden_field, put_object, registration, TestApp, Uids};
use chrono::{Duration, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use server::access::{study_routes, Action, Role};
use server::db::entities::studies;
use server::services::grants::{self, GrantPermission, Grantee};
use server::services::shares::{self, NewShare};
use server::services::{auth, orgs};

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
    User(Role),
    ShareLink,
    RevokedShareLink,
}

fn uids(kind: Kind) -> Uids {
    let n = KINDS.iter().position(|k| *k == kind).unwrap() + 1;
    Uids::new(
        &format!("2.25.70{n}"),
        &format!("2.25.70{n}1"),
        &format!("2.25.70{n}2"),
    )
}

/// The policy, restated independently of the server.
fn expected(who: Who, kind: Kind, action: Action) -> bool {
    match who {
        Who::Anonymous | Who::RevokedShareLink => false,
        Who::ShareLink => {
            kind == Kind::Shared
                && matches!(
                    action,
                    Action::ViewMetadata | Action::ViewPixels | Action::Download
                )
        }
        Who::User(role) => match kind {
            Kind::Own => match role {
                Role::Admin | Role::Radiologist => true,
                Role::Technologist => matches!(
                    action,
                    Action::ViewMetadata | Action::ViewPixels | Action::Download
                ),
                Role::Referring | Role::Auditor => false,
            },
            // Org-wide grant of `download`.
            Kind::Granted => {
                role != Role::Auditor
                    && matches!(
                        action,
                        Action::ViewMetadata | Action::ViewPixels | Action::Download
                    )
            }
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

fn link() -> NewShare {
    NewShare {
        expires_in: Duration::hours(1),
        passcode: None,
        max_uses: None,
        pixels_only: false,
    }
}

async fn matrix(app: &TestApp) {
    let own_org = orgs::ensure(&app.db, "default").await.unwrap();
    let other_org = orgs::ensure(&app.db, "other-hospital").await.unwrap();
    // One renderable study per kind (except unknown).
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
        assert_eq!(
            app.register(&registration(&u, ct.metadata.clone(), &ct.bytes))
                .await
                .status(),
            201
        );
        if kind != Kind::Own {
            studies::Entity::update_many()
                .col_expr(
                    studies::Column::OrgId,
                    sea_orm::sea_query::Expr::value(Some(other_org)),
                )
                .filter(studies::Column::StudyUid.eq(u.study.as_str()))
                .exec(&app.db)
                .await
                .unwrap();
        }
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
    let live = shares::create(&app.db, shared, None, link()).await.unwrap();
    let share_client = open_link(app, &live.token).await;
    let revoked_study = study_id(app, Kind::RevokedLink).await.unwrap();
    let dead = shares::create(&app.db, revoked_study, None, link())
        .await
        .unwrap();
    let revoked_client = open_link(app, &dead.token).await;
    assert!(shares::revoke(&app.db, revoked_study, dead.id)
        .await
        .unwrap());

    // Principals.
    let mut clients: Vec<(Who, reqwest::Client, String)> = vec![
        (Who::Anonymous, no_redirect_client(), String::new()),
        (Who::ShareLink, share_client, String::new()),
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

    let routes = study_routes();
    assert!(routes.len() >= 4);
    let mut cells = 0usize;
    let mut failures = Vec::new();
    for route in routes {
        for (who, client, csrf) in &clients {
            for kind in KINDS {
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
                    .replace("{tile}", "0_0.jpg");
                if path.contains("{id}") {
                    // A fresh live link of that study to revoke.
                    let id = match study_id(app, kind).await {
                        Some(sid) => shares::create(&app.db, sid, None, link()).await.unwrap().id,
                        None => 999_999,
                    };
                    path = path.replace("{id}", &id.to_string());
                }
                let res = match route.method {
                    "GET" => client.get(app.url(&path)).send().await.unwrap(),
                    "POST" => client
                        .post(app.url(&path))
                        .form(&[("csrf", csrf.as_str())])
                        .send()
                        .await
                        .unwrap(),
                    m => panic!("unexpected method {m}"),
                };
                let allowed = expected(*who, kind, route.action);
                let want: u16 = if matches!(who, Who::Anonymous | Who::RevokedShareLink) {
                    401
                } else if !allowed {
                    404
                } else if route.method == "POST" && !route.path.contains("{id}") {
                    201
                } else {
                    200
                };
                cells += 1;
                let got = res.status().as_u16();
                if got != want {
                    failures.push(format!(
                        "{} {} as {who:?} on {kind:?}: want {want}, got {got}",
                        route.method, route.path
                    ));
                }
            }
        }
    }
    println!(
        "access matrix: {} routes x {} principals x {} study kinds = {cells} cells, {} failures",
        routes.len(),
        clients.len(),
        KINDS.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Every decision was audited, and the chain verifies.
    let report = server::services::audit::verify(&app.db, b"mado-demo-audit-key-change-me")
        .await
        .unwrap();
    assert_eq!(report.problem, None);
    assert!(report.rows as usize >= cells, "{} rows", report.rows);
}

crate::both_backends!(access_matrix, crate::access_matrix::matrix);
