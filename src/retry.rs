//! Retry schedules: exponential backoff with full jitter, and `Retry-After`
//! (seconds or an HTTP date) as servers send it. Pure functions of their
//! inputs plus a random draw, so schedules are property-tested.
//!
//! It must not sleep; callers sleep with `tokio::time` so tests can pause time.

use std::time::{Duration, SystemTime};

/// Exponential backoff with full jitter (AWS architecture blog's "Full Jitter").
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

/// The longest `Retry-After` honoured; beyond it the server is not coming back soon.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

impl Backoff {
    /// The ceiling before jitter after `failures` failed attempts (1-based).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << exp.min(31)).min(self.max)
    }

    /// The pause after `failures` failed attempts: a uniform draw in
    /// [0, ceiling], but never shorter than the server's `Retry-After`.
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.ceiling(failures);
        let jittered = ceiling.mul_f64(rand::random::<f64>());
        match retry_after {
            Some(ra) => jittered.max(ra.min(MAX_RETRY_AFTER)),
            None => jittered,
        }
    }
}

/// Parses a `Retry-After` value: delta seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(2), Duration::from_millis(200));
        assert_eq!(b.ceiling(4), Duration::from_millis(800));
        assert_eq!(b.ceiling(5), Duration::from_secs(1));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1));
    }

    proptest! {
        #[test]
        fn delay_is_within_jitter_bounds_and_honours_retry_after(failures in 1u32..100, ra in proptest::option::of(0u64..2000)) {
            let b = Backoff::default();
            let ra = ra.map(Duration::from_secs);
            let d = b.delay(failures, ra);
            let floor = ra.map(|r| r.min(MAX_RETRY_AFTER)).unwrap_or_default();
            prop_assert!(d >= floor);
            prop_assert!(d <= b.ceiling(failures).max(floor));
        }
    }
}
