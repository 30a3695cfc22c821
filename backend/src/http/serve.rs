//! The relay's own accept loop: HTTP/1.1 with hyper, a deadline for request headers, and a
//! limit on connections that are not WebSockets (yet).
//!
//! `axum::serve` sets no header deadline: a client that sends `GET /ws HTTP/1.1` and one
//! header and then nothing holds a socket, a task and about 18 KB of buffers for ever, and
//! enough of them use up the relay's file descriptors. Here every accepted connection is
//! **pending** until it upgrades to a WebSocket or ends:
//!
//! - Pending connections hold a permit of their own semaphore (`--max-pending-connections`),
//!   apart from the WebSocket slots of `--max-connections`. When none is free, a new
//!   connection is answered with a fixed 503 straight from the accept loop (one `send`, no
//!   task, nothing read) and closed.
//! - The first request's headers must arrive within `--header-timeout-ms` of the accept.
//!   Until they have, the connection is only a small task reading into a small buffer
//!   ([`read_head`]); hyper's connection (two 8 KiB buffers and its state) is built only once
//!   a whole head is in, and is handed that head first ([`Prefixed`]). A connection that
//!   misses the deadline is closed without an answer.
//! - After that hyper serves the connection with the same deadline as its
//!   `header_read_timeout`. In the hyper version of `Cargo.lock` (1.12) that timer is started
//!   whenever hyper waits for a request head, which includes the wait on an idle keep-alive
//!   connection after a response: an idle keep-alive connection is closed (quietly, it is not
//!   an error) once the timeout passes without a new request. It does not cover a request
//!   body: a client that sends its headers and then trickles its body stays pending until it
//!   finishes or its handler gives up.
//! - Upgrading ends hyper's connection, and with it the connection's task and its pending
//!   permit; the WebSocket session runs in a task of its own (see [`super::ws`]).
//!
//! Only HTTP/1.1 is spoken (browsers never use cleartext HTTP/2).
//!
//! Shutdown: the loop stops accepting; connections still waiting for their first head are
//! closed; hyper's connections finish the request in progress and take no other (an idle
//! one closes at once); and [`serve`] returns once all have ended, or after the grace
//! period, when the rest are dropped. The caller then closes the WebSocket sessions.

use std::{future::Future, pin::pin, sync::Arc, time::Duration};

use axum::Router;
use common::{ErrorCode, ServerMessage};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{config::Config, relay::Relay};

/// Longest request head accepted (request line and headers), in bytes: larger is answered
/// 431. Browsers send well under 8 KiB, cookies included; hyper's own default, about
/// 400 KiB, would let each pending connection hold that much.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// First capacity of the buffer a request head is read into: an ordinary WebSocket upgrade
/// from a browser fits; a longer head grows it by doubling, up to [`MAX_HEAD_BYTES`].
const FIRST_HEAD_BUFFER: usize = 512;

/// Pause after an accept fails for lack of a resource (file descriptors, memory), so the
/// loop does not spin while connections close.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What the accept loop needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ServeSettings {
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Most pending connections (accepted, not upgraded) at once.
    pub max_pending: usize,
    /// Kernel send buffer set on every accepted socket (`None`: the kernel's autotuning).
    pub send_buffer: Option<usize>,
    /// How long shutdown waits for HTTP requests in progress.
    pub grace: Duration,
}

impl ServeSettings {
    /// The settings `config` gives.
    pub fn from_config(config: &Config) -> Self {
        ServeSettings {
            header_timeout: config.header_timeout,
            max_pending: config.max_pending_connections,
            send_buffer: config.socket_send_buffer,
            grace: config.shutdown_grace,
        }
    }
}

/// What every connection task shares: one allocation, reached through an `Arc`, so a pending
/// connection's task carries a pointer rather than copies.
struct Shared {
    /// hyper's HTTP/1.1 settings.
    http: http1::Builder,
    /// The relay's routes.
    router: Router,
    /// For the counters of refused and timed-out connections.
    relay: Relay,
    /// The header deadline, for the first request (later ones: hyper's timer).
    header_timeout: Duration,
    /// Cancelled when shutdown starts: take no new request.
    closing: CancellationToken,
    /// Cancelled when the grace period is over: drop the connection whatever it is doing.
    abandon: CancellationToken,
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets the
/// requests in progress finish (up to the grace period) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    relay: Relay,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_header_size(MAX_HEAD_BYTES);
    let shared = Arc::new(Shared {
        http,
        router,
        relay,
        header_timeout: settings.header_timeout,
        closing: CancellationToken::new(),
        abandon: CancellationToken::new(),
    });
    let pending = Arc::new(Semaphore::new(settings.max_pending));
    let refusal = busy_response(settings.max_pending);
    let connections = TaskTracker::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) if is_connection_error(&err) => continue,
            Err(err) => {
                tracing::error!(%err, "cannot accept connections; pausing");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            shared.relay.metrics().pending_refused();
            refuse(&stream, &refusal);
            continue;
        };
        tune(&stream, settings.send_buffer);
        connections.spawn(serve_connection(stream, permit, shared.clone()));
    }
    drop(listener);
    shared.closing.cancel();
    connections.close();
    if tokio::time::timeout(settings.grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            unfinished = connections.len(),
            "HTTP requests still in progress at the shutdown deadline; dropping them"
        );
        shared.abandon.cancel();
        connections.wait().await;
    }
}

/// Errors that concern one connection only (it was reset or aborted before the accept);
/// any other accept error (no file descriptor or memory left) concerns them all.
fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// Every accepted socket: no Nagle delay (a chat message should leave at once; batching is
/// done by the writer, one flush per batch), and the configured send buffer.
fn tune(stream: &TcpStream, send_buffer: Option<usize>) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%err, "cannot set TCP_NODELAY");
    }
    if let Some(bytes) = send_buffer
        && let Err(err) = socket2::SockRef::from(stream).set_send_buffer_size(bytes)
    {
        tracing::debug!(%err, "cannot set SO_SNDBUF");
    }
}

/// The answer to a connection over the pending limit: 503 with the `server_full` error the
/// upgrade's own limit answers, built once.
fn busy_response(max_pending: usize) -> Vec<u8> {
    let body = serde_json::to_string(&ServerMessage::Error {
        code: ErrorCode::ServerFull,
        message: format!(
            "the relay has {max_pending} connections waiting to be served; try again later"
        ),
        id: None,
        room: None,
    })
    .expect("an error message serializes");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers `refusal` and closes, from the accept loop itself: no task, no buffer kept.
///
/// Straight system calls rather than tokio's `try_read`/`try_write`, which answer
/// `WouldBlock` until the reactor has seen the new socket ready. What the client already
/// sent is read first, because closing a socket with unread data makes the kernel reset
/// the connection, and a client may then lose the answer. A freshly accepted socket's send
/// buffer is empty, so the answer fits; if the send fails anyway, the close alone tells the
/// client.
fn refuse(stream: &TcpStream, refusal: &[u8]) {
    let socket = socket2::SockRef::from(stream);
    let mut discard = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
    let _ = socket.recv(&mut discard);
    let _ = socket.send(refusal);
}

/// One connection's life, from the accept to its end or its upgrade. `_pending` is its
/// pending permit, released when this returns.
async fn serve_connection(stream: TcpStream, _pending: OwnedSemaphorePermit, shared: Arc<Shared>) {
    let head = tokio::select! {
        head = tokio::time::timeout(shared.header_timeout, read_head(&stream)) => head,
        () = shared.closing.cancelled() => return,
    };
    let head = match head {
        Ok(Ok(head)) => head,
        Ok(Err(err)) => {
            tracing::debug!(%err, "connection ended before its request");
            return;
        }
        Err(_) => {
            shared.relay.metrics().header_timeout();
            tracing::debug!("request headers did not arrive in time; closing");
            return;
        }
    };
    // Boxed: hyper's connection is large, and kept inline it would make every task that
    // only waits for a head that large.
    Box::pin(serve_http(Prefixed::new(head, stream), &shared)).await;
}

/// Reads until the request head is complete (an empty line), or [`MAX_HEAD_BYTES`] have
/// arrived (then hyper answers 431). Nothing is allocated before the first bytes arrive.
///
/// The end of the head is searched for only in what each read added (plus the two bytes
/// before it), so a client that sends its head a byte at a time costs linear time.
async fn read_head(stream: &TcpStream) -> std::io::Result<Vec<u8>> {
    use bytes::BufMut;
    let mut head = Vec::new();
    loop {
        stream.readable().await?;
        if head.len() == head.capacity() {
            head.reserve(head.capacity().max(FIRST_HEAD_BUFFER));
        }
        let before = head.len();
        let room = MAX_HEAD_BYTES - before;
        match stream.try_read_buf(&mut (&mut head).limit(room)) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {
                if ends_head(&head[before.saturating_sub(2)..]) || head.len() == MAX_HEAD_BYTES {
                    return Ok(head);
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
}

/// Whether `bytes` contain the empty line that ends a request head. Bare `\n` line ends
/// count too, as hyper's parser accepts them. (Two blank lines before the request line,
/// which hyper skips, would be taken for the end: hyper then reads the rest itself, under
/// its own header timer.)
fn ends_head(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|pair| pair == b"\n\n") || bytes.windows(3).any(|three| three == b"\n\r\n")
}

/// Serves HTTP on a connection whose first head has arrived, until it ends or upgrades.
async fn serve_http(io: Prefixed, shared: &Shared) {
    let service = TowerToHyperService::new(shared.router.clone());
    let mut connection = pin!(
        shared
            .http
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades()
    );
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = shared.closing.cancelled() => {
            // Finish the request in progress, take no other (an idle connection closes now).
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                ended = connection => ended,
                () = shared.abandon.cancelled() => return,
            }
        }
    };
    if let Err(err) = ended {
        if err.is_timeout() {
            shared.relay.metrics().header_timeout();
        }
        tracing::debug!(%err, "HTTP connection failed");
    }
}

/// A socket whose first reads return the bytes already read from it (the request head),
/// then read the socket itself. Writes go straight to the socket.
struct Prefixed {
    /// Bytes read before hyper took over; freed once hyper has read them all.
    head: Vec<u8>,
    /// How much of `head` has been handed out.
    handed: usize,
    /// The connection.
    stream: TcpStream,
}

impl Prefixed {
    /// `stream`, to be read from after `head`.
    fn new(head: Vec<u8>, stream: TcpStream) -> Self {
        Prefixed {
            head,
            handed: 0,
            stream,
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.handed < this.head.len() {
            let rest = &this.head[this.handed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.handed += n;
            if this.handed == this.head.len() {
                this.head = Vec::new();
                this.handed = 0;
            }
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
