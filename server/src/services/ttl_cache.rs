//! A small bounded map whose entries expire after a fixed time.
//!
//! Used for per-request lookups that would otherwise be a database round
//! trip on every request (sessions, study ids). Bounded by entry count:
//! when full, expired entries are dropped first, then everything.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct TtlCache<K, V> {
    ttl: Duration,
    cap: usize,
    map: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    /// Entries live `ttl` (`Duration::MAX`: until evicted); at most `cap`.
    pub fn new(ttl: Duration, cap: usize) -> Self {
        Self {
            ttl,
            cap: cap.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn get<Q: Eq + Hash + ?Sized>(&self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let map = self.map.lock().ok()?;
        map.get(k)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    pub fn insert(&self, k: K, v: V) {
        let Ok(mut map) = self.map.lock() else {
            return;
        };
        if map.len() >= self.cap && !map.contains_key(&k) {
            let ttl = self.ttl;
            map.retain(|_, (at, _)| at.elapsed() < ttl);
            if map.len() >= self.cap {
                map.clear();
            }
        }
        map.insert(k, (Instant::now(), v));
    }

    pub fn remove<Q: Eq + Hash + ?Sized>(&self, k: &Q)
    where
        K: Borrow<Q>,
    {
        if let Ok(mut map) = self.map.lock() {
            map.remove(k);
        }
    }

    /// Drop every entry whose value matches `f`.
    pub fn remove_where(&self, f: impl Fn(&V) -> bool) {
        if let Ok(mut map) = self.map.lock() {
            map.retain(|_, (_, v)| !f(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TtlCache;
    use std::time::Duration;

    #[test]
    fn expires_bounds_and_removes() {
        let c = TtlCache::new(Duration::from_millis(50), 2);
        c.insert(1, "a");
        c.insert(2, "b");
        assert_eq!(c.get(&1), Some("a"));
        c.insert(3, "c"); // full, nothing expired: cleared, then 3
        assert_eq!((c.get(&1), c.get(&3)), (None, Some("c")));
        c.remove(&3);
        assert_eq!(c.get(&3), None);
        c.insert(4, "d");
        c.remove_where(|v| *v == "d");
        assert_eq!(c.get(&4), None);
        c.insert(5, "e");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get(&5), None);
        let forever = TtlCache::new(Duration::MAX, 4);
        forever.insert(1, 1);
        assert_eq!(forever.get(&1), Some(1));
    }
}
