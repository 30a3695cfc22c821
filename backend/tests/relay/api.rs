//! The HTTP server API against a real relay: what an application's backend can rely on.

use std::time::Duration;

use backend::{config::Config, engine::Retention};
use common::{
    api::{
        BroadcastResponse, BroadcastResult, HistoryPage, HistoryUnavailable, Presence, Published,
    },
    close_code,
};
use serde_json::json;

use crate::helpers::{
    Api, TestRelay, api_config, eventually, http_request, spawn_relay_with, test_config,
    unthrottled,
};

async fn api_relay() -> TestRelay {
    api_relay_with(|_| {}).await
}

/// [`api_relay`] with `change` made to its configuration.
async fn api_relay_with(change: impl FnOnce(&mut Config)) -> TestRelay {
    let (mut config, data) = api_config();
    unthrottled(&mut config);
    change(&mut config);
    spawn_relay_with(config, data).await
}

#[tokio::test]
async fn a_publish_reaches_typed_and_plain_clients_in_order_with_client_messages() {
    let relay = api_relay().await;
    let api = relay.api();
    let mut typed = relay.member("lobby", "Ada").await;
    let mut plain = relay.plain().await;
    let mut sender = relay.member("lobby", "Bo").await;
    let payload = r#"{"order":42,"status":"shipped"}"#;

    sender.say("lobby", "bo-1", "before").await;
    assert_eq!(typed.next_message_text().await, "before");
    let published = api
        .publish("lobby", payload, Some("order-42-shipped"))
        .await;
    sender.say("lobby", "bo-2", "after").await;

    let pushed = typed.next_message().await;
    assert_eq!(
        (pushed.text.as_str(), pushed.from.as_str(), pushed.api),
        (payload, "server", true)
    );
    assert_eq!(
        (pushed.offset, pushed.ts, pushed.epoch.as_str()),
        (published.offset, published.ts, published.epoch.as_str()),
        "the answer names the position members see"
    );
    assert!(!published.duplicate);
    let after = typed.next_message().await;
    assert_eq!((after.text.as_str(), after.api), ("after", false));
    assert_eq!(after.offset, published.offset + 1);

    // Plain clients get a pushed payload byte for byte, chat lines as `name: text`.
    assert_eq!(plain.next_text().await, "Bo: before");
    assert_eq!(plain.next_text().await, payload);
    assert_eq!(plain.next_text().await, "Bo: after");
}

#[tokio::test]
async fn the_same_idempotency_key_publishes_once_and_answers_the_original_position() {
    let relay = api_relay().await;
    let api = relay.api();
    let mut member = relay.member("orders", "Ada").await;
    let first = api.publish("orders", "shipped", Some("order-7")).await;
    let again = api.publish("orders", "shipped", Some("order-7")).await;
    assert_eq!(
        (again.offset, again.ts, &again.epoch),
        (first.offset, first.ts, &first.epoch)
    );
    assert!(!first.duplicate && again.duplicate);
    // Without a key, every call publishes.
    api.publish("orders", "no key", None).await;
    api.publish("orders", "no key", None).await;
    let texts = [
        member.next_message_text().await,
        member.next_message_text().await,
        member.next_message_text().await,
    ];
    assert_eq!(
        texts,
        ["shipped", "no key", "no key"],
        "the retry was not delivered"
    );
}

#[tokio::test]
async fn a_key_reused_for_another_message_is_a_conflict_and_publishes_nothing() {
    let relay = api_relay().await;
    let api = relay.api();
    let mut member = relay.member("orders", "Ada").await;
    let first = api.publish("orders", "shipped", Some("order-8")).await;
    let other_text = api
        .post(
            "/api/publish",
            json!({"room": "orders", "text": "cancelled", "idempotency_key": "order-8"}),
        )
        .await;
    assert_eq!(other_text.refusal(), (409, "idempotency_conflict".into()));
    let other_sender = api
        .post(
            "/api/publish",
            json!({"room": "orders", "text": "shipped", "from": "shop",
                   "idempotency_key": "order-8"}),
        )
        .await;
    assert_eq!(other_sender.refusal(), (409, "idempotency_conflict".into()));
    assert_eq!(member.next_message_text().await, "shipped");
    // Keys are client ids: one namespace with the WebSocket protocol's `send` ids.
    member.say("orders", "ada-1", "hello").await;
    assert_eq!(member.next_message_text().await, "hello");
    assert!(matches!(
        member.next_non_presence().await,
        common::ServerMessage::Ack {
            duplicate: false,
            ..
        }
    ));
    let answer = api
        .post(
            "/api/publish",
            json!({"room": "orders", "text": "not hello", "idempotency_key": "ada-1"}),
        )
        .await;
    assert_eq!(answer.refusal(), (409, "idempotency_conflict".into()));
    // The same key in another room is another message.
    let elsewhere = api.publish("invoices", "shipped", Some("order-8")).await;
    assert!(!elsewhere.duplicate);

    api.publish("orders", "sentinel", None).await;
    assert_eq!(member.next_message_text().await, "sentinel");
    let page: HistoryPage = api.get("/api/rooms/orders/history").await.parse();
    assert_eq!(page.top, first.offset + 2, "nothing else was stored");
}

#[tokio::test]
async fn every_refusal_has_its_status_and_json_code_and_changes_nothing() {
    let (mut config, data) = api_config();
    config.max_message_bytes = 1000;
    config.send_queue.max_bytes = 1 << 20;
    let relay = spawn_relay_with(config, data).await;
    let api = relay.api();
    let mut member = relay.member("lobby", "Ada").await;
    let valid = json!({"room": "lobby", "text": "ok"}).to_string();
    let cases: Vec<(&str, &str, String, (u16, &str))> = vec![
        (
            "POST",
            "/api/publish",
            "{not json".into(),
            (400, "bad_json"),
        ),
        (
            "POST",
            "/api/publish",
            "[1, 2]".into(),
            (400, "invalid_message"),
        ),
        // serde alone would read an array of the fields' values as the struct.
        (
            "POST",
            "/api/publish",
            r#"["lobby", "hi"]"#.into(),
            (400, "invalid_message"),
        ),
        (
            "POST",
            "/api/publish",
            json!({"room": "lobby", "text": "x", "colour": "red"}).to_string(),
            (400, "invalid_message"),
        ),
        (
            "POST",
            "/api/publish",
            json!({"room": "Lobby!", "text": "x"}).to_string(),
            (400, "invalid_room"),
        ),
        (
            "POST",
            "/api/publish",
            json!({"room": "lobby", "text": "  "}).to_string(),
            (400, "empty_text"),
        ),
        (
            "POST",
            "/api/publish",
            json!({"room": "lobby", "text": "x".repeat(1001)}).to_string(),
            (400, "text_too_long"),
        ),
        (
            "POST",
            "/api/publish",
            json!({"room": "lobby", "text": "x", "from": " padded"}).to_string(),
            (400, "invalid_name"),
        ),
        (
            "POST",
            "/api/publish",
            json!({"room": "lobby", "text": "x", "idempotency_key": ""}).to_string(),
            (400, "invalid_id"),
        ),
        (
            "POST",
            "/api/publish",
            format!(r#"{{"room": "lobby", "text": "{}"}}"#, "x".repeat(40_000)),
            (413, "body_too_large"),
        ),
        (
            "POST",
            "/api/nothing-here",
            valid.clone(),
            (404, "not_found"),
        ),
        ("GET", "/api/", String::new(), (404, "not_found")),
        ("GET", "/api", String::new(), (404, "not_found")),
        (
            "GET",
            "/api/publish",
            String::new(),
            (405, "method_not_allowed"),
        ),
        (
            "POST",
            "/api/disconnect",
            json!({"connection": 999_999}).to_string(),
            (404, "not_found"),
        ),
        (
            "GET",
            "/api/rooms/lobby/history?limit=0",
            String::new(),
            (400, "invalid_message"),
        ),
        (
            "GET",
            "/api/rooms/lobby/history?after=5&surprise=1",
            String::new(),
            (400, "invalid_message"),
        ),
        (
            "GET",
            "/api/rooms/NOT%20A%20ROOM/presence",
            String::new(),
            (400, "invalid_room"),
        ),
        (
            "GET",
            "/api/rooms/lobby/history?after=99",
            String::new(),
            (416, "history_unavailable"),
        ),
    ];
    for (method, path, body, expected) in &cases {
        let answer = api.call(method, path, body).await;
        let (status, code) = answer.refusal();
        assert_eq!(
            (status, code.as_str()),
            *expected,
            "{method} {path}: {}",
            answer.body
        );
        assert!(!answer.json()["message"].as_str().unwrap().is_empty());
    }
    // Without a valid key: 401, whatever the operation (an unknown one and a wrong method
    // included: they say nothing about the API to a caller without a key), saying how to
    // authenticate.
    let operations = [
        ("POST", "/api/publish"),
        ("GET", "/api/stats"),
        ("GET", "/api/publish"),
        ("POST", "/api/nothing-here"),
        ("GET", "/api"),
    ];
    for authorization in ["", "Bearer wrong-key-0123456789", "Basic dGVzdA=="] {
        let headers: Vec<(&str, &str)> = if authorization.is_empty() {
            Vec::new()
        } else {
            vec![("Authorization", authorization)]
        };
        for (method, path) in operations {
            let answer =
                http_request(relay.address, method, path, &headers, valid.as_bytes()).await;
            assert_eq!(
                answer.refusal(),
                (401, "unauthorized".into()),
                "{authorization} {method} {path}"
            );
            assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
        }
    }
    // Nothing was published by any of it, and everything still works.
    api.publish("lobby", "still fine", None).await;
    assert_eq!(member.next_message_text().await, "still fine");
    member.say("lobby", "ada-1", "me too").await;
    assert_eq!(member.next_message_text().await, "me too");
    let page: HistoryPage = api.get("/api/rooms/lobby/history").await.parse();
    assert_eq!(page.top, 2);
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after_and_other_keys_do_not() {
    let (mut config, data) = api_config();
    config.api.keys.push("second-key-0123456789".into());
    config.api.rate.per_second = 0.5;
    config.api.rate.burst = 3;
    let relay = spawn_relay_with(config, data).await;
    let api = relay.api();
    for _ in 0..3 {
        assert_eq!(api.get("/api/stats").await.status, 200);
    }
    let refused = api.get("/api/stats").await;
    assert_eq!(refused.refusal(), (429, "rate_limited".into()));
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let other = Api {
        key: "second-key-0123456789".into(),
        ..api.clone()
    };
    assert_eq!(other.get("/api/stats").await.status, 200);
}

#[tokio::test]
async fn without_a_configured_key_the_api_is_off() {
    let (config, data) = test_config();
    let relay = spawn_relay_with(config, data).await;
    let answer = relay.api().get("/api/stats").await;
    assert_eq!(answer.refusal(), (404, "api_disabled".into()));
}

#[tokio::test]
async fn a_broadcast_publishes_in_every_room_with_a_result_each() {
    let relay = api_relay().await;
    let api = relay.api();
    let mut red = relay.member("red", "Ada").await;
    let mut blue = relay.member("blue", "Bo").await;
    let answer = api
        .post(
            "/api/broadcast",
            json!({"rooms": ["red", "green", "blue"], "text": "sale!", "from": "shop",
                   "idempotency_key": "sale-1"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let response: BroadcastResponse = answer.parse();
    let rooms: Vec<(&str, u64, bool)> = response
        .results
        .iter()
        .map(|result| match result {
            BroadcastResult::Published(p) => (p.room.as_str(), p.offset, p.duplicate),
            BroadcastResult::Failed { room, error } => panic!("{room}: {error:?}"),
        })
        .collect();
    assert_eq!(
        rooms,
        [("red", 1, false), ("green", 1, false), ("blue", 1, false)]
    );
    for member in [&mut red, &mut blue] {
        let message = member.next_message().await;
        assert_eq!(
            (message.text.as_str(), message.from.as_str()),
            ("sale!", "shop")
        );
    }
    // Again: a duplicate in every room.
    let again: BroadcastResponse = api
        .post(
            "/api/broadcast",
            json!({"rooms": ["red", "green", "blue"], "text": "sale!", "from": "shop",
                   "idempotency_key": "sale-1"}),
        )
        .await
        .parse();
    assert!(
        again
            .results
            .iter()
            .all(|r| matches!(r, BroadcastResult::Published(p) if p.duplicate))
    );

    let too_many: Vec<String> = (0..101).map(|n| format!("room-{n}")).collect();
    let answer = api
        .post("/api/broadcast", json!({"rooms": too_many, "text": "x"}))
        .await;
    assert_eq!(answer.refusal(), (400, "too_many_rooms".into()));
    let answer = api
        .post(
            "/api/broadcast",
            json!({"rooms": ["red", "red"], "text": "x"}),
        )
        .await;
    assert_eq!(answer.refusal(), (400, "invalid_message".into()));
}

/// Every message of `room`, paged `limit` at a time from `after`.
async fn page_through(api: &Api, room: &str, epoch: &str, mut after: u64, limit: u64) -> Vec<u64> {
    let mut offsets = Vec::new();
    for _ in 0..1000 {
        let answer = api
            .get(&format!(
                "/api/rooms/{room}/history?after={after}&epoch={epoch}&limit={limit}"
            ))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let page: HistoryPage = answer.parse();
        assert!(page.messages.len() as u64 <= limit);
        offsets.extend(page.messages.iter().map(|m| m.offset));
        if !page.more {
            return offsets;
        }
        after = page
            .messages
            .last()
            .expect("a page with more is not empty")
            .offset;
    }
    panic!("paging did not end");
}

#[tokio::test]
async fn history_pages_without_gaps_and_refuses_positions_retention_removed() {
    let relay = api_relay_with(|config| keep(config, 20, Duration::from_millis(20))).await;
    let api = relay.api();
    for n in 1..=50 {
        api.publish("news", &format!("n{n}"), Some(&format!("k{n}")))
            .await;
    }
    let epoch = api.publish("news", "n51", None).await.epoch;
    retention_keeps_from(&api, "news", &epoch, 32).await;
    let gone: HistoryUnavailable = api
        .get(&format!("/api/rooms/news/history?after=5&epoch={epoch}"))
        .await
        .parse();
    assert_eq!(
        (gone.epoch.as_str(), gone.oldest, gone.top),
        (epoch.as_str(), 32, 51)
    );
    // From the oldest kept, page by page: every message once, in order.
    assert_eq!(
        page_through(&api, "news", &epoch, 31, 7).await,
        (32..=51).collect::<Vec<_>>()
    );
    // The newest N without a position.
    let newest: HistoryPage = api.get("/api/rooms/news/history?limit=3").await.parse();
    let texts: Vec<&str> = newest.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!((texts, newest.more), (vec!["n49", "n50", "n51"], false));
    // Another epoch, or past the top: 416, never a page.
    let other = api
        .get("/api/rooms/news/history?after=40&epoch=not-the-epoch")
        .await;
    assert_eq!(other.refusal(), (416, "history_unavailable".into()));
    let past = api
        .get(&format!("/api/rooms/news/history?after=52&epoch={epoch}"))
        .await;
    assert_eq!(past.refusal(), (416, "history_unavailable".into()));
    // A key whose message retention removed publishes again: de-duplication lasts as long
    // as the room keeps the message, as documented.
    let republished = api.publish("news", "n1", Some("k1")).await;
    assert_eq!((republished.offset, republished.duplicate), (52, false));
}

#[tokio::test]
async fn rooms_holding_more_ids_than_the_budget_have_retention_run_ahead_of_its_schedule() {
    let relay = api_relay_with(|config| {
        // The scheduled pass runs at start-up, then not for an hour.
        keep(config, 10, Duration::from_secs(3600));
        config.test_id_budget = Some(20);
    })
    .await;
    let api = relay.api();
    let mut epoch = String::new();
    for n in 1..=40 {
        let key = format!("k{n}");
        epoch = api
            .publish("busy", &format!("n{n}"), Some(&key))
            .await
            .epoch;
    }
    // 40 ids held against a budget of 20, all in a room in use: the store asks for a pass,
    // which keeps the newest 10, well before the hour is up.
    retention_keeps_from(&api, "busy", &epoch, 31).await;
}

/// Retention keeping `max_messages` per room, a pass every `prune_interval`; rooms hold
/// half as many in memory.
fn keep(config: &mut Config, max_messages: u64, prune_interval: Duration) {
    config.retention = Retention {
        max_messages,
        ..Config::default().retention
    };
    config.history_len = max_messages as usize / 2;
    config.prune_interval = prune_interval;
}

/// Waits until `room`'s history under `epoch` starts at offset `oldest`: asked for all of
/// it, the API answers 416 with the oldest offset kept.
async fn retention_keeps_from(api: &Api, room: &str, epoch: &str, oldest: u64) {
    eventually(
        &format!("retention to keep {room} from {oldest}"),
        || async {
            let answer = api
                .get(&format!("/api/rooms/{room}/history?after=0&epoch={epoch}"))
                .await;
            answer.status == 416 && answer.parse::<HistoryUnavailable>().oldest == oldest
        },
    )
    .await;
}

#[tokio::test]
async fn presence_rooms_and_stats_show_who_is_where() {
    let relay = api_relay().await;
    let api = relay.api();
    let (mut ada, ada_id) = relay.typed().await;
    ada.join("support", "Ada").await;
    let mut bo = relay.member("support", "Bo").await;
    bo.join("lobby", "Bo").await;

    let presence: Presence = api.get("/api/rooms/support/presence").await.parse();
    let names: Vec<&str> = presence.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["Ada", "Bo"]);
    assert_eq!(presence.members[0].connection, ada_id);
    let empty: Presence = api.get("/api/rooms/nobody-here/presence").await.parse();
    assert!(empty.members.is_empty());

    api.publish("support", "hi", None).await;
    let rooms = api.get("/api/rooms").await.json();
    assert_eq!(
        rooms["rooms"],
        json!([
            {"room": "lobby", "epoch": rooms["rooms"][0]["epoch"], "members": 1, "top": 0},
            {"room": "support", "epoch": rooms["rooms"][1]["epoch"], "members": 2, "top": 1},
        ])
    );
    let stats = api.get("/api/stats").await.json();
    assert_eq!(
        (stats["connections"].as_u64(), stats["rooms"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(stats["messages_published"].as_u64(), Some(1));

    drop(ada);
    eventually("Ada to leave", || async {
        let presence: Presence = api.get("/api/rooms/support/presence").await.parse();
        presence.members.len() == 1
    })
    .await;
}

#[tokio::test]
async fn disconnect_closes_one_connection_with_4002_and_leaves_the_others() {
    let relay = api_relay().await;
    let api = relay.api();
    let (mut target, target_id) = relay.typed().await;
    target.join("lobby", "Target").await;
    let mut other = relay.member("lobby", "Other").await;
    let answer = api
        .post("/api/disconnect", json!({"connection": target_id}))
        .await;
    assert_eq!(
        (answer.status, answer.json()),
        (200, json!({"disconnected": 1}))
    );
    let frame = target.close_frame().await.expect("a close code");
    assert_eq!(u16::from(frame.code), close_code::DISCONNECTED);
    eventually("the connection to be gone", || async {
        api.post("/api/disconnect", json!({"connection": target_id}))
            .await
            .status
            == 404
    })
    .await;
    api.publish("lobby", "still here", None).await;
    assert_eq!(other.next_message_text().await, "still here");
}

/// [`api_relay`] with rooms the API used closing `linger` after it.
async fn relay_lingering(linger: Duration) -> TestRelay {
    api_relay_with(|config| config.room_linger = linger).await
}

/// How many times the relay has read a room from its engine to open it.
async fn rooms_read(relay: &TestRelay) -> u64 {
    let metrics = crate::helpers::http_get(relay.address, "/metrics").await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("relay_rooms_read_total "))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no relay_rooms_read_total in:\n{metrics}"))
}

#[tokio::test]
async fn a_room_the_api_used_stays_open_for_the_linger_then_closes() {
    let relay = relay_lingering(Duration::from_millis(1500)).await;
    let api = relay.api();
    let before = rooms_read(&relay).await;
    for n in 1..=5 {
        let published: Published = api.publish("pushes", &format!("push {n}"), None).await;
        assert_eq!(published.offset, n);
    }
    assert_eq!(
        rooms_read(&relay).await - before,
        1,
        "five publishes in a row read the room once"
    );
    let rooms = api.get("/api/rooms").await.json();
    assert_eq!(rooms["rooms"][0]["room"], "pushes", "{rooms}");
    assert_eq!(rooms["rooms"][0]["members"], 0, "{rooms}");

    eventually("the room to close after its linger", || async {
        api.get("/api/rooms").await.json()["rooms"] == json!([])
    })
    .await;
    let published: Published = api.publish("pushes", "push 6", None).await;
    assert_eq!(published.offset, 6);
    assert_eq!(rooms_read(&relay).await - before, 2, "reopened once");
}

#[tokio::test]
async fn a_member_leaving_a_lingering_room_does_not_close_it() {
    let relay = relay_lingering(Duration::from_secs(60)).await;
    let api = relay.api();
    let member = relay.member("shared", "Ada").await;
    api.publish("shared", "from the app", None).await;
    drop(member);
    eventually("Ada to leave", || async {
        let presence: Presence = api.get("/api/rooms/shared/presence").await.parse();
        presence.members.is_empty()
    })
    .await;
    let before = rooms_read(&relay).await;
    let published: Published = api.publish("shared", "still open", None).await;
    assert_eq!(published.offset, 2);
    assert_eq!(rooms_read(&relay).await, before, "not read again");
}

#[tokio::test]
async fn an_api_publish_into_a_room_nobody_is_in_is_kept_and_the_room_is_not() {
    let relay = relay_lingering(Duration::ZERO).await;
    let api = relay.api();
    let published: Published = api.publish("later", "for whoever comes", None).await;
    assert_eq!(published.offset, 1);
    eventually("the room to close", || async {
        api.get("/api/rooms").await.json()["rooms"] == json!([])
    })
    .await;
    let mut member = relay.member("later", "Ada").await;
    let replayed = member.next_message().await;
    assert_eq!(
        (replayed.text.as_str(), replayed.api),
        ("for whoever comes", true)
    );
    let page: HistoryPage = api.get("/api/rooms/later/history").await.parse();
    assert_eq!(page.messages[0].text, "for whoever comes");
}
