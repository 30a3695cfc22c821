//! Who is in the room on screen.

use leptos::prelude::*;

use crate::ws::ChatClient;

/// The members of the active room, as the relay reports them; while offline, the last
/// known list, marked as such.
#[component]
pub fn MemberList() -> impl IntoView {
    let client = expect_context::<ChatClient>();
    let members = move || {
        client.state.with(|s| {
            s.active()
                .map(|room| room.members.clone())
                .unwrap_or_default()
        })
    };
    let me = move || client.state.with(|s| s.connection);
    let stale = move || client.state.with(|s| s.outage);
    view! {
        <section class="members" class:stale=super::reactive(stale) aria-label="People here">
            <h2>{super::reactive(move || if stale() { "Last seen (offline)" } else { "Here now" })}</h2>
            <ul>
                <For
                    each=members
                    key=|member| (member.connection, member.name.clone())
                    children=move |member| {
                        let is_me = move || me() == Some(member.connection);
                        view! {
                            <li class:me=super::reactive(is_me)>
                                <span class="avatar" aria-hidden="true">
                                    {member.name.chars().next().unwrap_or('?').to_string()}
                                </span>
                                <span class="member-name">{member.name.clone()}</span>
                                <span class="you" hidden=super::reactive(move || !is_me())>"(you)"</span>
                            </li>
                        }
                    }
                />
            </ul>
        </section>
    }
}
