//! The server under test, observed from outside through `/proc/<pid>`: CPU time and resident
//! memory, so any server (ours or a peer) is measured the same way.

use std::time::Duration;

use anyhow::{Context, bail};

/// A running server process.
#[derive(Debug, Clone, Copy)]
pub struct Server {
    pid: u32,
    /// Clock ticks per second for `/proc/<pid>/stat` (almost always 100).
    ticks_per_second: f64,
}

impl Server {
    /// Watches process `pid`.
    pub fn new(pid: u32) -> anyhow::Result<Server> {
        let ticks = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .unwrap_or(100.0);
        let server = Server {
            pid,
            ticks_per_second: ticks,
        };
        server.cpu()?;
        Ok(server)
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .with_context(|| format!("no process {}", self.pid))?;
        // Fields after the command name, which is in parentheses and may contain spaces.
        let after_name = stat.rsplit_once(')').context("odd /proc stat")?.1;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
        let (Some(user), Some(system)) = (fields.get(11), fields.get(12)) else {
            bail!("odd /proc stat: {stat}");
        };
        let ticks = user.parse::<f64>()? + system.parse::<f64>()?;
        Ok(Duration::from_secs_f64(ticks / self.ticks_per_second))
    }

    /// Resident memory, in bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let line = status
            .lines()
            .find(|line| line.starts_with("VmRSS:"))
            .context("no VmRSS")?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .context("odd VmRSS")?
            .parse()?;
        Ok(kib * 1024)
    }
}
