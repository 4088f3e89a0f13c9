//! Backoff policy for retried calls, and the loop that applies it.
//!
//! Full-jitter exponential backoff (each delay uniform in `[0, min(max, base * 2^(n-1))]`),
//! so many clients retrying after one outage spread out instead of arriving together.
//! A server's `Retry-After` wins over the computed delay, capped at `max`.

use std::future::Future;
use std::time::{Duration, SystemTime};

use rand::Rng;

use super::error::ApiError;

/// How often and how patiently to retry one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Cap of the first backoff; doubles with every further attempt.
    pub base: Duration,
    /// Cap of any single delay, `Retry-After` included.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_millis(200),
            max: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    pub fn new(max_attempts: u32, base: Duration, max: Duration) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            base,
            max,
        }
    }

    /// Runs `op(n)` (n = 1, 2, …) with this policy: retried while its error is transient
    /// ([`ApiError::is_transient`]) and attempts remain. For retries above the client (the
    /// client retries its own calls already); `what` names the operation in log lines.
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, ApiError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        run(self, what, |n| {
            let fut = op(n);
            async move { fut.await.map_err(Failure::new) }
        })
        .await
    }

    /// Delay before the retry that follows failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max);
        }
        let shift = attempt.saturating_sub(1).min(30);
        let ceiling = self.base.saturating_mul(1u32 << shift).min(self.max);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
    }

    /// The same policy with at most `n` attempts.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }
}

/// A failed attempt: the error, and what the retry loop needs to know beyond it.
///
/// Whether a failure is worth another attempt is decided by [`ApiError::is_transient`] alone;
/// `ambiguous` only vetoes a retry that could apply a request twice.
#[derive(Debug)]
pub struct Failure {
    pub error: ApiError,
    /// The request may already have been applied and repeating it is not harmless (a
    /// non-idempotent call that timed out or lost its connection after sending): never
    /// retried, whatever the error.
    pub ambiguous: bool,
    /// The server's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A failed attempt that is retried if its error is transient.
    pub fn new(error: ApiError) -> Self {
        Failure {
            error,
            ambiguous: false,
            retry_after: None,
        }
    }

    /// A failed attempt that may have been applied: not retried.
    pub fn ambiguous(error: ApiError) -> Self {
        Failure {
            ambiguous: true,
            ..Failure::new(error)
        }
    }

    pub fn with_retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }

    /// Whether another attempt may cure it.
    pub fn retryable(&self) -> bool {
        !self.ambiguous && self.error.is_transient()
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Failure::new(error)
    }
}

/// Runs `attempt(n)` (n = 1, 2, …) until it succeeds, fails for good (see
/// [`Failure::retryable`]), or the policy's attempts are used up; then returns the last
/// error. `what` names the call in log lines. This is the one retry loop of the client;
/// callers above it use [`RetryPolicy::run`].
pub async fn run<T, F, Fut>(policy: &RetryPolicy, what: &str, mut attempt: F) -> Result<T, ApiError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let max = policy.max_attempts.max(1);
    let mut n = 1;
    loop {
        match attempt(n).await {
            Ok(v) => return Ok(v),
            Err(f) if !f.retryable() || n >= max => {
                if f.retryable() {
                    tracing::debug!(call = what, attempts = n, error = %f.error, "giving up");
                }
                return Err(f.error);
            }
            Err(f) => {
                let delay = policy.delay(n, f.retry_after);
                tracing::debug!(
                    call = what,
                    attempt = n,
                    delay_ms = delay.as_millis() as u64,
                    error = %f.error,
                    "retrying"
                );
                tokio::time::sleep(delay).await;
                n += 1;
            }
        }
    }
}

/// Parses a `Retry-After` value: delay-seconds, or an HTTP-date (RFC 7231 IMF-fixdate).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(at.timestamp()).ok()?);
    // A date in the past means "now".
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::error::ApiErrorKind;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        }
    }

    #[test]
    fn delay_is_bounded_by_exponential_ceiling_and_max() {
        let p = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for _ in 0..200 {
            assert!(p.delay(1, None) <= Duration::from_millis(100));
            assert!(p.delay(2, None) <= Duration::from_millis(200));
            assert!(p.delay(3, None) <= Duration::from_millis(400));
            assert!(p.delay(40, None) <= Duration::from_secs(1));
        }
        // Jitter actually varies.
        let samples: std::collections::HashSet<_> = (0..50).map(|_| p.delay(5, None)).collect();
        assert!(samples.len() > 1);
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(p.delay(1, Some(Duration::from_secs(60))), p.max);
    }

    #[test]
    fn parses_retry_after_seconds_and_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[tokio::test]
    async fn retries_transient_until_success() {
        let calls = AtomicU32::new(0);
        let r = run(&fast(), "t", |n| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 3 {
                    Err(Failure::new(
                        ApiError::new(ApiErrorKind::Server, "boom").with_status(503),
                    ))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn stops_at_max_attempts_and_on_fatal() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = run(&fast(), "t", |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err(Failure::new(ApiError::new(
                    ApiErrorKind::RateLimited,
                    "slow down",
                )))
            }
        })
        .await;
        assert_eq!(r.unwrap_err().kind, ApiErrorKind::RateLimited);
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        let calls = AtomicU32::new(0);
        let r: Result<(), _> = run(&fast(), "t", |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(ApiError::new(ApiErrorKind::NotFound, "gone").into()) }
        })
        .await;
        assert_eq!(r.unwrap_err().kind, ApiErrorKind::NotFound);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_ambiguous_failure_is_not_retried_even_if_transient() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = run(&fast(), "t", |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err(Failure::ambiguous(ApiError::new(
                    ApiErrorKind::Transport,
                    "reset after sending",
                )))
            }
        })
        .await;
        assert_eq!(r.unwrap_err().kind, ApiErrorKind::Transport);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn policy_run_retries_what_is_transient_for_callers_above_the_client() {
        let calls = AtomicU32::new(0);
        let r = fast()
            .run("t", |n| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    match n {
                        1 => Err(ApiError::new(ApiErrorKind::Server, "503")),
                        _ => Ok(n),
                    }
                }
            })
            .await;
        assert_eq!(r.unwrap(), 2);
        let r: Result<(), _> = fast()
            .run("t", |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(ApiError::new(ApiErrorKind::Conflict, "409")) }
            })
            .await;
        assert_eq!(r.unwrap_err().kind, ApiErrorKind::Conflict);
        assert_eq!(calls.load(Ordering::SeqCst), 3, "the 409 was not retried");
    }
}
