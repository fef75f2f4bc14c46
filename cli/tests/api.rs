//! The whole HTTP API through a real client on loopback: every route, the
//! Arrow IPC upload and export round trip, and every bad input answered
//! with its status and a JSON error, with nothing changed (read back).

mod common;

use arrow_array::{Array, BinaryArray, FixedSizeListArray, Float32Array, RecordBatch, UInt64Array};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use common::{expect_error, start, start_with};
use ebb_engine::EngineConfig;
use reqwest::Client;
use serde_json::{Value, json};

const ARROW: &str = "application/vnd.apache.arrow.stream";

async fn create(c: &Client, s: &common::TestServer, name: &str, dim: usize) {
    let r = c
        .post(s.url("/v1/datasets"))
        .json(&json!({"name": name, "dim": dim, "metric": "l2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
}

async fn dataset(c: &Client, s: &common::TestServer, name: &str) -> Value {
    let r = c
        .get(s.url(&format!("/v1/datasets/{name}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn vectors_batch(dim: usize, ids: &[u64], nan_at: Option<usize>) -> RecordBatch {
    let mut values: Vec<f32> = ids
        .iter()
        .flat_map(|&id| (0..dim).map(move |j| id as f32 + j as f32 * 0.5))
        .collect();
    if let Some(i) = nan_at {
        values[i * dim] = f32::NAN;
    }
    let payloads = ids
        .iter()
        .map(|id| Some(format!("p{id}").into_bytes()))
        .collect();
    ebb_engine::vector_batch(dim, ids.to_vec(), values, payloads).unwrap()
}

fn ipc(batches: &[RecordBatch]) -> Vec<u8> {
    let mut w = StreamWriter::try_new(Vec::new(), &batches[0].schema()).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    w.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_kv_vectors_and_search() {
    let s = start(None, None).await;
    let c = Client::new();
    create(&c, &s, "docs", 3).await;
    let list: Value = c
        .get(s.url("/v1/datasets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["datasets"][0]["name"], "docs");
    assert_eq!(list["datasets"][0]["dim"], 3);
    assert_eq!(list["datasets"][0]["metric"], "l2");

    // KV: raw bytes in and out.
    let url = s.url("/v1/datasets/docs/kv/greeting");
    let r = c
        .put(&url)
        .header("content-type", "application/octet-stream")
        .body(vec![0u8, 1, 2, 255])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.bytes().await.unwrap().as_ref(), [0u8, 1, 2, 255]);
    assert_eq!(dataset(&c, &s, "docs").await["records"], 1);
    let r = c.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    expect_error(c.get(&url).send().await.unwrap(), 404, "unknown_key").await;
    expect_error(c.delete(&url).send().await.unwrap(), 404, "unknown_key").await;

    // Vectors as JSON, text and binary payloads.
    let r = c
        .post(s.url("/v1/datasets/docs/vectors"))
        .json(&json!({"vectors": [
            {"id": 1, "vector": [0.0, 0.0, 1.0], "payload": "one"},
            {"id": 2, "vector": [0.0, 1.0, 0.0], "payload_b64": "/wA="},
            {"id": 3, "vector": [1.0, 0.0, 0.0]},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["stored"], 3);
    let hits: Value = c
        .post(s.url("/v1/datasets/docs/search"))
        .json(&json!({"vector": [0.0, 0.1, 0.9], "k": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hits = hits["hits"].as_array().unwrap().clone();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0]["id"], 1);
    assert_eq!(hits[0]["payload"], "one");
    assert_eq!(hits[1]["id"], 2);
    assert_eq!(hits[1]["payload_b64"], "/wA=");
    assert!(hits[2]["payload"].is_null());
    let d: Vec<f64> = hits
        .iter()
        .map(|h| h["distance"].as_f64().unwrap())
        .collect();
    assert!(d.windows(2).all(|w| w[0] <= w[1]), "{d:?}");

    let r = c
        .delete(s.url("/v1/datasets/docs/vectors/2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    expect_error(
        c.delete(s.url("/v1/datasets/docs/vectors/2"))
            .send()
            .await
            .unwrap(),
        404,
        "unknown_vector",
    )
    .await;
    expect_error(
        c.delete(s.url("/v1/datasets/docs/vectors/two"))
            .send()
            .await
            .unwrap(),
        400,
        "bad_id",
    )
    .await;
    let info = dataset(&c, &s, "docs").await;
    assert_eq!(info["vectors"], 2);
    assert_eq!(info["stats"]["vectors"], 2);

    let r = c.delete(s.url("/v1/datasets/docs")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    expect_error(
        c.get(s.url("/v1/datasets/docs")).send().await.unwrap(),
        404,
        "unknown_dataset",
    )
    .await;
    expect_error(
        c.delete(s.url("/v1/datasets/docs")).send().await.unwrap(),
        404,
        "unknown_dataset",
    )
    .await;
    let report = s.stop().await;
    assert!(!report.close.deadline_missed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrow_upload_and_export_round_trip() {
    let s = start(None, None).await;
    let c = Client::new();
    create(&c, &s, "vecs", 8).await;
    let ids: Vec<u64> = (0..3000).collect();
    let batches = [
        vectors_batch(8, &ids[..1000], None),
        vectors_batch(8, &ids[1000..], None),
    ];
    let r = c
        .post(s.url("/v1/datasets/vecs/vectors"))
        .header("content-type", ARROW)
        .body(ipc(&batches))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(r.json::<Value>().await.unwrap()["stored"], 3000);

    let r = c
        .get(s.url("/v1/datasets/vecs/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], ARROW);
    let body = r.bytes().await.unwrap();
    let reader = StreamReader::try_new(std::io::Cursor::new(body), None).unwrap();
    let mut seen = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let id = b.column(0).as_any().downcast_ref::<UInt64Array>().unwrap();
        let v = b
            .column(1)
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .unwrap();
        let p = b.column(2).as_any().downcast_ref::<BinaryArray>().unwrap();
        for i in 0..b.num_rows() {
            let vals = v.value(i);
            let vals = vals.as_any().downcast_ref::<Float32Array>().unwrap();
            assert_eq!(vals.value(1), id.value(i) as f32 + 0.5);
            assert_eq!(p.value(i), format!("p{}", id.value(i)).as_bytes());
            seen.push(id.value(i));
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, ids);

    // The export uploads back as it is.
    create(&c, &s, "copy", 8).await;
    let exported = c
        .get(s.url("/v1/datasets/vecs/export"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let r = c
        .post(s.url("/v1/datasets/copy/vectors"))
        .header("content-type", ARROW)
        .body(exported)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["stored"], 3000);

    // KV export.
    for k in 0..10 {
        c.put(s.url(&format!("/v1/datasets/vecs/kv/k{k}")))
            .body(format!("v{k}"))
            .send()
            .await
            .unwrap();
    }
    let body = c
        .get(s.url("/v1/datasets/vecs/export?part=kv"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let rows: usize = StreamReader::try_new(std::io::Cursor::new(body), None)
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(rows, 10);
    expect_error(
        c.get(s.url("/v1/datasets/vecs/export?part=all"))
            .send()
            .await
            .unwrap(),
        400,
        "bad_query",
    )
    .await;
    expect_error(
        c.get(s.url("/v1/datasets/nope/export"))
            .send()
            .await
            .unwrap(),
        404,
        "unknown_dataset",
    )
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_its_status_and_changes_nothing() {
    let engine = EngineConfig {
        max_value_bytes: 64 << 10,
        ..common::engine_config()
    };
    let s = start_with(None, Some(1 << 20), engine).await;
    let c = Client::new();
    create(&c, &s, "d", 4).await;
    c.post(s.url("/v1/datasets/d/vectors"))
        .json(&json!({"vectors": [{"id": 1, "vector": [1, 2, 3, 4]}]}))
        .send()
        .await
        .unwrap();
    c.put(s.url("/v1/datasets/d/kv/k"))
        .body("v")
        .send()
        .await
        .unwrap();
    let before = dataset(&c, &s, "d").await;
    let post_json = |path: &str, body: &str| {
        c.post(s.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };

    // Datasets.
    expect_error(
        post_json("/v1/datasets", "{").await.unwrap(),
        400,
        "bad_json",
    )
    .await;
    expect_error(
        post_json("/v1/datasets", r#"{"name": "d", "dim": 4, "metric": "l2"}"#)
            .await
            .unwrap(),
        409,
        "dataset_exists",
    )
    .await;
    expect_error(
        post_json(
            "/v1/datasets",
            r#"{"name": "a b", "dim": 4, "metric": "l2"}"#,
        )
        .await
        .unwrap(),
        400,
        "bad_name",
    )
    .await;
    expect_error(
        post_json(
            "/v1/datasets",
            r#"{"name": "e", "dim": 4, "metric": "hamming"}"#,
        )
        .await
        .unwrap(),
        400,
        "bad_metric",
    )
    .await;
    expect_error(
        post_json("/v1/datasets", r#"{"name": "e", "dim": 0, "metric": "l2"}"#)
            .await
            .unwrap(),
        400,
        "bad_dataset_config",
    )
    .await;
    expect_error(
        post_json(
            "/v1/datasets",
            r#"{"name": "e", "dims": 4, "metric": "l2"}"#,
        )
        .await
        .unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect_error(
        c.post(s.url("/v1/datasets"))
            .header("content-type", "text/plain")
            .body(r#"{"name": "e", "dim": 4, "metric": "l2"}"#)
            .send()
            .await
            .unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;

    // Vectors: a bad row refuses the whole request.
    let bad_dim =
        r#"{"vectors": [{"id": 7, "vector": [1, 2, 3, 4]}, {"id": 8, "vector": [1, 2]}]}"#;
    expect_error(
        post_json("/v1/datasets/d/vectors", bad_dim).await.unwrap(),
        400,
        "dimension_mismatch",
    )
    .await;
    let infinite =
        r#"{"vectors": [{"id": 7, "vector": [1, 2, 3, 4]}, {"id": 8, "vector": [1, 1e39, 3, 4]}]}"#;
    expect_error(
        post_json("/v1/datasets/d/vectors", infinite).await.unwrap(),
        400,
        "non_finite",
    )
    .await;
    let nan = r#"{"vectors": [{"id": 8, "vector": [NaN, 1, 3, 4]}]}"#;
    expect_error(
        post_json("/v1/datasets/d/vectors", nan).await.unwrap(),
        400,
        "bad_json",
    )
    .await;
    // NaN in Arrow: the second batch's, and the first batch is not stored
    // either.
    let body = ipc(&[
        vectors_batch(4, &[20, 21], None),
        vectors_batch(4, &[22, 23], Some(1)),
    ]);
    expect_error(
        c.post(s.url("/v1/datasets/d/vectors"))
            .header("content-type", ARROW)
            .body(body)
            .send()
            .await
            .unwrap(),
        400,
        "non_finite",
    )
    .await;
    let body = ipc(&[vectors_batch(3, &[30], None)]);
    expect_error(
        c.post(s.url("/v1/datasets/d/vectors"))
            .header("content-type", ARROW)
            .body(body)
            .send()
            .await
            .unwrap(),
        400,
        "dimension_mismatch",
    )
    .await;
    let kv = ebb_engine::kv_batch(&[b"k"], &[b"v"]).unwrap();
    expect_error(
        c.post(s.url("/v1/datasets/d/vectors"))
            .header("content-type", ARROW)
            .body(ipc(&[kv]))
            .send()
            .await
            .unwrap(),
        400,
        "wrong_schema",
    )
    .await;
    expect_error(
        c.post(s.url("/v1/datasets/d/vectors"))
            .header("content-type", ARROW)
            .body("not arrow at all")
            .send()
            .await
            .unwrap(),
        400,
        "bad_arrow",
    )
    .await;
    expect_error(
        c.post(s.url("/v1/datasets/d/vectors"))
            .header("content-type", "text/csv")
            .body("1,2,3,4")
            .send()
            .await
            .unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    expect_error(
        post_json("/v1/datasets/nope/vectors", r#"{"vectors": []}"#)
            .await
            .unwrap(),
        404,
        "unknown_dataset",
    )
    .await;
    let big_payload = format!(
        r#"{{"vectors": [{{"id": 9, "vector": [1, 2, 3, 4], "payload": "{}"}}]}}"#,
        "x".repeat(100 << 10)
    );
    expect_error(
        post_json("/v1/datasets/d/vectors", &big_payload)
            .await
            .unwrap(),
        413,
        "value_too_large",
    )
    .await;

    // Search.
    expect_error(
        post_json("/v1/datasets/d/search", r#"{"vector": [1, 2], "k": 1}"#)
            .await
            .unwrap(),
        400,
        "dimension_mismatch",
    )
    .await;
    expect_error(
        post_json(
            "/v1/datasets/d/search",
            r#"{"vector": [1, 2, 3, 4], "k": 0}"#,
        )
        .await
        .unwrap(),
        400,
        "bad_k",
    )
    .await;
    expect_error(
        post_json("/v1/datasets/nope/search", r#"{"vector": [1, 2, 3, 4]}"#)
            .await
            .unwrap(),
        404,
        "unknown_dataset",
    )
    .await;

    // KV and bodies.
    expect_error(
        c.put(s.url("/v1/datasets/d/kv/big"))
            .body(vec![1u8; 100 << 10])
            .send()
            .await
            .unwrap(),
        413,
        "value_too_large",
    )
    .await;
    expect_error(
        c.put(s.url("/v1/datasets/d/kv/huge"))
            .body(vec![1u8; 2 << 20])
            .send()
            .await
            .unwrap(),
        413,
        "body_too_large",
    )
    .await;
    expect_error(
        c.put(s.url("/v1/datasets/d/kv/json"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    expect_error(
        c.put(s.url("/v1/datasets/nope/kv/k"))
            .body("v")
            .send()
            .await
            .unwrap(),
        404,
        "unknown_dataset",
    )
    .await;
    expect_error(
        c.get(s.url("/v1/nothing")).send().await.unwrap(),
        404,
        "unknown_route",
    )
    .await;
    expect_error(
        c.patch(s.url("/v1/datasets")).send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;

    // Nothing changed.
    let after = dataset(&c, &s, "d").await;
    assert_eq!(after["records"], before["records"]);
    assert_eq!(after["vectors"], before["vectors"]);
    assert_eq!(after["vectors"], 1);
    let list: Value = c
        .get(s.url("/v1/datasets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["datasets"].as_array().unwrap().len(), 1);
    let r = c.get(s.url("/v1/datasets/d/kv/k")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"v");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_debug_and_admin_routes_with_a_token() {
    let dir = std::env::temp_dir().join(format!("ebb-serve-admin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = EngineConfig {
        data_dir: Some(dir.clone()),
        ..common::engine_config()
    };
    let s = start_with(Some("s3cret"), None, engine).await;
    let c = Client::new();
    create(&c, &s, "d", 2).await;
    let r = c.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["ready"], true);
    // /metrics is for Prometheus: no token.
    assert_eq!(c.get(s.url("/metrics")).send().await.unwrap().status(), 200);

    for (get, path) in [
        (true, "/debug/memory"),
        (true, "/debug/leaks"),
        (true, "/debug/workers"),
        (false, "/admin/compact"),
        (false, "/admin/release-memory"),
        (false, "/admin/snapshot"),
    ] {
        let req = |token: Option<&str>| {
            let b = if get {
                c.get(s.url(path))
            } else {
                c.post(s.url(path))
            };
            match token {
                Some(t) => b.bearer_auth(t),
                None => b,
            }
        };
        expect_error(req(None).send().await.unwrap(), 401, "missing_token").await;
        expect_error(req(Some("s3cre")).send().await.unwrap(), 403, "wrong_token").await;
        let r = req(Some("s3cret")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}: {:?}", r.text().await);
        let body: Value = r.json().await.unwrap();
        match path {
            "/debug/memory" => {
                assert_eq!(body["pressure"]["level"], "normal");
                assert!(body["smaps_rollup"]["rss_bytes"].as_u64().unwrap() > 0);
                assert!(body["budget"]["consumers"].as_array().unwrap().len() >= 3);
                assert_eq!(body["datasets"][0]["name"], "d");
                assert!(body["series"]["d"]["ebb_arena_live_bytes{arena=kv}"].is_number());
            }
            "/debug/leaks" => assert_eq!(body["tracker"], ebb_engine::TRACKER_NAME),
            "/debug/workers" => {
                let names: Vec<&str> = body["workers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| w["name"].as_str().unwrap())
                    .collect();
                assert!(names.contains(&"compaction"), "{names:?}");
            }
            "/admin/snapshot" => assert_eq!(body["datasets"], 1),
            _ => assert!(body["total_bytes"].is_u64(), "{body}"),
        }
    }
    s.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_without_data_dir_and_refusals_while_closing() {
    let s = start(None, None).await;
    let c = Client::new();
    expect_error(
        c.post(s.url("/admin/snapshot")).send().await.unwrap(),
        409,
        "no_data_dir",
    )
    .await;
    create(&c, &s, "d", 2).await;
    // Close the engine under the server: writes are 503 with Retry-After.
    s.engine.close().await;
    let r = c
        .put(s.url("/v1/datasets/d/kv/k"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["retry-after"], "1");
    expect_error(r, 503, "closing").await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_address_needs_a_token() {
    let mut config = ebb::serve::ServeConfig::new(common::engine_config());
    config.listen = "0.0.0.0:0".parse().unwrap();
    let e = match ebb::serve::Server::bind(config).await {
        Err(e) => e,
        Ok(_) => panic!("bound off loopback without a token"),
    };
    assert!(e.to_string().contains("--admin-token"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_flight_are_bounded_and_charged_to_the_budget() {
    use std::io::Write;
    // 64 KiB bodies: at most 4 x 64 KiB in flight.
    let s = start_with(None, Some(64 << 10), common::engine_config()).await;
    let c = Client::new();
    create(&c, &s, "d", 2).await;
    // Four uploads that declare 60 000 bytes and stall after 1 000.
    let mut stalled = Vec::new();
    for i in 0..4 {
        let mut t = std::net::TcpStream::connect(s.addr).unwrap();
        write!(
            t,
            "PUT /v1/datasets/d/kv/slow{i} HTTP/1.1\r\nhost: x\r\ncontent-length: 60000\r\n\r\n"
        )
        .unwrap();
        t.write_all(&[1u8; 1000]).unwrap();
        stalled.push(t);
    }
    // Let the server take them.
    let charged = |engine: &ebb_engine::Engine| {
        engine
            .budget()
            .stats()
            .consumers
            .iter()
            .find(|c| c.name == ebb::serve::body::BODY_CONSUMER)
            .map_or(0, |c| c.reserved_bytes)
    };
    let t0 = std::time::Instant::now();
    while charged(&s.engine) < 4 * 59 * 1024 && t0.elapsed().as_secs() < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        charged(&s.engine) >= 4 * 59 * 1024,
        "{}",
        charged(&s.engine)
    );
    let r = c
        .put(s.url("/v1/datasets/d/kv/fifth"))
        .body(vec![2u8; 60_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["retry-after"], "1");
    expect_error(r, 503, "server_busy").await;
    drop(stalled);
    // The stalled bodies' bound and charge are given back.
    let t0 = std::time::Instant::now();
    while charged(&s.engine) > 0 && t0.elapsed().as_secs() < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(charged(&s.engine), 0);
    let r = c
        .put(s.url("/v1/datasets/d/kv/fifth"))
        .body(vec![2u8; 60_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(dataset(&c, &s, "d").await["records"], 1);
    s.stop().await;
}
