//! `GET /audit`: the audit trail (auditors only; anybody else gets 404).
//! Shows the newest events and the result of walking the hash chain.
//!
//! An `auditor` sees its own organisation's rows only (events whose
//! organisation is its own); events of other organisations, and those of
//! no organisation (anonymous sign-in attempts, share links), are never
//! shown to it. The separate role `platform_auditor` (set by the operator,
//! never by an organisation) sees every row, as does the operator's
//! `mado-server audit export`.

use crate::access::{Principal, Role};
use crate::error::ApiError;
use crate::extract::{roles, RequireRole, UiLang};
use crate::services::audit::{self, Event};
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use viewer::{AuditPage, AuditRow, Chrome};

const PAGE_ROWS: u64 = 500;

pub fn configure(cfg: &mut web::ServiceConfig) {
    crate::access::routes::register(cfg, &crate::access::routes::AUDIT_PAGE, audit_page);
}

async fn audit_page(
    user: RequireRole<roles::AnyAuditor>,
    req: HttpRequest,
    lang: UiLang,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let principal = Principal::User(user.user.clone());
    let (kind, actor) = principal.audit_actor();
    // The rows this auditor may read: `None` = every organisation.
    let scope = match user.user.role {
        Role::PlatformAuditor => None,
        _ => Some(user.user.org_id),
    };
    state
        .audit
        .record(
            &state.db,
            Event::new(kind, actor, "audit.view")
                .org(user.user.org_id)
                .outcome(audit::Outcome::Success)
                .request(&req)
                .detail(if scope.is_none() {
                    "platform"
                } else {
                    "organisation"
                }),
        )
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("audit trail")))?;
    let report = state.audit.verify(&state.db).await.map_err(|e| {
        ApiError::Unexpected(anyhow::Error::new(e).context("verifying audit chain"))
    })?;
    use crate::db::entities::audit_events;
    let mut query = audit_events::Entity::find();
    if let Some(org) = scope {
        // An auditor without an organisation sees nothing.
        query = match org {
            Some(org) => query.filter(audit_events::Column::OrgId.eq(org)),
            None => query.filter(audit_events::Column::Seq.is_null()),
        };
    }
    let rows = query
        .order_by_desc(audit_events::Column::Seq)
        .limit(PAGE_ROWS)
        .all(&state.db)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("loading audit events")))?
        .into_iter()
        .map(|r| AuditRow {
            seq: r.seq,
            at: r.at,
            actor: r.actor,
            action: r.action,
            study: r.study_uid.unwrap_or_default(),
            outcome: r.outcome,
            client: r.client_addr,
        })
        .collect();
    let page = AuditPage {
        lang: lang.0,
        s: lang.0.strings(),
        chrome: Chrome {
            username: user.user.username.clone(),
            csrf_token: user.user.csrf_token.clone(),
        },
        problem: report.problem,
        rows,
    };
    super::html_page(StatusCode::OK, &page, [])
}
