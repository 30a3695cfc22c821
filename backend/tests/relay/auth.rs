//! Signed-token identity against a real relay: who may connect, what each token allows,
//! and how a connection's life follows its token.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use backend::{
    auth::{AuthSettings, Claims, Permission, PlainAccess, Signer},
    config::Config,
};
use common::{ClientMessage, ErrorCode, ServerMessage, close_code};
use jsonwebtoken::get_current_timestamp as now_secs;

use crate::helpers::{Client, TestRelay, http_request, spawn_relay_with, test_config};

const SECRET: &str = "relay-test-secret-of-at-least-32-bytes";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/auth")
        .join(name)
}

/// Tokens required (HS256, and RS256 through the public key), `lobby` readable anonymously.
fn auth_config() -> (Config, tempfile::TempDir) {
    let (mut config, data) = test_config();
    config.auth = AuthSettings {
        hmac_secret: Some(SECRET.into()),
        public_key: Some(fixture("rsa-public.pem")),
        audience: Some("chat".into()),
        anonymous_rooms: vec!["lobby".into()],
        plain: PlainAccess::ReadOnly,
        ..AuthSettings::default()
    };
    (config, data)
}

async fn auth_relay() -> TestRelay {
    let (config, data) = auth_config();
    spawn_relay_with(config, data).await
}

/// Ada's claims: support rooms to read and write, `news` to read.
fn ada_claims() -> Claims {
    Claims {
        sub: "ada".into(),
        name: Some("Ada".into()),
        exp: now_secs() + 3600,
        nbf: None,
        iat: Some(now_secs()),
        aud: Some("chat".into()),
        iss: None,
        rooms: BTreeMap::from([
            (
                "support-*".into(),
                vec![Permission::Read, Permission::Write],
            ),
            ("news".into(), vec![Permission::Read]),
        ]),
    }
}

fn hs256(claims: &Claims) -> String {
    Signer::Hmac(SECRET.into()).sign(claims).unwrap()
}

/// A typed client past `welcome`, which must say that tokens are required.
async fn connect(relay: &TestRelay) -> Client {
    let mut client = Client::connect(&relay.url("/ws")).await;
    match client.next_event().await {
        ServerMessage::Welcome { auth_required, .. } => assert!(auth_required),
        other => panic!("expected welcome, got {other:?}"),
    }
    client
}

/// A client authenticated with `token`, past `authenticated`.
async fn signed_in(relay: &TestRelay, token: String) -> Client {
    let mut client = connect(relay).await;
    client
        .send(&ClientMessage::Auth { token: Some(token) })
        .await;
    match client.next_event().await {
        ServerMessage::Authenticated { user, .. } => assert!(user.is_some()),
        other => panic!("expected authenticated, got {other:?}"),
    }
    client
}

async fn close_code_of(client: &mut Client) -> u16 {
    u16::from(client.close_frame().await.expect("a close frame").code)
}

/// The next event, which must be an error with `code`.
async fn refused(client: &mut Client, code: ErrorCode) {
    match client.next_non_presence().await {
        ServerMessage::Error { code: got, .. } => assert_eq!(got, code),
        other => panic!("expected error {code}, got {other:?}"),
    }
}

/// The connection still answers.
async fn still_open(client: &mut Client) {
    client.send(&ClientMessage::Ping).await;
    assert_eq!(client.next_non_presence().await, ServerMessage::Pong);
}

#[tokio::test]
async fn a_valid_token_names_the_user_and_grants_exactly_its_rooms() {
    let relay = auth_relay().await;
    let mut ada = connect(&relay).await;
    let claims = ada_claims();
    ada.send(&ClientMessage::Auth {
        token: Some(hs256(&claims)),
    })
    .await;
    assert_eq!(
        ada.next_event().await,
        ServerMessage::Authenticated {
            user: Some("ada".into()),
            name: Some("Ada".into()),
            expires_at: Some(claims.exp * 1000),
        }
    );
    // The name given with `join` is ignored: the token's counts.
    let members = ada.join("support-1", "Someone Else").await;
    assert_eq!(members[0].name, "Ada");
    ada.say("support-1", "a-1", "hello").await;
    assert_eq!(ada.next_message().await.from, "Ada");
    assert!(matches!(
        ada.next_non_presence().await,
        ServerMessage::Ack { .. }
    ));

    // Beyond the grant: `forbidden`, and the connection carries on.
    ada.send(&join("billing")).await;
    refused(&mut ada, ErrorCode::Forbidden).await;
    ada.join("news", "Ada").await;
    ada.say("news", "a-2", "read only").await;
    refused(&mut ada, ErrorCode::Forbidden).await;
    ada.send(&ClientMessage::Rename { name: "Eve".into() })
        .await;
    refused(&mut ada, ErrorCode::Forbidden).await;
    still_open(&mut ada).await;
}

fn join(room: &str) -> ClientMessage {
    ClientMessage::Join {
        room: room.into(),
        name: "Ada".into(),
        since: None,
    }
}

#[tokio::test]
async fn rs256_tokens_are_accepted_with_the_configured_public_key() {
    let relay = auth_relay().await;
    let pem = std::fs::read(fixture("rsa-private.pem")).unwrap();
    let token = Signer::PrivateKey(pem).sign(&ada_claims()).unwrap();
    let mut ada = signed_in(&relay, token).await;
    ada.join("support-2", "Ada").await;
}

#[tokio::test]
async fn every_bad_token_is_refused_with_its_close_code() {
    let relay = auth_relay().await;
    let expired = Claims {
        exp: now_secs() - 5,
        ..ada_claims()
    };
    let early = Claims {
        nbf: Some(now_secs() + 600),
        ..ada_claims()
    };
    let wrong_audience = Claims {
        aud: Some("billing".into()),
        ..ada_claims()
    };
    let other_secret = Signer::Hmac("another-secret-of-at-least-32-bytes!!".into())
        .sign(&ada_claims())
        .unwrap();
    let public_pem = std::fs::read_to_string(fixture("rsa-public.pem")).unwrap();
    let key_confusion = Signer::Hmac(public_pem).sign(&ada_claims()).unwrap();
    let claims = serde_json::to_vec(&ada_claims()).unwrap();
    let alg_none = format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(&claims)
    );
    let cases = [
        ("expired", hs256(&expired), close_code::TOKEN_EXPIRED),
        ("not yet valid", hs256(&early), close_code::AUTH_REFUSED),
        (
            "wrong audience",
            hs256(&wrong_audience),
            close_code::AUTH_REFUSED,
        ),
        ("bad signature", other_secret, close_code::AUTH_REFUSED),
        (
            "HS256 with the public key's bytes",
            key_confusion,
            close_code::AUTH_REFUSED,
        ),
        ("alg none", alg_none, close_code::AUTH_REFUSED),
        ("malformed", "not.a.jwt".into(), close_code::AUTH_REFUSED),
        ("garbage", "\u{1}\u{2}".into(), close_code::AUTH_REFUSED),
    ];
    for (case, token, code) in cases {
        let mut client = connect(&relay).await;
        client
            .send(&ClientMessage::Auth { token: Some(token) })
            .await;
        assert_eq!(close_code_of(&mut client).await, code, "{case}");
    }
    // Nothing of that touched anyone else.
    let mut ada = signed_in(&relay, hs256(&ada_claims())).await;
    still_open(&mut ada).await;
}

#[tokio::test]
async fn nothing_but_auth_is_accepted_first_and_silence_is_cut() {
    let (mut config, data) = auth_config();
    config.auth.timeout = Duration::from_millis(300);
    let relay = spawn_relay_with(config, data).await;
    let mut eager = connect(&relay).await;
    eager.send(&join("lobby")).await;
    assert_eq!(close_code_of(&mut eager).await, close_code::AUTH_REFUSED);
    let started = std::time::Instant::now();
    let mut silent = connect(&relay).await;
    assert_eq!(close_code_of(&mut silent).await, close_code::AUTH_REFUSED);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "not before the timeout"
    );
}

#[tokio::test]
async fn anonymous_connections_read_the_public_rooms_only() {
    let relay = auth_relay().await;
    let mut guest = connect(&relay).await;
    guest.send(&ClientMessage::Auth { token: None }).await;
    assert_eq!(
        guest.next_event().await,
        ServerMessage::Authenticated {
            user: None,
            name: None,
            expires_at: None
        }
    );
    guest.join("lobby", "Guest").await;
    guest.say("lobby", "g-1", "hi").await;
    refused(&mut guest, ErrorCode::Forbidden).await;
    guest.send(&join("support-1")).await;
    refused(&mut guest, ErrorCode::Forbidden).await;
    // A user with `lobby` granted writes; the guest reads it.
    let claims = Claims {
        rooms: BTreeMap::from([("lobby".into(), vec![Permission::Read, Permission::Write])]),
        ..ada_claims()
    };
    let mut ada = signed_in(&relay, hs256(&claims)).await;
    ada.join("lobby", "Ada").await;
    ada.say("lobby", "a-1", "welcome").await;
    assert_eq!(guest.next_message().await.text, "welcome");

    // Without anonymous rooms, no token means no connection.
    let (mut config, data) = auth_config();
    config.auth.anonymous_rooms.clear();
    let closed = spawn_relay_with(config, data).await;
    let mut guest = connect(&closed).await;
    guest.send(&ClientMessage::Auth { token: None }).await;
    assert_eq!(close_code_of(&mut guest).await, close_code::AUTH_REFUSED);
}

#[tokio::test]
async fn a_refreshed_connection_outlives_its_first_token_and_an_unrefreshed_one_gets_4003() {
    let (mut config, data) = auth_config();
    config.auth.grace = Duration::from_millis(300);
    let relay = spawn_relay_with(config, data).await;
    let short = Claims {
        exp: now_secs() + 2,
        ..ada_claims()
    };
    let mut refreshed = signed_in(&relay, hs256(&short)).await;
    let mut lapsed = signed_in(&relay, hs256(&short)).await;
    let fresh = Claims {
        exp: now_secs() + 3600,
        ..ada_claims()
    };
    refreshed
        .send(&ClientMessage::Refresh {
            token: hs256(&fresh),
        })
        .await;
    assert_eq!(
        refreshed.next_event().await,
        ServerMessage::Authenticated {
            user: Some("ada".into()),
            name: Some("Ada".into()),
            expires_at: Some(fresh.exp * 1000),
        }
    );
    // A refresh with a bad token, or another user's, changes nothing.
    for token in [
        hs256(&Claims {
            sub: "eve".into(),
            ..fresh.clone()
        }),
        "garbage".into(),
    ] {
        refreshed.send(&ClientMessage::Refresh { token }).await;
        refused(&mut refreshed, ErrorCode::InvalidToken).await;
    }
    // The first token runs out (plus the grace) for both; only the refreshed one stays.
    assert_eq!(close_code_of(&mut lapsed).await, close_code::TOKEN_EXPIRED);
    still_open(&mut refreshed).await;
}

#[tokio::test]
async fn the_plain_endpoint_follows_its_setting() {
    // read-only: plain clients hear the lobby but cannot send.
    let relay = auth_relay().await;
    let mut plain = relay.plain().await;
    plain.send_text("hello?").await;
    assert!(plain.next_text().await.starts_with("relay error forbidden"));
    let claims = Claims {
        rooms: BTreeMap::from([("lobby".into(), vec![Permission::Read, Permission::Write])]),
        ..ada_claims()
    };
    let mut ada = signed_in(&relay, hs256(&claims)).await;
    ada.join("lobby", "Ada").await;
    ada.say("lobby", "a-1", "news for everyone").await;
    assert_eq!(plain.next_text().await, "Ada: news for everyone");

    // off (the default): the upgrade is refused.
    let (mut config, data) = auth_config();
    config.auth.plain = PlainAccess::Off;
    let closed = spawn_relay_with(config, data).await;
    let answer = http_request(
        closed.address,
        "GET",
        "/",
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        b"",
    )
    .await;
    assert_eq!(answer.refusal(), (403, "forbidden".into()));
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn two_tabs_of_one_user_are_one_member_and_disconnect_by_user_closes_both() {
    let (mut config, data) = auth_config();
    config.api.keys = vec![crate::helpers::API_KEY.into()];
    let relay = spawn_relay_with(config, data).await;
    let mut watcher = signed_in(
        &relay,
        hs256(&Claims {
            sub: "bo".into(),
            name: Some("Bo".into()),
            ..ada_claims()
        }),
    )
    .await;
    watcher.join("support-1", "Bo").await;
    let mut first_tab = signed_in(&relay, hs256(&ada_claims())).await;
    first_tab.join("support-1", "Ada").await;
    let joined = match watcher.next_event().await {
        ServerMessage::MemberJoined { member, .. } => member,
        other => panic!("expected member_joined, got {other:?}"),
    };
    assert_eq!(
        (joined.user.as_deref(), joined.connections),
        (Some("ada"), 1)
    );
    let mut second_tab = signed_in(&relay, hs256(&ada_claims())).await;
    let members = second_tab.join("support-1", "Ada").await;
    let ada: Vec<_> = members
        .iter()
        .filter(|m| m.user.as_deref() == Some("ada"))
        .collect();
    assert_eq!(ada.len(), 1, "one entry for the user: {members:?}");
    assert_eq!(ada[0].connections, 2);
    let presence: common::api::Presence = relay
        .api()
        .get("/api/rooms/support-1/presence")
        .await
        .parse();
    assert_eq!(presence.members.len(), 2, "Bo and Ada: {presence:?}");

    // The second tab was no news to the room; its leaving is none either.
    drop(second_tab);
    first_tab.say("support-1", "a-1", "still here").await;
    assert_eq!(
        watcher.next_message().await.text,
        "still here",
        "no presence event came first"
    );

    // Every connection of a user, from the application.
    let mut third_tab = signed_in(&relay, hs256(&ada_claims())).await;
    third_tab.join("support-1", "Ada").await;
    let answer = relay
        .api()
        .post("/api/disconnect", serde_json::json!({"user": "ada"}))
        .await;
    assert_eq!(answer.json(), serde_json::json!({"disconnected": 2}));
    for tab in [&mut first_tab, &mut third_tab] {
        assert_eq!(close_code_of(tab).await, close_code::DISCONNECTED);
    }
    match watcher.next_event().await {
        ServerMessage::MemberLeft { member, .. } => assert_eq!(member.user.as_deref(), Some("ada")),
        other => panic!("expected member_left once the last tab went, got {other:?}"),
    }
    still_open(&mut watcher).await;
}

#[tokio::test]
async fn a_token_that_lasts_for_ages_is_taken_without_overflow() {
    let relay = auth_relay().await;
    let forever = Claims {
        exp: u64::MAX / 2,
        ..ada_claims()
    };
    let mut ada = signed_in(&relay, hs256(&forever)).await;
    ada.join("support-9", "Ada").await;
    still_open(&mut ada).await;
}
