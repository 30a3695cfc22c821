//! The conversation: messages and notices of the room on screen, then pending sends.

use leptos::{html, prelude::*};

use crate::{
    state::{ChatState, Entry, EntryKind, LogRow, NoticeLevel, PendingMessage},
    ws::ChatClient,
};

/// How close to the bottom (in pixels) still counts as "reading the newest messages".
const STICK_DISTANCE: i32 = 48;

/// The message log (`role="log"`). Follows new messages while the reader is at the bottom,
/// and stays put while they scroll back through history.
#[component]
pub fn MessageList() -> impl IntoView {
    let client = expect_context::<ChatClient>();
    let log = NodeRef::<html::Div>::new();
    let follow = StoredValue::new(true);
    let rows = move || client.state.with(ChatState::log_rows);
    let nothing_to_show = move || {
        client.state.with(|s| {
            s.active().is_some_and(|room| room.entries.is_empty())
                && s.pending_in_active().next().is_none()
        })
    };

    Effect::new(move |_| {
        client.state.track();
        if follow.get_value() {
            // After the browser has laid out the new rows.
            request_animation_frame(move || {
                if let Some(log) = log.get_untracked() {
                    log.set_scroll_top(log.scroll_height());
                }
            });
        }
    });
    let on_scroll = move |_| {
        if let Some(log) = log.get_untracked() {
            let distance = log.scroll_height() - log.scroll_top() - log.client_height();
            follow.set_value(distance < STICK_DISTANCE);
        }
    };

    view! {
        <div class="log" role="log" aria-label="Messages" node_ref=log on:scroll=on_scroll>
            <p class="empty" hidden=move || !nothing_to_show()>"No messages yet. Say hello!"</p>
            <For
                each=rows
                key=LogRow::key
                children=|row| match row {
                    LogRow::Line(entry) => view! { <EntryRow entry/> }.into_any(),
                    LogRow::Pending(pending) => view! { <PendingRow pending/> }.into_any(),
                }
            />
        </div>
    }
}

/// One message or notice.
#[component]
fn EntryRow(entry: Entry) -> impl IntoView {
    match entry.kind {
        EntryKind::Message {
            from,
            text,
            ts,
            own,
        } => view! {
            <article class="msg" class:own=own>
                <header class="meta">
                    <span class="from">{from}</span>
                    <time>{clock(ts)}</time>
                </header>
                // A text node: markup in messages is shown, never interpreted.
                <p class="text">{text}</p>
            </article>
        }
        .into_any(),
        EntryKind::Notice { text, level } => {
            let class = match level {
                NoticeLevel::Info => "notice",
                NoticeLevel::Warning => "notice warning",
                NoticeLevel::Error => "notice error",
            };
            view! { <p class=class>{text}</p> }.into_any()
        }
    }
}

/// A message of ours the relay has not acknowledged yet.
#[component]
fn PendingRow(pending: PendingMessage) -> impl IntoView {
    view! {
        <article class="msg own pending">
            <header class="meta">
                <span class="from">"You"</span>
                <time>"sending…"</time>
            </header>
            <p class="text">{pending.text}</p>
        </article>
    }
}

/// `HH:MM` in the browser's time zone.
fn clock(ts: u64) -> String {
    let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ts as f64));
    format!("{:02}:{:02}", date.get_hours(), date.get_minutes())
}
