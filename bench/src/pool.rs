//! The `peers pool` scenario: the cost of obtaining a buffer (get + drop)
//! and of really using one (get + write every byte + drop), for ebb's
//! BufferPool and its peers, at several sizes, on 1 and 2 threads.
//!
//! Each cell runs every thread for a fixed wall time in batches whose size
//! doubles until a batch takes a millisecond, so the clock is read rarely;
//! `ns_per_op` is the mean over threads of one thread's time per
//! operation (threads run at once, so 2 threads at 20 ns means 10 ns of
//! throughput per operation).

use std::hint::black_box;
use std::ops::{Deref, DerefMut};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use ebb_pool::{BufferPool, PoolConfig};

/// One measured cell.
#[derive(Clone, Debug)]
pub struct PoolCell {
    /// `ebb`, `vec_zeroed`, `vec_with_capacity`, `array_queue`,
    /// `object-pool`, `lockfree-object-pool`.
    pub implementation: &'static str,
    /// Buffer bytes.
    pub size: usize,
    /// Threads running the loop at once.
    pub threads: usize,
    /// ebb's zero_on_return; `None` for the peers.
    pub zero_on_return: Option<bool>,
    /// Whether each buffer was written in full before its drop.
    pub fill: bool,
    /// Mean per-thread nanoseconds per get (+ fill) + drop.
    pub ns_per_op: f64,
}

impl PoolCell {
    /// The JSON line `peers pool --json` prints.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "impl": self.implementation,
            "size": self.size,
            "threads": self.threads,
            "zero_on_return": self.zero_on_return,
            "fill": self.fill,
            "ns_per_op": (self.ns_per_op * 100.0).round() / 100.0,
        })
        .to_string()
    }
}

/// Something that hands out a buffer of `size` bytes.
trait Source: Sync {
    fn cycle(&self, size: usize, fill: bool);
}

fn touch(bytes: &mut [u8], fill: bool) {
    if fill {
        bytes.fill(1);
    }
    black_box(bytes);
}

struct Ebb(BufferPool);

impl Source for Ebb {
    #[inline]
    fn cycle(&self, size: usize, fill: bool) {
        let mut buf = self.0.get(size);
        touch(&mut buf, fill);
    }
}

struct VecZeroed;

impl Source for VecZeroed {
    #[inline]
    fn cycle(&self, size: usize, fill: bool) {
        let mut v = vec![0u8; size];
        touch(&mut v, fill);
    }
}

struct VecWithCapacity;

impl Source for VecWithCapacity {
    #[inline]
    fn cycle(&self, size: usize, fill: bool) {
        let mut v: Vec<u8> = Vec::with_capacity(size);
        if fill {
            v.resize(size, 1);
        }
        black_box(&mut v);
    }
}

/// crossbeam's ArrayQueue as a bare pool: pop or allocate, push back on
/// drop (or drop when full).
struct Queue(ArrayQueue<Vec<u8>>);

struct QueueGuard<'a> {
    queue: &'a ArrayQueue<Vec<u8>>,
    buf: Option<Vec<u8>>,
}

impl Deref for QueueGuard<'_> {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        self.buf.as_ref().expect("present until drop")
    }
}

impl DerefMut for QueueGuard<'_> {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        self.buf.as_mut().expect("present until drop")
    }
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            let _ = self.queue.push(buf);
        }
    }
}

impl Source for Queue {
    #[inline]
    fn cycle(&self, size: usize, fill: bool) {
        let buf = self.0.pop().unwrap_or_else(|| vec![0u8; size]);
        let mut guard = QueueGuard {
            queue: &self.0,
            buf: Some(buf),
        };
        touch(&mut guard, fill);
    }
}

struct ObjectPoolCrate(object_pool::Pool<Vec<u8>>);

impl Source for ObjectPoolCrate {
    #[inline]
    fn cycle(&self, size: usize, fill: bool) {
        let mut buf = self.0.pull(|| vec![0u8; size]);
        touch(&mut buf, fill);
    }
}

struct LockfreeObjectPool(lockfree_object_pool::LinearObjectPool<Vec<u8>>);

impl Source for LockfreeObjectPool {
    #[inline]
    fn cycle(&self, _size: usize, fill: bool) {
        let mut buf = self.0.pull();
        touch(&mut buf, fill);
    }
}

/// Per-thread ns per cycle, `threads` threads at once for about `time`.
fn measure(source: &dyn Source, size: usize, threads: usize, fill: bool, time: Duration) -> f64 {
    // Warm: the pools hold a buffer, the allocator has its arenas.
    for _ in 0..4 {
        source.cycle(size, fill);
    }
    let barrier = Barrier::new(threads);
    let per_thread: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    source.cycle(size, fill);
                    barrier.wait();
                    let start = Instant::now();
                    let mut ops = 0u64;
                    let mut batch = 1u64;
                    loop {
                        let t0 = Instant::now();
                        for _ in 0..batch {
                            source.cycle(size, fill);
                        }
                        ops += batch;
                        if t0.elapsed() < Duration::from_millis(1) {
                            batch *= 2;
                        }
                        if start.elapsed() >= time {
                            break;
                        }
                    }
                    start.elapsed().as_nanos() as f64 / ops as f64
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    per_thread.iter().sum::<f64>() / per_thread.len() as f64
}

/// Every cell for `sizes` x `threads` x {get+drop, get+fill+drop}.
pub fn run(sizes: &[usize], threads: &[usize], time: Duration) -> Vec<PoolCell> {
    let mut out = Vec::new();
    for &size in sizes {
        let ebb_plain = Ebb(
            BufferPool::new(PoolConfig::default().with_zero_on_return(false))
                .expect("default config"),
        );
        let ebb_zeroing = Ebb(BufferPool::new(PoolConfig::default()).expect("default config"));
        let queue = Queue(ArrayQueue::new(64));
        let object_pool = ObjectPoolCrate(object_pool::Pool::new(0, Vec::new));
        let lockfree = LockfreeObjectPool(lockfree_object_pool::LinearObjectPool::new(
            move || vec![0u8; size],
            |_| {},
        ));
        let sources: [(&'static str, Option<bool>, &dyn Source); 7] = [
            ("ebb", Some(false), &ebb_plain),
            ("ebb", Some(true), &ebb_zeroing),
            ("vec_zeroed", None, &VecZeroed),
            ("vec_with_capacity", None, &VecWithCapacity),
            ("array_queue", None, &queue),
            ("object-pool", None, &object_pool),
            ("lockfree-object-pool", None, &lockfree),
        ];
        for fill in [false, true] {
            for &t in threads {
                for (name, zero, source) in sources {
                    let ns = measure(source, size, t, fill, time);
                    out.push(PoolCell {
                        implementation: name,
                        size,
                        threads: t,
                        zero_on_return: zero,
                        fill,
                        ns_per_op: ns,
                    });
                }
            }
        }
    }
    out
}

/// Length-prefixed record encoding and decoding, the loop whose
/// allocations `pool_allocs` counts.
pub mod codec {
    use std::io::Write;

    use ebb_pool::{BufferPool, ObjectPool, PooledBuf};

    use crate::Rng;

    /// Records of one batch: (key, value length), deterministic per seed.
    pub fn batch(rng: &mut Rng, records: usize) -> Vec<(u64, usize)> {
        (0..records)
            .map(|_| (rng.next_u64(), rng.range(16, 2048)))
            .collect()
    }

    fn value_byte(key: u64, i: usize) -> u8 {
        (key as u8).wrapping_add(i as u8)
    }

    /// Encodes with plain Vecs, decodes into one Vec per record; returns a
    /// checksum of the decoded bytes.
    pub fn round_trip_plain(records: &[(u64, usize)]) -> u64 {
        let mut message = Vec::new();
        for &(key, len) in records {
            message.extend_from_slice(&key.to_le_bytes());
            message.extend_from_slice(&(len as u32).to_le_bytes());
            let value: Vec<u8> = (0..len).map(|i| value_byte(key, i)).collect();
            message.extend_from_slice(&value);
        }
        let mut decoded: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut at = 0;
        while at < message.len() {
            let key = u64::from_le_bytes(message[at..at + 8].try_into().expect("8 bytes"));
            let len =
                u32::from_le_bytes(message[at + 8..at + 12].try_into().expect("4 bytes")) as usize;
            decoded.push((key, message[at + 12..at + 12 + len].to_vec()));
            at += 12 + len;
        }
        checksum(decoded.iter().map(|(k, v)| (*k, &v[..])))
    }

    /// The same with pooled buffers and a pooled record list.
    pub fn round_trip_pooled(
        records: &[(u64, usize)],
        buffers: &BufferPool,
        lists: &ObjectPool<Vec<(u64, PooledBuf)>>,
    ) -> u64 {
        let mut message = buffers.get(0);
        let mut value = buffers.get(0);
        for &(key, len) in records {
            message.extend_from_slice(&key.to_le_bytes());
            message.extend_from_slice(&(len as u32).to_le_bytes());
            value.clear();
            value.resize(len, 0);
            for (i, b) in value.iter_mut().enumerate() {
                *b = value_byte(key, i);
            }
            message.write_all(&value).expect("pooled buffers grow");
        }
        let mut decoded = lists.get();
        let mut at = 0;
        while at < message.len() {
            let key = u64::from_le_bytes(message[at..at + 8].try_into().expect("8 bytes"));
            let len =
                u32::from_le_bytes(message[at + 8..at + 12].try_into().expect("4 bytes")) as usize;
            let mut v = buffers.get(len);
            v.copy_from_slice(&message[at + 12..at + 12 + len]);
            decoded.push((key, v));
            at += 12 + len;
        }
        checksum(decoded.iter().map(|(k, v)| (*k, &v[..])))
    }

    fn checksum<'a>(records: impl Iterator<Item = (u64, &'a [u8])>) -> u64 {
        records.fold(0u64, |acc, (k, v)| {
            v.iter()
                .fold(acc ^ k, |a, &b| a.rotate_left(5) ^ u64::from(b))
        })
    }
}
