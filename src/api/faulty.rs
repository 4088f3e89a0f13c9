//! A failure-injecting wrapper around any [`MediaClient`], for tests.
//!
//! Every call is counted and logged, then asked what to do: first the queue of its
//! operation ([`FaultyClient::push`]), else the hook ([`FaultyClient::set_hook`]), else it
//! passes. An injection can delay the call or its answer, fail it before it reaches the inner client, or
//! run it and then lose the answer (an ambiguous failure: the change happened, the caller
//! sees an error).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::error::{ApiError, ApiErrorKind, ApiResult};
use super::types::{FileUpdate, Folder, FolderUpdate, MediaFile, NewFile, Parent};
use super::MediaClient;

/// One operation of [`MediaClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    ListFolders,
    GetFolder,
    CreateFolder,
    UpdateFolder,
    DeleteFolder,
    ListFiles,
    GetFile,
    CreateFile,
    UpdateFile,
    DeleteFile,
    ReadRange,
}

/// A call as the hook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub op: Op,
    /// 1 for the first call of this operation, 2 for the second, …
    pub nth: u64,
    /// The object id the call names, if any (the parent for a listing or a create).
    pub id: Option<String>,
    /// `(offset, len)` of a `read_range`.
    pub range: Option<(u64, u64)>,
}

/// A call that was made, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub call: Call,
    /// `None` while the call runs, or if it was cancelled (its future dropped).
    pub result: Option<Result<(), ApiErrorKind>>,
}

#[derive(Debug)]
enum Outcome {
    Pass,
    Fail(ApiError),
    LoseAnswer(ApiError),
}

/// What to do with one call.
#[derive(Debug)]
pub struct Inject {
    delay: Duration,
    /// How long the answer takes to arrive after the inner client gave it.
    answer_delay: Duration,
    outcome: Outcome,
}

impl Inject {
    /// Let the call through untouched.
    pub fn pass() -> Inject {
        Inject {
            delay: Duration::ZERO,
            answer_delay: Duration::ZERO,
            outcome: Outcome::Pass,
        }
    }

    /// Fail with `error` without calling the inner client.
    pub fn fail(error: ApiError) -> Inject {
        Inject {
            outcome: Outcome::Fail(error),
            ..Inject::pass()
        }
    }

    /// Fail with an error of `kind` (and the status a server would have sent).
    pub fn fail_with(kind: ApiErrorKind) -> Inject {
        let status = match kind {
            ApiErrorKind::RateLimited => Some(429),
            ApiErrorKind::Server => Some(503),
            ApiErrorKind::NotFound => Some(404),
            ApiErrorKind::UrlExpired => Some(403),
            _ => None,
        };
        let e = ApiError::new(kind, "injected failure");
        Inject::fail(match status {
            Some(s) => e.with_status(s),
            None => e,
        })
    }

    /// Run the call on the inner client, then fail with `error` whatever it answered.
    pub fn lose_answer(error: ApiError) -> Inject {
        Inject {
            outcome: Outcome::LoseAnswer(error),
            ..Inject::pass()
        }
    }

    /// The same, after waiting `d` (tokio time).
    pub fn after(mut self, d: Duration) -> Inject {
        self.delay = d;
        self
    }

    /// The inner client answers at once, and the answer arrives `d` later: a listing taken
    /// before a change made meanwhile, say.
    pub fn answered_after(mut self, d: Duration) -> Inject {
        self.answer_delay = d;
        self
    }
}

type Hook = dyn Fn(&Call) -> Inject + Send + Sync;

#[derive(Default)]
struct State {
    calls: HashMap<Op, u64>,
    queues: HashMap<Op, VecDeque<Inject>>,
    log: Vec<Record>,
}

/// Wraps a client; see the module doc. Share it as `Arc<FaultyClient>`.
pub struct FaultyClient {
    inner: Arc<dyn MediaClient>,
    hook: Mutex<Option<Box<Hook>>>,
    state: Mutex<State>,
}

impl FaultyClient {
    pub fn wrap(inner: Arc<dyn MediaClient>) -> Arc<FaultyClient> {
        Arc::new(FaultyClient {
            inner,
            hook: Mutex::new(None),
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test must not poison the wrapper for the assertions that follow.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides every call that its operation's queue does not.
    pub fn set_hook(&self, hook: impl Fn(&Call) -> Inject + Send + Sync + 'static) {
        *self.hook.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(hook));
    }

    /// The next call of `op` gets `inject` (after those queued before).
    pub fn push(&self, op: Op, inject: Inject) {
        self.lock().queues.entry(op).or_default().push_back(inject);
    }

    /// Calls of `op` so far, failed and injected ones included.
    pub fn calls(&self, op: Op) -> u64 {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// Every call so far, in the order they were made.
    pub fn records(&self) -> Vec<Record> {
        self.lock().log.clone()
    }

    /// `(offset, len)` of every `read_range`, in call order.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        self.lock()
            .log
            .iter()
            .filter_map(|r| r.call.range)
            .collect()
    }

    /// Calls of `op` that ended with an error of `kind` (injected or not).
    pub fn errors(&self, op: Op, kind: ApiErrorKind) -> usize {
        self.lock()
            .log
            .iter()
            .filter(|r| r.call.op == op && r.result == Some(Err(kind)))
            .count()
    }

    /// Counts and logs the call, asks the queue or the hook, then runs `run` as told.
    async fn around<T, F>(
        &self,
        op: Op,
        id: Option<&str>,
        range: Option<(u64, u64)>,
        run: F,
    ) -> ApiResult<T>
    where
        F: std::future::Future<Output = ApiResult<T>>,
    {
        let (call, queued, index) = {
            let mut st = self.lock();
            let n = st.calls.entry(op).or_insert(0);
            *n += 1;
            let call = Call {
                op,
                nth: *n,
                id: id.map(str::to_string),
                range,
            };
            let queued = st.queues.get_mut(&op).and_then(VecDeque::pop_front);
            st.log.push(Record {
                call: call.clone(),
                result: None,
            });
            (call, queued, st.log.len() - 1)
        };
        let inject = match queued {
            Some(i) => i,
            None => match &*self.hook.lock().unwrap_or_else(|e| e.into_inner()) {
                Some(hook) => hook(&call),
                None => Inject::pass(),
            },
        };
        if !inject.delay.is_zero() {
            tokio::time::sleep(inject.delay).await;
        }
        let result = match inject.outcome {
            Outcome::Pass => {
                let r = run.await;
                if !inject.answer_delay.is_zero() {
                    tokio::time::sleep(inject.answer_delay).await;
                }
                r
            }
            Outcome::Fail(e) => Err(e),
            Outcome::LoseAnswer(e) => {
                let _ = run.await;
                Err(e)
            }
        };
        self.lock().log[index].result = Some(result.as_ref().map(|_| ()).map_err(|e| e.kind));
        result
    }
}

#[async_trait]
impl MediaClient for FaultyClient {
    async fn list_folders(&self, parent: &Parent) -> ApiResult<Vec<Folder>> {
        let run = self.inner.list_folders(parent);
        self.around(Op::ListFolders, parent.as_id(), None, run)
            .await
    }
    async fn get_folder(&self, id: &str) -> ApiResult<Folder> {
        let run = self.inner.get_folder(id);
        self.around(Op::GetFolder, Some(id), None, run).await
    }
    async fn create_folder(&self, name: &str, parent_id: Option<&str>) -> ApiResult<Folder> {
        let run = self.inner.create_folder(name, parent_id);
        self.around(Op::CreateFolder, parent_id, None, run).await
    }
    async fn update_folder(&self, id: &str, update: &FolderUpdate) -> ApiResult<Folder> {
        let run = self.inner.update_folder(id, update);
        self.around(Op::UpdateFolder, Some(id), None, run).await
    }
    async fn delete_folder(&self, id: &str) -> ApiResult<()> {
        let run = self.inner.delete_folder(id);
        self.around(Op::DeleteFolder, Some(id), None, run).await
    }
    async fn list_files(&self, folder: &Parent) -> ApiResult<Vec<MediaFile>> {
        let run = self.inner.list_files(folder);
        self.around(Op::ListFiles, folder.as_id(), None, run).await
    }
    async fn get_file(&self, id: &str) -> ApiResult<MediaFile> {
        let run = self.inner.get_file(id);
        self.around(Op::GetFile, Some(id), None, run).await
    }
    async fn create_file(&self, meta: &NewFile, content: &Path) -> ApiResult<MediaFile> {
        let run = self.inner.create_file(meta, content);
        self.around(Op::CreateFile, meta.folder_id.as_deref(), None, run)
            .await
    }
    async fn update_file(&self, id: &str, update: &FileUpdate) -> ApiResult<MediaFile> {
        let run = self.inner.update_file(id, update);
        self.around(Op::UpdateFile, Some(id), None, run).await
    }
    async fn delete_file(&self, id: &str) -> ApiResult<()> {
        let run = self.inner.delete_file(id);
        self.around(Op::DeleteFile, Some(id), None, run).await
    }
    async fn read_range(&self, url: &str, offset: u64, len: u64) -> ApiResult<Bytes> {
        let run = self.inner.read_range(url, offset, len);
        self.around(Op::ReadRange, None, Some((offset, len)), run)
            .await
    }

    fn forget_listings(&self) {
        self.inner.forget_listings();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::mock::MockClient;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn queues_then_hook_then_pass_and_everything_is_counted() {
        let mock = MockClient::new();
        let c = FaultyClient::wrap(mock.clone());
        let a = mock.add_folder("a", None);
        c.push(Op::GetFolder, Inject::fail_with(ApiErrorKind::Server));
        c.push(Op::GetFolder, Inject::pass());
        let hooked = Arc::new(AtomicU64::new(0));
        let h = hooked.clone();
        c.set_hook(move |call| {
            h.fetch_add(1, Ordering::SeqCst);
            if call.op == Op::GetFolder && call.nth == 3 {
                Inject::fail_with(ApiErrorKind::RateLimited)
            } else {
                Inject::pass()
            }
        });
        let e = c.get_folder(&a.id).await.unwrap_err();
        assert_eq!((e.kind, e.status), (ApiErrorKind::Server, Some(503)));
        assert_eq!(c.get_folder(&a.id).await.unwrap(), a);
        assert_eq!(
            c.get_folder(&a.id).await.unwrap_err().kind,
            ApiErrorKind::RateLimited
        );
        assert_eq!(c.get_folder(&a.id).await.unwrap(), a);
        assert_eq!(
            hooked.load(Ordering::SeqCst),
            2,
            "queued calls skip the hook"
        );
        assert_eq!(c.calls(Op::GetFolder), 4);
        assert_eq!(
            mock.calls("get_folder"),
            2,
            "failed calls never reached the mock"
        );
        assert_eq!(c.errors(Op::GetFolder, ApiErrorKind::Server), 1);
        let nths: Vec<u64> = c.records().iter().map(|r| r.call.nth).collect();
        assert_eq!(nths, [1, 2, 3, 4]);
        assert!(c
            .records()
            .iter()
            .all(|r| r.call.id.as_deref() == Some(a.id.as_str())));
    }

    #[tokio::test]
    async fn a_lost_answer_still_applies_the_call() {
        let mock = MockClient::new();
        let c = FaultyClient::wrap(mock.clone());
        c.push(
            Op::CreateFolder,
            Inject::lose_answer(ApiError::new(ApiErrorKind::Transport, "reset")),
        );
        let e = c.create_folder("x", None).await.unwrap_err();
        assert_eq!(e.kind, ApiErrorKind::Transport);
        assert_eq!(mock.folders().len(), 1, "the folder was created");
        c.create_folder("y", None).await.unwrap();
        assert_eq!(mock.folders().len(), 2);
    }

    #[tokio::test]
    async fn read_ranges_are_logged() {
        let mock = MockClient::new();
        let f = mock.add_file(None, "f", b"0123456789");
        let c = FaultyClient::wrap(mock.clone());
        c.push(
            Op::ReadRange,
            Inject::pass().after(Duration::from_millis(30)),
        );
        assert_eq!(
            &c.read_range(f.url().unwrap(), 2, 3).await.unwrap()[..],
            b"234"
        );
        mock.expire_urls();
        let e = c.read_range(f.url().unwrap(), 0, 1).await.unwrap_err();
        assert_eq!(e.kind, ApiErrorKind::UrlExpired);
        assert_eq!(c.ranges(), [(2, 3), (0, 1)]);
        assert_eq!(c.errors(Op::ReadRange, ApiErrorKind::UrlExpired), 1);
    }
}
