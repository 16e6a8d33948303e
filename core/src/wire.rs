//! Wire types between gateway and server (versioned; serde only here and in
//! config). The gateway sends one [`RegisterInstance`] per uploaded object to
//! `POST /api/v1/ingest/instances` with `Authorization: Bearer <gateway token>`.

use serde::{Deserialize, Serialize};

use crate::uid::{SeriesUid, SopInstanceUid, StudyUid, Uid};

pub const INGEST_PATH: &str = "/api/v1/ingest/instances";
pub const WIRE_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterInstance {
    /// Always [`WIRE_VERSION`].
    pub version: u32,
    /// Key of the de-identified object in the object store (see `keys`).
    pub object_key: String,
    /// Size in bytes of the stored object.
    pub size: u64,
    /// Lower-case hex SHA-256 of the stored object's bytes.
    pub sha256: String,
    pub study_uid: StudyUid,
    pub series_uid: SeriesUid,
    pub sop_instance_uid: SopInstanceUid,
    pub sop_class_uid: Uid,
    pub transfer_syntax_uid: Uid,
    /// The de-identified dataset in the DICOM JSON model (PS3.18 F.2),
    /// without bulk data (Pixel Data and other large binary values omitted).
    pub metadata: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// `true` when the instance was new, `false` when it was already indexed
    /// (registration is idempotent on SOP Instance UID).
    pub created: bool,
}
