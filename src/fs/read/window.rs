//! Pure logic of the read path: block arithmetic and sequential detection with a growing
//! readahead window. No I/O, so it is tested directly.

use std::ops::Range;

/// Blocks `[first, last]` (inclusive) covering bytes `[offset, end)`; `end > offset`.
pub(crate) fn blocks_for(offset: u64, end: u64, block_size: u64) -> (u64, u64) {
    debug_assert!(end > offset);
    (offset / block_size, (end - 1) / block_size)
}

/// Byte range of block `block` in a file of `size` bytes (the last block is short).
pub(crate) fn block_range(block: u64, block_size: u64, size: u64) -> Range<u64> {
    let start = block.saturating_mul(block_size).min(size);
    let end = start.saturating_add(block_size).min(size);
    start..end
}

/// Tunables of sequential detection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowParams {
    pub block_size: u64,
    pub max_window: u64,
    /// A read starting up to this far before the previous end is still sequential (the
    /// kernel issues reads slightly out of order when several are in flight).
    pub behind: u64,
    /// ... and up to this far after it.
    pub ahead: u64,
}

/// Per-handle access pattern: where the stream is, how far ahead to prefetch, and up to
/// where prefetch was already issued. O(1) state.
#[derive(Debug, Default)]
pub(crate) struct Readahead {
    /// Furthest end of the sequential stream so far; `None` before the first read.
    last_end: Option<u64>,
    /// Bytes to keep prefetched ahead of `last_end`; 0 = random access, no prefetch.
    window: u64,
    /// Prefetch was issued (or found cached) up to this offset.
    issued_to: u64,
}

impl Readahead {
    /// Whether the handle reads sequentially (a readahead window is open).
    pub fn is_sequential(&self) -> bool {
        self.window > 0
    }

    /// Records a read of `[offset, end)` and returns the byte range worth prefetching
    /// (already clamped to the file `size` and to what was issued before), if any.
    ///
    /// The first read gets one block ahead (low time to first byte); each sequential read
    /// doubles the window up to `max_window`; a random read resets it to nothing.
    pub fn on_read(
        &mut self,
        p: &WindowParams,
        offset: u64,
        end: u64,
        size: u64,
    ) -> Option<Range<u64>> {
        let first_window = p.block_size.min(p.max_window);
        match self.last_end {
            None => {
                self.window = first_window;
                self.last_end = Some(end);
            }
            Some(last) if offset.saturating_add(p.behind) >= last && offset <= last + p.ahead => {
                self.window = if self.window == 0 {
                    first_window
                } else {
                    self.window.saturating_mul(2).min(p.max_window)
                };
                self.last_end = Some(last.max(end));
            }
            Some(_) => {
                self.window = 0;
                self.issued_to = 0;
                self.last_end = Some(end);
            }
        }
        if self.window == 0 {
            return None;
        }
        let stream_end = self.last_end.unwrap_or(end);
        let from = self.issued_to.max(end);
        let to = stream_end.saturating_add(self.window).min(size);
        (from < to).then_some(from..to)
    }

    /// Prefetch was issued up to `to` (may be less than asked when in-flight limits hit).
    pub fn mark_issued(&mut self, to: u64) {
        self.issued_to = self.issued_to.max(to);
    }

    #[cfg(test)]
    pub fn window(&self) -> u64 {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const KIB: u64 = 1 << 10;

    fn params() -> WindowParams {
        WindowParams {
            block_size: MIB,
            max_window: 64 * MIB,
            behind: 2 * MIB,
            ahead: 8 * MIB,
        }
    }

    #[test]
    fn block_math() {
        assert_eq!(blocks_for(0, 1, MIB), (0, 0));
        assert_eq!(blocks_for(0, MIB, MIB), (0, 0));
        assert_eq!(blocks_for(MIB - 1, MIB + 1, MIB), (0, 1));
        assert_eq!(blocks_for(3 * MIB, 3 * MIB + 1, MIB), (3, 3));
        assert_eq!(block_range(0, MIB, 10), 0..10);
        assert_eq!(block_range(1, MIB, 3 * MIB / 2), MIB..3 * MIB / 2);
        assert_eq!(block_range(2, MIB, 2 * MIB), 2 * MIB..2 * MIB);
    }

    #[test]
    fn first_read_prefetches_one_block_then_window_doubles_to_cap() {
        let p = params();
        let mut r = Readahead::default();
        let size = 1 << 40;
        let got = r.on_read(&p, 0, 128 * KIB, size).unwrap();
        assert_eq!(got, 128 * KIB..128 * KIB + MIB);
        assert_eq!(r.window(), MIB);
        r.mark_issued(got.end);
        let mut expected = MIB;
        let mut off = 128 * KIB;
        for _ in 0..10 {
            let got = r.on_read(&p, off, off + 128 * KIB, size);
            expected = (expected * 2).min(64 * MIB);
            assert_eq!(r.window(), expected);
            let got = got.unwrap();
            // Never re-issues what was issued before.
            assert!(got.start >= off + 128 * KIB);
            assert_eq!(got.end, off + 128 * KIB + expected);
            r.mark_issued(got.end);
            off += 128 * KIB;
        }
        assert_eq!(r.window(), 64 * MIB);
    }

    #[test]
    fn random_read_resets_window_and_slightly_out_of_order_is_sequential() {
        let p = params();
        let mut r = Readahead::default();
        let size = 1 << 40;
        r.on_read(&p, 0, MIB, size);
        r.on_read(&p, MIB, 2 * MIB, size);
        assert_eq!(r.window(), 2 * MIB);
        // Kernel reordering: a read a little behind the end is still sequential.
        r.on_read(&p, MIB + 512 * KIB, MIB + 640 * KIB, size);
        assert_eq!(r.window(), 4 * MIB);
        // ... and one a little ahead.
        r.on_read(&p, 5 * MIB, 6 * MIB, size);
        assert_eq!(r.window(), 8 * MIB);
        // A jump far away is random: no prefetch.
        assert_eq!(r.on_read(&p, 500 * MIB, 500 * MIB + 4096, size), None);
        assert_eq!(r.window(), 0);
        // Far behind is random too.
        assert_eq!(r.on_read(&p, 100 * MIB, 100 * MIB + 4096, size), None);
        // Continuing from there restarts small.
        let got = r
            .on_read(&p, 100 * MIB + 4096, 100 * MIB + 8192, size)
            .unwrap();
        assert_eq!(r.window(), MIB);
        assert_eq!(got, 100 * MIB + 8192..101 * MIB + 8192);
    }

    #[test]
    fn prefetch_is_clamped_to_file_size_and_cap() {
        let p = WindowParams {
            max_window: 3 * MIB,
            ..params()
        };
        let mut r = Readahead::default();
        let size = 2 * MIB + 10;
        assert_eq!(r.on_read(&p, 0, MIB, size), Some(MIB..2 * MIB));
        r.mark_issued(2 * MIB);
        assert_eq!(r.on_read(&p, MIB, 2 * MIB, size), Some(2 * MIB..size));
        r.mark_issued(size);
        assert_eq!(r.on_read(&p, 2 * MIB, size, size), None);
        for _ in 0..5 {
            r.on_read(&p, 2 * MIB, size, size);
        }
        assert_eq!(r.window(), 3 * MIB);
    }

    #[test]
    fn zero_max_window_disables_prefetch() {
        let p = WindowParams {
            max_window: 0,
            ..params()
        };
        let mut r = Readahead::default();
        assert_eq!(r.on_read(&p, 0, MIB, 10 * MIB), None);
        assert_eq!(r.on_read(&p, MIB, 2 * MIB, 10 * MIB), None);
    }
}
