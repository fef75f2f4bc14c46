//! Behaviour of BufferPool and ObjectPool one scenario at a time.

use ebb_pool::{
    AdaptiveConfig, BUFFER_ALIGN, BufferPool, Error, ObjectPool, ObjectPoolConfig, PoolConfig,
    Recycle,
};

fn pool(zero: bool) -> BufferPool {
    BufferPool::new(PoolConfig::default().with_zero_on_return(zero)).expect("valid config")
}

#[test]
fn zero_on_return_wipes_what_the_last_user_wrote() {
    let pool = pool(true);
    let mut a = pool.get(4000);
    a.fill(0xab);
    a.resize(4096, 0xcd); // up to the capacity: all of it is dirty
    drop(a);
    let b = pool.get(4096);
    assert_eq!(pool.stats().hits_total, 1, "the same buffer came back");
    assert!(
        b.iter().all(|&x| x == 0),
        "old bytes crossed to the next user"
    );
}

#[test]
fn without_zero_on_return_the_next_user_sees_old_bytes() {
    // The counterpart that proves the wipe above is the pool's doing.
    let pool = pool(false);
    let mut a = pool.get(100);
    a.fill(0xab);
    drop(a);
    let b = pool.get(100);
    assert_eq!(pool.stats().hits_total, 1);
    assert!(b.iter().all(|&x| x == 0xab));
}

#[test]
fn buffers_are_aligned_for_arrow() {
    let pool = pool(true);
    for len in [0, 1, 63, 64, 511, 512, 513, 70_000, 20 << 20] {
        let buf = pool.get(len);
        assert_eq!(buf.as_ptr() as usize % BUFFER_ALIGN, 0, "len {len}");
    }
}

#[test]
fn arrow_buffer_returns_to_the_pool_after_the_last_clone_drops() {
    let pool = pool(true);
    let mut buf = pool.get(16);
    buf.copy_from_slice(&[7; 16]);
    let ptr = buf.as_ptr();
    let arrow = buf.into_arrow_buffer();
    assert_eq!(arrow.as_ptr(), ptr, "no copy");
    let clone = arrow.clone();
    let slice = arrow.slice(8);
    drop(arrow);
    drop(clone);
    assert_eq!(pool.stats().in_use, 1, "a slice still holds it");
    assert_eq!(slice.as_slice(), &[7; 8]);
    drop(slice);
    let stats = pool.stats();
    assert_eq!((stats.in_use, stats.retained), (0, 1));
}

#[test]
fn bytes_return_to_the_pool_after_the_last_clone_drops() {
    let pool = pool(true);
    let mut buf = pool.get(0);
    buf.extend_from_slice(b"hello world");
    let bytes = buf.into_bytes();
    let hello = bytes.slice(0..5);
    drop(bytes);
    assert_eq!(&hello[..], b"hello");
    assert_eq!(pool.stats().in_use, 1);
    drop(hello);
    assert_eq!(pool.stats().in_use, 0);
}

#[test]
fn a_buffer_outlives_its_pool_handle() {
    let pool = pool(true);
    let mut buf = pool.get(10);
    buf.fill(1);
    drop(pool);
    assert_eq!(&buf[..], &[1; 10]);
    drop(buf); // returns into the pool it keeps alive, which then drops
}

#[test]
fn oversized_requests_are_counted_and_freed_not_retained() {
    let pool = pool(true);
    let buf = pool.get((16 << 20) + 1);
    assert!(buf.is_oversized());
    assert_eq!(buf.capacity() % BUFFER_ALIGN, 0);
    let stats = pool.stats();
    assert_eq!((stats.oversized_total, stats.oversized_in_use), (1, 1));
    drop(buf);
    let stats = pool.stats();
    assert_eq!((stats.oversized_in_use, stats.retained), (0, 0));
}

#[test]
fn zero_length_requests_get_the_smallest_tier() {
    let pool = pool(true);
    let mut buf = pool.get(0);
    assert!(buf.is_empty());
    assert_eq!(buf.capacity(), 512);
    buf.push(1);
    assert_eq!(&buf[..], &[1]);
}

#[test]
fn impossible_sizes_are_errors_not_panics() {
    let pool = pool(true);
    assert_eq!(
        pool.try_get(usize::MAX).unwrap_err(),
        Error::TooLarge {
            requested_bytes: usize::MAX
        }
    );
    let mut buf = pool.get(10);
    assert!(matches!(
        buf.try_reserve(usize::MAX),
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(buf.try_set_len(513), Err(Error::TooLarge { .. })));
    assert_eq!(buf.len(), 10, "a failed call changes nothing");
    assert_eq!(pool.stats().in_use, 1);
}

#[test]
fn growth_past_the_largest_tier_becomes_oversized_and_keeps_the_bytes() {
    let pool = BufferPool::new(PoolConfig::small_records()).unwrap();
    let mut buf = pool.get(4000);
    buf.fill(9);
    buf.extend_from_slice(&[1; 200]);
    assert!(buf.is_oversized());
    assert!(buf[..4000].iter().all(|&b| b == 9) && buf[4000..].iter().all(|&b| b == 1));
    let stats = pool.stats();
    assert_eq!(
        (stats.in_use, stats.retained),
        (0, 1),
        "the old buffer went back"
    );
}

#[test]
fn bad_configs_are_refused() {
    for tiers in [vec![], vec![0, 64], vec![64, 64], vec![128, 64]] {
        let err = BufferPool::new(PoolConfig::default().with_tiers(tiers.clone())).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{tiers:?}");
    }
    let bad = AdaptiveConfig {
        interval: 0,
        ..AdaptiveConfig::default()
    };
    assert!(BufferPool::new(PoolConfig::default().with_adaptive(bad)).is_err());
    assert!(ObjectPool::new(ObjectPoolConfig::default().with_adaptive(bad), String::new).is_err());
}

#[test]
fn bounds_cap_what_is_retained() {
    let pool = BufferPool::new(
        PoolConfig::default()
            .with_max_retained(4)
            .with_max_retained_bytes(3 << 20)
            .with_max_total_retained_bytes(3 << 20)
            .with_adaptive(AdaptiveConfig::disabled()),
    )
    .unwrap();
    let held: Vec<_> = (0..10).map(|_| pool.get(1 << 20)).collect();
    drop(held);
    let mib = pool.stats().tiers[6];
    assert_eq!(mib.size_bytes, 1 << 20);
    assert_eq!(
        (mib.retained, mib.discarded_total),
        (3, 7),
        "3 MiB per tier"
    );
    let held: Vec<_> = (0..10).map(|_| pool.get(1000)).collect();
    drop(held);
    let kib = pool.stats().tiers[1];
    assert_eq!(
        (kib.retained, kib.discarded_total),
        (0, 10),
        "the 3 MiB total is full"
    );
    assert_eq!(pool.trim(), 3 << 20);
    let held: Vec<_> = (0..10).map(|_| pool.get(1000)).collect();
    drop(held);
    assert_eq!(pool.stats().tiers[1].retained, 4, "the cap of 4");
}

#[test]
fn buffers_dropped_on_another_thread_return_to_the_pool() {
    let pool = pool(true);
    let bufs: Vec<_> = (0..8).map(|_| pool.get(1000)).collect();
    std::thread::spawn(move || drop(bufs)).join().unwrap();
    let stats = pool.stats();
    assert_eq!((stats.in_use, stats.retained), (0, 8));
}

#[test]
fn adaptive_sizing_raises_the_cap_under_misses_and_lowers_it_when_idle() {
    let adaptive = AdaptiveConfig {
        interval: 20,
        ..AdaptiveConfig::default()
    };
    let pool = BufferPool::new(
        PoolConfig::small_records()
            .with_max_retained(10)
            .with_stripes(1)
            .with_adaptive(adaptive),
    )
    .unwrap();
    // Bursts of 20 live buffers with a cap of 10: half the gets miss.
    for _ in 0..10 {
        let burst: Vec<_> = (0..20).map(|_| pool.get(64)).collect();
        drop(burst);
    }
    // It rises until 80 % of a burst hits: 10 -> 12 -> 15 -> 18.
    let raised = pool.stats().tiers[0].cap;
    assert_eq!(raised, 18, "cap did not rise with the misses");
    // One buffer at a time: every get hits and the rest sit unused.
    for _ in 0..2000 {
        drop(pool.get(64));
    }
    let lowered = pool.stats().tiers[0];
    assert!(lowered.cap < raised, "cap {} did not fall", lowered.cap);
    assert!(lowered.cap >= 10, "under the floor");
    assert!(lowered.retained <= lowered.cap);
}

#[derive(Default)]
struct Txn {
    keys: Vec<u64>,
    recycled: u32,
}

impl Recycle for Txn {
    fn recycle(&mut self) {
        self.keys.clear();
        self.recycled += 1;
    }
}

#[test]
fn object_pool_recycles_reuses_and_bounds() {
    let pool = ObjectPool::new(
        ObjectPoolConfig::default()
            .with_max_retained(2)
            .with_stripes(1)
            .with_adaptive(AdaptiveConfig::disabled()),
        Txn::default,
    )
    .unwrap();
    let mut a = pool.get();
    a.keys.extend([1, 2, 3]);
    let b = pool.get();
    let c = pool.get();
    drop((a, b, c));
    let stats = pool.stats();
    assert_eq!((stats.retained, stats.discarded_total), (2, 1));
    let t = pool.get();
    assert!(t.keys.is_empty(), "recycle ran");
    assert_eq!(t.recycled, 1);
    assert_eq!(pool.stats().hits_total, 1);
    drop(t);
    assert!(pool.trim() > 0);
    assert_eq!(pool.stats().retained, 0);
}

#[test]
fn a_tracker_names_buffers_held_too_long_and_where_they_came_from() {
    use ebb_leak::{ResourceKind, ResourceTracker, TrackerConfig, TrackingLevel};
    let tracker = ResourceTracker::new(
        "pool-test",
        TrackerConfig::default().with_level(TrackingLevel::Paranoid),
    );
    let pool = BufferPool::new(PoolConfig::default().with_tracker(tracker)).unwrap();
    let held = pool.get(100);
    let arrow = pool.get(8).into_arrow_buffer();
    let report = tracker.check(std::time::Duration::ZERO);
    assert_eq!(report.held.len(), 2, "{report}");
    assert!(
        report
            .held
            .iter()
            .all(|g| g.kind == "buffer" && g.site.contains("tests/buffers.rs"))
    );
    assert_eq!(tracker.live(ResourceKind::Buffer), 2);
    drop(held);
    drop(arrow);
    assert!(tracker.check(std::time::Duration::ZERO).is_clean());
    assert_eq!(tracker.live(ResourceKind::Buffer), 0);

    let objects = ObjectPool::new(
        ObjectPoolConfig::default().with_tracker(tracker, ResourceKind::Transaction),
        Vec::<u8>::new,
    )
    .unwrap();
    let txn = objects.get();
    assert_eq!(tracker.live(ResourceKind::Transaction), 1);
    drop(txn);
    assert_eq!(tracker.live(ResourceKind::Transaction), 0);
}

#[test]
fn stats_are_flat_named_and_count_a_known_workload() {
    let pool = BufferPool::new(PoolConfig::small_records().with_name("records")).unwrap();
    let held: Vec<_> = (0..3).map(|_| pool.get(100)).collect();
    let s = pool.stats();
    assert_eq!(
        (s.name.as_str(), s.in_use, s.misses_total),
        ("records", 3, 3)
    );
    drop(held);
    let again = pool.get(200);
    let s = pool.stats();
    // Three fresh 256-byte buffers, given back, one handed out again.
    assert_eq!(
        (s.gets_total, s.hits_total, s.misses_total, s.puts_total),
        (4, 1, 3, 3)
    );
    assert_eq!((s.allocations_total, s.in_use, s.retained), (3, 1, 2));
    assert_eq!((s.retained_bytes, s.charged_bytes), (2 * 256, 3 * 256));
    let tier = s.tiers.iter().find(|t| t.size_bytes == 256).unwrap();
    assert_eq!((tier.gets_total, tier.retained_bytes), (4, 2 * 256));
    drop(again);
    assert_eq!(pool.stats().retained_bytes, 3 * 256);
}
