//! Per-connection rate limiting: a token bucket.
//!
//! Every frame a client sends costs one token; tokens come back at a steady rate up to a
//! burst. A frame without a token is refused (the client is told `rate_limited`); a client
//! that keeps going regardless, refused many times in a row, is treated as abusive.

use std::time::{Duration, Instant};

use crate::config::defaults;

/// A rate limit's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Frames per second allowed on average.
    pub per_second: f64,
    /// Frames allowed at once after a quiet spell.
    pub burst: u32,
    /// Refusals in a row after which the connection is closed (1008).
    pub abuse_after: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: defaults::RATE_PER_SEC,
            burst: defaults::RATE_BURST,
            abuse_after: defaults::RATE_ABUSE_AFTER,
        }
    }
}

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit.
    Allow,
    /// Over the limit: drop the frame and say so.
    Refuse,
    /// Over the limit for too long: close the connection.
    Abuse,
}

/// One connection's bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    refilled_at: Instant,
    refusals_in_a_row: u32,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        TokenBucket {
            limit,
            tokens: f64::from(limit.burst),
            refilled_at: now,
            refusals_in_a_row: 0,
        }
    }

    /// Charges one frame arriving at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.refilled_at = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.limit.per_second)
            .min(f64::from(self.limit.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refusals_in_a_row = 0;
            Verdict::Allow
        } else {
            self.refusals_in_a_row += 1;
            if self.refusals_in_a_row >= self.limit.abuse_after {
                Verdict::Abuse
            } else {
                Verdict::Refuse
            }
        }
    }

    /// How long until the next frame would be allowed.
    pub fn retry_after(&self) -> Duration {
        let missing = (1.0 - self.tokens).max(0.0);
        Duration::from_secs_f64(missing / self.limit.per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_second: 10.0,
        burst: 5,
        abuse_after: 3,
    };

    #[test]
    fn a_burst_is_allowed_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(LIMIT, start);
        for _ in 0..5 {
            assert_eq!(bucket.check(start), Verdict::Allow);
        }
        assert_eq!(bucket.check(start), Verdict::Refuse);
        assert!(bucket.retry_after() <= Duration::from_millis(100));
        // 10 per second: one token back every 100 ms.
        assert_eq!(
            bucket.check(start + Duration::from_millis(100)),
            Verdict::Allow
        );
        assert_eq!(
            bucket.check(start + Duration::from_millis(100)),
            Verdict::Refuse
        );
    }

    #[test]
    fn refusals_in_a_row_become_abuse_and_an_allowed_frame_resets_them() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(LIMIT, start);
        for _ in 0..5 {
            bucket.check(start);
        }
        assert_eq!(bucket.check(start), Verdict::Refuse);
        assert_eq!(bucket.check(start), Verdict::Refuse);
        let later = start + Duration::from_millis(150);
        assert_eq!(bucket.check(later), Verdict::Allow);
        assert_eq!(bucket.check(later), Verdict::Refuse);
        assert_eq!(bucket.check(later), Verdict::Refuse);
        assert_eq!(bucket.check(later), Verdict::Abuse);
    }

    proptest::proptest! {
        /// However frames arrive, no more are allowed than the burst plus the rate times the
        /// time elapsed.
        #[test]
        fn allowed_frames_never_exceed_burst_plus_rate(gaps in proptest::collection::vec(0u64..300, 1..300)) {
            let start = Instant::now();
            let mut bucket = TokenBucket::new(LIMIT, start);
            let mut now = start;
            let mut allowed = 0u32;
            for gap in gaps {
                now += Duration::from_millis(gap);
                if bucket.check(now) == Verdict::Allow {
                    allowed += 1;
                }
                let elapsed = now.duration_since(start).as_secs_f64();
                let ceiling = f64::from(LIMIT.burst) + elapsed * LIMIT.per_second;
                proptest::prop_assert!(f64::from(allowed) <= ceiling + 1e-9);
            }
        }
    }

    #[test]
    fn a_quiet_spell_refills_only_up_to_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(LIMIT, start);
        let much_later = start + Duration::from_secs(3600);
        for _ in 0..5 {
            assert_eq!(bucket.check(much_later), Verdict::Allow);
        }
        assert_eq!(bucket.check(much_later), Verdict::Refuse);
    }
}
