//! The whole page: header, rooms and people on the side, the conversation in the middle.

use leptos::prelude::*;

use crate::{
    components::{Composer, ConnectionStatus, MemberList, MessageList, NameEditor, RoomList},
    identity,
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
    let state = ChatState::new(me.name, &me.browser_key, &me.tab_key);
    let client = ChatClient::start(url.unwrap_or_else(ws::default_url), state, me.tab_key);
    provide_context(client);
    let room_title = move || client.state.with(|s| format!("#{}", s.active_room));
    let member_count = move || {
        client
            .state
            .with(|s| s.active().map_or(0, |room| room.members.len()))
    };

    view! {
        <div class="app">
            <header class="topbar">
                <div class="brand">
                    <span class="logo" aria-hidden="true">"◆"</span>
                    <span>"Relay"</span>
                </div>
                <ConnectionStatus/>
                <NameEditor/>
            </header>
            <div class="layout">
                <aside class="sidebar">
                    <RoomList/>
                    <MemberList/>
                </aside>
                <main class="chat">
                    <div class="room-bar">
                        <h1 class="room-title">{room_title}</h1>
                        <span class="room-count">{member_count} " online"</span>
                    </div>
                    <MessageList/>
                    <Composer/>
                </main>
            </div>
        </div>
    }
}
