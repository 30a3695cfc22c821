//! `POST /api/publish` and `POST /api/broadcast`.
//!
//! A publication goes through the same path as a WebSocket client's `send`: the room's
//! engine numbers, de-duplicates and stores it, the room delivers it in offset order, and
//! the answer comes once the message is delivered and synced (under `--durability full`,
//! fsynced). The idempotency key is the message's client id, so the same key in the same
//! room publishes once for as long as the room keeps the message, across restarts, and a
//! WebSocket client's id and an application's key cannot collide unnoticed: a key reused
//! for a different text or sender is answered 409.

use std::sync::Arc;

use axum::{
    Json,
    body::Body,
    extract::{State, ws::Utf8Bytes},
    http::{HeaderValue, header},
    response::Response,
};
use common::{
    ErrorCode,
    api::{
        BroadcastResponse, BroadcastResult, DEFAULT_SENDER, Published, parse_broadcast,
        parse_publish,
    },
};
use futures_util::future::join_all;
use tokio::sync::oneshot;

use super::{ApiError, ApiState, read_body};
use crate::{
    engine::Source,
    json::JsonWriter,
    relay::{AnswerTo, Outcome, Publication, Relay},
};

/// One text, its sender and its key, as every room of a request publishes it.
struct Message {
    from: Arc<str>,
    text: Utf8Bytes,
    key: Option<String>,
}

pub async fn publish(State(api): State<ApiState>, body: Body) -> Result<Response, ApiError> {
    let body = read_body(body, api.max_body()).await?;
    let request = parse_publish(&body, &api.config.limits)?;
    let message = api.message(request.text, request.from, request.idempotency_key)?;
    let published = publish_in(&api.relay, request.room, &message).await?;
    let mut response = Response::new(Body::from(answer(&published)));
    let json = HeaderValue::from_static("application/json");
    response.headers_mut().insert(header::CONTENT_TYPE, json);
    Ok(response)
}

/// The body of a publish's answer: `Json(published)`'s, written by hand (`crate::json`),
/// since it is written for every publish.
fn answer(published: &Published) -> String {
    let mut json = JsonWriter::with_capacity(published.room.len() + published.epoch.len());
    let Published {
        room,
        epoch,
        offset,
        ts,
        duplicate,
    } = published;
    json.raw("{");
    json.stored_at(room, epoch, *offset, *ts, *duplicate);
    json.raw("}");
    json.finish()
}

pub async fn broadcast(
    State(api): State<ApiState>,
    body: Body,
) -> Result<Json<BroadcastResponse>, ApiError> {
    let body = read_body(body, api.max_body()).await?;
    let request = parse_broadcast(&body, &api.config.limits)?;
    let message = api.message(request.text, request.from, request.idempotency_key)?;
    // Each room on its own: one room's failure does not hold back or undo the others.
    let results = join_all(request.rooms.into_iter().map(|room| async {
        match publish_in(&api.relay, room.clone(), &message).await {
            Ok(published) => BroadcastResult::Published(published),
            Err(err) => BroadcastResult::Failed {
                room,
                error: err.body().clone(),
            },
        }
    }))
    .await;
    Ok(Json(BroadcastResponse { results }))
}

impl ApiState {
    /// Largest request body: a text at the message limit however a JSON encoder escapes
    /// it (`\u0001` is six bytes for one), with room for the other fields.
    pub(super) fn max_body(&self) -> usize {
        6 * self.config.max_message_bytes + 16 * 1024
    }

    /// Checks the one rule the shared validation cannot know (the byte limit), and builds
    /// the message.
    fn message(
        &self,
        text: String,
        from: Option<String>,
        key: Option<String>,
    ) -> Result<Message, ApiError> {
        let limit = self.config.max_message_bytes;
        if text.len() > limit {
            return Err(ApiError::new(
                ErrorCode::TextTooLong,
                format!("the text is over {limit} bytes (--max-message-bytes)"),
            ));
        }
        Ok(Message {
            from: Arc::from(from.as_deref().unwrap_or(DEFAULT_SENDER)),
            text: Utf8Bytes::from(text),
            key,
        })
    }
}

/// Publishes `message` into `room` and waits until it is stored (or known a duplicate).
async fn publish_in(relay: &Relay, room: String, message: &Message) -> Result<Published, ApiError> {
    let lease = relay
        .lease(&room)
        .await
        .map_err(|err| ApiError::store(&err))?;
    let (answer, outcome) = oneshot::channel();
    lease.publish(Publication {
        origin: 0,
        source: Source::Api,
        from: message.from.clone(),
        text: message.text.clone(),
        id: message.key.clone(),
        answer_to: Some(AnswerTo::Caller(answer)),
    });
    match outcome.await {
        Ok(Outcome::Acked {
            offset,
            ts,
            duplicate,
        }) => {
            if duplicate {
                same_as_original(relay, &room, offset, message).await?;
            }
            Ok(Published {
                epoch: lease.epoch().to_owned(),
                room,
                offset,
                ts,
                duplicate,
            })
        }
        // The room drops an answer only if the relay is going away.
        Ok(Outcome::NotStored) | Err(_) => Err(ApiError::new(
            ErrorCode::StoreUnavailable,
            "the message could not be stored, so it was not published; retry (with the \
             same idempotency_key, it is never published twice)",
        )),
        Ok(Outcome::NotSynced) => Err(ApiError::new(
            ErrorCode::StoreUnavailable,
            "the message was published but could not be made durable; retry with the same \
             idempotency_key (it is not published twice)",
        )),
    }
}

/// A duplicate key must name the same message: same text, same sender. Otherwise the
/// caller reused a key for something else, and is told (409) rather than answered with
/// another message's position.
async fn same_as_original(
    relay: &Relay,
    room: &str,
    offset: u64,
    message: &Message,
) -> Result<(), ApiError> {
    let original = relay
        .engine()
        .read(room, offset - 1, offset)
        .await
        .map_err(|err| ApiError::store(&err))?;
    match original.first() {
        Some(entry) if entry.text != message.text || entry.from != message.from => {
            Err(ApiError::new(
                ErrorCode::IdempotencyConflict,
                format!(
                    "idempotency_key was already used in room `{room}` for a different \
                     message (offset {offset}); use a new key for a new message"
                ),
            ))
        }
        // The same message, or already pruned (nothing left to differ from).
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::json::any_text;

    proptest! {
        #[test]
        fn the_answer_is_written_as_serde_writes_it(
            room in any_text(),
            epoch in any_text(),
            offset in any::<u64>(),
            ts in any::<u64>(),
            duplicate in any::<bool>(),
        ) {
            let published = Published { room, epoch, offset, ts, duplicate };
            prop_assert_eq!(answer(&published), serde_json::to_string(&published).unwrap());
        }
    }
}
