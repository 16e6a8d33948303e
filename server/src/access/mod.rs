//! The one place where access to a study is decided.
//!
//! Every study-scoped handler takes a [`StudyAccess<P>`] argument, where `P`
//! names the permission it needs ([`ViewMetadata`], [`ViewPixels`],
//! [`Download`], [`Report`], [`Share`]). Its `FromRequest` resolves the
//! principal, parses the `{study}` path segment into a [`StudyUid`], looks
//! the study up and checks the policy; a denied *or* unknown study is the
//! same `404`, so an answer never hints that a study exists. A
//! `StudyAccess` cannot be built anywhere else (private field), so services
//! that take `&StudyAccess<_>` cannot be reached without the check either.
//!
//! Every decision, allowed or not, is appended to the audit trail; if that
//! write fails the request fails (500): fail closed. A denial is written
//! before the answer; an allowed access is written concurrently with the
//! handler's work ([`PendingAudit`]) and the request middleware holds the
//! response back until the row is committed.
//!
//! Listings (worklist, QIDO) never filter afterwards: they call
//! [`visible_studies`] to get a SQL condition for the caller.
//!
//! Policy:
//! - users see their own organisation's studies by role: `admin`,
//!   `radiologist` and `technologist` everything (report: admin and
//!   radiologist; share: admin and radiologist); `referring` only what is
//!   granted; `auditor` no study at all (audit pages only);
//! - grants (`study_grants`, to a user or a whole organisation, optionally
//!   expiring) add permissions on one study, see
//!   [`GrantPermission::implies`](crate::services::grants::GrantPermission::implies);
//! - a share link session sees its one study (metadata and pixels; DICOM
//!   download unless the link is pixels-only), nothing else.

pub mod routes;

use crate::db::entities::{studies, study_grants};
use crate::error::ApiError;
use crate::extract::resolve_session;
use crate::services::audit::{Event, Outcome};
use crate::services::auth::SessionUser;
use crate::services::grants::permissions_allowing;
use crate::services::shares;
use crate::services::ttl_cache::TtlCache;
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use chrono::Utc;
use futures::future::LocalBoxFuture;
use mado_core::StudyUid;
use sea_orm::sea_query::Query;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QuerySelect};
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
    /// Write a report on the study.
    Report,
    /// Create or revoke share links of the study.
    Share,
}

impl Action {
    /// The audit trail's name of the action.
    pub fn audit_name(self) -> &'static str {
        match self {
            Action::ViewMetadata => "study.view",
            Action::ViewPixels => "study.pixels",
            Action::Download => "study.download",
            Action::Report => "study.report",
            Action::Share => "study.share",
        }
    }
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
/// Marker: reporting.
pub struct Report;
/// Marker: managing share links.
pub struct Share;

impl Permission for ViewMetadata {
    const ACTION: Action = Action::ViewMetadata;
}
impl Permission for ViewPixels {
    const ACTION: Action = Action::ViewPixels;
}
impl Permission for Download {
    const ACTION: Action = Action::Download;
}
impl Permission for Report {
    const ACTION: Action = Action::Report;
}
impl Permission for Share {
    const ACTION: Action = Action::Share;
}

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Radiologist,
    Referring,
    Technologist,
    /// Reads its own organisation's audit trail; no study.
    Auditor,
    /// Reads every organisation's audit trail; no study. Never given
    /// through an organisation (admin form, OIDC claim, configured default
    /// role): only set on the account by the operator.
    PlatformAuditor,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::Radiologist,
        Role::Referring,
        Role::Technologist,
        Role::Auditor,
        Role::PlatformAuditor,
    ];

    /// A role an organisation may hand out (admin form, OIDC claim,
    /// configured default): every role but [`Role::PlatformAuditor`].
    pub fn parse(s: &str) -> Option<Role> {
        Self::from_stored(s).filter(|r| *r != Role::PlatformAuditor)
    }

    /// The role stored on an account (any role).
    pub fn from_stored(s: &str) -> Option<Role> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Radiologist => "radiologist",
            Role::Referring => "referring",
            Role::Technologist => "technologist",
            Role::Auditor => "auditor",
            Role::PlatformAuditor => "platform_auditor",
        }
    }

    /// What the role allows on its own organisation's studies.
    pub fn own_org_allows(self, action: Action) -> bool {
        match self {
            Role::Admin | Role::Radiologist => true,
            Role::Technologist => matches!(
                action,
                Action::ViewMetadata | Action::ViewPixels | Action::Download
            ),
            Role::Referring | Role::Auditor | Role::PlatformAuditor => false,
        }
    }

    /// Whether grants apply to the role (auditors never see studies).
    pub fn may_use_grants(self) -> bool {
        !matches!(self, Role::Auditor | Role::PlatformAuditor)
    }
}

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A signed-in user (browser session).
    User(SessionUser),
    /// An API client with a bearer JWT access token from the OpenID
    /// Provider; acts with the configured role in the configured org.
    ApiClient {
        client_id: String,
        org_id: Option<i64>,
        role: String,
    },
    /// A share link session: one study only.
    ShareLink {
        share_id: i64,
        study_id: i64,
        pixels_only: bool,
    },
}

impl Principal {
    /// `(kind, actor)` for the audit trail.
    pub fn audit_actor(&self) -> (&'static str, String) {
        match self {
            Principal::User(u) => ("user", format!("{}:{}", u.user_id, u.username)),
            Principal::ApiClient { client_id, .. } => ("api", format!("client:{client_id}")),
            Principal::ShareLink { share_id, .. } => ("share", format!("share:{share_id}")),
        }
    }

    pub fn org_id(&self) -> Option<i64> {
        match self {
            Principal::User(u) => u.org_id,
            Principal::ApiClient { org_id, .. } => *org_id,
            Principal::ShareLink { .. } => None,
        }
    }

    /// The user's role, if a user with a known role.
    pub fn role(&self) -> Option<Role> {
        match self {
            Principal::User(u) => Some(u.role),
            Principal::ApiClient { role, .. } => Role::parse(role),
            Principal::ShareLink { .. } => None,
        }
    }
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

fn app_state(req: &HttpRequest) -> Result<web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::Unexpected(anyhow::anyhow!("application state missing")))
}

/// Who is behind `req`: a user session first, else a share link session.
pub async fn resolve_principal(req: &HttpRequest) -> Result<Option<Principal>, ApiError> {
    if let Some(session) = resolve_session(req).await? {
        return Ok(Some(Principal::User(session.user)));
    }
    let state = app_state(req)?;
    if let Some(oidc) = state.oidc.as_ref() {
        let bearer = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        if let (Some(token), Some(_)) = (bearer, oidc.settings().api_audience.as_ref()) {
            return match oidc.verify_access_token(token).await {
                Ok(t) => {
                    let org_id = crate::services::orgs::find(&state.db, &oidc.settings().org)
                        .await
                        .map_err(|e| {
                            ApiError::Unexpected(anyhow::Error::new(e).context("api org"))
                        })?;
                    Ok(Some(Principal::ApiClient {
                        client_id: t.client_id,
                        org_id,
                        role: oidc.settings().api_role.clone(),
                    }))
                }
                Err(e) => {
                    tracing::info!(error = %e, "bearer token rejected");
                    Ok(None)
                }
            };
        }
    }
    if let Some(cookie) = req.cookie(shares::SHARE_COOKIE) {
        let token = cookie.value();
        if token.len() == 43 {
            if let Some(p) = shares::resolve_session(&state.db, token)
                .await
                .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("share session")))?
            {
                return Ok(Some(p));
            }
        }
    }
    Ok(None)
}

/// The audit row of an allowed study access, being committed while the
/// handler runs. [`settle_audit`] (called by the request middleware around
/// every handler) awaits it: a response is released only once its audit row
/// is durable, and replaced by a 500 if the write failed.
pub struct PendingAudit(tokio::task::JoinHandle<Result<i64, crate::services::audit::AuditError>>);

/// Await the audit row of this request, if an access check left one.
pub async fn settle_audit(req: &HttpRequest) -> Result<(), ApiError> {
    let pending = req.extensions_mut().remove::<PendingAudit>();
    let Some(PendingAudit(handle)) = pending else {
        return Ok(());
    };
    match handle.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(ApiError::Unexpected(
            anyhow::Error::new(e).context("audit trail"),
        )),
        Err(e) => Err(ApiError::Unexpected(
            anyhow::Error::new(e).context("audit trail writer"),
        )),
    }
}

impl<P: Permission + 'static> FromRequest for StudyAccess<P> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = app_state(&req)?;
            let study = req
                .match_info()
                .get(STUDY_PATH_PARAM)
                .and_then(|s| StudyUid::parse(s).ok());
            let principal = resolve_principal(&req).await?;
            let decision = match (&principal, &study) {
                (Some(p), Some(uid)) => check(&state, p, uid, P::ACTION).await?,
                _ => None,
            };
            let (kind, actor) = principal
                .as_ref()
                .map(Principal::audit_actor)
                .unwrap_or(("anonymous", String::new()));
            let outcome = if decision.is_some() {
                Outcome::Success
            } else {
                Outcome::Denied
            };
            let event = Event::new(kind, actor, P::ACTION.audit_name())
                .org(principal.as_ref().and_then(Principal::org_id))
                .study(study.as_ref().map(StudyUid::as_str))
                .outcome(outcome)
                .request(&req);
            // (`decision` is only ever Some with a principal)
            if decision.is_some() {
                // Allowed: the audit row is committed while the handler
                // works; the request middleware awaits it before any byte
                // of the response leaves (fail closed, see PendingAudit).
                let st = state.clone();
                let handle =
                    actix_web::rt::spawn(async move { st.audit.record(&st.db, event).await });
                req.extensions_mut().insert(PendingAudit(handle));
            } else {
                state.audit.record(&state.db, event).await.map_err(|e| {
                    ApiError::Unexpected(anyhow::Error::new(e).context("audit trail"))
                })?;
            }
            let Some(principal) = principal else {
                // 401, or for a browser's HTML GET a redirect to /login?next=.
                return Err(ApiError::unauthenticated(&req));
            };
            match (decision, study) {
                (Some(study_id), Some(study)) => Ok(StudyAccess {
                    study,
                    study_id,
                    principal,
                    _p: PhantomData,
                }),
                _ => Err(ApiError::NotFound),
            }
        })
    }
}

/// A study row's id and organisation: what the policy needs of it.
#[derive(Debug, Clone, Copy)]
struct StudyRow {
    id: i64,
    org_id: Option<i64>,
}

/// Study UID → its row's id and organisation, for [`check`]. Both never
/// change once the row exists, and study rows are never deleted, so an
/// entry stays true for the life of the process (bounded by count). An
/// unknown UID is never cached: a study that arrives later is found.
pub struct StudyIds(TtlCache<String, StudyRow>);

impl Default for StudyIds {
    fn default() -> Self {
        Self(TtlCache::new(std::time::Duration::MAX, 65_536))
    }
}

/// The row of the study `uid`, if indexed.
async fn study_row(state: &AppState, uid: &StudyUid) -> Result<Option<StudyRow>, ApiError> {
    if let Some(row) = state.study_ids.0.get(uid.as_str()) {
        return Ok(Some(row));
    }
    let row = studies::Entity::find()
        .select_only()
        .column(studies::Column::Id)
        .column(studies::Column::OrgId)
        .filter(studies::Column::StudyUid.eq(uid.as_str()))
        .into_tuple::<(i64, Option<i64>)>()
        .one(&state.db)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("access check")))?
        .map(|(id, org_id)| StudyRow { id, org_id });
    if let Some(row) = row {
        state.study_ids.0.insert(uid.as_str().to_owned(), row);
    }
    Ok(row)
}

/// Whether `principal` may do `action` on the study row `study`.
async fn allowed(
    state: &AppState,
    principal: &Principal,
    study: StudyRow,
    action: Action,
) -> Result<bool, ApiError> {
    match principal {
        Principal::ShareLink {
            study_id,
            pixels_only,
            ..
        } => Ok(*study_id == study.id
            && match action {
                Action::ViewMetadata | Action::ViewPixels => true,
                Action::Download => !pixels_only,
                Action::Report | Action::Share => false,
            }),
        Principal::User(_) | Principal::ApiClient { .. } => {
            let Some(role) = principal.role() else {
                return Ok(false);
            };
            let org_id = principal.org_id();
            if org_id.is_some() && study.org_id == org_id && role.own_org_allows(action) {
                return Ok(true);
            }
            if !role.may_use_grants() {
                return Ok(false);
            }
            let grant = study_grants::Entity::find()
                .select_only()
                .column(study_grants::Column::Id)
                .filter(study_grants::Column::StudyId.eq(study.id))
                .filter(grantee_is(principal))
                .filter(not_expired())
                .filter(study_grants::Column::Permission.is_in(permissions_allowing(action)))
                .into_tuple::<i64>()
                .one(&state.db)
                .await
                .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("grant check")))?;
            Ok(grant.is_some())
        }
    }
}

fn grantee_is(principal: &Principal) -> Condition {
    // Never matches on its own (ids are never NULL).
    let mut c = Condition::any().add(study_grants::Column::Id.is_null());
    if let Principal::User(user) = principal {
        c = c.add(study_grants::Column::GranteeUserId.eq(user.user_id));
    }
    if let Some(org) = principal.org_id() {
        c = c.add(study_grants::Column::GranteeOrgId.eq(org));
    }
    c
}

fn not_expired() -> Condition {
    Condition::any()
        .add(study_grants::Column::ExpiresAt.is_null())
        .add(study_grants::Column::ExpiresAt.gt(Utc::now()))
}

/// The policy: `Some(study row id)` when `principal` may do `action` on
/// `study`, `None` when it may not or the study is unknown.
pub async fn check(
    state: &AppState,
    principal: &Principal,
    study: &StudyUid,
    action: Action,
) -> Result<Option<i64>, ApiError> {
    let Some(row) = study_row(state, study).await? else {
        return Ok(None);
    };
    Ok(if allowed(state, principal, row, action).await? {
        Some(row.id)
    } else {
        None
    })
}

/// A condition no row satisfies (ids are never NULL).
fn nothing() -> Condition {
    Condition::all().add(studies::Column::Id.is_null())
}

/// SQL condition on the `studies` table selecting what `principal` may see
/// (at least its metadata).
pub fn visible_studies(principal: &Principal) -> Condition {
    match principal {
        Principal::ShareLink { study_id, .. } => {
            Condition::all().add(studies::Column::Id.eq(*study_id))
        }
        Principal::User(_) | Principal::ApiClient { .. } => {
            let Some(role) = principal.role() else {
                return nothing();
            };
            if !role.may_use_grants() {
                return nothing();
            }
            let granted = Query::select()
                .column(study_grants::Column::StudyId)
                .from(study_grants::Entity)
                .cond_where(
                    Condition::all()
                        .add(grantee_is(principal))
                        .add(not_expired()),
                )
                .to_owned();
            let mut c = Condition::any().add(studies::Column::Id.in_subquery(granted));
            if let Some(org) = principal.org_id() {
                if role.own_org_allows(Action::ViewMetadata) {
                    c = c.add(studies::Column::OrgId.eq(org));
                }
            }
            c
        }
    }
}

/// One study-scoped route: method, path template and the action its
/// handler requires (the entries of [`routes::ROUTES`] whose need is
/// [`routes::Need::Study`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StudyRoute {
    pub method: &'static str,
    pub path: &'static str,
    pub action: Action,
}

/// Study page.
pub const STUDY_PAGE: &str = "/studies/{study}";
/// Rendered frame.
pub const RENDERED_PNG: &str = "/studies/{study}/series/{series}/instances/{sop}/rendered.png";
/// Create a share link.
pub const SHARES: &str = "/studies/{study}/shares";
/// Revoke a share link.
pub const SHARE_REVOKE: &str = "/studies/{study}/shares/{id}/revoke";

/// Every study-scoped route of the route table.
pub fn study_routes() -> Vec<StudyRoute> {
    routes::ROUTES
        .iter()
        .filter_map(|r| match r.need {
            routes::Need::Study(action) => Some(StudyRoute {
                method: r.method,
                path: r.path,
                action,
            }),
            _ => None,
        })
        .collect()
}
