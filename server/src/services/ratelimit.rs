//! A small in-memory fixed-window rate limiter keyed by client address,
//! for the sign-in, second-factor and passcode endpoints.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Entries kept before old windows are swept.
const SWEEP_AT: usize = 10_000;

#[derive(Debug)]
pub struct RateLimiter {
    per_window: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_window: per_minute.max(1),
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Count one request from `ip`; `false` when over the limit.
    pub fn allow(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip else {
            return true;
        };
        let now = Instant::now();
        let Ok(mut map) = self.windows.lock() else {
            // A poisoned lock: fail closed.
            return false;
        };
        if map.len() > SWEEP_AT {
            map.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let entry = map.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= self.per_window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address() {
        let l = RateLimiter::new(2);
        let a = Some(IpAddr::from([127, 0, 0, 1]));
        let b = Some(IpAddr::from([127, 0, 0, 2]));
        assert!(l.allow(a));
        assert!(l.allow(a));
        assert!(!l.allow(a));
        assert!(l.allow(b));
    }
}
