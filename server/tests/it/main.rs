//! Integration tests of `mado-server`: the app is built on port 0 against a
//! fresh SQLite file and a fresh PostgreSQL database, and driven over HTTP.
//!
//! PostgreSQL: `MADO_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test creates
//! `mado_test_<uuid>` and drops it. `MADO_TEST_SKIP_POSTGRES=1` skips the
//! PostgreSQL variants. `TEST_LOG=1` prints the server's logs.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod dicom;
mod helpers;

mod access_matrix;
mod audit;
mod auth;
mod basics;
mod dicomweb;
mod dicomweb_interop;
mod hostile;
mod hostile_corpus;
mod ingest;
mod lockout;
mod login_redirect;
mod mfa;
mod ohif;
mod oidc;
mod oidc_browser;
mod openapi;
mod public_url;
mod render;
mod secrets;
mod shares;
mod tenancy;
mod totp;
mod ui_browser;
