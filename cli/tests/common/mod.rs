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
