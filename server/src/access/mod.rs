//! The one place where access to a study is decided.
//!
//! Every study-scoped handler takes a [`StudyAccess<P>`] argument, where `P`
//! names the permission it needs ([`ViewMetadata`], [`ViewPixels`],
//! [`Download`], …). Its `FromRequest` resolves the principal, parses the
//! `{study}` path segment into a [`StudyUid`], looks the study up and checks
//! the policy; a denied *or* unknown study is the same `404`, so an answer
//! never hints that a study exists. A `StudyAccess` cannot be built anywhere
//! else (private field), so services that take `&StudyAccess<_>` cannot be
//! reached without the check either.
//!
//! Listings (worklist, QIDO) never filter afterwards: they call
//! [`visible_studies`] to get a SQL condition for the caller.
//!
//! Current policy (walking slice): any signed-in user may see every study.
//! The identity/access issue replaces [`Principal`] resolution and
//! [`check`] with organisations, roles, grants and share links.

use crate::error::ApiError;
use crate::extract::resolve_session;
use crate::services::auth::SessionUser;
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures::future::LocalBoxFuture;
use mado_core::StudyUid;
use sea_orm::Condition;
use std::marker::PhantomData;

/// What a request wants to do with a study.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Index data and metadata (QIDO, WADO metadata, study page).
    ViewMetadata,
    /// Rendered images, thumbnails and tiles (pixels, not DICOM files).
    ViewPixels,
    /// DICOM objects, frames, bulk data (WADO-RS retrieve).
    Download,
}

pub trait Permission {
    const ACTION: Action;
}

/// Marker: metadata and index data.
pub struct ViewMetadata;
/// Marker: rendered pixels only.
pub struct ViewPixels;
/// Marker: DICOM objects and raw frames.
pub struct Download;

impl Permission for ViewMetadata {
    const ACTION: Action = Action::ViewMetadata;
}
impl Permission for ViewPixels {
    const ACTION: Action = Action::ViewPixels;
}
impl Permission for Download {
    const ACTION: Action = Action::Download;
}

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Principal {
    User(SessionUser),
}

/// Proof that the caller may do `P` on `study`.
pub struct StudyAccess<P> {
    study: StudyUid,
    study_id: i64,
    principal: Principal,
    _p: PhantomData<P>,
}

impl<P> StudyAccess<P> {
    pub fn study(&self) -> &StudyUid {
        &self.study
    }
    /// Primary key of the study row.
    pub fn study_id(&self) -> i64 {
        self.study_id
    }
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
}

impl<P> std::fmt::Debug for StudyAccess<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StudyAccess")
            .field("study_id", &self.study_id)
            .finish_non_exhaustive()
    }
}

/// The path segment that names the study in every study-scoped route.
pub const STUDY_PATH_PARAM: &str = "study";

impl<P: Permission + 'static> FromRequest for StudyAccess<P> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .cloned()
                .ok_or_else(|| {
                    ApiError::Unexpected(anyhow::anyhow!("application state missing"))
                })?;
            let principal = match resolve_session(&req).await? {
                Some(session) => Principal::User(session.user),
                None => return Err(ApiError::Unauthorized),
            };
            let study = req
                .match_info()
                .get(STUDY_PATH_PARAM)
                .and_then(|s| StudyUid::parse(s).ok())
                .ok_or(ApiError::NotFound)?;
            let study_id = check(&state, &principal, &study, P::ACTION)
                .await?
                .ok_or(ApiError::NotFound)?;
            Ok(StudyAccess {
                study,
                study_id,
                principal,
                _p: PhantomData,
            })
        })
    }
}

/// The policy: `Some(study row id)` when `principal` may do `action` on
/// `study`, `None` when it may not or the study is unknown.
async fn check(
    state: &AppState,
    principal: &Principal,
    study: &StudyUid,
    _action: Action,
) -> Result<Option<i64>, ApiError> {
    use crate::db::entities::studies;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let Principal::User(_) = principal;
    let row = studies::Entity::find()
        .filter(studies::Column::StudyUid.eq(study.as_str()))
        .one(&state.db)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("access check")))?;
    Ok(row.map(|r| r.id))
}

/// SQL condition on the `studies` table selecting what `principal` may see.
pub fn visible_studies(principal: &Principal) -> Condition {
    let Principal::User(_) = principal;
    Condition::all()
}
