//! An in-process `ebb serve` on 127.0.0.1 (a free port) for the tests,
//! stopped by [`TestServer::stop`] (or when the test's runtime ends).

#![allow(dead_code)]

use std::net::SocketAddr;

use ebb::serve::{ServeConfig, ServeReport, Server};
use ebb_engine::EngineConfig;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub engine: ebb_engine::Engine,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<ServeReport>,
}

pub fn engine_config() -> EngineConfig {
    EngineConfig {
        memory_limit_bytes: 2 << 30,
        shutdown_deadline_secs: 5,
        ..EngineConfig::default()
    }
}

pub async fn start(token: Option<&str>, max_body_bytes: Option<usize>) -> TestServer {
    start_with(token, max_body_bytes, engine_config()).await
}

pub async fn start_with(
    token: Option<&str>,
    max_body_bytes: Option<usize>,
    engine: EngineConfig,
) -> TestServer {
    let mut config = ServeConfig::new(engine);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin_token = token.map(str::to_string);
    if let Some(n) = max_body_bytes {
        config.max_body_bytes = n;
    }
    let server = Server::bind(config).await.expect("the server starts");
    let addr = server.local_addr();
    let engine = server.engine().clone();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    TestServer {
        addr,
        base: format!("http://{addr}"),
        engine,
        stop: Some(tx),
        task,
    }
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn stop(mut self) -> ServeReport {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.expect("the server task ends")
    }
}

/// Asserts `r` is an error answer of `status` whose JSON body has `code`;
/// returns the message.
pub async fn expect_error(r: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(r.status().as_u16(), status, "{r:?}");
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(ct.as_deref(), Some("application/json"), "{r:?}");
    let body: serde_json::Value = r.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().expect("a message");
    assert!(!message.is_empty());
    message.to_string()
}

/// A running `ebb` binary, killed on drop if it is still running.
pub struct Child {
    pub child: std::process::Child,
    pub base: String,
    pub stdout: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Child {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the exit at most `limit`; `None` if it is still running.
    pub fn wait_for(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Every line the binary printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.stdout.lock().clone()
    }
}

/// Starts `ebb serve --listen 127.0.0.1:0 <args>` and waits for its
/// "listening on" line.
pub fn spawn_ebb(args: &[&str]) -> Child {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("EBB_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the ebb binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let lines = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let keep = std::sync::Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("ebb serve: listening on ") {
                let _ = tx.send(addr.to_string());
            }
            keep.lock().push(line);
        }
    });
    let base = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("ebb serve says where it listens");
    Child {
        child,
        base,
        stdout: lines,
    }
}

/// A free loopback port (bound and released: another process may take it
/// in between, which the caller's start then reports).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
