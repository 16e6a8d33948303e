//! A small LRU cache bounded by bytes, shared between workers.
//!
//! Keys are content-addressed (object SHA-256, or a digest of the rows a
//! response was built from). Every cache belongs to one application
//! (`AppState`), never to the process.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

pub trait Weigh {
    /// Approximate heap size in bytes.
    fn weight(&self) -> usize;
}

impl Weigh for bytes::Bytes {
    fn weight(&self) -> usize {
        self.len()
    }
}

struct Entry<V> {
    value: Arc<V>,
    tick: u64,
    weight: usize,
}

struct Inner<K, V> {
    map: HashMap<K, Entry<V>>,
    tick: u64,
    total: usize,
}

pub struct ByteLru<K, V> {
    capacity: usize,
    inner: Mutex<Inner<K, V>>,
}

impl<K: Eq + Hash + Clone, V: Weigh> ByteLru<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                tick: 0,
                total: 0,
            }),
        }
    }

    pub fn get(&self, key: &K) -> Option<Arc<V>> {
        let mut g = self.inner.lock().ok()?;
        g.tick += 1;
        let tick = g.tick;
        let e = g.map.get_mut(key)?;
        e.tick = tick;
        Some(e.value.clone())
    }

    pub fn insert(&self, key: K, value: Arc<V>) {
        let weight = value.weight() + 64;
        if weight > self.capacity / 2 {
            return;
        }
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        g.tick += 1;
        let tick = g.tick;
        if let Some(old) = g.map.insert(
            key,
            Entry {
                value,
                tick,
                weight,
            },
        ) {
            g.total -= old.weight;
        }
        g.total += weight;
        while g.total > self.capacity {
            let Some(victim) = g
                .map
                .iter()
                .min_by_key(|(_, e)| e.tick)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = g.map.remove(&victim) {
                g.total -= e.weight;
            }
        }
    }
}

impl Weigh for super::wado::Frames {
    fn weight(&self) -> usize {
        self.parts.iter().map(bytes::Bytes::len).sum::<usize>() + self.transfer_syntax.len()
    }
}

impl Weigh for crate::services::render::DecodedFrame {
    fn weight(&self) -> usize {
        crate::services::render::DecodedFrame::weight(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn evicts_least_recently_used() {
        let c: ByteLru<u32, Bytes> = ByteLru::new(1000);
        c.insert(1, Arc::new(Bytes::from(vec![0; 300])));
        c.insert(2, Arc::new(Bytes::from(vec![0; 300])));
        assert!(c.get(&1).is_some());
        c.insert(3, Arc::new(Bytes::from(vec![0; 300])));
        assert!(c.get(&1).is_some());
        assert!(c.get(&2).is_none());
        assert!(c.get(&3).is_some());
    }
}
