//! The least a broadcast relay can do, as a yardstick for the latency scenario.
//!
//! Every text message a client sends is written to every other client, straight from the
//! sender's reader thread with one blocking `write` per recipient: no runtime, no queues, no
//! storage, no limits, no heartbeat. Not a server anyone should run; it answers "how fast can
//! one core push a frame to N sockets on this machine?", which bounds what any relay
//! (ours, Node's, PHP's) can reach in `relay-bench latency`.
//!
//! Usage: `floor-relay 127.0.0.1:18082` (loopback only).

use std::{
    io::Write,
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
};

use tokio_tungstenite::tungstenite::{self, Message};

/// Every connected client's socket, by connection number.
type Clients = Arc<Mutex<Vec<(usize, TcpStream)>>>;

fn main() -> anyhow::Result<()> {
    let address: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18082".into())
        .parse()?;
    anyhow::ensure!(address.ip().is_loopback(), "loopback addresses only");
    let listener = TcpListener::bind(address)?;
    let clients = Clients::default();
    for (id, stream) in listener.incoming().enumerate() {
        let stream = stream?;
        let clients = clients.clone();
        // Small stacks: the latency scenario holds a thousand of these threads.
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || serve(id, stream, &clients))?;
    }
    Ok(())
}

/// Handshakes, then relays this client's text messages until it goes away.
fn serve(id: usize, stream: TcpStream, clients: &Clients) {
    let _ = stream.set_nodelay(true);
    let Ok(mut socket) = tungstenite::accept(stream) else {
        return;
    };
    let Ok(writer) = socket.get_ref().try_clone() else {
        return;
    };
    clients.lock().unwrap().push((id, writer));
    let mut frame = Vec::new();
    while let Ok(message) = socket.read() {
        if let Message::Text(text) = message {
            encode_text_frame(&text, &mut frame);
            let mut clients = clients.lock().unwrap();
            for (other, writer) in clients.iter_mut() {
                if *other != id {
                    let _ = writer.write_all(&frame);
                }
            }
        }
    }
    clients.lock().unwrap().retain(|(other, _)| *other != id);
}

/// An unmasked, unfragmented server-to-client text frame (RFC 6455 section 5.2).
fn encode_text_frame(text: &str, frame: &mut Vec<u8>) {
    frame.clear();
    frame.push(0x81);
    match text.len() {
        len @ 0..=125 => frame.push(len as u8),
        len @ 126..=0xFFFF => {
            frame.push(126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(text.as_bytes());
}
