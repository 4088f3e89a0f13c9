//! Tests of the read path against the in-memory [`MockClient`], wrapped in a
//! [`FaultyClient`] that logs every ranged request and fails or slows down chosen ones
//! deterministically.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use super::urls::{now_unix_ms, parse_expires};
use super::*;
use crate::api::faulty::{FaultyClient, Inject, Op};
use crate::api::mock::MockClient;
use crate::api::MediaFile;

const KIB: u64 = 1 << 10;

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn content(len: u64, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Settles spawned prefetches before counting requests.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Requests starting at these offsets fail (once each) with a server error, or are delayed.
#[derive(Default)]
struct RangeFaults {
    fail_at: HashSet<u64>,
    slow_at: HashMap<u64, Duration>,
}

/// What the tests ask of the recorded ranged requests.
trait Fetched {
    fn fetched_bytes(&self) -> u64;
    /// Block indexes fetched, one entry per block per request.
    fn fetched_blocks(&self, bs: u64) -> Vec<u64>;
}

impl Fetched for FaultyClient {
    fn fetched_bytes(&self) -> u64 {
        self.ranges().iter().map(|r| r.1).sum()
    }

    fn fetched_blocks(&self, bs: u64) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .ranges()
            .iter()
            .flat_map(|&(off, len)| off / bs..(off + len).div_ceil(bs))
            .collect();
        v.sort_unstable();
        v
    }
}

struct Setup {
    mock: Arc<MockClient>,
    rec: Arc<FaultyClient>,
    faults: Arc<Mutex<RangeFaults>>,
    reader: Arc<Reader>,
}

fn setup(config: ReadConfig) -> Setup {
    let mock = MockClient::new();
    let rec = FaultyClient::wrap(mock.clone());
    let faults = Arc::new(Mutex::new(RangeFaults::default()));
    let f = Arc::clone(&faults);
    rec.set_hook(move |call| {
        let Some((offset, _)) = call.range else {
            return Inject::pass();
        };
        let mut f = f.lock().unwrap();
        let delay = f.slow_at.get(&offset).copied().unwrap_or_default();
        if f.fail_at.remove(&offset) {
            Inject::fail_with(ApiErrorKind::Server).after(delay)
        } else {
            Inject::pass().after(delay)
        }
    });
    let reader = Reader::new(rec.clone(), config);
    Setup {
        mock,
        rec,
        faults,
        reader,
    }
}

impl Setup {
    /// Adds a file and opens a handle on it with the URL from the "listing".
    fn add(&self, name: &str, bytes: &[u8]) -> (MediaFile, ReadHandle) {
        let f = self.mock.add_file(None, name, bytes);
        let h = self
            .reader
            .open(&f.id, f.size(), f.url().map(str::to_string));
        (f, h)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_read_matches_source_with_few_multi_block_requests() {
    let s = setup(ReadConfig::default());
    let src = content(20 * MIB, 1);
    let (_, h) = s.add("seq.bin", &src);
    // The first read fetches only the block it needs plus at most one ahead.
    let first = s.reader.read(&h, 0, 128 * 1024).await.unwrap();
    settle().await;
    assert_eq!(s.rec.fetched_blocks(MIB), vec![0, 1]);
    assert!(s.rec.ranges().iter().all(|r| r.1 == MIB));
    let mut got = first.to_vec();
    got.extend(s.read_all_from(&h, 128 * KIB).await);
    assert_eq!(sha(&got), sha(&src));

    let ranges = s.rec.ranges();
    let reads = 20 * MIB / (128 * KIB);
    assert!(
        (ranges.len() as u64) * 8 <= reads,
        "{} requests for {reads} reads: {ranges:?}",
        ranges.len()
    );
    // Prefetch coalesced blocks: some requests cover several blocks.
    assert!(ranges.iter().any(|r| r.1 > MIB), "{ranges:?}");
    // Nothing fetched twice, nothing beyond the file.
    assert_eq!(s.rec.fetched_blocks(MIB), (0..20).collect::<Vec<_>>());
    assert_eq!(s.rec.fetched_bytes(), 20 * MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_reads_fetch_only_needed_blocks() {
    let s = setup(ReadConfig::default());
    let src = content(20 * MIB, 2);
    let (_, h) = s.add("rand.bin", &src);
    // Each read is far (> 8 MiB ahead or > 2 MiB behind) from the previous one.
    let reads: [(u64, u32); 4] = [
        (13 * MIB + 777, 4096),
        (2 * MIB + 12345, 10_000),
        (17 * MIB + 1, 1),
        (5 * MIB + 999_999, 100_000), // crosses into block 6
    ];
    for (off, len) in reads {
        let b = s.reader.read(&h, off, len).await.unwrap();
        assert_eq!(&b[..], &src[off as usize..off as usize + len as usize]);
    }
    settle().await;
    // The first read prefetches one block ahead (14); the random ones nothing.
    assert_eq!(s.rec.fetched_blocks(MIB), vec![2, 5, 6, 13, 14, 17]);
    // Blocks 5 and 6 came in one request.
    assert!(s.rec.ranges().contains(&(5 * MIB, 2 * MIB)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_at_and_across_eof() {
    let s = setup(ReadConfig::default());
    let size = 3 * MIB + 100;
    let src = content(size, 3);
    let (_, h) = s.add("eof.bin", &src);
    let tail = s.reader.read(&h, size - 50, 4096).await.unwrap();
    assert_eq!(&tail[..], &src[(size - 50) as usize..]);
    assert!(s.reader.read(&h, size, 4096).await.unwrap().is_empty());
    assert!(s.reader.read(&h, size + 10, 1).await.unwrap().is_empty());
    assert!(s.reader.read(&h, 0, 0).await.unwrap().is_empty());
    // A read spanning the last full block and the short one.
    let span = s.reader.read(&h, 3 * MIB - 10, 1000).await.unwrap();
    assert_eq!(&span[..], &src[(3 * MIB - 10) as usize..]);

    let (_, empty) = s.add("empty.bin", b"");
    assert!(s.reader.read(&empty, 0, 4096).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_of_one_file_share_fetches() {
    let s = setup(ReadConfig::default());
    s.mock.set_latency(Duration::from_millis(30));
    let src = Arc::new(content(4 * MIB, 4));
    let f = s.mock.add_file(None, "shared.bin", &src);
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let reader = Arc::clone(&s.reader);
        let h = reader.open(&f.id, f.size(), f.url().map(str::to_string));
        let src = Arc::clone(&src);
        tasks.push(tokio::spawn(async move {
            // Odd offsets inside blocks 0 and 1, a different one per reader.
            let off = 1000 * i + 333;
            let b = reader.read(&h, off, 1_200_000).await.unwrap();
            assert_eq!(sha(&b), sha(&src[off as usize..off as usize + 1_200_000]));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    settle().await;
    let blocks = s.rec.fetched_blocks(MIB);
    let unique: HashSet<u64> = blocks.iter().copied().collect();
    assert_eq!(
        blocks.len(),
        unique.len(),
        "a block was fetched twice: {blocks:?}"
    );
    assert!(unique.contains(&0) && unique.contains(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_readers_of_different_files() {
    // A cache smaller than the data, so eviction runs under concurrency.
    let s = setup(ReadConfig::with_cache_bytes(8 * MIB));
    s.mock.set_latency(Duration::from_millis(2));
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let src = content(3 * MIB + 7 * i + 1, 100 + i);
        let (_, h) = s.add(&format!("f{i}.bin"), &src);
        let reader = Arc::clone(&s.reader);
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let b = reader.read(&h, got.len() as u64, 64 * 1024).await.unwrap();
                if b.is_empty() {
                    break;
                }
                got.extend_from_slice(&b);
            }
            assert_eq!(sha(&got), sha(&src), "file {i}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(s.reader.cached_bytes() <= 8 * MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_stays_within_budget() {
    let budget = 4 * MIB;
    let s = setup(ReadConfig::with_cache_bytes(budget));
    let a = content(8 * MIB + 3, 5);
    let b = content(8 * MIB + 5, 6);
    let (_, ha) = s.add("a.bin", &a);
    let (_, hb) = s.add("b.bin", &b);
    // Interleaved sequential reads of two files 4x the cache in total.
    let mut off = 0u64;
    while off < 8 * MIB + 5 {
        for (h, src) in [(&ha, &a), (&hb, &b)] {
            let got = s.reader.read(h, off, 256 * 1024).await.unwrap();
            let end = (off as usize + 256 * 1024).min(src.len());
            if (off as usize) < src.len() {
                assert_eq!(&got[..], &src[off as usize..end]);
            }
            assert!(
                s.reader.cached_bytes() <= budget,
                "{}",
                s.reader.cached_bytes()
            );
        }
        off += 256 * 1024;
    }
    // Random reads as well.
    for i in 0..40u64 {
        let off = (i * 2_654_435_761) % (8 * MIB);
        let got = s.reader.read(&ha, off, 70_000).await.unwrap();
        let end = (off as usize + 70_000).min(a.len());
        assert_eq!(&got[..], &a[off as usize..end]);
        assert!(s.reader.cached_bytes() <= budget);
    }
    settle().await;
    let used = s.reader.cached_bytes();
    assert!(used > 0 && used <= budget, "{used}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_within_a_block_are_zero_copy_slices_of_the_cache() {
    let s = setup(ReadConfig::default());
    let src = content(2 * MIB, 7);
    let (_, h) = s.add("zc.bin", &src);
    let a = s.reader.read(&h, 4096, 8192).await.unwrap();
    let b = s.reader.read(&h, 4096, 8192).await.unwrap();
    assert_eq!(&a[..], &src[4096..4096 + 8192]);
    assert_eq!(a.as_ptr(), b.as_ptr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_urls_are_refreshed_during_a_slow_sequential_read() {
    // Small blocks and cache so that fetches keep happening over the whole read.
    let config = ReadConfig {
        cache_bytes: MIB,
        block_size: 256 * KIB,
        max_window: 256 * KIB,
        ..ReadConfig::default()
    };
    let s = setup(config);
    s.mock.set_url_ttl(Duration::from_millis(200));
    s.mock.set_latency(Duration::from_millis(5));
    let src = content(4 * MIB + 17, 8);
    let (_, h) = s.add("slow.bin", &src);
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    loop {
        let b = s
            .reader
            .read(&h, got.len() as u64, 32 * 1024)
            .await
            .unwrap();
        if b.is_empty() {
            break;
        }
        got.extend_from_slice(&b);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(started.elapsed() > Duration::from_secs(1));
    assert_eq!(sha(&got), sha(&src));
    assert!(
        s.mock.calls("get_file") >= 2,
        "{}",
        s.mock.calls("get_file")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_is_refreshed_before_expires_without_a_rejected_request() {
    let s = setup(ReadConfig::default());
    s.mock.set_url_ttl(Duration::from_secs(1));
    // `Expires` has one-second resolution: issue the URL just after a second starts, so
    // it has most of a second to live and is not due at once.
    let into_second = now_unix_ms() % 1000;
    tokio::time::sleep(Duration::from_millis(1010 - into_second)).await;
    let src = content(100_000, 9);
    let (f, h) = s.add("soon.bin", &src);
    let expires = parse_expires(f.url().unwrap()).unwrap();
    assert_eq!(&s.reader.read(&h, 0, 10).await.unwrap()[..], &src[..10]);
    s.reader.invalidate(&f.id);
    // At `Expires` a refresh is due whatever the margin.
    let wait = (expires * 1000).saturating_sub(now_unix_ms()) + 5;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    assert_eq!(&s.reader.read(&h, 50, 10).await.unwrap()[..], &src[50..60]);
    assert_eq!(s.mock.calls("get_file"), 1);
    assert_eq!(s.rec.errors(Op::ReadRange, ApiErrorKind::UrlExpired), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_of_one_file_coalesce() {
    let s = setup(ReadConfig::default());
    s.mock.set_latency(Duration::from_millis(20));
    let src = Arc::new(content(8 * MIB, 10));
    let (f, _) = s.add("many.bin", &src);
    s.mock.expire_urls();
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let reader = Arc::clone(&s.reader);
        let h = reader.open(&f.id, f.size(), f.url().map(str::to_string));
        let src = Arc::clone(&src);
        tasks.push(tokio::spawn(async move {
            let off = i * MIB + 5;
            let b = reader.read(&h, off, 1000).await.unwrap();
            assert_eq!(&b[..], &src[off as usize..off as usize + 1000]);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.mock.calls("get_file"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_url_is_fetched_on_first_read_and_offer_url_is_used() {
    let s = setup(ReadConfig::default());
    let src = content(10_000, 11);
    let f = s.mock.add_file(None, "nourl.bin", &src);
    let h = s.reader.open(&f.id, f.size(), None);
    assert_eq!(&s.reader.read(&h, 0, 100).await.unwrap()[..], &src[..100]);
    assert_eq!(s.mock.calls("get_file"), 1);

    // A later listing offers a fresher URL; the old one is dead: reads use the new one.
    s.mock.set_url_ttl(Duration::from_secs(3600));
    s.mock.expire_urls();
    let fresh = s.mock.get_file(&f.id).await.unwrap();
    s.reader.offer_url(&f.id, fresh.url().unwrap());
    s.reader.clear();
    assert_eq!(s.reader.cached_bytes(), 0);
    assert_eq!(
        &s.reader.read(&h, 100, 100).await.unwrap()[..],
        &src[100..200]
    );
    assert_eq!(s.rec.errors(Op::ReadRange, ApiErrorKind::UrlExpired), 0);
    assert_eq!(s.mock.calls("get_file"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fetch_gives_errno_and_is_not_cached() {
    let s = setup(ReadConfig::default());
    let src = content(100_000, 12);
    let (f, h) = s.add("fail.bin", &src);
    s.mock.fail_next("read_range", ApiErrorKind::Server, 1);
    let e = s.reader.read(&h, 0, 4096).await.unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    assert_eq!(&s.reader.read(&h, 0, 4096).await.unwrap()[..], &src[..4096]);

    s.reader.invalidate(&f.id);
    assert_eq!(s.reader.cached_bytes(), 0);
    s.mock.fail_next("read_range", ApiErrorKind::NotFound, 1);
    let e = s.reader.read(&h, 10, 10).await.unwrap_err();
    assert_eq!(e.errno(), libc::ENOENT);
    assert_eq!(&s.reader.read(&h, 10, 10).await.unwrap()[..], &src[10..20]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_rejected_after_every_refresh_is_an_error_not_a_hang() {
    let s = setup(ReadConfig::default());
    let src = content(1000, 13);
    let (_, h) = s.add("reject.bin", &src);
    // Initial attempt plus three refreshed ones.
    s.mock.fail_next("read_range", ApiErrorKind::UrlExpired, 4);
    let e = s.reader.read(&h, 0, 10).await.unwrap_err();
    assert_eq!(e.errno(), libc::EACCES);
    assert_eq!(s.mock.calls("get_file"), 3);
    assert_eq!(&s.reader.read(&h, 0, 10).await.unwrap()[..], &src[..10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_response_mid_file_is_eio() {
    let s = setup(ReadConfig::default());
    let src = content(MIB + 10, 14);
    let f = s.mock.add_file(None, "short.bin", &src);
    // The listing claims more bytes than the CDN has.
    let h = s.reader.open(&f.id, 3 * MIB, f.url().map(str::to_string));
    let e = s.reader.read(&h, 2 * MIB, 4096).await.unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    let e = s.reader.read(&h, MIB, 4096).await.unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    assert_eq!(&s.reader.read(&h, 0, 4096).await.unwrap()[..], &src[..4096]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_prefetch_does_not_break_reads() {
    let s = setup(ReadConfig::default());
    let src = content(8 * MIB, 15);
    let (_, h) = s.add("pf.bin", &src);
    {
        let mut st = s.faults.lock().unwrap();
        // The prefetch of block 1 fails, and slowly, so the next read joins it in flight.
        st.fail_at.insert(MIB);
        st.slow_at.insert(MIB, Duration::from_millis(400));
        // A later prefetch run starting at block 2 fails too.
        st.fail_at.insert(2 * MIB);
    }
    assert_eq!(
        &s.reader.read(&h, 0, 128 * 1024).await.unwrap()[..],
        &src[..128 * 1024]
    );
    let got = s.reader.read(&h, MIB, 128 * 1024).await.unwrap();
    assert_eq!(&got[..], &src[MIB as usize..(MIB + 128 * KIB) as usize]);
    // Both the failed prefetch and the read's own fetch of block 1 happened.
    let at_1 = s.rec.ranges().iter().filter(|r| r.0 == MIB).count();
    assert_eq!(at_1, 2, "{:?}", s.rec.ranges());
    settle().await;
    let rest = s.read_all_from(&h, MIB + 128 * KIB).await;
    assert_eq!(sha(&rest), sha(&src[(MIB + 128 * KIB) as usize..]));
    assert!(s.faults.lock().unwrap().fail_at.is_empty());
}

impl Setup {
    async fn read_all_from(&self, h: &ReadHandle, mut off: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = self.reader.read(h, off, 128 * 1024).await.unwrap();
            if b.is_empty() {
                return out;
            }
            off += b.len() as u64;
            out.extend_from_slice(&b);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_respects_per_handle_in_flight_limit() {
    let config = ReadConfig {
        max_inflight_per_handle: 2,
        ..ReadConfig::default()
    };
    let s = setup(config);
    // Long enough that the quick cache-hit reads below all run while fetches are in flight.
    s.mock.set_latency(Duration::from_millis(300));
    let src = content(32 * MIB, 16);
    let (_, h) = s.add("limit.bin", &src);
    // Many quick sequential reads inside block 0 grow the window to the cap.
    for i in 0..8u64 {
        let off = i * 64 * KIB;
        let b = s.reader.read(&h, off, 64 * 1024).await.unwrap();
        assert_eq!(&b[..], &src[off as usize..(off + 64 * KIB) as usize]);
    }
    assert!(h.prefetch_inflight.load(Ordering::Relaxed) <= 2);
    // The in-flight count drains back to zero as the fetches finish.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while h.prefetch_inflight.load(Ordering::Relaxed) > 0 {
        assert!(std::time::Instant::now() < deadline, "prefetch count stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Without the limit the 64 MiB window would have fetched the whole file. With it:
    // block 0 on demand, block 1 prefetched alongside, then at most two more in flight
    // while the remaining (cache-hit) reads ran.
    assert!(s.rec.fetched_bytes() <= 4 * MIB, "{:?}", s.rec.ranges());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_read_leaves_its_fetch_running_for_the_next_reader() {
    let s = setup(ReadConfig::default());
    s.mock.set_latency(Duration::from_millis(100));
    let src = content(50_000, 17);
    let (_, h) = s.add("cancel.bin", &src);
    let h = Arc::new(h);
    let task = {
        let (reader, h) = (Arc::clone(&s.reader), Arc::clone(&h));
        tokio::spawn(async move { reader.read(&h, 0, 100).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    // As when the kernel interrupts a read: its future is dropped mid-fetch.
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(
        &s.reader.read(&h, 1000, 100).await.unwrap()[..],
        &src[1000..1100]
    );
    assert_eq!(s.rec.ranges().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_during_a_fetch_keeps_its_result_out_of_the_cache() {
    let s = setup(ReadConfig::default());
    s.mock.set_latency(Duration::from_millis(100));
    let src = content(50_000, 18);
    let (f, h) = s.add("inval.bin", &src);
    let h = Arc::new(h);
    let task = {
        let (reader, h) = (Arc::clone(&s.reader), Arc::clone(&h));
        tokio::spawn(async move { reader.read(&h, 0, 100).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.reader.invalidate(&f.id);
    // The reader already waiting still gets its bytes...
    assert_eq!(&task.await.unwrap().unwrap()[..], &src[..100]);
    // ... but nothing of the invalidated fetch was cached.
    assert_eq!(s.reader.cached_bytes(), 0);
    assert_eq!(&s.reader.read(&h, 0, 100).await.unwrap()[..], &src[..100]);
    assert_eq!(s.rec.ranges().len(), 2);
    assert_eq!(s.reader.cached_bytes(), 50_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_last_handle_forgets_the_file_url_state() {
    let s = setup(ReadConfig::default());
    let src = content(1000, 19);
    let (f, h1) = s.add("close.bin", &src);
    let h2 = s.reader.open(&f.id, f.size(), None);
    assert!(Arc::ptr_eq(&h1.file, &h2.file));
    assert_eq!(&s.reader.read(&h2, 0, 10).await.unwrap()[..], &src[..10]);
    // h2 had no URL of its own: it shared h1's, no get_file.
    assert_eq!(s.mock.calls("get_file"), 0);
    drop(h1);
    assert_eq!(s.reader.shared.files.lock().unwrap().map.len(), 1);
    drop(h2);
    assert!(s.reader.shared.files.lock().unwrap().map.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_in_flight_count_against_the_cache_budget() {
    // 8 MiB: two blocks may be in flight, so the cache keeps at most 6 MiB.
    let config = ReadConfig::with_cache_bytes(8 * MIB);
    assert_eq!(config.max_inflight_total, 2);
    let s = setup(config);
    let src = content(16 * MIB + 5, 20);
    let (_, h) = s.add("budget.bin", &src);
    let mut got = Vec::new();
    loop {
        let b = s
            .reader
            .read(&h, got.len() as u64, 128 * 1024)
            .await
            .unwrap();
        if b.is_empty() {
            break;
        }
        got.extend_from_slice(&b);
        assert!(
            s.reader.cached_bytes() <= 6 * MIB,
            "{}",
            s.reader.cached_bytes()
        );
    }
    assert_eq!(sha(&got), sha(&src));
    settle().await;
    assert!(s.reader.cached_bytes() <= 6 * MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_file_is_fetched_as_it_is_opened_and_read_with_that_one_request() {
    let s = setup(ReadConfig::default());
    let src = content(4 * KIB, 21);
    let (_, h) = s.add("small.bin", &src);
    s.reader.fetch_if_small(&h);
    settle().await;
    // The GET ran before any read: the read then costs no request of its own.
    assert_eq!(s.rec.ranges(), vec![(0, 4 * KIB)]);
    let got = s.reader.read(&h, 0, 128 * 1024).await.unwrap();
    assert_eq!(sha(&got), sha(&src));
    settle().await;
    assert_eq!(s.rec.ranges().len(), 1);

    // A file of more than one block waits for its first read (its offset is unknown), and
    // an empty file has nothing to fetch.
    let (_, big) = s.add("big.bin", &content(MIB + 1, 22));
    s.reader.fetch_if_small(&big);
    let (_, empty) = s.add("empty.bin", b"");
    s.reader.fetch_if_small(&empty);
    settle().await;
    assert_eq!(s.rec.ranges().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_stream_of_a_large_file_drops_the_blocks_behind_it() {
    // 64 MiB of cache: a 16 MiB window, and room for all of a 40 MiB file.
    let s = setup(ReadConfig::with_cache_bytes(64 * MIB));
    let big = content(40 * MIB, 21);
    let (f, h) = s.add("big.bin", &big);
    assert_eq!(sha(&s.read_all_from(&h, 0).await), sha(&big));
    settle().await;
    // Only the tail the stream may still reorder into stays; nothing was fetched twice.
    assert!(
        s.reader.cached_bytes() <= 4 * MIB,
        "{} bytes cached",
        s.reader.cached_bytes()
    );
    assert_eq!(s.rec.fetched_blocks(MIB), (0..40).collect::<Vec<_>>());

    // Two handles on the file: a second reader may follow, so the blocks stay.
    let other = s.reader.open(&f.id, f.size(), f.url().map(str::to_string));
    let h2 = s.reader.open(&f.id, f.size(), f.url().map(str::to_string));
    assert_eq!(sha(&s.read_all_from(&h2, 0).await), sha(&big));
    settle().await;
    assert!(s.reader.cached_bytes() >= 36 * MIB);
    drop(other);

    // A file no larger than the window stays cached for the next reader.
    let small = content(8 * MIB, 22);
    let (_, h3) = s.add("small.bin", &small);
    s.read_all_from(&h3, 0).await;
    settle().await;
    let fetched = s.rec.ranges().len();
    assert_eq!(sha(&s.read_all_from(&h3, 0).await), sha(&small));
    assert_eq!(s.rec.ranges().len(), fetched, "read again from the cache");
}
