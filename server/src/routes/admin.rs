//! Administration (role `admin`; anybody else gets 404).
//!
//! ```text
//! POST /admin/grants               form: csrf, study, user | org, permission, expires_hours → 201 JSON {id}
//! POST /admin/grants/{id}/revoke   form: csrf
//! ```
//! An admin manages grants on its own organisation's studies only.

use crate::access::{Principal, Role};
use crate::db::entities::{studies, users};
use crate::error::ApiError;
use crate::extract::ApiUser;
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
    cfg.route("/admin/grants", web::post().to(create_grant))
        .route("/admin/grants/{id}/revoke", web::post().to(revoke_grant));
}

fn db500(what: &'static str) -> impl Fn(sea_orm::DbErr) -> ApiError {
    move |e| ApiError::Unexpected(anyhow::Error::new(e).context(what))
}

/// The admin behind the request, after the CSRF check; 404 for others.
fn admin<'a>(
    user: &'a ApiUser,
    csrf: &str,
) -> Result<&'a crate::services::auth::SessionUser, ApiError> {
    if Role::parse(&user.user.role) != Some(Role::Admin) {
        return Err(ApiError::NotFound);
    }
    if !ct_eq(csrf, &user.user.csrf_token) {
        return Err(ApiError::Forbidden("invalid CSRF token"));
    }
    Ok(&user.user)
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
    user: ApiUser,
    req: HttpRequest,
    form: web::Form<GrantForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let me = admin(&user, &form.csrf)?;
    let permission = GrantPermission::parse(&form.permission)
        .ok_or_else(|| ApiError::BadRequest("unknown permission".into()))?;
    let study = studies::Entity::find()
        .filter(studies::Column::StudyUid.eq(form.study.as_str()))
        .one(&state.db)
        .await
        .map_err(db500("loading study"))?
        .filter(|s| s.org_id.is_some() && s.org_id == me.org_id)
        .ok_or(ApiError::NotFound)?;
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
    let expires_at = form
        .expires_hours
        .map(|h| Utc::now() + Duration::hours(i64::from(h)));
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
    user: ApiUser,
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
        .map_err(db500("loading grant"))?
        .ok_or(ApiError::NotFound)?;
    let study = studies::Entity::find_by_id(grant.study_id)
        .one(&state.db)
        .await
        .map_err(db500("loading study"))?
        .filter(|s| s.org_id.is_some() && s.org_id == me.org_id)
        .ok_or(ApiError::NotFound)?;
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
