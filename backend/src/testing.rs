//! Test support shared by the unit tests, the integration tests and the benchmarks: a real
//! `redis-server` on a free loopback port with a directory of its own, or a Redis Cluster of
//! several such servers.
//!
//! Not used by the relay itself. `scripts/setup.sh --test` installs Debian's `redis-server`;
//! `$REDIS_SERVER` names another binary.

use std::{
    io::{BufRead, BufReader, Read, Write},
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
    /// Runs as a node of a Redis Cluster.
    cluster_node: bool,
}

/// What the tests need of a Redis deployment, whether one server or a cluster.
pub trait RedisDeployment {
    /// The relay's `--redis-url` for it.
    fn url(&self) -> String;
    /// How its servers keep their data.
    fn persistence(&self) -> Persistence;
    /// Its servers.
    fn servers(&self) -> Vec<&RedisServer>;
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
        RedisServer::start_node(persistence, false)
    }

    fn start_node(persistence: Persistence, cluster_node: bool) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut server = RedisServer {
            child: None,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: tempfile::tempdir().expect("a directory for Redis"),
            persistence,
            cluster_node,
        };
        server.spawn();
        server
    }

    /// Its address.
    pub fn address(&self) -> SocketAddr {
        self.address
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
        if self.cluster_node {
            // The cluster's state (its nodes and who serves which slots) is kept in the
            // server's directory, so a restarted node rejoins by itself.
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]);
        }
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
        self.call(&["PING"]).is_ok_and(|answer| answer == "PONG")
    }

    /// Runs one command over a connection of its own; its answer as text (a status, an
    /// integer or a bulk string; `-ERR …` for an error).
    pub fn call(&self, parts: &[&str]) -> std::io::Result<String> {
        let stream = TcpStream::connect_timeout(&self.address, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = format!("*{}\r\n", parts.len());
        for part in parts {
            request.push_str(&format!("${}\r\n{part}\r\n", part.len()));
        }
        (&stream).write_all(request.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        let bad = || std::io::Error::other(format!("unexpected answer {line:?}"));
        match line.split_at_checked(1).ok_or_else(bad)? {
            ("+" | ":", rest) => Ok(rest.to_owned()),
            ("-", _) => Ok(line.to_owned()),
            ("$", length) => {
                let length: usize = length.parse().map_err(|_| bad())?;
                let mut body = vec![0; length + 2];
                reader.read_exact(&mut body)?;
                body.truncate(length);
                Ok(String::from_utf8_lossy(&body).into_owned())
            }
            _ => Err(bad()),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl RedisDeployment for RedisServer {
    fn url(&self) -> String {
        format!("redis://{}/", self.address)
    }

    fn persistence(&self) -> Persistence {
        self.persistence
    }

    fn servers(&self) -> Vec<&RedisServer> {
        vec![self]
    }
}

/// A Redis Cluster of primaries on loopback, without replicas: slots are shared out in
/// equal ranges, in order (shard 0 has the lowest).
#[derive(Debug)]
pub struct RedisCluster {
    shards: Vec<RedisServer>,
}

/// Slots of a Redis Cluster.
const SLOTS: u32 = 16384;

impl RedisCluster {
    /// Starts `shards` servers and joins them into a cluster; panics if it does not come up.
    pub fn start(persistence: Persistence, shards: usize) -> RedisCluster {
        assert!(shards > 0);
        let cluster = RedisCluster {
            shards: (0..shards)
                .map(|_| RedisServer::start_node(persistence, true))
                .collect(),
        };
        for (index, shard) in cluster.shards.iter().enumerate() {
            let (first, last) = cluster.slots_of(index);
            let answer = shard
                .call(&[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ])
                .expect("CLUSTER ADDSLOTSRANGE");
            assert_eq!(answer, "OK", "CLUSTER ADDSLOTSRANGE");
        }
        let first = &cluster.shards[0];
        for other in &cluster.shards[1..] {
            let port = other.address.port().to_string();
            let answer = first.call(&["CLUSTER", "MEET", "127.0.0.1", &port]);
            assert_eq!(answer.expect("CLUSTER MEET"), "OK");
        }
        cluster.wait_until_ok();
        cluster
    }

    /// The first and last slot of shard `index`.
    fn slots_of(&self, index: usize) -> (u32, u32) {
        let count = self.shards.len() as u32;
        let index = index as u32;
        (SLOTS * index / count, SLOTS * (index + 1) / count - 1)
    }

    /// Waits until every shard says the cluster is up and knows every other.
    pub fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let known = format!("cluster_known_nodes:{}", self.shards.len());
        let ok = |shard: &RedisServer| {
            shard.call(&["CLUSTER", "INFO"]).is_ok_and(|info| {
                info.contains("cluster_state:ok") && info.lines().any(|line| line.trim() == known)
            })
        };
        while !self.shards.iter().all(ok) {
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Which shard holds `key`.
    pub fn shard_of(&self, key: &str) -> usize {
        let slot: u32 = self.shards[0]
            .call(&["CLUSTER", "KEYSLOT", key])
            .expect("CLUSTER KEYSLOT")
            .parse()
            .expect("a slot number");
        (0..self.shards.len())
            .find(|index| {
                let (first, last) = self.slots_of(*index);
                (first..=last).contains(&slot)
            })
            .expect("every slot has a shard")
    }

    /// Restarts shard `index` (after [`RedisServer::kill`] or while running) and waits until
    /// the cluster is up again.
    pub fn restart_shard(&mut self, index: usize) {
        self.shards[index].restart();
        self.wait_until_ok();
    }

    /// Shard `index`, to kill or restart.
    pub fn shard(&mut self, index: usize) -> &mut RedisServer {
        &mut self.shards[index]
    }
}

impl RedisDeployment for RedisCluster {
    fn url(&self) -> String {
        let urls: Vec<String> = self.shards.iter().map(RedisDeployment::url).collect();
        urls.join(",")
    }

    fn persistence(&self) -> Persistence {
        self.shards[0].persistence
    }

    fn servers(&self) -> Vec<&RedisServer> {
        self.shards.iter().collect()
    }
}
