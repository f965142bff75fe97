//! Test support shared by unit and integration tests: a real Redis and unique key prefixes.
//!
//! [`TestRedis::start`] uses `REDIS_URL` when set; otherwise it starts a `redis-server` from
//! `PATH` on a free port (no persistence, its own temporary directory) and stops it on drop.
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

/// A Redis for tests: given by `REDIS_URL`, or a `redis-server` child owned by this value.
#[derive(Debug)]
pub struct TestRedis {
    pub url: String,
    child: Option<Child>,
    port: Option<u16>,
    _dir: Option<TempDirGuard>,
}

impl TestRedis {
    /// `REDIS_URL` if set, else a fresh `redis-server` on a free port.
    ///
    /// # Panics
    /// If neither is available, or the server does not answer within 10 s: tests that need Redis
    /// cannot run without one.
    pub fn start() -> TestRedis {
        if let Ok(url) = std::env::var("REDIS_URL") {
            if !url.trim().is_empty() {
                return TestRedis {
                    url,
                    child: None,
                    port: None,
                    _dir: None,
                };
            }
        }
        let mut last = String::new();
        // A port found free can be taken before the server binds it: try a few.
        for _ in 0..3 {
            match Self::spawn_server() {
                Ok(r) => return r,
                Err(e) => last = e,
            }
        }
        panic!("no Redis for tests: set REDIS_URL or put redis-server on PATH ({last})");
    }

    /// True if this value started (and will stop) the server; false for `REDIS_URL`.
    pub fn is_owned(&self) -> bool {
        self.child.is_some()
    }

    fn spawn_server() -> Result<TestRedis, String> {
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
            .arg("--dir")
            .arg(dir.path())
            .env("WATCH_PID", std::process::id().to_string())
            .env("WATCH_DIR", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting redis-server: {e}"))?;
        let mut redis = TestRedis {
            url: format!("redis://127.0.0.1:{port}/"),
            child: Some(child),
            port: Some(port),
            _dir: Some(dir),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ping(port) {
                return Ok(redis);
            }
            if let Some(child) = redis.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("redis-server exited: {status}"));
                }
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

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(port) = self.port {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.write_all(b"SHUTDOWN NOSAVE\r\n");
            }
        }
        if let Some(mut child) = self.child.take() {
            // The watchdog notices the server is gone within a second; do not wait longer.
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
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
