//! The watcher: what other relay processes append to the rooms this process has open.
//!
//! One task owns a pub/sub connection subscribed to the `top` channel of every open room and
//! reports each `<epoch> <top>` it hears to the relay ([`TopWatcher`]), which reads and
//! delivers whatever it has not delivered yet. Pub/sub is at-most-once, so a lost
//! notification must never lose a message:
//!
//! - a room's current top is read right after subscribing to it, so an append made between
//!   the relay opening the room and the subscription is reported too;
//! - when the pub/sub connection drops (Redis restarted, the connection killed), the task
//!   reconnects, subscribes again and reads the top of every open room, reporting each;
//! - any later append reports a top at or past every earlier one, so a skipped notification
//!   is made good by the next.

use std::{collections::HashSet, time::Duration};

use futures_util::StreamExt;
use redis::{Client, Value, aio::ConnectionManager};
use tokio::sync::mpsc;

use super::{Keys, number, text};
use crate::engine::TopWatcher;

/// Pause before connecting again after the pub/sub connection failed.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// What the engine tells the watcher.
pub(super) enum Command {
    /// Report to this watcher from now on.
    Watch(TopWatcher),
    /// Start watching this room.
    Open(String),
    /// Stop watching it.
    Close(String),
}

/// Runs until the engine is dropped (its sender with it).
pub(super) async fn run(
    client: Client,
    mut redis: ConnectionManager,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut watcher: Option<TopWatcher> = None;
    let mut rooms: HashSet<String> = HashSet::new();
    loop {
        let pubsub = tokio::time::timeout(super::RESPONSE_TIMEOUT, client.get_async_pubsub()).await;
        let Ok(Ok(pubsub)) = pubsub else {
            tracing::warn!("cannot open the Redis pub/sub connection; trying again");
            // Keep up with the engine meanwhile, then try again.
            let pause = tokio::time::sleep(RECONNECT_PAUSE);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    () = &mut pause => break,
                    command = commands.recv() => match command {
                        Some(command) => apply(command, &mut watcher, &mut rooms),
                        None => return,
                    },
                }
            }
            continue;
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut subscribed = true;
        for room in &rooms {
            subscribed &= sink.subscribe(Keys::of(room).channel).await.is_ok();
        }
        if !subscribed {
            continue;
        }
        // Whatever was appended while nobody listened. If that cannot be read, start over.
        let mut reported = true;
        for room in &rooms {
            reported &= report_top(&mut redis, watcher.as_ref(), room).await;
        }
        if !reported {
            tokio::time::sleep(RECONNECT_PAUSE).await;
            continue;
        }
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        tracing::warn!("the Redis pub/sub connection dropped; reconnecting");
                        break;
                    };
                    let channel = message.get_channel_name().to_owned();
                    let payload: Option<String> = message.get_payload().ok();
                    if let (Some(room), Some(payload), Some(watcher)) =
                        (room_of(&channel), payload, &watcher)
                        && let Some((epoch, top)) = payload.split_once(' ')
                        && let Ok(top) = top.parse()
                    {
                        watcher(room, epoch, top);
                    }
                }
                command = commands.recv() => {
                    let Some(command) = command else {
                        return;
                    };
                    let ok = match &command {
                        Command::Open(room) if !rooms.contains(room) => {
                            sink.subscribe(Keys::of(room).channel).await.is_ok()
                        }
                        Command::Close(room) if rooms.contains(room) => {
                            sink.unsubscribe(Keys::of(room).channel).await.is_ok()
                        }
                        _ => true,
                    };
                    let opened = match &command {
                        Command::Open(room) => Some(room.clone()),
                        _ => None,
                    };
                    apply(command, &mut watcher, &mut rooms);
                    if !ok {
                        break;
                    }
                    if let Some(room) = opened
                        && !report_top(&mut redis, watcher.as_ref(), &room).await
                    {
                        // Read again, with every other room's, after reconnecting.
                        break;
                    }
                }
            }
        }
    }
}

fn apply(command: Command, watcher: &mut Option<TopWatcher>, rooms: &mut HashSet<String>) {
    match command {
        Command::Watch(new) => *watcher = Some(new),
        Command::Open(room) => {
            rooms.insert(room);
        }
        Command::Close(room) => {
            rooms.remove(&room);
        }
    }
}

/// Reads `room`'s epoch and top and reports them; false if Redis could not be read (the
/// caller reconnects and reads every room's top again).
async fn report_top(
    redis: &mut ConnectionManager,
    watcher: Option<&TopWatcher>,
    room: &str,
) -> bool {
    let Some(watcher) = watcher else {
        return true;
    };
    let state: Result<Vec<Value>, _> = redis::cmd("HMGET")
        .arg(Keys::of(room).meta)
        .arg("epoch")
        .arg("top")
        .query_async(redis)
        .await;
    let Ok(state) = state else {
        return false;
    };
    let mut state = state.into_iter();
    match (state.next().and_then(text), state.next().and_then(number)) {
        (Some(epoch), Some(top)) => watcher(room, &epoch, top),
        // No such room in Redis any more (it came back empty): no history at all, which
        // the relay takes as a lost one.
        (None, None) => watcher(room, "", 0),
        _ => {}
    }
    true
}

/// The room of a `relay:{room}:top` channel.
fn room_of(channel: &str) -> Option<&str> {
    let start = channel.find('{')? + 1;
    let end = channel[start..].find('}')? + start;
    Some(&channel[start..end])
}
