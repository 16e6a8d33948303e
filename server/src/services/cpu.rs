//! CPU-bound work (DICOM decoding, rendering, password hashing) runs on the
//! rayon pool, never on the async workers. The caller's span is carried
//! over, and a panic in the job becomes an error instead of aborting the
//! process (rayon aborts on panics in `spawn`).

use std::panic::{catch_unwind, AssertUnwindSafe};

#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("background job panicked")]
    Panicked,
    #[error("background job was dropped")]
    Dropped,
}

/// Run `f` on rayon and await its result.
pub async fn run<F, T>(f: F) -> Result<T, CpuError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let span = tracing::Span::current();
    rayon::spawn(move || {
        let _entered = span.enter();
        let result = catch_unwind(AssertUnwindSafe(f));
        // The receiver may be gone if the request was cancelled.
        let _ = tx.send(result);
    });
    match rx.await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(CpuError::Panicked),
        Err(_) => Err(CpuError::Dropped),
    }
}
