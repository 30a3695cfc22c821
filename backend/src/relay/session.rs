//! One WebSocket connection, from upgrade to close.
//!
//! A session runs two halves in one task. The reader turns incoming frames into relay calls
//! (every answer goes through the connection's outbox, never straight to the socket); it
//! also charges each frame to the connection's rate limit and turns WebSocket protocol
//! errors into the right close code. The writer drains the outbox to the socket, a whole
//! batch per flush, pings the client when it has been silent, and gives up on a client that
//! stops answering or stops reading. When either half ends the other gets a moment to finish
//! (send its close frame, or receive the client's) before the session ends.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use common::{
    ClientMessage, DEFAULT_ROOM, ErrorCode, PROTOCOL_VERSION, Position, ProtocolError,
    ServerMessage, close_code, parse_client_message, validate_client_id, validate_name,
    validate_room, validate_text,
};
use futures_util::{
    SinkExt, StreamExt,
    stream::{SplitSink, SplitStream},
};
use tokio_util::sync::CancellationToken;

use super::{
    ClientKind, Connection, End, Outbox, Publication, Relay, Room, encode,
    rate_limit::{RateLimit, TokenBucket, Verdict},
};

/// How long a closing session waits for the other half to finish its part of the close.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Per-connection limits and timers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionSettings {
    /// Silence after which the relay pings the client.
    pub ping_interval: Duration,
    /// How long after that the client has to answer (anything counts), and how long one
    /// write may stay blocked on a client that does not read.
    pub ping_timeout: Duration,
    /// Frames per connection.
    pub rate: RateLimit,
    /// Rooms one connection may be in at once.
    pub max_rooms: usize,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            ping_interval: Duration::from_secs(20),
            ping_timeout: Duration::from_secs(20),
            rate: RateLimit::default(),
            max_rooms: 20,
        }
    }
}

/// Runs a connection until the client leaves, breaks the protocol, stops answering, stops
/// reading, or the relay shuts down (`stopping`).
pub async fn run(
    socket: WebSocket,
    relay: Relay,
    kind: ClientKind,
    settings: SessionSettings,
    stopping: CancellationToken,
) {
    let mut session = Session::open(relay, kind, settings);
    session.start().await;
    let id = session.connection.id;
    tracing::debug!(connection = id, ?kind, "connected");
    let started = Instant::now();
    // Milliseconds since `started` when the client was last heard from; read by the writer's
    // heartbeat. Both halves run in this task, so a plain atomic is enough.
    let last_heard = AtomicU64::new(0);
    let (sink, mut stream) = socket.split();
    let outbox = session.connection.outbox.clone();
    let relay = session.relay.clone();
    {
        let heartbeat = Heartbeat {
            started,
            last_heard: &last_heard,
            settings,
        };
        let writer = write_frames(sink, &outbox, heartbeat, stopping);
        let reader = read_frames(&mut stream, &mut session, started, &last_heard);
        tokio::pin!(writer, reader);
        let end = tokio::select! {
            end = &mut reader => {
                outbox.end(end);
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
                end
            }
            end = &mut writer => {
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut reader).await;
                end
            }
        };
        relay.metrics().record_end(end);
    }
    tracing::debug!(connection = id, "disconnected");
    session.close();
}

/// What the writer needs to know to keep a connection alive.
struct Heartbeat<'a> {
    started: Instant,
    last_heard: &'a AtomicU64,
    settings: SessionSettings,
}

impl Heartbeat<'_> {
    fn silence(&self) -> Duration {
        let heard = Duration::from_millis(self.last_heard.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(heard)
    }
}

/// Writes what the outbox receives until the connection is to end; returns how it ended.
async fn write_frames(
    mut sink: SplitSink<WebSocket, Message>,
    outbox: &Outbox,
    heartbeat: Heartbeat<'_>,
    stopping: CancellationToken,
) -> End {
    let settings = heartbeat.settings;
    let mut ticks = tokio::time::interval(settings.ping_interval.min(settings.ping_timeout) / 2);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::new();
    loop {
        let ending = tokio::select! {
            biased;
            () = stopping.cancelled() => {
                // Flush what was already accepted for this client before saying goodbye.
                outbox.take_queued(&mut batch);
                Some(End::Close { code: close_code::GOING_AWAY, reason: "relay shutting down" })
            }
            ending = outbox.next_batch(&mut batch) => ending,
            _ = ticks.tick() => {
                let silence = heartbeat.silence();
                if silence >= settings.ping_interval + settings.ping_timeout {
                    Some(End::Close {
                        code: close_code::HEARTBEAT_TIMEOUT,
                        reason: "no answer to pings",
                    })
                } else if silence >= settings.ping_interval {
                    if sink.feed(Message::Ping(Default::default())).await.is_err() {
                        return End::Quietly;
                    }
                    None
                } else {
                    None
                }
            }
        };
        if ending == Some(End::SLOW_CONSUMER) {
            batch.clear();
        }
        for frame in batch.drain(..) {
            if sink.feed(Message::Text(frame)).await.is_err() {
                return End::Quietly;
            }
        }
        if let Some(end) = ending {
            if let End::Close { code, reason } = end {
                let close = Message::Close(Some(CloseFrame {
                    code,
                    reason: Utf8Bytes::from_static(reason),
                }));
                let _ = tokio::time::timeout(settings.ping_timeout, sink.send(close)).await;
            }
            return end;
        }
        // A client that does not read blocks this flush; it must not block the connection's
        // end, nor keep it open forever.
        tokio::select! {
            flushed = sink.flush() => {
                if flushed.is_err() {
                    return End::Quietly;
                }
            }
            end = outbox.ended() => return end,
            () = tokio::time::sleep(settings.ping_timeout) => return End::SLOW_CONSUMER,
        }
    }
}

/// Feeds incoming frames to the session until the connection ends; returns how.
async fn read_frames(
    stream: &mut SplitStream<WebSocket>,
    session: &mut Session,
    started: Instant,
    last_heard: &AtomicU64,
) -> End {
    let mut bucket = TokenBucket::new(session.settings.rate, Instant::now());
    while let Some(next) = stream.next().await {
        last_heard.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let message = match next {
            Ok(message) => message,
            Err(err) => return end_for_error(err),
        };
        // Pings are answered by the WebSocket layer. After a close frame the stream ends by
        // itself once the closing handshake is done, so keep reading until then.
        if matches!(
            message,
            Message::Ping(_) | Message::Pong(_) | Message::Close(_)
        ) {
            continue;
        }
        match bucket.check(Instant::now()) {
            Verdict::Allow => {}
            Verdict::Refuse => {
                session.relay.metrics().rate_limited();
                let wait = bucket.retry_after().as_millis().max(1);
                session.refuse(
                    ProtocolError::new(
                        ErrorCode::RateLimited,
                        format!("too many messages; slow down (retry in {wait} ms)"),
                    ),
                    None,
                    None,
                );
                continue;
            }
            Verdict::Abuse => {
                return End::Close {
                    code: close_code::POLICY_VIOLATION,
                    reason: "rate limit exceeded",
                };
            }
        }
        match message {
            Message::Text(text) => session.on_text(text).await,
            _ => session.refuse(
                ProtocolError::new(
                    ErrorCode::BinaryNotSupported,
                    "binary frames are not supported; send text",
                ),
                None,
                None,
            ),
        }
    }
    End::Quietly
}

/// The close a broken frame deserves (RFC 6455 section 7.4.1).
fn end_for_error(err: axum::Error) -> End {
    use tungstenite::error::{Error as WsError, ProtocolError as Violation};
    let Ok(err) = err.into_inner().downcast::<WsError>() else {
        return End::Quietly;
    };
    match *err {
        WsError::Capacity(_) => End::Close {
            code: close_code::MESSAGE_TOO_BIG,
            reason: "message too big",
        },
        WsError::Utf8(_) => End::Close {
            code: close_code::INVALID_PAYLOAD,
            reason: "text frame is not valid UTF-8",
        },
        WsError::Protocol(Violation::ResetWithoutClosingHandshake) => End::Quietly,
        WsError::Protocol(_) => End::Close {
            code: close_code::PROTOCOL_ERROR,
            reason: "WebSocket protocol violation",
        },
        _ => End::Quietly,
    }
}

/// A room this connection is in.
struct Membership {
    room: Arc<Room>,
    /// The display name the connection joined under, shared with every message it sends.
    name: Arc<str>,
}

/// A connection's state as the reader sees it.
struct Session {
    relay: Relay,
    connection: Connection,
    settings: SessionSettings,
    /// Rooms this connection is in, by name.
    rooms: HashMap<String, Membership>,
}

impl Session {
    /// Registers the connection; a typed client is welcomed.
    fn open(relay: Relay, kind: ClientKind, settings: SessionSettings) -> Self {
        let connection = relay.connect(kind);
        let session = Session {
            relay,
            connection,
            settings,
            rooms: HashMap::new(),
        };
        if kind == ClientKind::Typed {
            session.send(&ServerMessage::Welcome {
                protocol: PROTOCOL_VERSION,
                server: concat!("relay/", env!("CARGO_PKG_VERSION")).to_owned(),
                connection: session.connection.id,
                default_room: DEFAULT_ROOM.to_owned(),
                limits: session.relay.settings().limits,
            });
        }
        session
    }

    /// Finishes opening: a plain client joins the lobby.
    async fn start(&mut self) {
        if self.connection.kind == ClientKind::Plain {
            let name = format!("guest-{}", self.connection.id);
            Box::pin(self.enter(DEFAULT_ROOM.to_owned(), &name, None)).await;
        }
    }

    async fn on_text(&mut self, text: Utf8Bytes) {
        match self.connection.kind {
            ClientKind::Typed => match parse_client_message(&text) {
                Ok(message) => self.on_client_message(message).await,
                Err(err) => self.refuse(err, None, None),
            },
            ClientKind::Plain => self.on_plain_text(text),
        }
    }

    async fn on_client_message(&mut self, message: ClientMessage) {
        match message {
            ClientMessage::Join { room, name, since } => {
                self.join(room, &name, since.as_ref()).await;
            }
            ClientMessage::Leave { room } => self.leave(room),
            ClientMessage::Ping => self.send(&ServerMessage::Pong),
            ClientMessage::Send {
                room,
                id,
                text,
                resend,
            } => self.publish(room, id, text, resend),
        }
    }

    async fn join(&mut self, room: String, name: &str, since: Option<&Position>) {
        let max_name_chars = self.relay.settings().limits.max_name_chars;
        let checked = validate_room(&room).and_then(|()| validate_name(name, max_name_chars));
        if let Err(err) = checked {
            return self.refuse(err, None, Some(room));
        }
        if self.rooms.contains_key(&room) {
            let err = ProtocolError::new(ErrorCode::AlreadyJoined, "already in this room");
            return self.refuse(err, None, Some(room));
        }
        if self.rooms.len() >= self.settings.max_rooms {
            let err = ProtocolError::new(
                ErrorCode::TooManyRooms,
                format!(
                    "a connection may be in at most {} rooms; leave one first",
                    self.settings.max_rooms
                ),
            );
            return self.refuse(err, None, Some(room));
        }
        // Boxed: joining is rare and its future is large; kept inline it would sit in every
        // idle connection's task.
        Box::pin(self.enter(room, name, since)).await;
    }

    /// Joins a room, reading history from the store (off the async threads, outside every
    /// lock) when the client's position is older than what the room keeps in memory.
    async fn enter(&mut self, room: String, name: &str, since: Option<&Position>) {
        let (joined, catch_up) = match self.relay.join(&self.connection, &room, name, since) {
            Ok(joined) => joined,
            Err(err) => return self.store_failed(&err, room),
        };
        if let Some(catch_up) = catch_up {
            let store = self.relay.store().clone();
            let (name, after, before) = (room.clone(), catch_up.after, catch_up.before);
            let read =
                tokio::task::spawn_blocking(move || store.read_range(&name, after, before)).await;
            let stored = match read {
                Ok(Ok(stored)) => Some(stored),
                Ok(Err(err)) => {
                    tracing::error!(%err, room, "cannot read history; replaying what is in memory");
                    None
                }
                Err(panicked) => {
                    tracing::error!(%panicked, "history read panicked");
                    None
                }
            };
            joined.finish_catch_up(&self.connection.outbox, catch_up, stored);
        }
        let membership = Membership {
            room: joined,
            name: Arc::from(name),
        };
        self.rooms.insert(room, membership);
    }

    fn store_failed(&self, err: &crate::store::StoreError, room: String) {
        tracing::error!(%err, room, "cannot open room");
        let refusal = ProtocolError::new(
            ErrorCode::StoreUnavailable,
            "the relay cannot read this room's history right now; try again",
        );
        self.refuse(refusal, None, Some(room));
    }

    fn leave(&mut self, room: String) {
        match self.rooms.remove(&room) {
            Some(membership) => {
                self.relay.leave(&self.connection, &membership.room);
                self.send(&ServerMessage::Left { room });
            }
            None => self.refuse(not_joined(), None, Some(room)),
        }
    }

    fn publish(&mut self, room: String, id: String, text: String, resend: bool) {
        let max_text_chars = self.relay.settings().limits.max_text_chars;
        let checked = validate_client_id(&id).and_then(|()| validate_text(&text, max_text_chars));
        if let Err(err) = checked {
            return self.refuse(err, Some(id), Some(room));
        }
        let Some(membership) = self.rooms.get(&room) else {
            return self.refuse(not_joined(), Some(id), Some(room));
        };
        // The ack (or a refusal) comes from the room once the message is stored.
        membership.room.publish(Publication {
            origin: self.connection.id,
            origin_kind: ClientKind::Typed,
            from: membership.name.clone(),
            text: Utf8Bytes::from(text),
            id: Some(id),
            resend,
            ack_to: Some(self.connection.outbox.clone()),
        });
    }

    /// A plain client's frame: relayed as is, after the same checks typed text gets. Refusals
    /// are sent as a text line, since plain clients do not speak JSON.
    fn on_plain_text(&mut self, text: Utf8Bytes) {
        let max_text_chars = self.relay.settings().limits.max_text_chars;
        if let Err(err) = validate_text(&text, max_text_chars) {
            return self.refuse(err, None, None);
        }
        let Some(lobby) = self.rooms.get(DEFAULT_ROOM) else {
            // The lobby could not be opened (the store failed); that was already reported.
            return;
        };
        lobby.room.publish(Publication {
            origin: self.connection.id,
            origin_kind: ClientKind::Plain,
            from: lobby.name.clone(),
            text,
            id: None,
            resend: false,
            ack_to: None,
        });
    }

    /// Tells the client its request was refused; nothing else changes.
    fn refuse(&self, err: ProtocolError, id: Option<String>, room: Option<String>) {
        match self.connection.kind {
            ClientKind::Typed => self.send(&ServerMessage::Error {
                code: err.code,
                message: err.message,
                id,
                room,
            }),
            ClientKind::Plain => self
                .connection
                .outbox
                .push(Utf8Bytes::from(format!("relay error {err}"))),
        }
    }

    fn send(&self, message: &ServerMessage) {
        self.connection.outbox.push(encode(message));
    }

    /// Leaves every room, telling their members.
    fn close(mut self) {
        for (_, membership) in self.rooms.drain() {
            self.relay.leave(&self.connection, &membership.room);
        }
    }
}

fn not_joined() -> ProtocolError {
    ProtocolError::new(ErrorCode::NotJoined, "join the room first")
}
