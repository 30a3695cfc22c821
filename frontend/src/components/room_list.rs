//! The open rooms, and a field to join another.

use leptos::prelude::*;

use super::{FormProblem, TextField};
use crate::ws::ChatClient;

/// Open rooms with unread counts; click to show one, × to leave it, or join a new one by name.
#[component]
pub fn RoomList() -> impl IntoView {
    let client = expect_context::<ChatClient>();
    let rooms = move || {
        client.state.with(|s| {
            s.rooms
                .iter()
                .map(|room| (room.name.clone(), room.unread, room.name == s.active_room))
                .collect::<Vec<_>>()
        })
    };
    let can_close = move || client.state.with(|s| s.rooms.len() > 1);
    let draft = RwSignal::new(String::new());
    let (problem, set_problem) = signal(None::<String>);
    let join = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let room = draft.get_untracked().trim().to_lowercase();
        match client.open_room(&room) {
            Ok(()) => {
                draft.set(String::new());
                set_problem.set(None);
            }
            Err(err) => set_problem.set(Some(err.message)),
        }
    };

    view! {
        <nav class="rooms" aria-label="Rooms">
            <h2>"Rooms"</h2>
            <ul>
                <For
                    each=rooms
                    key=|room| room.clone()
                    children=move |(name, unread, active)| {
                        let show = name.clone();
                        let close = name.clone();
                        view! {
                            <li class="room" class:active=active>
                                <button
                                    class="room-name"
                                    aria-current=move || active.then_some("true")
                                    on:click=move |_| client.show_room(&show)
                                >
                                    "#"
                                    {name.clone()}
                                    {(unread > 0)
                                        .then(|| {
                                            view! {
                                                <span class="unread" aria-label="unread">{unread}</span>
                                            }
                                        })}
                                </button>
                                <button
                                        class="room-close"
                                        hidden=move || !can_close()
                                        aria-label=format!("Leave {name}")
                                        title="Leave room"
                                        on:click={
                                            let close = close.clone();
                                            move |_| client.close_room(&close)
                                        }
                                    >
                                        "×"
                                    </button>
                            </li>
                        }
                    }
                />
            </ul>
            <form class="join-room" on:submit=join>
                <TextField label="Room to join" placeholder="join a room…" value=draft/>
                <button type="submit" disabled=move || draft.with(|d| d.trim().is_empty())>
                    "Join"
                </button>
            </form>
            <FormProblem problem/>
        </nav>
    }
}
