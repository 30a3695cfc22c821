//! One WebSocket connection, from upgrade to close.
//!
//! A session runs two halves in one task. The reader turns incoming frames into relay calls
//! (every answer goes through the connection's queue, never straight to the socket); it
//! also charges each frame to the connection's rate limit, records that the client is
//! alive, and turns WebSocket protocol errors into the right close code. The writer drains
//! the queue to the socket, a whole batch framed into one buffer per `send` (see
//! [`super::framing`]), with a ping when the heartbeat sweep asks for one and a pong when
//! the client pinged, until someone decides the connection ends. When either half ends the other gets a moment to
//! finish (send its close frame, or receive the client's).
//!
//! Nothing here keeps a timer: an idle connection is a parked task and a few small buffers.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::extract::ws::Utf8Bytes;
use common::{
    ClientMessage, DEFAULT_ROOM, ErrorCode, PROTOCOL_VERSION, Position, ProtocolError,
    ServerMessage, parse_client_message, validate_client_id, validate_name, validate_room,
    validate_text,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::sync::CancellationToken;

use super::{
    CloseReason, End, SendQueue, clock,
    framing::{Control, FrameReader, Incoming, Violation, write_frames},
    rate_limit::{RateLimit, TokenBucket, Verdict},
    send_queue::Deadline,
};
use crate::auth::{Grants, Permission, PlainAccess, TokenError};
use crate::config::defaults;
use crate::engine::Source;
use crate::relay::{AnswerTo, ClientKind, Connection, Publication, Relay, Room, encode};

/// How long a closing session waits for the writer to send its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// After its close frame, how long the relay keeps reading (and discarding) what the client
/// still sends, and how much of it at most: see [`linger`].
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 64 << 20;

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
            ping_interval: Duration::from_millis(defaults::PING_INTERVAL_MS),
            ping_timeout: Duration::from_millis(defaults::PING_TIMEOUT_MS),
            rate: RateLimit::default(),
            max_rooms: defaults::MAX_ROOMS,
        }
    }
}

/// Runs a connection (an upgraded socket, its handshake done) until the client leaves,
/// breaks the protocol, stops answering, stops reading, or the relay shuts down (its queue
/// is ended with 1001; `stopping` is only checked once, for a connection that arrives as
/// shutdown begins).
///
/// The socket is split before the session's future is created, so that future never holds
/// the whole socket inline: it lives on in every idle connection's task, and every byte of
/// it counts ten-thousandfold.
pub fn run<S: AsyncRead + AsyncWrite + Send + 'static>(
    socket: S,
    frames: FrameReader,
    session: Session,
    stopping: CancellationToken,
) -> impl Future<Output = ()> + Send {
    let (stream, sink) = tokio::io::split(socket);
    serve(sink, stream, frames, session, stopping)
}

async fn serve<S: AsyncRead + AsyncWrite + Send>(
    sink: WriteHalf<S>,
    mut stream: ReadHalf<S>,
    mut frames: FrameReader,
    mut session: Session,
    stopping: CancellationToken,
) {
    let queue = session.connection.queue.clone();
    if stopping.is_cancelled() {
        queue.end(GOING_AWAY);
    }
    let (id, kind, settings) = (
        session.connection.id,
        session.connection.kind,
        session.settings,
    );
    tracing::debug!(connection = id, ?kind, "connected");
    let relay = session.relay.clone();
    let end = {
        let writer = write_queue(sink, &queue, settings);
        let reader = read_frames(&mut stream, &mut frames, &mut session);
        tokio::pin!(writer, reader);
        // The grace period is boxed: it is needed once, at the very end, and inline it
        // would take room in every connection's task for its whole life.
        tokio::select! {
            end = &mut reader => {
                queue.end(end);
                let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, &mut writer)).await;
                end
            }
            end = &mut writer => end,
        }
    };
    relay.metrics().record_end(end);
    if end != End::Quietly {
        Box::pin(linger(&mut stream)).await;
    }
    tracing::debug!(connection = id, "disconnected");
    // Dropping the session leaves its rooms.
    drop(session);
}

/// How shutdown ends a connection.
pub const GOING_AWAY: End = End::SHUTDOWN;

/// The end of a close: the relay's close frame is sent and its sending side shut down (a
/// FIN follows the close frame). Now read and discard whatever the client still sends,
/// until it closes its side too, for at most [`LINGER_TIME`] and [`LINGER_BYTES`].
///
/// Closing the socket while unread data is still arriving makes the kernel answer with a
/// reset, and a reset makes the client's kernel throw away everything it had received but
/// the application had not read yet, close frame included: a browser that just sent a
/// frame over the limit would see 1006 instead of 1009. Reading to the end avoids that.
async fn linger<R: AsyncRead>(stream: &mut ReadHalf<R>) {
    let mut sink = tokio::io::sink();
    let mut rest = stream.take(LINGER_BYTES);
    let _ = tokio::time::timeout(LINGER_TIME, tokio::io::copy(&mut rest, &mut sink)).await;
}

/// Writes what the send queue receives until the connection is to end; returns how it
/// ended. A close ends with the close frame and the sending side shut down.
async fn write_queue<W: AsyncWrite>(
    mut sink: WriteHalf<W>,
    queue: &SendQueue,
    settings: SessionSettings,
) -> End {
    let mut batch = Vec::new();
    loop {
        let next = queue.next_batch(&mut batch).await;
        if next.ending == Some(End::Relay(CloseReason::SlowConsumer)) {
            batch.clear();
        }
        let mut controls = Vec::new();
        controls.extend(next.pong.map(Control::Pong));
        if next.ping {
            controls.push(Control::Ping);
        }
        if let Some(end) = next.ending {
            // The last batch and the close frame are bounded too: a client that does not
            // read must not hold the connection (or shutdown's drain) open.
            let finish = async {
                write_frames(&mut sink, &controls, &batch).await?;
                if let Some((code, reason)) = end.close_frame() {
                    let close = Control::Close { code, reason };
                    write_frames(&mut sink, &[close], &[]).await?;
                    sink.shutdown().await?;
                }
                Ok::<(), std::io::Error>(())
            };
            // However the writing went, this is how the connection ended.
            let _ = Box::pin(tokio::time::timeout(settings.ping_timeout, finish)).await;
            return end;
        }
        // A client that does not read blocks this write; the heartbeat sweep notices a
        // write stuck too long and ends the connection, which wakes this.
        queue.writing(true);
        tokio::select! {
            written = write_frames(&mut sink, &controls, &batch) => {
                queue.writing(false);
                if written.is_err() {
                    return End::Quietly;
                }
            }
            end = queue.ended() => return end,
        }
        batch.clear();
    }
}

/// Feeds incoming frames to the session until the connection ends; returns how.
async fn read_frames<R: AsyncRead>(
    stream: &mut ReadHalf<R>,
    frames: &mut FrameReader,
    session: &mut Session,
) -> End {
    let mut bucket = TokenBucket::new(session.settings.rate, Instant::now());
    while let Some(next) = frames.next(stream).await {
        session.connection.queue.heard();
        let incoming = match next {
            Ok(incoming) => incoming,
            Err(violation) => return end_for_violation(violation),
        };
        match incoming {
            Incoming::Ping(payload) => {
                session.connection.queue.request_pong(payload);
                continue;
            }
            Incoming::Pong => continue,
            // The client's close: answer it (echoing its code) and end. If the relay closed
            // first, this is the answer to its close, and the connection is already ending.
            Incoming::Close(code) => return End::Client(code),
            Incoming::Text(_) | Incoming::Binary => {}
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
            Verdict::Abuse => return End::Relay(CloseReason::RateAbuse),
        }
        match incoming {
            // Boxed: inline, the largest handling would be part of every idle connection's
            // task (see the test below).
            Incoming::Text(text) => Box::pin(session.on_text(text)).await,
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
fn end_for_violation(violation: Violation) -> End {
    End::Relay(match violation {
        Violation::TooBig => CloseReason::MessageTooBig,
        Violation::InvalidUtf8 => CloseReason::InvalidPayload,
        Violation::Protocol(why) => CloseReason::ProtocolError(why),
    })
}

/// A room this connection is in.
struct Membership {
    room: Arc<Room>,
    /// The display name the connection joined under (or was renamed to since), shared with
    /// every message it sends.
    name: Arc<str>,
}

/// Who a connection is, which decides what it may do.
enum Standing {
    /// The relay requires no token: anything goes, as on the server the relay replaces.
    Open,
    /// Tokens are required and no `auth` has come yet: only `auth` is accepted.
    Unauthenticated,
    /// `auth` came without a token: the anonymous rooms may be read.
    Anonymous,
    /// A verified user.
    User(Box<User>),
}

/// An authenticated connection's user.
struct User {
    /// The token's `sub`.
    id: Arc<str>,
    /// The token's `name`: the connection's name in every room.
    name: Arc<str>,
    /// The rooms it may read and write.
    grants: Grants,
}

/// A connection's state as the reader sees it. Opened before the upgrade is answered, so
/// a plain client is in the lobby by the time its handshake completes; dropping it (when
/// the connection ends, or if the upgrade never completes) leaves every room it joined.
pub struct Session {
    relay: Relay,
    connection: Connection,
    settings: SessionSettings,
    /// Who the connection is, as far as the relay knows.
    standing: Standing,
    /// Rooms this connection is in. A `Vec`: a connection is in a handful of rooms at most,
    /// and a map would cost every idle connection a few hundred bytes more.
    rooms: Vec<Membership>,
}

impl Session {
    /// Registers the connection: a typed client is welcomed, a plain client joins the
    /// lobby.
    pub async fn open(relay: Relay, kind: ClientKind, settings: SessionSettings) -> Self {
        let connection = relay.connect(kind);
        let auth = relay.settings().auth.clone();
        let standing = match (&auth, kind) {
            (None, _) => Standing::Open,
            (Some(_), ClientKind::Typed) => Standing::Unauthenticated,
            (Some(auth), ClientKind::Plain) => match auth.settings.plain {
                PlainAccess::On => Standing::Open,
                // `Off` never gets this far: the upgrade is refused.
                PlainAccess::ReadOnly | PlainAccess::Off => Standing::Anonymous,
            },
        };
        let mut session = Session {
            relay,
            connection,
            settings,
            standing,
            // One slot: most connections (all plain ones) are in exactly one room.
            rooms: Vec::with_capacity(1),
        };
        if kind == ClientKind::Typed {
            if let Some(auth) = &auth {
                let deadline = clock::now_ms() + auth.settings.timeout.as_millis() as u64;
                session
                    .connection
                    .queue
                    .set_deadline(Deadline::Authenticate(deadline));
            }
            session.send(&ServerMessage::Welcome {
                protocol: PROTOCOL_VERSION,
                server: concat!("relay/", env!("CARGO_PKG_VERSION")).to_owned(),
                connection: session.connection.id,
                default_room: DEFAULT_ROOM.to_owned(),
                limits: session.relay.settings().limits,
                auth_required: auth.is_some(),
            });
        } else {
            let name = format!(
                "guest-{}",
                crate::relay::connection_count(session.connection.id)
            );
            Box::pin(session.enter(DEFAULT_ROOM.to_owned(), &name, None)).await;
        }
        session
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
        match (&self.standing, message) {
            (Standing::Unauthenticated, ClientMessage::Auth { token }) => {
                self.authenticate(token.as_deref());
            }
            (Standing::Unauthenticated, _) => {
                self.end(CloseReason::AuthRefused(
                    "authenticate first: the first frame must be `auth`",
                ));
            }
            (Standing::User(_), ClientMessage::Refresh { token }) => self.refresh(&token),
            (_, ClientMessage::Auth { .. } | ClientMessage::Refresh { .. }) => {
                let err = ProtocolError::new(
                    ErrorCode::InvalidMessage,
                    "nothing to authenticate: the relay requires no token, or this connection \
                     authenticated already (send `refresh` with a user token)",
                );
                self.refuse(err, None, None);
            }
            (_, message) => self.on_request(message).await,
        }
    }

    async fn on_request(&mut self, message: ClientMessage) {
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
                // Resends need no flag any more: the engine recognises every client id the
                // room still keeps. The field stays in the protocol for old clients.
                resend: _,
            } => self.publish(room, id, text),
            ClientMessage::Rename { name } => self.rename(&name),
            // Handled before, in every standing.
            ClientMessage::Auth { .. } | ClientMessage::Refresh { .. } => {}
        }
    }

    /// The first frame under required tokens: a valid token makes the connection its
    /// user's until the token expires (plus the grace period, unless refreshed); no token
    /// makes it anonymous where that is allowed. Anything else ends it: an expired token
    /// with 4003 (get a new one), any other refusal with 4004.
    fn authenticate(&mut self, token: Option<&str>) {
        let Some(auth) = self.relay.settings().auth.clone() else {
            return;
        };
        let Some(token) = token else {
            if auth.settings.anonymous_rooms.is_empty() {
                return self.end(CloseReason::AuthRefused("a token is required"));
            }
            self.standing = Standing::Anonymous;
            self.connection.queue.clear_deadline();
            return self.send(&ServerMessage::Authenticated {
                user: None,
                name: None,
                expires_at: None,
            });
        };
        let max_name_chars = self.relay.settings().limits.max_name_chars;
        match auth.verifier.verify(token, max_name_chars) {
            Ok(identity) => {
                self.carry_on_until(
                    &identity.user,
                    &identity.name,
                    identity.expires_at,
                    auth.settings.grace,
                );
                let id: Arc<str> = Arc::from(identity.user);
                self.relay.identify(&self.connection, id.clone());
                self.standing = Standing::User(Box::new(User {
                    id,
                    name: Arc::from(identity.name),
                    grants: identity.grants,
                }));
            }
            Err(TokenError::Expired) => self.end(CloseReason::TokenExpired),
            Err(err) => {
                tracing::debug!(%err, connection = self.connection.id, "token refused");
                self.end(CloseReason::AuthRefused(refusal_text(&err)));
            }
        }
    }

    /// A fresh token for the same user: the connection carries on under it (its rooms'
    /// grants from now on, its expiry). A refused one changes nothing: the current token
    /// holds until it runs out.
    fn refresh(&mut self, token: &str) {
        let Some(auth) = self.relay.settings().auth.clone() else {
            return;
        };
        let Standing::User(user) = &mut self.standing else {
            return;
        };
        let max_name_chars = self.relay.settings().limits.max_name_chars;
        let identity = match auth.verifier.verify(token, max_name_chars) {
            Ok(identity) if *identity.user == *user.id => identity,
            Ok(_) => {
                let err = ProtocolError::new(
                    ErrorCode::InvalidToken,
                    "the token is for another user; the current one still holds",
                );
                return self.refuse(err, None, None);
            }
            Err(err) => {
                let err = ProtocolError::new(
                    ErrorCode::InvalidToken,
                    format!("{err}; the current token still holds until it expires"),
                );
                return self.refuse(err, None, None);
            }
        };
        user.grants = identity.grants;
        // The name stays the one the connection signed in with: members know it by it.
        let name = user.name.clone();
        self.carry_on_until(
            &identity.user,
            &name,
            identity.expires_at,
            auth.settings.grace,
        );
    }

    /// A token was accepted: the connection runs until its expiry (`exp`, Unix seconds)
    /// plus `grace`, and the client is told who it is and until when.
    fn carry_on_until(&self, user: &str, name: &str, exp: u64, grace: Duration) {
        let now_unix_ms = crate::engine::now_millis();
        // A token may say it lasts for ages; a deadline past a year is as good as none, and
        // keeps the arithmetic far from overflowing.
        const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
        let left = exp
            .saturating_mul(1000)
            .saturating_sub(now_unix_ms)
            .saturating_add(grace.as_millis() as u64)
            .min(YEAR_MS);
        self.connection
            .queue
            .set_deadline(Deadline::Token(clock::now_ms() + left));
        self.send(&ServerMessage::Authenticated {
            user: Some(user.to_owned()),
            name: Some(name.to_owned()),
            expires_at: Some(exp.saturating_mul(1000)),
        });
    }

    /// Whether this connection may do `permission` in `room`.
    fn allowed(&self, room: &str, permission: Permission) -> bool {
        match &self.standing {
            Standing::Open => true,
            Standing::Unauthenticated => false,
            Standing::Anonymous => self
                .relay
                .settings()
                .auth
                .as_ref()
                .is_some_and(|auth| auth.anonymous.allows(room, permission)),
            Standing::User(user) => user.grants.allows(room, permission),
        }
    }

    /// Ends the connection with `reason`.
    fn end(&self, reason: CloseReason) {
        self.connection.queue.end(End::Relay(reason));
    }

    async fn join(&mut self, room: String, name: &str, since: Option<&Position>) {
        let max_name_chars = self.relay.settings().limits.max_name_chars;
        // An authenticated connection is called what its token says.
        let token_name = match &self.standing {
            Standing::User(user) => Some(user.name.clone()),
            _ => None,
        };
        let checked = validate_room(&room).and_then(|()| match &token_name {
            Some(_) => Ok(()),
            None => validate_name(name, max_name_chars),
        });
        if let Err(err) = checked {
            return self.refuse(err, None, Some(room));
        }
        if !self.allowed(&room, Permission::Read) {
            return self.refuse(
                forbidden("your token does not grant `read` in this room"),
                None,
                Some(room),
            );
        }
        let name = token_name.as_deref().unwrap_or(name);
        if self.membership(&room).is_some() {
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

    /// Joins a room, reading history from the engine (outside every lock) when the client's
    /// position is older than what the room keeps in memory.
    async fn enter(&mut self, room: String, name: &str, since: Option<&Position>) {
        // One copy of the name, shared by this membership, the room's member list and every
        // message sent under it.
        let name: Arc<str> = Arc::from(name);
        let joining = self.relay.join(&self.connection, &room, &name, since).await;
        let (joined, catch_up) = match joining {
            Ok(joined) => joined,
            Err(err) => return self.engine_failed(&err, room),
        };
        if let Some(catch_up) = catch_up {
            joined.catch_up(&self.connection.queue, catch_up).await;
        }
        let membership = Membership { room: joined, name };
        self.rooms.push(membership);
    }

    fn engine_failed(&self, err: &crate::engine::EngineError, room: String) {
        tracing::error!(%err, room, "cannot open room");
        let refusal = ProtocolError::new(
            ErrorCode::StoreUnavailable,
            "the relay cannot read this room's history right now; try again",
        );
        self.refuse(refusal, None, Some(room));
    }

    fn leave(&mut self, room: String) {
        let index = self.rooms.iter().position(|m| m.room.name() == room);
        match index.map(|index| self.rooms.swap_remove(index)) {
            Some(membership) => {
                self.relay.leave(&self.connection, &membership.room);
                self.send(&ServerMessage::Left { room });
            }
            None => self.refuse(not_joined(), None, Some(room)),
        }
    }

    fn publish(&mut self, room: String, id: String, text: String) {
        let max_text_chars = self.relay.settings().limits.max_text_chars;
        let checked = validate_client_id(&id).and_then(|()| validate_text(&text, max_text_chars));
        if let Err(err) = checked {
            return self.refuse(err, Some(id), Some(room));
        }
        if self.membership(&room).is_none() {
            return self.refuse(not_joined(), Some(id), Some(room));
        }
        if !self.allowed(&room, Permission::Write) {
            let err = forbidden("your token does not grant `write` in this room");
            return self.refuse(err, Some(id), Some(room));
        }
        let Some(membership) = self.membership(&room) else {
            return;
        };
        // The ack (or a refusal) comes from the room once the message is stored and synced.
        membership.room.publish(Publication {
            origin: self.connection.id,
            source: Source::Typed,
            from: membership.name.clone(),
            text: Utf8Bytes::from(text),
            id: Some(id),
            answer_to: Some(AnswerTo::Queue(self.connection.queue.clone())),
        });
    }

    /// Renames this connection in every room it is in: each room updates its member list
    /// and tells its typed members (this connection included) with `member_renamed`; later
    /// messages carry the new name. Nothing changes on a refusal: an invalid name, or no
    /// room to be renamed in (names are per room, given with `join`).
    fn rename(&mut self, name: &str) {
        if matches!(self.standing, Standing::User(_)) {
            let err = forbidden("an authenticated connection is called what its token says");
            return self.refuse(err, None, None);
        }
        let max_name_chars = self.relay.settings().limits.max_name_chars;
        if let Err(err) = validate_name(name, max_name_chars) {
            return self.refuse(err, None, None);
        }
        if self.rooms.is_empty() {
            let err = ProtocolError::new(
                ErrorCode::NotJoined,
                "join a room first: a name is given with each join, and rename changes it \
                 in every room joined",
            );
            return self.refuse(err, None, None);
        }
        // One copy of the new name, shared as at a join.
        let name: Arc<str> = Arc::from(name);
        for membership in &mut self.rooms {
            membership.room.rename_member(self.connection.id, &name);
            membership.name = name.clone();
        }
    }

    /// A plain client's frame: relayed byte for byte to every other plain client, whatever
    /// it holds (empty, white space only, as long as a frame may be), as the server the plain
    /// endpoint replaces did. Only the frame limit bounds it (`--max-message-bytes`, enforced
    /// by the framing: close 1009); the typed protocol's text rules (`validate_text`) are not
    /// applied. Typed lobby members get the same text in their `message` frame.
    fn on_plain_text(&mut self, text: Utf8Bytes) {
        if !self.allowed(DEFAULT_ROOM, Permission::Write) {
            let err = forbidden("this relay lets plain clients read only");
            return self.refuse(err, None, None);
        }
        let Some(lobby) = self.membership(DEFAULT_ROOM) else {
            // The lobby could not be opened (the store failed); that was already reported.
            return;
        };
        lobby.room.publish(Publication {
            origin: self.connection.id,
            source: Source::Plain,
            from: lobby.name.clone(),
            text,
            id: None,
            answer_to: None,
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
                .queue
                .push(Utf8Bytes::from(format!("relay error {err}"))),
        }
    }

    fn membership(&self, room: &str) -> Option<&Membership> {
        self.rooms.iter().find(|m| m.room.name() == room)
    }

    fn send(&self, message: &ServerMessage) {
        self.connection.queue.push(encode(message));
    }
}

impl Drop for Session {
    /// Leaves every room, telling their members.
    fn drop(&mut self) {
        for membership in self.rooms.drain(..) {
            self.relay.leave(&self.connection, &membership.room);
        }
    }
}

fn forbidden(why: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::Forbidden, why)
}

/// The close text for a refused token (a close frame's reason holds at most 123 bytes).
fn refusal_text(err: &TokenError) -> &'static str {
    match err {
        TokenError::Expired => "token expired",
        TokenError::NotYetValid => "token refused: not valid yet",
        TokenError::BadSignature => "token refused: bad signature",
        TokenError::Algorithm => "token refused: algorithm not accepted",
        TokenError::WrongAudienceOrIssuer => "token refused: wrong audience or issuer",
        TokenError::Malformed(_) => "token refused: malformed",
    }
}

fn not_joined() -> ProtocolError {
    ProtocolError::new(ErrorCode::NotJoined, "join the room first")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::RelaySettings;

    #[tokio::test]
    async fn an_idle_connection_holds_a_small_session() {
        let relay = Relay::in_memory(RelaySettings::default());
        for kind in [ClientKind::Typed, ClientKind::Plain] {
            let session = Session::open(relay.clone(), kind, SessionSettings::default()).await;
            let (socket, _client) = tokio::io::duplex(64);
            let frames = FrameReader::new(512, 65_536);
            let future = run(socket, frames, session, CancellationToken::new());
            // Every connection's task holds this future for the connection's whole life,
            // in a task of the upgrade's and tokio's making that jemalloc rounds up to a
            // size class: 1,536 bytes now, where with a message's handling inline (this
            // future then 2,100 bytes) it took 2,560, a thousand bytes more per idle
            // connection. So that handling is boxed, once per message. 1,376 bytes when
            // this was written, with the task just inside its class: growth here soon
            // costs every connection 256 bytes more. A tripwire: this is the test build's
            // layout, and what counts is the release build's task; if a compiler upgrade
            // trips it, measure idle connections (`relay-bench idle`) before raising it.
            let size = std::mem::size_of_val(&future);
            assert!(
                size <= 1_400,
                "{kind:?}: the session's future is {size} bytes; see the comment above"
            );
        }
    }
}
