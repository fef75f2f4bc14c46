//! [`TrackedArc`]: an `Arc` whose live allocations are counted per type in
//! a [`ResourceTracker`], so a type whose count only grows (the usual sign
//! of a reference cycle) is named in reports and by the monitor.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Weak};

use crate::tracker::{ResourceKind, ResourceTracker, Tracked};

struct Counted<T> {
    value: T,
    _tracked: Tracked,
}

/// An `Arc<T>` counted under the kind `std::any::type_name::<T>()`: one per
/// allocation (not per clone), released when the last clone drops.
///
/// Covariant in `T`, as `Arc<T>` is, and soundly so: it hands out only
/// `&T` (no `get_mut`, no interior mutability of its own), so reading a
/// `TrackedArc<&'static str>` as a `TrackedArc<&'a str>` can never store a
/// shorter-lived value where a longer-lived one is expected. A `T` with
/// interior mutability (`Cell<&'a str>`) brings its own invariance.
///
/// ```
/// use ebb_leak::{ResourceKind, ResourceTracker, TrackedArc, TrackerConfig};
///
/// let tracker = ResourceTracker::new("arc-doc", TrackerConfig::default());
/// let a = TrackedArc::new(5u32, &tracker);
/// let b = a.clone();
/// assert_eq!(tracker.live(ResourceKind::Custom(std::any::type_name::<u32>())), 1);
/// drop((a, b));
/// assert_eq!(tracker.live(ResourceKind::Custom("u32")), 0);
/// ```
pub struct TrackedArc<T> {
    inner: Arc<Counted<T>>,
}

impl<T> TrackedArc<T> {
    /// A new allocation of `value`, counted in `tracker`; the caller is
    /// the acquisition site.
    #[track_caller]
    pub fn new(value: T, tracker: &ResourceTracker) -> TrackedArc<T> {
        let tracked = tracker.track(
            ResourceKind::Custom(std::any::type_name::<T>()),
            "TrackedArc",
        );
        TrackedArc {
            inner: Arc::new(Counted {
                value,
                _tracked: tracked,
            }),
        }
    }

    /// A weak reference (to break cycles).
    pub fn downgrade(this: &TrackedArc<T>) -> TrackedWeak<T> {
        TrackedWeak {
            inner: Arc::downgrade(&this.inner),
        }
    }

    /// Strong references to this allocation.
    pub fn strong_count(this: &TrackedArc<T>) -> usize {
        Arc::strong_count(&this.inner)
    }

    /// Whether two handles share one allocation.
    pub fn ptr_eq(a: &TrackedArc<T>, b: &TrackedArc<T>) -> bool {
        Arc::ptr_eq(&a.inner, &b.inner)
    }
}

impl<T> Clone for TrackedArc<T> {
    fn clone(&self) -> Self {
        TrackedArc {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> Deref for TrackedArc<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner.value
    }
}

impl<T: fmt::Debug> fmt::Debug for TrackedArc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner.value, f)
    }
}

/// The weak twin of [`TrackedArc`].
pub struct TrackedWeak<T> {
    inner: Weak<Counted<T>>,
}

impl<T> TrackedWeak<T> {
    /// The allocation, if it is still alive.
    pub fn upgrade(&self) -> Option<TrackedArc<T>> {
        self.inner.upgrade().map(|inner| TrackedArc { inner })
    }
}

impl<T> Clone for TrackedWeak<T> {
    fn clone(&self) -> Self {
        TrackedWeak {
            inner: Weak::clone(&self.inner),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::TrackerConfig;

    /// Compiles only while both handles are covariant (sound: read-only).
    #[test]
    fn tracked_arc_and_weak_are_covariant_like_arc() {
        fn shorten<'a>(a: TrackedArc<&'static str>) -> TrackedArc<&'a str> {
            a
        }
        fn shorten_weak<'a>(w: TrackedWeak<&'static str>) -> TrackedWeak<&'a str> {
            w
        }
        let tracker = ResourceTracker::new("arc-variance", TrackerConfig::default());
        let a = TrackedArc::new("static", &tracker);
        let w = shorten_weak(TrackedArc::downgrade(&a));
        let short = shorten(a);
        assert_eq!(*short, "static");
        assert!(w.upgrade().is_some());
    }
}
