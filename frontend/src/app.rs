//! The whole page: header, rooms and people on the side (a drawer on phones), the
//! conversation in the middle.

use leptos::prelude::*;

use crate::{
    components::{
        Composer, ConnectionStatus, MemberList, MessageList, NameEditor, OutageBanner, RoomList,
        effect, on_click, reactive,
    },
    identity, sign_in,
    state::ChatState,
    ws::{self, ChatClient},
};

/// The chat app. Connects to `url`, or by default to `/ws` on the host that served the page.
#[component]
pub fn App(
    /// The relay's typed endpoint, e.g. `ws://127.0.0.1:8080/ws`.
    #[prop(optional, into)]
    url: Option<String>,
) -> impl IntoView {
    let me = identity::load();
    let mut state = ChatState::new(me.name, &me.browser_key, &me.tab_key);
    state.utc_offset_min = -(js_sys::Date::new_0().get_timezone_offset() as i32);
    let client = ChatClient::start(
        url.unwrap_or_else(ws::default_url),
        sign_in::token_url(),
        state,
        me.tab_key,
    );
    provide_context(client);
    let room_title = move || client.state.with(|s| format!("#{}", s.active_room));
    let member_count = move || {
        client.state.with(|s| {
            let count = s.active().map_or(0, |room| room.members.len());
            if s.outage {
                format!("{count} online · last known")
            } else {
                format!("{count} online")
            }
        })
    };

    // "(3) Relay · chat" while messages are unread.
    let document = document();
    let title = document.title();
    effect(Box::new(move || {
        match client.state.with(ChatState::total_unread) {
            0 => document.set_title(&title),
            n => document.set_title(&format!("({n}) {title}")),
        }
    }));

    // Rooms and people: beside the chat on wide screens, a drawer on phones.
    let drawer = RwSignal::new(false);
    let close_drawer = move || {
        if drawer.get_untracked() {
            drawer.set(false);
            if let Some(menu) = document_element("menu") {
                let _ = menu.focus();
            }
        }
    };

    view! {
        <div
            class="app"
            class:drawer=drawer
            on:keydown=move |ev| {
                if ev.key() == "Escape" && !ev.default_prevented() {
                    close_drawer();
                }
            }
        >
            <header class="topbar">
                <button
                    id="menu"
                    class="menu"
                    aria-label="Rooms and people"
                    aria-controls="side"
                    aria-expanded=move || drawer.get().to_string()
                    on:click=on_click(move |_| drawer.update(|open| *open = !*open))
                >
                    "☰"
                </button>
                <div class="brand">
                    <span class="logo" aria-hidden="true">"◆"</span>
                    <span>"Relay"</span>
                </div>
                <ConnectionStatus/>
            </header>
            <OutageBanner/>
            <div class="layout">
                <aside class="sidebar" id="side">
                    <NameEditor/>
                    <RoomList on_choose=Callback::new(move |()| close_drawer())/>
                    <MemberList/>
                </aside>
                <div class="scrim" aria-hidden="true" on:click=on_click(move |_| close_drawer())></div>
                <main class="chat">
                    <div class="room-bar">
                        <h1 class="room-title">{reactive(room_title)}</h1>
                        <span class="room-count">{reactive(member_count)}</span>
                    </div>
                    <MessageList/>
                    <Composer/>
                </main>
            </div>
        </div>
    }
}

fn document_element(id: &str) -> Option<web_sys::HtmlElement> {
    use wasm_bindgen::JsCast;
    document().get_element_by_id(id)?.dyn_into().ok()
}
