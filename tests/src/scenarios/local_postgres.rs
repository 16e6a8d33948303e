//! (b) local-directory object store + PostgreSQL index.

use super::common::*;
use crate::apps::ServerConfig;
use crate::dcmtk::storescu_ok;
use crate::postgres::fresh_postgres_db;
use crate::storage::Storage;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_postgres_push_deidentify_index_view() {
    let db = fresh_postgres_db().await.unwrap();
    let objects = tempfile::Builder::new()
        .prefix("mado-e2e-objects-")
        .tempdir()
        .unwrap();
    let storage = Storage::Local {
        path: objects.path().to_path_buf(),
    };
    let (_dir, samples) = default_samples().unwrap();

    let p = start_pipeline(
        ServerConfig {
            database_url: Some(db.url.clone()),
            storage: Some(storage.clone()),
            ..ServerConfig::default()
        },
        storage.clone(),
    )
    .await
    .unwrap();

    storescu_ok(&samples.paths(), p.gateway.dicom_port).unwrap();

    let keys = wait_for_objects(&storage, samples.files.len(), Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", p.gateway.proc.logs()));
    let summary = check_store(&storage, &samples, &keys).await.unwrap();

    // nothing but the objects (no temp files left behind) under the root
    let all = storage.list("").await.unwrap();
    assert_eq!(all, keys, "unexpected files in the local store");

    let mut web = wait_indexed(&p.server, &summary, Duration::from_secs(60))
        .await
        .unwrap();
    check_worklist(&mut web, &summary).await.unwrap();

    let ct = summary.study_of_modality("CT").unwrap();
    check_study_in_browser(&p.server, &ct, summary.studies[&ct], "ct").unwrap();
    let cr = summary.study_of_modality("CR").unwrap();
    check_study_in_browser(&p.server, &cr, summary.studies[&cr], "cr").unwrap();

    summary.assert_no_leaks();
}
