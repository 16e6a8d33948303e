//! (a) moto S3 + server (SQLite) + gateway (S3, create_bucket = true): a
//! two-study push with dcmtk, de-identified objects in the bucket, the
//! worklist and the study pages in Chromium.

use super::common::*;
use crate::apps::ServerConfig;
use crate::dcmtk::storescu_ok;
use crate::moto::moto;
use crate::storage::Storage;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_sqlite_push_deidentify_index_view() {
    let moto = moto().await.unwrap();
    let bucket = format!("mado-e2e-{}", uuid::Uuid::new_v4().simple());
    // the gateway creates the bucket; the server only reads it
    let gateway_storage = Storage::S3(moto.bucket(&bucket, true));
    let server_storage = Storage::S3(moto.bucket(&bucket, false));
    let (_dir, samples) = default_samples().unwrap();

    let p = start_pipeline(
        ServerConfig {
            storage: Some(server_storage.clone()),
            ..ServerConfig::default()
        },
        gateway_storage,
    )
    .await
    .unwrap();

    storescu_ok(&samples.paths(), p.gateway.dicom_port).unwrap();

    let keys = wait_for_objects(
        &server_storage,
        samples.files.len(),
        Duration::from_secs(120),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", p.gateway.proc.logs()));
    let summary = check_store(&server_storage, &samples, &keys).await.unwrap();

    let mut web = wait_indexed(&p.server, &summary, Duration::from_secs(60))
        .await
        .unwrap();
    check_worklist(&mut web, &summary).await.unwrap();

    let ct = summary.study_of_modality("CT").unwrap();
    let shot = check_study_in_browser(&p.server, &ct, summary.studies[&ct], "ct").unwrap();
    eprintln!("screenshot: {}", shot.display());
    let cr = summary.study_of_modality("CR").unwrap();
    check_study_in_browser(&p.server, &cr, summary.studies[&cr], "cr").unwrap();

    summary.assert_no_leaks();
}
