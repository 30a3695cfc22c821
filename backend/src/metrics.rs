//! Counters for `/metrics`, in the Prometheus text format.
//!
//! Plain atomics bumped on the paths that matter (one add per published message, not per
//! recipient), read only when scraped.

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
};

use crate::connection::{CloseReason, End};

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
    /// Connections closed at once because too many others were still pending (not
    /// WebSockets yet).
    pending_refused: AtomicU64,
    /// Connections closed because a request's headers did not arrive in time.
    header_timeouts: AtomicU64,
    /// Rooms opened by reading them from the engine.
    rooms_read: AtomicU64,
    /// Connections the relay closed, by reason, in [`CloseReason::ALL`] order.
    closed_by_relay: [AtomicU64; CloseReason::ALL.len()],
    /// Connections the client closed: with 1000 (or no code), 1001, anything else.
    closed_by_client: [AtomicU64; 3],
    /// Connections that ended without a close handshake (EOF, reset, failed write).
    disconnected: AtomicU64,
}

/// Labels of `relay_client_closed_total`, in `closed_by_client` order.
const CLIENT_CLOSE_LABELS: [&str; 3] = ["normal", "going_away", "other"];

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Metrics {
    /// Messages published, deliveries and duplicates so far.
    pub fn totals(&self) -> (u64, u64, u64) {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        (
            read(&self.messages_published),
            read(&self.deliveries),
            read(&self.duplicates),
        )
    }

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

    /// A connection refused at the accept: too many pending connections.
    pub fn pending_refused(&self) {
        bump(&self.pending_refused, 1);
    }

    /// A connection closed because its request's headers did not arrive in time.
    pub fn header_timeout(&self) {
        bump(&self.header_timeouts, 1);
    }

    /// A room about to be read from the engine, to open it.
    pub(crate) fn room_read(&self) {
        bump(&self.rooms_read, 1);
    }

    /// Counts how a connection ended.
    pub(crate) fn record_end(&self, end: End) {
        let counter = match end {
            End::Quietly => &self.disconnected,
            End::Relay(reason) => {
                let index = CloseReason::ALL
                    .iter()
                    .position(|known| known.label() == reason.label())
                    .expect("every reason is in ALL");
                &self.closed_by_relay[index]
            }
            End::Client(code) => {
                &self.closed_by_client[match code {
                    None | Some(common::close_code::NORMAL) => 0,
                    Some(common::close_code::GOING_AWAY) => 1,
                    Some(_) => 2,
                }]
            }
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
        let counters: [(&str, &str, &AtomicU64); 11] = [
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
            (
                "pending_refused_total",
                "Connections closed at once: too many were not WebSockets yet.",
                &self.pending_refused,
            ),
            (
                "header_timeouts_total",
                "Connections closed because a request's headers did not arrive in time.",
                &self.header_timeouts,
            ),
            (
                "rooms_read_total",
                "Rooms opened by reading them from the engine.",
                &self.rooms_read,
            ),
        ];
        for (name, help, counter) in counters {
            metric(name, "counter", help, read(counter));
        }
        let mut labelled = |name: &str, help: &str, label: &str, series: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP relay_{name} {help}");
            let _ = writeln!(out, "# TYPE relay_{name} counter");
            for (value, count) in series {
                let _ = writeln!(out, "relay_{name}{{{label}=\"{value}\"}} {count}");
            }
        };
        let by_relay: Vec<(&str, u64)> = CloseReason::ALL
            .iter()
            .zip(&self.closed_by_relay)
            .map(|(reason, counter)| (reason.label(), read(counter)))
            .collect();
        labelled(
            "closed_total",
            "Connections the relay closed, by reason.",
            "reason",
            &by_relay,
        );
        let by_client: Vec<(&str, u64)> = CLIENT_CLOSE_LABELS
            .iter()
            .zip(&self.closed_by_client)
            .map(|(label, counter)| (*label, read(counter)))
            .collect();
        labelled(
            "client_closed_total",
            "Connections the client closed: 1000 or no code (normal), 1001 (going_away), other.",
            "code",
            &by_client,
        );
        let _ = writeln!(
            out,
            "# HELP relay_disconnected_total Connections that ended without a close handshake."
        );
        let _ = writeln!(out, "# TYPE relay_disconnected_total counter");
        let _ = writeln!(out, "relay_disconnected_total {}", read(&self.disconnected));
        out
    }
}
