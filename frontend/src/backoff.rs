//! When to try reconnecting, and when to give up on a silent connection.
//!
//! The reconnect delay doubles with each failed attempt up to a cap, and a random part spreads
//! clients out, so a relay restart is not followed by every client reconnecting in the same
//! instant. When the relay says it is going away or restarting, the first retry is spread
//! over a wider window still, since every client heard the same news at the same moment.
//!
//! Browsers answer WebSocket pings by themselves and never show them to the page, so a page
//! cannot tell a quiet room from a dead connection (a laptop waking up, a NAT forgetting the
//! flow) without asking: [`Heartbeat`] says when to send a `ping` and when to stop waiting.

use common::close_code;

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

    /// Delay before reconnect attempt `attempt` after the relay closed the connection with
    /// `code` (if it said anything). After "going away" or "restarting", the first attempt is
    /// spread over [`RESTART_SPREAD_MS`] instead of the usual first delay.
    pub fn delay_after_close(&self, code: Option<u16>, attempt: u32, random: f64) -> u32 {
        let restarting = matches!(
            code,
            Some(close_code::GOING_AWAY | close_code::SERVICE_RESTART)
        );
        if restarting && attempt == 0 {
            self.first_ms / 2 + (f64::from(RESTART_SPREAD_MS) * random.clamp(0.0, 0.999_999)) as u32
        } else {
            self.delay_ms(attempt, random)
        }
    }
}

/// Window over which clients spread their first reconnect after a relay restart.
pub const RESTART_SPREAD_MS: u32 = 5_000;

/// When to check that a quiet connection is still alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Silence after which the client sends a `ping`.
    pub ping_after_ms: u32,
    /// Silence after which the connection is taken for dead and reopened.
    pub dead_after_ms: u32,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            ping_after_ms: 15_000,
            dead_after_ms: 25_000,
        }
    }
}

/// What a quiet connection calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pulse {
    /// Nothing yet.
    Fine,
    /// Ask the relay for a `pong`.
    Ping,
    /// Give up on this connection and reconnect.
    Dead,
}

impl Heartbeat {
    /// What to do after `silent_ms` without a frame from the relay, given whether a ping has
    /// already been sent during this silence.
    pub fn check(&self, silent_ms: f64, pinged: bool) -> Pulse {
        if silent_ms >= f64::from(self.dead_after_ms) {
            Pulse::Dead
        } else if silent_ms >= f64::from(self.ping_after_ms) && !pinged {
            Pulse::Ping
        } else {
            Pulse::Fine
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_spreads_the_first_reconnect_widely_then_backs_off_as_usual() {
        let backoff = Backoff::default();
        let going_away = Some(close_code::GOING_AWAY);
        assert_eq!(backoff.delay_after_close(going_away, 0, 0.0), 250);
        assert_eq!(backoff.delay_after_close(going_away, 0, 0.5), 2750);
        assert!(backoff.delay_after_close(Some(close_code::SERVICE_RESTART), 0, 0.999) < 5250);
        assert_eq!(
            backoff.delay_after_close(going_away, 3, 0.5),
            backoff.delay_ms(3, 0.5)
        );
        assert_eq!(
            backoff.delay_after_close(Some(close_code::SLOW_CONSUMER), 0, 0.5),
            backoff.delay_ms(0, 0.5),
            "other closes reconnect at the usual pace"
        );
        assert_eq!(
            backoff.delay_after_close(None, 0, 0.5),
            backoff.delay_ms(0, 0.5)
        );
    }

    #[test]
    fn a_silent_connection_is_pinged_once_then_declared_dead() {
        let heartbeat = Heartbeat::default();
        assert_eq!(heartbeat.check(1_000.0, false), Pulse::Fine);
        assert_eq!(heartbeat.check(15_000.0, false), Pulse::Ping);
        assert_eq!(
            heartbeat.check(20_000.0, true),
            Pulse::Fine,
            "one ping per silence"
        );
        assert_eq!(heartbeat.check(25_000.0, true), Pulse::Dead);
        assert_eq!(heartbeat.check(90_000.0, false), Pulse::Dead);
    }

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
