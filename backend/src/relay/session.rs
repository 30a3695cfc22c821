//! One WebSocket connection, from upgrade to close.
//!
//! A session runs two halves in one task: the reader turns incoming frames into relay calls
//! (every answer goes through the connection's outbox, never straight to the socket), and
//! the writer drains the outbox to the socket, a whole batch per flush. When either half ends
//! the session ends; when the writer ends first (shutdown, overflow) the reader gets a moment
//! to receive the client's answering close frame.

use std::{collections::HashMap, sync::Arc, time::Duration};

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

use super::{ClientKind, Connection, JoinOutcome, Publication, Relay, Room, encode};
use crate::store::StoredMessage;

/// How long a closing session waits for the client's answering close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Close code for a client whose outbox overflowed because it did not read.
const SLOW_CONSUMER: u16 = 4000;

/// How many times a join re-reads history from the store while the room keeps moving.
const HISTORY_READS: usize = 3;

/// Runs a connection until the client leaves, the relay shuts down (`stopping`), or the
/// client stops reading.
pub async fn run(socket: WebSocket, relay: Relay, kind: ClientKind, stopping: CancellationToken) {
    let mut session = Session::open(relay, kind);
    session.start().await;
    tracing::debug!(connection = session.connection.id, ?kind, "connected");
    let (sink, mut stream) = socket.split();
    {
        let writer = write_frames(sink, session.connection.outbox.clone(), stopping);
        let reader = read_frames(&mut stream, &mut session);
        tokio::pin!(writer, reader);
        tokio::select! {
            () = &mut reader => {}
            () = &mut writer => {
                // We sent a close frame; give the client a moment to answer it.
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut reader).await;
            }
        }
    }
    tracing::debug!(connection = session.connection.id, "disconnected");
    session.close();
}

/// Writes everything the outbox receives until shutdown, overflow or a write error.
async fn write_frames(
    mut sink: SplitSink<WebSocket, Message>,
    outbox: super::Outbox,
    stopping: CancellationToken,
) {
    let mut batch = Vec::new();
    loop {
        let outcome = tokio::select! {
            biased;
            () = stopping.cancelled() => {
                // Flush what was already accepted for this client before saying goodbye.
                outbox.take_queued(&mut batch).map(|()| going_away())
            }
            taken = outbox.next_batch(&mut batch) => taken.map(|()| None),
        };
        let close = match outcome {
            Ok(close) => close,
            Err(super::Overflowed) => {
                batch.clear();
                Some(close_frame(
                    SLOW_CONSUMER,
                    "slow consumer: too many unread messages",
                ))
            }
        };
        for frame in batch.drain(..) {
            if sink.feed(Message::Text(frame)).await.is_err() {
                return;
            }
        }
        match close {
            Some(close) => {
                let _ = sink.send(Message::Close(Some(close))).await;
                return;
            }
            None => {
                if sink.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

fn going_away() -> Option<CloseFrame> {
    Some(close_frame(close_code::GOING_AWAY, "relay shutting down"))
}

fn close_frame(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }
}

/// Feeds incoming frames to the session until the client closes or the connection fails.
async fn read_frames(stream: &mut SplitStream<WebSocket>, session: &mut Session) {
    while let Some(Ok(message)) = stream.next().await {
        match message {
            Message::Text(text) => session.on_text(text).await,
            Message::Binary(_) => session.refuse(
                ProtocolError::new(
                    ErrorCode::BinaryNotSupported,
                    "binary frames are not supported; send text",
                ),
                None,
                None,
            ),
            // Pings are answered by the WebSocket layer. After a close frame the stream ends
            // by itself once the closing handshake is done, so keep reading until then.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => {}
        }
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
    /// Rooms this connection is in, by name.
    rooms: HashMap<String, Membership>,
}

impl Session {
    /// Registers the connection: a typed client is welcomed, a plain client joins the lobby.
    fn open(relay: Relay, kind: ClientKind) -> Self {
        let connection = relay.connect(kind);
        let session = Session {
            relay,
            connection,
            rooms: HashMap::new(),
        };
        match kind {
            ClientKind::Typed => session.send(&ServerMessage::Welcome {
                protocol: PROTOCOL_VERSION,
                server: concat!("relay/", env!("CARGO_PKG_VERSION")).to_owned(),
                connection: session.connection.id,
                default_room: DEFAULT_ROOM.to_owned(),
                limits: session.relay.settings().limits,
            }),
            ClientKind::Plain => {}
        }
        session
    }

    /// Finishes opening: a plain client joins the lobby.
    async fn start(&mut self) {
        if self.connection.kind == ClientKind::Plain {
            let name = format!("guest-{}", self.connection.id);
            self.enter(DEFAULT_ROOM.to_owned(), &name, None).await;
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
        self.enter(room, name, since).await;
    }

    /// Joins a room, reading history from the store (off the async threads, outside every
    /// lock) when the client's position is older than what the room keeps in memory.
    async fn enter(&mut self, room: String, name: &str, since: Option<&Position>) {
        let mut history: Option<Vec<StoredMessage>> = None;
        for attempt in 1..=HISTORY_READS + 1 {
            let give_up = attempt > HISTORY_READS;
            let outcome = self.relay.join(
                &self.connection,
                &room,
                name,
                since,
                history.as_deref(),
                give_up,
            );
            match outcome {
                Ok(JoinOutcome::Joined(joined)) => {
                    let membership = Membership {
                        room: joined,
                        name: Arc::from(name),
                    };
                    self.rooms.insert(room, membership);
                    return;
                }
                Ok(JoinOutcome::NeedHistory { after, before }) => {
                    let store = self.relay.store().clone();
                    let name = room.clone();
                    let read =
                        tokio::task::spawn_blocking(move || store.read_range(&name, after, before))
                            .await;
                    match read {
                        Ok(Ok(stored)) => history = Some(stored),
                        Ok(Err(err)) => return self.store_failed(&err, room),
                        Err(panicked) => {
                            tracing::error!(%panicked, "history read panicked");
                            history = Some(Vec::new());
                        }
                    }
                }
                Err(err) => return self.store_failed(&err, room),
            }
        }
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
