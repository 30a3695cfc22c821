//! The connection to the relay: one socket at a time, reopened with backoff when it drops.
//!
//! [`ChatClient`] is the handle components use (provided as context). Its methods change the
//! [`ChatState`] signal and then ask the driver to send whatever [`ChatState::sync`] says
//! is due. Everything that arrives is applied to the same signal, so the UI simply renders
//! the state.
//!
//! The driver is event-driven on purpose: the browser's own WebSocket callbacks and two timers
//! (the pulse check and the reconnect delay) call into it. An async task with channels,
//! `select` and a split socket did the same job in about 8 KB more of gzipped wasm.
//!
//! Where the relay requires tokens (`welcome.auth_required`), a page with a token URL (see
//! [`crate::sign_in`]) fetches one and presents it in `auth` before anything else; one without
//! sends `auth` with no token (anonymous reading, where the relay allows it). The token is
//! refreshed when three quarters of its remaining life have passed.

use std::{
    cell::RefCell,
    rc::{Rc, Weak},
};

use gloo_timers::callback::{Interval, Timeout};
use leptos::prelude::*;
use wasm_bindgen::{JsCast, closure::Closure};
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::{
    backoff::{Backoff, Heartbeat, Pulse},
    identity, outbox_store,
    sign_in::{self, NoToken},
    state::{ChatState, ConnectionStatus, Link},
    wire,
};
use common::{ClientMessage, ProtocolError, ServerMessage};

/// The app's handle on the chat: state to render, and actions.
#[derive(Clone, Copy)]
pub struct ChatClient {
    /// Everything the UI shows.
    pub state: RwSignal<ChatState>,
    /// Whole seconds until the next reconnect attempt while offline (counts down).
    pub retry_in: RwSignal<u32>,
    /// The connection. Owned by the app's reactive scope: when the app is unmounted the
    /// driver is dropped, which closes the socket and cancels its timers.
    driver: StoredValue<Rc<Driver>, LocalStorage>,
}

impl ChatClient {
    /// Connects to the relay at `url` (a `ws://` or `wss://` URL of `/ws`). Messages earlier
    /// pages left unacknowledged are adopted, and the outbox is saved to `localStorage` under
    /// `tab_key` whenever it changes.
    ///
    /// With a `token_url`, the user signs in where the relay requires tokens.
    pub fn start(
        url: String,
        token_url: Option<String>,
        mut initial: ChatState,
        tab_key: String,
    ) -> Self {
        initial.adopt(outbox_store::take_all());
        let state = RwSignal::new(initial);
        let outbox = Memo::new(move |_| state.with(|s| s.outbox.clone()));
        crate::components::effect(Box::new(move || {
            outbox.with(|pending| outbox_store::save(&tab_key, pending));
        }));
        let retry_in = RwSignal::new(0);
        let driver = Rc::new(Driver {
            url,
            token_url,
            state,
            retry_in,
            backoff: Backoff::default(),
            heartbeat: Heartbeat::default(),
            inner: RefCell::default(),
        });
        driver.connect();
        driver.listen();
        ChatClient {
            state,
            retry_in,
            driver: StoredValue::new_local(driver),
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

    /// Reconnects now instead of waiting for the next attempt (does nothing while connected).
    pub fn retry_now(&self) {
        self.driver.with_value(|driver| driver.retry_now());
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
            self.driver.with_value(|driver| driver.flush(None));
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

/// How often a quiet connection's pulse is checked.
const PULSE_CHECK_MS: u32 = 1_000;

/// Wait before trying a failed refresh again.
const REFRESH_RETRY_MS: u32 = 5_000;

/// Shortest wait before refreshing a token, however little of its life the browser's clock
/// says is left (a clock far ahead of the relay's would otherwise refresh in a loop).
const MIN_REFRESH_DELAY_MS: f64 = 2_000.0;

/// Keeps one socket open to the relay while the app lives.
struct Driver {
    url: String,
    /// Where the user's token comes from, if the page signs in.
    token_url: Option<String>,
    state: RwSignal<ChatState>,
    retry_in: RwSignal<u32>,
    backoff: Backoff,
    heartbeat: Heartbeat,
    inner: RefCell<DriverState>,
}

#[derive(Default)]
struct DriverState {
    /// The open (or opening) socket, if any.
    socket: Option<Socket>,
    /// Connection attempts that failed before `welcome`, for the backoff schedule.
    failures: u32,
    /// The pending reconnect while offline, and the countdown to it.
    retry: Option<(Timeout, Interval)>,
    /// Called by the window's `online` and `visibilitychange` events.
    on_wake: Option<Closure<dyn FnMut()>>,
    /// Counts sockets opened, so a token fetched for one is never presented on the next.
    generation: u32,
}

/// Window events after which an offline page reconnects at once.
const WAKE_EVENTS: [&str; 2] = ["online", "visibilitychange"];

impl Drop for Driver {
    fn drop(&mut self) {
        if let (Some(window), Some(on_wake)) = (web_sys::window(), &self.inner.get_mut().on_wake) {
            for event in WAKE_EVENTS {
                let _ = window
                    .remove_event_listener_with_callback(event, on_wake.as_ref().unchecked_ref());
            }
        }
    }
}

/// One socket and what it has been told.
struct Socket {
    socket: WebSocket,
    link: Link,
    /// Whether the relay is ready for requests: `welcome` arrived and, where the relay
    /// requires tokens, it answered `auth` (nothing but `auth` is sent before).
    ready: bool,
    /// The pending token refresh.
    refresh: Option<Timeout>,
    last_heard_ms: f64,
    pinged: bool,
    // Kept alive as long as the socket: the browser calls these.
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
    _pulse_check: Interval,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.socket.set_onmessage(None);
        self.socket.set_onclose(None);
        let _ = self.socket.close();
    }
}

impl Driver {
    /// Opens a socket; its events come back to this driver for as long as it lives.
    fn connect(self: &Rc<Self>) {
        {
            let mut inner = self.inner.borrow_mut();
            inner.retry = None;
            inner.generation = inner.generation.wrapping_add(1);
        }
        if self
            .state
            .try_update(|s| s.status = ConnectionStatus::Connecting)
            .is_none()
        {
            return;
        }
        let socket = match WebSocket::new(&self.url) {
            Ok(socket) => socket,
            Err(err) => {
                leptos::logging::warn!("cannot open {}: {err:?}", self.url);
                return self.retry_later(None, false);
            }
        };
        let on_message =
            Closure::<dyn FnMut(MessageEvent)>::new(self.weakly(|driver, event: MessageEvent| {
                if let Some(text) = event.data().as_string() {
                    driver.heard(&text);
                }
            }));
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(
            self.weakly(|driver, event: CloseEvent| driver.dropped(Some(event.code()))),
        );
        let check_pulse = self.weakly(|driver, ()| driver.check_pulse());
        let pulse_check = Interval::new(PULSE_CHECK_MS, move || check_pulse(()));
        socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        self.inner.borrow_mut().socket = Some(Socket {
            socket,
            link: Link::default(),
            ready: false,
            refresh: None,
            last_heard_ms: js_sys::Date::now(),
            pinged: false,
            _on_message: on_message,
            _on_close: on_close,
            _pulse_check: pulse_check,
        });
    }

    /// Reconnects at once when the browser is back online or the page is shown again, and
    /// tells the state whether the page is hidden (for unread counts).
    fn listen(self: &Rc<Self>) {
        let Some(window) = web_sys::window() else {
            return;
        };
        let wake = self.weakly(|driver, ()| {
            let hidden = web_sys::window()
                .and_then(|w| w.document())
                .is_some_and(|d| d.hidden());
            if driver.state.try_update(|s| s.set_away(hidden)).is_some() && !hidden {
                driver.retry_now();
            }
        });
        let on_wake = Closure::<dyn FnMut()>::new(move || wake(()));
        for event in WAKE_EVENTS {
            let _ =
                window.add_event_listener_with_callback(event, on_wake.as_ref().unchecked_ref());
        }
        self.inner.borrow_mut().on_wake = Some(on_wake);
    }

    /// Connects now if the page is offline and waiting for its next attempt.
    fn retry_now(self: &Rc<Self>) {
        if self.inner.borrow().retry.is_some() {
            self.connect();
        }
    }

    /// `handle`, called only while this driver still exists: browser callbacks and timers
    /// hold the driver weakly, so they never keep an unmounted app's driver alive.
    fn weakly<A: 'static>(self: &Rc<Self>, handle: fn(&Rc<Driver>, A)) -> impl Fn(A) + 'static {
        let weak: Weak<Driver> = Rc::downgrade(self);
        move |arg| {
            if let Some(driver) = weak.upgrade() {
                handle(&driver, arg);
            }
        }
    }

    /// A text frame arrived.
    fn heard(self: &Rc<Self>, text: &str) {
        if let Some(socket) = self.inner.borrow_mut().socket.as_mut() {
            socket.last_heard_ms = js_sys::Date::now();
            socket.pinged = false;
        }
        match wire::decode(text) {
            Ok(event) => {
                let step = match &event {
                    ServerMessage::Welcome { auth_required, .. } => Some(Err(*auth_required)),
                    ServerMessage::Authenticated { expires_at, .. } => Some(Ok(*expires_at)),
                    _ => None,
                };
                if self.state.try_update(|s| s.apply(event)).is_none() {
                    return;
                }
                match step {
                    Some(Err(true)) => self.sign_in(),
                    Some(Err(false)) => self.set_ready(None),
                    Some(Ok(expires_at)) => self.set_ready(expires_at),
                    None => {}
                }
            }
            Err(err) => leptos::logging::warn!("unreadable frame from the relay: {err}"),
        }
        self.flush(None);
    }

    /// The relay takes requests from now on; with a token expiring at `expires_at` (ms since
    /// the Unix epoch), its refresh is scheduled.
    fn set_ready(self: &Rc<Self>, expires_at: Option<u64>) {
        if let Some(socket) = self.inner.borrow_mut().socket.as_mut() {
            socket.ready = true;
        }
        if let Some(expires_at) = expires_at {
            let left = expires_at as f64 - js_sys::Date::now();
            let delay = (left * 0.75).clamp(MIN_REFRESH_DELAY_MS, f64::from(i32::MAX));
            self.refresh_in(delay as u32);
        }
    }

    /// Fetches a fresh token for the open socket's `refresh` in `delay_ms`.
    fn refresh_in(self: &Rc<Self>, delay_ms: u32) {
        let refresh = self.weakly(|driver, ()| driver.get_token(true));
        let timer = Timeout::new(delay_ms, move || refresh(()));
        if let Some(socket) = self.inner.borrow_mut().socket.as_mut() {
            socket.refresh = Some(timer);
        }
    }

    /// The relay requires a token: fetch one (a new one for every connection, so a token
    /// is never presented after the application stopped handing it out); a page without a
    /// token URL goes on without one.
    fn sign_in(self: &Rc<Self>) {
        if self.token_url.is_none() {
            return self.present(ClientMessage::Auth { token: None });
        }
        self.state.try_update(ChatState::signing_in);
        self.get_token(false);
    }

    /// Fetches a token and presents it on the socket open now: in `auth`, or in `refresh`
    /// for a connection already signed in. A signed-out user is shown as such; a fetch that
    /// fails otherwise is tried again with a new connection (or, for a refresh, in a while).
    fn get_token(self: &Rc<Self>, refresh: bool) {
        let Some(url) = self.token_url.clone() else {
            return;
        };
        let weak = Rc::downgrade(self);
        let generation = self.inner.borrow().generation;
        sign_in::fetch_token(&url, move |fetched| {
            let Some(driver) = weak.upgrade() else {
                return;
            };
            if driver.inner.borrow().generation != generation {
                return;
            }
            match fetched {
                Ok(token) => {
                    driver.present(if refresh {
                        ClientMessage::Refresh { token }
                    } else {
                        ClientMessage::Auth { token: Some(token) }
                    });
                }
                Err(NoToken::SignedOut) => {
                    driver.state.try_update(ChatState::signed_out);
                    if !refresh {
                        driver.dropped(None);
                    }
                }
                Err(NoToken::Unavailable) if refresh => driver.refresh_in(REFRESH_RETRY_MS),
                Err(NoToken::Unavailable) => driver.dropped(None),
            }
        });
    }

    /// Sends `frame` now, ready or not (`auth` and `refresh` go before anything else).
    fn present(self: &Rc<Self>, frame: ClientMessage) {
        let sent = self
            .inner
            .borrow()
            .socket
            .as_ref()
            .map(|open| open.socket.send_with_str(&wire::encode(&frame)).is_ok());
        if sent == Some(false) {
            self.dropped(None);
        }
    }

    /// Sends `first` (if any), then whatever the state says is due, once ready.
    fn flush(self: &Rc<Self>, first: Option<ClientMessage>) {
        let mut inner = self.inner.borrow_mut();
        let Some(open) = inner.socket.as_mut().filter(|socket| socket.ready) else {
            return;
        };
        // Untracked: marking messages as sent changes nothing on screen.
        let Some(due) = self.state.try_update_untracked(|s| s.sync(&mut open.link)) else {
            return;
        };
        let sent = first
            .into_iter()
            .chain(due)
            .all(|frame| open.socket.send_with_str(&wire::encode(&frame)).is_ok());
        drop(inner);
        if !sent {
            self.dropped(None);
        }
    }

    /// Pings a quiet connection, and gives up on a silent one.
    fn check_pulse(self: &Rc<Self>) {
        let pulse = {
            let mut inner = self.inner.borrow_mut();
            let Some(open) = inner.socket.as_mut() else {
                return;
            };
            let pulse = self
                .heartbeat
                .check(js_sys::Date::now() - open.last_heard_ms, open.pinged);
            open.pinged |= pulse == Pulse::Ping;
            pulse
        };
        match pulse {
            Pulse::Fine => {}
            Pulse::Ping => self.flush(Some(ClientMessage::Ping)),
            Pulse::Dead => {
                leptos::logging::warn!("the relay went silent; reconnecting");
                self.dropped(None);
            }
        }
    }

    /// The socket closed (with the relay's close `code`, if any), failed or fell silent.
    fn dropped(self: &Rc<Self>, code: Option<u16>) {
        let Some(socket) = self.inner.borrow_mut().socket.take() else {
            return;
        };
        let ready = socket.ready;
        drop(socket);
        self.retry_later(code, ready);
    }

    /// Schedules the next attempt. A connection that got as far as taking requests resets
    /// the schedule.
    fn retry_later(self: &Rc<Self>, code: Option<u16>, ready: bool) {
        let failures = {
            let mut inner = self.inner.borrow_mut();
            inner.failures = if ready {
                0
            } else {
                inner.failures.saturating_add(1)
            };
            inner.failures
        };
        let delay = self
            .backoff
            .delay_after_close(code, failures, js_sys::Math::random());
        let update = |s: &mut ChatState| {
            s.disconnected(delay);
            if let Some(code) = code {
                s.closed_with(code);
            }
        };
        if self.state.try_update(update).is_none() {
            return;
        }
        let reconnect = self.weakly(|driver, ()| driver.connect());
        let retry = Timeout::new(delay, move || reconnect(()));
        self.retry_in.set(delay.div_ceil(1000));
        let retry_in = self.retry_in;
        let countdown = Interval::new(1000, move || {
            retry_in.try_update(|seconds| *seconds = seconds.saturating_sub(1));
        });
        self.inner.borrow_mut().retry = Some((retry, countdown));
    }
}
