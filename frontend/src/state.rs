//! The chat's state and every rule for changing it, with no DOM and no socket, so all of it is
//! tested natively.
//!
//! The UI only ever changes *what the user wants* (rooms open, display name, messages to
//! send); [`ChatState::sync`] then works out which protocol frames bring one live connection
//! (a [`Link`]) in line with that. Because a fresh `Link` starts empty, the same function
//! re-joins every room (with the last position seen, so the relay replays what was missed)
//! and resends every unacknowledged message after a reconnect; nothing special-cases it.

use crate::format::{GROUP_WINDOW_MS, local_day};
use common::{
    ChatMessage, ClientMessage, DEFAULT_ROOM, ErrorCode, Limits, Member, Position, ProtocolError,
    Recovery, ServerMessage, close_code, validate_name, validate_room, validate_text,
};

/// Entries kept per room; older ones are dropped from view.
pub const MAX_ENTRIES_PER_ROOM: usize = 500;

/// Longest text the composer sends, whatever larger limit the relay announces: the relay's
/// limit is sized for pushed payloads, and a chat line this long still fits a frame with
/// room to spare (a `send` over `--max-message-bytes` would be closed with 1009, and the
/// outbox would resend it after every reconnect).
pub const COMPOSER_MAX_CHARS: usize = 4096;

/// The state of the connection to the relay, as shown to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// Opening a socket.
    Connecting,
    /// Connected and welcomed.
    Online,
    /// Disconnected; the next attempt starts after this many milliseconds.
    Offline {
        /// Delay before the next attempt.
        retry_in_ms: u32,
    },
}

/// Whether the user is signed in, as shown to the user. Only a page configured with a token
/// URL signs in; every other page is [`Access::Anonymous`] throughout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No sign-in: the relay requires no token, or the page has no token URL.
    Anonymous,
    /// Getting a token, or waiting for the relay to accept it.
    SigningIn,
    /// The relay accepted the token: the name shown is the token's.
    SignedIn,
    /// The token URL answered 401 or 403: the user is not signed in to the application.
    SignedOut,
    /// The relay closed the connection because the token ran out (close 4003); a fresh one
    /// is on its way.
    Expired,
    /// The relay refused the token (close 4004).
    Refused,
}

/// Everything the UI shows and the connection needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatState {
    /// The user's display name, used for every room.
    pub name: String,
    /// Rooms the user has open, in the order they were opened.
    pub rooms: Vec<RoomView>,
    /// The room shown in the message pane.
    pub active_room: String,
    /// Messages accepted from the user but not yet acknowledged by the relay, oldest first.
    pub outbox: Vec<PendingMessage>,
    /// Connection state, for the status badge.
    pub status: ConnectionStatus,
    /// Limits announced by the relay (defaults until the first `welcome`).
    pub limits: Limits,
    /// Our connection id on the relay, once welcomed.
    pub connection: Option<u64>,
    /// The relay was lost and is not back yet (the outage banner shows while this is set).
    pub outage: bool,
    /// The page is hidden (another tab is in front): messages in the room on screen count
    /// as unread too.
    pub away: bool,
    /// Minutes the browser's time zone is ahead of UTC, for day separators.
    pub utc_offset_min: i32,
    /// Whether the user is signed in.
    pub access: Access,
    /// The name is the one the user's token gives (it cannot be changed here).
    pub verified_name: bool,
    /// Prefix shared by every tab of this browser: messages whose id starts with it are ours.
    browser_key: String,
    /// Prefix for this tab's message ids, unique per tab.
    id_prefix: String,
    /// Counter for message ids.
    next_id: u64,
    /// Counter for entry keys, unique across rooms.
    next_key: u64,
}

/// One open room.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomView {
    /// Room name.
    pub name: String,
    /// Messages and notices in display order.
    pub entries: Vec<Entry>,
    /// Current members, as the relay last said.
    pub members: Vec<Member>,
    /// The last message seen, sent back on reconnect so the relay can fill the gap.
    pub position: Option<Position>,
    /// Messages that arrived while another room was shown.
    pub unread: u32,
    /// The relay refused to let us in (error `forbidden` to `join`): the user's token does
    /// not grant reading it.
    pub forbidden: bool,
    /// The relay refused a message here (error `forbidden` to `send`): the user may read but
    /// not write.
    pub read_only: bool,
}

/// A line in a room's log.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Unique, stable key for keyed rendering.
    pub key: u64,
    /// What the line shows.
    pub kind: EntryKind,
}

/// The kinds of line in a room's log.
#[derive(Debug, Clone, PartialEq)]
pub enum EntryKind {
    /// A chat message.
    Message {
        /// Sender's display name.
        from: String,
        /// Text, shown as text.
        text: String,
        /// Server time, milliseconds since the Unix epoch.
        ts: u64,
        /// Sent from this browser (any tab).
        own: bool,
        /// Published by an application through the relay's HTTP API, not by a person.
        api: bool,
        /// Follows a message by the same sender, on the same day and within
        /// [`GROUP_WINDOW_MS`]: shown as part of that message's group.
        grouped: bool,
        /// The first message of its (local) day in this log: a day separator goes before it.
        new_day: bool,
    },
    /// Something that happened: a join, a leave, a gap, an error.
    Notice {
        /// What happened.
        text: String,
        /// How to show it.
        level: NoticeLevel,
    },
}

/// A row of the message log.
#[derive(Debug, Clone, PartialEq)]
pub enum LogRow {
    /// A line of the room's history.
    Line(Entry),
    /// A message of ours the relay has not acknowledged yet.
    Pending(PendingMessage),
}

/// What keeps a log row's DOM node stable across updates: `(Entry::key, "")` for a line of
/// history, `(0, PendingMessage::id)` for a pending message (entry keys start at 1, so the
/// two never meet). Every keyed list on the page uses this one `(number, text)` shape (rooms
/// `(0, name)`, members `(connection, name)`), so the keyed-diff code is compiled only once.
pub type LogRowKey = (u64, String);

impl LogRow {
    /// The row's key for keyed rendering.
    pub fn key(&self) -> LogRowKey {
        match self {
            LogRow::Line(entry) => (entry.key, String::new()),
            LogRow::Pending(pending) => (0, pending.id.clone()),
        }
    }
}

/// How prominent a notice is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeLevel {
    /// Joins and leaves.
    Info,
    /// Possible gaps in history.
    Warning,
    /// Refused requests.
    Error,
}

/// A message waiting for its acknowledgement. Kept in `localStorage` too, so it survives a
/// reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMessage {
    /// Client message id: resends use the same one, so the relay can drop duplicates.
    pub id: String,
    /// Room it is for.
    pub room: String,
    /// Its text.
    pub text: String,
    /// It may have reached the relay already (it was sent on an earlier connection, or comes
    /// from an earlier page): sent again with `resend`, so the relay checks its history.
    pub sent_before: bool,
}

/// What one live connection has been told so far. Starts empty for every new socket.
/// Plain vectors: a handful of rooms and messages, and no hash tables in the wasm.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Link {
    /// Rooms joined on this connection, with the name used.
    joined: Vec<(String, String)>,
    /// Message ids already sent on this connection (and still in the outbox).
    sent: Vec<String>,
}

impl Link {
    fn joined_as(&self, room: &str) -> Option<&str> {
        self.joined
            .iter()
            .find(|(joined, _)| joined == room)
            .map(|(_, name)| name.as_str())
    }
}

impl ChatState {
    /// A new state with the lobby open. `browser_key` is shared by the browser's tabs,
    /// `tab_key` is unique to this tab.
    pub fn new(name: String, browser_key: &str, tab_key: &str) -> Self {
        ChatState {
            name,
            rooms: vec![RoomView::new(DEFAULT_ROOM)],
            active_room: DEFAULT_ROOM.to_owned(),
            outbox: Vec::new(),
            status: ConnectionStatus::Connecting,
            limits: Limits::default(),
            connection: None,
            outage: false,
            away: false,
            utc_offset_min: 0,
            access: Access::Anonymous,
            verified_name: false,
            browser_key: browser_key.to_owned(),
            id_prefix: format!("{browser_key}{tab_key}-"),
            next_id: 1,
            next_key: 1,
        }
    }

    /// The room shown in the message pane.
    pub fn active(&self) -> Option<&RoomView> {
        self.room(&self.active_room)
    }

    /// An open room by name.
    pub fn room(&self, name: &str) -> Option<&RoomView> {
        self.rooms.iter().find(|r| r.name == name)
    }

    fn room_mut(&mut self, name: &str) -> Option<&mut RoomView> {
        self.rooms.iter_mut().find(|r| r.name == name)
    }

    /// Pending messages of the active room.
    pub fn pending_in_active(&self) -> impl Iterator<Item = &PendingMessage> {
        self.outbox.iter().filter(|p| p.room == self.active_room)
    }

    /// The message log of the room on screen: its history, then our messages still on
    /// their way. One list, so the page renders it with a single keyed loop.
    pub fn log_rows(&self) -> Vec<LogRow> {
        let history = self.active().into_iter().flat_map(|room| &room.entries);
        history
            .cloned()
            .map(LogRow::Line)
            .chain(self.pending_in_active().cloned().map(LogRow::Pending))
            .collect()
    }

    /// Checks a draft against the room's permissions (error `forbidden`) and the relay's
    /// limits without queuing it.
    pub fn check_draft(&self, text: &str) -> Result<(), ProtocolError> {
        let refused = |why: &str| Err(ProtocolError::new(ErrorCode::Forbidden, why));
        match self.active() {
            Some(room) if room.forbidden => refused("You are not allowed in this room."),
            Some(room) if room.read_only => refused("You can read this room but not write in it."),
            _ => validate_text(text, self.limits.max_text_chars.min(COMPOSER_MAX_CHARS)),
        }
    }

    /// Queues `text` for the active room. It stays in the outbox (and on screen as pending)
    /// until the relay acknowledges it, across reconnects. Returns its id.
    pub fn queue_message(&mut self, text: &str) -> Result<String, ProtocolError> {
        self.check_draft(text)?;
        let id = format!("{}{}", self.id_prefix, self.next_id);
        self.next_id += 1;
        self.outbox.push(PendingMessage {
            id: id.clone(),
            room: self.active_room.clone(),
            text: text.to_owned(),
            sent_before: false,
        });
        Ok(id)
    }

    /// Opens (or switches to) a room.
    pub fn open_room(&mut self, room: &str) -> Result<(), ProtocolError> {
        validate_room(room)?;
        if self.room(room).is_none() {
            self.rooms.push(RoomView::new(room));
        }
        self.show_room(room);
        Ok(())
    }

    /// Shows an open room and clears its unread count.
    pub fn show_room(&mut self, room: &str) {
        if let Some(view) = self.room_mut(room) {
            view.unread = 0;
            self.active_room = room.to_owned();
        }
    }

    /// Messages in the outbox for `room`: closing it would drop them.
    pub fn unsent_in(&self, room: &str) -> usize {
        self.outbox.iter().filter(|p| p.room == room).count()
    }

    /// Unread messages over all rooms, for the tab title.
    pub fn total_unread(&self) -> u32 {
        self.rooms.iter().map(|r| r.unread).sum()
    }

    /// The page was hidden (`true`) or shown again: coming back reads the room on screen.
    pub fn set_away(&mut self, away: bool) {
        self.away = away;
        if !away {
            let room = self.active_room.clone();
            self.show_room(&room);
        }
    }

    /// Closes a room (never the last one), dropping its unsent messages (the page asks
    /// first, see [`ChatState::unsent_in`]).
    pub fn close_room(&mut self, room: &str) {
        if self.rooms.len() <= 1 {
            return;
        }
        self.rooms.retain(|r| r.name != room);
        self.outbox.retain(|p| p.room != room);
        if self.active_room == room {
            self.active_room = self.rooms[0].name.clone();
        }
    }

    /// Checks a display name against the relay's limits.
    pub fn check_name(&self, name: &str) -> Result<(), ProtocolError> {
        validate_name(name, self.limits.max_name_chars)
    }

    /// Changes the display name in every open room: one `rename` to the relay.
    pub fn rename(&mut self, name: &str) -> Result<(), ProtocolError> {
        if self.verified_name {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                "your name comes from your sign-in",
            ));
        }
        self.check_name(name)?;
        self.name = name.to_owned();
        Ok(())
    }

    /// Takes over messages an earlier page left unacknowledged (read back from storage).
    /// They may have reached the relay, so they go out as resends; ids already queued are
    /// skipped.
    pub fn adopt(&mut self, orphans: Vec<PendingMessage>) {
        for mut orphan in orphans {
            if self.outbox.iter().all(|p| p.id != orphan.id) {
                orphan.sent_before = true;
                if self.room(&orphan.room).is_none() {
                    self.rooms.push(RoomView::new(&orphan.room));
                }
                self.outbox.push(orphan);
            }
        }
    }

    /// Frames that bring `link` in line with what the user wants: leave closed rooms, join
    /// open ones (or rename in them), then send messages not yet sent on this link.
    pub fn sync(&mut self, link: &mut Link) -> Vec<ClientMessage> {
        let mut frames = Vec::new();
        if link.joined.iter().any(|(_, name)| *name != self.name) {
            link.joined
                .iter_mut()
                .for_each(|(_, name)| name.clone_from(&self.name));
            // The relay calls a signed-in connection by its token's name, whatever it was
            // called before: nothing to rename.
            if !self.verified_name {
                frames.push(ClientMessage::Rename {
                    name: self.name.clone(),
                });
            }
        }
        let (kept, stale): (Vec<_>, Vec<_>) = std::mem::take(&mut link.joined)
            .into_iter()
            .partition(|(room, name)| self.room(room).is_some() && *name == self.name);
        link.joined = kept;
        for (room, _) in stale {
            frames.push(ClientMessage::Leave { room });
        }
        for room in &self.rooms {
            if link.joined_as(&room.name).is_none() {
                link.joined.push((room.name.clone(), self.name.clone()));
                frames.push(ClientMessage::Join {
                    room: room.name.clone(),
                    name: self.name.clone(),
                    since: room.position.clone(),
                });
            }
        }
        // Forget ids no longer pending, so the list stays as short as the outbox.
        link.sent
            .retain(|id| self.outbox.iter().any(|p| &p.id == id));
        for pending in &mut self.outbox {
            let unsent = !link.sent.contains(&pending.id);
            if link.joined_as(&pending.room).is_some() && unsent {
                link.sent.push(pending.id.clone());
                frames.push(ClientMessage::Send {
                    room: pending.room.clone(),
                    id: pending.id.clone(),
                    text: pending.text.clone(),
                    resend: pending.sent_before,
                });
                pending.sent_before = true;
            }
        }
        frames
    }

    /// The connection dropped; the next attempt is in `retry_in_ms`. The member lists are
    /// kept as the last known ones (shown as such while offline); the relay sends fresh
    /// lists on re-join.
    pub fn disconnected(&mut self, retry_in_ms: u32) {
        self.status = ConnectionStatus::Offline { retry_in_ms };
        self.outage = true;
    }

    /// The relay closed the connection with `code`: a token that ran out or was refused is
    /// shown as such until the next sign-in.
    pub fn closed_with(&mut self, code: u16) {
        match code {
            close_code::TOKEN_EXPIRED => self.access = Access::Expired,
            close_code::AUTH_REFUSED => self.access = Access::Refused,
            _ => {}
        }
    }

    /// Getting a token (or presenting it) for a new connection.
    pub fn signing_in(&mut self) {
        // What went wrong last time stays on screen until this attempt is through.
        if matches!(self.access, Access::Anonymous | Access::SignedIn) {
            self.access = Access::SigningIn;
        }
    }

    /// The application says the user is not signed in (its token URL answered 401 or 403).
    pub fn signed_out(&mut self) {
        self.access = Access::SignedOut;
    }

    /// Applies one event from the relay.
    pub fn apply(&mut self, event: ServerMessage) {
        match event {
            ServerMessage::Welcome {
                connection, limits, ..
            } => {
                self.connection = Some(connection);
                self.limits = limits;
                self.status = ConnectionStatus::Online;
                self.outage = false;
            }
            ServerMessage::Joined {
                room,
                epoch,
                members,
                recovery,
                ..
            } => self.on_joined(&room, epoch, members, recovery),
            ServerMessage::Authenticated { user, name, .. } => {
                self.access = if user.is_some() {
                    Access::SignedIn
                } else {
                    Access::Anonymous
                };
                if let Some(name) = name {
                    self.name = name;
                    self.verified_name = true;
                }
            }
            ServerMessage::Left { .. } | ServerMessage::Pong => {}
            ServerMessage::Message(message) => self.on_message(message),
            ServerMessage::Ack { id, .. } => self.outbox.retain(|p| p.id != id),
            ServerMessage::MemberJoined { room, member } => {
                let text = format!("{} joined", member.name);
                if let Some(view) = self.room_mut(&room) {
                    // A user is one member, whichever of its connections left last.
                    view.members.retain(|m| match &member.user {
                        Some(user) => m.user.as_ref() != Some(user),
                        None => m.connection != member.connection,
                    });
                    view.members.push(member);
                }
                self.notice(&room, text, NoticeLevel::Info);
            }
            ServerMessage::MemberLeft { room, member } => {
                if let Some(view) = self.room_mut(&room) {
                    // A user is one member, whichever of its connections left last.
                    view.members.retain(|m| match &member.user {
                        Some(user) => m.user.as_ref() != Some(user),
                        None => m.connection != member.connection,
                    });
                }
                self.notice(&room, format!("{} left", member.name), NoticeLevel::Info);
            }
            ServerMessage::MemberRenamed {
                room,
                member,
                previous,
            } => {
                let text = format!("{previous} is now {}", member.name);
                if let Some(view) = self.room_mut(&room)
                    && let Some(known) = view
                        .members
                        .iter_mut()
                        .find(|m| m.connection == member.connection)
                {
                    *known = member;
                }
                self.notice(&room, text, NoticeLevel::Info);
            }
            ServerMessage::Error {
                code,
                message,
                id,
                room,
            } => self.on_error(code, &message, id, room),
        }
    }

    fn on_joined(&mut self, room: &str, epoch: String, members: Vec<Member>, recovery: Recovery) {
        let Some(view) = self.room_mut(room) else {
            return;
        };
        view.members = members;
        view.forbidden = false;
        let same_epoch = view.position.as_ref().is_some_and(|p| p.epoch == epoch);
        if !same_epoch {
            // A new history: offsets start over, so forget the old position.
            view.position = Some(Position { epoch, offset: 0 });
        }
        if recovery == Recovery::Unrecoverable {
            self.notice(
                room,
                "Reconnected, but some earlier messages may be missing.".to_owned(),
                NoticeLevel::Warning,
            );
        }
    }

    fn on_message(&mut self, message: ChatMessage) {
        if let Some(id) = &message.id {
            self.outbox.retain(|p| &p.id != id);
        }
        let own = message
            .id
            .as_deref()
            .is_some_and(|id| id.starts_with(&self.browser_key));
        let shown = self.active_room == message.room && !self.away;
        let offset = self.utc_offset_min;
        let key = self.next_key;
        let Some(view) = self.room_mut(&message.room) else {
            return;
        };
        let seen = view
            .position
            .as_ref()
            .is_some_and(|p| p.epoch == message.epoch && message.offset <= p.offset);
        if seen {
            return;
        }
        view.position = Some(Position {
            epoch: message.epoch,
            offset: message.offset,
        });
        if !shown {
            view.unread += 1;
        }
        let day = local_day(message.ts, offset);
        let previous = view.entries.iter().rev().find_map(|e| match &e.kind {
            EntryKind::Message { from, ts, .. } => Some((from, *ts)),
            EntryKind::Notice { .. } => None,
        });
        let new_day = previous.is_none_or(|(_, ts)| local_day(ts, offset) != day);
        let grouped = !new_day
            && matches!(view.entries.last(), Some(Entry { kind: EntryKind::Message { from, ts, .. }, .. })
                if *from == message.from && message.ts.saturating_sub(*ts) <= GROUP_WINDOW_MS);
        view.push(Entry {
            key,
            kind: EntryKind::Message {
                from: message.from,
                text: message.text,
                ts: message.ts,
                own,
                api: message.api,
                grouped,
                new_day,
            },
        });
        self.next_key += 1;
    }

    fn on_error(
        &mut self,
        code: ErrorCode,
        message: &str,
        id: Option<String>,
        room: Option<String>,
    ) {
        let mut text = format!("Relay error ({code}): {message}");
        let mut sent = false;
        if let Some(id) = id
            && let Some(index) = self.outbox.iter().position(|p| p.id == id)
        {
            let refused = self.outbox.remove(index);
            text = format!("Not sent: “{}” — {message}", refused.text);
            sent = true;
        }
        let room = room
            .filter(|r| self.room(r).is_some())
            .unwrap_or_else(|| self.active_room.clone());
        if code == ErrorCode::Forbidden
            && let Some(view) = self.room_mut(&room)
        {
            if sent {
                view.read_only = true;
            } else {
                // Shown in place of the room's messages; no notice needed.
                view.forbidden = true;
                return;
            }
        }
        self.notice(&room, text, NoticeLevel::Error);
    }

    fn notice(&mut self, room: &str, text: String, level: NoticeLevel) {
        let key = self.next_key;
        if let Some(view) = self.room_mut(room) {
            view.push(Entry {
                key,
                kind: EntryKind::Notice { text, level },
            });
            self.next_key += 1;
        }
    }
}

impl RoomView {
    fn new(name: &str) -> Self {
        RoomView {
            name: name.to_owned(),
            entries: Vec::new(),
            members: Vec::new(),
            position: None,
            unread: 0,
            forbidden: false,
            read_only: false,
        }
    }

    fn push(&mut self, entry: Entry) {
        if self.entries.len() == MAX_ENTRIES_PER_ROOM {
            self.entries.remove(0);
        }
        self.entries.push(entry);
    }
}

#[cfg(test)]
mod tests;
