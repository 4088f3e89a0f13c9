//! Listing walks: every page of Get Folders / Get Files for one parent.
//!
//! A walk is bounded by what its first page announces (`lastPage`, or `total` and
//! `pageSize`, whichever is smaller) and by [`ClientConfig::max_list_entries`]; a page that
//! repeats the previous one (a service that ignores `page`) or more entries than announced
//! end it with a `Decode` error instead of a walk of a billion pages.
//!
//! [`ClientConfig::max_list_entries`]: super::ClientConfig::max_list_entries

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;

use super::{Call, HttpClient};
use crate::api::error::{ApiError, ApiErrorKind, ApiResult};
use crate::api::types::{ListPage, Parent};

/// What a walk may receive beyond its announcement: objects shift between pages when the
/// library changes during the walk, so a page or so more than announced is no sign of
/// trouble.
const MARGIN_PAGES: u64 = 1;

/// Why a walk stops early: a protocol breach, not a transient failure (never retried).
fn broken(what: &str, why: String) -> ApiError {
    ApiError::new(
        ApiErrorKind::Decode,
        format!("{what}: {why}; listing abandoned"),
    )
}

impl HttpClient {
    /// Fetches one list page.
    async fn page<T: DeserializeOwned>(
        &self,
        path: &'static str,
        filter: &str,
        parent: &Parent,
        page: u64,
    ) -> ApiResult<ListPage<T>> {
        let mut url = self.url(&[&path[1..]]);
        url.query_pairs_mut()
            .append_pair(filter, parent.query_value())
            .append_pair("page", &page.to_string())
            .append_pair("pageSize", &self.config.page_size.max(1).to_string());
        self.call_decoded(&Call::get(url, path)).await
    }

    /// Walks every page of a listing. The answer is as the service gave it: the caller
    /// keeps the objects whose own parent is `parent` (the real API may ignore the filter)
    /// and drops duplicates (objects shift between pages when the library changes during
    /// the walk).
    pub(super) async fn list_all<T>(
        &self,
        path: &'static str,
        filter: &str,
        parent: &Parent,
        id_of: fn(&T) -> &str,
    ) -> ApiResult<Vec<T>>
    where
        T: DeserializeOwned + Send,
    {
        let what = format!("GET {}{}{path}", self.host, super::API_PREFIX);
        let max_entries = self.config.max_list_entries.max(1);
        let first = self.page::<T>(path, filter, parent, 1).await?;
        let bare = first.total.is_none()
            && first.page.is_none()
            && first.page_size.is_none()
            && first.last_page.is_none();
        // The server may cap pageSize below what was asked; its own figure decides "short".
        let claimed = first
            .page_size
            .filter(|&s| s > 0)
            .unwrap_or(u64::from(self.config.page_size.max(1)));
        // Unless the first page holds fewer while more are to come (or nothing says how many
        // are to come): a service may echo the pageSize asked for and serve fewer. The
        // items it served are then the page size.
        let served = first.data.len() as u64;
        let size = if served > 0 && served < claimed && first.total.is_none_or(|t| t > served) {
            served
        } else {
            claimed
        };
        // The smaller claim wins: a wild `lastPage` next to a sane `total` is not believed.
        let announced = [
            first.last_page,
            first.total.map(|t| t.div_ceil(size).max(1)),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(pages) = announced {
            let n = pages.saturating_mul(size);
            if n > max_entries.saturating_add(size) {
                return Err(broken(
                    &what,
                    format!(
                        "the first page announces {n} entries, more than the limit of \
                         {max_entries} per folder"
                    ),
                ));
            }
        }
        // Entries allowed in all: the announcement plus a margin, never over the limit.
        let allowed = announced.map_or(max_entries, |p| {
            p.saturating_add(MARGIN_PAGES)
                .saturating_mul(size)
                .min(max_entries)
        });
        let check_count = |n: usize| {
            let n = n as u64;
            if n <= allowed {
                Ok(())
            } else if announced.is_some() && n <= max_entries {
                Err(broken(
                    &what,
                    format!(
                        "{n} entries arrived where the first page announced at most {}",
                        announced.unwrap_or(0).saturating_mul(size)
                    ),
                ))
            } else {
                Err(broken(
                    &what,
                    format!("more than the limit of {max_entries} entries per folder"),
                ))
            }
        };
        let ids = |page: &[T]| {
            page.iter()
                .map(|i| id_of(i).to_string())
                .collect::<Vec<_>>()
        };
        let mut previous = ids(&first.data);
        let mut items = first.data;
        check_count(items.len())?;

        if bare {
            // `{"data": [...]}`: the whole list in one answer.
        } else if let Some(last) = announced {
            if last > 1 {
                // In order (`buffered`); an empty page ends the walk early.
                let mut pages = futures::stream::iter(2..=last)
                    .map(|p| self.page::<T>(path, filter, parent, p))
                    .buffered(self.config.list_concurrency.max(1));
                let mut n = 1;
                while let Some(page) = pages.try_next().await? {
                    n += 1;
                    if page.data.is_empty() {
                        break;
                    }
                    let these = ids(&page.data);
                    if these == previous {
                        return Err(broken(
                            &what,
                            format!(
                                "page {n} repeats page {} (the service seems to ignore `page`)",
                                n - 1
                            ),
                        ));
                    }
                    previous = these;
                    items.extend(page.data);
                    check_count(items.len())?;
                }
            }
        } else {
            // Paged but with no lastPage or total: walk until a short or empty page.
            let mut seen: HashSet<String> = previous.iter().cloned().collect();
            let mut fetched = items.len() as u64;
            let mut p = 1;
            while fetched >= size {
                p += 1;
                let page = self.page::<T>(path, filter, parent, p).await?;
                fetched = page.data.len() as u64;
                let these = ids(&page.data);
                if !these.is_empty() && these == previous {
                    return Err(broken(
                        &what,
                        format!(
                            "page {p} repeats page {} (the service seems to ignore `page`)",
                            p - 1
                        ),
                    ));
                }
                let fresh = these.iter().filter(|id| seen.insert((*id).clone())).count();
                previous = these;
                items.extend(page.data);
                check_count(items.len())?;
                // Nothing new: the rest would be more of the same.
                if fresh == 0 || page.last_page.is_some_and(|l| p >= l) {
                    break;
                }
            }
        }

        Ok(items)
    }
}
