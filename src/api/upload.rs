//! The streaming body of Create File.
//!
//! The API wants one JSON document with the whole file as standard base64 in `data`. Building
//! it in memory would hold 1.33× the file; instead the body is produced as a stream:
//!
//! ```text
//! {"data":"  <base64 of chunk 1> <base64 of chunk 2> …  ",  <NewFile as JSON without its '{'>
//! ```
//!
//! The file is read in chunks whose size is a multiple of 3, so every chunk but the last
//! encodes without padding and the concatenation equals the base64 of the whole file.
//! The length is known up front (`framing + 4 * ceil(n / 3)`), so the request carries an
//! exact `Content-Length` for servers that refuse chunked bodies.
//!
//! Reading and encoding run on a blocking thread a few chunks ahead of the HTTP stack, so
//! encoding the next chunk overlaps with sending the last one; each chunk is read straight
//! into one reused buffer and encoded once into the buffer that goes to the socket.

use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};

use super::error::{ApiError, ApiErrorKind, ApiResult};
use super::types::NewFile;

/// Bytes of the local file read (and encoded) per chunk: a multiple of 3, 768 KiB, so one
/// chunk of the body is 1 MiB of base64. Large enough that per-chunk costs (a read, a
/// channel hop, a socket write) vanish; small enough that a few in flight stay a few MiB.
pub const CHUNK: usize = 3 * 256 * 1024;

/// Encoded chunks waiting for the HTTP stack, per upload (memory: about 1 MiB each).
const AHEAD: usize = 2;

const PREFIX: &[u8] = br#"{"data":""#;

/// Length of the base64 encoding (with padding) of `n` bytes.
pub fn base64_len(n: u64) -> u64 {
    n.div_ceil(3) * 4
}

/// The framing around the base64 text: the prefix and the suffix (`",` + the metadata).
fn framing(meta: &NewFile) -> ApiResult<(Bytes, Bytes)> {
    let json = serde_json::to_vec(meta)
        .map_err(|e| ApiError::new(ApiErrorKind::Local, format!("encoding file metadata: {e}")))?;
    // `NewFile` always serialises as a non-empty object ("fileName", "mimeType", "folderId").
    debug_assert!(json.first() == Some(&b'{') && json.len() > 2);
    let mut suffix = Vec::with_capacity(json.len() + 1);
    suffix.extend_from_slice(b"\",");
    suffix.extend_from_slice(&json[1..]);
    Ok((Bytes::from_static(PREFIX), Bytes::from(suffix)))
}

/// Base64 of the first `size` bytes of a reader, one [`CHUNK`] of input at a time.
///
/// Fails with `UnexpectedEof` if the reader ends before `size` bytes (the file shrank while
/// being uploaded); bytes past `size` are never read, so the advertised length always holds.
struct Encoder<R> {
    reader: R,
    remaining: u64,
    buf: Vec<u8>,
}

impl<R: Read> Encoder<R> {
    fn new(reader: R, size: u64) -> Self {
        let cap = usize::try_from(size).map_or(CHUNK, |s| s.min(CHUNK));
        Encoder {
            reader,
            remaining: size,
            buf: vec![0; cap],
        }
    }

    fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let want = usize::try_from(self.remaining).map_or(CHUNK, |left| left.min(CHUNK));
        let buf = &mut self.buf[..want];
        // The whole chunk: a short chunk mid-file would encode with padding.
        self.reader.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(e.kind(), "file shrank while it was being uploaded")
            } else {
                e
            }
        })?;
        // SIMD encoder: several times faster than the `base64` crate's, and it writes into
        // an uninitialised buffer (no zeroing pass).
        let out: Vec<u8> = base64_simd::STANDARD.encode_type(&*buf);
        debug_assert_eq!(out.len() as u64, base64_len(want as u64));
        self.remaining -= want as u64;
        Ok(Some(Bytes::from(out)))
    }
}

/// A Create File body: the byte stream and its exact length.
pub struct UploadBody<S> {
    pub stream: S,
    pub content_length: u64,
}

/// Builds the streamed JSON body for `size` bytes read from `reader`, which is read and
/// encoded on a blocking thread, [`AHEAD`] chunks ahead of the consumer. Dropping the
/// stream stops that thread at its next chunk.
///
/// The stream yields an error if the reader ends before `size` bytes (the file shrank while
/// being uploaded); bytes past `size` are ignored, so the advertised length always holds.
pub fn json_body_stream<R>(
    meta: &NewFile,
    reader: R,
    size: u64,
) -> ApiResult<UploadBody<impl Stream<Item = io::Result<Bytes>> + Send + 'static>>
where
    R: Read + Send + 'static,
{
    let (prefix, suffix) = framing(meta)?;
    let content_length = prefix.len() as u64 + base64_len(size) + suffix.len() as u64;
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut encoder = Encoder::new(reader, size);
        loop {
            let item = match encoder.next_chunk() {
                Ok(None) => return,
                Ok(Some(chunk)) => Ok(chunk),
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            // An error here means the body was dropped (request over): stop reading.
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    let data = received(rx);
    let stream = futures::stream::once(async move { Ok(prefix) })
        .chain(data)
        .chain(futures::stream::once(async move { Ok(suffix) }));
    Ok(UploadBody {
        stream,
        content_length,
    })
}

/// The receiver as a stream that ends after the first error (the producer stops there).
fn received(
    mut rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Upload progress, shared between the body stream and the caller's stall watchdog.
#[derive(Debug)]
pub struct Progress {
    start: Instant,
    /// Milliseconds since `start` of the last chunk handed to the HTTP stack.
    last_ms: AtomicU64,
    /// Bytes of body handed to the HTTP stack.
    sent: AtomicU64,
    done: AtomicBool,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            done: AtomicBool::new(false),
        }
    }
}

impl Progress {
    fn record(&self, n: usize) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Time since the HTTP stack last took a chunk (or since the start).
    pub fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Bytes of body handed to the HTTP stack so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// True once the whole body was handed to the HTTP stack.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }
}

/// Opens `path` and builds the Create File body for it; returns the body and its exact
/// length. Called once per attempt: a streamed body cannot be replayed, so a retry re-opens
/// the file. `progress` is updated as the HTTP stack pulls chunks.
pub async fn file_body(
    meta: &NewFile,
    path: &Path,
    progress: Arc<Progress>,
) -> ApiResult<(reqwest::Body, u64)> {
    let local = |e: io::Error| {
        ApiError::new(
            ApiErrorKind::Local,
            format!("reading {} for upload: {e}", path.display()),
        )
        .with_source(e)
    };
    let file = tokio::fs::File::open(path).await.map_err(local)?;
    let size = file.metadata().await.map_err(local)?.len();
    let file = file.into_std().await;
    let body = json_body_stream(meta, file, size)?;
    let total = body.content_length;
    let stream = body.stream.inspect_ok(move |chunk| {
        progress.record(chunk.len());
        if progress.sent() >= total {
            progress.done.store(true, Ordering::Relaxed);
        }
    });
    Ok((reqwest::Body::wrap_stream(stream), total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::Serialize;

    #[derive(Serialize)]
    struct Full<'a> {
        data: String,
        #[serde(flatten)]
        meta: &'a NewFile,
    }

    fn meta() -> NewFile {
        NewFile {
            file_name: "a \"quoted\" ∕ name.bin".into(),
            mime_type: "application/octet-stream".into(),
            title: Some("Title".into()),
            description: Some("line1\nline2".into()),
            alt_text: None,
            is_private: Some(false),
            folder_id: Some("019b666f".into()),
            is_favorite: Some(true),
            sort_order: Some(3),
        }
    }

    fn pattern(n: usize) -> Vec<u8> {
        // Not a short period, so a chunk misplaced in the output would be noticed.
        let mut x: u32 = 0x1234_5678;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    async fn collect(meta: &NewFile, bytes: &[u8]) -> (Vec<u8>, u64) {
        let body =
            json_body_stream(meta, io::Cursor::new(bytes.to_vec()), bytes.len() as u64).unwrap();
        let chunks: Vec<Bytes> = body.stream.try_collect().await.unwrap();
        (chunks.concat(), body.content_length)
    }

    #[tokio::test]
    async fn streamed_body_equals_full_json_at_chunk_boundaries() {
        for n in [0usize, 1, 2, 3, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 5] {
            let bytes = pattern(n);
            for m in [meta(), NewFile::default()] {
                let (body, len) = collect(&m, &bytes).await;
                let expected = serde_json::to_vec(&Full {
                    data: STANDARD.encode(&bytes),
                    meta: &m,
                })
                .unwrap();
                assert_eq!(body, expected, "size {n}");
                assert_eq!(len, body.len() as u64, "Content-Length, size {n}");

                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let decoded = STANDARD.decode(v["data"].as_str().unwrap()).unwrap();
                assert_eq!(decoded, bytes, "base64 round trip, size {n}");
            }
        }
    }

    #[tokio::test]
    async fn file_that_shrinks_fails_the_stream() {
        let body = json_body_stream(&meta(), io::Cursor::new(vec![1u8; 10]), 20).unwrap();
        let r: io::Result<Vec<Bytes>> = body.stream.try_collect().await;
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    /// An endless reader that says when it is dropped (its producer thread ended).
    struct Endless(Arc<AtomicBool>);

    impl io::Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            buf.fill(7);
            Ok(buf.len())
        }
    }

    impl Drop for Endless {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn dropping_the_stream_stops_the_reader() {
        let dropped = Arc::new(AtomicBool::new(false));
        let body = json_body_stream(&meta(), Endless(dropped.clone()), u64::MAX / 2).unwrap();
        let mut stream = Box::pin(body.stream);
        assert_eq!(stream.next().await.unwrap().unwrap(), PREFIX);
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.len(), base64_len(CHUNK as u64) as usize);
        drop(stream);
        // Bounded wait: the producer notices at its next send.
        for _ in 0..500 {
            if dropped.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the producer kept reading after the body was dropped");
    }

    #[tokio::test]
    async fn file_body_reports_missing_file_as_local() {
        let err = file_body(
            &meta(),
            Path::new("/nonexistent/mediafs-upload"),
            Arc::default(),
        )
        .await
        .err()
        .unwrap();
        assert_eq!(err.kind, ApiErrorKind::Local);
    }

    #[test]
    fn base64_len_matches_engine() {
        for n in 0..20u64 {
            assert_eq!(
                base64_len(n),
                STANDARD.encode(vec![0u8; n as usize]).len() as u64
            );
        }
    }
}
