//! Test helpers: a real relay on an ephemeral port, and real WebSocket clients.
//!
//! Logs are hidden unless `TEST_LOG=1`. Every wait is bounded by [`WAIT`], so a missing
//! frame fails the test with a message instead of hanging it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use backend::{config::Config, engine::Engine, startup, telemetry};
use common::{
    ChatMessage, ClientMessage, Member, Position, Recovery, ServerMessage, api::Published,
};
use futures_util::{SinkExt, StreamExt};
use tokio::{net::TcpStream, sync::oneshot, task::JoinHandle};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, protocol::CloseFrame},
};

/// Longest a test waits for any one thing.
pub const WAIT: Duration = Duration::from_secs(5);

/// A relay running in this process on `127.0.0.1:0`.
pub struct TestRelay {
    pub address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<anyhow::Result<()>>,
    /// The relay's own data directory, deleted with it.
    _data: tempfile::TempDir,
}

/// Default settings, with the SQLite store in a fresh temporary directory.
pub fn test_config() -> (Config, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: data.path().to_owned(),
        ..Config::default()
    };
    (config, data)
}

/// Lifts the rate limit, for tests that publish as fast as they can.
pub fn unthrottled(config: &mut Config) {
    config.session.rate = backend::connection::RateLimit {
        per_second: 1e9,
        burst: u32::MAX,
        abuse_after: u32::MAX,
    };
}

/// A relay for tests that publish as fast as they can: no rate limit.
pub async fn spawn_unthrottled_relay() -> TestRelay {
    let (mut config, data) = test_config();
    unthrottled(&mut config);
    spawn_relay_with(config, data).await
}

/// Starts a relay with default settings and its own store.
pub async fn spawn_relay() -> TestRelay {
    let (config, data) = test_config();
    spawn_relay_with(config, data).await
}

/// Starts a relay with `config` (its `listen` is ignored: the port is ephemeral), keeping
/// `data` alive as long as the relay.
pub async fn spawn_relay_with(config: Config, data: tempfile::TempDir) -> TestRelay {
    spawn(config, data, None).await
}

/// Starts a relay on `engine` instead of the one `config` names.
pub async fn spawn_relay_on(
    config: Config,
    data: tempfile::TempDir,
    engine: Arc<dyn Engine>,
) -> TestRelay {
    spawn(config, data, Some(engine)).await
}

async fn spawn(
    config: Config,
    data: tempfile::TempDir,
    engine: Option<Arc<dyn Engine>>,
) -> TestRelay {
    if std::env::var_os("TEST_LOG").is_some() {
        telemetry::init(std::io::stderr);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let stopped = async move {
        let _ = stopped.await;
    };
    let server = match engine {
        Some(engine) => tokio::spawn(startup::run_with_engine(listener, config, engine, stopped)),
        None => tokio::spawn(startup::run(listener, config, stopped)),
    };
    TestRelay {
        address,
        stop: Some(stop),
        server,
        _data: data,
    }
}

impl TestRelay {
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.address)
    }

    /// A client of the plain, seed-compatible endpoint `/`.
    pub async fn plain(&self) -> Client {
        Client::connect(&self.url("/")).await
    }

    /// A client of the typed endpoint `/ws`, past its `welcome`; returns its connection id too.
    pub async fn typed(&self) -> (Client, u64) {
        let mut client = Client::connect(&self.url("/ws")).await;
        match client.next_event().await {
            ServerMessage::Welcome { connection, .. } => (client, connection),
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// A typed client that has joined `room` as `name`, past the `joined` frame.
    pub async fn member(&self, room: &str, name: &str) -> Client {
        let (mut client, _) = self.typed().await;
        client.join(room, name).await;
        client
    }

    /// Starts shutdown and returns the server's result, waiting at most [`WAIT`] plus the
    /// configured grace.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().expect("shut down once").send(());
        tokio::time::timeout(WAIT * 3, &mut self.server)
            .await
            .expect("relay did not stop in time")
            .expect("relay task panicked")
    }
}

/// The parts of a `joined` answer tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub epoch: String,
    pub offset: u64,
    pub recovery: Recovery,
}

impl Joined {
    /// The position of offset `offset` in this room's history.
    pub fn at(&self, offset: u64) -> Position {
        Position {
            epoch: self.epoch.clone(),
            offset,
        }
    }
}

/// A real WebSocket client.
pub struct Client {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (socket, _) = tokio::time::timeout(WAIT, connect_async(url))
            .await
            .expect("connect timed out")
            .unwrap_or_else(|err| panic!("connect to {url}: {err}"));
        Client { socket }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.unwrap();
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.socket
            .send(Message::binary(bytes.to_vec()))
            .await
            .unwrap();
    }

    pub async fn send(&mut self, message: &ClientMessage) {
        self.send_text(&serde_json::to_string(message).unwrap())
            .await;
    }

    /// Sends a `send` request.
    pub async fn say(&mut self, room: &str, id: &str, text: &str) {
        self.send(&ClientMessage::Send {
            room: room.into(),
            id: id.into(),
            text: text.into(),
            resend: false,
        })
        .await;
    }

    /// Joins `room` and returns the `joined` answer's member list.
    pub async fn join(&mut self, room: &str, name: &str) -> Vec<Member> {
        self.send(&ClientMessage::Join {
            room: room.into(),
            name: name.into(),
            since: None,
        })
        .await;
        match self.next_event().await {
            ServerMessage::Joined { members, .. } => members,
            other => panic!("expected joined, got {other:?}"),
        }
    }

    /// Joins `room` from position `since` and returns the `joined` answer.
    pub async fn join_since(&mut self, room: &str, name: &str, since: Option<Position>) -> Joined {
        self.send(&ClientMessage::Join {
            room: room.into(),
            name: name.into(),
            since,
        })
        .await;
        match self.next_event().await {
            ServerMessage::Joined {
                epoch,
                offset,
                recovery,
                ..
            } => Joined {
                epoch,
                offset,
                recovery,
            },
            other => panic!("expected joined, got {other:?}"),
        }
    }

    /// The next chat message, skipping presence notices.
    pub async fn next_message(&mut self) -> ChatMessage {
        match self.next_non_presence().await {
            ServerMessage::Message(message) => message,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The next frame, which must be text.
    pub async fn next_text(&mut self) -> String {
        match self.next_frame().await {
            Message::Text(text) => text.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next frame, parsed as a server message.
    pub async fn next_event(&mut self) -> ServerMessage {
        let text = self.next_text().await;
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("bad server JSON {text}: {err}"))
    }

    /// Skips presence notices and returns the next other event.
    pub async fn next_non_presence(&mut self) -> ServerMessage {
        loop {
            match self.next_event().await {
                ServerMessage::MemberJoined { .. } | ServerMessage::MemberLeft { .. } => {}
                other => return other,
            }
        }
    }

    /// The text of the next chat message, skipping presence notices.
    pub async fn next_message_text(&mut self) -> String {
        match self.next_non_presence().await {
            ServerMessage::Message(message) => message.text,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Reads until the relay's close frame and returns it.
    pub async fn close_frame(&mut self) -> Option<CloseFrame> {
        loop {
            if let Message::Close(frame) = self.next_frame().await {
                return frame;
            }
        }
    }

    async fn next_frame(&mut self) -> Message {
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("no frame from the relay in time")
                .expect("connection ended")
                .expect("connection failed");
            if !matches!(frame, Message::Ping(_) | Message::Pong(_)) {
                return frame;
            }
        }
    }
}

/// `GET path` over a plain TCP connection; returns the response body.
pub async fn http_get(address: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("HTTP response in time")
        .unwrap();
    let (_, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    body.to_owned()
}

/// The relay's `/healthz` answer.
pub async fn health(address: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&http_get(address, "/healthz").await).unwrap()
}

/// Polls `check` every 20 ms until it holds, failing after [`WAIT`]: for effects that
/// happen after the event a test can observe (a counter bumped as a session winds down).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The API key of [`api_config`].
pub const API_KEY: &str = "test-api-key-0123456789";

/// [`test_config`] with the HTTP API on, under [`API_KEY`].
pub fn api_config() -> (Config, tempfile::TempDir) {
    let (mut config, data) = test_config();
    config.api.keys = vec![API_KEY.into()];
    (config, data)
}

/// An HTTP answer: status, headers (names in lower case) and body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    /// The body as JSON (panics, with the body, if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {:?}", self.body))
    }

    /// The body as `T`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("unexpected body ({err}): {:?}", self.body))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `status` and the JSON error `code`, for asserting on refusals.
    pub fn refusal(&self) -> (u16, String) {
        let code = self.json()["code"].as_str().unwrap_or("").to_owned();
        (self.status, code)
    }
}

/// One HTTP/1.1 request over its own connection (`Connection: close`), with `headers`
/// and `body`; bounded by [`WAIT`].
pub async fn http_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(address).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, async {
        // The relay may answer (413) before reading the whole body and close.
        let _ = stream.write_all(&bytes).await;
        let _ = stream.read_to_end(&mut response).await;
    })
    .await
    .expect("HTTP response in time");
    let response = String::from_utf8(response).expect("a UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    HttpAnswer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// The relay's HTTP API, called with a key.
#[derive(Debug, Clone)]
pub struct Api {
    pub address: SocketAddr,
    pub key: String,
}

impl Api {
    /// The API of the relay at `address`, with [`API_KEY`].
    pub fn at(address: SocketAddr) -> Api {
        Api {
            address,
            key: API_KEY.into(),
        }
    }

    pub async fn get(&self, path: &str) -> HttpAnswer {
        self.call("GET", path, "").await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> HttpAnswer {
        self.call("POST", path, &body.to_string()).await
    }

    /// Any method and raw body, with the key.
    pub async fn call(&self, method: &str, path: &str, body: &str) -> HttpAnswer {
        let authorization = format!("Bearer {}", self.key);
        http_request(
            self.address,
            method,
            path,
            &[
                ("Authorization", &authorization),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
        .await
    }

    /// Publishes `text` into `room` (with `key` as its idempotency key), expecting 200.
    pub async fn publish(&self, room: &str, text: &str, key: Option<&str>) -> Published {
        let mut body = serde_json::json!({"room": room, "text": text});
        if let Some(key) = key {
            body["idempotency_key"] = key.into();
        }
        let answer = self.post("/api/publish", body).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.parse()
    }
}

impl TestRelay {
    /// This relay's HTTP API.
    pub fn api(&self) -> Api {
        Api::at(self.address)
    }
}
