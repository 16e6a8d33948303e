use crate::dicom::{ct_slice, Options};
use crate::helpers::{put_object, registration, TestApp, Uids};
use sea_orm::ConnectionTrait;
use server::services::render::render_frame;

fn decode_png(bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info, buf)
}

async fn rendered_png(app: &TestApp) {
    let uids = Uids::new("2.25.600", "2.25.601", "2.25.602");
    let ct = ct_slice(&Options::ct("2.25.600", "2.25.601", "2.25.602"));
    put_object(app, &uids, &ct.bytes).await;
    assert_eq!(
        app.register(&registration(&uids, ct.metadata.clone(), &ct.bytes))
            .await
            .status(),
        201
    );

    let path = "/studies/2.25.600/series/2.25.601/instances/2.25.602/rendered.png";
    // No session: 401.
    assert_eq!(
        app.api.get(app.url(path)).send().await.unwrap().status(),
        401
    );

    app.create_user("viewer", "viewer password").await;
    let browser = app.signed_in_browser("viewer", "viewer password").await;
    let res = browser.get(app.url(path)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/png");
    assert!(res.headers()["cache-control"]
        .to_str()
        .unwrap()
        .starts_with("private"));
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    let bytes = res.bytes().await.unwrap();
    let (info, pixels) = decode_png(&bytes);
    assert_eq!((info.width, info.height), (64, 64));
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let (min, max) = (pixels.iter().min().unwrap(), pixels.iter().max().unwrap());
    assert!(min < max, "constant image");
    assert_eq!((*min, *max), (0, 255), "window 40/400 spans the gradient");

    // Conditional request.
    let res = browser
        .get(app.url(path))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);

    // Explicit frame 0 works, frame 1 does not exist.
    assert_eq!(
        browser
            .get(app.url(&format!("{path}?frame=0")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        browser
            .get(app.url(&format!("{path}?frame=1")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        browser
            .get(app.url(&format!("{path}?frame=x")))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );

    // Unknown or mismatched UIDs: 404.
    for p in [
        "/studies/2.25.600/series/2.25.601/instances/2.25.999/rendered.png",
        "/studies/2.25.600/series/2.25.999/instances/2.25.602/rendered.png",
        "/studies/2.25.999/series/2.25.601/instances/2.25.602/rendered.png",
        "/studies/x/series/2.25.601/instances/2.25.602/rendered.png",
    ] {
        assert_eq!(
            browser.get(app.url(p)).send().await.unwrap().status(),
            404,
            "{p}"
        );
    }

    // An indexed instance whose object is not DICOM: 5xx, generic body.
    let junk = Uids::new("2.25.600", "2.25.601", "2.25.603");
    put_object(app, &junk, b"this is not a DICOM file").await;
    let mut meta = ct.metadata.clone();
    meta["00080018"] = serde_json::json!({"vr": "UI", "Value": ["2.25.603"]});
    assert_eq!(
        app.register(&registration(&junk, meta, b"this is not a DICOM file"))
            .await
            .status(),
        201
    );
    let res = browser
        .get(app.url("/studies/2.25.600/series/2.25.601/instances/2.25.603/rendered.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    let p: serde_json::Value = res.json().await.unwrap();
    assert!(p.get("detail").is_none(), "{p}");

    // Fail closed: an allowed access whose audit row cannot be written is
    // a 500 even though the image was rendered meanwhile (the middleware
    // holds the response until the row is committed).
    let dicomweb = "/dicomweb/studies/2.25.600/series/2.25.601/instances/2.25.602/rendered";
    let ok = browser
        .get(app.url(dicomweb))
        .header("accept", "image/jpeg")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    app.db
        .execute_unprepared("ALTER TABLE audit_events RENAME TO audit_events_away")
        .await
        .unwrap();
    let res = browser
        .get(app.url(&format!("{dicomweb}?quality=77")))
        .header("accept", "image/jpeg")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert!(res.headers().get("etag").is_none());
    app.db
        .execute_unprepared("ALTER TABLE audit_events_away RENAME TO audit_events")
        .await
        .unwrap();
    let res = browser
        .get(app.url(dicomweb))
        .header("accept", "image/jpeg")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

crate::both_backends!(png_of_ct, crate::render::rendered_png);

#[test]
fn monochrome1_is_inverted_and_min_max_window_used() {
    let mut o = Options::ct("2.25.1", "2.25.2", "2.25.3");
    o.window = None;
    let m2 = render_frame(&ct_slice(&o).bytes, 0).unwrap();
    o.photometric = "MONOCHROME1";
    let m1 = render_frame(&ct_slice(&o).bytes, 0).unwrap();
    assert_eq!(m2.pixels.len(), 64 * 64);
    // min/max window: first pixel darkest, last brightest.
    assert_eq!(m2.pixels[0], 0);
    assert_eq!(m2.pixels[64 * 64 - 1], 255);
    for (a, b) in m1.pixels.iter().zip(&m2.pixels) {
        assert_eq!(u16::from(*a) + u16::from(*b), 255);
    }
    assert!(render_frame(&ct_slice(&o).bytes, 1).is_err());
}
