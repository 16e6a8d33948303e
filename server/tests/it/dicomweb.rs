//! DICOMweb origin: QIDO-RS matching, WADO-RS metadata / retrieve / frames /
//! rendered, STOW-RS, and the 400/401/404/406 answers.

use crate::dicom::{ct_slice, Options, Synthetic};
use crate::helpers::{put_object, registration, TestApp, Uids, GATEWAY_TOKEN};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use serde_json::{json, Value};
use server::services::dicomweb::multipart;

const W: &str = "/dicomweb";

/// Ingest one synthetic CT slice with some index attributes overridden.
async fn ingest(app: &TestApp, uids: &Uids, patch: Value) -> Synthetic {
    let mut ct = ct_slice(&Options::ct(
        uids.study.as_str(),
        uids.series.as_str(),
        uids.sop.as_str(),
    ));
    if let (Some(m), Some(p)) = (ct.metadata.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            m.insert(k.clone(), v.clone());
        }
    }
    put_object(app, uids, &ct.bytes).await;
    let res = app
        .register(&registration(uids, ct.metadata.clone(), &ct.bytes))
        .await;
    assert_eq!(res.status(), 201);
    ct
}

async fn seed(app: &TestApp) -> (Synthetic, Uids) {
    let a = Uids::new("2.25.7001", "2.25.7011", "2.25.7021");
    let ct = ingest(app, &a, json!({})).await;
    ingest(
        app,
        &Uids::new("2.25.7001", "2.25.7011", "2.25.7022"),
        json!({"00200013": {"vr": "IS", "Value": [2]}}),
    )
    .await;
    ingest(
        app,
        &Uids::new("2.25.7002", "2.25.7012", "2.25.7023"),
        json!({
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "OTHER^PERSON"}]},
            "00100020": {"vr": "LO", "Value": ["PSEUDO-0002"]},
            "00080020": {"vr": "DA", "Value": ["20230610"]},
            "00080060": {"vr": "CS", "Value": ["MR"]},
        }),
    )
    .await;
    (ct, a)
}

async fn get_json(c: &reqwest::Client, url: String) -> (u16, Value) {
    let res = c.get(url).send().await.unwrap();
    let status = res.status().as_u16();
    let body = res.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn uids_of(v: &Value, tag: &str) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d[tag]["Value"][0].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

async fn qido(app: &TestApp) {
    seed(app).await;
    // No session: 401.
    assert_eq!(
        app.api
            .get(app.url(&format!("{W}/studies")))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    app.create_user("dw", "dw password").await;
    let c = app.signed_in_browser("dw", "dw password").await;
    let url = |q: &str| app.url(&format!("{W}{q}"));

    let res = c.get(url("/studies")).send().await.unwrap();
    assert_eq!(res.headers()["content-type"], "application/dicom+json");
    let all: Value = res.json().await.unwrap();
    assert_eq!(uids_of(&all, "0020000D"), ["2.25.7001", "2.25.7002"]);
    let s1 = all
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["0020000D"]["Value"][0] == "2.25.7001")
        .unwrap();
    assert_eq!(
        s1["00201208"]["Value"][0], 2,
        "NumberOfStudyRelatedInstances"
    );
    assert_eq!(s1["00201206"]["Value"][0], 1, "NumberOfStudyRelatedSeries");
    assert_eq!(s1["00080061"]["Value"][0], "CT");
    assert_eq!(s1["00100010"]["Value"][0]["Alphabetic"], "ANON^SYNTHETIC");

    for (q, expect) in [
        ("/studies?PatientID=PSEUDO-0002", vec!["2.25.7002"]),
        ("/studies?00100020=PSEUDO-0001", vec!["2.25.7001"]),
        ("/studies?PatientName=OTH*", vec!["2.25.7002"]),
        (
            "/studies?PatientName=oth*&fuzzymatching=true",
            vec!["2.25.7002"],
        ),
        ("/studies?PatientName=ANON%5E%3FYNTHETIC", vec!["2.25.7001"]),
        ("/studies?StudyDate=20240101-", vec!["2.25.7001"]),
        ("/studies?StudyDate=-20231231", vec!["2.25.7002"]),
        ("/studies?StudyDate=20230610", vec!["2.25.7002"]),
        (
            "/studies?StudyDate=20200101-20250101",
            vec!["2.25.7001", "2.25.7002"],
        ),
        ("/studies?ModalitiesInStudy=MR", vec!["2.25.7002"]),
        (
            "/studies?StudyInstanceUID=2.25.7002,2.25.9",
            vec!["2.25.7002"],
        ),
        (
            "/studies?StudyInstanceUID=2.25.7001%5C2.25.7002",
            vec!["2.25.7001", "2.25.7002"],
        ),
        ("/studies?PatientName=NOBODY", vec![]),
    ] {
        let (status, v) = get_json(&c, url(q)).await;
        assert_eq!(status, 200, "{q}");
        assert_eq!(uids_of(&v, "0020000D"), expect, "{q}");
    }
    let (_, v) = get_json(&c, url("/studies?limit=1&offset=1")).await;
    assert_eq!(v.as_array().unwrap().len(), 1);

    for q in [
        "/studies?StudyDate=2024",
        "/studies?NoSuchKeyword=1",
        "/studies?limit=x",
        "/studies?StudyInstanceUID=abc",
        "/studies?SOPInstanceUID=2.25.1",
        "/studies?includefield=Bogus",
    ] {
        let res = c.get(url(q)).send().await.unwrap();
        assert_eq!(res.status(), 400, "{q}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }

    // Series.
    let (_, v) = get_json(&c, url("/studies/2.25.7001/series")).await;
    assert_eq!(uids_of(&v, "0020000E"), ["2.25.7011"]);
    assert_eq!(v[0]["00201209"]["Value"][0], 2);
    assert_eq!(v[0]["00080060"]["Value"][0], "CT");
    let (_, v) = get_json(&c, url("/series?Modality=MR")).await;
    assert_eq!(uids_of(&v, "0020000E"), ["2.25.7012"]);
    let (_, v) = get_json(&c, url("/series")).await;
    assert_eq!(v.as_array().unwrap().len(), 2);
    let (status, _) = get_json(&c, url("/studies/2.25.99999/series")).await;
    assert_eq!(status, 404);

    // Instances.
    let (_, v) = get_json(&c, url("/studies/2.25.7001/series/2.25.7011/instances")).await;
    assert_eq!(uids_of(&v, "00080018"), ["2.25.7021", "2.25.7022"]);
    assert_eq!(v[0]["00280010"]["Value"][0], 64);
    assert_eq!(
        v[0]["00280100"]["Value"][0], 16,
        "BitsAllocated from metadata"
    );
    assert!(v[0]["00081190"]["Value"][0]
        .as_str()
        .unwrap()
        .ends_with("/dicomweb/studies/2.25.7001/series/2.25.7011/instances/2.25.7021"));
    let (_, v) = get_json(&c, url("/studies/2.25.7001/instances?InstanceNumber=2")).await;
    assert_eq!(uids_of(&v, "00080018"), ["2.25.7022"]);
    let (_, v) = get_json(
        &c,
        url("/studies/2.25.7001/instances?includefield=WindowCenter&SOPInstanceUID=2.25.7021"),
    )
    .await;
    let wc = &v[0]["00281050"]["Value"][0];
    assert!(wc == 40 || wc == "40", "{wc}");
    let (_, v) = get_json(&c, url("/studies/2.25.7001/instances?includefield=all")).await;
    assert!(
        v[0].get("00281053").is_some(),
        "RescaleSlope with includefield=all"
    );
}
crate::both_backends!(qido_rs, crate::dicomweb::qido);

async fn wado(app: &TestApp) {
    let (ct, _) = seed(app).await;
    app.create_user("dw", "dw password").await;
    let c = app.signed_in_browser("dw", "dw password").await;
    let inst = format!("{W}/studies/2.25.7001/series/2.25.7011/instances/2.25.7021");

    // Metadata.
    let res = c
        .get(app.url(&format!("{W}/studies/2.25.7001/series/2.25.7011/metadata")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/dicom+json");
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    let v: Value = res.json().await.unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["00080018"]["Value"][0], "2.25.7021");
    assert!(v[0]["7FE00010"]["BulkDataURI"]
        .as_str()
        .unwrap()
        .ends_with(&format!("{inst}/bulkdata/7FE00010")));
    let res = c
        .get(app.url(&format!("{W}/studies/2.25.7001/series/2.25.7011/metadata")))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    let (s, v) = get_json(&c, app.url(&format!("{W}/studies/2.25.7001/metadata"))).await;
    assert_eq!((s, v.as_array().unwrap().len()), (200, 2));
    let (s, v) = get_json(&c, app.url(&format!("{inst}/metadata"))).await;
    assert_eq!((s, v.as_array().unwrap().len()), (200, 1));
    for p in [
        format!("{W}/studies/2.25.7001/series/2.25.7012/metadata"),
        format!("{W}/studies/2.25.7001/series/2.25.7011/instances/2.25.7023/metadata"),
        format!("{W}/studies/2.25.9/metadata"),
        format!("{W}/studies/not-a-uid/metadata"),
    ] {
        assert_eq!(
            c.get(app.url(&p)).send().await.unwrap().status(),
            404,
            "{p}"
        );
    }
    assert_eq!(
        app.api
            .get(app.url(&format!("{inst}/metadata")))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // Retrieve instance / series / study.
    for (path, n) in [
        (inst.clone(), 1),
        (format!("{W}/studies/2.25.7001/series/2.25.7011"), 2),
        (format!("{W}/studies/2.25.7001"), 2),
    ] {
        let res = c
            .get(app.url(&path))
            .header(
                "accept",
                r#"multipart/related; type="application/dicom"; transfer-syntax=*"#,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let ctype = res.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ctype.starts_with("multipart/related"), "{ctype}");
        let boundary = multipart::boundary_of(&ctype).unwrap();
        let body = res.bytes().await.unwrap();
        let parts = multipart::parse(&body, &boundary).unwrap();
        assert_eq!(parts.len(), n, "{path}");
        assert!(parts[0]
            .content_type
            .as_deref()
            .unwrap()
            .starts_with("application/dicom"));
        if n == 1 {
            assert_eq!(&parts[0].body[..], &ct.bytes[..]);
        }
    }
    let res = c
        .get(app.url(&inst))
        .header(
            "accept",
            r#"multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 406);

    // Frames: native pixel data of the 64×64 16-bit slice.
    let res = c
        .get(app.url(&format!("{inst}/frames/1")))
        .header(
            "accept",
            r#"multipart/related; type="application/octet-stream"; transfer-syntax=*"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ctype = res.headers()["content-type"].to_str().unwrap().to_owned();
    let body = res.bytes().await.unwrap();
    let parts = multipart::parse(&body, &multipart::boundary_of(&ctype).unwrap()).unwrap();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].body.len(), 64 * 64 * 2);
    let tail = &ct.bytes[ct.bytes.len() - 64 * 64 * 2..];
    assert_eq!(&parts[0].body[..], tail);
    let res = c
        .get(app.url(&format!("{inst}/bulkdata/7FE00010")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        c.get(app.url(&format!("{inst}/frames/2")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.get(app.url(&format!("{inst}/frames/x")))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        c.get(app.url(&format!("{inst}/frames/1")))
            .header("accept", r#"multipart/related; type="image/jp2""#)
            .send()
            .await
            .unwrap()
            .status(),
        406
    );
}
crate::both_backends!(wado_rs, crate::dicomweb::wado);

async fn rendered(app: &TestApp) {
    seed(app).await;
    app.create_user("dw", "dw password").await;
    let c = app.signed_in_browser("dw", "dw password").await;
    let inst = format!("{W}/studies/2.25.7001/series/2.25.7011/instances/2.25.7021");
    let get = |path: String, accept: &'static str| {
        let c = c.clone();
        let url = app.url(&path);
        async move {
            let res = c.get(url).header("accept", accept).send().await.unwrap();
            let status = res.status().as_u16();
            let ct = res
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, ct, res.bytes().await.unwrap())
        }
    };
    let (s, ct, body) = get(format!("{inst}/rendered"), "*/*").await;
    assert_eq!((s, ct.as_str()), (200, "image/jpeg"));
    assert_eq!(&body[..2], &[0xFF, 0xD8]);
    let (s, ct, body) = get(format!("{inst}/rendered"), "image/png").await;
    assert_eq!((s, ct.as_str()), (200, "image/png"));
    let png = png::Decoder::new(std::io::Cursor::new(body.clone()));
    let info = png.read_info().unwrap().info().clone();
    assert_eq!((info.width, info.height), (64, 64));
    let (s, ct, body) = get(format!("{inst}/rendered"), "image/webp").await;
    assert_eq!((s, ct.as_str()), (200, "image/webp"));
    assert_eq!(&body[..4], b"RIFF");
    // Windowing changes the pixels; viewport bounds the size.
    let (_, _, narrow) = get(format!("{inst}/rendered?window=0,10"), "image/png").await;
    let (_, _, wide) = get(
        format!("{inst}/rendered?window=1000,4000,sigmoid"),
        "image/png",
    )
    .await;
    assert_ne!(narrow, wide);
    let (s, _, body) = get(
        format!("{inst}/frames/1/rendered?viewport=32,16&quality=50"),
        "image/png",
    )
    .await;
    assert_eq!(s, 200);
    let info = png::Decoder::new(std::io::Cursor::new(body))
        .read_info()
        .unwrap()
        .info()
        .clone();
    assert_eq!((info.width, info.height), (16, 16));
    let (s, ct, _) = get(format!("{inst}/thumbnail"), "image/jpeg").await;
    assert_eq!((s, ct.as_str()), (200, "image/jpeg"));
    let (s, _, _) = get(format!("{inst}/frames/1/thumbnail"), "*/*").await;
    assert_eq!(s, 200);
    for q in [
        "window=1",
        "window=1,0",
        "viewport=0,10",
        "viewport=9999,10",
        "quality=0",
    ] {
        let (s, ct, _) = get(format!("{inst}/rendered?{q}"), "*/*").await;
        assert_eq!((s, ct.as_str()), (400, "application/problem+json"), "{q}");
    }
    let (s, _, _) = get(format!("{inst}/rendered"), "text/html").await;
    assert_eq!(s, 406);
    let (s, _, _) = get(format!("{inst}/frames/2/rendered"), "*/*").await;
    assert_eq!(s, 404);
    let (s, _, _) = get(format!("{inst}/frames/0/rendered"), "*/*").await;
    assert_eq!(s, 400);
    // Tiles.
    let (s, _, body) = get(format!("{inst}/frames/1/tiles.json"), "*/*").await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (v["width"].as_u64(), v["levels"].as_u64()),
        (Some(64), Some(7))
    );
    let (s, ct, _) = get(format!("{inst}/frames/1/tiles/6/0_0.jpg"), "*/*").await;
    assert_eq!((s, ct.as_str()), (200, "image/jpeg"));
    let (s, _, _) = get(format!("{inst}/frames/1/tiles/6/1_0.jpg"), "*/*").await;
    assert_eq!(s, 404);
    // Rendered series and study: multipart/related of rendered frames
    // (PS3.18 10.4), in instance order, each part with its location.
    let series = format!("{W}/studies/2.25.7001/series/2.25.7011");
    let (s, ct, body) = get(
        format!("{series}/rendered"),
        "multipart/related; type=\"image/png\"",
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        ct.starts_with("multipart/related; type=\"image/png\""),
        "{ct}"
    );
    let boundary = multipart::boundary_of(&ct).unwrap();
    let parts = multipart::parse(&body, &boundary).unwrap();
    assert_eq!(parts.len(), 2);
    for p in &parts {
        assert_eq!(p.content_type.as_deref(), Some("image/png"));
        assert_eq!(&p.body[..4], b"\x89PNG");
    }
    let text = String::from_utf8_lossy(&body);
    let first = text.find("instances/2.25.7021/frames/1/rendered").unwrap();
    let second = text.find("instances/2.25.7022/frames/1/rendered").unwrap();
    assert!(first < second);
    let (s, ct, body) = get(
        "/dicomweb/studies/2.25.7001/rendered?window=40,400".into(),
        "*/*",
    )
    .await;
    assert_eq!(s, 200);
    let parts = multipart::parse(&body, &multipart::boundary_of(&ct).unwrap()).unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(&parts[0].body[..2], &[0xFF, 0xD8]);
    let (s, _, _) = get(format!("{series}/rendered"), "application/dicom").await;
    assert_eq!(s, 406);
    let (s, _, _) = get(format!("{series}/rendered?quality=0"), "*/*").await;
    assert_eq!(s, 400);
    let (s, _, _) = get(
        format!("{W}/studies/2.25.7001/series/2.25.7099/rendered"),
        "*/*",
    )
    .await;
    assert_eq!(s, 404);
    // Unauthenticated: 401.
    assert_eq!(
        app.api
            .get(app.url(&format!("{inst}/rendered")))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}
crate::both_backends!(rendered_rs, crate::dicomweb::rendered);

fn with_identity_removed(bytes: &[u8], removed: bool) -> Vec<u8> {
    let mut obj = dicom_object::OpenFileOptions::new()
        .from_reader(bytes)
        .unwrap();
    if removed {
        obj.put(DataElement::new(
            tags::PATIENT_IDENTITY_REMOVED,
            VR::CS,
            PrimitiveValue::from("YES"),
        ));
    }
    let mut out = Vec::new();
    obj.write_all(&mut out).unwrap();
    out
}

async fn stow(app: &TestApp) {
    let ok = ct_slice(&Options::ct("2.25.7101", "2.25.7111", "2.25.7121"));
    let refused = ct_slice(&Options::ct("2.25.7101", "2.25.7111", "2.25.7122"));
    let b = multipart::boundary();
    let body = multipart::encode(
        &b,
        &[
            (
                "application/dicom".into(),
                with_identity_removed(&ok.bytes, true).into(),
            ),
            (
                "application/dicom".into(),
                with_identity_removed(&refused.bytes, false).into(),
            ),
        ],
    );
    let ctype = multipart::content_type(&b, "application/dicom", None);
    // No credentials: 401.
    let res = app
        .api
        .post(app.url(&format!("{W}/studies")))
        .header("content-type", &ctype)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = app
        .api
        .post(app.url(&format!("{W}/studies")))
        .bearer_auth(GATEWAY_TOKEN)
        .header("content-type", &ctype)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let v: Value = res.json().await.unwrap();
    assert_eq!(
        v["00081199"]["Value"][0]["00081155"]["Value"][0],
        "2.25.7121"
    );
    assert_eq!(
        v["00081198"]["Value"][0]["00081155"]["Value"][0],
        "2.25.7122"
    );
    assert_eq!(v["00081198"]["Value"][0]["00081197"]["Value"][0], 0x0110);

    // Only refused parts: 409.
    let b = multipart::boundary();
    let body = multipart::encode(
        &b,
        &[(
            "application/dicom".into(),
            with_identity_removed(&refused.bytes, false).into(),
        )],
    );
    let res = app
        .api
        .post(app.url(&format!("{W}/studies")))
        .bearer_auth(GATEWAY_TOKEN)
        .header(
            "content-type",
            multipart::content_type(&b, "application/dicom", None),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);

    app.create_user("dw", "dw password").await;
    let c = app.signed_in_browser("dw", "dw password").await;
    let (_, v) = get_json(
        &c,
        app.url(&format!("{W}/studies/2.25.7101/series/2.25.7111/instances")),
    )
    .await;
    assert_eq!(uids_of(&v, "00080018"), ["2.25.7121"]);
    let res = c
        .get(app.url(&format!(
            "{W}/studies/2.25.7101/series/2.25.7111/instances/2.25.7121/rendered"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
crate::both_backends!(stow_rs, crate::dicomweb::stow);

/// `ct` transcoded to `ts` with dicom-pixeldata.
fn transcoded(bytes: &[u8], ts: &str) -> Vec<u8> {
    use dicom_encoding::TransferSyntaxIndex;
    use dicom_pixeldata::Transcode;
    let mut obj = dicom_object::OpenFileOptions::new()
        .from_reader(bytes)
        .unwrap();
    let target = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(ts)
        .unwrap();
    obj.transcode(target).unwrap();
    let mut out = Vec::new();
    obj.write_all(&mut out).unwrap();
    out
}

async fn compressed(app: &TestApp) {
    // The same slice stored as JPEG-LS lossless renders like the native one.
    let native = ct_slice(&Options::ct("2.25.7201", "2.25.7211", "2.25.7221"));
    let jls_ts = "1.2.840.10008.1.2.4.80";
    let jls = transcoded(&native.bytes, jls_ts);
    let uids = Uids::new("2.25.7201", "2.25.7211", "2.25.7221");
    put_object(app, &uids, &jls).await;
    let mut reg = registration(&uids, native.metadata.clone(), &jls);
    reg["transfer_syntax_uid"] = json!(jls_ts);
    assert_eq!(app.register(&reg).await.status(), 201);
    app.create_user("dw", "dw password").await;
    let c = app.signed_in_browser("dw", "dw password").await;
    let inst = format!("{W}/studies/2.25.7201/series/2.25.7211/instances/2.25.7221");

    let res = c
        .get(app.url(&format!("{inst}/rendered")))
        .header("accept", "image/png")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.bytes().await.unwrap();
    let mut reader = png::Decoder::new(std::io::Cursor::new(body))
        .read_info()
        .unwrap();
    let mut px = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut px).unwrap();
    let reference = server::services::render::render_frame(&native.bytes, 0).unwrap();
    assert_eq!(px, reference.pixels, "JPEG-LS lossless renders like native");

    // Frames as stored (image/jls) and decoded (octet-stream).
    let res = c
        .get(app.url(&format!("{inst}/frames/1")))
        .header("accept", r#"multipart/related; type="image/jls""#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ctype = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ctype.contains("image/jls"), "{ctype}");
    let res = c
        .get(app.url(&format!("{inst}/frames/1")))
        .header(
            "accept",
            r#"multipart/related; type="application/octet-stream""#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ctype = res.headers()["content-type"].to_str().unwrap().to_owned();
    let body = res.bytes().await.unwrap();
    let parts = multipart::parse(&body, &multipart::boundary_of(&ctype).unwrap()).unwrap();
    let tail = &native.bytes[native.bytes.len() - 64 * 64 * 2..];
    assert_eq!(
        &parts[0].body[..],
        tail,
        "decoded frame equals the native pixels"
    );
}
crate::both_backends!(compressed_rs, crate::dicomweb::compressed);
