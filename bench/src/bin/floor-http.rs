//! The least an HTTP publish endpoint can do, as a yardstick for `POST /api/publish`.
//!
//! It accepts keep-alive HTTP/1.1 connections on a loopback port, reads each request (head
//! and `Content-Length` body) and answers `200` with a small JSON body shaped like the
//! relay's answer, `{"room":"r","epoch":"e","offset":N,"ts":T,"duplicate":false}` (`N`
//! rising on each connection, `T` the wall clock in milliseconds). Nothing else: the body is
//! not parsed, nothing is stored or delivered, there is no authentication, no limit and no
//! timer. Not a server anyone should run; it answers "how many HTTP requests can one core
//! take from keep-alive connections on this machine?", which bounds what any HTTP publish
//! endpoint (ours included) can reach in `relay-bench http-floor`.
//!
//! Two ways to do it (`--mode`):
//!
//! - `threads` (the default): hand-written, one blocking thread per connection: `read`,
//!   find the end of the head and the `Content-Length`, answer with one `write`. No runtime,
//!   no readiness polling: per request, the two system calls any server needs, plus the
//!   scheduler's switch to the thread whose socket became readable.
//! - `hyper`: the stack the relay serves HTTP with: hyper 1's `server::conn::http1` on a
//!   multi-threaded tokio runtime with default settings (one worker per core it may run on,
//!   as `#[tokio::main]` in the relay), a task per connection, and a service that reads the
//!   whole body and answers. Without the relay's router, header timer and handler.
//!
//! Usage: `floor-http [--mode threads|hyper] 127.0.0.1:18083` (loopback only).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{SystemTime, UNIX_EPOCH},
};

use clap::{Parser, ValueEnum};

/// Largest request accepted, head and body; a larger one ends its connection. A publish of
/// a 64-byte text is a few hundred bytes.
const MAX_REQUEST: usize = 16 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "floor-http",
    about = "A bare HTTP/1.1 endpoint: the floor of a publish API"
)]
struct Cli {
    /// Address to listen on (loopback only).
    #[arg(default_value = "127.0.0.1:18083")]
    address: SocketAddr,
    /// How connections are served.
    #[arg(long, value_enum, default_value = "threads")]
    mode: Mode,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// Hand-written: a blocking thread per connection, one `write` per answer.
    Threads,
    /// hyper 1 `server::conn::http1` on a multi-threaded tokio runtime.
    Hyper,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(cli.address.ip().is_loopback(), "loopback addresses only");
    match cli.mode {
        Mode::Threads => threads(cli.address),
        Mode::Hyper => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(hyper_server(cli.address)),
    }
}

/// The answer's body for the `offset`-th request of a connection.
fn answer_body(offset: u64) -> String {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis());
    format!(r#"{{"room":"r","epoch":"e","offset":{offset},"ts":{ts},"duplicate":false}}"#)
}

// ---- Hand-written: a blocking thread per connection ----

fn threads(address: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(address)?;
    for stream in listener.incoming() {
        let stream = stream?;
        // Small stacks: a thread only holds its buffers (on the heap) and a few locals.
        std::thread::Builder::new()
            .name("floor-conn".into())
            .stack_size(64 * 1024)
            .spawn(move || serve_blocking(stream))?;
    }
    Ok(())
}

/// Answers every request of one connection until the client closes it (or sends something
/// that is not a request this floor understands, or one over [`MAX_REQUEST`]).
fn serve_blocking(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buffer = vec![0u8; MAX_REQUEST];
    let mut filled = 0;
    let mut offset = 0u64;
    let mut answer = Vec::with_capacity(256);
    loop {
        // Every whole request in the buffer is answered, each with one `write` (the client
        // has one request in flight, so that is one per `read`).
        let mut start = 0;
        loop {
            match request_length(&buffer[start..filled]) {
                Ok(Some(length)) => {
                    offset += 1;
                    let body = answer_body(offset);
                    answer.clear();
                    let _ = write!(
                        answer,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(&answer).is_err() {
                        return;
                    }
                    start += length;
                }
                Ok(None) => break,
                Err(()) => return,
            }
        }
        buffer.copy_within(start..filled, 0);
        filled -= start;
        if filled == buffer.len() {
            return;
        }
        match stream.read(&mut buffer[filled..]) {
            Ok(0) | Err(_) => return,
            Ok(read) => filled += read,
        }
    }
}

/// The length (head and body) of the request at the start of `bytes` once it is all there;
/// `None` while incomplete, `Err` if its `Content-Length` is not a number.
fn request_length(bytes: &[u8]) -> Result<Option<usize>, ()> {
    let Some(head_end) = bytes.windows(4).position(|four| four == b"\r\n\r\n") else {
        return Ok(None);
    };
    let mut body = 0;
    for line in bytes[..head_end].split(|&byte| byte == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&byte| byte == b':') else {
            continue; // the request line
        };
        if line[..colon].eq_ignore_ascii_case(b"content-length") {
            body = std::str::from_utf8(&line[colon + 1..])
                .ok()
                .and_then(|value| value.trim().parse::<usize>().ok())
                .ok_or(())?;
        }
    }
    let length = head_end + 4 + body;
    Ok((bytes.len() >= length).then_some(length))
}

// ---- hyper 1 on tokio ----

async fn hyper_server(address: SocketAddr) -> anyhow::Result<()> {
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };

    use http_body_util::{BodyExt, Full};
    use hyper::{Request, Response, body::Bytes, body::Incoming, header, server::conn::http1};
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind(address).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            // This connection's answers so far (an atomic only because hyper's service is
            // `Fn`; nothing else touches it).
            let offset = Arc::new(AtomicU64::new(0));
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let offset = offset.clone();
                async move {
                    // Read the whole body, as a publish handler must.
                    request.into_body().collect().await?;
                    let body = answer_body(offset.fetch_add(1, Ordering::Relaxed) + 1);
                    Response::builder()
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from(body)))
                        .map_err(anyhow::Error::from)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_whole_only_with_its_body() {
        let request = b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..request.len() {
            assert_eq!(request_length(&request[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(request_length(request), Ok(Some(request.len())));
        let mut two = request.to_vec();
        two.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(request_length(&two), Ok(Some(request.len())));
        assert_eq!(
            request_length(b"GET / HTTP/1.1\r\ncontent-length: x\r\n\r\n"),
            Err(())
        );
        assert_eq!(request_length(b"GET / HTTP/1.1\r\n\r\n"), Ok(Some(18)));
    }

    #[test]
    fn the_answer_is_shaped_like_the_relays() {
        let body: serde_json::Value = serde_json::from_str(&answer_body(7)).unwrap();
        assert_eq!(body["offset"], 7);
        assert_eq!(body["duplicate"], false);
        assert!(body["ts"].as_u64().unwrap() > 0);
    }
}
