//! Malformed frames at the byte level, from a raw TCP client: each gets the close code
//! RFC 6455 asks for, and nobody else notices.

use std::net::SocketAddr;

use common::close_code;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{TestRelay, WAIT, spawn_relay};

/// Opens a WebSocket to `/ws` by hand and returns the raw stream after the 101 answer.
pub async fn raw_websocket(address: SocketAddr) -> TcpStream {
    raw_upgrade(TcpStream::connect(address).await.unwrap(), address).await
}

/// Upgrades a connected `stream` to a WebSocket on `/ws` by hand.
pub async fn raw_upgrade(mut stream: TcpStream, address: SocketAddr) -> TcpStream {
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    read_upgrade_answer(stream).await
}

/// Reads the relay's answer to an upgrade request up to its empty line; it must be 101.
pub async fn read_upgrade_answer(mut stream: TcpStream) -> TcpStream {
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("the answer in time")
            .unwrap();
        assert_eq!(read, 1, "connection closed during the handshake");
        response.push(byte[0]);
    }
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    stream
}

/// One client frame: `first` is the FIN/RSV/opcode byte; masked unless `masked` is false.
pub fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut bytes = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        len @ 0..=125 => bytes.push(mask_bit | len as u8),
        len @ 126..=0xFFFF => {
            bytes.push(mask_bit | 126);
            bytes.extend((len as u16).to_be_bytes());
        }
        len => {
            bytes.push(mask_bit | 127);
            bytes.extend((len as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x12, 0x34, 0x56, 0x78];
        bytes.extend(key);
        bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        bytes.extend(payload);
    }
    bytes
}

/// A server frame: opcode and payload (`None` once the connection ends or fails).
pub async fn read_frame<R: AsyncRead + Unpin>(stream: &mut R) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).await.ok()?;
    let len = match header[1] & 0x7f {
        126 => {
            let mut ext = [0u8; 2];
            stream.read_exact(&mut ext).await.ok()?;
            u64::from(u16::from_be_bytes(ext))
        }
        127 => {
            let mut ext = [0u8; 8];
            stream.read_exact(&mut ext).await.ok()?;
            u64::from_be_bytes(ext)
        }
        len => u64::from(len),
    };
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload).await.ok()?;
    Some((header[0] & 0x0f, payload))
}

/// Reads server frames until a close frame; returns its code (`None` if the connection
/// ended without one).
pub async fn close_code_from<R: AsyncRead + Unpin>(stream: &mut R) -> Option<u16> {
    tokio::time::timeout(WAIT, async {
        while let Some((opcode, payload)) = read_frame(stream).await {
            if opcode == 0x8 {
                return payload
                    .get(..2)
                    .map(|code| u16::from_be_bytes([code[0], code[1]]));
            }
        }
        None
    })
    .await
    .expect("a close frame in time")
}

/// Sends `bytes` on a fresh raw connection and returns the close code it gets, checking that
/// a pair of ordinary clients keeps chatting before and after.
async fn close_code_for(relay: &TestRelay, bytes: &[u8]) -> Option<u16> {
    let mut alice = relay.member("calm", "Alice").await;
    let mut bob = relay.member("calm", "Bob").await;
    alice.say("calm", "a-1", "before").await;
    assert_eq!(bob.next_message_text().await, "before");

    let mut raw = raw_websocket(relay.address).await;
    raw.write_all(bytes).await.unwrap();
    let code = close_code_from(&mut raw).await;

    alice.say("calm", "a-2", "after").await;
    assert_eq!(bob.next_message_text().await, "after");
    code
}

#[tokio::test]
async fn an_unmasked_client_frame_is_a_protocol_error() {
    let relay = spawn_relay().await;
    let unmasked = frame(0x81, br#"{"type":"ping"}"#, false);
    assert_eq!(
        close_code_for(&relay, &unmasked).await,
        Some(close_code::PROTOCOL_ERROR)
    );
}

#[tokio::test]
async fn reserved_bits_and_unknown_opcodes_are_protocol_errors() {
    let relay = spawn_relay().await;
    let rsv1 = frame(0x80 | 0x40 | 0x1, b"hi", true);
    assert_eq!(
        close_code_for(&relay, &rsv1).await,
        Some(close_code::PROTOCOL_ERROR)
    );
    let opcode_3 = frame(0x83, b"hi", true);
    assert_eq!(
        close_code_for(&relay, &opcode_3).await,
        Some(close_code::PROTOCOL_ERROR)
    );
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_is_invalid_payload() {
    let relay = spawn_relay().await;
    let bad_utf8 = frame(0x81, &[0x7b, 0xff, 0xfe, 0x7d], true);
    assert_eq!(
        close_code_for(&relay, &bad_utf8).await,
        Some(close_code::INVALID_PAYLOAD)
    );
}

#[tokio::test]
async fn an_oversized_length_is_refused_before_reading_it() {
    let relay = spawn_relay().await;
    // A header announcing a 1 GiB payload, and nothing after it.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend((1u64 << 30).to_be_bytes());
    header.extend([1, 2, 3, 4]);
    assert_eq!(
        close_code_for(&relay, &header).await,
        Some(close_code::MESSAGE_TOO_BIG)
    );
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_too_big() {
    let relay = spawn_relay().await;
    let max = backend::config::Config::default().max_message_bytes;
    // Fragments that add up to more than the limit, each small on its own.
    let chunk = vec![b'x'; 60_000];
    let mut bytes = frame(0x01, &chunk, true);
    bytes.extend(frame(0x00, &chunk, true));
    assert!(chunk.len() * 2 > max);
    assert_eq!(
        close_code_for(&relay, &bytes).await,
        Some(close_code::MESSAGE_TOO_BIG)
    );
}

/// Reads server frames until one with `opcode` whose payload contains `needle`.
pub async fn frame_containing(stream: &mut TcpStream, opcode: u8, needle: &str) -> Vec<u8> {
    tokio::time::timeout(WAIT, async {
        loop {
            let (seen, payload) = read_frame(stream).await.expect("the connection stays open");
            if seen == opcode && String::from_utf8_lossy(&payload).contains(needle) {
                return payload;
            }
        }
    })
    .await
    .expect("the frame in time")
}

#[tokio::test]
async fn pings_get_pongs_and_fragmented_messages_are_reassembled() {
    let relay = spawn_relay().await;
    let mut raw = raw_websocket(relay.address).await;
    raw.write_all(&frame(0x89, b"are you there", true))
        .await
        .unwrap();
    assert_eq!(
        frame_containing(&mut raw, 0xA, "").await,
        b"are you there",
        "the pong echoes the ping"
    );

    // A join in three fragments, with a ping between them.
    let join = br#"{"type":"join","room":"calm","name":"Raw"}"#;
    let mut bytes = frame(0x01, &join[..10], true);
    bytes.extend(frame(0x00, &join[10..20], true));
    bytes.extend(frame(0x89, b"mid", true));
    bytes.extend(frame(0x80, &join[20..], true));
    raw.write_all(&bytes).await.unwrap();
    frame_containing(&mut raw, 0x1, r#""type":"joined""#).await;

    // And messages flow to an ordinary client.
    let mut bob = relay.member("calm", "Bob").await;
    let send = br#"{"type":"send","room":"calm","id":"r-1","text":"in pieces"}"#;
    let mut bytes = frame(0x01, &send[..7], true);
    bytes.extend(frame(0x80, &send[7..], true));
    raw.write_all(&bytes).await.unwrap();
    assert_eq!(bob.next_message_text().await, "in pieces");
}

#[tokio::test]
async fn a_client_close_is_answered_with_its_code_then_the_connection_ends() {
    let relay = spawn_relay().await;
    let mut raw = raw_websocket(relay.address).await;
    let mut close = 3001u16.to_be_bytes().to_vec();
    close.extend(b"done");
    raw.write_all(&frame(0x88, &close, true)).await.unwrap();
    assert_eq!(close_code_from(&mut raw).await, Some(3001));
    let after = tokio::time::timeout(WAIT, read_frame(&mut raw))
        .await
        .expect("the relay closes the connection");
    assert_eq!(after, None, "nothing follows the close");
}

#[tokio::test]
async fn a_client_closing_with_1012_1013_or_1014_is_answered_with_the_same_code() {
    let relay = spawn_relay().await;
    let mut alice = relay.member("calm", "Alice").await;
    let mut bob = relay.member("calm", "Bob").await;
    for code in [1012u16, 1013, 1014] {
        let mut raw = raw_websocket(relay.address).await;
        raw.write_all(&frame(0x88, &code.to_be_bytes(), true))
            .await
            .unwrap();
        assert_eq!(close_code_from(&mut raw).await, Some(code), "{code}");
        let after = tokio::time::timeout(WAIT, read_frame(&mut raw))
            .await
            .expect("the relay closes the connection");
        assert_eq!(after, None, "nothing follows the close ({code})");

        alice.say("calm", &format!("a-{code}"), "still calm").await;
        assert_eq!(bob.next_message_text().await, "still calm");
    }
}
