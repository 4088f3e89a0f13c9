//! The block cache: an LRU of immutable blocks with a byte budget shared by all files.
//!
//! `lru::LruCache` counts entries, not bytes, so it is used unbounded and the byte
//! accounting is done here. Blocks are keyed by `(file_id, block_index)`; a remote file id
//! names immutable content, so a cached block never goes stale.

use std::sync::Arc;

use bytes::Bytes;
use lru::LruCache;

/// `(file_id, block_index)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct BlockKey {
    pub file: Arc<str>,
    pub block: u64,
}

impl BlockKey {
    pub fn new(file: &Arc<str>, block: u64) -> Self {
        BlockKey {
            file: Arc::clone(file),
            block,
        }
    }
}

pub(crate) struct BlockCache {
    lru: LruCache<BlockKey, Bytes>,
    used: u64,
    capacity: u64,
}

impl BlockCache {
    pub fn new(capacity: u64) -> Self {
        BlockCache {
            lru: LruCache::unbounded(),
            used: 0,
            capacity,
        }
    }

    /// The block, marked most recently used. Cloning `Bytes` is a reference count bump.
    pub fn get(&mut self, key: &BlockKey) -> Option<Bytes> {
        self.lru.get(key).cloned()
    }

    pub fn contains(&self, key: &BlockKey) -> bool {
        self.lru.contains(key)
    }

    /// Inserts a block, evicting least recently used blocks to stay within the budget.
    /// A block larger than the whole budget is not cached at all.
    pub fn insert(&mut self, key: BlockKey, data: Bytes) {
        let len = data.len() as u64;
        if let Some(old) = self.lru.pop(&key) {
            self.used -= old.len() as u64;
        }
        if len > self.capacity {
            return;
        }
        while self.used + len > self.capacity {
            match self.lru.pop_lru() {
                Some((_, evicted)) => self.used -= evicted.len() as u64,
                None => break,
            }
        }
        self.used += len;
        self.lru.put(key, data);
    }

    /// Drops one block, if cached.
    pub fn remove(&mut self, key: &BlockKey) {
        if let Some(old) = self.lru.pop(key) {
            self.used -= old.len() as u64;
        }
    }

    /// Drops every block of one file. O(cached blocks), which is small (cache / block size).
    pub fn remove_file(&mut self, file: &str) {
        let keys: Vec<BlockKey> = self
            .lru
            .iter()
            .filter(|(k, _)| &*k.file == file)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some(old) = self.lru.pop(&key) {
                self.used -= old.len() as u64;
            }
        }
    }

    pub fn clear(&mut self) {
        self.lru.clear();
        self.used = 0;
    }

    pub fn used(&self) -> u64 {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(file: &str, block: u64) -> BlockKey {
        BlockKey::new(&Arc::from(file), block)
    }

    #[test]
    fn evicts_least_recently_used_within_budget() {
        let mut c = BlockCache::new(10);
        c.insert(key("a", 0), Bytes::from_static(b"1234"));
        c.insert(key("a", 1), Bytes::from_static(b"5678"));
        // Touch block 0 so block 1 is the LRU one.
        assert_eq!(c.get(&key("a", 0)).as_deref(), Some(&b"1234"[..]));
        c.insert(key("b", 0), Bytes::from_static(b"abcd"));
        assert_eq!(c.used(), 8);
        assert!(c.contains(&key("a", 0)));
        assert!(!c.contains(&key("a", 1)));
        assert!(c.contains(&key("b", 0)));
    }

    #[test]
    fn oversized_block_is_not_cached_and_reinsert_is_accounted_once() {
        let mut c = BlockCache::new(4);
        c.insert(key("a", 0), Bytes::from_static(b"123456"));
        assert_eq!(c.used(), 0);
        assert!(!c.contains(&key("a", 0)));
        c.insert(key("a", 1), Bytes::from_static(b"12"));
        c.insert(key("a", 1), Bytes::from_static(b"12"));
        assert_eq!(c.used(), 2);
    }

    #[test]
    fn remove_file_and_clear_release_bytes() {
        let mut c = BlockCache::new(100);
        c.insert(key("a", 0), Bytes::from_static(b"aaa"));
        c.insert(key("a", 1), Bytes::from_static(b"aa"));
        c.insert(key("b", 0), Bytes::from_static(b"bbbb"));
        c.remove_file("a");
        assert_eq!(c.used(), 4);
        assert!(c.contains(&key("b", 0)));
        assert!(!c.contains(&key("a", 0)));
        c.clear();
        assert_eq!(c.used(), 0);
        assert!(!c.contains(&key("b", 0)));
    }
}
