//! Wall-clock time for everything that talks to the outside world in timestamps
//! (JWT `iat`/`exp`, token expiry, `not_after`, `Retry-After` dates).
//!
//! Durations and sleeps use `tokio::time` directly so tests can pause time; this
//! module only answers "what time is it in UTC". A [`Clock::tokio`] clock follows
//! tokio's (possibly paused) clock, so a test that advances time also advances
//! every timestamp; a skew offset simulates a host whose clock is wrong.
//! It must not read time any other way.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The source of "now" in UTC. Cheap to clone; share one per application.
#[derive(Clone, Debug)]
pub struct Clock {
    kind: Arc<Kind>,
    /// Seconds added to the underlying time (negative: behind).
    skew_secs: i64,
}

#[derive(Debug)]
enum Kind {
    System,
    Tokio {
        wall_at_anchor: SystemTime,
        anchor: tokio::time::Instant,
    },
}

impl Clock {
    /// The host's clock. What production uses.
    pub fn system() -> Self {
        Self {
            kind: Arc::new(Kind::System),
            skew_secs: 0,
        }
    }

    /// A clock that starts at the host's time and then moves with
    /// `tokio::time`, so `tokio::time::pause`/`advance` move it too.
    pub fn tokio() -> Self {
        Self {
            kind: Arc::new(Kind::Tokio {
                wall_at_anchor: SystemTime::now(),
                anchor: tokio::time::Instant::now(),
            }),
            skew_secs: 0,
        }
    }

    /// The same clock, `secs` seconds ahead (or behind, when negative).
    pub fn skewed(&self, secs: i64) -> Self {
        Self {
            kind: self.kind.clone(),
            skew_secs: self.skew_secs + secs,
        }
    }

    pub fn now(&self) -> SystemTime {
        let base = match &*self.kind {
            Kind::System => SystemTime::now(),
            Kind::Tokio {
                wall_at_anchor,
                anchor,
            } => *wall_at_anchor + anchor.elapsed(),
        };
        let skew = Duration::from_secs(self.skew_secs.unsigned_abs());
        if self.skew_secs >= 0 {
            base + skew
        } else {
            base - skew
        }
    }

    /// Seconds since the Unix epoch, as JWT claims count them.
    pub fn unix_secs(&self) -> i64 {
        match self.now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = Clock::tokio();
        let t0 = clock.unix_secs();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.unix_secs() - t0, 3600);
    }

    #[test]
    fn skew_moves_both_ways() {
        let clock = Clock::tokio();
        let ahead = clock.skewed(600).unix_secs();
        let behind = clock.skewed(-600).unix_secs();
        assert!((ahead - behind - 1200).abs() <= 1);
    }
}
