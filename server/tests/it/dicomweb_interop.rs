//! Interoperability with the reference Python client `dicomweb-client`:
//! runs `tests/interop/dicomweb_client_check.py` against a live server.
//! Needs `python3` with `dicomweb-client`, `pydicom` and `requests`.

use crate::dicom::{ct_slice, Options};
use crate::helpers::{put_object, registration, spawn_app, Backend, Uids, GATEWAY_TOKEN};
use std::path::PathBuf;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dicomweb_client_interop() {
    let probe = Command::new("python3")
        .args(["-c", "import dicomweb_client, pydicom, requests"])
        .output();
    match probe {
        Err(e) => panic!("python3 is required for the DICOMweb interop test: {e}"),
        Ok(o) if !o.status.success() => panic!(
            "the DICOMweb interop test needs `pip install dicomweb-client pydicom requests`: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Ok(_) => {}
    }
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    for i in 1..=3 {
        let sop = format!("2.25.8100{i}");
        let uids = Uids::new("2.25.8001", "2.25.8011", &sop);
        let ct = ct_slice(&Options::ct("2.25.8001", "2.25.8011", &sop));
        put_object(&app, &uids, &ct.bytes).await;
        let res = app
            .register(&registration(&uids, ct.metadata.clone(), &ct.bytes))
            .await;
        assert_eq!(res.status(), 201);
        std::fs::write(dir.path().join(format!("{i}.dcm")), &ct.bytes).unwrap();
    }
    app.create_user("interop", "interop password").await;

    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/interop/dicomweb_client_check.py");
    let base = app.base.clone();
    let files = dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .args(["--url", &base])
            .args(["--username", "interop", "--password", "interop password"])
            .args(["--token", GATEWAY_TOKEN])
            .arg("--files")
            .arg(files)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "dicomweb-client interop check failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    println!("{stdout}");
    app.cleanup().await;
}
