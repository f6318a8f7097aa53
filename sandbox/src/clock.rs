//! The sandbox's notion of "now": the host's clock, optionally skewed, so a
//! test can make the emulated Google or control plane run ahead (tokens and
//! leases expire at once) without sleeping.
//!
//! It is deliberately not grantbridge's clock: the emulation of the outside
//! world keeps its own time, as Google does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The host's time plus a fixed offset in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    /// Seconds added to the host's time (negative: behind).
    offset_secs: i64,
}

impl Clock {
    /// The host's clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// This clock moved `secs` seconds ahead (or behind, when negative).
    pub fn skewed(self, secs: i64) -> Self {
        Self {
            offset_secs: self.offset_secs + secs,
        }
    }

    pub fn now(&self) -> SystemTime {
        let offset = Duration::from_secs(self.offset_secs.unsigned_abs());
        if self.offset_secs >= 0 {
            SystemTime::now() + offset
        } else {
            SystemTime::now() - offset
        }
    }

    /// Seconds since the Unix epoch, as Google's tokens count them.
    pub fn unix_secs(&self) -> i64 {
        match self.now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_adds_up_both_ways() {
        let c = Clock::system();
        let ahead = c.skewed(600).skewed(600).unix_secs();
        let behind = c.skewed(-600).unix_secs();
        assert!((ahead - behind - 1800).abs() <= 1);
    }
}
