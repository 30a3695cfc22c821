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

use super::{ClientKind, Connection, Publication, Relay, Room, encode};

/// How long a closing session waits for the client's answering close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Close code for a client whose outbox overflowed because it did not read.
const SLOW_CONSUMER: u16 = 4000;

/// Runs a connection until the client leaves, the relay shuts down (`stopping`), or the
/// client stops reading.
pub async fn run(socket: WebSocket, relay: Relay, kind: ClientKind, stopping: CancellationToken) {
    let mut session = Session::open(relay, kind);
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
            Message::Text(text) => session.on_text(text),
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
    /// The display name the connection joined under.
    name: String,
}

/// A connection's state as the reader sees it.
struct Session {
    relay: Relay,
    connection: Connection,
    /// Rooms this connection is in, by name.
    rooms: HashMap<String, Membership>,
    /// A plain client's generated name; typed clients name themselves per room.
    guest_name: String,
}

impl Session {
    /// Registers the connection: a typed client is welcomed, a plain client joins the lobby.
    fn open(relay: Relay, kind: ClientKind) -> Self {
        let connection = relay.connect(kind);
        let guest_name = format!("guest-{}", connection.id);
        let mut session = Session {
            relay,
            connection,
            rooms: HashMap::new(),
            guest_name,
        };
        match kind {
            ClientKind::Typed => session.send(&ServerMessage::Welcome {
                protocol: PROTOCOL_VERSION,
                server: concat!("relay/", env!("CARGO_PKG_VERSION")).to_owned(),
                connection: session.connection.id,
                default_room: DEFAULT_ROOM.to_owned(),
                limits: session.relay.settings().limits,
            }),
            ClientKind::Plain => {
                let name = session.guest_name.clone();
                session.enter(DEFAULT_ROOM.to_owned(), name, None);
            }
        }
        session
    }

    fn on_text(&mut self, text: Utf8Bytes) {
        match self.connection.kind {
            ClientKind::Typed => match parse_client_message(&text) {
                Ok(message) => self.on_client_message(message),
                Err(err) => self.refuse(err, None, None),
            },
            ClientKind::Plain => self.on_plain_text(text),
        }
    }

    fn on_client_message(&mut self, message: ClientMessage) {
        match message {
            ClientMessage::Join { room, name, since } => self.join(room, &name, since.as_ref()),
            ClientMessage::Leave { room } => self.leave(room),
            ClientMessage::Send { room, id, text } => self.publish(room, id, &text),
        }
    }

    fn join(&mut self, room: String, name: &str, since: Option<&Position>) {
        let max_name_chars = self.relay.settings().limits.max_name_chars;
        let checked = validate_room(&room).and_then(|()| validate_name(name, max_name_chars));
        if let Err(err) = checked {
            return self.refuse(err, None, Some(room));
        }
        if self.rooms.contains_key(&room) {
            let err = ProtocolError::new(ErrorCode::AlreadyJoined, "already in this room");
            return self.refuse(err, None, Some(room));
        }
        self.enter(room, name.to_owned(), since);
    }

    fn enter(&mut self, room: String, name: String, since: Option<&Position>) {
        let joined = self.relay.join(&self.connection, &room, &name, since);
        let membership = Membership { room: joined, name };
        self.rooms.insert(room, membership);
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

    fn publish(&mut self, room: String, id: String, text: &str) {
        let max_text_chars = self.relay.settings().limits.max_text_chars;
        let checked = validate_client_id(&id).and_then(|()| validate_text(text, max_text_chars));
        if let Err(err) = checked {
            return self.refuse(err, Some(id), Some(room));
        }
        let Some(membership) = self.rooms.get(&room) else {
            return self.refuse(not_joined(), Some(id), Some(room));
        };
        let published = membership.room.publish(&Publication {
            origin: self.connection.id,
            from: &membership.name,
            text,
            id: Some(&id),
            raw: None,
        });
        let epoch = membership.room.epoch().to_owned();
        self.send(&ServerMessage::Ack {
            id,
            room,
            epoch,
            offset: published.offset,
            ts: published.ts,
            duplicate: false,
        });
    }

    /// A plain client's frame: relayed as is, after the same checks typed text gets. Refusals
    /// are sent as a text line, since plain clients do not speak JSON.
    fn on_plain_text(&mut self, text: Utf8Bytes) {
        let max_text_chars = self.relay.settings().limits.max_text_chars;
        if let Err(err) = validate_text(&text, max_text_chars) {
            return self.refuse(err, None, None);
        }
        let lobby = &self.rooms[DEFAULT_ROOM].room;
        lobby.publish(&Publication {
            origin: self.connection.id,
            from: &self.guest_name,
            text: &text,
            id: None,
            raw: Some(&text),
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
