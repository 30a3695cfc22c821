//! The server under test, observed from outside through `/proc/<pid>`: CPU time (of the
//! whole process and of each thread) and resident memory, so any server (ours or a peer) is
//! measured the same way.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use anyhow::{Context, bail};

/// A running server process (and, for a server of several processes, up to three more
/// whose CPU time counts too).
#[derive(Debug, Clone, Copy)]
pub struct Server {
    pid: u32,
    /// Further processes of the same server (0: none).
    others: [u32; 3],
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
            others: [0; 3],
            ticks_per_second: ticks,
        };
        server.cpu()?;
        Ok(server)
    }

    /// The same server with process `pid` too (at most three more): its CPU time counts in
    /// [`Server::cpu`]; threads and memory stay the first process's.
    pub fn and(mut self, pid: u32) -> anyhow::Result<Server> {
        let slot = self
            .others
            .iter_mut()
            .find(|slot| **slot == 0)
            .context("at most four processes")?;
        *slot = pid;
        self.cpu()?;
        Ok(self)
    }

    /// CPU time (user + system) the process (and the others) have used so far.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        let mut ticks = 0;
        for pid in std::iter::once(self.pid).chain(self.others.into_iter().filter(|p| *p != 0)) {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .with_context(|| format!("no process {pid}"))?;
            ticks += parse_stat(&stat)?.1;
        }
        Ok(Duration::from_secs_f64(
            ticks as f64 / self.ticks_per_second,
        ))
    }

    /// CPU time of the process and of each of its threads so far; see [`Threads::since`].
    pub fn threads(&self) -> anyhow::Result<Threads> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .with_context(|| format!("no process {}", self.pid))?;
        let (_, total) = parse_stat(&stat)?;
        let mut by_thread = HashMap::new();
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid))? {
            let task = task?;
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // A thread may end between the listing and the read: it is simply not counted.
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            if let Ok((name, ticks)) = parse_stat(&stat) {
                by_thread.insert(tid, (name, ticks));
            }
        }
        Ok(Threads {
            total,
            by_thread,
            ticks_per_second: self.ticks_per_second,
        })
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

/// The command name (for a thread: its name, at most 15 bytes) and the user + system CPU
/// time in clock ticks, from a `/proc/.../stat` line.
fn parse_stat(stat: &str) -> anyhow::Result<(String, u64)> {
    // The name is in parentheses and may itself contain spaces and parentheses.
    let (before, after_name) = stat.rsplit_once(')').context("odd /proc stat")?;
    let name = before.split_once('(').context("odd /proc stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let (Some(user), Some(system)) = (fields.get(11), fields.get(12)) else {
        bail!("odd /proc stat: {stat}");
    };
    Ok((
        name.to_owned(),
        user.parse::<u64>()? + system.parse::<u64>()?,
    ))
}

/// CPU ticks used so far by a process and by each of its live threads.
#[derive(Debug, Clone)]
pub struct Threads {
    /// The whole process, including threads that have already ended.
    total: u64,
    /// Live threads by id: name and ticks.
    by_thread: HashMap<u32, (String, u64)>,
    ticks_per_second: f64,
}

/// Threads that ended during the interval: the part of the process's CPU time that no live
/// thread accounts for.
pub const ENDED_THREADS: &str = "(ended threads)";

impl Threads {
    /// CPU seconds used between `before` and this snapshot, summed by thread name (threads
    /// with the same name, like a pool's workers, add up). CPU time of threads that ended in
    /// between is only known in total, from the process's own count, and is reported as
    /// [`ENDED_THREADS`]. Names are as the kernel keeps them, cut to 15 bytes. Tokio gives its
    /// `spawn_blocking` threads the workers' name (`tokio-rt-worker` in current versions,
    /// `tokio-runtime-w` in older ones), so blocking work such as store reads counts there.
    pub fn since(&self, before: &Threads) -> BTreeMap<String, f64> {
        let mut ticks: BTreeMap<String, u64> = BTreeMap::new();
        let mut accounted = 0;
        for (tid, (name, now)) in &self.by_thread {
            let earlier = match before.by_thread.get(tid) {
                Some((old_name, old)) if old_name == name => *old,
                _ => 0,
            };
            let used = now.saturating_sub(earlier);
            accounted += used;
            *ticks.entry(name.clone()).or_default() += used;
        }
        let ended = self
            .total
            .saturating_sub(before.total)
            .saturating_sub(accounted);
        if ended > 0 {
            ticks.insert(ENDED_THREADS.to_owned(), ended);
        }
        ticks
            .into_iter()
            .filter(|(_, used)| *used > 0)
            .map(|(name, used)| {
                let seconds = used as f64 / self.ticks_per_second;
                (name, (seconds * 1000.0).round() / 1000.0)
            })
            .collect()
    }
}

/// Per-thread CPU seconds as JSON: `{"tokio-runtime-w": 3.1, "relay-writer": 0.8}`.
pub fn threads_json(threads: &BTreeMap<String, f64>) -> serde_json::Value {
    threads
        .iter()
        .map(|(name, seconds)| (name.clone(), serde_json::Value::from(*seconds)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Per-thread CPU seconds for a person, busiest first: `tokio-runtime-w 3.10 s, ...`.
pub fn threads_summary(threads: &BTreeMap<String, f64>) -> String {
    let mut sorted: Vec<_> = threads.iter().collect();
    sorted.sort_by(|a, b| b.1.total_cmp(a.1));
    let parts: Vec<String> = sorted
        .iter()
        .map(|(name, seconds)| format!("{name} {seconds:.2} s"))
        .collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}
