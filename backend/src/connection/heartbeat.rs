//! Heartbeats, for every connection at once.
//!
//! Rather than a timer in each connection's task (memory and timer-wheel work per idle
//! connection), one sweep runs every half-period over all connections and reads each one's
//! pulse from its queue: quiet for `ping_interval` gets a ping; quiet for `ping_interval +
//! ping_timeout` is closed (4001); a write stuck for `ping_timeout` on a client that does not
//! read is closed as a slow consumer (4000).

use std::time::Duration;

use super::{CloseReason, End, SessionSettings, clock, send_queue::Deadline};
use crate::relay::Relay;

/// What a connection's pulse calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pulse {
    /// Nothing to do.
    Fine,
    /// Quiet for a while: ping it.
    Ping,
    /// End it.
    Dead(End),
}

/// The verdict for a connection last heard from at `last_heard`, with a write stuck since
/// `writing_since` (if any), at time `now` (all in clock milliseconds).
pub fn pulse(
    now: u64,
    last_heard: u64,
    writing_since: Option<u64>,
    settings: &SessionSettings,
) -> Pulse {
    let interval = settings.ping_interval.as_millis() as u64;
    let timeout = settings.ping_timeout.as_millis() as u64;
    if writing_since.is_some_and(|since| now.saturating_sub(since) >= timeout) {
        return Pulse::Dead(End::Relay(CloseReason::SlowConsumer));
    }
    let silence = now.saturating_sub(last_heard);
    if silence >= interval + timeout {
        Pulse::Dead(End::Relay(CloseReason::HeartbeatTimeout))
    } else if silence >= interval {
        Pulse::Ping
    } else {
        Pulse::Fine
    }
}

/// How often to sweep: twice per the shorter of the two periods.
pub fn sweep_period(settings: &SessionSettings) -> Duration {
    (settings.ping_interval.min(settings.ping_timeout) / 2).max(Duration::from_millis(1))
}

/// Checks every connection's pulse once and acts on it; and ends the connections whose
/// authentication ran out (no `auth` in time, or a token expired past its grace).
pub fn sweep(relay: &Relay, settings: &SessionSettings) {
    let now = clock::now_ms();
    relay.for_each_outbox(|queue| {
        // Past the deadline's millisecond, not at it: both were read from a clock that drops
        // what is below a millisecond, so at it a connection could be cut up to 1 ms before
        // its time (seen: a 300 ms `auth` timeout cut a silent connection in under 300 ms).
        let expired = match queue.deadline() {
            Some(Deadline::Authenticate(at)) if now > at => Some(CloseReason::AuthRefused(
                "no auth frame in time: send it first, at once",
            )),
            Some(Deadline::Token(at)) if now > at => Some(CloseReason::TokenExpired),
            _ => None,
        };
        if let Some(reason) = expired {
            return queue.end(End::Relay(reason));
        }
        match pulse(now, queue.last_heard(), queue.writing_since(), settings) {
            Pulse::Fine => {}
            Pulse::Ping => queue.request_ping(),
            Pulse::Dead(end) => queue.end(end),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SessionSettings {
        SessionSettings {
            ping_interval: Duration::from_millis(1000),
            ping_timeout: Duration::from_millis(500),
            ..SessionSettings::default()
        }
    }

    #[test]
    fn quiet_connections_are_pinged_then_ended() {
        let s = settings();
        assert_eq!(pulse(10_000, 9_500, None, &s), Pulse::Fine);
        assert_eq!(pulse(10_000, 9_000, None, &s), Pulse::Ping);
        assert_eq!(pulse(10_000, 8_600, None, &s), Pulse::Ping);
        assert!(matches!(
            pulse(10_000, 8_500, None, &s),
            Pulse::Dead(End::Relay(CloseReason::HeartbeatTimeout))
        ));
    }

    #[test]
    fn a_write_stuck_past_the_timeout_is_a_slow_consumer() {
        let s = settings();
        assert_eq!(pulse(10_000, 10_000, Some(9_600), &s), Pulse::Fine);
        assert_eq!(
            pulse(10_000, 10_000, Some(9_500), &s),
            Pulse::Dead(End::Relay(CloseReason::SlowConsumer))
        );
    }

    #[test]
    fn the_sweep_runs_twice_per_shorter_period() {
        assert_eq!(sweep_period(&settings()), Duration::from_millis(250));
    }
}
