//! Domain logic. Handlers call these; they never run SQL, touch the object
//! store or parse DICOM themselves.

pub mod audit;
pub mod auth;
pub mod cpu;
pub mod dicomweb;
pub mod grants;
pub mod ingest;
pub mod oidc;
pub mod orgs;
pub mod public_url;
pub mod ratelimit;
pub mod render;
pub mod shares;
pub mod studies;
pub mod totp;
pub mod ttl_cache;
