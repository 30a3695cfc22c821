//! When to try reconnecting: exponential backoff with jitter.
//!
//! The delay doubles with each failed attempt up to a cap, and a random part spreads clients
//! out, so a relay restart is not followed by every client reconnecting in the same instant.

/// A reconnect schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Upper end of the first delay, in milliseconds.
    pub first_ms: u32,
    /// Largest delay, in milliseconds.
    pub max_ms: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first_ms: 500,
            max_ms: 15_000,
        }
    }
}

impl Backoff {
    /// Delay before reconnect attempt number `attempt` (0 for the first), given `random` in
    /// `[0, 1)`. The result lies in `[ceiling / 2, ceiling)`, where the ceiling doubles per
    /// attempt up to `max_ms`: never zero, so a relay that refuses at once is not hammered,
    /// and half of it random ("equal jitter").
    pub fn delay_ms(&self, attempt: u32, random: f64) -> u32 {
        let ceiling = self
            .first_ms
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.max_ms);
        let half = ceiling / 2;
        half + (f64::from(ceiling - half) * random.clamp(0.0, 0.999_999)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let backoff = Backoff::default();
        let ceilings: Vec<u32> = (0..8).map(|n| backoff.delay_ms(n, 0.999_999) + 1).collect();
        assert_eq!(
            ceilings,
            [500, 1000, 2000, 4000, 8000, 15_000, 15_000, 15_000]
        );
    }

    #[test]
    fn jitter_spans_the_upper_half() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay_ms(2, 0.0), 1000);
        assert_eq!(backoff.delay_ms(2, 0.5), 1500);
        assert!(backoff.delay_ms(2, 0.999) < 2000);
    }

    #[test]
    fn huge_attempt_counts_and_odd_randoms_stay_in_bounds() {
        let backoff = Backoff::default();
        for attempt in [30, 31, 32, 1000, u32::MAX] {
            for random in [-1.0, 0.0, 0.7, 1.0, 5.0, f64::NAN] {
                let delay = backoff.delay_ms(attempt, random);
                assert!(
                    (7_500..15_000).contains(&delay),
                    "{attempt} {random} -> {delay}"
                );
            }
        }
    }
}
