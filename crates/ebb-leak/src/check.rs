//! [`LeakCheck`]: "no leaks" as an assertion in tests.
//!
//! `baseline()` records the heap (the [`TrackingAllocator`](crate::TrackingAllocator)'s
//! live bytes when it is installed, else RSS), OS threads with their names,
//! open fds, live tracked resources per kind in every
//! [`ResourceTracker`], and tokio's alive tasks when given a runtime handle.
//! `verify(tolerance)` after the workload compares, retrying for a while
//! first because threads and tasks take time to exit (goleak's
//! `VerifyNone` does the same), and names what grew.
//!
//! Process-wide numbers: run a `LeakCheck` in a process of its own
//! (`ebb_testkit::in_child`), not beside other tests on the harness's
//! threads.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::alloc;
use crate::tracker::ResourceTracker;

/// How much growth a check forgives.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    /// Heap growth forgiven in bytes...
    pub heap_bytes: u64,
    /// ...or in percent of the baseline, whichever is larger.
    pub heap_percent: f64,
    /// Extra OS threads forgiven.
    pub threads: usize,
    /// Extra open fds forgiven.
    pub fds: usize,
    /// Extra live tracked resources forgiven (per kind).
    pub tracked: i64,
    /// Extra tokio tasks forgiven.
    pub tasks: usize,
    /// How long to keep retrying before failing.
    pub settle: Duration,
}

impl Default for Tolerance {
    /// 1 MiB or 5 % of heap, no extra thread, fd, tracked resource or
    /// task, settling for up to 2 s.
    fn default() -> Self {
        Tolerance {
            heap_bytes: 1 << 20,
            heap_percent: 5.0,
            threads: 0,
            fds: 0,
            tracked: 0,
            tasks: 0,
            settle: Duration::from_secs(2),
        }
    }
}

impl Tolerance {
    /// Forgive `bytes` of heap growth.
    pub fn with_heap_bytes(mut self, bytes: u64) -> Self {
        self.heap_bytes = bytes;
        self
    }

    /// Retry for up to `settle` before failing.
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }
}

/// Where the heap figure comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapSource {
    /// The TrackingAllocator's live bytes (exact).
    TrackingAllocator,
    /// Resident set size (coarse: allocators keep freed pages).
    Rss,
}

#[derive(Clone, Debug)]
struct Snapshot {
    heap: u64,
    threads: Vec<String>,
    fds: usize,
    tracked: BTreeMap<(String, &'static str), i64>,
    tasks: Option<usize>,
}

/// A baseline to compare against after a workload.
///
/// ```
/// use ebb_leak::{LeakCheck, Tolerance};
///
/// let check = LeakCheck::baseline();
/// let worker = std::thread::spawn(|| 2 + 2);
/// assert_eq!(worker.join().unwrap(), 4);
/// // (In a test of its own process; here other doctests may run beside.)
/// let _ = check.verify(Tolerance::default().with_heap_bytes(u64::MAX));
/// ```
pub struct LeakCheck {
    source: HeapSource,
    runtime: Option<tokio::runtime::Handle>,
    base: Snapshot,
}

impl fmt::Debug for LeakCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeakCheck")
            .field("source", &self.source)
            .field("heap", &self.base.heap)
            .field("threads", &self.base.threads.len())
            .field("fds", &self.base.fds)
            .finish()
    }
}

impl LeakCheck {
    /// Records the baseline now.
    pub fn baseline() -> LeakCheck {
        LeakCheck::make(None)
    }

    /// Records the baseline, including `runtime`'s alive tasks.
    pub fn with_runtime(runtime: tokio::runtime::Handle) -> LeakCheck {
        LeakCheck::make(Some(runtime))
    }

    fn make(runtime: Option<tokio::runtime::Handle>) -> LeakCheck {
        let source = if alloc::is_installed() {
            HeapSource::TrackingAllocator
        } else {
            HeapSource::Rss
        };
        let base = snapshot(source, runtime.as_ref());
        LeakCheck {
            source,
            runtime,
            base,
        }
    }

    /// Where the heap figure comes from.
    pub fn heap_source(&self) -> HeapSource {
        self.source
    }

    /// Compares with the baseline, retrying until clean or `settle` ends.
    ///
    /// # Errors
    ///
    /// [`LeakFindings`] naming everything still over tolerance at the end.
    pub fn verify(&self, tolerance: Tolerance) -> Result<(), LeakFindings> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            let findings = self.compare(tolerance);
            if findings.items.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= tolerance.settle {
                return Err(findings);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// [`verify`](Self::verify) that panics with the findings: the test
    /// assertion.
    ///
    /// # Panics
    ///
    /// When anything grew past `tolerance`.
    #[track_caller]
    pub fn assert_clean(&self, tolerance: Tolerance) {
        if let Err(findings) = self.verify(tolerance) {
            panic!("{findings}");
        }
    }

    fn compare(&self, tol: Tolerance) -> LeakFindings {
        let now = snapshot(self.source, self.runtime.as_ref());
        let base = &self.base;
        let mut items = Vec::new();
        let allowed = tol
            .heap_bytes
            .max((base.heap as f64 * tol.heap_percent / 100.0) as u64);
        if now.heap > base.heap.saturating_add(allowed) {
            let grew = now.heap - base.heap;
            items.push(Finding::Heap {
                source: self.source,
                before: base.heap,
                after: now.heap,
                percent: 100.0 * grew as f64 / base.heap.max(1) as f64,
                allowed,
            });
        }
        // Saturating throughout: a tolerance is the caller's, and
        // `usize::MAX` ("ignore threads") overflowed.
        if now.threads.len() > base.threads.len().saturating_add(tol.threads) {
            let mut new = now.threads.clone();
            for name in &base.threads {
                if let Some(i) = new.iter().position(|n| n == name) {
                    new.swap_remove(i);
                }
            }
            new.sort();
            items.push(Finding::Threads {
                before: base.threads.len(),
                after: now.threads.len(),
                new_names: new,
            });
        }
        if now.fds > base.fds.saturating_add(tol.fds) {
            items.push(Finding::Fds {
                before: base.fds,
                after: now.fds,
            });
        }
        for ((tracker, kind), &live) in &now.tracked {
            let before = base
                .tracked
                .get(&(tracker.clone(), *kind))
                .copied()
                .unwrap_or(0);
            if live > before.saturating_add(tol.tracked) {
                let sites = ResourceTracker::all()
                    .into_iter()
                    .filter(|t| t.name() == tracker)
                    .flat_map(|t| t.check(Duration::ZERO).held)
                    .filter(|g| g.kind == *kind)
                    .map(|g| format!("{} x{}", g.site, g.count))
                    .collect();
                items.push(Finding::Tracked {
                    tracker: tracker.clone(),
                    kind: kind.to_string(),
                    before,
                    after: live,
                    sites,
                });
            }
        }
        if let (Some(before), Some(after)) = (base.tasks, now.tasks)
            && after > before.saturating_add(tol.tasks)
        {
            items.push(Finding::Tasks { before, after });
        }
        LeakFindings { items }
    }
}

fn snapshot(source: HeapSource, runtime: Option<&tokio::runtime::Handle>) -> Snapshot {
    let heap = match source {
        HeapSource::TrackingAllocator => alloc::stats().current_bytes.max(0) as u64,
        HeapSource::Rss => ebb_core::os::rss_bytes().unwrap_or(0),
    };
    let mut tracked = BTreeMap::new();
    for t in ResourceTracker::all() {
        for (kind, live) in t.live_counts() {
            tracked.insert((t.name().to_string(), kind), live);
        }
    }
    Snapshot {
        heap,
        threads: ebb_core::os::thread_names().unwrap_or_default(),
        fds: ebb_core::os::open_fd_count().unwrap_or(0),
        tracked,
        tasks: runtime.map(|h| h.metrics().num_alive_tasks()),
    }
}

/// One thing that grew past its tolerance.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Finding {
    /// The heap grew.
    Heap {
        /// Where the figure came from.
        source: HeapSource,
        /// Bytes at the baseline.
        before: u64,
        /// Bytes now.
        after: u64,
        /// Growth in percent of the baseline.
        percent: f64,
        /// Growth forgiven.
        allowed: u64,
    },
    /// OS threads remain.
    Threads {
        /// Threads at the baseline.
        before: usize,
        /// Threads now.
        after: usize,
        /// Names of the threads not in the baseline.
        new_names: Vec<String>,
    },
    /// Fds remain open.
    Fds {
        /// Open at the baseline.
        before: usize,
        /// Open now.
        after: usize,
    },
    /// Tracked resources remain live.
    Tracked {
        /// The tracker's name.
        tracker: String,
        /// The kind.
        kind: String,
        /// Live at the baseline.
        before: i64,
        /// Live now.
        after: i64,
        /// Acquisition sites of the recorded ones, with counts.
        sites: Vec<String>,
    },
    /// Tokio tasks remain alive.
    Tasks {
        /// Alive at the baseline.
        before: usize,
        /// Alive now.
        after: usize,
    },
}

/// Everything a [`LeakCheck`] found, printable as the failure message.
#[derive(Clone, Debug, PartialEq)]
pub struct LeakFindings {
    /// What grew.
    pub items: Vec<Finding>,
}

impl std::error::Error for LeakFindings {}

impl fmt::Display for LeakFindings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "leak check failed:")?;
        for item in &self.items {
            match item {
                Finding::Heap {
                    source,
                    before,
                    after,
                    percent,
                    allowed,
                } => writeln!(
                    f,
                    "  heap ({source:?}) {before} -> {after} bytes: +{} (+{percent:.1} %), over the {allowed} forgiven",
                    after.saturating_sub(*before)
                )?,
                Finding::Threads {
                    before,
                    after,
                    new_names,
                } => writeln!(f, "  threads {before} -> {after}: new {new_names:?}")?,
                Finding::Fds { before, after } => {
                    writeln!(f, "  open fds {before} -> {after}")?;
                }
                Finding::Tracked {
                    tracker,
                    kind,
                    before,
                    after,
                    sites,
                } => writeln!(
                    f,
                    "  tracked {kind} in {tracker:?} {before} -> {after} live; acquired at {sites:?}"
                )?,
                Finding::Tasks { before, after } => {
                    writeln!(f, "  tokio tasks {before} -> {after} alive")?;
                }
            }
        }
        Ok(())
    }
}
