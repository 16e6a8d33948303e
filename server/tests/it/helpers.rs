use mado_core::wire::RegisterInstance;
use mado_core::{ObjectKey, SeriesUid, SopInstanceUid, StudyUid, Uid};
use mado_store::{LocalStore, ObjectStore, StoreConfig};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use server::config::{DatabaseUrl, Settings};
use server::Application;
use std::sync::{Arc, Once};

pub const GATEWAY_TOKEN: &str = "test-gateway-token-0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Run an async test body once per backend.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:path) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(app) =
                    $crate::helpers::spawn_app($crate::helpers::Backend::Sqlite).await
                {
                    $body(&app).await;
                    app.cleanup().await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) =
                    $crate::helpers::spawn_app($crate::helpers::Backend::Postgres).await
                {
                    $body(&app).await;
                    app.cleanup().await;
                }
            }
        }
    };
}

pub struct TestApp {
    pub base: String,
    /// `[audit] head_file` of the app (in its temp dir).
    pub audit_head: std::path::PathBuf,
    /// `[audit] key` of the app.
    pub audit_key: Vec<u8>,
    pub db: DatabaseConnection,
    pub store: Arc<LocalStore>,
    /// Client without cookies or redirects, for API calls.
    pub api: reqwest::Client,
    _dir: tempfile::TempDir,
    pg: Option<(String, String)>,
}

fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            server::telemetry::init();
        }
    });
}

fn pg_admin_url() -> Option<String> {
    if std::env::var("MADO_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
        return None;
    }
    Some(
        std::env::var("MADO_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
    )
}

pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |_| {}).await
}

/// [`spawn_app`] with a last say on the settings.
pub async fn spawn_app_with(
    backend: Backend,
    customise: impl FnOnce(&mut Settings),
) -> Option<TestApp> {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (url, pg) = match backend {
        Backend::Sqlite => (
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("db/mado.db").display()
            ),
            None,
        ),
        Backend::Postgres => {
            let Some(admin_url) = pg_admin_url() else {
                eprintln!("skipping PostgreSQL variant: MADO_TEST_SKIP_POSTGRES=1");
                return None;
            };
            let name = format!("mado_test_{}", uuid::Uuid::new_v4().simple());
            let admin = Database::connect(&admin_url).await.unwrap();
            admin
                .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                .await
                .unwrap();
            admin.close().await.unwrap();
            let base = admin_url.rsplit_once('/').unwrap().0;
            (format!("{base}/{name}"), Some((admin_url, name)))
        }
    };
    let store_path = dir.path().join("objects");
    let mut settings = Settings::load(None).unwrap();
    settings.http.bind = "127.0.0.1:0".into();
    settings.database.url = DatabaseUrl(url.clone());
    settings.storage = StoreConfig::local(store_path.clone());
    settings.ingest.gateway_tokens = vec![server::config::Secret::new(GATEWAY_TOKEN)];
    let audit_head = dir.path().join("audit-head.log");
    settings.audit.head_file = audit_head.clone();
    customise(&mut settings);
    let audit_head = settings.audit.head_file.clone();
    let audit_key = settings.audit.key.expose().as_bytes().to_vec();

    let app = Application::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());

    let db = server::db::connect(&DatabaseUrl(url)).await.unwrap();
    let store = Arc::new(LocalStore::new(store_path).unwrap());
    let api = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Some(TestApp {
        base,
        audit_head,
        audit_key,
        db,
        store,
        api,
        _dir: dir,
        pg,
    })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A browser-like client: cookie store, follows redirects.
    pub fn browser(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap()
    }

    pub async fn register(&self, body: &serde_json::Value) -> reqwest::Response {
        self.api
            .post(self.url("/api/v1/ingest/instances"))
            .bearer_auth(GATEWAY_TOKEN)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Create (or reset) a user directly in the index.
    pub async fn create_user(&self, username: &str, password: &str) {
        server::services::auth::upsert_user(&self.db, username, password, "admin")
            .await
            .unwrap();
    }

    /// Sign in through the login form with a fresh browser client.
    pub async fn signed_in_browser(&self, username: &str, password: &str) -> reqwest::Client {
        let browser = self.browser();
        let page = browser
            .get(self.url("/login"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let csrf = hidden_field(&page, "csrf");
        let res = browser
            .post(self.url("/login"))
            .form(&[
                ("username", username),
                ("password", password),
                ("csrf", csrf.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.url().path(), "/");
        browser
    }

    pub async fn cleanup(self) {
        self.db.close().await.unwrap();
        if let Some((admin_url, name)) = &self.pg {
            let admin = Database::connect(admin_url).await.unwrap();
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await
                .unwrap();
        }
    }
}

/// The value of the hidden input `name` in an HTML page.
pub fn hidden_field(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} in page"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_owned()
}

/// UIDs of one synthetic instance.
#[derive(Debug, Clone)]
pub struct Uids {
    pub study: StudyUid,
    pub series: SeriesUid,
    pub sop: SopInstanceUid,
}

impl Uids {
    pub fn new(study: &str, series: &str, sop: &str) -> Self {
        Self {
            study: StudyUid::parse(study).unwrap(),
            series: SeriesUid::parse(series).unwrap(),
            sop: SopInstanceUid::parse(sop).unwrap(),
        }
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey::instance(&self.study, &self.series, &self.sop)
    }
}

/// A registration body for `uids` with `metadata` (DICOM JSON).
pub fn registration(uids: &Uids, metadata: serde_json::Value, bytes: &[u8]) -> serde_json::Value {
    let r = RegisterInstance {
        version: 1,
        object_key: uids.key().to_string(),
        size: bytes.len() as u64,
        sha256: mado_store::sha256_hex(bytes),
        study_uid: uids.study.clone(),
        series_uid: uids.series.clone(),
        sop_instance_uid: uids.sop.clone(),
        sop_class_uid: Uid::parse("1.2.840.10008.5.1.4.1.1.2").unwrap(),
        transfer_syntax_uid: Uid::parse("1.2.840.10008.1.2.1").unwrap(),
        metadata,
    };
    serde_json::to_value(r).unwrap()
}

/// Minimal DICOM JSON metadata for a registration.
pub fn simple_metadata(uids: &Uids, modality: &str, patient_id: &str) -> serde_json::Value {
    serde_json::json!({
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "ANON^PATIENT"}]},
        "00100020": {"vr": "LO", "Value": [patient_id]},
        "00080020": {"vr": "DA", "Value": ["20240105"]},
        "00081030": {"vr": "LO", "Value": ["Synthetic study"]},
        "00080060": {"vr": "CS", "Value": [modality]},
        "0020000D": {"vr": "UI", "Value": [uids.study.as_str()]},
        "0020000E": {"vr": "UI", "Value": [uids.series.as_str()]},
        "00080018": {"vr": "UI", "Value": [uids.sop.as_str()]},
        "00200013": {"vr": "IS", "Value": [1]}
    })
}

/// Store `bytes` for `uids` in the test's local object store.
pub async fn put_object(app: &TestApp, uids: &Uids, bytes: &[u8]) {
    app.store
        .put(
            uids.key().as_str(),
            bytes.to_vec().into(),
            &mado_store::sha256_hex(bytes),
        )
        .await
        .unwrap();
}
