//! A cheap monotonic clock in milliseconds, shared by every connection's pulse, so a pulse
//! fits in one atomic integer.

use std::{sync::OnceLock, time::Instant};

/// Milliseconds since the relay's clock started (the first time anyone asked).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}
