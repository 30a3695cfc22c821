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
        })
    }

    /// Connects client number `index`.
    pub async fn connect(&self, index: usize) -> anyhow::Result<Socket> {
        let socket = TcpSocket::new_v4()?;
        let source = Ipv4Addr::new(127, 0, 0, 1 + (index % 250) as u8);
        socket.bind(SocketAddr::from((source, 0)))?;
        socket.set_recv_buffer_size(16 * 1024)?;
        let stream = socket.connect(self.address).await?;
        stream.set_nodelay(true)?;
        // tungstenite zero-fills its whole read buffer (128 KiB by default) before each read:
        // with thousands of clients on one core that memset alone was a third of the load
        // generator's time, and the measured latency was mostly the generator's own.
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(4096);
        let (socket, _) = client_async_with_config(self.url.as_str(), stream, Some(config)).await?;
        Ok(socket)
    }
}
