use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A connected pair on loopback: the client's end and the accepted end.
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    (client, accepted)
}

#[test]
fn a_head_ends_at_its_empty_line_whatever_the_line_ends() {
    for head in [
        &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\n",
    ] {
        assert!(ends_head(head), "{head:?}");
    }
    for partial in [
        &b"GET / HTTP/1.1\r\nHost: a\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\n\r",
        b"GET / HTTP/1.1\r\n",
        b"",
    ] {
        assert!(!ends_head(partial), "{partial:?}");
    }
}

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_returned_as_soon_as_it_is_whole() {
    let (mut client, accepted) = pair().await;
    let head = b"GET /ws HTTP/1.1\r\nHost: relay\r\n\r\n";
    let reading = tokio::spawn(async move { (read_head(&accepted).await, accepted) });
    for byte in head {
        client.write_all(&[*byte]).await.unwrap();
        tokio::task::yield_now().await;
    }
    let (read, _accepted) = reading.await.unwrap();
    assert_eq!(read.unwrap(), head);
}

#[tokio::test]
async fn an_endless_head_is_cut_at_the_limit_and_an_early_end_is_an_error() {
    let (mut client, accepted) = pair().await;
    let endless = vec![b'x'; MAX_HEAD_BYTES + 100];
    client.write_all(&endless).await.unwrap();
    assert_eq!(read_head(&accepted).await.unwrap().len(), MAX_HEAD_BYTES);

    let (mut client, accepted) = pair().await;
    client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    drop(client);
    let err = read_head(&accepted).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn prefixed_hands_out_its_head_then_reads_the_socket_and_writes_to_it() {
    let (mut client, accepted) = pair().await;
    client.write_all(b" and the rest").await.unwrap();
    let mut prefixed = Prefixed::new(b"head".to_vec(), accepted);
    let mut first = [0u8; 2];
    prefixed.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"he");
    let mut rest = vec![0u8; "ad and the rest".len()];
    prefixed.read_exact(&mut rest).await.unwrap();
    assert_eq!(rest, b"ad and the rest");
    assert_eq!(
        prefixed.head.capacity(),
        0,
        "the head is freed once handed out"
    );

    prefixed.write_all(b"answer").await.unwrap();
    let mut answer = [0u8; 6];
    client.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"answer");
}
