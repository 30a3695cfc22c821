//! Opening many client connections: each from its own loopback source address in turn
//! (127.0.0.1 to 127.0.0.250), so tens of thousands of connections never run out of
//! ephemeral ports, and with a small receive buffer so idle clients stay cheap.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config, tungstenite::protocol::WebSocketConfig,
};

/// One client connection.
pub type Socket = WebSocketStream<TcpStream>;

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// The WebSocket URL, e.g. `ws://127.0.0.1:8080/`.
    pub url: String,
    /// Its host and port, resolved once.
    pub address: SocketAddr,
    /// How messages travel.
    pub protocol: crate::scenarios::Protocol,
    /// Further nodes of the same server (relays sharing one Redis), with their addresses:
    /// client `index` connects to node `index % (1 + others.len())`, the first being `url`.
    pub others: Vec<(String, SocketAddr)>,
}

impl Target {
    /// Parses a `ws://host:port/path` URL. Loopback only: load never leaves the machine.
    pub fn parse(url: &str, protocol: crate::scenarios::Protocol) -> anyhow::Result<Target> {
        let rest = url
            .strip_prefix("ws://")
            .context("the URL must start with ws://")?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let address: SocketAddr = authority
            .parse()
            .with_context(|| format!("{authority} is not an IP:port"))?;
        anyhow::ensure!(
            address.ip().is_loopback(),
            "load tests talk to loopback addresses only, not {}",
            address.ip()
        );
        Ok(Target {
            url: url.to_owned(),
            address,
            protocol,
            others: Vec::new(),
        })
    }

    /// Adds another node of the server (same path), parsed like [`Target::parse`].
    pub fn also(mut self, url: &str) -> anyhow::Result<Target> {
        let other = Target::parse(url, self.protocol)?;
        self.others.push((other.url, other.address));
        Ok(self)
    }

    /// Connects client number `index`.
    pub async fn connect(&self, index: usize) -> anyhow::Result<Socket> {
        let socket = TcpSocket::new_v4()?;
        let source = Ipv4Addr::new(127, 0, 0, 1 + (index % 250) as u8);
        socket.bind(SocketAddr::from((source, 0)))?;
        socket.set_recv_buffer_size(16 * 1024)?;
        let (url, address) = match index % (1 + self.others.len()) {
            0 => (self.url.as_str(), self.address),
            n => (self.others[n - 1].0.as_str(), self.others[n - 1].1),
        };
        let stream = socket.connect(address).await?;
        stream.set_nodelay(true)?;
        // tungstenite zero-fills its whole read buffer (128 KiB by default) before each read:
        // with thousands of clients on one core that memset alone was a third of the load
        // generator's time, and the measured latency was mostly the generator's own.
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(4096);
        let (socket, _) = client_async_with_config(url, stream, Some(config)).await?;
        Ok(socket)
    }
}
