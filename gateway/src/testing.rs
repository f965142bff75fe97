//! Test support shared by unit and integration tests: a real Redis and unique key prefixes.
//!
//! [`TestRedis::start`] uses `REDIS_URL` when set; otherwise it starts a `redis-server` from
//! `PATH` on a free port (no persistence, its own temporary directory) and stops it on drop.
//! With `REDIS_CLUSTER=1` it starts a Redis Cluster of three masters on loopback instead (and
//! its URL is `redis+cluster://…`), so the whole suite can run against a cluster.
//! [`shared_redis`] keeps one such server per test binary; a watchdog shell stops that server when
//! the test process exits (statics are never dropped). Every test should use its own
//! [`unique_prefix`] so tests never see each other's keys.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rand::Rng;

/// How long a started server has to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A directory removed on drop (kept out of `tempfile`, a dev-dependency only).
#[derive(Debug)]
pub struct TempDirGuard(PathBuf);

impl TempDirGuard {
    fn create() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "clinic-gateway-redis-{}-{:08x}",
            std::process::id(),
            rand::thread_rng().gen::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Redis for tests: given by `REDIS_URL`, or `redis-server` children owned by this value
/// (one, or the three masters of a cluster).
#[derive(Debug)]
pub struct TestRedis {
    pub url: String,
    servers: Vec<Server>,
}

/// One `redis-server` child, stopped on drop.
#[derive(Debug)]
struct Server {
    child: Child,
    port: u16,
    _dir: TempDirGuard,
}

/// Masters of the test cluster.
const CLUSTER_MASTERS: usize = 3;

/// True when the tests should run against a Redis Cluster (`REDIS_CLUSTER` set, not `0`).
pub fn cluster_requested() -> bool {
    std::env::var("REDIS_CLUSTER").is_ok_and(|v| !v.trim().is_empty() && v.trim() != "0")
}

impl TestRedis {
    /// `REDIS_URL` if set; else with `REDIS_CLUSTER=1` a fresh 3-master cluster; else a fresh
    /// `redis-server` on a free port.
    ///
    /// # Panics
    /// If neither is available, or the servers do not answer within 10 s: tests that need Redis
    /// cannot run without one.
    pub fn start() -> TestRedis {
        if let Ok(url) = std::env::var("REDIS_URL") {
            if !url.trim().is_empty() {
                return TestRedis {
                    url,
                    servers: Vec::new(),
                };
            }
        }
        if cluster_requested() {
            return Self::start_cluster();
        }
        Self::start_single()
    }

    /// A fresh single `redis-server` on a free port, whatever the environment says.
    pub fn start_single() -> TestRedis {
        let server = Server::start_retrying(&[]);
        TestRedis {
            url: format!("redis://127.0.0.1:{}/", server.port),
            servers: vec![server],
        }
    }

    /// A fresh Redis Cluster: three masters on free ports, slots spread by `redis-cli --cluster
    /// create`, returned once every node reports `cluster_state:ok`.
    ///
    /// # Panics
    /// If the servers or `redis-cli` cannot be started or the cluster does not form in time.
    pub fn start_cluster() -> TestRedis {
        let cluster_args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        ];
        let servers: Vec<Server> = (0..CLUSTER_MASTERS)
            .map(|_| Server::start_retrying(&cluster_args))
            .collect();
        let addrs: Vec<String> = servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("starting redis-cli (needed on PATH): {e}"));
        if !out.status.success() {
            panic!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let deadline = Instant::now() + START_TIMEOUT;
        while !servers.iter().all(|s| cluster_ok(s.port)) {
            if Instant::now() > deadline {
                panic!("the test cluster on {addrs:?} did not reach cluster_state:ok");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        TestRedis {
            url: format!("redis+cluster://{}/", addrs.join(",")),
            servers,
        }
    }

    /// True if this value started (and will stop) the servers; false for `REDIS_URL`.
    pub fn is_owned(&self) -> bool {
        !self.servers.is_empty()
    }

    /// True for a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.url.starts_with(crate::store::CLUSTER_SCHEME)
    }
}

impl Server {
    /// A port found free can be taken before the server binds it: tries a few.
    fn start_retrying(extra: &[&str]) -> Server {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::start(extra) {
                Ok(s) => return s,
                Err(e) => last = e,
            }
        }
        panic!("no Redis for tests: set REDIS_URL or put redis-server on PATH ({last})");
    }

    fn start(extra: &[&str]) -> Result<Server, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let dir =
            TempDirGuard::create().map_err(|e| format!("creating a temporary directory: {e}"))?;
        // The shell runs the server and stops it once this process is gone, so a server behind a
        // static (never dropped) does not outlive the test binary.
        let script = r#"redis-server "$@" & r=$!
while kill -0 "$WATCH_PID" 2>/dev/null && kill -0 "$r" 2>/dev/null; do sleep 1; done
kill "$r" 2>/dev/null; wait "$r" 2>/dev/null; rm -rf "$WATCH_DIR""#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .arg("--dir")
            .arg(dir.path())
            .env("WATCH_PID", std::process::id().to_string())
            .env("WATCH_DIR", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting redis-server: {e}"))?;
        let mut server = Server {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ping(port) {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("redis-server exited: {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server on port {port} did not answer PING within {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sends `CLUSTER INFO` over a plain socket; true once the node reports `cluster_state:ok`.
fn cluster_ok(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"CLUSTER INFO\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    // The reply is one bulk string of a few hundred bytes; read until the state line shows.
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(buf.get(..n).unwrap_or_default());
        let text = String::from_utf8_lossy(&got);
        if text.contains("cluster_state:") && text.contains("\r\ncluster_slots_assigned") {
            return text.contains("cluster_state:ok");
        }
    }
    false
}

/// Sends `PING` over a plain socket; true on `+PONG`.
fn ping(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = s.write_all(b"SHUTDOWN NOSAVE\r\n");
        }
        // The watchdog notices the server is gone within a second; do not wait longer.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One Redis per test binary, started on first use.
pub fn shared_redis() -> &'static TestRedis {
    static SHARED: OnceLock<TestRedis> = OnceLock::new();
    SHARED.get_or_init(TestRedis::start)
}

/// A key prefix no other test uses: `test:<name>:<random>:`.
pub fn unique_prefix(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("test:{name}:{:016x}:", rand::thread_rng().gen::<u64>())
}
