//! `GET /audit`: the audit trail (auditors only; anybody else gets 404).
//! Shows the newest events and the result of walking the hash chain.

use crate::access::{Principal, Role};
use crate::error::ApiError;
use crate::extract::{PageUser, UiLang};
use crate::services::audit::{self, Event};
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use sea_orm::{EntityTrait, QueryOrder, QuerySelect};
use viewer::{AuditPage, AuditRow, Chrome};

const PAGE_ROWS: u64 = 500;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/audit", web::get().to(audit_page));
}

async fn audit_page(
    user: PageUser,
    req: HttpRequest,
    lang: UiLang,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let principal = Principal::User(user.user.clone());
    let (kind, actor) = principal.audit_actor();
    let allowed = principal.role() == Some(Role::Auditor);
    state
        .audit
        .record(
            &state.db,
            Event::new(kind, actor, "audit.view")
                .org(user.user.org_id)
                .outcome(if allowed {
                    audit::Outcome::Success
                } else {
                    audit::Outcome::Denied
                })
                .request(&req),
        )
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("audit trail")))?;
    if !allowed {
        return Err(ApiError::NotFound);
    }
    let report = state.audit.verify(&state.db).await.map_err(|e| {
        ApiError::Unexpected(anyhow::Error::new(e).context("verifying audit chain"))
    })?;
    let rows = crate::db::entities::audit_events::Entity::find()
        .order_by_desc(crate::db::entities::audit_events::Column::Seq)
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
