//! Administration (role `admin`; anybody else gets 404).
//!
//! ```text
//! GET  /admin                      HTML: users, organisations, grants; forms for the endpoints below
//! POST /admin/users                form: csrf, username, password, role → 201 JSON {id} (own organisation)
//! POST /admin/grants               form: csrf, study, user | org, permission, expires_hours → 201 JSON {id}
//! POST /admin/grants/{id}/revoke   form: csrf
//! ```
//! An admin manages grants on its own organisation's studies only; a
//! refused action (another organisation's study or grant, another role)
//! is a 404 with a `denied` audit row. `expires_hours`: 1 to
//! [`MAX_GRANT_HOURS`] (ten years), else 400.

use crate::access::{Principal, Role};
use crate::db::entities::{studies, users};
use crate::error::ApiError;
use crate::extract::{roles, RequireRole};
use crate::services::audit::{Event, Outcome};
use crate::services::auth::ct_eq;
use crate::services::grants::{self, GrantPermission, Grantee};
use crate::services::orgs;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{Duration, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde::Deserialize;

pub fn configure(cfg: &mut web::ServiceConfig) {
    use crate::access::routes::{
        register, ADMIN_GRANTS, ADMIN_GRANT_REVOKE, ADMIN_PAGE, ADMIN_USERS,
    };
    register(cfg, &ADMIN_PAGE, admin_page);
    register(cfg, &ADMIN_USERS, create_user);
    register(cfg, &ADMIN_GRANTS, create_grant);
    register(cfg, &ADMIN_GRANT_REVOKE, revoke_grant);
}

fn db500(what: &'static str) -> impl Fn(sea_orm::DbErr) -> ApiError {
    move |e| ApiError::Unexpected(anyhow::Error::new(e).context(what))
}

/// An admin session (anybody else: 404, audited by the extractor).
type AdminUser = RequireRole<roles::Admin>;

/// The admin behind the request, after the CSRF check.
fn admin<'a>(
    user: &'a AdminUser,
    csrf: &str,
) -> Result<&'a crate::services::auth::SessionUser, ApiError> {
    if !ct_eq(csrf, &user.user.csrf_token) {
        return Err(ApiError::Forbidden("invalid CSRF token"));
    }
    Ok(&user.user)
}

/// Longest grant: ten years.
pub const MAX_GRANT_HOURS: u32 = 10 * 366 * 24;

/// The deadline of a grant of `hours` from `now` (1 ..= [`MAX_GRANT_HOURS`]).
fn grant_deadline(
    now: chrono::DateTime<Utc>,
    hours: u32,
) -> Result<chrono::DateTime<Utc>, ApiError> {
    let bad = || ApiError::BadRequest(format!("expires_hours: 1 to {MAX_GRANT_HOURS}"));
    if hours == 0 || hours > MAX_GRANT_HOURS {
        return Err(bad());
    }
    Duration::try_hours(i64::from(hours))
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(bad)
}

/// Record a refused admin action (before it is answered).
async fn audit_refusal(
    state: &AppState,
    req: &HttpRequest,
    me: &crate::services::auth::SessionUser,
    action: &str,
    study: Option<&str>,
    detail: &str,
) -> Result<(), ApiError> {
    let (kind, actor) = Principal::User(me.clone()).audit_actor();
    state
        .audit
        .record(
            &state.db,
            Event::new(kind, actor, action)
                .org(me.org_id)
                .study(study)
                .outcome(Outcome::Denied)
                .request(req)
                .detail(detail),
        )
        .await
        .map(|_| ())
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("audit trail")))
}

#[derive(Deserialize)]
struct GrantForm {
    csrf: String,
    study: String,
    user: Option<String>,
    org: Option<String>,
    permission: String,
    expires_hours: Option<u32>,
}

async fn create_grant(
    user: AdminUser,
    req: HttpRequest,
    form: web::Form<GrantForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let me = admin(&user, &form.csrf)?;
    let permission = GrantPermission::parse(&form.permission)
        .ok_or_else(|| ApiError::BadRequest("unknown permission".into()))?;
    let expires_at = form
        .expires_hours
        .map(|h| grant_deadline(Utc::now(), h))
        .transpose()?;
    let study = studies::Entity::find()
        .filter(studies::Column::StudyUid.eq(form.study.as_str()))
        .one(&state.db)
        .await
        .map_err(db500("loading study"))?
        .filter(|s| s.org_id.is_some() && s.org_id == me.org_id);
    let Some(study) = study else {
        // Unknown, or another organisation's: the same 404, audited.
        let uid = mado_core::StudyUid::parse(&form.study).ok();
        audit_refusal(
            &state,
            &req,
            me,
            "grant.create",
            uid.as_ref().map(|u| u.as_str()),
            "study not in the admin's organisation",
        )
        .await?;
        return Err(ApiError::NotFound);
    };
    let grantee = match (&form.user, &form.org) {
        (Some(username), None) => {
            let u = users::Entity::find()
                .filter(users::Column::Username.eq(username.as_str()))
                .one(&state.db)
                .await
                .map_err(db500("loading user"))?
                .ok_or_else(|| ApiError::BadRequest("unknown user".into()))?;
            Grantee::User(u.id)
        }
        (None, Some(org)) => Grantee::Org(
            orgs::find(&state.db, org)
                .await
                .map_err(db500("loading organisation"))?
                .ok_or_else(|| ApiError::BadRequest("unknown organisation".into()))?,
        ),
        _ => return Err(ApiError::BadRequest("give exactly one of user, org".into())),
    };
    let id = grants::create(
        &state.db,
        study.id,
        grantee,
        permission,
        expires_at,
        Some(me.user_id),
    )
    .await
    .map_err(db500("creating grant"))?;
    let (kind, actor) = Principal::User(me.clone()).audit_actor();
    state
        .audit
        .record(
            &state.db,
            Event::new(kind, actor, "grant.create")
                .org(me.org_id)
                .study(Some(&study.study_uid))
                .request(&req)
                .detail(format!("grant:{id} {}", permission.as_str())),
        )
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("audit trail")))?;
    Ok(HttpResponse::Created().json(serde_json::json!({ "id": id })))
}

#[derive(Deserialize)]
struct RevokeForm {
    csrf: String,
}

async fn revoke_grant(
    user: AdminUser,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<RevokeForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let me = admin(&user, &form.csrf)?;
    let id: i64 = path.parse().map_err(|_| ApiError::NotFound)?;
    // Only grants on the admin's own organisation's studies.
    let grant = crate::db::entities::study_grants::Entity::find_by_id(id)
        .one(&state.db)
        .await
        .map_err(db500("loading grant"))?;
    let study = match grant {
        Some(g) => studies::Entity::find_by_id(g.study_id)
            .one(&state.db)
            .await
            .map_err(db500("loading study"))?
            .filter(|s| s.org_id.is_some() && s.org_id == me.org_id),
        None => None,
    };
    let Some(study) = study else {
        audit_refusal(
            &state,
            &req,
            me,
            "grant.revoke",
            None,
            &format!("grant:{id} not in the admin's organisation"),
        )
        .await?;
        return Err(ApiError::NotFound);
    };
    let revoked = grants::revoke(&state.db, id)
        .await
        .map_err(db500("revoking grant"))?;
    let (kind, actor) = Principal::User(me.clone()).audit_actor();
    state
        .audit
        .record(
            &state.db,
            Event::new(kind, actor, "grant.revoke")
                .org(me.org_id)
                .study(Some(&study.study_uid))
                .outcome(if revoked {
                    Outcome::Success
                } else {
                    Outcome::Failure
                })
                .request(&req)
                .detail(format!("grant:{id}")),
        )
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("audit trail")))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "revoked": revoked })))
}

/// `GET /admin`: the admin's organisation at a glance (404 for others).
async fn admin_page(
    user: AdminUser,
    lang: crate::extract::UiLang,
    state: web::Data<AppState>,
) -> Result<actix_web::HttpResponse, ApiError> {
    use crate::db::entities::{organisations, study_grants};
    use sea_orm::QueryOrder;
    use viewer::{AdminGrantRow, AdminOrgRow, AdminPage, AdminUserRow, Chrome};
    let me = &user.user;
    let lang = lang.0;
    let s = lang.strings();
    let now = Utc::now();
    let orgs = organisations::Entity::find()
        .order_by_asc(organisations::Column::Name)
        .all(&state.db)
        .await
        .map_err(db500("loading organisations"))?;
    let org_name = |id: Option<i64>| {
        orgs.iter()
            .find(|o| Some(o.id) == id)
            .map(|o| o.name.clone())
            .unwrap_or_default()
    };
    let all_users = users::Entity::find()
        .order_by_asc(users::Column::Username)
        .all(&state.db)
        .await
        .map_err(db500("loading users"))?;
    let user_rows = all_users
        .iter()
        .filter(|u| u.org_id.is_some() && u.org_id == me.org_id)
        .map(|u| AdminUserRow {
            username: u.username.clone(),
            role: u.role.clone(),
            org: org_name(u.org_id),
            mfa: crate::services::totp::enrolled_secret(u).is_some(),
            status: if u.disabled {
                s.admin_status_disabled
            } else if u.locked_until.is_some_and(|t| now < t) {
                s.admin_status_locked
            } else {
                s.admin_status_active
            },
        })
        .collect();
    let org_rows = orgs
        .iter()
        .map(|o| AdminOrgRow {
            name: o.name.clone(),
            users: all_users.iter().filter(|u| u.org_id == Some(o.id)).count(),
        })
        .collect();
    // Grants on the admin's own organisation's studies only.
    let own_studies: Vec<(i64, String)> = match me.org_id {
        Some(org) => studies::Entity::find()
            .filter(studies::Column::OrgId.eq(org))
            .all(&state.db)
            .await
            .map_err(db500("loading studies"))?
            .into_iter()
            .map(|st| (st.id, st.study_uid))
            .collect(),
        None => Vec::new(),
    };
    let grants = if own_studies.is_empty() {
        Vec::new()
    } else {
        study_grants::Entity::find()
            .filter(study_grants::Column::StudyId.is_in(own_studies.iter().map(|(id, _)| *id)))
            .order_by_desc(study_grants::Column::Id)
            .all(&state.db)
            .await
            .map_err(db500("loading grants"))?
    };
    let grant_rows = grants
        .into_iter()
        .map(|g| AdminGrantRow {
            id: g.id,
            study: own_studies
                .iter()
                .find(|(id, _)| *id == g.study_id)
                .map(|(_, uid)| uid.clone())
                .unwrap_or_default(),
            grantee: match (g.grantee_user_id, g.grantee_org_id) {
                (Some(u), _) => format!(
                    "{} {}",
                    s.admin_user_prefix,
                    all_users
                        .iter()
                        .find(|x| x.id == u)
                        .map(|x| x.username.as_str())
                        .unwrap_or("?")
                ),
                (None, o) => format!("{} {}", s.admin_org_prefix, org_name(o)),
            },
            permission: g.permission,
            expires_at: g
                .expires_at
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_default(),
            status: if g.expires_at.is_some_and(|t| t <= now) {
                s.admin_status_expired
            } else {
                s.admin_status_active
            },
            revoke_action: format!("/admin/grants/{}/revoke", g.id),
        })
        .collect();
    let page = AdminPage {
        lang,
        s,
        chrome: Chrome {
            username: me.username.clone(),
            csrf_token: me.csrf_token.clone(),
        },
        org: org_name(me.org_id),
        users: user_rows,
        orgs: org_rows,
        grants: grant_rows,
        // Only roles an organisation may hand out (no platform_auditor).
        roles: Role::ALL
            .into_iter()
            .filter(|r| Role::parse(r.as_str()).is_some())
            .map(Role::as_str)
            .collect(),
        permissions: GrantPermission::ALL.iter().map(|p| p.as_str()).collect(),
    };
    super::html_page(actix_web::http::StatusCode::OK, &page, [])
}

#[derive(Deserialize)]
struct UserForm {
    csrf: String,
    username: String,
    password: String,
    role: String,
}

/// Shortest password accepted for a new account.
const MIN_PASSWORD: usize = 12;

/// `POST /admin/users`: a new account in the admin's organisation (an
/// existing username is refused, never overwritten).
async fn create_user(
    user: AdminUser,
    req: HttpRequest,
    form: web::Form<UserForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let me = admin(&user, &form.csrf)?;
    let org_id = me
        .org_id
        .ok_or(ApiError::Forbidden("the admin has no organisation"))?;
    let username = form.username.trim();
    if username.is_empty()
        || username.chars().count() > 128
        || username.starts_with("oidc:")
        || username
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(ApiError::BadRequest(
            "username: 1-128 characters, no spaces, not oidc:".into(),
        ));
    }
    if form.password.chars().count() < MIN_PASSWORD || form.password.len() > 1024 {
        return Err(ApiError::BadRequest(format!(
            "password: at least {MIN_PASSWORD} characters"
        )));
    }
    let role =
        Role::parse(&form.role).ok_or_else(|| ApiError::BadRequest("unknown role".into()))?;
    let id = crate::services::auth::create_user_in_org_id(
        &state.db,
        username,
        &form.password,
        role.as_str(),
        org_id,
    )
    .await
    .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("creating user")))?;
    let (kind, actor) = Principal::User(me.clone()).audit_actor();
    state
        .audit
        .record(
            &state.db,
            Event::new(kind, actor, "admin.user_create")
                .org(me.org_id)
                .outcome(if id.is_some() {
                    Outcome::Success
                } else {
                    Outcome::Failure
                })
                .request(&req)
                .detail(match id {
                    Some(id) => format!("user:{id} {}", role.as_str()),
                    None => "username taken".into(),
                }),
        )
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("audit trail")))?;
    let id = id.ok_or(ApiError::Conflict("username taken"))?;
    Ok(HttpResponse::Created().json(serde_json::json!({ "id": id })))
}
