use super::*;

/// A client frame: `first` is FIN/RSV/opcode, the payload masked with a fixed key.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![first];
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Everything a reader makes of `bytes`, fed in pieces of `chunk` bytes.
async fn read_all(bytes: &[u8], chunk: usize) -> Vec<Result<Incoming, Violation>> {
    let (mut client, mut server) = tokio::io::duplex(1 << 20);
    let mut reader = FrameReader::new(16, 1000);
    for piece in bytes.chunks(chunk) {
        client.write_all(piece).await.unwrap();
    }
    drop(client);
    let mut seen = Vec::new();
    while let Some(next) = reader.next(&mut server).await {
        let failed = next.is_err();
        seen.push(next);
        if failed {
            break;
        }
    }
    seen
}

fn text(value: &str) -> Result<Incoming, Violation> {
    Ok(Incoming::Text(Utf8Bytes::from(value.to_owned())))
}

#[tokio::test]
async fn whole_and_fragmented_messages_with_control_frames_between() {
    let mut bytes = client_frame(0x81, b"hello");
    bytes.extend(client_frame(0x01, b"frag"));
    bytes.extend(client_frame(0x89, b"are you there"));
    bytes.extend(client_frame(0x80, "mented ✓".as_bytes()));
    bytes.extend(client_frame(0x82, &[1, 2, 3]));
    bytes.extend(client_frame(0x8A, b""));
    bytes.extend(client_frame(0x88, &[0x03, 0xE8, b'o', b'k']));
    let long = "x".repeat(300);
    bytes.extend(client_frame(0x81, long.as_bytes()));
    let expected = vec![
        text("hello"),
        Ok(Incoming::Ping(Bytes::from_static(b"are you there"))),
        text("fragmented ✓"),
        Ok(Incoming::Binary),
        Ok(Incoming::Pong),
        Ok(Incoming::Close(Some(1000))),
        text(&long),
    ];
    // However the bytes are split across reads, the result is the same.
    for chunk in [1, 3, 7, 64, bytes.len()] {
        assert_eq!(read_all(&bytes, chunk).await, expected, "chunk {chunk}");
    }
}

#[tokio::test]
async fn every_protocol_mistake_has_its_violation() {
    let protocol = |why| Err(Violation::Protocol(why));
    let mut unmasked = client_frame(0x81, b"hi");
    unmasked[1] &= 0x7F;
    let cases: Vec<(Vec<u8>, Result<Incoming, Violation>)> = vec![
        (unmasked, protocol("client frames must be masked")),
        (client_frame(0xC1, b"hi"), protocol("reserved bits set")),
        (client_frame(0x83, b"hi"), protocol("unknown opcode")),
        (
            client_frame(0x80, b"hi"),
            protocol("continuation without a message"),
        ),
        (
            [client_frame(0x01, b"a"), client_frame(0x81, b"b")].concat(),
            protocol("new message inside a fragmented one"),
        ),
        (
            client_frame(0x09, b""),
            protocol("control frames must be whole and short"),
        ),
        (
            client_frame(0x89, &[0; 126]),
            protocol("control frames must be whole and short"),
        ),
        (
            client_frame(0x88, &[3]),
            protocol("close payload of one byte"),
        ),
        (
            client_frame(0x88, &[0x03, 0xED]),
            protocol("invalid close code"),
        ),
        (
            client_frame(0x81, &[0xC3, 0x28]),
            Err(Violation::InvalidUtf8),
        ),
        (
            client_frame(0x88, &[0x03, 0xE8, 0xFF]),
            Err(Violation::InvalidUtf8),
        ),
        (client_frame(0x81, &[b'a'; 1001]), Err(Violation::TooBig)),
        (
            [
                client_frame(0x01, &[b'a'; 600]),
                client_frame(0x80, &[b'a'; 600]),
            ]
            .concat(),
            Err(Violation::TooBig),
        ),
    ];
    for (bytes, expected) in cases {
        let seen = read_all(&bytes, bytes.len()).await;
        assert_eq!(seen.last(), Some(&expected), "{bytes:02x?}");
    }
}

#[tokio::test]
async fn an_oversized_length_is_refused_from_the_header_alone() {
    // Only the header: the reader must not wait for (or buffer) a gigabyte.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&[0; 4]);
    assert_eq!(
        read_all(&header, header.len()).await,
        [Err(Violation::TooBig)]
    );
}

#[tokio::test]
async fn a_stream_that_ends_mid_frame_just_ends() {
    let frame = client_frame(0x81, b"cut short");
    assert_eq!(read_all(&frame[..frame.len() - 2], 4).await, []);
}

/// Parses server frames (unmasked) back into (opcode, payload).
fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        assert_eq!(bytes[0] & 0xF0, 0x80, "FIN set, no reserved bits");
        assert_eq!(bytes[1] & 0x80, 0, "server frames are not masked");
        let (length, start) = match bytes[1] {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                10,
            ),
            short => (short as usize, 2),
        };
        frames.push((bytes[0] & 0x0F, bytes[start..start + length].to_vec()));
        bytes = &bytes[start + length..];
    }
    frames
}

#[tokio::test]
async fn writes_controls_then_batch_with_every_length_encoding() {
    let batch: Vec<Utf8Bytes> = [0usize, 5, 125, 126, 70_000]
        .iter()
        .map(|&len| Utf8Bytes::from("y".repeat(len)))
        .collect();
    let pong = || Control::Pong(Bytes::from_static(b"echo"));
    let close = Control::Close {
        code: 4000,
        reason: "slow",
    };
    let cases = [
        (vec![], vec![]),
        (vec![Control::Ping], vec![(0x9, vec![])]),
        (vec![pong()], vec![(0xA, b"echo".to_vec())]),
        (
            vec![pong(), Control::Ping],
            vec![(0xA, b"echo".to_vec()), (0x9, vec![])],
        ),
        (
            vec![close],
            vec![(0x8, [&4000u16.to_be_bytes()[..], b"slow"].concat())],
        ),
    ];
    for (controls, expected_controls) in cases {
        let mut written = Vec::new();
        write_frames(&mut written, &controls, &batch).await.unwrap();
        let mut expected = expected_controls;
        expected.extend(batch.iter().map(|f| (0x1, f.as_str().as_bytes().to_vec())));
        assert_eq!(server_frames(&written), expected, "{controls:?}");
    }
}

#[tokio::test]
async fn a_batch_larger_than_one_chunk_is_written_whole_and_in_order() {
    // More than one chunk of frames, through a pipe that takes 64 bytes at a time.
    let batch: Vec<Utf8Bytes> = (0..30_000)
        .map(|i| Utf8Bytes::from(format!("m{i}")))
        .collect();
    let (mut server, mut client) = tokio::io::duplex(64);
    let reader = tokio::spawn(async move {
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        received
    });
    write_frames(&mut server, &[], &batch).await.unwrap();
    drop(server);
    let frames = server_frames(&reader.await.unwrap());
    let expected: Vec<(u8, Vec<u8>)> = (0..30_000)
        .map(|i| (0x1, format!("m{i}").into_bytes()))
        .collect();
    assert_eq!(frames, expected);
}

proptest::proptest! {
    /// Whatever a client sends, in whatever pieces, the reader answers with items or a
    /// violation, never panics, and never assembles a message past the limit.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2_000),
        split in 1usize..64,
    ) {
        let mut reader = FrameReader::new(16, 1000);
        for piece in bytes.chunks(split) {
            reader.buffer.extend_from_slice(piece);
            loop {
                match reader.parse() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => return Ok(()),
                }
            }
            let assembled = reader.fragments.as_ref().map_or(0, |(_, so_far)| so_far.len());
            proptest::prop_assert!(assembled <= 1000, "a message grew past the limit");
        }
    }

    /// Valid text frames, split anywhere, come out as the same messages.
    #[test]
    fn valid_frames_round_trip(
        texts in proptest::collection::vec("\\PC{0,300}", 1..8),
        split in 1usize..97,
    ) {
        let mut bytes = Vec::new();
        for text in &texts {
            bytes.extend(client_frame(0x81, text.as_bytes()));
        }
        let mut reader = FrameReader::new(16, 4_000);
        let mut seen = Vec::new();
        for piece in bytes.chunks(split) {
            reader.buffer.extend_from_slice(piece);
            while let Some(item) = reader.parse().unwrap() {
                seen.push(item);
            }
        }
        let expected: Vec<Incoming> =
            texts.iter().map(|t| Incoming::Text(Utf8Bytes::from(t.clone()))).collect();
        proptest::prop_assert_eq!(seen, expected);
    }
}

#[test]
fn a_client_may_close_with_every_registered_code_and_no_other() {
    let close = |code: u16| close_status(&code.to_be_bytes());
    for code in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000,
        4999,
    ] {
        assert_eq!(close(code), Ok(Some(code)), "{code}");
    }
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
        assert_eq!(
            close(code),
            Err(Violation::Protocol("invalid close code")),
            "{code}"
        );
    }
}
