//! The web client in a real browser (headless Chromium), against a live relay.
//!
//! `scripts/test.sh` starts the relay and passes its `/ws` URL at compile time in
//! `RELAY_TEST_WS_URL`; without it these tests fail at once rather than pass vacuously.
#![cfg(target_arch = "wasm32")]

use std::time::Duration;

use common::{ClientMessage, ServerMessage};
use frontend::App;
use futures::{
    SinkExt, StreamExt,
    future::{Either, select},
};
use gloo_net::websocket::{Message, futures::WebSocket};
use gloo_timers::future::TimeoutFuture;
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use web_sys::{Element, HtmlButtonElement, HtmlElement, HtmlTextAreaElement};

wasm_bindgen_test_configure!(run_in_browser);

/// Longest any step may take.
const WAIT: Duration = Duration::from_secs(10);

fn relay_url() -> String {
    match option_env!("RELAY_TEST_WS_URL") {
        Some(url) => url.to_owned(),
        None => panic!(
            "set RELAY_TEST_WS_URL to a running relay's /ws URL when building (scripts/test.sh does)"
        ),
    }
}

/// A unique suffix, so tests sharing the lobby cannot confuse each other's messages.
fn unique() -> String {
    format!(
        "{:08x}",
        (js_sys::Math::random() * f64::from(u32::MAX)) as u32
    )
}

/// Mounts the app, connected to the test relay, in a fresh container; it stays mounted for
/// the rest of the page's life.
fn mount_app() -> Element {
    let (container, handle) = mount_app_at(relay_url());
    handle.forget();
    container
}

/// Mounts the app connected to `url`; dropping the handle unmounts it, like closing the page.
fn mount_app_at(url: String) -> (Element, leptos::mount::UnmountHandle<impl Mountable>) {
    let document = web_sys::window().unwrap().document().unwrap();
    let container = document.create_element("div").unwrap();
    document.body().unwrap().append_child(&container).unwrap();
    let handle = leptos::mount::mount_to(
        container.clone().unchecked_into(),
        move || view! { <App url=url.clone()/> },
    );
    (container, handle)
}

/// Polls `check` every 20 ms until it returns `Some`, failing after [`WAIT`].
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = js_sys::Date::now() + WAIT.as_millis() as f64;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            js_sys::Date::now() < deadline,
            "timed out waiting for {what}"
        );
        TimeoutFuture::new(20).await;
    }
}

fn find<T: JsCast>(container: &Element, selector: &str) -> Option<T> {
    container
        .query_selector(selector)
        .ok()
        .flatten()
        .and_then(|element| element.dyn_into::<T>().ok())
}

fn text_of(container: &Element, selector: &str) -> String {
    find::<Element>(container, selector)
        .and_then(|element| element.text_content())
        .unwrap_or_default()
}

async fn wait_until_connected(app: &Element) {
    eventually("the Connected status", || {
        text_of(app, "[role=status]")
            .contains("Connected")
            .then_some(())
    })
    .await;
    // Joined the lobby: the member list shows us.
    eventually("our entry in the member list", || {
        find::<Element>(app, ".members li.me").map(drop)
    })
    .await;
}

/// Types `text` into the message box the way a user would: set the value, fire `input`.
fn type_message(app: &Element, text: &str) -> HtmlTextAreaElement {
    let input: HtmlTextAreaElement =
        find(app, "textarea[aria-label=Message]").expect("message box");
    input.set_value(text);
    let init = web_sys::EventInit::new();
    init.set_bubbles(true);
    let event = web_sys::Event::new_with_event_init_dict("input", &init).unwrap();
    input.dispatch_event(&event).unwrap();
    input
}

/// A second client speaking the protocol directly, in the lobby.
struct Observer {
    socket: WebSocket,
}

impl Observer {
    async fn join_lobby() -> Observer {
        let mut socket = WebSocket::open(&relay_url()).expect("open observer socket");
        let join = ClientMessage::Join {
            room: "lobby".into(),
            name: "Observer".into(),
            since: None,
        };
        socket
            .send(Message::Text(serde_json::to_string(&join).unwrap()))
            .await
            .unwrap();
        let mut observer = Observer { socket };
        observer
            .next_matching("joined", |event| {
                matches!(event, ServerMessage::Joined { .. })
            })
            .await;
        observer
    }

    async fn say(&mut self, text: &str) {
        let send = ClientMessage::Send {
            room: "lobby".into(),
            id: format!("observer-{}", unique()),
            text: text.into(),
            resend: false,
        };
        self.socket
            .send(Message::Text(serde_json::to_string(&send).unwrap()))
            .await
            .unwrap();
    }

    async fn next_matching(
        &mut self,
        what: &str,
        wanted: impl Fn(&ServerMessage) -> bool,
    ) -> ServerMessage {
        let deadline = TimeoutFuture::new(WAIT.as_millis() as u32);
        futures::pin_mut!(deadline);
        loop {
            match select(self.socket.next(), deadline.as_mut()).await {
                Either::Left((Some(Ok(Message::Text(text))), _)) => {
                    let event: ServerMessage = serde_json::from_str(&text).unwrap();
                    if wanted(&event) {
                        return event;
                    }
                }
                Either::Left((other, _)) => panic!("observer socket ended: {:?}", other.is_some()),
                Either::Right(_) => panic!("timed out waiting for {what}"),
            }
        }
    }
}

#[wasm_bindgen_test]
async fn the_app_renders_connects_and_disables_send_while_empty() {
    let app = mount_app();
    assert!(find::<Element>(&app, "[role=log]").is_some(), "message log");
    let send: HtmlButtonElement = find(&app, "form.composer button").expect("send button");
    assert_eq!(send.text_content().as_deref(), Some("Send"));
    assert!(send.disabled(), "Send is disabled while the draft is empty");
    wait_until_connected(&app).await;
    type_message(&app, "draft");
    eventually("Send to enable", || (!send.disabled()).then_some(())).await;
    type_message(&app, "   ");
    eventually("Send to disable again", || send.disabled().then_some(())).await;
}

#[wasm_bindgen_test]
async fn typing_and_clicking_send_delivers_through_the_relay() {
    let mut observer = Observer::join_lobby().await;
    let app = mount_app();
    wait_until_connected(&app).await;

    let text = format!("hello from the browser {}", unique());
    let input = type_message(&app, &text);
    let send: HtmlButtonElement = find(&app, "form.composer button").unwrap();
    eventually("Send to enable", || (!send.disabled()).then_some(())).await;
    send.unchecked_ref::<HtmlElement>().click();

    let delivered = observer
        .next_matching(
            "the browser's message",
            |event| matches!(event, ServerMessage::Message(m) if m.text == text),
        )
        .await;
    let ServerMessage::Message(delivered) = delivered else {
        unreachable!()
    };
    assert_eq!(delivered.room, "lobby");
    eventually("the input to clear", || {
        input.value().is_empty().then_some(())
    })
    .await;
    eventually("our own message in the log, confirmed", || {
        let own = text_of(&app, "[role=log] .msg.own:not(.pending)");
        own.contains(&text).then_some(())
    })
    .await;
}

#[wasm_bindgen_test]
async fn a_message_from_another_client_appears_as_text() {
    let mut observer = Observer::join_lobby().await;
    let app = mount_app();
    wait_until_connected(&app).await;

    let text = format!("<b>not bold</b> {}", unique());
    observer.say(&text).await;
    eventually("the other client's message in the log", || {
        text_of(&app, "[role=log]").contains(&text).then_some(())
    })
    .await;
    assert!(
        find::<Element>(&app, "[role=log] b").is_none(),
        "message text must never become markup"
    );
    assert!(text_of(&app, "[role=log]").contains("Observer"));
}

#[wasm_bindgen_test]
async fn unmounting_the_app_closes_its_connection() {
    let mut observer = Observer::join_lobby().await;
    let (app, page) = mount_app_at(relay_url());
    wait_until_connected(&app).await;
    // wasm-bindgen-test runs one test at a time and earlier apps stay connected, so the
    // next member to join the lobby is this app.
    let ServerMessage::MemberJoined { member: ours, .. } = observer
        .next_matching("the app joining the lobby", |event| {
            matches!(event, ServerMessage::MemberJoined { .. })
        })
        .await
    else {
        unreachable!()
    };

    drop(page);
    // The relay sees the socket close at once, not after a heartbeat timeout.
    observer
        .next_matching(
            "the app leaving the lobby",
            |event| matches!(event, ServerMessage::MemberLeft { member, .. } if *member == ours),
        )
        .await;
}

#[wasm_bindgen_test]
async fn messages_sent_offline_survive_closing_the_page_and_are_delivered_once() {
    // A page that cannot reach any relay keeps what the user sends, as pending...
    let (offline, page) = mount_app_at("ws://127.0.0.1:1/ws".into());
    eventually("the Offline status", || {
        text_of(&offline, "[role=status]")
            .contains("Offline")
            .then_some(())
    })
    .await;
    let text = format!("written offline {}", unique());
    type_message(&offline, &text);
    let send: HtmlButtonElement = find(&offline, "form.composer button").unwrap();
    eventually("Send to enable", || (!send.disabled()).then_some(())).await;
    send.unchecked_ref::<HtmlElement>().click();
    eventually("the pending message", || {
        text_of(&offline, ".msg.pending")
            .contains(&text)
            .then_some(())
    })
    .await;
    // ...and in localStorage, so closing that page loses nothing.
    drop(page);

    // The next page that reaches the relay delivers it, once.
    let mut observer = Observer::join_lobby().await;
    let app = mount_app();
    observer
        .next_matching(
            "the message written offline",
            |event| matches!(event, ServerMessage::Message(m) if m.text == text),
        )
        .await;
    let marker = format!("marker {}", unique());
    observer.say(&marker).await;
    let next = observer
        .next_matching("the next message", |event| {
            matches!(event, ServerMessage::Message(_))
        })
        .await;
    assert!(
        matches!(&next, ServerMessage::Message(m) if m.text == marker),
        "the offline message was published again: {next:?}"
    );
    eventually("the delivered message in the new page's log", || {
        text_of(&app, "[role=log]").contains(&text).then_some(())
    })
    .await;
}

/// One of each server message, with every optional field both ways.
fn every_server_message() -> Vec<ServerMessage> {
    use common::{ChatMessage, ErrorCode, Limits, Member, Recovery};
    let member = Member::anonymous(9, "Zoë \"quoted\" <b>");
    let user = Member {
        user: Some("ada".into()),
        connections: 3,
        ..Member::anonymous(9_007_199_254_740_000, "Ada")
    };
    let mut messages = vec![
        ServerMessage::Welcome {
            protocol: 1,
            server: "relay/0.1.0".into(),
            connection: 7,
            default_room: "lobby".into(),
            limits: Limits::default(),
            auth_required: false,
        },
        ServerMessage::Welcome {
            protocol: 1,
            server: "relay/0.1.0".into(),
            connection: 7,
            default_room: "lobby".into(),
            limits: Limits::default(),
            auth_required: true,
        },
        ServerMessage::Authenticated {
            user: Some("ada".into()),
            name: Some("Ada".into()),
            expires_at: Some(1_764_000_000_000),
        },
        ServerMessage::Authenticated {
            user: None,
            name: None,
            expires_at: None,
        },
        ServerMessage::MemberJoined {
            room: "r".into(),
            member: user.clone(),
        },
        ServerMessage::Left { room: "r".into() },
        ServerMessage::Pong,
        ServerMessage::Message(ChatMessage {
            room: "r".into(),
            epoch: "e1".into(),
            offset: 9_007_199_254_740_000,
            from: "Ada".into(),
            text: "line\nbreak, emoji 🎉, \\ and \u{0}".into(),
            ts: 1_764_000_000_123,
            id: Some("a-1".into()),
            api: false,
        }),
        ServerMessage::Message(ChatMessage {
            room: "lobby".into(),
            epoch: "e1".into(),
            offset: 1,
            from: "guest-3".into(),
            text: "plain".into(),
            ts: 5,
            id: None,
            api: true,
        }),
        ServerMessage::Ack {
            id: "a-1".into(),
            room: "r".into(),
            epoch: "e1".into(),
            offset: 4,
            ts: 6,
            duplicate: true,
        },
        ServerMessage::MemberJoined {
            room: "r".into(),
            member: member.clone(),
        },
        ServerMessage::MemberLeft {
            room: "r".into(),
            member: member.clone(),
        },
    ];
    for recovery in [
        Recovery::NotRequested,
        Recovery::Recovered,
        Recovery::Unrecoverable,
    ] {
        messages.push(ServerMessage::Joined {
            room: "r".into(),
            epoch: "e2".into(),
            offset: 12,
            members: vec![member.clone(), member.clone()],
            recovery,
        });
    }
    for code in ErrorCode::ALL {
        messages.push(ServerMessage::Error {
            code,
            message: "why".into(),
            id: None,
            room: None,
        });
    }
    messages.push(ServerMessage::Error {
        code: ErrorCode::NotJoined,
        message: "join first".into(),
        id: Some("x".into()),
        room: Some("r".into()),
    });
    messages
}

#[wasm_bindgen_test]
fn the_browser_json_codec_agrees_with_the_protocol_crate() {
    for message in every_server_message() {
        let wire = serde_json::to_string(&message).unwrap();
        assert_eq!(frontend::wire::decode(&wire), Ok(message), "{wire}");
    }
    assert!(frontend::wire::decode("{\"type\":\"shout\"}").is_err());
    assert!(frontend::wire::decode("not json").is_err());
    assert!(
        frontend::wire::decode("{\"type\":\"left\"}").is_err(),
        "missing room"
    );

    let clients = [
        ClientMessage::Join {
            room: "r".into(),
            name: "Zoë \"q\"".into(),
            since: None,
        },
        ClientMessage::Join {
            room: "r".into(),
            name: "n".into(),
            since: Some(common::Position {
                epoch: "e".into(),
                offset: 77,
            }),
        },
        ClientMessage::Leave { room: "r".into() },
        ClientMessage::Ping,
        ClientMessage::Send {
            room: "r".into(),
            id: "i".into(),
            text: "multi\nline \\ \"quoted\" 🎉".into(),
            resend: false,
        },
        ClientMessage::Send {
            room: "r".into(),
            id: "i".into(),
            text: "again".into(),
            resend: true,
        },
        ClientMessage::Auth {
            token: Some("t.o.k".into()),
        },
        ClientMessage::Auth { token: None },
        ClientMessage::Refresh {
            token: "t.o.k".into(),
        },
    ];
    for message in clients {
        let wire = frontend::wire::encode(&message);
        assert_eq!(common::parse_client_message(&wire), Ok(message), "{wire}");
    }
}

#[wasm_bindgen_test]
fn a_token_is_read_from_json_or_plain_text_answers_only() {
    use frontend::wire::token_from_body;
    let token = Some("eyJ.eyJ.sig".to_owned());
    assert_eq!(token_from_body(r#"{"token": "eyJ.eyJ.sig"}"#), token);
    assert_eq!(
        token_from_body(" {\"token\":\"eyJ.eyJ.sig\",\"ttl\":60}\n"),
        token
    );
    assert_eq!(token_from_body("eyJ.eyJ.sig\n"), token);
    for refused in [
        "",
        "  ",
        "{}",
        r#"{"token": ""}"#,
        r#"{"token": 7}"#,
        "{not json",
        "<html>sign in</html> page",
    ] {
        assert_eq!(token_from_body(refused), None, "{refused}");
    }
}
