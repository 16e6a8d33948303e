//! Absolute URLs (DICOMweb RetrieveURL) come from `[http] public_url`, or
//! from forwarding headers only when the peer is a trusted proxy; a
//! client's own `X-Forwarded-Host` is ignored.

use crate::dicom::{ct_slice, Options};
use crate::helpers::{put_object, registration, spawn_app_with, Backend, TestApp, Uids};

async fn retrieve_url(app: &TestApp, headers: &[(&str, &str)]) -> String {
    let u = Uids::new("2.25.9300", "2.25.9301", "2.25.9302");
    let ct = ct_slice(&Options::ct(
        u.study.as_str(),
        u.series.as_str(),
        u.sop.as_str(),
    ));
    put_object(app, &u, &ct.bytes).await;
    let status = app
        .register(&registration(&u, ct.metadata.clone(), &ct.bytes))
        .await
        .status();
    assert_eq!(status, 201);
    app.create_user("urls", "urls password 1").await;
    let b = app.signed_in_browser("urls", "urls password 1").await;
    let mut req = b.get(app.url("/dicomweb/studies?StudyInstanceUID=2.25.9300"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let v: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
    v[0]["00081190"]["Value"][0].as_str().unwrap().to_owned()
}

const FORWARDED: [(&str, &str); 3] = [
    ("x-forwarded-host", "evil.example"),
    ("x-forwarded-proto", "https"),
    ("forwarded", "host=evil.example;proto=https"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_clients_are_ignored() {
    let Some(app) = spawn_app_with(Backend::Sqlite, |_| {}).await else {
        return;
    };
    let url = retrieve_url(&app, &FORWARDED).await;
    assert_eq!(url, format!("{}/dicomweb/studies/2.25.9300", app.base));
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_url_is_the_base() {
    let Some(app) = spawn_app_with(Backend::Sqlite, |s| {
        s.http.public_url = Some("https://mado.example.org/".into());
        // Even a trusted proxy does not override the configured URL.
        s.http.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await
    else {
        return;
    };
    let url = retrieve_url(&app, &FORWARDED).await;
    assert_eq!(url, "https://mado.example.org/dicomweb/studies/2.25.9300");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_headers_are_honoured() {
    let Some(app) = spawn_app_with(Backend::Sqlite, |s| {
        s.http.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await
    else {
        return;
    };
    let url = retrieve_url(
        &app,
        &[
            ("x-forwarded-host", "mado.example.org"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(url, "https://mado.example.org/dicomweb/studies/2.25.9300");
    app.cleanup().await;
}
