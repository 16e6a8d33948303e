//! The harness's own peers work (so a scenario failure points at Mado, not
//! at the harness): moto answers S3 through the independent reader, and a
//! fresh PostgreSQL database can be created, used and dropped.

use crate::moto::moto;
use crate::postgres::fresh_postgres_db;
use crate::storage::Storage;
use aws_sdk_s3::primitives::ByteStream;
use sea_orm::{ConnectionTrait, Database};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_bucket_roundtrip_through_the_reader() {
    let m = moto().await.unwrap();
    let spec = m.bucket("mado-e2e-harness", true);
    let client = spec.client();
    client
        .create_bucket()
        .bucket(&spec.bucket)
        .send()
        .await
        .unwrap();
    for i in 0..3 {
        client
            .put_object()
            .bucket(&spec.bucket)
            .key(format!("studies/1.2/series/3.4/instances/5.{i}.dcm"))
            .body(ByteStream::from(vec![i as u8; 10]))
            .send()
            .await
            .unwrap();
    }
    let storage = Storage::S3(spec);
    let keys = storage.list("studies/").await.unwrap();
    assert_eq!(keys.len(), 3);
    assert_eq!(storage.get(&keys[2]).await.unwrap(), vec![2_u8; 10]);
    // a missing bucket lists as empty (the gateway may not have created it yet)
    let other = Storage::S3(m.bucket("mado-e2e-absent", false));
    assert!(other.list("").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_postgres_database_is_created_and_dropped() {
    let name;
    {
        let db = fresh_postgres_db().await.unwrap();
        name = db.name.clone();
        let conn = Database::connect(&db.url).await.unwrap();
        conn.execute_unprepared("CREATE TABLE t (x int)")
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let admin = Database::connect(&crate::postgres::admin_url())
        .await
        .unwrap();
    let rows = admin
        .query_all_raw(sea_orm::Statement::from_string(
            admin.get_database_backend(),
            format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
        ))
        .await
        .unwrap();
    assert!(rows.is_empty(), "database {name} was not dropped");
}
