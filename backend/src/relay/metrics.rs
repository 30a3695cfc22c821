//! Counters for `/metrics`, in the Prometheus text format.
//!
//! Plain atomics bumped on the paths that matter (one add per published message, not per
//! recipient), read only when scraped.

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
};

use common::close_code;

use super::End;

/// The relay's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// WebSocket connections accepted.
    connections_opened: AtomicU64,
    /// Messages stored and delivered.
    messages_published: AtomicU64,
    /// Message frames queued for members (one per recipient).
    deliveries: AtomicU64,
    /// Resends recognised and not published again.
    duplicates: AtomicU64,
    /// Messages refused because the store failed.
    store_failures: AtomicU64,
    /// Frames refused by a rate limit.
    rate_limited: AtomicU64,
    /// Upgrades refused for their `Origin`.
    origins_refused: AtomicU64,
    /// Upgrades refused because the relay was full.
    connections_refused: AtomicU64,
    /// Connections the relay closed, by reason.
    closed_slow_consumer: AtomicU64,
    closed_heartbeat: AtomicU64,
    closed_rate_abuse: AtomicU64,
    closed_too_big: AtomicU64,
    closed_protocol_error: AtomicU64,
    closed_shutdown: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Metrics {
    pub(crate) fn connection_opened(&self) {
        bump(&self.connections_opened, 1);
    }

    pub(crate) fn published(&self, recipients: usize) {
        bump(&self.messages_published, 1);
        bump(&self.deliveries, recipients as u64);
    }

    pub(crate) fn duplicate(&self) {
        bump(&self.duplicates, 1);
    }

    pub(crate) fn store_failed(&self) {
        bump(&self.store_failures, 1);
    }

    pub(crate) fn rate_limited(&self) {
        bump(&self.rate_limited, 1);
    }

    /// An upgrade refused for its origin.
    pub fn origin_refused(&self) {
        bump(&self.origins_refused, 1);
    }

    /// An upgrade refused because the relay was full.
    pub fn connection_refused(&self) {
        bump(&self.connections_refused, 1);
    }

    /// Counts how a connection ended, when the relay ended it.
    pub(crate) fn record_end(&self, end: End) {
        let End::Close { code, .. } = end else {
            return;
        };
        let counter = match code {
            close_code::SLOW_CONSUMER => &self.closed_slow_consumer,
            close_code::HEARTBEAT_TIMEOUT => &self.closed_heartbeat,
            close_code::POLICY_VIOLATION => &self.closed_rate_abuse,
            close_code::MESSAGE_TOO_BIG => &self.closed_too_big,
            close_code::GOING_AWAY | close_code::SERVICE_RESTART => &self.closed_shutdown,
            _ => &self.closed_protocol_error,
        };
        bump(counter, 1);
    }

    /// The Prometheus text exposition, with the current gauges.
    pub fn render(&self, open_connections: usize, open_rooms: usize) -> String {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP relay_{name} {help}");
            let _ = writeln!(out, "# TYPE relay_{name} {kind}");
            let _ = writeln!(out, "relay_{name} {value}");
        };
        metric(
            "connections",
            "gauge",
            "Open WebSocket connections.",
            open_connections as u64,
        );
        metric("rooms", "gauge", "Rooms open in memory.", open_rooms as u64);
        let counters: [(&str, &str, &AtomicU64); 8] = [
            (
                "connections_opened_total",
                "WebSocket connections accepted.",
                &self.connections_opened,
            ),
            (
                "messages_published_total",
                "Messages stored and delivered.",
                &self.messages_published,
            ),
            (
                "deliveries_total",
                "Message frames queued for room members.",
                &self.deliveries,
            ),
            (
                "duplicates_total",
                "Resends recognised and not published again.",
                &self.duplicates,
            ),
            (
                "store_failures_total",
                "Messages refused because the store failed.",
                &self.store_failures,
            ),
            (
                "rate_limited_total",
                "Frames refused by a rate limit.",
                &self.rate_limited,
            ),
            (
                "origins_refused_total",
                "Upgrades refused for their Origin.",
                &self.origins_refused,
            ),
            (
                "connections_refused_total",
                "Upgrades refused because the relay was full.",
                &self.connections_refused,
            ),
        ];
        for (name, help, counter) in counters {
            metric(name, "counter", help, read(counter));
        }
        let _ = writeln!(
            out,
            "# HELP relay_closed_total Connections the relay closed, by reason."
        );
        let _ = writeln!(out, "# TYPE relay_closed_total counter");
        for (reason, counter) in [
            ("slow_consumer", &self.closed_slow_consumer),
            ("heartbeat_timeout", &self.closed_heartbeat),
            ("rate_abuse", &self.closed_rate_abuse),
            ("message_too_big", &self.closed_too_big),
            ("protocol_error", &self.closed_protocol_error),
            ("shutdown", &self.closed_shutdown),
        ] {
            let _ = writeln!(
                out,
                "relay_closed_total{{reason=\"{reason}\"}} {}",
                read(counter)
            );
        }
        out
    }
}
