//! Shared application state handed to every handler.

use crate::config::{SecuritySettings, SessionSettings, Settings};
use crate::services::audit::AuditLog;
use mado_store::DynStore;
use sea_orm::DatabaseConnection;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub struct AppState {
    pub db: DatabaseConnection,
    pub store: DynStore,
    pub session: SessionSettings,
    pub security: SecuritySettings,
    /// The audit trail writer (serialises the hash chain).
    pub audit: AuditLog,
    /// Recently resolved browser sessions (see `auth::SESSION_CACHE_TTL`).
    pub sessions: crate::services::auth::SessionCache,
    /// Study UID → (row id, organisation), for the access check.
    pub study_ids: crate::access::StudyIds,
    /// Rate limit of sign-in, second-factor and passcode requests.
    pub auth_limiter: crate::services::ratelimit::RateLimiter,
    /// Key of the signed "password verified, second factor due" cookie
    /// (HKDF of `[security] secret`, label `auth::KEY_MFA_COOKIE`).
    pub mfa_key: Vec<u8>,
    /// Base of absolute URLs: `[http] public_url` and the proxies whose
    /// forwarding headers are honoured.
    pub public_url: crate::services::public_url::PublicUrl,
    /// OpenID Connect sign-in, when configured.
    pub oidc: Option<crate::services::oidc::Oidc>,
    /// Built OHIF viewer served at `/ohif/` (`[ohif] dist_dir`).
    pub ohif_dist: Option<std::path::PathBuf>,
    /// `[limits]`: input bounds (DICOMweb, rendering).
    pub limits: crate::config::LimitsSettings,
    /// Memory shared by decoding, rendering and STOW (`[limits] memory_budget`).
    pub budget: std::sync::Arc<crate::services::cpu::MemoryBudget>,
    /// Rendered-image caches, read-ahead slots and single flights.
    pub render_caches: Arc<crate::routes::dicomweb::RenderCaches>,
    /// Recently served frames (WADO-RS frames).
    pub frames_cache: crate::routes::dicomweb::FramesCache,
    /// Instance-level QIDO answers.
    pub qido_instances_cache: crate::routes::dicomweb::InstanceAnswers,
    /// WADO-RS metadata answers.
    pub metadata_cache: crate::services::dicomweb::wado::MetadataCache,
    /// SHA-256 of each accepted gateway token (the tokens themselves are
    /// not kept), with the gateway's identity.
    gateway_token_digests: Vec<([u8; 32], GatewayIdentity)>,
}

/// The caches of one application, built by `Application::build` and moved
/// into its [`AppState`]: nothing is cached per process, so two
/// applications in one process (tests) never share an entry.
pub struct AppCaches {
    pub render: crate::routes::dicomweb::RenderCaches,
    pub frames: crate::routes::dicomweb::FramesCache,
    pub qido_instances: crate::routes::dicomweb::InstanceAnswers,
    pub metadata: crate::services::dicomweb::wado::MetadataCache,
}

impl Default for AppCaches {
    /// Every cache at its default byte budget.
    fn default() -> Self {
        Self {
            render: Default::default(),
            frames: crate::services::dicomweb::cache::ByteLru::new(
                crate::routes::dicomweb::FRAMES_BYTES,
            ),
            qido_instances: crate::services::dicomweb::cache::ByteLru::new(
                crate::routes::dicomweb::INSTANCE_ANSWERS_BYTES,
            ),
            metadata: crate::services::dicomweb::cache::ByteLru::new(
                crate::services::dicomweb::wado::METADATA_BYTES,
            ),
        }
    }
}

/// A gateway's machine identity: its name and the organisation its
/// uploads belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayIdentity {
    pub name: String,
    pub org: String,
}

/// Organisation of the tokens in `[ingest] gateway_tokens`.
pub const DEFAULT_ORG: &str = "default";

impl AppState {
    pub fn new(settings: &Settings, db: DatabaseConnection, store: DynStore) -> Self {
        Self::with_caches(settings, db, store, AppCaches::default())
    }

    /// [`AppState::new`] with the application's caches.
    pub fn with_caches(
        settings: &Settings,
        db: DatabaseConnection,
        store: DynStore,
        caches: AppCaches,
    ) -> Self {
        let gateway_token_digests = settings
            .ingest
            .gateway_tokens
            .iter()
            .map(|t| {
                (
                    Sha256::digest(t.expose().as_bytes()).into(),
                    GatewayIdentity {
                        name: "default".to_owned(),
                        org: DEFAULT_ORG.to_owned(),
                    },
                )
            })
            .chain(settings.ingest.gateways.iter().map(|g| {
                (
                    Sha256::digest(g.token.expose().as_bytes()).into(),
                    GatewayIdentity {
                        name: g.name.clone(),
                        org: g.org.trim().to_owned(),
                    },
                )
            }))
            .collect();
        Self {
            ohif_dist: settings.ohif.dist_dir.clone(),
            limits: settings.limits.clone(),
            budget: std::sync::Arc::new(crate::services::cpu::MemoryBudget::new(
                settings.limits.memory_budget,
                settings.limits.memory_queue,
                std::time::Duration::from_secs(settings.limits.memory_wait_seconds),
            )),
            public_url: crate::services::public_url::PublicUrl::new(&settings.http),
            db,
            store,
            session: settings.session.clone(),
            security: settings.security.clone(),
            audit: AuditLog::new(settings.audit.key.expose(), settings.audit.checkpoint_every)
                .with_head_file(settings.audit.head_file.clone()),
            sessions: Default::default(),
            study_ids: Default::default(),
            auth_limiter: crate::services::ratelimit::RateLimiter::new(
                settings.security.auth_rate_per_minute,
            ),
            oidc: settings.oidc.clone().and_then(|o| {
                crate::services::oidc::Oidc::new(o)
                    .map_err(|e| tracing::error!(error = %e, "OIDC sign-in disabled"))
                    .ok()
            }),
            // Its own key, derived from the server secret (never the audit
            // key, which auditors hold).
            mfa_key: crate::services::auth::derive_key(
                settings.security.secret.expose().as_bytes(),
                crate::services::auth::KEY_MFA_COOKIE,
            )
            .to_vec(),
            render_caches: Arc::new(caches.render),
            frames_cache: caches.frames,
            qido_instances_cache: caches.qido_instances,
            metadata_cache: caches.metadata,
            gateway_token_digests,
        }
    }

    /// Whether `presented` is one of the configured gateway tokens. Both
    /// sides are hashed first and compared in constant time, so neither the
    /// length nor the content of a token leaks through timing.
    pub fn gateway_token_ok(&self, presented: &str) -> bool {
        self.gateway(presented).is_some()
    }

    /// The gateway whose token is `presented` (every configured token is
    /// compared, in constant time).
    pub fn gateway(&self, presented: &str) -> Option<GatewayIdentity> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (d, id) in &self.gateway_token_digests {
            if bool::from(d.ct_eq(&digest)) && found.is_none() {
                found = Some(id.clone());
            }
        }
        found
    }
}
