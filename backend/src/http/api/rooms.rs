//! Reading the relay: rooms, a room's history and presence, relay-wide stats; and closing
//! a connection.

use axum::{
    Json,
    body::Body,
    extract::{
        Path, Query, State,
        rejection::{PathRejection, QueryRejection},
    },
};
use common::{
    ChatMessage, ErrorCode,
    api::{
        DEFAULT_HISTORY_LIMIT, Disconnected, HistoryPage, MAX_HISTORY_LIMIT, Presence, RoomInfo,
        RoomList, Stats, parse_disconnect,
    },
    validate_room,
};
use serde::Deserialize;

use super::{ApiError, ApiState, read_body};
use crate::engine::{Disconnect, Entry, Source};

/// `GET /api/rooms`.
pub async fn list(State(api): State<ApiState>) -> Json<RoomList> {
    let rooms = api
        .relay
        .open_rooms()
        .iter()
        .map(|room| {
            let (members, top) = room.counts();
            RoomInfo {
                room: room.name().to_owned(),
                epoch: room.epoch().to_owned(),
                members,
                top,
            }
        })
        .collect();
    Json(RoomList { rooms })
}

/// `GET /api/rooms/{room}/presence`.
pub async fn presence(
    State(api): State<ApiState>,
    room: Result<Path<String>, PathRejection>,
) -> Result<Json<Presence>, ApiError> {
    let room = room_name(room)?;
    let members = api
        .relay
        .open_room(&room)
        .map(|open| open.members())
        .unwrap_or_default();
    Ok(Json(Presence { room, members }))
}

/// `GET /api/stats`.
pub async fn stats(State(api): State<ApiState>) -> Json<Stats> {
    let relay = &api.relay;
    let (messages_published, deliveries, duplicates) = relay.metrics().totals();
    Json(Stats {
        connections: relay.open_connections(),
        rooms: relay.room_count(),
        messages_published,
        deliveries,
        duplicates,
    })
}

/// `POST /api/disconnect`: closes the connection, or every connection of the user, with
/// 4002, which tells the client not to reconnect on its own.
pub async fn disconnect(
    State(api): State<ApiState>,
    body: Body,
) -> Result<Json<Disconnected>, ApiError> {
    let body = read_body(body, api.max_body()).await?;
    let request = parse_disconnect(&body)?;
    let (target, what) = match (request.connection, request.user) {
        (Some(connection), _) => (
            Disconnect::Connection(connection),
            format!("connection {connection}"),
        ),
        (None, Some(user)) => {
            let what = format!("user `{user}`");
            (Disconnect::User(user), what)
        }
        (None, None) => {
            return Err(ApiError::new(ErrorCode::NotFound, "no connection named"));
        }
    };
    // On every relay process sharing the engine (with Redis), not only this one.
    let disconnected = api.relay.disconnect(target).await;
    if disconnected == 0 {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no connection of {what} is open"),
        ));
    }
    Ok(Json(Disconnected { disconnected }))
}

/// The query of a history request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Messages after this offset; without it, the newest `limit`.
    after: Option<u64>,
    /// The epoch `after` belongs to; another epoch is answered 416.
    epoch: Option<String>,
    /// Most messages in the page.
    limit: Option<u64>,
}

/// `GET /api/rooms/{room}/history`: a page of messages, oldest first, never with a gap.
///
/// Without `after`: the newest `limit` messages. With `after` (and, to be safe, the
/// `epoch` it was seen in): the messages after it, up to `limit`, with `more` telling
/// whether another page follows. A position that cannot be served whole (another epoch,
/// pruned by retention, past the newest message) is answered 416 with what the room has,
/// never with a partial page.
pub async fn history(
    State(api): State<ApiState>,
    room: Result<Path<String>, PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<HistoryPage>, ApiError> {
    let room = room_name(room)?;
    let Query(query) =
        query.map_err(|err| ApiError::new(ErrorCode::InvalidMessage, err.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
    if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidMessage,
            format!("limit must be 1 to {MAX_HISTORY_LIMIT}"),
        ));
    }
    let relay = &api.relay;
    // Held while reading: a room of the memory engine keeps history only while open.
    let lease = relay
        .lease(&room)
        .await
        .map_err(|err| ApiError::store_read(&err))?;
    let epoch = lease.epoch().to_owned();
    let (_, top) = lease.counts();
    let engine = relay.engine();
    let unavailable = |why: String| async {
        let oldest = engine
            .oldest(&room)
            .await
            .map_err(|err| ApiError::store_read(&err))?;
        Err(ApiError::history_unavailable(
            why,
            &epoch,
            oldest.unwrap_or(top + 1),
            top,
        ))
    };
    let (after, until) = match query.after {
        None => (top.saturating_sub(limit), top),
        Some(after) => {
            if let Some(asked) = &query.epoch
                && *asked != epoch
            {
                return unavailable(format!(
                    "epoch `{asked}` is not the room's current epoch: its offsets no longer \
                     name the same messages; start again from the newest"
                ))
                .await;
            }
            if after > top {
                return unavailable(format!("offset {after} is past the newest, {top}")).await;
            }
            (after, top.min(after + limit))
        }
    };
    let entries = engine
        .read(&room, after, until)
        .await
        .map_err(|err| ApiError::store_read(&err))?;
    let whole = entries.len() as u64 == until - after
        && entries
            .first()
            .is_none_or(|first| first.offset == after + 1);
    if query.after.is_some() && !whole {
        return unavailable(format!(
            "messages after offset {after} are no longer kept (retention)"
        ))
        .await;
    }
    let messages = entries
        .into_iter()
        .map(|entry| chat_message(&room, &epoch, entry))
        .collect();
    Ok(Json(HistoryPage {
        room,
        epoch,
        top,
        messages,
        more: until < top,
    }))
}

/// A stored entry as the protocol's `message`.
fn chat_message(room: &str, epoch: &str, entry: Entry) -> ChatMessage {
    ChatMessage {
        room: room.to_owned(),
        epoch: epoch.to_owned(),
        offset: entry.offset,
        from: entry.from.to_string(),
        text: entry.text.to_string(),
        ts: entry.ts,
        id: entry.client_id,
        api: entry.source == Source::Api,
    }
}

/// The `{room}` of a path, checked like every room name.
fn room_name(room: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(room) = room.map_err(|err| ApiError::new(ErrorCode::InvalidRoom, err.body_text()))?;
    validate_room(&room)?;
    Ok(room)
}
