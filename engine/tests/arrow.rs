//! Arrow in and out: round trips, and every bad batch refused whole.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BinaryArray, FixedSizeListArray, Float32Array, RecordBatch, UInt64Array,
};
use arrow_schema::{DataType, Field};
use ebb_engine::{DatasetConfig, Engine, EngineConfig, Error, Metric, kv_batch, vector_batch};

const DIM: usize = 4;

fn engine() -> Engine {
    let engine = Engine::open(EngineConfig {
        memory_limit_bytes: 1 << 30,
        ..EngineConfig::default()
    })
    .unwrap();
    engine
        .create_dataset("a", DatasetConfig::new(DIM, Metric::L2))
        .unwrap();
    engine
}

fn vectors_batch(
    ids: &[u64],
    values: Vec<f32>,
    dim: usize,
    payloads: Vec<Option<&[u8]>>,
) -> RecordBatch {
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let vectors =
        FixedSizeListArray::new(item, dim as i32, Arc::new(Float32Array::from(values)), None);
    RecordBatch::try_from_iter([
        ("id", Arc::new(UInt64Array::from(ids.to_vec())) as ArrayRef),
        ("vector", Arc::new(vectors) as ArrayRef),
        ("payload", Arc::new(BinaryArray::from(payloads)) as ArrayRef),
    ])
    .unwrap()
}

fn rows(n: u64) -> (Vec<u64>, Vec<f32>, Vec<Vec<u8>>) {
    let ids: Vec<u64> = (0..n).map(|i| i * 3 + 1).collect();
    let values = (0..n * DIM as u64).map(|i| (i % 97) as f32 * 0.5).collect();
    let payloads = (0..n)
        .map(|i| format!("payload-{i}").into_bytes())
        .collect();
    (ids, values, payloads)
}

#[test]
fn vectors_round_trip_through_ingest_and_scan() {
    let engine = engine();
    let (ids, values, payloads) = rows(10_000);
    let payload_refs: Vec<Option<&[u8]>> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| (i % 5 != 0).then_some(&p[..]))
        .collect();
    let batch = vectors_batch(&ids, values.clone(), DIM, payload_refs.clone());
    assert_eq!(engine.ingest("a", &batch).unwrap(), 10_000);
    let mut seen = HashMap::new();
    for batch in engine.scan("a").unwrap() {
        let batch = batch.unwrap();
        assert!(batch.num_rows() <= ebb_engine::SCAN_BATCH_ROWS);
        let id = batch
            .column(0)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .unwrap();
        let vec = batch
            .column(1)
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .unwrap();
        let pay = batch
            .column(2)
            .as_any()
            .downcast_ref::<BinaryArray>()
            .unwrap();
        for r in 0..batch.num_rows() {
            let v = vec.value(r);
            let v = v
                .as_any()
                .downcast_ref::<Float32Array>()
                .unwrap()
                .values()
                .to_vec();
            let p = pay.is_valid(r).then(|| pay.value(r).to_vec());
            assert!(seen.insert(id.value(r), (v, p)).is_none(), "an id twice");
        }
    }
    assert_eq!(seen.len(), 10_000);
    for (i, id) in ids.iter().enumerate() {
        let (v, p) = &seen[id];
        assert_eq!(&v[..], &values[i * DIM..(i + 1) * DIM]);
        assert_eq!(p.as_deref(), payload_refs[i]);
    }
}

#[test]
fn kv_round_trips_and_scans_in_pooled_buffers() {
    let engine = engine();
    let keys: Vec<Vec<u8>> = (0..20_000u32)
        .map(|i| format!("key-{i}").into_bytes())
        .collect();
    let values: Vec<Vec<u8>> = (0..20_000u32)
        .map(|i| vec![i as u8; (i % 300) as usize])
        .collect();
    let batch = kv_batch(&keys, &values).unwrap();
    assert_eq!(engine.ingest_kv("a", &batch).unwrap(), 20_000);
    assert_eq!(
        engine.get("a", b"key-77").unwrap().as_deref(),
        Some(&values[77][..])
    );
    let mut scanned: Vec<RecordBatch> = engine.scan_kv("a").unwrap().map(Result::unwrap).collect();
    // The batches' buffers are the pool's, lent out while Arrow holds them.
    let stats = engine.pool_stats("a").unwrap();
    assert!(stats.gets_total > 0, "{stats:?}");
    assert!(stats.in_use >= scanned.len() as u64 * 4, "{stats:?}");
    let mut got = HashMap::new();
    for b in &scanned {
        let k = b.column(0).as_any().downcast_ref::<BinaryArray>().unwrap();
        let v = b.column(1).as_any().downcast_ref::<BinaryArray>().unwrap();
        for r in 0..b.num_rows() {
            got.insert(k.value(r).to_vec(), v.value(r).to_vec());
        }
    }
    assert_eq!(got.len(), 20_000);
    for (k, v) in keys.iter().zip(&values) {
        assert_eq!(&got[k], v);
    }
    scanned.clear();
    assert_eq!(
        engine.pool_stats("a").unwrap().in_use,
        0,
        "back in the pool"
    );
}

#[test]
fn a_bad_batch_is_refused_whole() {
    let engine = engine();
    let (ids, values, _) = rows(3000);
    let none = vec![None; 3000];
    // A NaN in the last row, a wrong dimension, a null id, a wrong type, a
    // missing column.
    let mut nan = values.clone();
    *nan.last_mut().unwrap() = f32::NAN;
    let err = engine
        .ingest("a", &vectors_batch(&ids, nan, DIM, none.clone()))
        .unwrap_err();
    assert!(matches!(err, Error::NonFinite { .. }), "{err:?}");
    let wrong_dim: Vec<f32> = values[..3000 * 3].to_vec();
    let err = engine
        .ingest("a", &vectors_batch(&ids, wrong_dim, 3, none.clone()))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::DimensionMismatch {
                expected: 4,
                got: 3
            }
        ),
        "{err:?}"
    );
    let mut null_ids: Vec<Option<u64>> = ids.iter().copied().map(Some).collect();
    null_ids[2999] = None;
    let good = vectors_batch(&ids, values.clone(), DIM, none.clone());
    let with_null = RecordBatch::try_from_iter([
        ("id", Arc::new(UInt64Array::from(null_ids)) as ArrayRef),
        ("vector", good.column(1).clone()),
    ])
    .unwrap();
    let err = engine.ingest("a", &with_null).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Null {
                column: "id",
                row: 2999
            }
        ),
        "{err:?}"
    );
    let wrong_type = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Float32Array::from(vec![1.0f32; 3000])) as ArrayRef,
        ),
        ("vector", good.column(1).clone()),
    ])
    .unwrap();
    assert!(matches!(
        engine.ingest("a", &wrong_type),
        Err(Error::Schema { .. })
    ));
    let missing = RecordBatch::try_from_iter([("id", good.column(0).clone())]).unwrap();
    assert!(matches!(
        engine.ingest("a", &missing),
        Err(Error::Schema { .. })
    ));
    let kv_nulls = RecordBatch::try_from_iter([
        (
            "key",
            Arc::new(BinaryArray::from(vec![Some(&b"k"[..]), None])) as ArrayRef,
        ),
        (
            "value",
            Arc::new(BinaryArray::from(vec![Some(&b"v"[..]), Some(&b"w"[..])])) as ArrayRef,
        ),
    ])
    .unwrap();
    assert!(matches!(
        engine.ingest_kv("a", &kv_nulls),
        Err(Error::Null {
            column: "key",
            row: 1
        })
    ));
    let kv_empty = RecordBatch::try_from_iter([
        (
            "key",
            Arc::new(BinaryArray::from(vec![&b"k"[..], &b""[..]])) as ArrayRef,
        ),
        (
            "value",
            Arc::new(BinaryArray::from(vec![&b"v"[..], &b"w"[..]])) as ArrayRef,
        ),
    ])
    .unwrap();
    assert!(matches!(
        engine.ingest_kv("a", &kv_empty),
        Err(Error::EmptyKey)
    ));

    let info = &engine.list_datasets()[0];
    assert_eq!(
        (info.records, info.vectors),
        (0, 0),
        "nothing of any bad batch was stored"
    );
    assert_eq!(engine.ingest("a", &good).unwrap(), 3000);
}

#[test]
fn ingest_all_is_one_write_checked_whole() {
    let engine = engine();
    let good = vectors_batch(&[1, 2], vec![1.0; 2 * DIM], DIM, vec![None, None]);
    let mut bad_values = vec![1.0; 2 * DIM];
    bad_values[DIM + 1] = f32::NAN;
    let bad = vectors_batch(&[3, 4], bad_values, DIM, vec![None, None]);
    let e = engine.ingest_all("a", &[good.clone(), bad]).unwrap_err();
    assert!(matches!(e.error, Error::NonFinite { .. }), "{e}");
    assert_eq!(e.stored, 0);
    assert_eq!(engine.dataset_stats("a").unwrap().vectors, 0);
    let again = vectors_batch(&[5, 6], vec![2.0; 2 * DIM], DIM, vec![Some(b"p"), None]);
    assert_eq!(engine.ingest_all("a", &[good, again]).unwrap(), 4);
    assert_eq!(engine.dataset_stats("a").unwrap().vectors, 4);
    let e = engine.ingest_all("nope", &[]).unwrap_err();
    assert!(matches!(e.error, Error::UnknownDataset { .. }), "{e}");
    engine.close_blocking().unwrap();
}

#[test]
fn batch_constructors_check_their_shapes() {
    let engine = engine();
    let ok = vector_batch(DIM, vec![1, 2], vec![0.5; 2 * DIM], vec![Some(b"x"), None]).unwrap();
    assert_eq!(engine.ingest("a", &ok).unwrap(), 2);
    let no_payloads: Vec<Option<&[u8]>> = Vec::new();
    let bare = vector_batch(DIM, vec![3], vec![0.5; DIM], no_payloads.clone()).unwrap();
    assert_eq!(bare.column(2).null_count(), 1);
    assert_eq!(engine.ingest("a", &bare).unwrap(), 1);
    for bad in [
        vector_batch(DIM, vec![1, 2], vec![0.5; DIM], no_payloads.clone()),
        vector_batch(0, vec![], vec![], no_payloads.clone()),
        vector_batch(usize::MAX, vec![1], vec![], no_payloads.clone()),
        vector_batch(DIM, vec![1, 2], vec![0.5; 2 * DIM], vec![Some(b"x")]),
    ] {
        assert!(matches!(bad, Err(Error::Schema { .. })), "{bad:?}");
    }
    let kv = kv_batch(&[b"k1", b"k2"], &[b"v1", b"v2"]).unwrap();
    assert_eq!(engine.ingest_kv("a", &kv).unwrap(), 2);
    assert_eq!(&*engine.get("a", b"k2").unwrap().unwrap(), b"v2");
    assert!(matches!(
        kv_batch(&[b"k1"], &[b"v1", b"v2"]),
        Err(Error::Schema { .. })
    ));
    engine.close_blocking().unwrap();
}
