//! Fault injection: clients reach the relay through a TCP proxy that cuts every connection
//! at a random moment, while several senders publish. Clients behave like the web client
//! (re-join from their last position, resend unacknowledged messages under the same id).
//! Afterwards every client must hold every message of the room exactly once, in offset order,
//! and must never have been sent one twice or out of order, even across reconnects.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::{ClientMessage, ErrorCode, Position, Recovery, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Barrier,
};
use tokio_tungstenite::{connect_async, tungstenite::Message};

use crate::helpers::spawn_unthrottled_relay;

const SENDERS: usize = 3;
const RECEIVERS: usize = 2;
const MESSAGES_PER_SENDER: usize = 400;
pub(crate) const ROOM: &str = "faults";
/// The whole test must finish within this.
const DEADLINE: Duration = Duration::from_secs(60);

/// Forwards connections to the relay and, while `cutting` is on, kills each one after a
/// random 3–60 ms.
pub(crate) struct CuttingProxy {
    pub(crate) address: SocketAddr,
    pub(crate) cutting: Arc<AtomicBool>,
    pub(crate) cuts: Arc<AtomicUsize>,
    /// Where new connections go (a restarted relay listens elsewhere).
    pub(crate) relay: Arc<std::sync::Mutex<SocketAddr>>,
}

impl CuttingProxy {
    pub(crate) async fn start(relay: SocketAddr, seed: u64) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let cutting = Arc::new(AtomicBool::new(true));
        let cuts = Arc::new(AtomicUsize::new(0));
        let relay = Arc::new(std::sync::Mutex::new(relay));
        let (cutting_flag, cut_count, target) = (cutting.clone(), cuts.clone(), relay.clone());
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            while let Ok((mut inbound, _)) = listener.accept().await {
                let lifetime = Duration::from_millis(rng.random_range(3..60));
                let (cutting, cuts) = (cutting_flag.clone(), cut_count.clone());
                let relay = *target.lock().unwrap();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(relay).await else {
                        return;
                    };
                    let cut = cutting.load(Ordering::Relaxed);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = tokio::time::sleep(lifetime), if cut => {
                            cuts.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // Dropping both sockets here cuts the connection mid-whatever.
                });
            }
        });
        CuttingProxy {
            address,
            cutting,
            cuts,
            relay,
        }
    }
}

/// What one client saw and did.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Offsets received, in arrival order across all connections.
    pub(crate) offsets: Vec<u64>,
    /// Client ids of received messages, in arrival order.
    pub(crate) ids: Vec<String>,
    /// Offsets that arrived again or out of order.
    pub(crate) repeats: usize,
    /// Offsets that skipped ahead.
    pub(crate) gaps: usize,
    /// Connections opened.
    pub(crate) connections: usize,
    /// Joins the relay could not recover.
    pub(crate) unrecoverable: usize,
    /// Duplicate acks seen (resends the relay recognised).
    pub(crate) duplicate_acks: usize,
    /// Sends refused with `store_unavailable` (sent again after reconnecting).
    pub(crate) refused: usize,
    /// Connection attempts that failed.
    pub(crate) failed_connects: usize,
}

impl Tally {
    /// The counts, and where the offsets first went wrong, without the whole history.
    pub(crate) fn summary(&self) -> String {
        let first_jump = self
            .offsets
            .windows(2)
            .find(|pair| pair[1] != pair[0] + 1)
            .map(|pair| (pair[0], pair[1]));
        format!(
            "{} offsets (last {:?}), first jump {first_jump:?}, repeats {}, gaps {}, \
             unrecoverable {}, connections {}, duplicate acks {}",
            self.offsets.len(),
            self.offsets.last(),
            self.repeats,
            self.gaps,
            self.unrecoverable,
            self.connections,
            self.duplicate_acks
        )
    }
}

/// A client that reconnects through the proxy until it has sent everything it must send
/// (acknowledged) and received `expect_total` messages. Its `k`th connection goes to
/// `urls[k % urls.len()]`: with several relay nodes, every reconnect lands on another one.
pub(crate) async fn resilient_client(
    urls: Vec<String>,
    name: String,
    to_send: Vec<(String, String)>,
    expect_total: usize,
    ready: Arc<Barrier>,
) -> Tally {
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut position: Option<Position> = None;
    let mut unacked: Vec<(String, String)> = Vec::new();
    let mut next_new = 0;
    let mut sent_ever: HashSet<String> = HashSet::new();
    let mut waited_at_barrier = false;
    while unacked.len() + (to_send.len() - next_new) > 0 || tally.offsets.len() < expect_total {
        assert!(
            started.elapsed() < DEADLINE,
            "{name} did not finish: {}",
            tally.summary()
        );
        let url = &urls[(tally.connections + tally.failed_connects) % urls.len()];
        let Ok(Ok((mut socket, _))) =
            tokio::time::timeout(Duration::from_secs(2), connect_async(url.as_str())).await
        else {
            tally.failed_connects += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tally.connections += 1;
        let join = ClientMessage::Join {
            room: ROOM.into(),
            name: name.clone(),
            since: position.clone(),
        };
        if socket
            .send(Message::text(serde_json::to_string(&join).unwrap()))
            .await
            .is_err()
        {
            continue;
        }
        let mut joined = false;
        let mut sent_here: HashSet<String> = HashSet::new();
        loop {
            // Once joined, keep up to 4 messages in flight: unacked ones first (resends).
            if joined {
                while next_new < to_send.len() && unacked.len() < 4 {
                    unacked.push(to_send[next_new].clone());
                    next_new += 1;
                }
                let mut failed = false;
                for (id, text) in &unacked {
                    if sent_here.insert(id.clone()) {
                        let send = ClientMessage::Send {
                            room: ROOM.into(),
                            id: id.clone(),
                            text: text.clone(),
                            resend: !sent_ever.insert(id.clone()),
                        };
                        let frame = Message::text(serde_json::to_string(&send).unwrap());
                        if socket.send(frame).await.is_err() {
                            failed = true;
                            break;
                        }
                    }
                }
                if failed {
                    break;
                }
            }
            let done = unacked.is_empty()
                && next_new == to_send.len()
                && tally.offsets.len() >= expect_total;
            if done {
                break;
            }
            let frame = match tokio::time::timeout(Duration::from_secs(2), socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => text,
                Ok(Some(Ok(_))) => continue,
                _ => break, // cut, closed, or silent: reconnect
            };
            match serde_json::from_str::<ServerMessage>(&frame).unwrap() {
                ServerMessage::Joined {
                    epoch, recovery, ..
                } => {
                    joined = true;
                    if recovery == Recovery::Unrecoverable {
                        tally.unrecoverable += 1;
                        eprintln!("{name}: unrecoverable join from {position:?}");
                    }
                    if position.is_none() {
                        position = Some(Position { epoch, offset: 0 });
                    }
                    if !waited_at_barrier {
                        // Everyone joins once before anyone publishes, so every client's
                        // first join already precedes the first message.
                        waited_at_barrier = true;
                        ready.wait().await;
                    }
                }
                ServerMessage::Message(message) => {
                    let last = position.as_ref().map_or(0, |p| p.offset);
                    if message.offset <= last {
                        tally.repeats += 1;
                        continue;
                    }
                    if message.offset > last + 1 {
                        tally.gaps += 1;
                    }
                    tally.offsets.push(message.offset);
                    tally.ids.extend(message.id);
                    position = Some(Position {
                        epoch: message.epoch,
                        offset: message.offset,
                    });
                }
                ServerMessage::Ack { id, duplicate, .. } => {
                    tally.duplicate_acks += usize::from(duplicate);
                    unacked.retain(|(pending, _)| *pending != id);
                }
                ServerMessage::Error {
                    code: ErrorCode::StoreUnavailable,
                    ..
                } => {
                    // Not stored: sent again, under the same id, on the next connection.
                    tally.refused += 1;
                    break;
                }
                ServerMessage::Error { code, message, .. } => {
                    panic!("{name} was refused: {code}: {message}")
                }
                _ => {}
            }
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_lose_and_duplicate_nothing() {
    let seed = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let relay = spawn_unthrottled_relay().await;
    let proxy = CuttingProxy::start(relay.address, seed).await;
    let url = format!("ws://{}/ws", proxy.address);
    let total = SENDERS * MESSAGES_PER_SENDER;
    let ready = Arc::new(Barrier::new(SENDERS + RECEIVERS));

    let mut clients = Vec::new();
    for sender in 0..SENDERS {
        let messages = (0..MESSAGES_PER_SENDER)
            .map(|n| {
                (
                    format!("s{sender}-{n}"),
                    format!("message {n} from sender {sender}"),
                )
            })
            .collect();
        clients.push(tokio::spawn(resilient_client(
            vec![url.clone()],
            format!("sender-{sender}"),
            messages,
            total,
            ready.clone(),
        )));
    }
    for receiver in 0..RECEIVERS {
        clients.push(tokio::spawn(resilient_client(
            vec![url.clone()],
            format!("receiver-{receiver}"),
            Vec::new(),
            total,
            ready.clone(),
        )));
    }
    // Cut connections for as long as the senders are still publishing; then let everyone
    // catch up over stable connections.
    let mut tallies = Vec::new();
    for (index, client) in clients.into_iter().enumerate() {
        if index == SENDERS {
            proxy.cutting.store(false, Ordering::Relaxed);
        }
        tallies.push(client.await.expect("client task"));
    }

    assert_exactly_once_in_order(&tallies, SENDERS, MESSAGES_PER_SENDER);
    let cuts = proxy.cuts.load(Ordering::Relaxed);
    let connections: usize = tallies.iter().map(|t| t.connections).sum();
    let resends_caught: usize = tallies.iter().map(|t| t.duplicate_acks).sum();
    assert!(
        cuts >= 20,
        "the proxy cut only {cuts} connections (seed {seed})"
    );
    eprintln!(
        "fault injection (seed {seed}): {total} messages, {} clients, {connections} connections, \
         {cuts} cuts, {resends_caught} resends recognised, losses 0, duplicates 0",
        tallies.len()
    );
}

/// Every client holds every message of the `senders` × `messages_per_sender` published
/// (ids `s<sender>-<n>`) exactly once, at offsets 1, 2, 3, ... in arrival order: nothing
/// lost, nothing repeated, nothing out of order, no unrecoverable join.
pub(crate) fn assert_exactly_once_in_order(
    tallies: &[Tally],
    senders: usize,
    messages_per_sender: usize,
) {
    let total = senders * messages_per_sender;
    let expected_ids: HashSet<String> = (0..senders)
        .flat_map(|s| (0..messages_per_sender).map(move |n| format!("s{s}-{n}")))
        .collect();
    for (index, tally) in tallies.iter().enumerate() {
        let out_of_place = tally
            .offsets
            .iter()
            .zip(1u64..)
            .find(|(offset, expected)| *offset != expected);
        assert!(
            tally.offsets.len() == total && out_of_place.is_none(),
            "client {index}: expected offsets 1..={total} once each, in order; got {} offsets, \
             first out of place: {out_of_place:?}",
            tally.offsets.len()
        );
        assert_eq!(
            (tally.repeats, tally.gaps, tally.unrecoverable),
            (0, 0, 0),
            "client {index}"
        );
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for id in &tally.ids {
            *counts.entry(id.as_str()).or_default() += 1;
        }
        assert!(
            counts.values().all(|&n| n == 1),
            "client {index}: a message was published twice"
        );
        let seen: HashSet<String> = tally.ids.iter().cloned().collect();
        assert_eq!(seen, expected_ids, "client {index}: lost messages");
    }
}
