//! The open rooms, and a field to join another.

use leptos::prelude::*;

use super::{FormProblem, TextField, on_click, reactive};
use crate::{format::suggest_room, ws::ChatClient};

/// Open rooms with unread counts; click to show one, × to leave it (asking first when it
/// has unsent messages), or join a new one by name. A name that is not valid is offered in
/// its valid form ("Random Stuff" → `random-stuff`).
///
/// Rows are keyed by room name alone, so an unread count or the active room changing
/// updates a row in place and never takes the focus away from its button.
#[component]
pub fn RoomList(
    /// Called after a room was chosen (the phone layout closes its drawer).
    on_choose: Callback<()>,
) -> impl IntoView {
    let client = expect_context::<ChatClient>();
    let rooms = move || {
        client.state.with(|s| {
            s.rooms
                .iter()
                .map(|room| room.name.clone())
                .collect::<Vec<_>>()
        })
    };
    let can_close = move || client.state.with(|s| s.rooms.len() > 1);
    let draft = RwSignal::new(String::new());
    let (problem, set_problem) = signal(None::<String>);
    let join = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let typed = draft.get_untracked();
        match client.open_room(typed.trim()) {
            Ok(()) => {
                draft.set(String::new());
                set_problem.set(None);
                on_choose.run(());
            }
            Err(err) => {
                let suggestion = suggest_room(&typed);
                if suggestion.is_empty() {
                    set_problem.set(Some(err.message));
                } else {
                    set_problem.set(Some(format!(
                        "Room names use a-z, 0-9, - and _. Join “{suggestion}” instead?"
                    )));
                    draft.set(suggestion);
                }
            }
        }
    };

    view! {
        <nav class="rooms" aria-label="Rooms">
            <h2>"Rooms"</h2>
            <ul>
                <For
                    each=rooms
                    key=|name| (0, name.clone())
                    children=move |name| {
                        let unread = {
                            let name = name.clone();
                            move || client.state.with(|s| s.room(&name).map_or(0, |r| r.unread))
                        };
                        let active = {
                            let name = name.clone();
                            move || client.state.with(|s| s.active_room == name)
                        };
                        let label = {
                            let name = name.clone();
                            let unread = unread.clone();
                            move || match unread() {
                                0 => name.clone(),
                                n => format!("{name}, {n} unread"),
                            }
                        };
                        let show = name.clone();
                        let close = name.clone();
                        view! {
                            <li class="room" class:active=reactive(active.clone())>
                                <button
                                    class="room-name"
                                    aria-current={
                                        let active = active.clone();
                                        move || active().then_some("true")
                                    }
                                    aria-label=label
                                    on:click=on_click(move |_| {
                                        client.show_room(&show);
                                        on_choose.run(());
                                    })
                                >
                                    "#"
                                    {name.clone()}
                                    <span class="unread" aria-hidden="true" hidden=reactive(move || unread.clone()() == 0)>
                                        {unread.clone()}
                                    </span>
                                </button>
                                <button
                                    class="room-close"
                                    hidden=reactive(move || !can_close())
                                    aria-label=format!("Leave {name}")
                                    title="Leave room"
                                    on:click=on_click(move |_| {
                                        let unsent = client.state.with_untracked(|s| s.unsent_in(&close));
                                        let sure = unsent == 0
                                            || window()
                                                .confirm_with_message(&format!(
                                                    "#{close} has {unsent} unsent message(s). Leave it and discard them?"
                                                ))
                                                .unwrap_or(false);
                                        if sure {
                                            client.close_room(&close);
                                        }
                                    })
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
