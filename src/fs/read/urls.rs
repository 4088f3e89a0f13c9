//! Signed URLs: expiry parsing, the refresh-before-expiry rule, and per-file URL state with
//! coalesced refreshes (many readers of one file hitting an expired URL cause one
//! `get_file`).
//!
//! Nothing here logs a URL: they carry signatures.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::debug;

use crate::api::MediaClient;
use crate::fs::error::{Error, Result};

/// Upper bound of the refresh margin before `Expires`.
const MAX_MARGIN_MS: u64 = 30_000;

/// The `Expires` query parameter (Unix seconds), if present and numeric.
pub(crate) fn parse_expires(url: &str) -> Option<u64> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "Expires")
        .and_then(|(_, v)| v.parse().ok())
}

pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One signed URL and when to stop trusting it.
#[derive(Clone)]
pub(crate) struct SignedUrl {
    pub url: String,
    /// `Expires` in Unix milliseconds and the refresh margin, when the URL had a usable one.
    deadline: Option<(u64, u64)>,
}

impl SignedUrl {
    /// `issued_ms`: when we received it. The margin is min(30 s, a fifth of the lifetime left
    /// at that moment). A URL with no parsable `Expires`, or one that already looks expired
    /// on our clock (clock skew), is used until the CDN rejects it.
    pub fn new(url: String, issued_ms: u64) -> Self {
        let deadline = parse_expires(&url).and_then(|secs| {
            let expires_ms = secs.saturating_mul(1000);
            let lifetime = expires_ms.checked_sub(issued_ms).filter(|l| *l > 0)?;
            Some((expires_ms, (lifetime / 5).min(MAX_MARGIN_MS)))
        });
        SignedUrl { url, deadline }
    }

    /// True when `now + margin >= expires`: refresh before using it.
    pub fn refresh_due(&self, now_ms: u64) -> bool {
        self.deadline
            .is_some_and(|(expires, margin)| now_ms.saturating_add(margin) >= expires)
    }

    fn expires_ms(&self) -> Option<u64> {
        self.deadline.map(|(e, _)| e)
    }

    /// Whether `self` should replace `current`: it expires later, or neither has an expiry
    /// to compare (then the newer one wins).
    pub fn fresher_than(&self, current: &SignedUrl) -> bool {
        match (self.expires_ms(), current.expires_ms()) {
            (Some(new), Some(cur)) => new > cur,
            (Some(_), None) | (None, None) => true,
            (None, Some(_)) => false,
        }
    }
}

struct State {
    current: Option<SignedUrl>,
    /// Bumped on every change, so a reader can tell whether the URL that failed for it was
    /// already replaced by someone else.
    version: u64,
}

/// The URL of one remote file, shared by all its handles and fetch tasks.
pub(crate) struct FileUrl {
    state: Mutex<State>,
    /// Held across `get_file`: concurrent refreshes queue here and reuse the first result.
    refresh_lock: tokio::sync::Mutex<()>,
}

impl FileUrl {
    pub fn new(url: Option<String>) -> Self {
        let now = now_unix_ms();
        FileUrl {
            state: Mutex::new(State {
                current: url.map(|u| SignedUrl::new(u, now)),
                version: 0,
            }),
            refresh_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Replaces the URL when `url` is fresher than the current one.
    pub fn offer(&self, url: &str) {
        let new = SignedUrl::new(url.to_string(), now_unix_ms());
        let mut s = self.state.lock().unwrap();
        if s.current.as_ref().is_none_or(|cur| new.fresher_than(cur)) {
            s.current = Some(new);
            s.version += 1;
        }
    }

    /// A URL fit to use now, with its version (pass it to [`FileUrl::refresh`] if the CDN
    /// rejects it). Refreshes first when there is none or it is about to expire.
    pub async fn get(&self, client: &dyn MediaClient, file_id: &str) -> Result<(String, u64)> {
        let seen = {
            let s = self.state.lock().unwrap();
            match &s.current {
                Some(u) if !u.refresh_due(now_unix_ms()) => return Ok((u.url.clone(), s.version)),
                _ => s.version,
            }
        };
        self.refresh(client, file_id, seen).await
    }

    /// Gets a fresh URL by `get_file`, unless another task already replaced version
    /// `failed` with a usable one while we waited for the lock.
    pub async fn refresh(
        &self,
        client: &dyn MediaClient,
        file_id: &str,
        failed: u64,
    ) -> Result<(String, u64)> {
        let _guard = self.refresh_lock.lock().await;
        {
            let s = self.state.lock().unwrap();
            if let Some(u) = &s.current {
                if s.version != failed && !u.refresh_due(now_unix_ms()) {
                    return Ok((u.url.clone(), s.version));
                }
            }
        }
        debug!(file_id, "refreshing signed URL");
        let file = client
            .get_file(file_id)
            .await
            .map_err(|e| Error::api(format_args!("refresh URL of file {file_id}"), e))?;
        let url = file.url().ok_or_else(|| {
            Error::new(
                crate::fs::error::Kind::Io,
                format!("file {file_id}: service sent no download URL"),
            )
        })?;
        let mut s = self.state.lock().unwrap();
        s.current = Some(SignedUrl::new(url.to_string(), now_unix_ms()));
        s.version += 1;
        Ok((url.to_string(), s.version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_expires() {
        assert_eq!(
            parse_expires("https://cdn/x.png?Expires=1771590808&Signature=a_b-c&Key-Pair-Id=K"),
            Some(1771590808)
        );
        assert_eq!(
            parse_expires("mock://cdn/id?Signature=s&Expires=42&n=3"),
            Some(42)
        );
        assert_eq!(parse_expires("https://cdn/x.png"), None);
        assert_eq!(parse_expires("https://cdn/x.png?Expires=soon"), None);
        assert_eq!(parse_expires("https://cdn/x.png?NotExpires=5"), None);
        assert_eq!(parse_expires("https://cdn/x?Expires=7#frag"), Some(7));
    }

    #[test]
    fn refresh_margin_is_a_fifth_of_lifetime_capped_at_30s() {
        // 10 minutes of lifetime: margin 30 s.
        let u = SignedUrl::new("u?Expires=1600".into(), 1_000_000);
        assert!(!u.refresh_due(1_000_000));
        assert!(!u.refresh_due(1_569_999));
        assert!(u.refresh_due(1_570_000));
        // 10 s of lifetime: margin 2 s.
        let u = SignedUrl::new("u?Expires=1010".into(), 1_000_000);
        assert!(!u.refresh_due(1_007_999));
        assert!(u.refresh_due(1_008_000));
    }

    #[test]
    fn url_without_usable_expiry_is_never_due() {
        let u = SignedUrl::new("u?Signature=x".into(), 5);
        assert!(!u.refresh_due(u64::MAX));
        // Already expired by our clock when received (skew): used until it fails.
        let u = SignedUrl::new("u?Expires=1".into(), 10_000);
        assert!(!u.refresh_due(20_000));
    }

    #[test]
    fn fresher_prefers_later_expiry() {
        let now = 1_000_000;
        let a = SignedUrl::new("a?Expires=2000".into(), now);
        let b = SignedUrl::new("b?Expires=3000".into(), now);
        let none = SignedUrl::new("c".into(), now);
        assert!(b.fresher_than(&a));
        assert!(!a.fresher_than(&b));
        assert!(a.fresher_than(&none));
        assert!(!none.fresher_than(&a));
        assert!(none.fresher_than(&none));
    }

    #[test]
    fn offer_replaces_only_with_fresher() {
        let f = FileUrl::new(Some("a?Expires=99999999999".into()));
        f.offer("b?Expires=99999999998");
        assert_eq!(
            f.state.lock().unwrap().current.as_ref().unwrap().url,
            "a?Expires=99999999999"
        );
        f.offer("c?Expires=99999999999999");
        let s = f.state.lock().unwrap();
        assert_eq!(s.current.as_ref().unwrap().url, "c?Expires=99999999999999");
        assert_eq!(s.version, 1);
    }
}
