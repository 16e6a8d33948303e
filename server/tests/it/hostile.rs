//! Hostile input to the DICOMweb origin: numbers from the URL that
//! overflow, data sets nested 10,000 deep, deflate bombs, instances that
//! declare far more frames than they hold, oversized frame lists and STOW
//! bodies. Each answer must be a clear HTTP error, never a closed
//! connection, a crash or a wrong tile; and STOW / QIDO leave audit rows.

use crate::dicom::{ct_slice, Options};
use crate::helpers::{
    put_object, registration, spawn_app_with, Backend, TestApp, Uids, GATEWAY_TOKEN,
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};
use server::db::entities::audit_events;
use server::services::dicomweb::multipart;
use std::io::Write;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const W: &str = "/dicomweb";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

// ---- raw DICOM bytes ----

/// Explicit VR LE element with a 2-byte length (values padded to even).
fn el(group: u16, element: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut v = value.to_vec();
    if v.len() % 2 == 1 {
        v.push(if vr == b"UI" { 0 } else { b' ' });
    }
    let mut out = Vec::new();
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(vr);
    out.extend_from_slice(&(v.len() as u16).to_le_bytes());
    out.extend(v);
    out
}

/// Explicit VR LE header of an element with a 4-byte length.
fn long(group: u16, element: u16, vr: &[u8; 2], len: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(vr);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&len.to_le_bytes());
    out
}

fn marker(element: u16, len: u32) -> Vec<u8> {
    let mut v = vec![0xFE, 0xFF];
    v.extend_from_slice(&element.to_le_bytes());
    v.extend_from_slice(&len.to_le_bytes());
    v
}

/// The identifying head of a de-identified secondary capture.
fn head(study: &str, series: &str, sop: &str) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend(el(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.7"));
    d.extend(el(0x0008, 0x0018, b"UI", sop.as_bytes()));
    d.extend(el(0x0008, 0x0060, b"CS", b"OT"));
    d.extend(el(0x0012, 0x0062, b"CS", b"YES"));
    d.extend(el(0x0020, 0x000D, b"UI", study.as_bytes()));
    d.extend(el(0x0020, 0x000E, b"UI", series.as_bytes()));
    d
}

/// `depth` undefined-length sequences nested in each other.
fn nested(depth: usize) -> Vec<u8> {
    let mut d = Vec::new();
    for _ in 0..depth {
        d.extend(long(0x0040, 0x0275, b"SQ", u32::MAX));
        d.extend(marker(0xE000, u32::MAX));
    }
    d.extend(el(0x0040, 0x0007, b"LO", b"deep"));
    for _ in 0..depth {
        d.extend(marker(0xE00D, 0));
        d.extend(marker(0xE0DD, 0));
    }
    d
}

/// A Part 10 file: preamble, file meta group, then `dataset` (already
/// encoded in `ts`).
fn part10(ts: &str, sop: &str, dataset: &[u8]) -> Vec<u8> {
    let mut meta = long(0x0002, 0x0001, b"OB", 2);
    meta.extend_from_slice(&[0, 1]);
    meta.extend(el(0x0002, 0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.7"));
    meta.extend(el(0x0002, 0x0003, b"UI", sop.as_bytes()));
    meta.extend(el(0x0002, 0x0010, b"UI", ts.as_bytes()));
    meta.extend(el(0x0002, 0x0012, b"UI", b"1.2.826.0.1.3680043.10.1"));
    let mut f = vec![0u8; 128];
    f.extend_from_slice(b"DICM");
    f.extend(el(
        0x0002,
        0x0000,
        b"UL",
        &(meta.len() as u32).to_le_bytes(),
    ));
    f.extend(meta);
    f.extend_from_slice(dataset);
    f
}

/// Raw deflate of the data set `head` followed by an OB element of
/// `zeros` zero bytes, streamed (never held inflated).
fn deflate_bomb(head: &[u8], zeros: u32) -> Vec<u8> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(head).unwrap();
    enc.write_all(&long(0x0009, 0x1010, b"OB", zeros)).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = zeros as usize;
    while left > 0 {
        let n = left.min(chunk.len());
        enc.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    enc.finish().unwrap()
}

async fn stow(app: &TestApp, parts: &[Vec<u8>]) -> (u16, Value) {
    let b = multipart::boundary();
    let parts: Vec<(String, bytes::Bytes)> = parts
        .iter()
        .map(|p| ("application/dicom".to_owned(), p.clone().into()))
        .collect();
    let res = app
        .api
        .post(app.url(&format!("{W}/studies")))
        .bearer_auth(GATEWAY_TOKEN)
        .header(
            "content-type",
            multipart::content_type(&b, "application/dicom", None),
        )
        .body(multipart::encode(&b, &parts))
        .send()
        .await
        .expect("an answer, not a closed connection");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn audit_rows(app: &TestApp, action: &str) -> Vec<audit_events::Model> {
    audit_events::Entity::find()
        .filter(audit_events::Column::Action.eq(action))
        .all(&app.db)
        .await
        .unwrap()
}

/// Ingest `bytes` as `uids` with `metadata` straight into the store and
/// the index (what a gateway does).
async fn ingest_raw(app: &TestApp, uids: &Uids, metadata: Value, bytes: &[u8], ts: &str) {
    put_object(app, uids, bytes).await;
    let mut reg = registration(uids, metadata, bytes);
    reg["transfer_syntax_uid"] = json!(ts);
    let res = app.register(&reg).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
}

// ---- 9: panics and crashes ----

async fn url_numbers(app: &TestApp) {
    app.create_user("h3", "h3 password").await;
    let c = app.signed_in_browser("h3", "h3 password").await;
    let uids = Uids::new("2.25.9301", "2.25.9311", "2.25.9321");
    let ct = ct_slice(&Options::ct(
        uids.study.as_str(),
        uids.series.as_str(),
        uids.sop.as_str(),
    ));
    put_object(app, &uids, &ct.bytes).await;
    assert_eq!(
        app.register(&registration(&uids, ct.metadata.clone(), &ct.bytes))
            .await
            .status(),
        201
    );
    let get = |path: String| {
        let c = c.clone();
        let url = app.url(&path);
        async move {
            c.get(url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{path}: no answer ({e})"))
                .status()
                .as_u16()
        }
    };
    // QIDO offset / limit: past i64, negative, past u64
    for q in [
        "offset=9223372036854775808",
        "offset=18446744073709551615",
        "offset=1099511627777",
        "offset=-1",
        "limit=-5",
        "limit=99999999999999999999999",
    ] {
        for level in ["studies", "series"] {
            assert_eq!(get(format!("{W}/{level}?{q}")).await, 400, "{level}?{q}");
        }
        assert_eq!(
            get(format!("{W}/studies/2.25.9301/instances?{q}")).await,
            400,
            "instances?{q}"
        );
    }
    for q in ["offset=1099511627776", "limit=9223372036854775808&offset=0"] {
        assert_eq!(get(format!("{W}/studies?{q}")).await, 200, "{q}");
    }
    // tiles: 16777216 × 256 = 2^32 must not wrap to tile 0
    let i = format!("{W}/studies/2.25.9301/series/2.25.9311/instances/2.25.9321");
    assert_eq!(get(format!("{i}/frames/1/tiles/0/0_0.jpg")).await, 200);
    for t in [
        "0/16777216_0.jpg",
        "0/0_16777216.jpg",
        "0/4294967295_4294967295.jpg",
        "4294967295/0_0.jpg",
        "6/16777216_16777216.jpg",
        "0/99999999999_0.jpg",
    ] {
        assert_eq!(get(format!("{i}/frames/1/tiles/{t}")).await, 404, "{t}");
    }
    for f in ["4294967295", "4294967296", "0"] {
        let s = get(format!("{i}/frames/{f}/rendered")).await;
        assert!(s == 404 || s == 400, "frame {f}: {s}");
    }
    // viewport / window / quality extremes: clamped or refused, never a crash
    for (q, want) in [
        (
            "viewport=4096,4096,4294967295,4294967295,4294967295,4294967295",
            200,
        ),
        ("viewport=1,1,0,0,4294967295,4294967295", 200),
        ("viewport=4097,1", 400),
        ("viewport=4294967296,1", 400),
        ("window=1e308,1e308", 200),
        ("window=-1e308,1.7e308,sigmoid", 200),
        ("window=0,1e-300", 200),
        ("quality=256", 400),
    ] {
        assert_eq!(get(format!("{i}/rendered?{q}")).await, want, "{q}");
    }
    assert_eq!(get(format!("{i}/frames/1/tiles.json")).await, 200);

    // QIDO searches are audited with their parameters (not the results)
    let rows = audit_rows(app, "study.search").await;
    assert!(
        rows.iter()
            .any(|r| r.detail.contains("offset=9223372036854775808") && r.outcome == "failure"),
        "{:?}",
        rows.iter().map(|r| &r.detail).collect::<Vec<_>>()
    );
    assert!(rows.iter().any(
        |r| r.detail.contains("QIDO-RS studies?offset=1099511627776")
            && r.outcome == "success"
            && r.actor.ends_with(":h3")
    ));
    assert!(!rows.iter().any(|r| r.detail.contains("SYNTHETIC")));
    // and a refused (anonymous) search too
    let res = app
        .api
        .get(app.url(&format!("{W}/studies?PatientName=X*")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let rows = audit_rows(app, "study.search").await;
    assert!(rows
        .iter()
        .any(|r| r.outcome == "denied" && r.actor_kind == "anonymous"));
}
crate::both_backends!(url_numbers, crate::hostile::url_numbers);

async fn nesting_and_bombs(app: &TestApp) {
    // 10,000 nested sequences: refused (0xC000), and the server lives on
    let deep = part10(
        EXPLICIT_LE,
        "2.25.9421",
        &[head("2.25.9401", "2.25.9411", "2.25.9421"), nested(10_000)].concat(),
    );
    let (status, v) = stow(app, &[deep]).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["00081198"]["Value"][0]["00081197"]["Value"][0], 0xC000);
    // 33 levels: over the default of 32; 32 levels: stored
    let (status, _) = stow(
        app,
        &[part10(
            EXPLICIT_LE,
            "2.25.9422",
            &[head("2.25.9401", "2.25.9411", "2.25.9422"), nested(33)].concat(),
        )],
    )
    .await;
    assert_eq!(status, 409);
    let (status, v) = stow(
        app,
        &[part10(
            EXPLICIT_LE,
            "2.25.9423",
            &[head("2.25.9401", "2.25.9411", "2.25.9423"), nested(32)].concat(),
        )],
    )
    .await;
    assert_eq!(status, 200, "{v}");

    // a deflate bomb (inflates past the configured 32 MiB): refused fast
    let bomb_ds = deflate_bomb(&head("2.25.9401", "2.25.9411", "2.25.9424"), 256 << 20);
    assert!(bomb_ds.len() < 1 << 20, "{}", bomb_ds.len());
    let bomb = part10(DEFLATED, "2.25.9424", &bomb_ds);
    let started = std::time::Instant::now();
    let (status, v) = stow(app, std::slice::from_ref(&bomb)).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["00081198"]["Value"][0]["00081197"]["Value"][0], 0xC000);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));

    // the same bomb and the deep data set already in the store (as a
    // gateway would put them): WADO frames and rendering refuse them
    app.create_user("h3b", "h3b password").await;
    let c = app.signed_in_browser("h3b", "h3b password").await;
    let meta = |sop: &str| {
        json!({
            "0020000D": {"vr": "UI", "Value": ["2.25.9402"]},
            "0020000E": {"vr": "UI", "Value": ["2.25.9412"]},
            "00080018": {"vr": "UI", "Value": [sop]},
            "00080060": {"vr": "CS", "Value": ["OT"]},
            "00280010": {"vr": "US", "Value": [64]},
            "00280011": {"vr": "US", "Value": [64]},
        })
    };
    let b_uids = Uids::new("2.25.9402", "2.25.9412", "2.25.9431");
    ingest_raw(app, &b_uids, meta("2.25.9431"), &bomb, DEFLATED).await;
    let d_uids = Uids::new("2.25.9402", "2.25.9412", "2.25.9432");
    let deep = part10(
        EXPLICIT_LE,
        "2.25.9432",
        &[head("2.25.9402", "2.25.9412", "2.25.9432"), nested(10_000)].concat(),
    );
    ingest_raw(app, &d_uids, meta("2.25.9432"), &deep, EXPLICIT_LE).await;
    for sop in ["2.25.9431", "2.25.9432"] {
        let i = format!("{W}/studies/2.25.9402/series/2.25.9412/instances/{sop}");
        for path in [
            format!("{i}/rendered"),
            format!("{i}/frames/1/tiles.json"),
            format!("{i}/frames/1"),
            format!("{i}/bulkdata/7FE00010"),
            format!("/studies/2.25.9402/series/2.25.9412/instances/{sop}/rendered.png"),
        ] {
            let res = c
                .get(app.url(&path))
                .header("accept", "*/*")
                .send()
                .await
                .unwrap_or_else(|e| panic!("{path}: no answer ({e})"));
            // an unreadable stored object: 5xx with a generic body (501
            // where the refusal is about the image), never a dropped
            // connection or a crash
            let status = res.status().as_u16();
            let body = res.text().await.unwrap_or_default();
            assert!(status == 501 || status == 500, "{path}: {status} {body}");
            assert!(
                !body.contains("nested") && !body.contains("inflate"),
                "{body}"
            );
        }
    }
}

mod nesting_and_bombs {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        if let Some(app) = super::spawn_app_with(super::Backend::Sqlite, |s| {
            s.limits.dicom_max_inflated = 32 << 20;
        })
        .await
        {
            super::nesting_and_bombs(&app).await;
            app.cleanup().await;
        }
    }
}

// ---- 10: memory ----

/// A native 64×64 16-bit instance declaring `frames` frames, with pixel
/// data for one.
fn many_frames(uids: &Uids, frames: u32) -> (Vec<u8>, Value) {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let ct = ct_slice(&Options::ct(
        uids.study.as_str(),
        uids.series.as_str(),
        uids.sop.as_str(),
    ));
    let mut obj = dicom_object::OpenFileOptions::new()
        .from_reader(&ct.bytes[..])
        .unwrap();
    obj.put(DataElement::new(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        PrimitiveValue::from(frames.to_string()),
    ));
    let mut bytes = Vec::new();
    obj.write_all(&mut bytes).unwrap();
    let mut meta = ct.metadata;
    meta["00280008"] = json!({"vr": "IS", "Value": [frames]});
    (bytes, meta)
}

async fn declared_sizes(app: &TestApp) {
    app.create_user("h3c", "h3c password").await;
    let c = app.signed_in_browser("h3c", "h3c password").await;
    let uids = Uids::new("2.25.9501", "2.25.9511", "2.25.9521");
    let (bytes, meta) = many_frames(&uids, 50_000_000);
    ingest_raw(app, &uids, meta, &bytes, EXPLICIT_LE).await;
    let i = format!("{W}/studies/2.25.9501/series/2.25.9511/instances/2.25.9521");
    for path in [
        format!("{i}/bulkdata/7FE00010"),
        format!("{i}/frames/1"),
        format!("{i}/frames/49999999"),
        format!("{i}/frames/49999999/rendered"),
        format!("{i}/frames/2/tiles.json"),
    ] {
        let started = std::time::Instant::now();
        let res = c
            .get(app.url(&path))
            .header("accept", "*/*")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: no answer ({e})"));
        // the stored object's declared sizes do not fit its data: 422
        assert_eq!(res.status(), 422, "{path}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{path}"
        );
    }

    // frame lists: at most 256 entries
    let ok = Uids::new("2.25.9501", "2.25.9511", "2.25.9522");
    let ct = ct_slice(&Options::ct(
        ok.study.as_str(),
        ok.series.as_str(),
        ok.sop.as_str(),
    ));
    ingest_raw(app, &ok, ct.metadata.clone(), &ct.bytes, EXPLICIT_LE).await;
    let i = format!("{W}/studies/2.25.9501/series/2.25.9511/instances/2.25.9522");
    let list = |n: usize| vec!["1"; n].join(",");
    let res = c
        .get(app.url(&format!("{i}/frames/{}", list(4096))))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = c
        .get(app.url(&format!("{i}/frames/{}", list(256))))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.unwrap().len() > 256 * 64 * 64 * 2);
}
crate::both_backends!(declared_sizes, crate::hostile::declared_sizes);

/// Send raw HTTP/1.1 `head` (and `body`), return the status line.
async fn raw_http(app: &TestApp, head: &str, body: &[u8]) -> String {
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    if !body.is_empty() {
        let _ = s.write_all(body).await;
    }
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer before the body is sent")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

async fn stow_size_cap(app: &TestApp) {
    let b = "b0undary";
    let ct = format!("multipart/related; type=\"application/dicom\"; boundary={b}");
    // 200 MiB announced: 413 before any byte of the body is read
    let head = format!(
        "POST {W}/studies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {GATEWAY_TOKEN}\r\n\
         Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        200u64 << 20
    );
    let status = raw_http(app, &head, b"").await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    // chunked, past the 1 MiB cap: 413 once it passes
    let head = format!(
        "POST {W}/studies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {GATEWAY_TOKEN}\r\n\
         Content-Type: {ct}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut body = Vec::new();
    for _ in 0..24 {
        body.extend_from_slice(format!("{:x}\r\n", 64 * 1024).as_bytes());
        body.extend(std::iter::repeat_n(b'x', 64 * 1024));
        body.extend_from_slice(b"\r\n");
    }
    let status = raw_http(app, &head, &body).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");

    // within the cap: stored; audit rows for the accepted and the refused
    let ok = ct_slice(&Options::ct("2.25.9601", "2.25.9611", "2.25.9621"));
    let mut obj = dicom_object::OpenFileOptions::new()
        .from_reader(&ok.bytes[..])
        .unwrap();
    obj.put(dicom_core::DataElement::new(
        dicom_dictionary_std::tags::PATIENT_IDENTITY_REMOVED,
        dicom_core::VR::CS,
        dicom_core::PrimitiveValue::from("YES"),
    ));
    let mut ok_bytes = Vec::new();
    obj.write_all(&mut ok_bytes).unwrap();
    let (status, _) = stow(app, &[ok_bytes, b"garbage".to_vec()]).await;
    assert_eq!(status, 202);
    let rows = audit_rows(app, "study.store").await;
    let stored: Vec<_> = rows.iter().filter(|r| r.outcome == "success").collect();
    assert_eq!(stored.len(), 1, "{rows:?}");
    assert_eq!(stored[0].study_uid.as_deref(), Some("2.25.9601"));
    assert_eq!(stored[0].actor_kind, "gateway");
    let failed: Vec<_> = rows.iter().filter(|r| r.outcome == "failure").collect();
    assert!(
        failed.iter().any(|r| r.detail.contains("HTTP 413")),
        "{rows:?}"
    );
    assert!(
        failed.iter().any(|r| r.detail.contains("0xC000")),
        "{rows:?}"
    );
    // refused for lack of credentials: a denied row
    let res = app
        .api
        .post(app.url(&format!("{W}/studies")))
        .header("content-type", &ct)
        .body("--b0undary--")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(audit_rows(app, "study.store")
        .await
        .iter()
        .any(|r| r.outcome == "denied" && r.actor_kind == "anonymous"));
}

mod stow_size_cap {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        if let Some(app) = super::spawn_app_with(super::Backend::Sqlite, |s| {
            s.limits.stow_max_bytes = 1 << 20;
        })
        .await
        {
            super::stow_size_cap(&app).await;
            app.cleanup().await;
        }
    }
}
