#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Multipart upload of a large object to a real S3 server (moto_server from
//! `.tools/venv`, installed by scripts/install-test-deps.sh): parts with
//! their SHA-256, composite checksum verified, whole-object SHA-256 on HEAD,
//! bytes read back identical.

use bytes::Bytes;
use mado_store::{sha256_hex, ObjectStore, S3Config, S3Store};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto_bin() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/moto_server");
    if venv.is_file() {
        return venv;
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("moto_server"))
                .find(|p| p.is_file())
        })
        .expect("moto_server not found (run scripts/install-test-deps.sh)")
}

async fn start_moto() -> (Moto, String) {
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(moto_bin())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start moto_server");
        let mut moto = Moto(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return (moto, format!("http://127.0.0.1:{port}"));
            }
            if moto.0.try_wait().ok().flatten().is_some() {
                break; // port taken: try another
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("moto_server did not start");
}

#[tokio::test]
async fn large_objects_go_up_in_verified_parts() {
    let (_moto, endpoint) = start_moto().await;
    let store = S3Store::connect(&S3Config {
        endpoint: Some(endpoint),
        region: "us-east-1".into(),
        bucket: "multipart".into(),
        path_style: true,
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        create_bucket: true,
    })
    .await
    .unwrap();

    // a synthetic instance-sized blob > 16 MiB: 8 + 8 + 1 MiB parts
    let len = 17 * 1024 * 1024 + 123;
    let data: Vec<u8> = (0..len)
        .map(|i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let data = Bytes::from(data);
    let sha = sha256_hex(&data);
    let key = "studies/1.2/series/1.3/instances/1.4.dcm";
    store.put(key, data.clone(), &sha).await.unwrap();
    let info = store.head(key).await.unwrap().expect("object missing");
    assert_eq!(info.size, len as u64);
    assert_eq!(info.sha256.as_deref(), Some(sha.as_str()));
    let back = store.get(key).await.unwrap();
    assert!(back == data, "bytes differ after multipart upload");
    // idempotent: the same bytes again
    store.put(key, data.clone(), &sha).await.unwrap();

    // a small object still goes up in one PUT with its checksum
    let small = Bytes::from_static(b"small object");
    let ssha = sha256_hex(&small);
    store.put("a/small", small.clone(), &ssha).await.unwrap();
    let info = store.head("a/small").await.unwrap().unwrap();
    assert_eq!(info.sha256.as_deref(), Some(ssha.as_str()));
    assert_eq!(store.list("").await.unwrap().len(), 2);
}
