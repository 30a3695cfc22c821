//! The benchmark scenarios, and what they share: clients that read everything and check it,
//! a start-line sync, and the message format.
//!
//! Every scenario speaks the plain protocol of the server being replaced: text frames,
//! relayed to every *other* connected client. So the same scenario runs against this relay's
//! `/` and against any peer server.
//!
//! A message is `"<sender>:<seq>:<micros>:"` padded with `x` to the message size, where
//! `micros` is the time of sending since the run began; receivers check each sender's
//! sequence (nothing lost, repeated or reordered) and can compute latency.
//!
//! With [`Protocol::Typed`], the same messages travel over this relay's JSON protocol
//! instead (`/ws`: join a room, `send`, receive `message` events), to compare its cost with
//! the plain endpoint's.
//!
//! Two scenarios exist only for this relay's typed protocol, with rooms and history:
//! `churn` (memory under many short connections over many rooms) and `catchup` (live latency
//! while clients recover long histories); see [`typed`] for the client side they share.

pub mod catchup;
pub mod churn;
pub mod fanout;
pub mod idle;
pub mod latency;
pub mod storm;
pub mod typed;

use std::{
    borrow::Cow,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt, stream::SplitSink, stream::SplitStream};
use hdrhistogram::Histogram;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Socket, Target};

/// Frames starting with this only line clients up before a run; they are not counted.
const SYNC: &str = "sync";

/// How messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Text frames relayed to every other client (any broadcast server; the relay's `/`).
    Plain,
    /// The relay's JSON protocol on `/ws`, all clients in one room; senders get their own
    /// messages back too.
    Typed,
}

/// The room typed clients meet in.
pub const ROOM: &str = "bench";

impl Protocol {
    /// The frame that publishes `text` in `room` (neither needs JSON escaping: room names are
    /// `a-z`, digits and `-`; texts digits, `:` and `x`). Plain frames have no room.
    pub fn frame(self, room: &str, text: &str, id: &str) -> String {
        match self {
            Protocol::Plain => text.to_owned(),
            Protocol::Typed => {
                format!(r#"{{"type":"send","room":"{room}","id":"{id}","text":"{text}"}}"#)
            }
        }
    }

    /// The text a received frame carries, if it carries a message.
    ///
    /// Typed frames are read into borrowed fields, not a `serde_json::Value` tree: with a
    /// map allocated per frame the load generator spent three times the CPU of the plain
    /// protocol and, close to saturating its core, read its sockets late; the relay's kernel
    /// then did extra work on the backed-up receive queues (loopback charges it to the
    /// sender), which made the typed endpoint look slower than it is.
    fn text(self, frame: &str) -> Option<Cow<'_, str>> {
        match self {
            Protocol::Plain => Some(Cow::Borrowed(frame)),
            Protocol::Typed => {
                let event: TypedEvent<'_> = serde_json::from_str(frame).ok()?;
                (event.kind == "message").then_some(event.text?)
            }
        }
    }

    /// Whether a sender receives its own messages.
    pub fn echoes(self) -> bool {
        self == Protocol::Typed
    }
}

/// The fields of a typed event the generator needs; everything else is skipped unread.
#[derive(serde::Deserialize)]
struct TypedEvent<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

/// A name for this run of the load generator, for message ids that no earlier run on the
/// same relay (and its stored history) has used: the relay acknowledges a known id as a
/// duplicate and does not publish it again.
pub fn run_id() -> &'static str {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "{:x}{:x}",
            since_epoch.as_millis() % (1 << 40),
            std::process::id()
        )
    })
}

/// A client's sending half.
pub type Sender = SplitSink<Socket, Message>;

/// Builds a message of `size` bytes (at least the header's length).
pub fn payload(sender: usize, seq: u64, micros: u64, size: usize) -> String {
    let mut text = format!("{sender}:{seq}:{micros}:");
    while text.len() < size {
        text.push('x');
    }
    text
}

/// Reads a message's sender, sequence number and send time.
fn parse(text: &str) -> Option<(usize, u64, u64)> {
    let mut parts = text.splitn(4, ':');
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}

/// What one client saw, updated by its reader task as frames arrive.
#[derive(Debug, Default)]
pub struct Seen {
    /// Has received a sync frame: it is in the room, and will receive every later message.
    pub synced: AtomicBool,
    /// Messages received.
    pub received: AtomicU64,
    /// Bytes of those messages' frames (payload, as the WebSocket delivered it).
    pub frame_bytes: AtomicU64,
    /// Messages that skipped ahead in their sender's sequence (something was lost).
    pub gaps: AtomicU64,
    /// Messages that were repeated or arrived out of their sender's order.
    pub repeats: AtomicU64,
    /// Messages from this client itself (the server must never echo to the sender).
    pub echoes: AtomicU64,
}

/// A connected client: its sending half, and its reader task filling in `seen`.
pub struct Client {
    pub index: usize,
    pub protocol: Protocol,
    /// The room it is in (typed protocol).
    pub room: String,
    pub sender: Sender,
    pub seen: Arc<Seen>,
    reader: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    /// The frame that publishes `text` from this client.
    pub fn frame(&self, text: &str, id: &str) -> String {
        self.protocol.frame(&self.room, text, id)
    }
}

/// Shared run clock and latency histogram.
#[derive(Debug)]
pub struct RunClock {
    pub started: Instant,
    pub latencies: Mutex<Histogram<u64>>,
}

impl RunClock {
    pub fn new() -> Arc<RunClock> {
        Arc::new(RunClock {
            started: Instant::now(),
            latencies: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()),
        })
    }

    pub fn micros(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }
}

/// Connects client `index` (joining the room [`ROOM`], with the typed protocol) and starts
/// its reader.
pub async fn connect(
    target: &Target,
    index: usize,
    senders: usize,
    clock: Arc<RunClock>,
    record_latency: bool,
) -> anyhow::Result<Client> {
    connect_to(target, ROOM, index, senders, clock, record_latency).await
}

/// Connects client `index`, joining `room` with the typed protocol, and starts its reader.
/// Senders' indexes (in the message text) must be below `senders`.
pub async fn connect_to(
    target: &Target,
    room: &str,
    index: usize,
    senders: usize,
    clock: Arc<RunClock>,
    record_latency: bool,
) -> anyhow::Result<Client> {
    let socket = target
        .connect(index)
        .await
        .with_context(|| format!("connecting client {index}"))?;
    let (mut sender, stream) = socket.split();
    if target.protocol == Protocol::Typed {
        let join = format!(r#"{{"type":"join","room":"{room}","name":"c{index}"}}"#);
        sender.send(Message::text(join)).await?;
    }
    let seen = Arc::new(Seen::default());
    let reader = tokio::spawn(read(
        stream,
        (index, target.protocol),
        senders,
        seen.clone(),
        clock,
        record_latency,
    ));
    Ok(Client {
        index,
        protocol: target.protocol,
        room: room.to_owned(),
        sender,
        seen,
        reader,
    })
}

async fn read(
    mut stream: SplitStream<Socket>,
    (me, protocol): (usize, Protocol),
    senders: usize,
    seen: Arc<Seen>,
    clock: Arc<RunClock>,
    record_latency: bool,
) {
    let mut next_seq = vec![0u64; senders];
    while let Some(Ok(frame)) = stream.next().await {
        let Message::Text(frame) = frame else {
            continue;
        };
        let Some(text) = protocol.text(&frame) else {
            continue;
        };
        if text.starts_with(SYNC) {
            seen.synced.store(true, Ordering::Relaxed);
            continue;
        }
        let Some((sender, seq, micros)) = parse(&text) else {
            continue;
        };
        if sender == me && !protocol.echoes() {
            seen.echoes.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(expected) = next_seq.get_mut(sender) {
            if seq > *expected {
                seen.gaps.fetch_add(1, Ordering::Relaxed);
            } else if seq < *expected {
                seen.repeats.fetch_add(1, Ordering::Relaxed);
            }
            *expected = seq + 1;
        }
        seen.frame_bytes
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        if record_latency {
            let latency = clock.micros().saturating_sub(micros).max(1);
            let _ = clock.latencies.lock().unwrap().record(latency);
        }
        seen.received.fetch_add(1, Ordering::Relaxed);
    }
}

/// Connects `count` clients, at most `parallel` handshakes at a time.
pub async fn connect_all(
    target: &Target,
    count: usize,
    senders: usize,
    parallel: usize,
    clock: &Arc<RunClock>,
    record_latency: bool,
) -> anyhow::Result<Vec<Client>> {
    let limit = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut handshakes = Vec::with_capacity(count);
    for index in 0..count {
        let (target, clock, limit) = (target.clone(), clock.clone(), limit.clone());
        handshakes.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            connect(&target, index, senders, clock, record_latency).await
        }));
    }
    let mut clients = Vec::with_capacity(count);
    for handshake in handshakes {
        clients.push(handshake.await??);
    }
    Ok(clients)
}

/// Waits until every client is surely in the room: client 0 sends sync frames until all
/// others have received one (anything sent after that reaches everybody).
pub async fn sync(clients: &mut [Client]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let Some((first, others)) = clients.split_first_mut() else {
        return Ok(());
    };
    // Each sync frame needs its own id: the relay drops a resent id as a duplicate, so
    // repeating one id would reach nobody who joined after the first.
    let mut attempt = 0u32;
    loop {
        if others.iter().all(|c| c.seen.synced.load(Ordering::Relaxed)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let missing = others
                .iter()
                .filter(|c| !c.seen.synced.load(Ordering::Relaxed))
                .count();
            bail!("{missing} clients never joined the broadcast");
        }
        attempt += 1;
        let sync = first.frame(SYNC, &format!("sync-{}-{attempt}", run_id()));
        first.sender.send(Message::text(sync)).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every client has received what it should, or until nothing arrives for
/// `stall`. Returns the time at which the last expected message arrived (or the stall began).
pub async fn drain(
    clients: &[Client],
    expected: impl Fn(&Client) -> u64,
    stall: Duration,
) -> Instant {
    let mut last_total = u64::MAX;
    let mut last_progress = Instant::now();
    loop {
        let total: u64 = clients
            .iter()
            .map(|c| c.seen.received.load(Ordering::Relaxed))
            .sum();
        if clients
            .iter()
            .all(|c| c.seen.received.load(Ordering::Relaxed) >= expected(c))
        {
            return Instant::now();
        }
        if total != last_total {
            last_total = total;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > stall {
            return last_progress;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Totals over all clients: received, lost, repeated, echoed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Integrity {
    pub received: u64,
    /// Total frame payload bytes of the messages received.
    pub frame_bytes: u64,
    pub expected: u64,
    pub gaps: u64,
    pub repeats: u64,
    pub echoes: u64,
}

impl Integrity {
    pub fn of(clients: &[Client], expected: impl Fn(&Client) -> u64) -> Integrity {
        let mut totals = Integrity::default();
        for client in clients {
            let seen = &client.seen;
            totals.received += seen.received.load(Ordering::Relaxed);
            totals.frame_bytes += seen.frame_bytes.load(Ordering::Relaxed);
            totals.expected += expected(client);
            totals.gaps += seen.gaps.load(Ordering::Relaxed);
            totals.repeats += seen.repeats.load(Ordering::Relaxed);
            totals.echoes += seen.echoes.load(Ordering::Relaxed);
        }
        totals
    }

    /// Average frame size of a delivered message.
    pub fn bytes_per_delivery(&self) -> f64 {
        self.frame_bytes as f64 / self.received.max(1) as f64
    }

    /// Messages that should have arrived and did not.
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "received": self.received, "expected": self.expected, "lost": self.lost(),
            "gaps": self.gaps, "repeats": self.repeats, "echoes": self.echoes,
        })
    }

    pub fn summary(&self) -> String {
        format!(
            "lost {}, repeated {}, gaps {}, echoed {}",
            self.lost(),
            self.repeats,
            self.gaps,
            self.echoes
        )
    }
}
