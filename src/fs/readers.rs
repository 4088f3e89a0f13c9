//! Open read handles per remote file id, and the replaced or unlinked files whose delete
//! waits for them: such a file is deleted only once nobody reads it any more.
//!
//! Shared by the handle table (which counts) and the write path (which defers deletes);
//! one lock, so "is it open?" and "defer its delete" cannot race with the last close.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

#[derive(Debug, Default)]
struct State {
    open: HashMap<String, usize>,
    deferred: HashSet<String>,
}

#[derive(Debug, Default)]
pub struct OpenReaders {
    state: Mutex<State>,
}

impl OpenReaders {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A read handle of `id` was opened.
    pub fn opened(&self, id: &str) {
        *self.lock().open.entry(id.to_string()).or_default() += 1;
    }

    /// A read handle of `id` was closed. True when it was the last one and `id` was
    /// replaced meanwhile: the caller must delete it now.
    pub fn closed(&self, id: &str) -> bool {
        let mut st = self.lock();
        match st.open.get_mut(id) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                st.open.remove(id);
                st.deferred.remove(id)
            }
        }
    }

    /// Whether a read handle of `id` is open.
    pub fn is_open(&self, id: &str) -> bool {
        self.lock().open.contains_key(id)
    }

    /// `id` was replaced: if someone reads it, its delete is deferred to the last close
    /// (returns true); otherwise the caller deletes it now (false).
    pub fn defer_delete_if_open(&self, id: &str) -> bool {
        let mut st = self.lock();
        if st.open.contains_key(id) {
            st.deferred.insert(id.to_string());
            true
        } else {
            false
        }
    }

    /// `id` is to be deleted though nobody here reads it (a delete left by an earlier
    /// run): listings hide it until [`Self::unhide`].
    pub fn hide(&self, id: &str) {
        self.lock().deferred.insert(id.to_string());
    }

    pub fn unhide(&self, id: &str) {
        self.lock().deferred.remove(id);
    }

    /// Whether `id` is a replaced file kept only for its readers (listings hide it).
    pub fn is_deferred(&self, id: &str) -> bool {
        self.lock().deferred.contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_waits_for_the_last_reader() {
        let r = OpenReaders::default();
        assert!(!r.defer_delete_if_open("a"), "nobody reads it: delete now");
        r.opened("a");
        r.opened("a");
        assert!(r.defer_delete_if_open("a"));
        assert!(r.is_deferred("a"));
        assert!(!r.closed("a"));
        assert!(r.closed("a"), "last reader gone: delete now");
        assert!(!r.is_deferred("a"));
    }
}
