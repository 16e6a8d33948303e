//! DICOMweb (PS3.18) services: QIDO-RS search, WADO-RS metadata and
//! retrieval helpers, multipart encoding, content negotiation, caches.

pub mod accept;
pub mod cache;
pub mod multipart;
pub mod qido;
pub mod wado;
