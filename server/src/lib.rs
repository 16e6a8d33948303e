//! `mado-server`: the cloud side of Mado. Ingest API for gateways, local
//! sign-in, worklist and study pages, rendered PNG frames, health check.
//!
//! Layout: `routes/` (thin handlers, one module per area, each with
//! `configure`), `extract` (request guards: gateway token, session),
//! `services/` (domain logic), `db/` (connection, entities), `error`
//! (the one `ApiError`), `request_id` (per-request id and span),
//! `startup` (`Application`).
//!
//! Architecture invariant: handlers never block the async workers;
//! decoding, rendering and password hashing run on rayon
//! (`services::cpu::run`).

pub mod access;
pub mod config;
pub mod db;
pub mod error;
pub mod extract;
pub mod request_id;
pub mod routes;
pub mod services;
pub mod startup;
pub mod state;
pub mod telemetry;

pub use config::Settings;
pub use startup::Application;
