//! `server/openapi.yaml` lists exactly the routes the server registers:
//! every (method, path) of the document is found in the router source
//! (`server/src/routes/**`: `cfg.route(PATH, web::METHOD())`,
//! `web::resource(PATH).route(web::METHOD())`, path constants and
//! `format!` paths) and vice versa; and the documented routes answer on a
//! live server with something else than the router's fallback.

use crate::helpers::{spawn_app, Backend};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Source without line comments and without whitespace.
fn squeezed(text: &str) -> String {
    text.lines()
        .map(|l| match l.trim_start().starts_with("//") {
            true => "",
            false => l,
        })
        .collect::<String>()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// `NAME` → value of every `const NAME: &str = "…";` in `text` (squeezed).
fn consts(text: &str, into: &mut BTreeMap<String, String>) {
    let mut rest = text;
    while let Some(i) = rest.find("const") {
        rest = &rest[i + 5..];
        let Some((name, tail)) = rest.split_once(":&str=\"") else {
            continue;
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if let Some((value, _)) = tail.split_once('"') {
            into.insert(name.to_owned(), value.to_owned());
        }
    }
}

/// The path an argument of `route(` / `resource(` names.
fn path_of(arg: &str, local: &BTreeMap<String, String>) -> Option<String> {
    let arg = arg.trim_start_matches('&');
    if let Some(lit) = arg.strip_prefix('"') {
        return Some(lit.trim_end_matches('"').to_owned());
    }
    if let Some(f) = arg.strip_prefix("format!(\"") {
        let f = f.trim_end_matches(')').trim_end_matches('"');
        let mut out = String::new();
        let mut rest = f;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("{{") {
                out.push('{');
                rest = r;
            } else if let Some(r) = rest.strip_prefix("}}") {
                out.push('}');
                rest = r;
            } else if let Some(r) = rest.strip_prefix('{') {
                let (name, r) = r.split_once('}')?;
                out.push_str(local.get(name)?);
                rest = r;
            } else {
                let c = rest.chars().next()?;
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        return Some(out);
    }
    let name = arg.rsplit("::").next()?;
    local.get(name).cloned()
}

/// The argument of a call whose `(` was just consumed: up to the `,` or
/// `)` at depth 0.
fn first_arg(s: &str) -> &str {
    let (mut depth, mut quoted) = (0i32, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth == 0 => return &s[..i],
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => return &s[..i],
            _ => {}
        }
    }
    s
}

/// (METHOD, path) registered in `server/src/routes/**`.
fn registered() -> BTreeSet<(String, String)> {
    let mut global = BTreeMap::new();
    let mut files = Vec::new();
    rust_files(&root().join("src/access"), &mut files);
    for f in &files {
        consts(&squeezed(&std::fs::read_to_string(f).unwrap()), &mut global);
    }
    global.insert("INGEST_PATH".into(), mado_core::wire::INGEST_PATH.into());
    let mut files = Vec::new();
    rust_files(&root().join("src/routes"), &mut files);
    let mut out = BTreeSet::new();
    for f in &files {
        let s = squeezed(&std::fs::read_to_string(f).unwrap());
        let Some(cfg) = s.split_once("pubfnconfigure(cfg:&mutweb::ServiceConfig){") else {
            continue;
        };
        let mut local = global.clone();
        consts(&s, &mut local);
        let body = cfg.1;
        let mut resource: Option<String> = None;
        let mut i = 0;
        while i < body.len() {
            let rest = &body[i..];
            if let Some(r) = rest.strip_prefix("web::resource(") {
                resource = path_of(first_arg(r), &local);
                assert!(
                    resource.is_some(),
                    "{}: resource {}",
                    f.display(),
                    first_arg(r)
                );
                i += "web::resource(".len();
            } else if let Some(r) = rest.strip_prefix(".route(") {
                let arg = first_arg(r);
                let (path, call) = if arg.starts_with("web::") {
                    (resource.clone(), arg)
                } else {
                    let after = &r[arg.len() + 1..];
                    (path_of(arg, &local), first_arg(after))
                };
                let path = path.unwrap_or_else(|| panic!("{}: route {arg}", f.display()));
                let method = call
                    .strip_prefix("web::")
                    .and_then(|m| m.split_once('('))
                    .map(|(m, _)| m.to_uppercase())
                    .unwrap_or_else(|| panic!("{}: method of {path}: {call}", f.display()));
                // `{tail:.*}` (a regex segment) is `{tail}` in OpenAPI
                let path = path.replace(":.*}", "}");
                out.insert((method, path));
                i += ".route(".len();
            } else {
                i += rest.chars().next().map_or(1, char::len_utf8);
            }
        }
    }
    out
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
