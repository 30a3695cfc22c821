//! The connection to the relay: one socket at a time, reopened with backoff when it drops.
//!
//! [`ChatClient`] is the handle components use (provided as context). Its methods change the
//! [`ChatState`] signal and wake the connection task, which then sends whatever
//! [`ChatState::sync`] says is due. Everything that arrives is applied to the same signal,
//! so the UI simply renders the state.

use futures::{
    SinkExt, StreamExt,
    channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded},
    future::{Either, select},
};
use gloo_net::websocket::{Message, WebSocketError, futures::WebSocket};
use gloo_timers::future::TimeoutFuture;
use leptos::{prelude::*, task::spawn_local};

use crate::{
    backoff::{Backoff, Heartbeat, Pulse},
    identity, outbox_store,
    state::{ChatState, ConnectionStatus, Link},
    wire,
};
use common::{ClientMessage, ProtocolError, ServerMessage};

/// The app's handle on the chat: state to render, and actions.
#[derive(Clone, Copy)]
pub struct ChatClient {
    /// Everything the UI shows.
    pub state: RwSignal<ChatState>,
    /// Wakes the connection task after the state changed.
    wake: StoredValue<UnboundedSender<()>>,
}

impl ChatClient {
    /// Starts the connection task for the relay at `url` (a `ws://` or `wss://` URL of `/ws`).
    /// Messages earlier pages left unacknowledged are adopted, and the outbox is saved to
    /// `localStorage` under `tab_key` whenever it changes.
    pub fn start(url: String, mut initial: ChatState, tab_key: String) -> Self {
        initial.adopt(outbox_store::take_all());
        let state = RwSignal::new(initial);
        let outbox = Memo::new(move |_| state.with(|s| s.outbox.clone()));
        Effect::new(move |_| outbox.with(|pending| outbox_store::save(&tab_key, pending)));
        let (wake, woken) = unbounded();
        spawn_local(keep_connected(url, state, woken));
        ChatClient {
            state,
            wake: StoredValue::new(wake),
        }
    }

    /// Queues a message for the room on screen; it is sent now or after reconnecting.
    pub fn send(&self, text: &str) -> Result<(), ProtocolError> {
        self.change(|state| state.queue_message(text).map(drop))
    }

    /// Opens (or switches to) a room.
    pub fn open_room(&self, room: &str) -> Result<(), ProtocolError> {
        self.change(|state| state.open_room(room))
    }

    /// Shows an already open room.
    pub fn show_room(&self, room: &str) {
        self.state.update(|state| state.show_room(room));
    }

    /// Closes a room.
    pub fn close_room(&self, room: &str) {
        self.change(|state| {
            state.close_room(room);
            Ok(())
        })
        .unwrap_or(());
    }

    /// Changes the display name, remembered for the next visit.
    pub fn rename(&self, name: &str) -> Result<(), ProtocolError> {
        self.change(|state| state.rename(name))?;
        identity::save_name(name);
        Ok(())
    }

    fn change(
        &self,
        action: impl FnOnce(&mut ChatState) -> Result<(), ProtocolError>,
    ) -> Result<(), ProtocolError> {
        let result = self.state.try_update(action).unwrap_or(Ok(()));
        if result.is_ok() {
            self.wake.with_value(|wake| {
                let _ = wake.unbounded_send(());
            });
        }
        result
    }
}

/// The default relay URL: `/ws` on the host that served the page.
pub fn default_url() -> String {
    let location = web_sys::window()
        .map(|window| window.location())
        .expect("running in a browser window");
    let scheme = match location.protocol().as_deref() {
        Ok("https:") => "wss",
        _ => "ws",
    };
    let host = location.host().unwrap_or_else(|_| "localhost:8080".into());
    format!("{scheme}://{host}/ws")
}

/// Why a link ended.
enum LinkEnd {
    /// The socket closed, failed or fell silent. `welcomed` says whether it got as far as
    /// `welcome`; `code` is the relay's close code, if it sent one.
    Dropped { welcomed: bool, code: Option<u16> },
    /// The app was unmounted: stop for good.
    AppGone,
}

/// How often a quiet connection's pulse is checked.
const PULSE_CHECK_MS: u32 = 1_000;

/// Runs while the app lives: connect, serve the link until it drops, wait with backoff,
/// repeat.
async fn keep_connected(url: String, state: RwSignal<ChatState>, mut woken: UnboundedReceiver<()>) {
    let backoff = Backoff::default();
    let mut failures = 0u32;
    loop {
        if state
            .try_update(|s| s.status = ConnectionStatus::Connecting)
            .is_none()
        {
            return;
        }
        let end = match WebSocket::open(&url) {
            Ok(socket) => serve_link(socket, state, &mut woken).await,
            Err(err) => {
                leptos::logging::warn!("cannot open {url}: {err}");
                LinkEnd::Dropped {
                    welcomed: false,
                    code: None,
                }
            }
        };
        let LinkEnd::Dropped { welcomed, code } = end else {
            return;
        };
        // A connection that got as far as `welcome` resets the schedule.
        failures = if welcomed {
            0
        } else {
            failures.saturating_add(1)
        };
        let delay = backoff.delay_after_close(code, failures, js_sys::Math::random());
        if state.try_update(|s| s.disconnected(delay)).is_none() {
            return;
        }
        TimeoutFuture::new(delay).await;
    }
}

/// Serves one socket until it closes, falls silent, or the app goes away.
async fn serve_link(
    socket: WebSocket,
    state: RwSignal<ChatState>,
    woken: &mut UnboundedReceiver<()>,
) -> LinkEnd {
    let (mut outgoing, mut incoming) = socket.split();
    let heartbeat = Heartbeat::default();
    let mut link = Link::default();
    let mut welcomed = false;
    let mut last_heard = js_sys::Date::now();
    let mut pinged = false;
    let mut pulse_check = TimeoutFuture::new(PULSE_CHECK_MS);
    loop {
        let mut to_send = Vec::new();
        match select(select(incoming.next(), woken.next()), &mut pulse_check).await {
            Either::Left((Either::Left((Some(Ok(message)), _)), _)) => {
                last_heard = js_sys::Date::now();
                pinged = false;
                let Message::Text(text) = message else {
                    continue;
                };
                match wire::decode(&text) {
                    Ok(event) => {
                        welcomed |= matches!(event, ServerMessage::Welcome { .. });
                        if state.try_update(|s| s.apply(event)).is_none() {
                            return LinkEnd::AppGone;
                        }
                    }
                    Err(err) => leptos::logging::warn!("unreadable frame from the relay: {err}"),
                }
            }
            Either::Left((Either::Left((ended, _)), _)) => {
                let code = match ended {
                    Some(Err(WebSocketError::ConnectionClose(close))) => Some(close.code),
                    _ => None,
                };
                return LinkEnd::Dropped { welcomed, code };
            }
            Either::Left((Either::Right((Some(()), _)), _)) => {}
            Either::Left((Either::Right((None, _)), _)) => return LinkEnd::AppGone,
            Either::Right(((), _)) => {
                pulse_check = TimeoutFuture::new(PULSE_CHECK_MS);
                match heartbeat.check(js_sys::Date::now() - last_heard, pinged) {
                    Pulse::Fine => {}
                    Pulse::Ping => {
                        pinged = true;
                        to_send.push(ClientMessage::Ping);
                    }
                    Pulse::Dead => {
                        leptos::logging::warn!("the relay went silent; reconnecting");
                        return LinkEnd::Dropped {
                            welcomed,
                            code: None,
                        };
                    }
                }
            }
        }
        if !welcomed {
            continue;
        }
        // Untracked: marking messages as sent changes nothing on screen.
        let Some(frames) = state.try_update_untracked(|s| s.sync(&mut link)) else {
            return LinkEnd::AppGone;
        };
        to_send.extend(frames);
        for frame in to_send {
            let text = wire::encode(&frame);
            if outgoing.send(Message::Text(text)).await.is_err() {
                return LinkEnd::Dropped {
                    welcomed,
                    code: None,
                };
            }
        }
    }
}
