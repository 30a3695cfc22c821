//! WebSocket framing (RFC 6455), written for the relay's hot path.
//!
//! The relay fans one message out to many connections, so the write side is the hot path:
//! a message is encoded once and shared, and a connection's writer frames a whole batch of
//! shared payloads into one buffer and hands it to the kernel in one `send`, with none of a
//! general-purpose library's per-frame machinery (message enums, split-stream locks,
//! per-frame buffering calls).
//!
//! [`FrameReader`] turns what a client sends into whole messages and control frames, and
//! reports every protocol mistake as a [`Violation`] that names its close code.
//! [`write_frames`] writes a batch of text frames (after any pings, pongs or close).

use axum::extract::ws::Utf8Bytes;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Frame opcodes (RFC 6455 section 5.2).
mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// The longest header a server frame can have: 2 bytes, 8 of extended length, no mask.
const MAX_HEADER: usize = 10;

/// Most bytes gathered for one `send`.
pub const WRITE_CHUNK: usize = 64 * 1024;

/// Something complete that a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A whole text message (reassembled if it came in fragments), valid UTF-8.
    Text(Utf8Bytes),
    /// A whole binary message; the relay only needs to know one arrived.
    Binary,
    /// A ping, with the payload the pong must echo.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A close frame, with its status code if it had one.
    Close(Option<u16>),
}

/// How a client broke the protocol; each kind has its close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// Malformed framing: unmasked, reserved bits, unknown opcode, bad fragmentation,
    /// oversized control frame, bad close payload (close 1002).
    Protocol(&'static str),
    /// Text that is not UTF-8 (close 1007).
    InvalidUtf8,
    /// A message longer than the limit (close 1009).
    TooBig,
}

/// Reads client frames from a byte stream. Holds only a small buffer between messages.
#[derive(Debug)]
pub struct FrameReader {
    buffer: BytesMut,
    /// The buffer's size between messages: it shrinks back after a large one.
    idle_capacity: usize,
    max_message: usize,
    /// A fragmented message in progress: its opcode and the payload so far.
    fragments: Option<(u8, BytesMut)>,
}

impl FrameReader {
    /// A reader for messages of at most `max_message` bytes, starting with an
    /// `idle_capacity`-byte buffer.
    pub fn new(idle_capacity: usize, max_message: usize) -> Self {
        FrameReader {
            buffer: BytesMut::new(),
            idle_capacity: idle_capacity.max(MAX_HEADER + 4),
            max_message,
            fragments: None,
        }
    }

    /// The next complete message or control frame. `None` when the stream ended or failed
    /// (there is nobody left to tell); `Some(Err(..))` when the client broke the protocol.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
    ) -> Option<Result<Incoming, Violation>> {
        loop {
            match self.parse() {
                Ok(Some(incoming)) => return Some(Ok(incoming)),
                Ok(None) => {}
                Err(violation) => return Some(Err(violation)),
            }
            if self.buffer.capacity() == self.buffer.len() {
                // Allocated on the first read, not per idle connection up front.
                self.buffer
                    .reserve(self.idle_capacity.max(self.buffer.len()));
            }
            match stream.read_buf(&mut self.buffer).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Takes one complete item from the buffer, if it holds one.
    fn parse(&mut self) -> Result<Option<Incoming>, Violation> {
        loop {
            let Some(frame) = self.take_frame()? else {
                return Ok(None);
            };
            if let Some(incoming) = self.assemble(frame)? {
                return Ok(Some(incoming));
            }
        }
    }

    /// Splits one whole, unmasked frame off the buffer.
    fn take_frame(&mut self) -> Result<Option<RawFrame>, Violation> {
        let buffer = &self.buffer[..];
        if buffer.len() < 2 {
            return Ok(None);
        }
        let (first, second) = (buffer[0], buffer[1]);
        let fin = first & 0x80 != 0;
        if first & 0x70 != 0 {
            return Err(Violation::Protocol("reserved bits set"));
        }
        let code = first & 0x0F;
        if second & 0x80 == 0 {
            return Err(Violation::Protocol("client frames must be masked"));
        }
        let control = code >= opcode::CLOSE;
        match code {
            opcode::CONTINUATION | opcode::TEXT | opcode::BINARY => {}
            opcode::CLOSE | opcode::PING | opcode::PONG => {}
            _ => return Err(Violation::Protocol("unknown opcode")),
        }
        let (length, length_bytes) = match second & 0x7F {
            126 if buffer.len() >= 4 => (u64::from(u16::from_be_bytes([buffer[2], buffer[3]])), 2),
            127 if buffer.len() >= 10 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&buffer[2..10]);
                (u64::from_be_bytes(bytes), 8)
            }
            126 | 127 => return Ok(None),
            short => (u64::from(short), 0),
        };
        if control && (!fin || length > 125) {
            return Err(Violation::Protocol(
                "control frames must be whole and short",
            ));
        }
        let pending = self
            .fragments
            .as_ref()
            .map_or(0, |(_, so_far)| so_far.len());
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        if !control && length.saturating_add(pending) > self.max_message {
            // Refused on the header alone: the payload is never buffered.
            return Err(Violation::TooBig);
        }
        let header = 2 + length_bytes + 4;
        if buffer.len() < header + length {
            let missing = header + length - buffer.len();
            self.buffer.reserve(missing);
            return Ok(None);
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&buffer[header - 4..header]);
        self.buffer.advance(header);
        let mut payload = self.buffer.split_to(length);
        unmask(&mut payload, mask);
        if self.buffer.is_empty() && self.buffer.capacity() > self.idle_capacity {
            // Back to a small buffer after a large message.
            self.buffer = BytesMut::new();
        }
        Ok(Some(RawFrame { fin, code, payload }))
    }

    /// Reassembles fragments and checks control frames; returns what the frame completes.
    fn assemble(&mut self, frame: RawFrame) -> Result<Option<Incoming>, Violation> {
        let RawFrame { fin, code, payload } = frame;
        match code {
            opcode::PING => return Ok(Some(Incoming::Ping(payload.freeze()))),
            opcode::PONG => return Ok(Some(Incoming::Pong)),
            opcode::CLOSE => return close_status(&payload).map(|code| Some(Incoming::Close(code))),
            _ => {}
        }
        let (code, payload) = match (code, self.fragments.take()) {
            (opcode::CONTINUATION, None) => {
                return Err(Violation::Protocol("continuation without a message"));
            }
            (opcode::CONTINUATION, Some((first, mut so_far))) => {
                so_far.extend_from_slice(&payload);
                (first, so_far)
            }
            (_, Some(_)) => return Err(Violation::Protocol("new message inside a fragmented one")),
            (code, None) => (code, payload),
        };
        if !fin {
            self.fragments = Some((code, payload));
            return Ok(None);
        }
        Ok(Some(match code {
            opcode::TEXT => Incoming::Text(
                Utf8Bytes::try_from(payload.freeze()).map_err(|_| Violation::InvalidUtf8)?,
            ),
            _ => Incoming::Binary,
        }))
    }
}

/// A frame off the wire, payload unmasked.
struct RawFrame {
    fin: bool,
    code: u8,
    payload: BytesMut,
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (index, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[index % 4];
    }
}

/// Reads a close frame's payload: nothing, or a valid status code and UTF-8 reason.
///
/// Valid from a client: the codes of RFC 6455 and IANA's registry an endpoint may send
/// (1000–1003, 1007–1014: 1012 "service restart", 1013 "try again later" and 1014 "bad
/// gateway" were registered after the RFC), and the ranges for libraries and applications
/// (3000–4999). Not 1004 (reserved), 1005, 1006 and 1015 (never sent in a frame), nor the
/// unassigned rest.
fn close_status(payload: &[u8]) -> Result<Option<u16>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::Protocol("close payload of one byte")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(Violation::Protocol("invalid close code"));
            }
            std::str::from_utf8(reason).map_err(|_| Violation::InvalidUtf8)?;
            Ok(Some(code))
        }
    }
}

/// A control frame the writer sends before the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Ask the client for a pong.
    Ping,
    /// Answer the client's ping.
    Pong(Bytes),
    /// Begin (or answer) the closing handshake.
    Close {
        /// Status code.
        code: u16,
        /// Short reason.
        reason: &'static str,
    },
}

/// Writes the `controls` (pings, pongs, a close) and then every text frame of `batch`, in as
/// few `send` calls as possible: frames are gathered into one buffer of up to
/// [`WRITE_CHUNK`] bytes per call.
///
/// Why not `writev` straight from the shared payloads: on Linux a socket `writev` goes
/// through the VFS write path and costs more kernel time per call than `send`; in the
/// latency scenario (one small frame per connection per message) that made every delivery
/// about 0.5 µs dearer, more than copying a batch saves.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    stream: &mut W,
    controls: &[Control],
    batch: &[Utf8Bytes],
) -> std::io::Result<()> {
    let total: usize = batch.iter().map(|frame| frame.len() + MAX_HEADER).sum();
    let control_bytes = controls.len() * (MAX_HEADER + 125);
    let mut buffer = Vec::with_capacity((total + control_bytes).min(WRITE_CHUNK));
    for control in controls {
        match control {
            Control::Ping => push_header(&mut buffer, opcode::PING, 0),
            Control::Pong(payload) => {
                push_header(&mut buffer, opcode::PONG, payload.len());
                buffer.extend_from_slice(payload);
            }
            Control::Close { code, reason } => {
                push_header(&mut buffer, opcode::CLOSE, 2 + reason.len());
                buffer.extend_from_slice(&code.to_be_bytes());
                buffer.extend_from_slice(reason.as_bytes());
            }
        }
    }
    for frame in batch {
        if !buffer.is_empty() && buffer.len() + MAX_HEADER + frame.len() > WRITE_CHUNK {
            stream.write_all(&buffer).await?;
            buffer.clear();
        }
        push_header(&mut buffer, opcode::TEXT, frame.len());
        buffer.extend_from_slice(frame.as_str().as_bytes());
    }
    if !buffer.is_empty() {
        stream.write_all(&buffer).await?;
    }
    stream.flush().await
}

fn push_header(headers: &mut Vec<u8>, code: u8, length: usize) {
    headers.push(0x80 | code);
    match length {
        0..=125 => headers.push(length as u8),
        126..=0xFFFF => {
            headers.push(126);
            headers.extend_from_slice(&(length as u16).to_be_bytes());
        }
        _ => {
            headers.push(127);
            headers.extend_from_slice(&(length as u64).to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests;
