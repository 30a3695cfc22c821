//! `fsync-probe DIR [SECONDS]`: what this machine's disk does when asked to sync, measured
//! the way the relay asks: 4 KiB appended to a file and `fdatasync`ed, 100 times a second.
//! Prints the latency percentiles as one readable line and one JSON line, so a benchmark
//! run can show what the disk did in the same hour.

// A benchmark tool reports on stdout.
#![allow(clippy::print_stdout)]

use std::{
    io::Write,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| ".".into());
    let seconds: u64 = args.next().map_or(Ok(10), |s| s.parse())?;
    let path = std::path::Path::new(&dir).join("fsync-probe.tmp");
    let mut file = std::fs::File::create(&path)?;
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let block = [b'x'; 4096];
    let interval = Duration::from_millis(10);
    let started = Instant::now();
    let mut next = started;
    while started.elapsed() < Duration::from_secs(seconds) {
        file.write_all(&block)?;
        let before = Instant::now();
        file.sync_data()?;
        latencies.record(before.elapsed().as_micros().max(1) as u64)?;
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    drop(file);
    std::fs::remove_file(&path)?;
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "fsync    4 KiB + fdatasync at 100/s for {seconds} s ({} syncs): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        latencies.len(),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        latencies.max() as f64 / 1000.0
    );
    println!(
        "{}",
        serde_json::json!({
            "scenario": "fsync", "syncs": latencies.len(), "p50_ms": ms(0.5), "p99_ms": ms(0.99),
            "p999_ms": ms(0.999), "max_ms": latencies.max() as f64 / 1000.0
        })
    );
    Ok(())
}
