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

/// A bytes-weighted budget for memory-heavy work (fetching and decoding
/// objects, rendering, STOW bodies): a request takes its estimated share
/// before it allocates, so concurrent large requests queue instead of
/// growing the process together. Beyond [`MemoryBudget::new`]'s queue
/// bound, or after its longest wait, the request is refused as busy (503
/// with Retry-After) instead of waiting without end.
pub struct MemoryBudget {
    sem: std::sync::Arc<tokio::sync::Semaphore>,
    units: u32,
    waiting: std::sync::atomic::AtomicUsize,
    max_waiting: usize,
    max_wait: std::time::Duration,
}

/// Granularity of the budget.
const UNIT: u64 = 64 * 1024;

/// A share of the [`MemoryBudget`], given back on drop.
#[derive(Debug)]
pub struct MemoryPermit {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// The budget stayed exhausted (queue full or waited too long).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("memory budget exhausted")]
pub struct Busy;

impl MemoryBudget {
    pub fn new(bytes: u64, max_waiting: usize, max_wait: std::time::Duration) -> Self {
        let units = u32::try_from(bytes / UNIT)
            .unwrap_or(1 << 28)
            .clamp(1, 1 << 28);
        Self {
            sem: std::sync::Arc::new(tokio::sync::Semaphore::new(units as usize)),
            units,
            waiting: std::sync::atomic::AtomicUsize::new(0),
            max_waiting,
            max_wait,
        }
    }

    /// Take `bytes` of the budget (a job larger than the whole budget
    /// takes all of it, so it runs alone), waiting in line if needed.
    pub async fn acquire(&self, bytes: u64) -> Result<MemoryPermit, Busy> {
        use std::sync::atomic::Ordering;
        let n = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.units);
        if let Ok(p) = self.sem.clone().try_acquire_many_owned(n) {
            return Ok(MemoryPermit { _permit: p });
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy);
        }
        struct Leave<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            }
        }
        let _leave = Leave(&self.waiting);
        match tokio::time::timeout(self.max_wait, self.sem.clone().acquire_many_owned(n)).await {
            Ok(Ok(p)) => Ok(MemoryPermit { _permit: p }),
            _ => Err(Busy),
        }
    }

    /// The whole budget in bytes.
    pub fn capacity(&self) -> u64 {
        u64::from(self.units) * UNIT
    }

    /// Bytes of the budget free now.
    pub fn available(&self) -> u64 {
        self.sem.available_permits() as u64 * UNIT
    }
}

impl From<Busy> for crate::error::ApiError {
    fn from(_: Busy) -> Self {
        crate::error::ApiError::Busy(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn budget_queues_then_refuses() {
        let b = std::sync::Arc::new(MemoryBudget::new(1 << 20, 1, Duration::from_millis(200)));
        let big = b.acquire(1 << 20).await.unwrap();
        assert_eq!(b.available(), 0);
        // one may wait; the second waiter is refused at once
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.acquire(1000).await.map(drop) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(b.acquire(1000).await.is_err());
        drop(big);
        assert!(waiter.await.unwrap().is_ok());
        // more than the whole budget takes all of it, and runs
        let all = b.acquire(u64::MAX).await.unwrap();
        assert!(matches!(b.acquire(1).await, Err(Busy)));
        drop(all);
        assert_eq!(b.available(), 1 << 20);
    }
}
