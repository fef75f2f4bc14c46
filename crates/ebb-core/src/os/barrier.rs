//! `membarrier(2)`: a full memory barrier on every running thread of the
//! process, for asymmetric synchronization (see `sync::presence`): the
//! frequent side pays a compiler fence, the rare side this call.

use std::sync::OnceLock;

/// Whether this process registered for private expedited membarriers
/// (once; later calls reuse the answer).
fn registered() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        #[cfg(all(target_os = "linux", not(miri)))]
        {
            use rustix::thread::{MembarrierCommand, membarrier, membarrier_query};
            let query = membarrier_query();
            if !query.contains_command(MembarrierCommand::PrivateExpedited) {
                tracing::debug!("membarrier: private expedited not supported");
                return false;
            }
            match membarrier(MembarrierCommand::RegisterPrivateExpedited) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(error = %e, "membarrier registration refused");
                    false
                }
            }
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
        use rustix::thread::{MembarrierCommand, membarrier};
        match membarrier(MembarrierCommand::PrivateExpedited) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "membarrier failed after registration");
                false
            }
        }
    }
    #[cfg(not(all(target_os = "linux", not(miri))))]
    {
        false
    }
}
