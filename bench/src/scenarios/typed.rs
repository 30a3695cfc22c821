//! The client side of the relay's typed JSON protocol on `/ws`, for the scenarios that need
//! rooms and history (`churn`, `catchup`): one connection driven step by step, every read
//! bounded by a deadline, every answer checked.

use std::{borrow::Cow, collections::BTreeMap};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::client::{Socket, Target};

/// The fields of a relay event these scenarios look at; everything else is skipped unread.
#[derive(Debug, serde::Deserialize)]
pub struct Event<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow)]
    pub room: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub epoch: Option<Cow<'a, str>>,
    #[serde(default)]
    pub offset: Option<u64>,
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    /// In `joined`: `not_requested`, `recovered` or `unrecoverable`.
    #[serde(default, borrow)]
    pub recovery: Option<Cow<'a, str>>,
    /// In `ack`.
    #[serde(default)]
    pub duplicate: Option<bool>,
}

impl Event<'_> {
    pub fn parse(frame: &str) -> anyhow::Result<Event<'_>> {
        serde_json::from_str(frame).with_context(|| format!("not a relay event: {frame:.200}"))
    }

    /// Whether this is a `kind` event of `room`.
    pub fn is(&self, kind: &str, room: &str) -> bool {
        self.kind == kind && self.room.as_deref() == Some(room)
    }
}

/// What `joined` said.
#[derive(Debug, Clone)]
pub struct Joined {
    pub epoch: String,
    /// The room's newest offset at the join.
    pub offset: u64,
    pub recovery: String,
}

/// A point in a room's history to recover from, as `join` takes it.
#[derive(Debug, Clone)]
pub struct Since<'a> {
    pub epoch: &'a str,
    pub offset: u64,
}

/// The next text frame, skipping pings and the like. Ends with an error on a close frame (with
/// the relay's code and reason), a broken or closed connection, or the deadline.
pub async fn next_text(socket: &mut Socket, deadline: Instant) -> anyhow::Result<Utf8Bytes> {
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| anyhow::anyhow!("timed out"))?;
        match next {
            None => bail!("connection ended without a close frame"),
            Some(Err(err)) => bail!("connection broke: {err}"),
            Some(Ok(Message::Text(text))) => return Ok(text),
            Some(Ok(Message::Close(frame))) => match frame {
                Some(frame) => bail!("closed by the relay: {} {}", frame.code, frame.reason),
                None => bail!("closed by the relay without a code"),
            },
            Some(Ok(_)) => {}
        }
    }
}

/// Connects client `index` and reads the relay's `welcome`.
pub async fn connect(target: &Target, index: usize, deadline: Instant) -> anyhow::Result<Socket> {
    let mut socket = tokio::time::timeout_at(deadline, target.connect(index))
        .await
        .map_err(|_| anyhow::anyhow!("timed out connecting"))??;
    let first = next_text(&mut socket, deadline).await?;
    let event = Event::parse(&first)?;
    anyhow::ensure!(
        event.kind == "welcome",
        "the first frame was not `welcome` but {first:.200}"
    );
    Ok(socket)
}

/// Checks that `target` speaks the typed protocol before a long run: its first frame must be
/// `welcome`.
pub async fn check_endpoint(target: &Target) -> anyhow::Result<()> {
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let result = async {
        let mut socket = connect(target, 0, deadline).await?;
        close(&mut socket, deadline).await
    };
    result.await.with_context(|| {
        format!(
            "{} does not answer like the relay's typed endpoint: --url must point at its `/ws`, \
             e.g. ws://127.0.0.1:18080/ws",
            target.url
        )
    })
}

/// Sends `join` and reads up to the relay's `joined` for that room, skipping presence and
/// other rooms' traffic. A refusal (`error`) is an error.
pub async fn join(
    socket: &mut Socket,
    room: &str,
    name: &str,
    since: Option<Since<'_>>,
    deadline: Instant,
) -> anyhow::Result<Joined> {
    let mut join = serde_json::json!({"type": "join", "room": room, "name": name});
    if let Some(since) = since {
        join["since"] = serde_json::json!({"epoch": since.epoch, "offset": since.offset});
    }
    socket.send(Message::text(join.to_string())).await?;
    loop {
        let frame = next_text(socket, deadline).await?;
        let event = Event::parse(&frame)?;
        if event.kind == "error" {
            bail!("join refused: {frame:.300}");
        }
        if event.is("joined", room) {
            return Ok(Joined {
                epoch: event
                    .epoch
                    .context("`joined` without an epoch")?
                    .into_owned(),
                offset: event.offset.context("`joined` without an offset")?,
                recovery: event.recovery.unwrap_or_default().into_owned(),
            });
        }
    }
}

/// The frame that publishes `text` (no JSON escaping needed: see [`super::Protocol::frame`]).
pub fn send_frame(room: &str, id: &str, text: &str) -> Message {
    Message::text(super::Protocol::Typed.frame(room, text, id))
}

/// Reads up to the `ack` for message `id` in `room`, skipping everything else (messages,
/// presence), and checks that it is not a duplicate's (the ids sent are new). A refusal of
/// that message (`error` with its id) is an error.
pub async fn ack(
    socket: &mut Socket,
    room: &str,
    id: &str,
    deadline: Instant,
) -> anyhow::Result<()> {
    loop {
        let frame = next_text(socket, deadline).await?;
        let event = Event::parse(&frame)?;
        if event.id.as_deref() != Some(id) {
            continue;
        }
        match &*event.kind {
            "ack" if event.room.as_deref() == Some(room) => {
                anyhow::ensure!(
                    event.duplicate != Some(true),
                    "a new id was acknowledged as a duplicate: {frame:.300}"
                );
                return Ok(());
            }
            "error" => bail!("message refused: {frame:.300}"),
            _ => {}
        }
    }
}

/// Closes properly: sends a close frame and reads until the relay's answering close frame and
/// the end of the connection. An error if the relay does not answer with a close frame.
pub async fn close(socket: &mut Socket, deadline: Instant) -> anyhow::Result<()> {
    tokio::time::timeout_at(deadline, socket.close(None))
        .await
        .map_err(|_| anyhow::anyhow!("timed out sending the close frame"))??;
    let mut answered = false;
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| anyhow::anyhow!("timed out waiting for the relay's close frame"))?;
        match next {
            Some(Ok(Message::Close(_))) => answered = true,
            Some(Ok(_)) => {}
            // The close handshake is done: tungstenite reports the end as this error.
            None
            | Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed))
            | Some(Err(tokio_tungstenite::tungstenite::Error::AlreadyClosed)) => break,
            Some(Err(err)) => bail!("connection broke while closing: {err}"),
        }
    }
    anyhow::ensure!(answered, "the relay did not answer the close frame");
    Ok(())
}

/// Failures counted by step (`connect`, `join`, ...), with the first few messages kept.
#[derive(Debug, Default)]
pub struct Failures {
    pub by_step: BTreeMap<&'static str, u64>,
    pub examples: Vec<String>,
}

impl Failures {
    /// Examples kept, for a person to read.
    const EXAMPLES: usize = 5;

    pub fn record(&mut self, step: &'static str, err: &anyhow::Error) {
        *self.by_step.entry(step).or_default() += 1;
        if self.examples.len() < Self::EXAMPLES {
            self.examples.push(format!("{step}: {err:#}"));
        }
    }

    pub fn total(&self) -> u64 {
        self.by_step.values().sum()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"total": self.total(), "by_step": self.by_step, "examples": self.examples})
    }

    pub fn summary(&self) -> String {
        if self.by_step.is_empty() {
            return "no failures".to_owned();
        }
        let steps: Vec<String> = self
            .by_step
            .iter()
            .map(|(step, count)| format!("{count} at {step}"))
            .collect();
        format!(
            "{} failures ({}); first: {}",
            self.total(),
            steps.join(", "),
            self.examples.first().map_or("", String::as_str)
        )
    }
}

/// `GET /healthz` on the server's host and port: the relay's open connection and room
/// counts, as it sends them (JSON), or `None` if nothing answers like that within a second or
/// two. Plain blocking HTTP/1.1 on a thread of its own: once per run, it needs no client.
pub async fn healthz(target: &Target) -> Option<serde_json::Value> {
    let address = target.address;
    let answer = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        use std::io::{Read, Write};
        let timeout = std::time::Duration::from_secs(2);
        let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        write!(
            stream,
            "GET /healthz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = Vec::new();
        stream.take(1 << 16).read_to_end(&mut answer)?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    })
    .await
    .ok()?
    .ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    // Whatever the framing (a length, or chunks), the JSON object is the body's braces.
    let json = &body[body.find('{')?..=body.rfind('}')?];
    serde_json::from_str(json).ok()
}
