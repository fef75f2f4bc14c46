//! `membarrier(2)`: a full memory barrier on every running thread of the
//! process, for asymmetric synchronization (see `sync::presence`): the
//! frequent side pays a compiler fence, the rare side this call.

use std::sync::OnceLock;

// From <linux/membarrier.h>. Called through `libc::syscall`: rustix's
// `thread` feature, which has a wrapper, changes how it reads the auxiliary
// vector and crashes every binary under valgrind.
#[cfg(all(target_os = "linux", not(miri)))]
const CMD_QUERY: libc::c_long = 0;
#[cfg(all(target_os = "linux", not(miri)))]
const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
#[cfg(all(target_os = "linux", not(miri)))]
const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

/// `membarrier(cmd, 0, 0)`: the kernel's answer (a bit mask for the query,
/// 0 for success, -1 with `errno` for a refusal).
#[cfg(all(target_os = "linux", not(miri)))]
fn membarrier(cmd: libc::c_long) -> libc::c_long {
    // SAFETY: `membarrier` takes two integers and a CPU id, reads and
    // writes no memory of ours; any `cmd` is safe to pass (unknown ones
    // fail with EINVAL).
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            cmd,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    }
}

/// Whether this process registered for private expedited membarriers
/// (once; later calls reuse the answer).
fn registered() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        #[cfg(all(target_os = "linux", not(miri)))]
        {
            let supported = membarrier(CMD_QUERY);
            if supported < 0 || supported & CMD_PRIVATE_EXPEDITED == 0 {
                tracing::debug!("membarrier: private expedited not supported");
                return false;
            }
            if membarrier(CMD_REGISTER_PRIVATE_EXPEDITED) != 0 {
                tracing::debug!(
                    error = %std::io::Error::last_os_error(),
                    "membarrier registration refused"
                );
                return false;
            }
            true
        }
        #[cfg(not(all(target_os = "linux", not(miri))))]
        {
            false
        }
    })
}

/// True if [`process_barrier`] can work here. Cheap after the first call.
pub fn process_barrier_available() -> bool {
    registered()
}

/// Runs a full memory barrier on every thread of this process that is
/// running now (threads not running pass one at their next switch in).
/// Returns false, having done nothing, where the kernel offers no private
/// expedited membarrier; callers then must not rely on it.
pub fn process_barrier() -> bool {
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        if !registered() {
            return false;
        }
        if membarrier(CMD_PRIVATE_EXPEDITED) != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "membarrier failed after registration"
            );
            return false;
        }
        true
    }
    #[cfg(not(all(target_os = "linux", not(miri))))]
    {
        false
    }
}
