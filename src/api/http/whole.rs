//! Listings of a service that ignores the list filters (`parentId`/`folderId`): every list
//! call then answers with the whole library, so once that is seen, one walk serves the
//! listing of every folder until it is [`ClientConfig::whole_list_ttl`] old or this client
//! changed something (any create, update or delete). `ls -R` of a tree then costs one walk,
//! not one per directory.
//!
//! [`ClientConfig::whole_list_ttl`]: super::ClientConfig::whole_list_ttl

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::de::DeserializeOwned;

use super::HttpClient;
use crate::api::error::ApiResult;
use crate::api::filter;
use crate::api::types::{Folder, MediaFile, Parent};

/// The cached walks of both kinds of list, and what makes them stale.
#[derive(Default)]
pub(super) struct WholeLists {
    /// Bumped after every change this client makes: a walk from before it is stale.
    generation: AtomicU64,
    pub(super) folders: Whole<Folder>,
    pub(super) files: Whole<MediaFile>,
}

impl WholeLists {
    /// This client changed the library: cached walks no longer hold.
    pub(super) fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// One kind of list (folders or files).
pub(super) struct Whole<T> {
    /// Set once an answer held objects of other folders than the one asked about.
    ignored: AtomicBool,
    /// The last walk; the lock also makes concurrent listings wait for one walk.
    last: tokio::sync::Mutex<Option<Walk<T>>>,
}

impl<T> Default for Whole<T> {
    fn default() -> Self {
        Whole {
            ignored: AtomicBool::new(false),
            last: tokio::sync::Mutex::new(None),
        }
    }
}

struct Walk<T> {
    at: Instant,
    generation: u64,
    items: Arc<Vec<T>>,
}

/// The list calls, and how to read their objects.
pub(super) struct ListKind<T> {
    pub path: &'static str,
    pub filter: &'static str,
    pub id_of: fn(&T) -> &str,
    pub parent_of: fn(&T) -> Option<&str>,
}

impl HttpClient {
    /// The objects of `parent`: from a walk of its own, or from the cached walk of the whole
    /// library once the service is known to ignore the filter.
    pub(super) async fn list_children<T>(
        &self,
        kind: &ListKind<T>,
        cache: &Whole<T>,
        parent: &Parent,
    ) -> ApiResult<Vec<T>>
    where
        T: DeserializeOwned + Clone + Send,
    {
        let ttl = self.config.whole_list_ttl;
        let children = |items: Vec<T>| filter::children(items, parent, kind.id_of, kind.parent_of);
        let want = parent.as_id();
        if !cache.ignored.load(Ordering::SeqCst) || ttl.is_zero() {
            let generation = self.whole.generation.load(Ordering::SeqCst);
            let items = self
                .list_all(kind.path, kind.filter, parent, kind.id_of)
                .await?;
            let foreign = items.iter().any(|i| (kind.parent_of)(i) != want);
            if foreign && !ttl.is_zero() {
                cache.ignored.store(true, Ordering::SeqCst);
                *cache.last.lock().await = Some(Walk {
                    at: Instant::now(),
                    generation,
                    items: Arc::new(items.clone()),
                });
            }
            return Ok(children(items));
        }
        let mut last = cache.last.lock().await;
        let generation = self.whole.generation.load(Ordering::SeqCst);
        let fresh = last
            .as_ref()
            .filter(|w| w.generation == generation && w.at.elapsed() < ttl)
            .map(|w| w.items.clone());
        let items = match fresh {
            Some(items) => items,
            None => {
                let items = Arc::new(
                    self.list_all(kind.path, kind.filter, parent, kind.id_of)
                        .await?,
                );
                *last = Some(Walk {
                    at: Instant::now(),
                    generation,
                    items: items.clone(),
                });
                items
            }
        };
        drop(last);
        let mine = items
            .iter()
            .filter(|i| (kind.parent_of)(i) == want)
            .cloned()
            .collect();
        Ok(children(mine))
    }
}
