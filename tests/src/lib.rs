//! End-to-end harness for Mado: starts the real `mado-server` and
//! `mado-gateway` binaries and real peers (dcmtk `storescu`, moto S3,
//! PostgreSQL, headless Chromium), each in a fresh temp dir, waits for their
//! readiness with a deadline and stops them in `Drop`.
//!
//! The scenarios are `#[cfg(test)]` modules under `scenarios/`, so the whole
//! suite is one test binary. A missing peer fails the test with a message
//! naming the install step; nothing is skipped silently.

pub mod apps;
pub mod bins;
pub mod browser;
pub mod dcmtk;
pub mod moto;
pub mod postgres;
pub mod process;
pub mod samples;
pub mod storage;
pub mod util;
pub mod web;

pub use apps::{spawn_gateway, spawn_server, GatewayConfig, GatewayProc, ServerConfig, ServerProc};
pub use browser::{chromium_screenshot, ShotReport};
pub use dcmtk::{storescu, storescu_ok, StoreReport};
pub use moto::{moto, Moto};
pub use postgres::{fresh_postgres_db, PgDb};
pub use storage::{S3Spec, Storage};

#[cfg(test)]
mod scenarios;
