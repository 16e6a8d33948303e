//! SeaORM entities mirroring the tables created by the `migrations` crate
//! (written in the shape `sea-orm-cli generate entity` produces).

pub mod audit_checkpoints;
pub mod audit_events;
pub mod instances;
pub mod organisations;
pub mod patients;
pub mod series;
pub mod sessions;
pub mod share_links;
pub mod share_sessions;
pub mod studies;
pub mod study_grants;
pub mod users;
