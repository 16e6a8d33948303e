use crate::helpers::TestApp;

async fn health_and_request_ids(app: &TestApp) {
    let res = app.api.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-request-id").is_some());
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "ok"}));

    // A well-formed incoming id is honoured, a malformed one replaced.
    let res = app
        .api
        .get(app.url("/healthz"))
        .header("x-request-id", "test-req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "test-req-42");
    let res = app
        .api
        .get(app.url("/healthz"))
        .header("x-request-id", "bad id!")
        .send()
        .await
        .unwrap();
    assert_ne!(res.headers()["x-request-id"], "bad id!");

    // Unknown routes are problem+json 404s carrying the request id.
    let res = app
        .api
        .get(app.url("/no/such/route"))
        .header("x-request-id", "rid-404")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], 404);
    assert_eq!(body["request_id"], "rid-404");

    // Static assets.
    let res = app
        .api
        .get(app.url("/static/mado.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let res = app
        .api
        .get(app.url("/static/nope.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

crate::both_backends!(health, crate::basics::health_and_request_ids);
