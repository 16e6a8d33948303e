//! End-to-end scenarios (one test binary). Each test starts its own
//! processes on free ports and its own database and bucket, so tests run in
//! parallel. Missing peers fail the test, they are never skipped.

mod bad_input;
mod common;
mod deid_quarantine;
mod gateway_access;
mod gateway_attacks;
mod gateway_commitment;
mod gateway_faults;
mod gateway_peers;
mod gateway_tls;
mod harness;
mod hostile_corpus;
mod infra;
mod local_postgres;
mod s3_sqlite;
