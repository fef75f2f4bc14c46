//! [`ResourceTracker`]: guards for resources that must not be held forever
//! (iterators, transactions, connections, fds, tasks, buffers), counted per
//! kind, and for a sample of them an acquisition site, age, backtrace and
//! the last access points, so [`check`](ResourceTracker::check) can name
//! what has been held too long and where it came from.
//!
//! Costs, by level (Netty's `ResourceLeakDetector` is the model):
//! - `Disabled`: one relaxed load per acquisition; the guard is inert.
//! - `Sampled(n)`: every acquisition bumps a per-kind live count in the
//!   thread's own slot (a plain load and store, no atomic read-modify-write;
//!   see the `slots` module); every nth also records site and time, with a
//!   backtrace captured once per [`BACKTRACE_REUSE`] recordings at a site.
//! - `Paranoid`: every acquisition is recorded with a backtrace (tests).
//!
//! The tracker's own memory is bounded: at most `max_entries` recorded
//! acquisitions (the oldest is evicted, and counted, when full) and at most
//! `max_backtraces` backtraces among them (the oldest loses its backtrace).
//!
//! Invariants:
//! 1. A kind's live count is the sum of its slot counters; every live
//!    non-inert [`Tracked`] added exactly one to the slot it names, and its
//!    drop takes exactly that one off.
//! 2. A recorded entry is found by (slot, generation); an evicted entry's
//!    slot gets a new generation, so a guard whose entry was evicted
//!    neither removes nor touches another guard's entry.
//! 3. Trackers live for the rest of the process (like a metrics registry)
//!    and are listed in a global registry; a guard therefore never
//!    outlives its tracker.

use std::backtrace::Backtrace;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::panic::Location;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

use ebb_core::sync::{AtomicU32, AtomicU64, Ordering};
use serde::Serialize;

use crate::slots::{self, Counted, SlotTable};

/// Kinds one tracker can count separately; later custom kinds share the
/// last one (`"other"`).
pub const MAX_KINDS: usize = 64;
/// Access points kept per recorded entry (the most recent), as Netty.
pub const MAX_TOUCHES: usize = 4;
/// Sampled mode: a site's backtrace is reused by this many recordings
/// before it is captured again (a capture costs microseconds).
pub const BACKTRACE_REUSE: u32 = 64;
/// Sampled mode: sites whose backtrace is kept for reuse.
const MAX_SITE_BACKTRACES: usize = 1024;

const BUILTIN: [&str; 7] = [
    "iterator",
    "transaction",
    "connection",
    "file_descriptor",
    "task",
    "thread",
    "buffer",
];

/// What a tracked guard stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// A storage iterator or cursor.
    Iterator,
    /// A transaction or snapshot.
    Transaction,
    /// A client or peer connection.
    Connection,
    /// An open file or socket.
    FileDescriptor,
    /// A spawned task.
    Task,
    /// A spawned thread.
    Thread,
    /// A pooled or borrowed buffer.
    Buffer,
    /// Anything else, by a stable name (it becomes a report key).
    Custom(&'static str),
}

impl ResourceKind {
    /// The kind's name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            ResourceKind::Iterator => BUILTIN[0],
            ResourceKind::Transaction => BUILTIN[1],
            ResourceKind::Connection => BUILTIN[2],
            ResourceKind::FileDescriptor => BUILTIN[3],
            ResourceKind::Task => BUILTIN[4],
            ResourceKind::Thread => BUILTIN[5],
            ResourceKind::Buffer => BUILTIN[6],
            ResourceKind::Custom(name) => name,
        }
    }

    #[inline]
    fn builtin_id(&self) -> Option<u16> {
        Some(match self {
            ResourceKind::Iterator => 0,
            ResourceKind::Transaction => 1,
            ResourceKind::Connection => 2,
            ResourceKind::FileDescriptor => 3,
            ResourceKind::Task => 4,
            ResourceKind::Thread => 5,
            ResourceKind::Buffer => 6,
            ResourceKind::Custom(_) => return None,
        })
    }
}

/// How much a tracker records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TrackingLevel {
    /// Nothing: one relaxed load per acquisition.
    Disabled,
    /// Count all; record every nth acquisition with a backtrace.
    Sampled(u32),
    /// Record every acquisition with a backtrace (for tests).
    Paranoid,
}

impl TrackingLevel {
    /// 0 = disabled, n = record every nth.
    fn every(self) -> u32 {
        match self {
            TrackingLevel::Disabled => 0,
            TrackingLevel::Sampled(n) => n.max(1),
            TrackingLevel::Paranoid => 1,
        }
    }

    fn from_every(every: u32) -> TrackingLevel {
        match every {
            0 => TrackingLevel::Disabled,
            1 => TrackingLevel::Paranoid,
            n => TrackingLevel::Sampled(n),
        }
    }
}

/// Configuration of a [`ResourceTracker`].
#[derive(Clone, Copy, Debug)]
pub struct TrackerConfig {
    /// Starting level (default `Sampled(128)`, as Netty's default).
    pub level: TrackingLevel,
    /// Recorded acquisitions kept at most (default 4096).
    pub max_entries: usize,
    /// Backtraces kept at most among them (default 256).
    pub max_backtraces: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            level: TrackingLevel::Sampled(128),
            max_entries: 4096,
            max_backtraces: 256,
        }
    }
}

impl TrackerConfig {
    /// With `level`.
    pub fn with_level(mut self, level: TrackingLevel) -> Self {
        self.level = level;
        self
    }

    /// With at most `entries` recorded acquisitions.
    pub fn with_max_entries(mut self, entries: usize) -> Self {
        self.max_entries = entries.max(1);
        self
    }

    /// With at most `backtraces` stored backtraces.
    pub fn with_max_backtraces(mut self, backtraces: usize) -> Self {
        self.max_backtraces = backtraces;
        self
    }
}

struct Touch {
    at: Instant,
    site: &'static Location<'static>,
}

struct Entry {
    kind: u16,
    label: &'static str,
    site: &'static Location<'static>,
    acquired: Instant,
    backtrace: Option<Arc<Backtrace>>,
    touches: VecDeque<Touch>,
}

struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

#[derive(Default)]
struct Entries {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Recording order, for eviction; may hold stale (slot, generation).
    order: VecDeque<(u32, u32)>,
    live: usize,
    backtraces: usize,
    evicted: u64,
    backtraces_dropped: u64,
    /// Sampled mode: the last backtrace captured at each acquisition site
    /// and how many recordings have reused it.
    /// Keyed by the site's value (file, line, column), not its address:
    /// the language does not promise one address per call site (Miri gives
    /// a new one per call).
    site_backtraces: HashMap<&'static Location<'static>, (Arc<Backtrace>, u32)>,
}

struct TrackerInner {
    name: String,
    /// 0 = disabled, n = record every nth (`TrackingLevel::every`).
    every: AtomicU32,
    max_entries: usize,
    max_backtraces: usize,
    /// Kind names by id; 0..7 are the built-in kinds, the last is "other".
    kinds: RwLock<Vec<&'static str>>,
    /// Live counts per thread slot (invariant 1).
    slots: SlotTable,
    acquired: AtomicU64,
    backtraces_captured: AtomicU64,
    entries: Mutex<Entries>,
    /// Live counts at the last `check`, for growth.
    last_check: Mutex<BTreeMap<&'static str, i64>>,
}

/// Every tracker made in this process (invariant 3).
static TRACKERS: Mutex<Vec<&'static TrackerInner>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A registry of tracked guards; cheap to copy and share.
///
/// ```
/// use std::time::Duration;
/// use ebb_leak::{ResourceKind, ResourceTracker, TrackerConfig, TrackingLevel};
///
/// let tracker = ResourceTracker::new("doc", TrackerConfig::default().with_level(TrackingLevel::Paranoid));
/// let txn = tracker.track(ResourceKind::Transaction, "write batch");
/// txn.touch();
/// let report = tracker.check(Duration::ZERO);
/// assert_eq!(report.held[0].kind, "transaction");
/// assert_eq!(report.held[0].count, 1);
/// drop(txn);
/// assert!(tracker.check(Duration::ZERO).held.is_empty());
/// ```
#[derive(Clone, Copy)]
pub struct ResourceTracker {
    inner: &'static TrackerInner,
}

impl fmt::Debug for ResourceTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceTracker")
            .field("name", &self.inner.name)
            .field("level", &self.level())
            .finish()
    }
}

impl ResourceTracker {
    /// A new tracker named `name` (a report key). It lives for the rest of
    /// the process, like a metrics registry: make a few, not one per
    /// request.
    pub fn new(name: impl Into<String>, config: TrackerConfig) -> ResourceTracker {
        let mut kinds: Vec<&'static str> = BUILTIN.to_vec();
        kinds.reserve(MAX_KINDS - kinds.len());
        let inner: &'static TrackerInner = Box::leak(Box::new(TrackerInner {
            name: name.into(),
            every: AtomicU32::new(config.level.every()),
            max_entries: config.max_entries.max(1),
            max_backtraces: config.max_backtraces,
            kinds: RwLock::new(kinds),
            slots: SlotTable::default(),
            acquired: AtomicU64::new(0),
            backtraces_captured: AtomicU64::new(0),
            entries: Mutex::new(Entries::default()),
            last_check: Mutex::new(BTreeMap::new()),
        }));
        lock(&TRACKERS).push(inner);
        ResourceTracker { inner }
    }

    /// The process-wide tracker (`Sampled(128)` unless changed).
    pub fn global() -> ResourceTracker {
        static GLOBAL: OnceLock<ResourceTracker> = OnceLock::new();
        *GLOBAL.get_or_init(|| ResourceTracker::new("global", TrackerConfig::default()))
    }

    /// Every tracker made so far.
    pub fn all() -> Vec<ResourceTracker> {
        lock(&TRACKERS)
            .iter()
            .map(|&inner| ResourceTracker { inner })
            .collect()
    }

    /// The tracker's name (`'static`: a tracker lives for the rest of the
    /// process).
    pub fn name(&self) -> &'static str {
        &self.inner.name
    }

    /// The current level.
    pub fn level(&self) -> TrackingLevel {
        TrackingLevel::from_every(self.inner.every.load(Ordering::Relaxed))
    }

    /// Changes the level; guards already out keep what they recorded.
    pub fn set_level(&self, level: TrackingLevel) {
        self.inner.every.store(level.every(), Ordering::Relaxed);
    }

    /// A guard for one `kind` of resource; dropping it releases it. The
    /// caller's location is the acquisition site.
    #[track_caller]
    #[inline]
    pub fn track(&self, kind: ResourceKind, label: &'static str) -> Tracked {
        let every = self.inner.every.load(Ordering::Relaxed);
        if every == 0 {
            return Tracked::inert();
        }
        let kind = self.inner.kind_id(kind);
        let (counted, sampled) = slots::acquire(&self.inner.slots, usize::from(kind), every);
        let entry = if sampled {
            self.inner.record(kind, label, Location::caller(), every)
        } else {
            None
        };
        Tracked {
            tracker: Some((self.inner, counted)),
            kind,
            entry,
        }
    }

    /// Live guards of `kind` now.
    pub fn live(&self, kind: ResourceKind) -> i64 {
        let kinds = self.inner.kinds.read().unwrap_or_else(|e| e.into_inner());
        match kinds.iter().position(|k| *k == kind.name()) {
            Some(id) => self.inner.live_of(id),
            None => 0,
        }
    }

    /// Live guards per kind name (kinds never seen are left out).
    pub fn live_counts(&self) -> BTreeMap<&'static str, i64> {
        let kinds = self.inner.kinds.read().unwrap_or_else(|e| e.into_inner());
        kinds
            .iter()
            .enumerate()
            .map(|(id, name)| (*name, self.inner.live_of(id)))
            .filter(|(_, n)| *n != 0)
            .collect()
    }

    /// Recorded guards held longer than `threshold`, grouped by kind and
    /// acquisition site, plus live counts per kind and their growth since
    /// the last `check`.
    pub fn check(&self, threshold: Duration) -> LeakReport {
        let inner = self.inner;
        let now = Instant::now();
        let kinds = inner
            .kinds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut groups: BTreeMap<(u16, String), HeldGroup> = BTreeMap::new();
        let (evicted, backtraces_dropped, recorded) = {
            let entries = lock(&inner.entries);
            for entry in entries.slots.iter().filter_map(|s| s.entry.as_ref()) {
                let age = now.saturating_duration_since(entry.acquired);
                if age < threshold {
                    continue;
                }
                let site = entry.site.to_string();
                let group = groups
                    .entry((entry.kind, site.clone()))
                    .or_insert_with(|| HeldGroup {
                        kind: kinds[usize::from(entry.kind)].to_string(),
                        site,
                        labels: Vec::new(),
                        count: 0,
                        oldest_age_secs: 0.0,
                        backtrace: None,
                        last_touches: Vec::new(),
                    });
                group.count += 1;
                if group.labels.len() < 4 && !group.labels.iter().any(|l| l == entry.label) {
                    group.labels.push(entry.label.to_string());
                }
                let age_secs = age.as_secs_f64();
                if age_secs >= group.oldest_age_secs {
                    group.oldest_age_secs = age_secs;
                    group.last_touches = entry
                        .touches
                        .iter()
                        .map(|t| {
                            format!(
                                "{} ({:.3} s ago)",
                                t.site,
                                now.saturating_duration_since(t.at).as_secs_f64()
                            )
                        })
                        .collect();
                    if let Some(bt) = &entry.backtrace {
                        group.backtrace = Some(Arc::clone(bt));
                    }
                }
            }
            (entries.evicted, entries.backtraces_dropped, entries.live)
        };
        let mut held: Vec<HeldGroup> = groups.into_values().collect();
        held.sort_by(|a, b| b.oldest_age_secs.total_cmp(&a.oldest_age_secs));
        let counts = self.live_counts();
        let mut last = lock(&inner.last_check);
        let live = kinds
            .iter()
            .filter_map(|name| {
                let now_live = counts.get(name).copied().unwrap_or(0);
                let before = last.get(name).copied().unwrap_or(0);
                (now_live != 0 || before != 0).then(|| KindCount {
                    kind: name.to_string(),
                    live: now_live,
                    growth: now_live - before,
                })
            })
            .collect();
        *last = counts;
        LeakReport {
            tracker: inner.name.clone(),
            level: self.level(),
            threshold_secs: threshold.as_secs_f64(),
            held,
            live,
            acquired_total: inner.acquired.load(Ordering::Relaxed),
            backtraces_captured: inner.backtraces_captured.load(Ordering::Relaxed),
            recorded,
            evicted,
            backtraces_dropped,
        }
    }
}

impl TrackerInner {
    #[inline]
    fn kind_id(&self, kind: ResourceKind) -> u16 {
        match kind.builtin_id() {
            Some(id) => id,
            None => self.custom_id(kind.name()),
        }
    }

    #[cold]
    fn custom_id(&self, name: &'static str) -> u16 {
        {
            let kinds = self.kinds.read().unwrap_or_else(|e| e.into_inner());
            if let Some(id) = kinds.iter().position(|k| *k == name) {
                return id as u16;
            }
        }
        let mut kinds = self.kinds.write().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = kinds.iter().position(|k| *k == name) {
            return id as u16;
        }
        if kinds.len() < MAX_KINDS - 1 {
            kinds.push(name);
            return (kinds.len() - 1) as u16;
        }
        // Full: share the last id, named "other".
        if kinds.len() == MAX_KINDS - 1 {
            kinds.push("other");
        }
        (MAX_KINDS - 1) as u16
    }

    fn live_of(&self, kind: usize) -> i64 {
        self.slots.live(kind)
    }

    /// Records a sampled acquisition; `None` if recording is impossible.
    #[cold]
    fn record(
        &self,
        kind: u16,
        label: &'static str,
        site: &'static Location<'static>,
        every: u32,
    ) -> Option<(u32, u32)> {
        self.acquired.fetch_add(1, Ordering::Relaxed);
        let key = site;
        // Sampled mode reuses the site's recent backtrace: one capture per
        // BACKTRACE_REUSE recordings keeps the amortized cost of sampling
        // in nanoseconds. Paranoid mode captures every time.
        let mut e = lock(&self.entries);
        let reused = if every > 1 && self.max_backtraces > 0 {
            match e.site_backtraces.get_mut(&key) {
                Some((bt, uses)) if *uses < BACKTRACE_REUSE => {
                    *uses += 1;
                    Some(Arc::clone(bt))
                }
                _ => None,
            }
        } else {
            None
        };
        let captured = reused.is_none() && self.max_backtraces > 0;
        let backtrace = if captured {
            // Captured outside the lock: it costs microseconds.
            drop(e);
            self.backtraces_captured.fetch_add(1, Ordering::Relaxed);
            let bt = Arc::new(Backtrace::force_capture());
            e = lock(&self.entries);
            if every > 1 {
                if e.site_backtraces.len() >= MAX_SITE_BACKTRACES {
                    e.site_backtraces.clear();
                }
                e.site_backtraces.insert(key, (Arc::clone(&bt), 1));
            }
            Some(bt)
        } else {
            reused
        };
        while e.live >= self.max_entries {
            let Some((slot, generation)) = e.order.pop_front() else {
                break;
            };
            if e.remove(slot, generation) {
                e.evicted += 1;
            }
        }
        let mut backtrace = backtrace;
        if backtrace.is_some() && e.backtraces >= self.max_backtraces && !e.drop_oldest_backtrace()
        {
            backtrace = None;
        }
        if backtrace.is_some() {
            e.backtraces += 1;
        }
        let entry = Entry {
            kind,
            label,
            site,
            acquired: Instant::now(),
            backtrace,
            touches: VecDeque::new(),
        };
        let slot = match e.free.pop() {
            Some(slot) => slot,
            None => {
                e.slots.push(Slot {
                    generation: 0,
                    entry: None,
                });
                (e.slots.len() - 1) as u32
            }
        };
        let generation = e.slots[slot as usize].generation;
        e.slots[slot as usize].entry = Some(entry);
        e.live += 1;
        e.order.push_back((slot, generation));
        Some((slot, generation))
    }

    #[inline]
    fn release(&self, kind: u16, counted: Counted, entry: Option<(u32, u32)>) {
        slots::release(counted, usize::from(kind));
        if let Some((slot, generation)) = entry {
            self.forget(slot, generation);
        }
    }

    #[cold]
    fn forget(&self, slot: u32, generation: u32) {
        lock(&self.entries).remove(slot, generation);
    }

    fn touch(&self, (slot, generation): (u32, u32), site: &'static Location<'static>) {
        let mut e = lock(&self.entries);
        if let Some(Slot {
            generation: g,
            entry: Some(entry),
        }) = e.slots.get_mut(slot as usize)
            && *g == generation
        {
            if entry.touches.len() == MAX_TOUCHES {
                entry.touches.pop_front();
            }
            entry.touches.push_back(Touch {
                at: Instant::now(),
                site,
            });
        }
    }
}

impl Entries {
    /// Removes the entry at `slot` if it still has `generation`
    /// (invariant 2).
    fn remove(&mut self, slot: u32, generation: u32) -> bool {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return false;
        };
        if s.generation != generation {
            return false;
        }
        let Some(entry) = s.entry.take() else {
            return false;
        };
        s.generation = s.generation.wrapping_add(1);
        self.live -= 1;
        if entry.backtrace.is_some() {
            self.backtraces -= 1;
        }
        self.free.push(slot);
        // Keep the order queue from growing without bound with stale ids.
        if self.order.len() > 2 * self.live + 64 {
            let slots = &self.slots;
            self.order.retain(|&(s, g)| {
                slots[s as usize].generation == g && slots[s as usize].entry.is_some()
            });
        }
        true
    }

    fn drop_oldest_backtrace(&mut self) -> bool {
        for &(slot, generation) in &self.order {
            let s = &mut self.slots[slot as usize];
            if s.generation == generation
                && let Some(entry) = s.entry.as_mut()
                && entry.backtrace.take().is_some()
            {
                self.backtraces -= 1;
                self.backtraces_dropped += 1;
                return true;
            }
        }
        false
    }
}

/// A tracked resource; dropping it releases it. Inert (costs nothing on
/// drop) when tracking was disabled at acquisition.
pub struct Tracked {
    tracker: Option<(&'static TrackerInner, Counted)>,
    kind: u16,
    entry: Option<(u32, u32)>,
}

impl Tracked {
    /// A guard that tracks nothing.
    pub const fn inert() -> Tracked {
        Tracked {
            tracker: None,
            kind: 0,
            entry: None,
        }
    }

    /// Whether this guard counts anywhere.
    pub fn is_inert(&self) -> bool {
        self.tracker.is_none()
    }

    /// Whether this acquisition was recorded (sampled).
    pub fn is_recorded(&self) -> bool {
        self.entry.is_some()
    }

    /// Records an access point (the caller's location); the last
    /// [`MAX_TOUCHES`] are kept. Free unless this acquisition was recorded.
    #[track_caller]
    #[inline]
    pub fn touch(&self) {
        if let (Some((tracker, _)), Some(entry)) = (self.tracker, self.entry) {
            tracker.touch(entry, Location::caller());
        }
    }
}

impl fmt::Debug for Tracked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracked")
            .field("inert", &self.is_inert())
            .field("recorded", &self.is_recorded())
            .finish()
    }
}

impl Drop for Tracked {
    #[inline]
    fn drop(&mut self) {
        if let Some((tracker, counted)) = self.tracker {
            tracker.release(self.kind, counted, self.entry);
        }
    }
}

/// Guards of one kind from one site held past the threshold.
#[derive(Clone, Debug, Serialize)]
pub struct HeldGroup {
    /// Kind name.
    pub kind: String,
    /// Acquisition site, `file:line:column`.
    pub site: String,
    /// Up to four distinct labels seen.
    pub labels: Vec<String>,
    /// Recorded guards in this group.
    pub count: usize,
    /// Age of the oldest.
    pub oldest_age_secs: f64,
    /// The oldest one's backtrace, when kept.
    #[serde(serialize_with = "serialize_backtrace")]
    pub backtrace: Option<Arc<Backtrace>>,
    /// The oldest one's last access points.
    pub last_touches: Vec<String>,
}

fn serialize_backtrace<S: serde::Serializer>(
    bt: &Option<Arc<Backtrace>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match bt {
        Some(bt) => s.serialize_some(&bt.to_string()),
        None => s.serialize_none(),
    }
}

/// Live guards of one kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KindCount {
    /// Kind name.
    pub kind: String,
    /// Live now.
    pub live: i64,
    /// Change since the previous check.
    pub growth: i64,
}

/// What [`ResourceTracker::check`] found.
#[derive(Clone, Debug, Serialize)]
pub struct LeakReport {
    /// The tracker's name.
    pub tracker: String,
    /// Its level at the check.
    pub level: TrackingLevel,
    /// The age threshold used.
    pub threshold_secs: f64,
    /// Recorded guards past the threshold, oldest first.
    pub held: Vec<HeldGroup>,
    /// Live counts per kind with their growth since the last check.
    pub live: Vec<KindCount>,
    /// Acquisitions recorded since the tracker was made.
    pub acquired_total: u64,
    /// Backtraces captured since the tracker was made (sampled mode reuses
    /// a site's backtrace for [`BACKTRACE_REUSE`] recordings).
    pub backtraces_captured: u64,
    /// Recorded guards alive now.
    pub recorded: usize,
    /// Recorded entries evicted to stay under `max_entries`.
    pub evicted: u64,
    /// Backtraces dropped to stay under `max_backtraces`.
    pub backtraces_dropped: u64,
}

impl LeakReport {
    /// Nothing held past the threshold.
    pub fn is_clean(&self) -> bool {
        self.held.is_empty()
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serializes")
    }
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "tracker {:?} ({:?}): {} group(s) held past {:.1} s",
            self.tracker,
            self.level,
            self.held.len(),
            self.threshold_secs
        )?;
        for g in &self.held {
            writeln!(
                f,
                "  {} x{} from {} (oldest {:.1} s){}",
                g.kind,
                g.count,
                g.site,
                g.oldest_age_secs,
                if g.labels.is_empty() {
                    String::new()
                } else {
                    format!(" labels {:?}", g.labels)
                }
            )?;
            for t in &g.last_touches {
                writeln!(f, "    touched at {t}")?;
            }
        }
        for k in &self.live {
            writeln!(f, "  live {}: {} ({:+})", k.kind, k.live, k.growth)?;
        }
        Ok(())
    }
}
