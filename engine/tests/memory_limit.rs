//! A real memory limit: a write-heavy workload that would need 2 GiB runs
//! in a child inside a memory cgroup with a hard limit of 768 MiB and the
//! engine's defaults (which read the cgroup's limit). The child must exit
//! 0, never be OOM-killed, get `MemoryPressure` refusals, and read back
//! every record and vector it was told were accepted; the cgroup's peak
//! must stay under the limit less 5 % (the controller holds the line, not
//! the kernel). Where no cgroup can be made, the test prints why and skips.

use std::time::Instant;

use ebb_engine::{DatasetConfig, Engine, EngineConfig, Error, Metric};
use ebb_testkit::cgroup::{CGROUP_ENV, MemoryCgroup};

const LIMIT: u64 = 768 << 20;
const WORKLOAD: u64 = 2 << 30;
const VALUE: usize = 4000;
const DIM: usize = 64;
/// One vector (with a small payload) per this many records.
const VECTOR_EVERY: u32 = 8;

#[test]
fn a_workload_twice_the_cgroup_limit_is_refused_not_killed() {
    const NAME: &str = "a_workload_twice_the_cgroup_limit_is_refused_not_killed";
    if std::env::var("EBB_CHILD_TEST").as_deref() == Ok(NAME) {
        child();
        return;
    }
    let cgroup = match MemoryCgroup::create("memory-limit", LIMIT) {
        Ok(cg) => cg,
        Err(why) => {
            ebb_testkit::skip(NAME, &why);
            return;
        }
    };
    let started = Instant::now();
    let ran = ebb_testkit::in_child_with_env(NAME, &[(CGROUP_ENV, cgroup.path().as_os_str())]);
    assert!(!ran);
    assert!(!cgroup.oom_killed(), "the kernel OOM-killed the child");
    let peak = cgroup.peak_bytes().expect("the cgroup's peak");
    eprintln!(
        "cgroup {:?} limit {} MiB, peak {} MiB ({:.1} % of the limit), {:.1} s",
        cgroup.version(),
        LIMIT >> 20,
        peak >> 20,
        peak as f64 * 100.0 / LIMIT as f64,
        started.elapsed().as_secs_f64()
    );
    assert!(
        peak <= LIMIT - LIMIT / 20,
        "peak {peak} B over the limit less 5 %"
    );
}

fn child() {
    let path = std::env::var_os(CGROUP_ENV).expect("the cgroup from the parent");
    MemoryCgroup::join(path.as_ref()).expect("join the cgroup");
    let engine = Engine::open(EngineConfig::default()).unwrap();
    let limit = engine.config().memory_limit_bytes;
    assert!(
        limit < LIMIT,
        "the default limit {limit} B reads the cgroup's"
    );
    engine
        .create_dataset("w", DatasetConfig::new(DIM, Metric::L2))
        .unwrap();
    let mut rng = ebb_testkit::Rng::new(7);
    let records = (WORKLOAD / VALUE as u64) as u32;
    let (mut kv_accepted, mut vectors_accepted) = (Vec::new(), Vec::new());
    let (mut pressure, mut over_budget) = (0u64, 0u64);
    let mut value = vec![0u8; VALUE];
    for i in 0..records {
        value[..4].copy_from_slice(&i.to_le_bytes());
        value[VALUE - 1] = i as u8;
        match engine.put("w", &i.to_le_bytes(), &value) {
            Ok(()) => kv_accepted.push(i),
            Err(Error::MemoryPressure { .. }) => pressure += 1,
            Err(Error::OverBudget(_)) => over_budget += 1,
            Err(e) => panic!("put {i}: {e}"),
        }
        if i % VECTOR_EVERY == 0 {
            let id = u64::from(i);
            let v = vector(id, &mut rng);
            match engine.upsert_vector("w", id, &v, Some(&i.to_le_bytes())) {
                Ok(()) => vectors_accepted.push((id, v)),
                Err(Error::MemoryPressure { .. }) => pressure += 1,
                Err(Error::OverBudget(_)) => over_budget += 1,
                Err(e) => panic!("upsert_vector {id}: {e}"),
            }
        }
    }
    let stats = engine.pressure_stats();
    eprintln!(
        "limit {} MiB: {} of {records} records and {} vectors accepted; {pressure} MemoryPressure, \
         {over_budget} OverBudget refusals; {:?}",
        limit >> 20,
        kv_accepted.len(),
        vectors_accepted.len(),
        stats
    );
    assert!(pressure > 0, "no MemoryPressure refusal");
    assert!(stats.writes_refused_total >= pressure);
    assert!(
        kv_accepted.len() as u64 * VALUE as u64 > limit / 2,
        "the controller refused too early"
    );
    for &i in &kv_accepted {
        let got = engine
            .get("w", &i.to_le_bytes())
            .unwrap()
            .expect("an accepted record");
        assert_eq!(got.len(), VALUE);
        assert_eq!(&got[..4], &i.to_le_bytes());
        assert_eq!(got[VALUE - 1], i as u8);
    }
    for (id, v) in &vectors_accepted {
        assert_eq!(
            engine.get_vector("w", *id).unwrap().as_ref(),
            Some(v),
            "vector {id}"
        );
    }
    engine.close_blocking().unwrap();
}

fn vector(id: u64, rng: &mut ebb_testkit::Rng) -> Vec<f32> {
    (0..DIM)
        .map(|d| ((id as usize * 31 + d) % 97) as f32 + rng.below(1000) as f32 / 1000.0)
        .collect()
}
