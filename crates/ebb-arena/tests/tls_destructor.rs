//! Arena calls from a thread-local destructor: every operation works (on
//! a temporary per-thread entry once the arena's own thread-locals are
//! gone) and nothing is lost or miscounted. A panic there would abort the
//! process.

use std::cell::RefCell;
use std::sync::Arc;

use ebb_arena::{BlobArena, CancellationToken, CompactionPolicy, SlabConfig, TypedArena};

/// Uses the arena in its destructor.
struct UsesArenaOnExit {
    blob: Arc<BlobArena>,
    typed: Arc<TypedArena<u64>>,
    kept: Arc<std::sync::Mutex<Vec<ebb_arena::BlobHandle>>>,
}

impl Drop for UsesArenaOnExit {
    fn drop(&mut self) {
        let h = self.blob.insert(b"from a destructor").expect("insert");
        assert_eq!(self.blob.get(h).as_deref(), Some(&b"from a destructor"[..]));
        assert!(self.blob.replace(h, b"replaced on exit").expect("replace"));
        let gone = self.blob.insert(b"removed on exit").expect("insert");
        assert!(self.blob.remove(gone));
        let t = self.typed.insert(7).expect("insert");
        assert_eq!(self.typed.get_copied(t), Some(7));
        assert!(self.typed.remove(t));
        let policy = CompactionPolicy::default().with_min_reclaim_bytes(0);
        self.blob
            .compact(&policy, &CancellationToken::new())
            .expect("compact");
        self.blob.reclaim();
        self.kept.lock().expect("lock").push(h);
    }
}

thread_local! {
    static ON_EXIT: RefCell<Option<UsesArenaOnExit>> = const { RefCell::new(None) };
}

fn run_thread(first_use_before_destructor: bool) {
    let blob =
        Arc::new(BlobArena::new(SlabConfig::default().with_slab_bytes(64 << 10)).expect("config"));
    let typed = Arc::new(TypedArena::<u64>::new(SlabConfig::default()).expect("config"));
    let kept = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (b, t, k) = (Arc::clone(&blob), Arc::clone(&typed), Arc::clone(&kept));
    std::thread::spawn(move || {
        if first_use_before_destructor {
            // The arena's thread-locals are made first, so they are torn
            // down after ours: our destructor finds them alive.
            b.insert(b"early").expect("insert");
        }
        ON_EXIT.with(|slot| {
            *slot.borrow_mut() = Some(UsesArenaOnExit {
                blob: Arc::clone(&b),
                typed: Arc::clone(&t),
                kept: Arc::clone(&k),
            });
        });
        // Registered after ours: torn down before ours runs.
        b.insert(b"late").expect("insert");
        t.insert(1).expect("insert");
    })
    .join()
    .expect("the thread exits cleanly");
    let kept = kept.lock().expect("lock");
    assert_eq!(kept.len(), 1, "the destructor ran");
    assert_eq!(blob.get(kept[0]).as_deref(), Some(&b"replaced on exit"[..]));
    let early = usize::from(first_use_before_destructor);
    assert_eq!(blob.len(), 2 + early, "late, replaced (and early)");
    assert_eq!(typed.len(), 1);
    blob.reclaim();
    let live: u64 = blob.stats().live_bytes;
    let expected = (4 + 4)
        + (4 + 16)
        + if first_use_before_destructor {
            4 + 5
        } else {
            0
        };
    assert_eq!(
        live, expected,
        "live bytes exact after the destructor's work"
    );
}

#[test]
fn arena_calls_from_a_thread_local_destructor_work() {
    run_thread(false);
    run_thread(true);
}
