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
//! Typed clients also check what the plain protocol cannot show: every `message` is of the
//! room the client joined, every `ack` is of a new message (not a duplicate), and no `error`
//! arrives.
//!
//! Three scenarios exist only for this relay's typed protocol, with rooms and history:
//! `churn` (memory under many short connections over many rooms), `catchup` (live latency
//! while clients recover long histories), and `api` (its HTTP server API next to the
//! WebSocket `send`); see [`typed`] for the client side the first two share. One more,
//! `http-floor` ([`http_floor`]), is HTTP only: the `api` scenario's publishes against any
//! server that answers them, the relay or the bare floor of the path.

pub mod api;
pub mod catchup;
pub mod churn;
pub mod fanout;
pub mod http_floor;
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

    /// What a received frame is.
    ///
    /// Typed frames are read into borrowed fields, not a `serde_json::Value` tree: with a
    /// map allocated per frame the load generator spent three times the CPU of the plain
    /// protocol and, close to saturating its core, read its sockets late; the relay's kernel
    /// then did extra work on the backed-up receive queues (loopback charges it to the
    /// sender), which made the typed endpoint look slower than it is.
    fn classify(self, frame: &str) -> Frame<'_> {
        match self {
            Protocol::Plain => Frame::Message {
                room: None,
                text: Cow::Borrowed(frame),
            },
            Protocol::Typed => {
                let Ok(event) = serde_json::from_str::<TypedEvent<'_>>(frame) else {
                    return Frame::Other;
                };
                match (&*event.kind, event.text) {
                    ("message", Some(text)) => Frame::Message {
                        room: event.room,
                        text,
                    },
                    ("ack", _) => Frame::Ack {
                        duplicate: event.duplicate == Some(true),
                    },
                    ("error", _) => Frame::Error,
                    _ => Frame::Other,
                }
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
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    /// In `message` (and `ack`, `error`): the room.
    #[serde(default, borrow)]
    room: Option<Cow<'a, str>>,
    /// In `ack`.
    #[serde(default)]
    duplicate: Option<bool>,
}

/// A received frame, as the reader sorts it.
enum Frame<'a> {
    /// A published message: its room (typed protocol) and its text.
    Message {
        room: Option<Cow<'a, str>>,
        text: Cow<'a, str>,
    },
    /// The relay acknowledged one of this client's messages (typed protocol).
    Ack { duplicate: bool },
    /// The relay refused something this client sent (typed protocol).
    Error,
    /// Presence, `welcome`, `joined` and the like.
    Other,
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
    /// Typed `message` events of a room other than the one this client joined.
    pub misdirected: AtomicU64,
    /// Typed `ack`s of this client's messages, in order of arrival.
    pub acks: AtomicU64,
    /// Of those, acks saying "duplicate": every id the scenarios send is new, so each is a
    /// message the relay took for one it had already published.
    pub duplicate_acks: AtomicU64,
    /// Typed `error` events: the relay refused something this client sent.
    pub errors: AtomicU64,
    /// The first of those, as received.
    pub first_error: Mutex<Option<String>>,
    /// Woken at each ack or error, for a sender waiting for its message's answer (see
    /// [`Client::await_answers`]).
    pub answered: tokio::sync::Notify,
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

    /// Answers (acks and errors) this client has received so far (typed protocol): each
    /// message it sends gets one, in order.
    pub fn answers(&self) -> u64 {
        self.seen.acks.load(Ordering::Relaxed) + self.seen.errors.load(Ordering::Relaxed)
    }

    /// Waits until this client has received `count` answers in all (see
    /// [`Client::answers`]), or the deadline passes (an error).
    pub async fn await_answers(
        &self,
        count: u64,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<()> {
        loop {
            // `notify_one` keeps a permit when nobody waits, so an answer arriving between
            // this check and the wait below still wakes it.
            if self.answers() >= count {
                return Ok(());
            }
            tokio::time::timeout_at(deadline, self.seen.answered.notified())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "client {} timed out waiting for answer number {count}",
                        self.index
                    )
                })?;
        }
    }

    /// An error if this client has received more than `before` errors: the first one.
    pub fn check_errors(&self, before: u64) -> anyhow::Result<()> {
        let errors = self.seen.errors.load(Ordering::Relaxed);
        if errors > before {
            let first = self.seen.first_error.lock().unwrap().clone();
            anyhow::bail!(
                "client {} got {} refusals from the relay; the first: {}",
                self.index,
                errors - before,
                first.unwrap_or_default()
            );
        }
        Ok(())
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
            latencies: Mutex::new(histogram()),
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
        (index, target.protocol, room.to_owned()),
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
    (me, protocol, my_room): (usize, Protocol, String),
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
        let (room, text) = match protocol.classify(&frame) {
            Frame::Message { room, text } => (room, text),
            Frame::Ack { duplicate } => {
                if duplicate {
                    seen.duplicate_acks.fetch_add(1, Ordering::Relaxed);
                }
                seen.acks.fetch_add(1, Ordering::Relaxed);
                seen.answered.notify_one();
                continue;
            }
            Frame::Error => {
                seen.first_error
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| format!("{frame:.300}"));
                seen.errors.fetch_add(1, Ordering::Relaxed);
                seen.answered.notify_one();
                continue;
            }
            Frame::Other => continue,
        };
        if room.is_some_and(|room| room != my_room) {
            seen.misdirected.fetch_add(1, Ordering::Relaxed);
            continue;
        }
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
/// others have received one (anything sent after that reaches everybody). With the typed
/// protocol it then waits for the acks of its sync frames too, so that a scenario counting
/// a sender's acks starts from a settled count.
pub async fn sync(clients: &mut [Client]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let Some((first, others)) = clients.split_first_mut() else {
        return Ok(());
    };
    let answers_before = first.answers();
    // Each sync frame needs its own id: the relay drops a resent id as a duplicate, so
    // repeating one id would reach nobody who joined after the first.
    let mut attempt = 0u32;
    loop {
        if others.iter().all(|c| c.seen.synced.load(Ordering::Relaxed)) {
            if first.protocol == Protocol::Typed {
                first
                    .await_answers(answers_before + u64::from(attempt), deadline.into())
                    .await?;
            }
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
pub async fn drain<C: std::borrow::Borrow<Client>>(
    clients: &[C],
    expected: impl Fn(&Client) -> u64,
    stall: Duration,
) -> Instant {
    let mut last_total = u64::MAX;
    let mut last_progress = Instant::now();
    loop {
        let total: u64 = clients
            .iter()
            .map(|c| c.borrow().seen.received.load(Ordering::Relaxed))
            .sum();
        if clients.iter().all(|c| {
            let c = c.borrow();
            c.seen.received.load(Ordering::Relaxed) >= expected(c)
        }) {
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

/// A histogram of microseconds, 1 µs to 60 s.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// The median, or `None` of nothing.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[middle]),
        _ => Some((values[middle - 1] + values[middle]) / 2.0),
    }
}

/// Totals over all clients: received, lost, repeated, echoed, misdirected.
#[derive(Debug, Default, Clone, Copy)]
pub struct Integrity {
    pub received: u64,
    /// Total frame payload bytes of the messages received.
    pub frame_bytes: u64,
    pub expected: u64,
    pub gaps: u64,
    pub repeats: u64,
    pub echoes: u64,
    /// Messages of another room (typed protocol).
    pub misdirected: u64,
    /// Messages beyond what a client should have received (summed per client, so one
    /// client's surplus does not hide another's loss).
    pub surplus: u64,
    /// Acks that said "duplicate" of a new message (typed protocol).
    pub duplicate_acks: u64,
    /// `error` events (typed protocol).
    pub errors: u64,
}

impl Integrity {
    pub fn of(clients: &[Client], expected: impl Fn(&Client) -> u64) -> Integrity {
        let mut totals = Integrity::default();
        for client in clients {
            let seen = &client.seen;
            let received = seen.received.load(Ordering::Relaxed);
            totals.received += received;
            totals.frame_bytes += seen.frame_bytes.load(Ordering::Relaxed);
            totals.expected += expected(client);
            totals.surplus += received.saturating_sub(expected(client));
            totals.gaps += seen.gaps.load(Ordering::Relaxed);
            totals.repeats += seen.repeats.load(Ordering::Relaxed);
            totals.echoes += seen.echoes.load(Ordering::Relaxed);
            totals.misdirected += seen.misdirected.load(Ordering::Relaxed);
            totals.duplicate_acks += seen.duplicate_acks.load(Ordering::Relaxed);
            totals.errors += seen.errors.load(Ordering::Relaxed);
        }
        totals
    }

    /// These totals and `other`'s together.
    pub fn merge(self, other: Integrity) -> Integrity {
        Integrity {
            received: self.received + other.received,
            frame_bytes: self.frame_bytes + other.frame_bytes,
            expected: self.expected + other.expected,
            gaps: self.gaps + other.gaps,
            repeats: self.repeats + other.repeats,
            echoes: self.echoes + other.echoes,
            misdirected: self.misdirected + other.misdirected,
            surplus: self.surplus + other.surplus,
            duplicate_acks: self.duplicate_acks + other.duplicate_acks,
            errors: self.errors + other.errors,
        }
    }

    /// Average frame size of a delivered message.
    pub fn bytes_per_delivery(&self) -> f64 {
        self.frame_bytes as f64 / self.received.max(1) as f64
    }

    /// Messages that should have arrived and did not (per client, so one client's surplus
    /// does not hide another's loss).
    pub fn lost(&self) -> u64 {
        (self.expected + self.surplus).saturating_sub(self.received)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "received": self.received, "expected": self.expected, "lost": self.lost(),
            "gaps": self.gaps, "repeats": self.repeats, "echoes": self.echoes,
            "misdirected": self.misdirected, "surplus": self.surplus,
            "duplicate_acks": self.duplicate_acks, "errors": self.errors,
        })
    }

    pub fn summary(&self) -> String {
        let mut summary = format!(
            "lost {}, repeated {}, gaps {}, echoed {}",
            self.lost(),
            self.repeats,
            self.gaps,
            self.echoes
        );
        // Only the typed protocol can show these; shown when they happened.
        for (count, what) in [
            (self.misdirected, "misdirected"),
            (self.surplus, "more than expected"),
            (self.duplicate_acks, "acked as duplicates"),
            (self.errors, "errors from the relay"),
        ] {
            if count > 0 {
                summary.push_str(&format!(", {what} {count}"));
            }
        }
        summary
    }
}
