//! A minimal HTTP/1.1 client for the relay's server API: one keep-alive connection with one
//! request in flight, as an application's backend would hold one. It writes each request with
//! one `write` and reads answers framed by `Content-Length` or chunked; every answer is
//! bounded in size, and every request in time by its caller's deadline.
//!
//! It is written for the load generator, not for general use: no TLS, no redirects, no
//! pipelining, and any surprise (a closed connection, an odd status line) is an error rather
//! than something retried, so a measurement never hides a failure.

use std::{
    io::Write,
    net::{Ipv4Addr, SocketAddr},
};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    time::Instant,
};

/// Largest answer accepted (head and body): the API's answers are a few hundred bytes.
const MAX_RESPONSE: usize = 1 << 20;

/// One keep-alive connection to the relay.
pub struct Connection {
    stream: TcpStream,
    /// The `Host` header's value.
    host: String,
    /// Bytes read and not yet consumed by an answer.
    buffer: Vec<u8>,
    /// The request being written, reused so a request costs no allocation.
    request: Vec<u8>,
    /// The server said `Connection: close`: no further request may go out on this one.
    closed: bool,
}

/// An answer: its status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as a publish answer (`T`), if the status is 200; otherwise, or if the body
    /// is not a `T`, an error quoting the start of the body.
    pub fn publish_answer<'a, T: serde::Deserialize<'a>>(&'a self) -> anyhow::Result<T> {
        anyhow::ensure!(
            self.status == 200,
            "HTTP {}: {:.300}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "not a publish answer: {:.300}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

impl Connection {
    /// Connects from loopback source address number `index` (127.0.0.1 to 127.0.0.250 in
    /// turn, as the WebSocket clients do), with Nagle off: each request is one small write.
    pub async fn connect(address: SocketAddr, index: usize) -> anyhow::Result<Connection> {
        anyhow::ensure!(
            address.ip().is_loopback(),
            "load tests talk to loopback addresses only, not {}",
            address.ip()
        );
        let socket = TcpSocket::new_v4()?;
        let source = Ipv4Addr::new(127, 0, 0, 1 + (index % 250) as u8);
        socket.bind(SocketAddr::from((source, 0)))?;
        let stream = socket
            .connect(address)
            .await
            .with_context(|| format!("connecting HTTP client {index} to {address}"))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            host: address.to_string(),
            buffer: Vec::with_capacity(4096),
            request: Vec::with_capacity(512),
            closed: false,
        })
    }

    /// `POST path` with a JSON `body` and `Authorization: Bearer key`; the answer, whatever
    /// its status. An error if the connection breaks, closes, or answers nothing readable
    /// before `deadline`.
    pub async fn post(
        &mut self,
        path: &str,
        key: &str,
        body: &str,
        deadline: Instant,
    ) -> anyhow::Result<Response> {
        anyhow::ensure!(
            !self.closed,
            "the server closed this connection after its last answer"
        );
        self.request.clear();
        write!(
            self.request,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        )?;
        tokio::time::timeout_at(deadline, self.stream.write_all(&self.request))
            .await
            .map_err(|_| anyhow::anyhow!("timed out writing the request"))??;
        loop {
            if let Some((response, used, close)) = parse_response(&self.buffer)? {
                self.buffer.drain(..used);
                self.closed = close;
                return Ok(response);
            }
            anyhow::ensure!(
                self.buffer.len() < MAX_RESPONSE,
                "an answer over {MAX_RESPONSE} bytes"
            );
            self.buffer.reserve(4096);
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buffer))
                .await
                .map_err(|_| anyhow::anyhow!("timed out waiting for the answer"))??;
            if read == 0 {
                bail!(
                    "the server closed the connection ({} bytes of an answer read)",
                    self.buffer.len()
                );
            }
        }
    }
}

/// A whole answer at the start of `bytes`: the answer, how many bytes it took, and whether
/// the server will close the connection after it. `None` while incomplete.
fn parse_response(bytes: &[u8]) -> anyhow::Result<Option<(Response, usize, bool)>> {
    let Some(head_end) = find(bytes, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&bytes[..head_end]).context("an answer head not in UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("not an HTTP/1.1 status line: {status_line:.100}"))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("not a header: {line:.100}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().context("an odd Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let body_start = head_end + 4;
    let rest = &bytes[body_start..];
    let (body, used) = if chunked {
        match dechunk(rest)? {
            Some(found) => found,
            None => return Ok(None),
        }
    } else {
        // Without a length (and not chunked) the body would run to the end of the
        // connection, which a keep-alive client cannot use: the API always sends one.
        let length = length.context("an answer with neither Content-Length nor chunks")?;
        anyhow::ensure!(
            length <= MAX_RESPONSE,
            "an answer over {MAX_RESPONSE} bytes"
        );
        if rest.len() < length {
            return Ok(None);
        }
        (rest[..length].to_vec(), length)
    };
    Ok(Some((Response { status, body }, body_start + used, close)))
}

/// A chunked body at the start of `bytes`: the body and how many bytes it took, trailers
/// included. `None` while incomplete.
fn dechunk(bytes: &[u8]) -> anyhow::Result<Option<(Vec<u8>, usize)>> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_end) = find(&bytes[at..], b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&bytes[at..at + line_end]).context("an odd chunk")?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .with_context(|| format!("an odd chunk size: {line:.100}"))?;
        at += line_end + 2;
        if size == 0 {
            // Trailers, if any, then an empty line.
            loop {
                let Some(end) = find(&bytes[at..], b"\r\n") else {
                    return Ok(None);
                };
                at += end + 2;
                if end == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        anyhow::ensure!(
            body.len() + size <= MAX_RESPONSE,
            "an answer over {MAX_RESPONSE} bytes"
        );
        if bytes.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&bytes[at..at + size]);
        anyhow::ensure!(
            &bytes[at + size..at + size + 2] == b"\r\n",
            "a chunk not ended by CRLF"
        );
        at += size + 2;
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Option<(Response, usize, bool)> {
        parse_response(text.as_bytes()).unwrap()
    }

    #[test]
    fn a_length_framed_answer_is_read_whole_and_only_whole() {
        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                      content-length: 7\r\n\r\n{\"a\":1}";
        let (response, used, close) = parse(&format!("{answer}HTTP/1.1 2")).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"{\"a\":1}");
        assert_eq!(used, answer.len());
        assert!(!close);
        for cut in 0..answer.len() {
            assert_eq!(parse(&answer[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn a_chunked_answer_is_joined_and_trailers_skipped() {
        let answer = "HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n\
                      Connection: close\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n";
        let (response, used, close) = parse(answer).unwrap();
        assert_eq!((response.status, &response.body[..]), (429, &b"abcde"[..]));
        assert_eq!(used, answer.len());
        assert!(close);
        for cut in 0..answer.len() {
            assert_eq!(parse(&answer[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn odd_answers_are_errors() {
        for odd in [
            "HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nabc",
        ] {
            assert!(parse_response(odd.as_bytes()).is_err(), "{odd:?}");
        }
    }
}
