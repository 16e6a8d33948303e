//! Quarantine review and re-identification pages on the local admin endpoint
//! (`[admin] bind`, mounted through [`crate::admin::AdminRoutes`]).
//!
//! * `GET /quarantine` (HTML) and `GET /quarantine.json`: the listing of
//!   [`crate::quarantine::list`] (no PHI). Read-only: release and delete stay CLI commands.
//! * `GET /vault/reidentify`: a form; `POST /vault/reidentify` (operator, reason, study or
//!   patient pseudonym) prints the matching vault records, after appending the audit line
//!   (the same as `mado-gateway vault reidentify`).
//!
//! Every page answers 403 unless the peer is a loopback address, whatever `[admin] bind`
//! says: the originals are only ever shown on the gateway host itself.

use crate::spool::Spool;
use crate::vault::{Lookup, Vault, VaultConfig};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::OnceLock;

struct Ctx {
    spool_dir: PathBuf,
    vault: VaultConfig,
}

static CTX: OnceLock<Ctx> = OnceLock::new();

/// Remember the spool and vault settings for the pages (call once before serving).
pub fn install(cfg: &crate::config::GatewayConfig) {
    let _ = CTX.set(Ctx {
        spool_dir: cfg.spool.dir.clone(),
        vault: cfg.vault.clone(),
    });
}

/// The routes, for [`crate::Gateway::with_admin_routes`].
pub fn routes(c: &mut web::ServiceConfig) {
    c.route("/quarantine", web::get().to(list_html))
        .route("/quarantine.json", web::get().to(list_json))
        .route("/vault/reidentify", web::get().to(form))
        .route("/vault/reidentify", web::post().to(reidentify));
}

fn local_only(req: &HttpRequest) -> Option<HttpResponse> {
    match req.peer_addr() {
        Some(a) if a.ip().is_loopback() => None,
        _ => Some(HttpResponse::Forbidden().body("loopback only\n")),
    }
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn page(title: &str, body: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("cache-control", "no-store"))
        .insert_header(("x-frame-options", "DENY"))
        .body(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body><h1>{t}</h1>{body}</body></html>",
            t = esc(title)
        ))
}

async fn items() -> Result<Vec<crate::quarantine::Item>, HttpResponse> {
    let Some(ctx) = CTX.get() else {
        return Err(HttpResponse::ServiceUnavailable().body("not configured\n"));
    };
    let spool = Spool::at(&ctx.spool_dir);
    match web::block(move || crate::quarantine::list(&spool)).await {
        Ok(Ok(v)) => Ok(v),
        _ => Err(HttpResponse::ServiceUnavailable().body("quarantine not readable\n")),
    }
}

async fn list_json(req: HttpRequest) -> HttpResponse {
    if let Some(r) = local_only(&req) {
        return r;
    }
    match items().await {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(r) => r,
    }
}

async fn list_html(req: HttpRequest) -> HttpResponse {
    if let Some(r) = local_only(&req) {
        return r;
    }
    let v = match items().await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut rows = String::new();
    for i in &v {
        rows.push_str(&format!(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&i.id),
            esc(i.received.as_deref().unwrap_or("-")),
            esc(i.modality.as_deref().unwrap_or("-")),
            esc(i.sop_class_uid.as_deref().unwrap_or("-")),
            esc(&i.reason)
        ));
    }
    page(
        "Quarantine",
        &format!(
            "<p>{} instance(s). Release: <code>mado-gateway quarantine release ID --operator NAME</code></p>\
             <table border=\"1\"><tr><th>id</th><th>received</th><th>modality</th><th>SOP class</th><th>reason</th></tr>{rows}</table>",
            v.len()
        ),
    )
}

const FORM: &str = "<form method=\"post\"><p><label>Pseudonymous StudyInstanceUID <input name=\"study\"></label></p>\
<p><label>or patient pseudonym <input name=\"patient\"></label></p>\
<p><label>Operator <input name=\"operator\" required></label></p>\
<p><label>Reason <input name=\"reason\" required></label></p>\
<p><button type=\"submit\">Re-identify (audited)</button></p></form>";

async fn form(req: HttpRequest) -> HttpResponse {
    if let Some(r) = local_only(&req) {
        return r;
    }
    page("Re-identify", FORM)
}

#[derive(Deserialize)]
struct ReidForm {
    #[serde(default)]
    study: String,
    #[serde(default)]
    patient: String,
    operator: String,
    reason: String,
}

async fn reidentify(req: HttpRequest, f: web::Form<ReidForm>) -> HttpResponse {
    if let Some(r) = local_only(&req) {
        return r;
    }
    let Some(ctx) = CTX.get() else {
        return HttpResponse::ServiceUnavailable().body("not configured\n");
    };
    let f = f.into_inner();
    let (operator, reason) = (f.operator.trim().to_string(), f.reason.trim().to_string());
    if operator.is_empty() || reason.is_empty() {
        return HttpResponse::BadRequest().body("operator and reason are required\n");
    }
    let (what, action, pseudonym) = match (f.study.trim(), f.patient.trim()) {
        (s, "") if !s.is_empty() => (Lookup::Study(s.into()), "reidentify-study", s.to_string()),
        ("", p) if !p.is_empty() => (
            Lookup::Patient(p.into()),
            "reidentify-patient",
            p.to_string(),
        ),
        _ => return HttpResponse::BadRequest().body("give a study UID or a patient pseudonym\n"),
    };
    let spool_dir = ctx.spool_dir.clone();
    let vault_cfg = ctx.vault.clone();
    let r = web::block(move || -> Result<Vec<crate::vault::Entry>, String> {
        let v = vault_cfg
            .key_material()
            .and_then(|k| Vault::open(&vault_cfg.file(&spool_dir), &k))
            .map_err(|e| e.to_string())?;
        let found = v.find(&what);
        let n = found.as_ref().map(Vec::len).unwrap_or(0);
        crate::vault::audit(&spool_dir, &operator, &reason, action, &pseudonym, n)
            .map_err(|e| format!("audit log: {e}"))?;
        found.map_err(|e| e.to_string())
    })
    .await;
    match r {
        Ok(Ok(entries)) => {
            let json = serde_json::to_string_pretty(&entries).unwrap_or_default();
            page(
                "Re-identify",
                &format!(
                    "<p>{} record(s). This access was written to vault-audit.log.</p><pre>{}</pre>",
                    entries.len(),
                    esc(&json)
                ),
            )
        }
        Ok(Err(e)) => HttpResponse::InternalServerError().body(format!("{e}\n")),
        Err(_) => HttpResponse::InternalServerError().body("internal error\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
