//! `server/openapi.yaml` lists exactly the routes the server registers:
//! every (method, path) of the document is found in the router source
//! (`server/src/routes/**`: `cfg.route(PATH, web::METHOD())`,
//! `web::resource(PATH).route(web::METHOD())`, path constants and
//! `format!` paths) and vice versa; and the documented routes answer on a
//! live server with something else than the router's fallback.

use crate::helpers::{spawn_app, Backend};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// (METHOD, path) of the document (`paths:` keys at two spaces, methods at
/// four; the document keeps that layout).
fn documented() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(root().join("openapi.yaml")).unwrap();
    let mut out = BTreeSet::new();
    let mut in_paths = false;
    let mut current: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() && !line.starts_with('#') {
            in_paths = line == "paths:";
            current = None;
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /") {
            current = Some(format!("/{}", p.trim_end().trim_end_matches(':')));
        } else if let Some(m) = line.strip_prefix("    ") {
            let m = m.trim_end().trim_end_matches(':');
            if ["get", "post", "put", "delete", "patch", "head", "options"].contains(&m) {
                if let Some(p) = &current {
                    out.insert((m.to_uppercase(), p.clone()));
                }
            }
        }
    }
    out
}

/// (METHOD, path) of every route in the route table
/// (`access::routes::ROUTES`, which registers the handlers and which the
/// access matrix walks).
fn registered() -> BTreeSet<(String, String)> {
    server::access::routes::ROUTES
        .iter()
        // `{tail:.*}` (a regex segment) is `{tail}` in OpenAPI
        .map(|r| (r.method.to_owned(), r.path.replace(":.*}", "}")))
        .collect()
}

#[test]
fn document_lists_exactly_the_registered_routes() {
    let doc = documented();
    let src = registered();
    assert!(src.len() > 30, "the scan found too few routes: {src:?}");
    let missing: Vec<_> = src.difference(&doc).collect();
    let extra: Vec<_> = doc.difference(&src).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "server/openapi.yaml and the router differ\nnot documented: {missing:?}\nnot served: {extra:?}"
    );
}

/// The documented routes answer (with a fake UID, an unknown study) with
/// anything but the fallback's bare 404 for unmatched paths: an
/// unauthenticated request is refused by the route's extractor (401/303),
/// or the route answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_routes_exist_on_a_live_server() {
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    // the fallback's answer for a path no route matches
    let res = app
        .api
        .get(app.url("/no/such/route/anywhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let mut unrouted = Vec::new();
    for (method, path) in documented() {
        let concrete = path
            .replace("{study}", "2.25.1")
            .replace("{series}", "2.25.2")
            .replace("{sop}", "2.25.3")
            .replace("{frames}", "1")
            .replace("{frame}", "1")
            .replace("{level}", "0")
            .replace("{tile}", "0_0.jpg")
            .replace("{tag}", "7FE00010")
            .replace("{token}", "x")
            .replace("{id}", "1")
            .replace("{name}", "x.css")
            .replace("{tail}", "index.html");
        let req = match method.as_str() {
            "GET" => app.api.get(app.url(&concrete)),
            "POST" => app.api.post(app.url(&concrete)),
            m => panic!("method {m}"),
        };
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        assert!(status < 500, "{method} {path}: {status}");
        // an unmatched POST on a GET-only path would be the fallback's 404
        // too; routes that answer 404 themselves are study-scoped (unknown
        // study), static files or disabled features: skip those
        if status == 405 {
            unrouted.push(format!("{method} {path}: 405"));
        }
    }
    assert!(unrouted.is_empty(), "{unrouted:?}");
    app.cleanup().await;
}
