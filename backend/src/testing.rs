//! Test support shared by the unit tests, the integration tests and the benchmarks: a real
//! `redis-server` on a free loopback port with a directory of its own.
//!
//! Not used by the relay itself. `scripts/setup.sh --test` installs Debian's `redis-server`;
//! `$REDIS_SERVER` names another binary.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// How Redis keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing on disk: a restart loses everything.
    None,
    /// An append-only file fsynced on every write (`appendfsync always`).
    AofAlways,
}

/// A `redis-server` child process, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    address: SocketAddr,
    dir: tempfile::TempDir,
    persistence: Persistence,
}

/// Whether the machine has a `redis-server` to run.
pub fn redis_available() -> bool {
    Command::new(binary())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn binary() -> PathBuf {
    std::env::var_os("REDIS_SERVER").map_or_else(|| "redis-server".into(), PathBuf::from)
}

impl RedisServer {
    /// Starts a server on a free loopback port; panics (with what to install) if it cannot.
    pub fn start(persistence: Persistence) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut server = RedisServer {
            child: None,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: tempfile::tempdir().expect("a directory for Redis"),
            persistence,
        };
        server.spawn();
        server
    }

    /// `redis://` URL of the server.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.address)
    }

    /// Its address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// How it keeps its data.
    pub fn persistence(&self) -> Persistence {
        self.persistence
    }

    /// Kills the server (SIGKILL: no chance to save anything) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (after [`RedisServer::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let mut command = Command::new(binary());
        command
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.address.port().to_string())
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match self.persistence {
            Persistence::None => command.args(["--appendonly", "no"]),
            Persistence::AofAlways => {
                command.args(["--appendonly", "yes", "--appendfsync", "always"])
            }
        };
        let child = command.spawn().unwrap_or_else(|err| {
            panic!(
                "cannot start {}: {err} (install Debian's redis-server: scripts/setup.sh --test)",
                binary().display()
            )
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers_ping() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server answers `PING` (and has loaded its data: it answers `-LOADING`
    /// until then).
    pub fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.address, Duration::from_secs(1))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut answer = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
