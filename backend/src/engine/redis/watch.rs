//! The watcher: what other relay processes append to the rooms this process has open.
//!
//! One task owns a pub/sub connection subscribed to the `top` and `presence` channels of
//! every open room. It reports each `<epoch> <top>` it hears to the relay ([`Watcher`]),
//! which reads and delivers whatever it has not delivered yet, and each member another node
//! reports joining, leaving or being renamed. Pub/sub is at-most-once, so a lost
//! notification must never lose a message (nor leave a member list wrong for long):
//!
//! - a room's current top and members are read right after subscribing to it, so an append
//!   or a join made between the relay opening the room and the subscription is reported too;
//! - when the pub/sub connection drops (Redis restarted, the connection killed), the task
//!   reconnects, subscribes again and reads the top and members of every open room;
//! - any later append reports a top at or past every earlier one, so a skipped notification
//!   is made good by the next.

use std::{collections::HashSet, time::Duration};

use futures_util::StreamExt;
use redis::Value;
use tokio::sync::mpsc;

use super::{
    CONTROL, ControlRequest, Job, Keys, PresenceNotice,
    deployment::{Deployment, Redis, hash_tag},
    number, text,
};
use crate::engine::{DisconnectHandler, Notice, Watcher};

/// Pause before connecting again after the pub/sub connection failed.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// What the engine tells the watcher.
pub(super) enum Command {
    /// Report to this watcher from now on.
    Watch(Watcher),
    /// Carry out other nodes' disconnect requests with this from now on.
    OnDisconnect(DisconnectHandler),
    /// Start watching this room.
    Open(String),
    /// Stop watching it.
    Close(String),
}

/// Runs until the engine is dropped (its sender with it). `node` is this process's number:
/// its own presence notices are not news to it.
pub(super) async fn run(
    deployment: Deployment,
    mut redis: Redis,
    mut commands: mpsc::UnboundedReceiver<Command>,
    node: u32,
    writer: mpsc::WeakUnboundedSender<Job>,
) {
    let mut connected_before = false;
    let mut watcher: Option<Watcher> = None;
    let mut on_disconnect: Option<DisconnectHandler> = None;
    let mut rooms: HashSet<String> = HashSet::new();
    // Counts connection attempts, which go round the seeds of a cluster (starting from
    // one that depends on the node, to spread the nodes' subscribers over the seeds).
    let mut attempt = node as usize;
    loop {
        let pubsub = deployment.subscribe(attempt);
        let pubsub = tokio::time::timeout(super::RESPONSE_TIMEOUT, pubsub).await;
        let Ok(Ok(pubsub)) = pubsub else {
            attempt += 1;
            tracing::warn!("cannot open the Redis pub/sub connection; trying again");
            // Keep up with the engine meanwhile, then try again.
            let pause = tokio::time::sleep(RECONNECT_PAUSE);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    () = &mut pause => break,
                    command = commands.recv() => match command {
                        Some(command) => {
                            apply(command, &mut watcher, &mut on_disconnect, &mut rooms);
                        }
                        None => return,
                    },
                }
            }
            continue;
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut subscribed = sink.subscribe(CONTROL).await.is_ok();
        for room in &rooms {
            let keys = Keys::of(room);
            subscribed &= sink.subscribe(&[keys.channel, keys.presence]).await.is_ok();
        }
        if !subscribed {
            attempt += 1;
            continue;
        }
        // After Redis was unreachable: this node's member changes since then were lost.
        if std::mem::replace(&mut connected_before, true)
            && let Some(writer) = writer.upgrade()
        {
            let _ = writer.send(Job::Resync);
        }
        // Whatever was appended while nobody listened. If that cannot be read, start over.
        let mut reported = true;
        for room in &rooms {
            reported &= report(&mut redis, watcher.as_ref(), room, node).await;
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
                        attempt += 1;
                        break;
                    };
                    let channel = message.get_channel_name().to_owned();
                    let payload: Option<String> = message.get_payload().ok();
                    if channel == CONTROL {
                        if let (Some(payload), Some(handler)) = (payload, &on_disconnect) {
                            carry_out(&mut redis, handler, &payload, node).await;
                        }
                        continue;
                    }
                    if let (Some(room), Some(payload), Some(watcher)) =
                        // A room's channels carry its name as their hash tag.
                        (hash_tag(&channel), payload, &watcher)
                        && let Some(notice) = notice(&channel, &payload, node)
                    {
                        watcher(room, notice);
                    }
                }
                command = commands.recv() => {
                    let Some(command) = command else {
                        return;
                    };
                    let ok = match &command {
                        Command::Open(room) if !rooms.contains(room) => {
                            let keys = Keys::of(room);
                            sink.subscribe(&[keys.channel, keys.presence]).await.is_ok()
                        }
                        Command::Close(room) if rooms.contains(room) => {
                            let keys = Keys::of(room);
                            sink.unsubscribe(&[keys.channel, keys.presence]).await.is_ok()
                        }
                        _ => true,
                    };
                    let opened = match &command {
                        Command::Open(room) => Some(room.clone()),
                        _ => None,
                    };
                    apply(command, &mut watcher, &mut on_disconnect, &mut rooms);
                    if !ok {
                        break;
                    }
                    if let Some(room) = opened
                        && !report(&mut redis, watcher.as_ref(), &room, node).await
                    {
                        // Read again, with every other room's, after reconnecting.
                        break;
                    }
                }
            }
        }
    }
}

fn apply(
    command: Command,
    watcher: &mut Option<Watcher>,
    on_disconnect: &mut Option<DisconnectHandler>,
    rooms: &mut HashSet<String>,
) {
    match command {
        Command::Watch(new) => *watcher = Some(new),
        Command::OnDisconnect(handler) => *on_disconnect = Some(handler),
        Command::Open(room) => {
            rooms.insert(room);
        }
        Command::Close(room) => {
            rooms.remove(&room);
        }
    }
}

/// Closes what another node's disconnect request names here, and answers how many.
async fn carry_out(redis: &mut Redis, handler: &DisconnectHandler, payload: &str, node: u32) {
    let Ok(request) = serde_json::from_str::<ControlRequest>(payload) else {
        return;
    };
    if request.node == node {
        return;
    }
    let closed = handler(&request.target);
    let mut pipe = redis::pipe();
    pipe.rpush(&request.reply, closed).ignore();
    pipe.expire(&request.reply, 10).ignore();
    let _: Result<(), _> = pipe.query_async(redis).await;
}

/// What a message on `channel` says, unless it is this node's own presence notice.
fn notice(channel: &str, payload: &str, node: u32) -> Option<Notice> {
    if channel.ends_with(":presence") {
        let notice: PresenceNotice = serde_json::from_str(payload).ok()?;
        return (notice.node != node).then_some(Notice::Presence(notice.change));
    }
    let (epoch, top) = payload.split_once(' ')?;
    Some(Notice::Top {
        epoch: epoch.to_owned(),
        top: top.parse().ok()?,
    })
}

/// Reads `room`'s epoch, top and other nodes' members and reports them; false if Redis
/// could not be read (the caller reconnects and reads every room again).
async fn report(redis: &mut Redis, watcher: Option<&Watcher>, room: &str, node: u32) -> bool {
    let Some(watcher) = watcher else {
        return true;
    };
    let keys = Keys::of(room);
    let mut pipe = redis::pipe();
    pipe.cmd("HMGET").arg(&keys.meta).arg("epoch").arg("top");
    pipe.cmd("HVALS").arg(&keys.members);
    let answer: Result<(Vec<Value>, Vec<String>), _> = pipe.query_async(redis).await;
    let Ok((state, members)) = answer else {
        return false;
    };
    let mut state = state.into_iter();
    let top = match (state.next().and_then(text), state.next().and_then(number)) {
        (Some(epoch), Some(top)) => Notice::Top { epoch, top },
        // No such room in Redis any more (it came back empty): no history at all, which
        // the relay takes as a lost one.
        (None, None) => Notice::Top {
            epoch: String::new(),
            top: 0,
        },
        _ => return true,
    };
    let members = super::members_of_others(members.into_iter(), node);
    watcher(room, Notice::Members(members));
    watcher(room, top);
    true
}
