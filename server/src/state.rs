//! Shared application state handed to every handler.

use crate::config::{SessionSettings, Settings};
use mado_store::DynStore;
use sea_orm::DatabaseConnection;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub struct AppState {
    pub db: DatabaseConnection,
    pub store: DynStore,
    pub session: SessionSettings,
    /// SHA-256 of each accepted gateway token (the tokens themselves are
    /// not kept).
    gateway_token_digests: Vec<[u8; 32]>,
}

impl AppState {
    pub fn new(settings: &Settings, db: DatabaseConnection, store: DynStore) -> Self {
        let gateway_token_digests = settings
            .ingest
            .gateway_tokens
            .iter()
            .map(|t| Sha256::digest(t.expose().as_bytes()).into())
            .collect();
        Self {
            db,
            store,
            session: settings.session.clone(),
            gateway_token_digests,
        }
    }

    /// Whether `presented` is one of the configured gateway tokens. Both
    /// sides are hashed first and compared in constant time, so neither the
    /// length nor the content of a token leaks through timing.
    pub fn gateway_token_ok(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.gateway_token_digests
            .iter()
            .fold(false, |ok, d| ok | bool::from(d.ct_eq(&digest)))
    }
}
