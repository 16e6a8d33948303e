//! The report formats checked with outside tools: poppler (pdftotext, pdffonts, pdfimages),
//! dcmtk (dsrdump, dcmdump), dicom-object re-reading, and an MLLP loopback peer.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use chrono::TimeZone;
use mado_report::hl7;
use mado_report::model::MAX_REPORT_BYTES;
use mado_report::{
    dicom, fhir, pdf, Author, ImageRef, KeyImage, Measurement, MeasurementKind, Report,
    ReportError, ReportStatus, Sections, StudyContext,
};

const FINDINGS_JA: &str = "右肺上葉に径12mmの充実性結節を認めます。";
const CT_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

fn jpeg(w: usize, h: usize) -> Vec<u8> {
    let pixels: Vec<u8> = (0..w * h).map(|i| ((i % w) * 255 / w) as u8).collect();
    let mut c = turbojpeg::Compressor::new().unwrap();
    c.set_subsamp(turbojpeg::Subsamp::Gray).unwrap();
    c.compress_to_vec(turbojpeg::Image {
        pixels: pixels.as_slice(),
        width: w,
        pitch: w,
        height: h,
        format: turbojpeg::PixelFormat::GRAY,
    })
    .unwrap()
}

fn image(n: u32) -> ImageRef {
    ImageRef {
        series_instance_uid: "2.25.1000".into(),
        sop_class_uid: CT_IMAGE.into(),
        sop_instance_uid: format!("2.25.1000.{n}"),
        frame: None,
    }
}

fn sample() -> Report {
    Report {
        report_id: "rep-0001".into(),
        version: 1,
        status: ReportStatus::Final,
        amendment_reason: None,
        study: StudyContext {
            study_instance_uid: "2.25.999".into(),
            accession_number: "ACC123".into(),
            patient_name: "PSEUDO^0042".into(),
            patient_id: "P-0042".into(),
            patient_birth_date: "19700101".into(),
            patient_sex: "F".into(),
            study_id: "S1".into(),
            study_date: "20261201".into(),
            study_time: "101530".into(),
            referring_physician_name: "Clinic^Doctor".into(),
            study_description: "CT 胸部".into(),
            modality: "CT".into(),
        },
        sections: Sections {
            findings: format!(
                "{FINDINGS_JA}\n縦隔リンパ節腫大なし。\nNo pleural effusion | pipes ^ carets & amps ~ tildes \\ backslash."
            ),
            impression: "肺癌疑い。 Suspicious for lung cancer.".into(),
            recommendation: "3か月後のCT再検を推奨します。".into(),
        },
        author: Author {
            name: "読影^太郎".into(),
            organisation: "Mado Reading Center".into(),
        },
        signed_at: chrono::Utc.with_ymd_and_hms(2026, 12, 7, 16, 40, 0).unwrap(),
        key_images: vec![KeyImage {
            image: image(1),
            window_center: Some(-600.0),
            window_width: Some(1500.0),
            caption: "結節 / nodule".into(),
            jpeg: Some(jpeg(64, 48)),
        }],
        measurements: vec![
            Measurement {
                label: "nodule".into(),
                value: MeasurementKind::Length { mm: 12.3 },
                uncalibrated: false,
                image: image(1),
                points: vec![[10.0, 10.0], [20.5, 12.0]],
            },
            Measurement {
                label: "angle".into(),
                value: MeasurementKind::Angle { deg: 42.0 },
                uncalibrated: false,
                // a frame of a multi-frame image (Enhanced CT)
                image: ImageRef {
                    frame: Some(2),
                    sop_class_uid: "1.2.840.10008.5.1.4.1.1.2.1".into(),
                    ..image(2)
                },
                points: vec![[1.0, 1.0], [5.0, 5.0], [9.0, 1.0]],
            },
            Measurement {
                label: "ROI 1".into(),
                value: MeasurementKind::EllipseRoi {
                    area_mm2: 150.25,
                    mean: 35.5,
                    sd: 12.1,
                    min: -20.0,
                    max: 80.0,
                    unit: "[hnsf'U]".into(),
                },
                uncalibrated: true,
                image: image(1),
                points: vec![[30.0, 40.0], [50.0, 40.0], [40.0, 35.0], [40.0, 45.0]],
            },
        ],
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn run(tool: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new(tool).args(args).output().unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// dcmtk prefixes errors with `E:` and fatal errors with `F:` (warnings `W:` are allowed:
/// its VR checker warns that it does not handle ISO_IR 192).
fn no_dcmtk_errors(out: &str) -> bool {
    !out.lines()
        .any(|l| l.starts_with("E:") || l.starts_with("F:"))
}

/// dicom3tools' IOD checker, when installed (Debian `dicom3tools`; not in
/// install-test-deps.sh): no `Error` line. Warnings about defined terms are allowed.
fn dciodvfy_clean(path: &Path) {
    if !have("dciodvfy") {
        eprintln!("dciodvfy missing: IOD check skipped");
        return;
    }
    let (_, out) = run("dciodvfy", &[path.to_str().unwrap()]);
    assert!(
        !out.lines().any(|l| l.starts_with("Error")),
        "dciodvfy:\n{out}"
    );
}

fn font_present() -> bool {
    Path::new(pdf::DEFAULT_FONT_PATH).exists()
}

// ------------------------------------------------------------------ model

#[test]
fn canonical_encoding_is_stable_and_hash_tracks_content() {
    let r = sample();
    r.validate().unwrap();
    assert_eq!(r.canonical_bytes(), sample().canonical_bytes());
    assert_eq!(r.sha256().len(), 64);
    let mut r2 = sample();
    r2.sections.impression.push('.');
    assert_ne!(r.sha256(), r2.sha256());
    // JSON round trip keeps the bytes (and so the hash)
    let json = serde_json::to_vec(&r).unwrap();
    let back = Report::from_json(&json).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.sha256(), r.sha256());
}

#[test]
fn validation_refuses_oversize_control_characters_and_inconsistent_status() {
    // > 1 MiB of JSON: a typed TooLarge before parsing
    let big = vec![b' '; MAX_REPORT_BYTES + 1];
    assert!(matches!(
        Report::from_json(&big),
        Err(ReportError::TooLarge { .. })
    ));
    // within the JSON limit but the report itself too large (many big sections)
    let mut r = sample();
    r.key_images = (0..20)
        .map(|_| KeyImage {
            image: image(1),
            window_center: None,
            window_width: None,
            caption: String::new(),
            jpeg: Some({
                let mut j = vec![0xFF, 0xD8, 0xFF];
                j.resize(60_000, 0);
                j
            }),
        })
        .collect();
    assert!(matches!(r.validate(), Err(ReportError::TooLarge { .. })));

    let mut r = sample();
    r.sections.findings = "a\u{1b}[31mred".into();
    assert!(matches!(r.validate(), Err(ReportError::Invalid { .. })));
    let mut r = sample();
    r.author.name = "x\ny".into();
    assert!(r.validate().is_err());
    let mut r = sample();
    r.sections.findings = "line\r\nline".into();
    assert!(r.validate().is_err());
    // HTML is just text: allowed, never interpreted
    let mut r = sample();
    r.sections.findings = "<script>alert(1)</script>".into();
    r.validate().unwrap();

    let mut r = sample();
    r.status = ReportStatus::Amended;
    assert!(r.validate().is_err(), "amended needs a reason");
    r.amendment_reason = Some("typo".into());
    assert!(r.validate().is_err(), "amended needs version ≥ 2");
    r.version = 2;
    r.validate().unwrap();

    // signed: the organisation is required (Verifying Organization, Type 1)
    let mut r = sample();
    r.author.organisation = " ".into();
    assert!(r.validate().is_err());
    r.status = ReportStatus::Preliminary;
    r.validate().unwrap();

    let mut r = sample();
    r.study.study_instance_uid = "1.2.03".into();
    assert!(r.validate().is_err());
    let mut r = sample();
    r.measurements[0].value = MeasurementKind::Length { mm: f64::NAN };
    assert!(r.validate().is_err());
    let mut r = sample();
    r.measurements[2].points.pop();
    assert!(r.validate().is_err());
    // unknown JSON fields are refused
    let mut v = serde_json::to_value(sample()).unwrap();
    v["extra"] = serde_json::json!(1);
    assert!(matches!(
        Report::from_json(&serde_json::to_vec(&v).unwrap()),
        Err(ReportError::Malformed(_))
    ));
}

// ------------------------------------------------------------------ PDF

fn render_to(dir: &Path, r: &Report) -> std::path::PathBuf {
    let bytes = pdf::render(r, &pdf::PdfOptions::default()).unwrap();
    assert!(bytes.starts_with(b"%PDF-"));
    let p = dir.join("report.pdf");
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn pdf_has_japanese_text_embedded_font_and_the_jpeg_as_is() {
    if !font_present() || !have("pdftotext") || !have("pdffonts") {
        eprintln!("skipped: font or poppler-utils missing (scripts/install-test-deps.sh)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let r = sample();
    let p = render_to(tmp.path(), &r);
    let path = p.to_str().unwrap();

    let (ok, text) = run("pdftotext", &["-enc", "UTF-8", path, "-"]);
    assert!(ok, "{text}");
    let flat: String = text.split_whitespace().collect();
    for want in [
        FINDINGS_JA,
        "3か月後のCT再検を推奨します。",
        "読影太郎",
        "MadoReadingCenter",
        "FINAL",
        "Length12.3mm",
        "未校正",
        "ACC123",
        // escaped nowhere, drawn with the fullwidth glyph, extracted as typed
        "pipes^carets&amps~tildes\\backslash.",
    ] {
        assert!(flat.contains(want), "{want} not in:\n{text}");
    }

    let (ok, fonts) = run("pdffonts", &[path]);
    assert!(ok, "{fonts}");
    let line = fonts
        .lines()
        .find(|l| l.contains("IPAGothic"))
        .unwrap_or_else(|| panic!("no IPAGothic in\n{fonts}"));
    // columns: name type encoding emb sub uni ...
    let cols: Vec<&str> = line.split_whitespace().collect();
    let emb = cols.len() - 5;
    assert_eq!(&cols[emb..emb + 3], &["yes", "yes", "yes"], "{fonts}");

    if have("pdfimages") {
        let (ok, list) = run("pdfimages", &["-list", path]);
        assert!(ok, "{list}");
        assert!(list.contains("jpeg"), "{list}");
    }
    // the JPEG bytes are in the file unchanged
    let bytes = std::fs::read(&p).unwrap();
    let j = r.key_images[0].jpeg.as_ref().unwrap();
    assert!(bytes.windows(j.len()).any(|w| w == j.as_slice()));
}

#[test]
fn pdf_wraps_long_text_onto_more_pages() {
    if !font_present() || !have("pdfinfo") || !have("pdftotext") {
        eprintln!("skipped: font or poppler-utils missing");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut r = sample();
    let para = "両肺にびまん性のすりガラス影を認め、間質性肺炎の急性増悪が疑われます。".repeat(6);
    r.sections.findings = (0..40)
        .map(|i| format!("{i}: {para} The lesion measures twelve millimetres."))
        .collect::<Vec<_>>()
        .join("\n");
    r.sections.findings.push_str("\nEND-OF-FINDINGS");
    let p = render_to(tmp.path(), &r);
    let path = p.to_str().unwrap();
    let (_, info) = run("pdfinfo", &[path]);
    let pages: u32 = info
        .lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap();
    assert!(pages >= 3, "{info}");
    assert!(
        info.contains("595.28 x 841.89") || info.contains("595 x 842"),
        "A4: {info}"
    );
    let (_, text) = run("pdftotext", &["-enc", "UTF-8", path, "-"]);
    assert!(text.contains("END-OF-FINDINGS"));
    // the last line of the first paragraph survived wrapping intact
    let flat: String = text.split_whitespace().collect();
    assert!(flat.contains("39:両肺に"), "{text}");
}

#[test]
fn pdf_of_the_largest_sections_renders() {
    if !font_present() {
        eprintln!("skipped: font missing");
        return;
    }
    let mut r = sample();
    // 3 × ~64 KiB of Japanese without a single line break, plus one very long word
    let ja = "画像所見".repeat(mado_report::model::MAX_SECTION_BYTES / 12 - 1);
    r.sections.findings = ja.clone();
    r.sections.impression = ja;
    r.sections.recommendation = "x".repeat(60_000);
    r.validate().unwrap();
    let t = std::time::Instant::now();
    let bytes = pdf::render(&r, &pdf::PdfOptions::default()).unwrap();
    assert!(bytes.starts_with(b"%PDF-"));
    assert!(t.elapsed().as_secs() < 60, "{:?}", t.elapsed());
    eprintln!("{} bytes in {:?}", bytes.len(), t.elapsed());
}

#[test]
fn pdf_refuses_a_corrupt_jpeg_without_panicking() {
    if !font_present() {
        eprintln!("skipped: font missing");
        return;
    }
    let mut r = sample();
    let mut j = vec![0xFF, 0xD8, 0xFF, 0xE0];
    j.extend_from_slice(&[0x55; 200]);
    r.key_images[0].jpeg = Some(j);
    let e = pdf::render(&r, &pdf::PdfOptions::default()).unwrap_err();
    assert!(matches!(e, pdf::PdfError::Image(0, _)), "{e}");
}

#[test]
fn pdf_refuses_missing_font_with_a_typed_error() {
    let r = sample();
    let e = pdf::render(
        &r,
        &pdf::PdfOptions {
            font_path: "/nonexistent/font.ttf".into(),
        },
    )
    .unwrap_err();
    assert!(matches!(e, pdf::PdfError::Font { .. }), "{e}");
}

// ------------------------------------------------------------------ DICOM

fn amended() -> Report {
    let mut r = sample();
    r.version = 2;
    r.status = ReportStatus::Amended;
    r.amendment_reason = Some("左右の記載誤り / laterality corrected".into());
    r
}

#[test]
fn sr_parses_with_dsrdump_and_rereads_with_dicom_object() {
    use dicom_dictionary_std::tags;
    let tmp = tempfile::tempdir().unwrap();
    for (name, r) in [("final", sample()), ("amended", amended())] {
        let obj = dicom::sr(&r).unwrap();
        let bytes = dicom::to_part10(obj).unwrap();
        // deterministic: same report, same bytes (idempotent re-send)
        assert_eq!(bytes, dicom::to_part10(dicom::sr(&r).unwrap()).unwrap());
        let p = tmp.path().join(format!("{name}.dcm"));
        std::fs::write(&p, &bytes).unwrap();

        dciodvfy_clean(&p);
        let back = dicom_object::open_file(&p).unwrap();
        let s = |t| {
            back.element(t)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches('\0')
                .trim()
                .to_string()
        };
        let (series, sop) = dicom::sr_uids(&r.report_id, r.version);
        assert_eq!(s(tags::SOP_CLASS_UID), dicom::COMPREHENSIVE_SR);
        assert_eq!(s(tags::SOP_INSTANCE_UID), sop);
        assert_eq!(s(tags::SERIES_INSTANCE_UID), series);
        assert_eq!(s(tags::STUDY_INSTANCE_UID), "2.25.999");
        assert_eq!(s(tags::PATIENT_ID), "P-0042");
        assert_eq!(s(tags::COMPLETION_FLAG), "COMPLETE");
        assert_eq!(s(tags::VERIFICATION_FLAG), "VERIFIED");
        assert!(back.element(tags::VERIFYING_OBSERVER_SEQUENCE).is_ok());
        assert_eq!(
            back.element(tags::PREDECESSOR_DOCUMENTS_SEQUENCE).is_ok(),
            name == "amended"
        );

        if have("dsrdump") {
            let (ok, out) = run("dsrdump", &["+Pl", "+Pc", p.to_str().unwrap()]);
            assert!(ok, "dsrdump failed:\n{out}");
            assert!(no_dcmtk_errors(&out), "{out}");
            assert!(
                out.contains("(18748-4,LN,\"Diagnostic Imaging Report\")"),
                "{out}"
            );
            assert!(out.contains("(121070,DCM,\"Findings\")"), "{out}");
            assert!(out.contains("Comprehensive SR Document"), "{out}");
            assert!(out.contains(FINDINGS_JA), "{out}");
            assert!(out.contains("Diagnostic Imaging Report"), "{out}");
            assert!(out.contains("Imaging Measurements"), "{out}");
            assert!(out.contains("12.3"), "{out}");
            assert!(out.contains("Hounsfield"), "{out}");
            assert!(out.contains("SCOORD") || out.contains("ELLIPSE"), "{out}");
            if name == "amended" {
                assert!(out.contains("laterality corrected"), "{out}");
            }
        } else {
            eprintln!("dsrdump missing: dcmtk check skipped");
        }
    }
    // the amendment points at version 1's SR
    let back = dicom::sr(&amended()).unwrap();
    let pred = back
        .element(tags::PREDECESSOR_DOCUMENTS_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0]
        .element(tags::REFERENCED_SERIES_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0]
        .element(tags::REFERENCED_SOP_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0]
        .element(tags::REFERENCED_SOP_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_string();
    assert_eq!(pred, dicom::sr_uids("rep-0001", 1).1);
}

#[test]
fn measurement_report_is_tid1500_for_ohif() {
    use dicom_dictionary_std::tags;
    let tmp = tempfile::tempdir().unwrap();
    let mut none = sample();
    none.measurements.clear();
    assert!(dicom::measurement_report(&none).unwrap().is_none());

    let r = amended();
    let obj = dicom::measurement_report(&r).unwrap().unwrap();
    let tmpl = obj
        .element(tags::CONTENT_TEMPLATE_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0]
        .element(tags::TEMPLATE_IDENTIFIER)
        .unwrap()
        .to_str()
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(tmpl, "1500");
    let (series, sop) = dicom::measurement_report_uids("rep-0001", 2);
    assert_ne!(series, dicom::sr_uids("rep-0001", 2).0);
    let bytes = dicom::to_part10(obj).unwrap();
    let p = tmp.path().join("mr.dcm");
    std::fs::write(&p, &bytes).unwrap();
    dciodvfy_clean(&p);
    let back = dicom_object::open_file(&p).unwrap();
    let s = |t| {
        back.element(t)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .trim()
            .to_string()
    };
    assert_eq!(s(tags::SOP_INSTANCE_UID), sop);
    assert_eq!(s(tags::SERIES_INSTANCE_UID), series);
    // the amendment chain of the measurement report points at its own previous version
    let pred = back
        .element(tags::PREDECESSOR_DOCUMENTS_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0]
        .element(tags::REFERENCED_SERIES_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0]
        .element(tags::SERIES_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_string();
    assert_eq!(pred, dicom::measurement_report_uids("rep-0001", 1).0);
    if have("dsrdump") {
        let (ok, out) = run("dsrdump", &["+Pl", "+Pc", p.to_str().unwrap()]);
        assert!(ok, "dsrdump failed:\n{out}");
        assert!(no_dcmtk_errors(&out), "{out}");
        for want in [
            "(126000,DCM,\"Imaging Measurement Report\")",
            "(111028,DCM,\"Image Library\")",
            "(126010,DCM,\"Imaging Measurements\")",
            "(125007,DCM,\"Measurement Group\")",
            "(410668003,SCT,\"Length\")",
            "ELLIPSE",
        ] {
            assert!(out.contains(want), "{want} not in\n{out}");
        }
    }
}

#[test]
fn preliminary_sr_is_partial_and_unverified() {
    use dicom_dictionary_std::tags;
    let mut r = sample();
    r.status = ReportStatus::Preliminary;
    let o = dicom::sr(&r).unwrap();
    let s = |t| o.element(t).unwrap().to_str().unwrap().trim().to_string();
    assert_eq!(s(tags::COMPLETION_FLAG), "PARTIAL");
    assert_eq!(s(tags::VERIFICATION_FLAG), "UNVERIFIED");
    assert!(o.element(tags::VERIFYING_OBSERVER_SEQUENCE).is_err());
}

#[test]
fn encapsulated_pdf_dumps_with_dcmdump_and_holds_the_pdf() {
    use dicom_dictionary_std::tags;
    let tmp = tempfile::tempdir().unwrap();
    let r = sample();
    let pdf_bytes: Vec<u8> = if font_present() {
        pdf::render(&r, &pdf::PdfOptions::default()).unwrap()
    } else {
        b"%PDF-1.4\n%%EOF\n".to_vec()
    };
    let obj = dicom::encapsulated_pdf(&r, &pdf_bytes).unwrap();
    let bytes = dicom::to_part10(obj).unwrap();
    let p = tmp.path().join("pdf.dcm");
    std::fs::write(&p, &bytes).unwrap();

    dciodvfy_clean(&p);
    let back = dicom_object::open_file(&p).unwrap();
    let s = |t| {
        back.element(t)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .trim()
            .to_string()
    };
    assert_eq!(s(tags::SOP_CLASS_UID), dicom::ENCAPSULATED_PDF);
    assert_eq!(
        s(tags::MIME_TYPE_OF_ENCAPSULATED_DOCUMENT),
        "application/pdf"
    );
    assert_eq!(s(tags::SOP_INSTANCE_UID), dicom::pdf_uids("rep-0001", 1).1);
    assert_ne!(
        dicom::pdf_uids("rep-0001", 1).1,
        dicom::sr_uids("rep-0001", 1).1
    );
    let doc = back
        .element(tags::ENCAPSULATED_DOCUMENT)
        .unwrap()
        .to_bytes()
        .unwrap();
    let len = back
        .element(tags::ENCAPSULATED_DOCUMENT_LENGTH)
        .unwrap()
        .to_int::<u32>()
        .unwrap() as usize;
    assert_eq!(&doc[..len], pdf_bytes.as_slice());

    if have("dcmdump") {
        let (ok, out) = run("dcmdump", &["+Ep", p.to_str().unwrap()]);
        assert!(ok, "{out}");
        assert!(no_dcmtk_errors(&out), "{out}");
        assert!(out.contains("EncapsulatedPDFStorage"), "{out}");
        assert!(out.contains("application/pdf"), "{out}");
        assert!(out.contains("PSEUDO^0042"), "{out}");
    }
}

// ------------------------------------------------------------------ FHIR

fn is_instant(s: &str) -> bool {
    // FHIR instant: YYYY-MM-DDThh:mm:ss(.sss)?(Z|(+|-)hh:mm)
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
        && s.len() >= 20
        && (s.ends_with('Z') || s[s.len() - 6..].starts_with(['+', '-']))
}

#[test]
fn fhir_diagnostic_report_follows_r4_rules() {
    let r = sample();
    let pdf_bytes = b"%PDF-1.4 fake".to_vec();
    let v = fhir::diagnostic_report(&r, "Patient/p-0042", Some(&pdf_bytes)).unwrap();
    assert_eq!(v["resourceType"], "DiagnosticReport");
    let id = v["id"].as_str().unwrap();
    assert!(
        !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'),
        "{id}"
    );
    // required: status (value set), code
    assert_eq!(v["status"], "final");
    assert_eq!(v["code"]["coding"][0]["system"], "http://loinc.org");
    assert_eq!(v["code"]["coding"][0]["code"], "18748-4");
    assert_eq!(v["subject"]["reference"], "Patient/p-0042");
    assert!(is_instant(v["issued"].as_str().unwrap()), "{}", v["issued"]);
    assert_eq!(v["effectiveDateTime"], "2026-12-01");
    assert_eq!(v["conclusion"], r.sections.impression);
    assert_eq!(
        v["imagingStudy"][0]["identifier"]["value"],
        "urn:oid:2.25.999"
    );
    let form = &v["presentedForm"][0];
    assert_eq!(form["contentType"], "application/pdf");
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD
        .decode(form["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(data, pdf_bytes);
    assert!(is_instant(form["creation"].as_str().unwrap()));
    assert!(v["performer"][0]["display"]
        .as_str()
        .unwrap()
        .contains("読影"));

    let mut a = amended();
    a.status = ReportStatus::Amended;
    let v = fhir::diagnostic_report(&a, "Patient/p-0042", None).unwrap();
    assert_eq!(v["status"], "amended");
    assert!(v.get("presentedForm").is_none());
    assert_ne!(
        v["id"],
        fhir::diagnostic_report(&sample(), "Patient/x", None).unwrap()["id"]
    );
    let mut p = sample();
    p.status = ReportStatus::Preliminary;
    assert_eq!(
        fhir::diagnostic_report(&p, "Patient/x", None).unwrap()["status"],
        "preliminary"
    );
    // no empty strings, arrays or objects anywhere (FHIR forbids them)
    fn no_empty(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => !s.is_empty(),
            serde_json::Value::Array(a) => !a.is_empty() && a.iter().all(no_empty),
            serde_json::Value::Object(o) => !o.is_empty() && o.values().all(no_empty),
            serde_json::Value::Null => false,
            _ => true,
        }
    }
    assert!(no_empty(
        &fhir::diagnostic_report(&sample(), "Patient/x", Some(b"x")).unwrap()
    ));
    // refused: a bad subject reference, an invalid report (a date that is not one)
    for bad in [
        "",
        "Patient",
        "patient/1",
        "Patient/",
        "Patient/a b",
        "Patient/1/2",
    ] {
        assert!(
            fhir::diagnostic_report(&sample(), bad, None).is_err(),
            "{bad}"
        );
    }
    let mut r = sample();
    r.study.study_date = "日本ab".into();
    assert!(fhir::diagnostic_report(&r, "Patient/x", None).is_err());
}

// ------------------------------------------------------------------ HL7 v2 + MLLP

fn envelope() -> hl7::Envelope {
    hl7::Envelope {
        sending_application: "MADO".into(),
        sending_facility: "CLOUD".into(),
        receiving_application: "RIS".into(),
        receiving_facility: "HOSP|A".into(),
        control_id: "CTL-0001".into(),
        created: chrono::Utc
            .with_ymd_and_hms(2026, 12, 7, 16, 41, 0)
            .unwrap(),
        processing_id: "P".into(),
    }
}

#[test]
fn oru_r01_round_trips_through_the_parser() {
    let r = sample();
    let msg = hl7::oru_r01(&r, &envelope(), Some(b"%PDF-1.4 x")).unwrap();
    assert!(msg.starts_with("MSH|^~\\&|MADO|CLOUD|RIS|HOSP\\F\\A|20261207164100+0000||ORU^R01^ORU_R01|CTL-0001|P|2.5.1|"));
    let m = hl7::Message::parse(&msg).unwrap();
    assert_eq!(m.field("MSH", 12).as_deref(), Some("2.5.1"));
    assert_eq!(m.field("MSH", 18).as_deref(), Some("UNICODE UTF-8"));
    assert_eq!(m.field("MSH", 6).as_deref(), Some("HOSP|A"));
    assert_eq!(m.component("MSH", 9, 2).as_deref(), Some("R01"));
    assert_eq!(m.field("PID", 3).as_deref(), Some("P-0042"));
    assert_eq!(m.component("PID", 5, 1).as_deref(), Some("PSEUDO"));
    assert_eq!(m.field("OBR", 18).as_deref(), Some("ACC123"));
    assert_eq!(m.field("OBR", 22).as_deref(), Some("20261207164000+0000"));
    assert_eq!(m.field("OBR", 25).as_deref(), Some("F"));
    assert_eq!(m.field("OBR", 24).as_deref(), Some("CT"));
    // OBX text lines reassemble into the sections, escapes undone
    let lines: Vec<String> = m
        .segments("OBX")
        .filter(|s| s[2] == "TX" && s[4] == "1")
        .map(|s| hl7::unescape(&s[5]))
        .collect();
    assert_eq!(lines.join("\n"), r.sections.findings);
    assert!(m.segments("OBX").all(|s| s[11] == "F"));
    assert!(m.segments("OBX").any(|s| s[2] == "ED"));
    // no raw delimiter inside a text value
    let raw = m.segments("OBX").find(|s| s[5].contains("pipes")).unwrap()[5].clone();
    assert!(raw.contains("\\F\\") && raw.contains("\\S\\") && raw.contains("\\T\\"));
    assert!(raw.contains("\\R\\") && raw.contains("\\E\\"));
    // amended → C
    let m = hl7::Message::parse(&hl7::oru_r01(&amended(), &envelope(), None).unwrap()).unwrap();
    // refused: a control character in the envelope, an invalid report, an oversize PDF
    let mut env = envelope();
    env.receiving_facility = "A\rMSH|evil".into();
    assert!(hl7::oru_r01(&r, &env, None).is_err());
    let mut bad = sample();
    bad.sections.impression = "x\u{0}".into();
    assert!(hl7::oru_r01(&bad, &envelope(), None).is_err());
    assert!(matches!(
        hl7::oru_r01(&r, &envelope(), Some(&vec![0u8; 2 * 1024 * 1024])),
        Err(hl7::Hl7Error::TooLarge(_))
    ));
    assert_eq!(m.field("OBR", 25).as_deref(), Some("C"));
}

#[test]
fn mllp_exchange_with_a_loopback_peer() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let mut answers = Vec::new();
        for code in ["AA", "AE"] {
            let (mut s, _) = listener.accept().unwrap();
            let frame = hl7::read_frame(&mut s, hl7::MAX_MESSAGE_BYTES).unwrap();
            let text = String::from_utf8(frame).unwrap();
            let m = hl7::Message::parse(&text).unwrap();
            answers.push(m.component("OBX", 5, 1));
            let ack = hl7::ack_for(&m, code, "checked", chrono::Utc::now());
            s.write_all(&hl7::frame(ack.as_bytes())).unwrap();
        }
        // a peer that sends an oversize reply
        let (mut s, _) = listener.accept().unwrap();
        let _ = hl7::read_frame(&mut s, hl7::MAX_MESSAGE_BYTES).unwrap();
        let _ = s.write_all(&hl7::frame(&vec![b'x'; 100_000]));
        answers
    });
    let msg = hl7::oru_r01(&sample(), &envelope(), None).unwrap();
    let timeout = Some(std::time::Duration::from_secs(10));
    let connect = || {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(timeout).unwrap();
        s
    };
    let ack = hl7::exchange(&mut connect(), &msg).unwrap();
    assert_eq!(ack.code, hl7::AckCode::Accept);
    assert_eq!(ack.control_id, "CTL-0001");
    assert_eq!(ack.text.as_deref(), Some("checked"));
    let ack = hl7::exchange(&mut connect(), &msg).unwrap();
    assert_eq!(ack.code, hl7::AckCode::Error);
    let err = hl7::exchange(&mut connect(), &msg).unwrap_err();
    assert!(matches!(err, hl7::Hl7Error::TooLarge(_)), "{err}");
    let answers = peer.join().unwrap();
    assert_eq!(answers[0].as_deref(), Some("2.25.999"));
}
