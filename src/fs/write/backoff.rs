//! How long the write path waits between attempts: the shared
//! [`crate::api::retry::RetryPolicy`], scaled by `upload_retry_for`. Whether a failure
//! is worth another attempt soon is decided by [`crate::api::ApiError::is_transient`] alone.

use std::time::Duration;

use super::WriteConfig;
use crate::api::retry::RetryPolicy;

pub(super) fn min_delay(config: &WriteConfig) -> Duration {
    (config.upload_retry_for / 12).max(Duration::from_millis(10))
}

/// The shared retry policy, scaled for calls retried within `retry_for` (a commit, the
/// delete of a replaced file): first delays of a tenth of it (10 ms to 1 s), at most 10 s.
pub(super) fn quick_retries(retry_for: Duration) -> RetryPolicy {
    RetryPolicy {
        max_attempts: u32::MAX,
        base: (retry_for / 10).clamp(Duration::from_millis(10), Duration::from_secs(1)),
        max: Duration::from_secs(10),
    }
}

/// Wait before the next background attempt after `transient` failures in a row (0: the
/// last failure was not transient). Transient failures back off with the shared policy
/// (from `upload_retry_for / 12`, up to `upload_retry_for`); anything else waits
/// `10 × upload_retry_for`, so a file the service will not take does not hammer it.
pub(super) fn next_delay(config: &WriteConfig, transient: u32) -> Duration {
    if transient == 0 {
        return config.upload_retry_for * 10;
    }
    let policy = RetryPolicy {
        max_attempts: u32::MAX,
        base: min_delay(config),
        max: config.upload_retry_for.max(min_delay(config)),
    };
    policy.delay(transient, None)
}
