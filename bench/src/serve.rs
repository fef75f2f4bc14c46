//! `peers serve`: `ebb serve` over loopback HTTP against the same engine
//! in-process.
//!
//! - **search**: one index (n clustered vectors, k = 10), searched from one
//!   thread in-process and over HTTP from 2 client connections of a real
//!   client (reqwest, JSON bodies pre-built, every answer parsed as a
//!   client would); the same server object answers both, so it is the
//!   same graph. Goal: HTTP >= 50 % of the in-process QPS.
//! - **mixed**: 64 connections for `mixed_secs` of searches, KV gets (of
//!   present and of missing keys: the expected 404s), KV puts, vector
//!   upserts and KV deletes; every status counted, latency percentiles by
//!   kind. Goal: 0 errors other than the expected 404s.
//! - **scrape**: 64 datasets with data; `Engine::scrape` + encode, and
//!   `GET /metrics` over HTTP. Goal: under 5 ms.
//! - **idle**: RSS of the `ebb` binary (jemalloc) serving with no dataset,
//!   before and after its first requests.
//!
//! The server runs on a 2-thread runtime, the client on another 2-thread
//! one: on this 2-core machine they share the cores, as a client and a
//! server on one host do.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ebb::serve::{ServeConfig, Server};
use ebb_engine::{DatasetConfig, Engine, EngineConfig, Metric};
use ebb_testkit::Rng;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::engine_vectors::batch;

/// What the scenario runs with.
#[derive(Clone, Debug)]
pub struct ServeBenchConfig {
    /// Vectors in the index.
    pub n: usize,
    /// Their dimension.
    pub dim: usize,
    /// Distinct queries (cycled).
    pub nq: usize,
    /// Seconds of each QPS measurement.
    pub qps_secs: f64,
    /// Seconds of the mixed load.
    pub mixed_secs: f64,
    /// Connections of the mixed load.
    pub connections: usize,
    /// Datasets for the scrape figure.
    pub scrape_datasets: usize,
    /// The seed.
    pub seed: u64,
}

fn runtime(name: &str) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()?)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(x: f64) -> f64 {
    (x * 1e6).round() / 1e3
}

/// Runs every part; the report as JSON.
///
/// # Errors
///
/// When the server does not start or a request fails to send in a part
/// that needs every request to succeed (setup).
pub fn run(c: &ServeBenchConfig) -> Result<Value> {
    let server_rt = runtime("bench-server")?;
    let client_rt = runtime("bench-client")?;
    let engine_config = EngineConfig {
        memory_limit_bytes: 8 << 30,
        ..EngineConfig::default()
    };
    let mut config = ServeConfig::new(engine_config);
    config.listen = "127.0.0.1:0".parse()?;
    let server = server_rt.block_on(Server::bind(config))?;
    let addr = server.local_addr();
    let engine = server.engine().clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = server_rt.spawn(server.run(async move {
        let _ = stop_rx.await;
    }));
    let base = format!("http://{addr}");

    // The index.
    let mut rng = Rng::new(c.seed);
    let all = ebb_testkit::clustered_vectors(&mut rng, c.n + c.nq, c.dim, 100, 0.3);
    let (data, queries) = all.split_at(c.n * c.dim);
    engine.create_dataset("bench", DatasetConfig::new(c.dim, Metric::L2))?;
    let started = Instant::now();
    for chunk in 0..c.n.div_ceil(10_000) {
        let lo = chunk * 10_000;
        let hi = (lo + 10_000).min(c.n);
        let ids: Vec<u64> = (lo as u64..hi as u64).collect();
        engine.ingest("bench", &batch(&ids, &data[lo * c.dim..hi * c.dim], c.dim))?;
    }
    engine.flush("bench")?;
    let build_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "serve: index of {} x {} built in {build_secs:.1} s",
        c.n, c.dim
    );

    let search = search_part(c, &engine, queries, &client_rt, &base)?;
    let mixed = mixed_part(c, &engine, queries, &client_rt, &base)?;
    let scrape = scrape_part(c, &engine, &client_rt, &base)?;
    let _ = stop_tx.send(());
    let report = server_rt.block_on(serving)?;
    let idle = idle_rss();
    Ok(json!({
        "n": c.n,
        "dim": c.dim,
        "nq": c.nq,
        "build_secs": build_secs,
        "search": search,
        "mixed": mixed,
        "scrape": scrape,
        "idle": idle,
        "close_secs": report.close.duration_secs,
    }))
}

fn search_part(
    c: &ServeBenchConfig,
    engine: &Engine,
    queries: &[f32],
    client_rt: &tokio::runtime::Runtime,
    base: &str,
) -> Result<Value> {
    let q = |i: usize| &queries[(i % c.nq) * c.dim..(i % c.nq + 1) * c.dim];
    // In-process, one thread.
    for i in 0..c.nq.min(200) {
        engine.search("bench", q(i), 10)?;
    }
    let started = Instant::now();
    let mut done = 0usize;
    while started.elapsed().as_secs_f64() < c.qps_secs {
        for _ in 0..64 {
            std::hint::black_box(engine.search("bench", q(done), 10)?);
            done += 1;
        }
    }
    let inproc_qps = done as f64 / started.elapsed().as_secs_f64();

    // Over HTTP: 2 connections.
    let bodies: Arc<Vec<String>> = Arc::new(
        (0..c.nq)
            .map(|i| json!({"vector": q(i), "k": 10}).to_string())
            .collect(),
    );
    let url = format!("{base}/v1/datasets/bench/search");
    // The answers agree with the engine's.
    let check: Value = client_rt.block_on(async {
        reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .body(bodies[0].clone())
            .send()
            .await?
            .json()
            .await
    })?;
    let http_ids: Vec<u64> = check["hits"]
        .as_array()
        .context("hits")?
        .iter()
        .filter_map(|h| h["id"].as_u64())
        .collect();
    let engine_ids: Vec<u64> = engine
        .search("bench", q(0), 10)?
        .iter()
        .map(|h| h.id)
        .collect();
    anyhow::ensure!(
        http_ids == engine_ids,
        "HTTP hits {http_ids:?} != engine hits {engine_ids:?}"
    );

    let mut per_conn = Vec::new();
    let mut total = 0usize;
    let mut latencies = Vec::new();
    let secs = c.qps_secs;
    let elapsed = client_rt.block_on(async {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for conn in 0..2 {
            let (url, bodies) = (url.clone(), Arc::clone(&bodies));
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .expect("a client");
                let mut n = 0usize;
                let mut lat = Vec::new();
                let t0 = Instant::now();
                while t0.elapsed().as_secs_f64() < secs {
                    let t = Instant::now();
                    let r = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(bodies[(conn * 7919 + n) % bodies.len()].clone())
                        .send()
                        .await;
                    let ok = match r {
                        Ok(r) if r.status() == 200 => r.json::<Value>().await.is_ok(),
                        _ => false,
                    };
                    assert!(ok, "a search over HTTP failed");
                    lat.push(t.elapsed().as_secs_f64());
                    n += 1;
                }
                (n, lat)
            }));
        }
        for t in tasks {
            let (n, lat) = t.await.expect("a client task");
            per_conn.push(n);
            total += n;
            latencies.extend(lat);
        }
        started.elapsed().as_secs_f64()
    });
    let http_qps = total as f64 / elapsed;
    latencies.sort_by(f64::total_cmp);
    let ratio = http_qps / inproc_qps;
    eprintln!(
        "serve: search in-process 1 thread {inproc_qps:.0} QPS; HTTP 2 connections {http_qps:.0} QPS = {:.1} % (goal >= 50 %); HTTP p50 {:.3} ms p99 {:.3} ms",
        ratio * 100.0,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
    );
    Ok(json!({
        "inprocess_1thread_qps": inproc_qps.round(),
        "http_2conn_qps": http_qps.round(),
        "ratio": (ratio * 1000.0).round() / 1000.0,
        "goal_ratio": 0.5,
        "met": ratio >= 0.5,
        "per_connection": per_conn,
        "http_p50_ms": ms(percentile(&latencies, 0.5)),
        "http_p99_ms": ms(percentile(&latencies, 0.99)),
    }))
}

/// One kind of request in the mixed load.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Search,
    GetPresent,
    GetMissing,
    Put,
    Upsert,
    Delete,
}

const KINDS: [(Kind, &str, u64); 6] = [
    (Kind::Search, "search", 40),
    (Kind::GetPresent, "kv_get", 20),
    (Kind::GetMissing, "kv_get_missing", 10),
    (Kind::Put, "kv_put", 15),
    (Kind::Upsert, "vector_upsert", 10),
    (Kind::Delete, "kv_delete", 5),
];

fn pick(rng: &mut Rng) -> Kind {
    let mut r = rng.below(100);
    for (k, _, w) in KINDS {
        if r < w {
            return k;
        }
        r -= w;
    }
    Kind::Search
}

#[derive(Default)]
struct MixedTally {
    latencies: Vec<(Kind, f64)>,
    statuses: std::collections::BTreeMap<String, u64>,
    errors: Vec<String>,
}

fn mixed_part(
    c: &ServeBenchConfig,
    engine: &Engine,
    queries: &[f32],
    client_rt: &tokio::runtime::Runtime,
    base: &str,
) -> Result<Value> {
    const KEYS: u64 = 10_000;
    for k in 0..KEYS {
        engine.put("bench", format!("key{k}").as_bytes(), &[b'v'; 256])?;
    }
    let queries: Arc<Vec<f32>> = Arc::new(queries.to_vec());
    let tally = Arc::new(Mutex::new(MixedTally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (dim, nq, seed) = (c.dim, c.nq, c.seed);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(c.connections)
        .build()?;
    let base = base.to_string();
    let elapsed = client_rt.block_on(async {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for conn in 0..c.connections {
            let (client, base, queries, tally, stop) = (
                client.clone(),
                base.clone(),
                Arc::clone(&queries),
                Arc::clone(&tally),
                Arc::clone(&stop),
            );
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng::new(seed ^ ((conn as u64 + 1) * 0x9E37));
                let mut local = MixedTally::default();
                while !stop.load(Ordering::Relaxed) {
                    let kind = pick(&mut rng);
                    let key = rng.below(KEYS);
                    let ds = format!("{base}/v1/datasets/bench");
                    let t = Instant::now();
                    let req = match kind {
                        Kind::Search => {
                            let i = rng.below(nq as u64) as usize;
                            client
                                .post(format!("{ds}/search"))
                                .header("content-type", "application/json")
                                .body(json!({"vector": &queries[i * dim..(i + 1) * dim], "k": 10}).to_string())
                        }
                        Kind::GetPresent => client.get(format!("{ds}/kv/key{key}")),
                        Kind::GetMissing => client.get(format!("{ds}/kv/missing{key}")),
                        Kind::Put => client.put(format!("{ds}/kv/key{key}")).body(vec![b'p'; 256]),
                        Kind::Upsert => {
                            let i = rng.below(nq as u64) as usize;
                            let id = 1_000_000 + rng.below(10_000);
                            client
                                .post(format!("{ds}/vectors"))
                                .header("content-type", "application/json")
                                .body(json!({"vectors": [{"id": id, "vector": &queries[i * dim..(i + 1) * dim]}]}).to_string())
                        }
                        Kind::Delete => client.delete(format!("{ds}/kv/key{key}")),
                    };
                    let status = match req.send().await {
                        Ok(r) => {
                            let s = r.status().as_u16();
                            let _ = r.bytes().await;
                            s
                        }
                        Err(e) => {
                            local.errors.push(format!("{kind:?}: {e}"));
                            0
                        }
                    };
                    local.latencies.push((kind, t.elapsed().as_secs_f64()));
                    let name = KINDS.iter().find(|k| k.0 == kind).map_or("?", |k| k.1);
                    *local.statuses.entry(format!("{name} {status}")).or_default() += 1;
                    // Expected: 2xx, and 404 for a missing key (or one a
                    // delete took first).
                    let expected = (200..300).contains(&status)
                        || (status == 404
                            && matches!(kind, Kind::GetMissing | Kind::GetPresent | Kind::Delete));
                    if !expected && status != 0 {
                        local.errors.push(format!("{kind:?}: status {status}"));
                    }
                }
                let mut t = tally.lock();
                t.latencies.extend(local.latencies);
                for (k, v) in local.statuses {
                    *t.statuses.entry(k).or_default() += v;
                }
                t.errors.extend(local.errors);
            }));
        }
        tokio::time::sleep(Duration::from_secs_f64(c.mixed_secs)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.expect("a client task");
        }
        started.elapsed().as_secs_f64()
    });
    let t = tally.lock();
    let mut all: Vec<f64> = t.latencies.iter().map(|x| x.1).collect();
    all.sort_by(f64::total_cmp);
    let mut by_kind = serde_json::Map::new();
    for (k, name, _) in KINDS {
        let mut l: Vec<f64> = t
            .latencies
            .iter()
            .filter(|x| x.0 == k)
            .map(|x| x.1)
            .collect();
        l.sort_by(f64::total_cmp);
        by_kind.insert(
            name.into(),
            json!({"requests": l.len(), "p50_ms": ms(percentile(&l, 0.5)), "p99_ms": ms(percentile(&l, 0.99))}),
        );
    }
    let requests = all.len();
    eprintln!(
        "serve: mixed, {} connections, {:.0} s: {requests} requests ({:.0}/s), p50 {:.3} ms, p99 {:.3} ms, {} errors (goal 0)",
        c.connections,
        elapsed,
        requests as f64 / elapsed,
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.99)),
        t.errors.len()
    );
    for e in t.errors.iter().take(5) {
        eprintln!("  error: {e}");
    }
    Ok(json!({
        "connections": c.connections,
        "secs": elapsed,
        "requests": requests,
        "rps": (requests as f64 / elapsed).round(),
        "p50_ms": ms(percentile(&all, 0.5)),
        "p99_ms": ms(percentile(&all, 0.99)),
        "errors": t.errors.len(),
        "first_errors": t.errors.iter().take(5).collect::<Vec<_>>(),
        "statuses": t.statuses,
        "by_kind": by_kind,
        "met": t.errors.is_empty(),
    }))
}

fn scrape_part(
    c: &ServeBenchConfig,
    engine: &Engine,
    client_rt: &tokio::runtime::Runtime,
    base: &str,
) -> Result<Value> {
    // "bench" is one; add the rest, each with KV records and vectors.
    let mut rng = Rng::new(c.seed + 1);
    for d in 1..c.scrape_datasets {
        let name = format!("ds{d:03}");
        engine.create_dataset(&name, DatasetConfig::new(16, Metric::Cosine))?;
        for k in 0..100 {
            engine.put(&name, format!("k{k}").as_bytes(), &[1u8; 100])?;
        }
        let v = ebb_testkit::clustered_vectors(&mut rng, 100, 16, 4, 0.3);
        let ids: Vec<u64> = (0..100).collect();
        engine.ingest(&name, &batch(&ids, &v, 16))?;
    }
    let datasets = engine.list_datasets().len();
    let mut inproc = Vec::new();
    let mut collect = Vec::new();
    let mut bytes = 0usize;
    let mut series = 0usize;
    for _ in 0..100 {
        let t = Instant::now();
        let scrape = engine.scrape();
        collect.push(t.elapsed().as_secs_f64());
        let body = ebb_metrics::text::encode(&scrape);
        inproc.push(t.elapsed().as_secs_f64());
        bytes = body.len();
        series = scrape.families().iter().map(|f| f.samples.len()).sum();
    }
    inproc.sort_by(f64::total_cmp);
    collect.sort_by(f64::total_cmp);
    let url = format!("{base}/metrics");
    let http: Vec<f64> = client_rt.block_on(async {
        let client = reqwest::Client::new();
        let mut v = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            let r = client.get(&url).send().await.expect("GET /metrics");
            let _ = r.bytes().await;
            v.push(t.elapsed().as_secs_f64());
        }
        v
    });
    let mut http = http;
    http.sort_by(f64::total_cmp);
    let p50 = percentile(&inproc, 0.5);
    eprintln!(
        "serve: scrape of {datasets} datasets ({series} series, {bytes} B): in-process p50 {:.3} ms (collect {:.3} ms) p99 {:.3} ms (goal < 5 ms); GET /metrics p50 {:.3} ms p99 {:.3} ms",
        ms(p50),
        ms(percentile(&collect, 0.5)),
        ms(percentile(&inproc, 0.99)),
        ms(percentile(&http, 0.5)),
        ms(percentile(&http, 0.99)),
    );
    Ok(json!({
        "datasets": datasets,
        "series": series,
        "bytes": bytes,
        "collect_p50_ms": ms(percentile(&collect, 0.5)),
        "inprocess_p50_ms": ms(p50),
        "inprocess_p99_ms": ms(percentile(&inproc, 0.99)),
        "http_p50_ms": ms(percentile(&http, 0.5)),
        "http_p99_ms": ms(percentile(&http, 0.99)),
        "goal_ms": 5.0,
        "met": percentile(&http, 0.5) < 0.005 && p50 < 0.005,
    }))
}

fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// RSS of the `ebb` binary (next to this one) serving with no dataset.
fn idle_rss() -> Value {
    use std::io::BufRead;
    let Ok(exe) = std::env::current_exe() else {
        return json!({"skipped": "no current exe"});
    };
    let ebb = exe.with_file_name("ebb");
    if !ebb.exists() {
        return json!({"skipped": format!("{} is not built (cargo build --release -p ebb)", ebb.display())});
    }
    let Ok(mut child) = std::process::Command::new(&ebb)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("EBB_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
    else {
        return json!({"skipped": "ebb did not start"});
    };
    let pid = child.id();
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let addr = lines
        .find_map(|l| {
            l.ok()?
                .strip_prefix("ebb serve: listening on ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    std::thread::sleep(Duration::from_secs(2));
    let before = vm_rss(pid);
    let rt = runtime("bench-idle").expect("a runtime");
    rt.block_on(async {
        let client = reqwest::Client::new();
        for path in ["/healthz", "/readyz", "/metrics", "/v1/datasets"] {
            let _ = client.get(format!("{addr}{path}")).send().await;
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let after = vm_rss(pid);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    eprintln!(
        "serve: idle ebb serve RSS {:.1} MiB at start, {:.1} MiB after its first requests",
        before.unwrap_or(0) as f64 / 1048576.0,
        after.unwrap_or(0) as f64 / 1048576.0
    );
    json!({"rss_bytes_start": before, "rss_bytes_after_requests": after})
}
