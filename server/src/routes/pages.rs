//! HTML pages: the worklist and the study page. Handlers turn index rows
//! into the viewer's plain view models.

use crate::access::{self, visible_studies, Action, Principal, StudyAccess, ViewMetadata};
use crate::error::ApiError;
use crate::extract::{PageUser, UiLang};
use crate::services::audit::Event;
use crate::services::studies::{self, StudyDetail, WorklistEntry};
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use viewer::{
    format_dicom_date, format_dicom_time, format_person_name, Chrome, ImageView, SeriesView,
    ShareDialog, ShareLinkRow, StudyPage, StudyRow, Template, WorklistPage,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    use access::routes::{register, STUDY_PAGE, WORKLIST};
    register(cfg, &WORKLIST, worklist);
    register(cfg, &STUDY_PAGE, study);
}

fn html(t: &impl Template) -> Result<HttpResponse, ApiError> {
    super::html_page(StatusCode::OK, t, [])
}

fn chrome(user: &PageUser) -> Chrome {
    Chrome {
        username: user.user.username.clone(),
        csrf_token: user.user.csrf_token.clone(),
    }
}

fn modalities(joined: &str) -> String {
    joined
        .split('\\')
        .filter(|m| !m.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

async fn worklist(
    user: PageUser,
    req: actix_web::HttpRequest,
    lang: UiLang,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let principal = Principal::User(user.user.clone());
    let (kind, actor) = principal.audit_actor();
    state
        .audit
        .record(
            &state.db,
            Event::new(kind, actor, "study.search")
                .org(user.user.org_id)
                .request(&req)
                .detail("worklist"),
        )
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("audit trail")))?;
    let rows = studies::worklist(&state.db, visible_studies(&principal))
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("loading worklist")))?;
    let studies = rows.into_iter().map(study_row).collect();
    html(&WorklistPage {
        lang: lang.0,
        s: lang.0.strings(),
        chrome: chrome(&user),
        studies,
    })
}

fn study_row(e: WorklistEntry) -> StudyRow {
    let (patient_name, patient_id) = match &e.patient {
        Some(p) => (format_person_name(&p.name), p.patient_id.clone()),
        None => (String::new(), String::new()),
    };
    StudyRow {
        href: format!("/studies/{}", e.study.study_uid),
        patient_name,
        patient_id,
        study_date: format_dicom_date(&e.study.study_date),
        modalities: modalities(&e.study.modalities_in_study),
        description: e.study.description,
        num_series: i64::from(e.study.num_series),
        num_instances: i64::from(e.study.num_instances),
    }
}

async fn study(
    access: StudyAccess<ViewMetadata>,
    lang: UiLang,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let detail = studies::study_detail(&state.db, access.study())
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("loading study")))?
        .ok_or(ApiError::NotFound)?;
    // A share link session has no account: an empty sign-out form.
    let chrome = match access.principal() {
        Principal::User(u) => Chrome {
            username: u.username.clone(),
            csrf_token: u.csrf_token.clone(),
        },
        Principal::ApiClient { client_id, .. } => Chrome {
            username: client_id.clone(),
            csrf_token: String::new(),
        },
        Principal::ShareLink { .. } => Chrome {
            username: lang.0.strings().share_title.to_owned(),
            csrf_token: String::new(),
        },
    };
    let share = share_dialog(&state, &access, lang.0).await?;
    let mut page = study_page(detail, lang.0, chrome);
    page.share = share;
    html(&page)
}

/// Links listed in the share dialog.
const SHARE_LIST_LIMIT: u64 = 50;

/// The share dialog when the signed-in user may share this study (the
/// guard's policy decides, as for the share endpoints).
async fn share_dialog(
    state: &AppState,
    access: &StudyAccess<ViewMetadata>,
    lang: viewer::Lang,
) -> Result<Option<ShareDialog>, ApiError> {
    let Principal::User(user) = access.principal() else {
        return Ok(None);
    };
    if access::check(state, access.principal(), access.study(), Action::Share)
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let s = lang.strings();
    let links =
        crate::services::shares::list_for_study(&state.db, access.study_id(), SHARE_LIST_LIMIT)
            .await
            .map_err(|e| {
                ApiError::Unexpected(anyhow::Error::new(e).context("listing share links"))
            })?;
    let now = chrono::Utc::now();
    let uid = access.study().as_str();
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
    let links = links
        .into_iter()
        .map(|l| {
            let used_up = l.max_uses.is_some_and(|m| l.uses >= m);
            let status = if l.revoked_at.is_some() {
                s.share_status_revoked
            } else if l.expires_at <= now {
                s.share_status_expired
            } else if used_up {
                s.share_status_used_up
            } else {
                s.share_status_active
            };
            ShareLinkRow {
                id: l.id,
                created_at: fmt(l.created_at),
                expires_at: fmt(l.expires_at),
                uses: match l.max_uses {
                    Some(m) => format!("{} / {m}", l.uses),
                    None => l.uses.to_string(),
                },
                passcode: l.passcode_hash.is_some(),
                pixels_only: l.pixels_only,
                status,
                revoke_action: (l.revoked_at.is_none() && l.expires_at > now)
                    .then(|| format!("/studies/{uid}/shares/{}/revoke", l.id)),
            }
        })
        .collect();
    Ok(Some(ShareDialog {
        create_action: format!("/studies/{uid}/shares"),
        csrf_token: user.csrf_token.clone(),
        max_days: state.security.share_max_days,
        links,
    }))
}

fn study_page(d: StudyDetail, lang: viewer::Lang, chrome: Chrome) -> StudyPage {
    let study_uid = d.study.study_uid.clone();
    let series = d
        .series
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let series_uid = s.series.series_uid.clone();
            let images = s
                .instances
                .iter()
                .enumerate()
                .map(|(j, inst)| ImageView {
                    src: format!(
                        "/studies/{study_uid}/series/{series_uid}/instances/{}/rendered.png",
                        inst.sop_instance_uid
                    ),
                    alt: inst
                        .instance_number
                        .map(|n| format!("#{n}"))
                        .unwrap_or_else(|| format!("#{}", j + 1)),
                    width: i64::from(inst.columns.unwrap_or(512).max(1)),
                    height: i64::from(inst.rows.unwrap_or(512).max(1)),
                    frames: i64::from(inst.number_of_frames),
                })
                .collect();
            SeriesView {
                anchor: format!("series-{}", i + 1),
                number: s
                    .series
                    .series_number
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
                modality: s.series.modality,
                description: s.series.description,
                body_part: s.series.body_part,
                images,
            }
        })
        .collect();
    let (patient_name, patient_id) = match &d.patient {
        Some(p) => (format_person_name(&p.name), p.patient_id.clone()),
        None => (String::new(), String::new()),
    };
    StudyPage {
        lang,
        s: lang.strings(),
        chrome,
        patient_name,
        patient_id,
        study_date: format_dicom_date(&d.study.study_date),
        study_time: format_dicom_time(&d.study.study_time),
        accession: d.study.accession,
        description: d.study.description,
        modalities: modalities(&d.study.modalities_in_study),
        series,
        share: None,
    }
}
