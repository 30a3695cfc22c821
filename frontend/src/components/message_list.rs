//! The conversation: messages and notices of the room on screen, then pending sends.

use leptos::{either::Either, html, prelude::*};
use wasm_bindgen::JsValue;

use super::{effect, on_click, reactive};
use crate::{
    format::{clock, day_label, linkify_html, local_day},
    state::{ChatState, Entry, EntryKind, LogRow, NoticeLevel, PendingMessage},
    ws::ChatClient,
};

/// How close to the bottom (in pixels) still counts as "reading the newest messages".
const STICK_DISTANCE: i32 = 48;

/// The message log (`role="log"`, focusable, so the keyboard scrolls it). Follows new
/// messages while the reader is at the bottom; while they scroll back through history it
/// stays put and a "New messages" button appears when messages arrive.
#[component]
pub fn MessageList() -> impl IntoView {
    let client = expect_context::<ChatClient>();
    let log = NodeRef::<html::Div>::new();
    let follow = StoredValue::new(true);
    // Where the log was scrolled to last: only a scroll upwards stops following. (A row
    // landing between the jump to the bottom and its scroll event leaves the log short of
    // the bottom without the reader doing anything; messages arriving faster than frames
    // used to stop the following that way.)
    let last_top = StoredValue::new(0);
    let missed = RwSignal::new(false);
    let rows = move || client.state.with(ChatState::log_rows);
    let forbidden = move || {
        client
            .state
            .with(|s| s.active().is_some_and(|r| r.forbidden))
    };
    let nothing_to_show = move || {
        client.state.with(|s| {
            s.active().is_some_and(|room| room.entries.is_empty())
                && s.pending_in_active().next().is_none()
        })
    };
    let empty_text = move || {
        if forbidden() {
            "You are not allowed in this room."
        } else {
            "No messages yet. Say hello!"
        }
    };
    let to_bottom = move || {
        // After the browser has laid out the new rows.
        request_animation_frame(move || {
            if let Some(log) = log.get_untracked() {
                log.set_scroll_top(log.scroll_height());
            }
        });
    };

    // The room and row count seen last time.
    let seen = std::cell::RefCell::new(None::<(String, usize)>);
    effect(Box::new(move || {
        let now = client.state.with(|s| {
            let rows = s.active().map_or(0, |r| r.entries.len()) + s.pending_in_active().count();
            (s.active_room.clone(), rows)
        });
        // Taken out, so no borrow is held while signals are set below.
        let seen_before = seen.take();
        if seen_before.as_ref().is_some_and(|(room, _)| *room != now.0) {
            follow.set_value(true);
            missed.set(false);
        }
        if follow.get_value() {
            to_bottom();
        } else if seen_before.as_ref().is_some_and(|(_, rows)| *rows != now.1) {
            missed.set(true);
        }
        seen.replace(Some(now));
    }));
    let on_scroll = move |_| {
        if let Some(log) = log.get_untracked() {
            let top = log.scroll_top();
            let distance = log.scroll_height() - top - log.client_height();
            if distance < STICK_DISTANCE {
                follow.set_value(true);
                missed.set(false);
            } else if top < last_top.get_value() {
                follow.set_value(false);
            }
            last_top.set_value(top);
        }
    };

    view! {
        <div
            class="log"
            role="log"
            aria-label="Messages"
            tabindex="0"
            node_ref=log
            on:scroll=on_scroll
        >
            <p class="empty" hidden=reactive(move || !nothing_to_show() && !forbidden())>
                {reactive(empty_text)}
            </p>
            <For
                each=rows
                key=LogRow::key
                children=|row| match row {
                    LogRow::Line(entry) => Either::Left(view! { <EntryRow entry/> }),
                    LogRow::Pending(pending) => Either::Right(view! { <PendingRow pending/> }),
                }
            />
            <button
                type="button"
                class="jump"
                hidden=reactive(move || !missed.get())
                on:click=on_click(move |_| {
                    follow.set_value(true);
                    missed.set(false);
                    to_bottom();
                })
            >
                "New messages ↓"
            </button>
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
            api,
            grouped,
            new_day,
        } => {
            let date = js_sys::Date::new(&JsValue::from_f64(ts as f64));
            let day = new_day.then(|| {
                let offset = -(date.get_timezone_offset() as i32);
                let today = local_day(js_sys::Date::now() as u64, offset);
                let label = match day_label(local_day(ts, offset), today) {
                    Some(label) => label.to_owned(),
                    None => String::from(date.to_date_string()),
                };
                view! { <h3 class="day">{label}</h3> }
            });
            Either::Left(view! {
                {day}
                <article
                    class="msg"
                    class:own=own
                    class:grouped=grouped
                    title=String::from(date.to_locale_string("default", &JsValue::UNDEFINED))
                >
                    <header class="meta">
                        <span class="from">{from}</span>
                        <span class="api" title="Sent by an application" hidden=!api>"API"</span>
                        <time datetime=String::from(date.to_iso_string())>
                            {clock(date.get_hours(), date.get_minutes())}
                        </time>
                    </header>
                    // Escaped HTML with safe links only: markup in messages is shown, never
                    // interpreted (see `format::linkify_html`).
                    <p class="text" inner_html=linkify_html(&text)></p>
                </article>
            })
        }
        EntryKind::Notice { text, level } => {
            let class = match level {
                NoticeLevel::Info => "notice",
                NoticeLevel::Warning => "notice warning",
                NoticeLevel::Error => "notice error",
            };
            Either::Right(view! { <p class=class>{text}</p> })
        }
    }
}

/// A message of ours the relay has not acknowledged yet: clearly marked, and saying whether
/// it is on its way or waiting for the connection.
#[component]
fn PendingRow(pending: PendingMessage) -> impl IntoView {
    let client = expect_context::<ChatClient>();
    let waiting = move || client.state.with(|s| s.outage);
    view! {
        <article class="msg own pending">
            <header class="meta">
                <span class="from">"You"</span>
                <span class="sending">
                    {reactive(move || if waiting() { "Not sent yet · will send when back online" } else { "sending…" })}
                </span>
            </header>
            <p class="text">{pending.text}</p>
        </article>
    }
}
