//! The conversation: messages and notices of the room on screen, then pending sends.

use leptos::{html, prelude::*};

use crate::{
    state::{Entry, EntryKind, NoticeLevel, PendingMessage},
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
    let entries = move || {
        client.state.with(|s| {
            s.active()
                .map(|room| room.entries.clone())
                .unwrap_or_default()
        })
    };
    let pending = move || client.state.with(|s| s.pending_in_active());

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
            <Show when=move || client.state.with(|s| s.active().is_some_and(|r| r.entries.is_empty()))>
                <p class="empty">"No messages yet. Say hello!"</p>
            </Show>
            <For each=entries key=|entry| entry.key children=|entry| view! { <EntryRow entry/> }/>
            <For
                each=pending
                key=|pending| pending.id.clone()
                children=|pending| view! { <PendingRow pending/> }
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
