//! In-memory rate limits: at most `max` events per key in a sliding window. Bounded in keys
//! (a flood of distinct keys evicts the stalest), pure over the time the caller passes.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;

/// The appliance's limits on unauthenticated callers.
#[derive(Debug)]
pub struct Limits {
    /// Boot credentials per MAC: a PC boots a few times in ten minutes, never dozens.
    pub boot_credentials: RateLimit<String>,
    /// Journal entries for refused boot scripts, per MAC: one a minute is enough to see it.
    pub boot_refusals_journaled: RateLimit<String>,
    /// Agent hellos per client address.
    pub hellos: RateLimit<std::net::IpAddr>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            boot_credentials: RateLimit::new(10, 10 * 60_000, 65_536),
            boot_refusals_journaled: RateLimit::new(1, 60_000, 65_536),
            hellos: RateLimit::new(30, 60_000, 65_536),
        }
    }
}

#[derive(Debug)]
pub struct RateLimit<K> {
    max: usize,
    window_ms: i64,
    max_keys: usize,
    events: Mutex<HashMap<K, VecDeque<i64>>>,
}

impl<K: Eq + Hash + Clone> RateLimit<K> {
    pub fn new(max: usize, window_ms: i64, max_keys: usize) -> Self {
        RateLimit { max, window_ms, max_keys, events: Mutex::new(HashMap::new()) }
    }

    /// Counts an event for `key` at `now_ms` if the key is under its limit; false (and nothing
    /// counted) otherwise.
    pub fn allow(&self, key: &K, now_ms: i64) -> bool {
        let mut map = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(key) && map.len() >= self.max_keys {
            map.retain(|_, q| q.back().is_some_and(|t| now_ms - t < self.window_ms));
            if map.len() >= self.max_keys {
                let stalest = map.iter().min_by_key(|(_, q)| q.back().copied()).map(|(k, _)| k.clone());
                if let Some(k) = stalest {
                    map.remove(&k);
                }
            }
        }
        let q = map.entry(key.clone()).or_default();
        while q.front().is_some_and(|t| now_ms - t >= self.window_ms) {
            q.pop_front();
        }
        if q.len() >= self.max {
            return false;
        }
        q.push_back(now_ms);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_per_key_and_bounded() {
        let l = RateLimit::new(3, 1_000, 4);
        let (a, b) = ("a".to_string(), "b".to_string());
        assert!((0..3).all(|i| l.allow(&a, i)));
        assert!(!l.allow(&a, 10), "fourth in the window");
        assert!(l.allow(&b, 10), "another key has its own budget");
        assert!(l.allow(&a, 1_001), "the oldest left the window");
        for k in 0..100 {
            l.allow(&format!("k{k}"), 2_000);
        }
        assert!(l.events.lock().unwrap().len() <= 4);
    }
}
