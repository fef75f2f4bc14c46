//! Memory cgroups for tests of a real memory limit.
//!
//! A test that needs one makes it with [`MemoryCgroup::create`] in the
//! parent (cgroup v2 where the memory controller is enabled and writable,
//! the v1 memory controller otherwise), runs its workload in a child that
//! joins it first ([`MemoryCgroup::join`] with the path the parent passed
//! down), and reads the peak afterwards. Where no cgroup can be made (not
//! root, no controller), `create` says why, and the test prints that and
//! skips.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The environment variable through which a parent hands its child the
/// cgroup directory to join.
pub const CGROUP_ENV: &str = "EBB_TEST_CGROUP";

/// Which cgroup hierarchy a [`MemoryCgroup`] lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    /// The unified hierarchy (`memory.max`, `memory.peak`).
    V2,
    /// The v1 memory controller (`memory.limit_in_bytes`,
    /// `memory.max_usage_in_bytes`).
    V1,
}

/// A memory cgroup made for one test, removed when dropped (after the
/// processes in it have exited).
#[derive(Debug)]
pub struct MemoryCgroup {
    path: PathBuf,
    version: CgroupVersion,
}

const V2_ROOTS: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];
const V1_ROOT: &str = "/sys/fs/cgroup/memory";

impl MemoryCgroup {
    /// Makes a cgroup named `name` (made unique with this process's id)
    /// with a hard memory limit of `limit_bytes` and no swap.
    ///
    /// # Errors
    ///
    /// A sentence saying why no cgroup could be made, for the test to
    /// print as its reason to skip.
    pub fn create(name: &str, limit_bytes: u64) -> Result<MemoryCgroup, String> {
        let leaf = format!("ebb-test-{name}-{}", std::process::id());
        let mut why = Vec::new();
        for root in V2_ROOTS {
            let controllers = fs::read_to_string(Path::new(root).join("cgroup.controllers"));
            match controllers {
                Ok(c) if c.split_whitespace().any(|w| w == "memory") => {
                    match Self::make(Path::new(root), &leaf, CgroupVersion::V2, limit_bytes) {
                        Ok(cg) => return Ok(cg),
                        Err(e) => why.push(format!("{root}: {e}")),
                    }
                }
                Ok(_) => why.push(format!("{root}: no memory controller in cgroup v2")),
                Err(e) => why.push(format!("{root}: {e}")),
            }
        }
        match Self::make(Path::new(V1_ROOT), &leaf, CgroupVersion::V1, limit_bytes) {
            Ok(cg) => Ok(cg),
            Err(e) => {
                why.push(format!("{V1_ROOT}: {e}"));
                Err(format!(
                    "no memory cgroup could be made ({})",
                    why.join("; ")
                ))
            }
        }
    }

    fn make(
        root: &Path,
        leaf: &str,
        version: CgroupVersion,
        limit_bytes: u64,
    ) -> io::Result<MemoryCgroup> {
        let path = root.join(leaf);
        fs::create_dir(&path)?;
        let cg = MemoryCgroup { path, version };
        match version {
            CgroupVersion::V2 => {
                cg.write("memory.max", &limit_bytes.to_string())?;
                // Absent where the kernel has no swap accounting: fine.
                let _ = cg.write("memory.swap.max", "0");
            }
            CgroupVersion::V1 => {
                cg.write("memory.limit_in_bytes", &limit_bytes.to_string())?;
                let _ = cg.write("memory.swappiness", "0");
            }
        }
        Ok(cg)
    }

    fn write(&self, file: &str, value: &str) -> io::Result<()> {
        fs::write(self.path.join(file), value)
    }

    /// The cgroup's directory (hand it to the child in [`CGROUP_ENV`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hierarchy it lives in.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The highest memory use the kernel saw in the cgroup, in bytes.
    pub fn peak_bytes(&self) -> Option<u64> {
        let file = match self.version {
            CgroupVersion::V2 => "memory.peak",
            CgroupVersion::V1 => "memory.max_usage_in_bytes",
        };
        fs::read_to_string(self.path.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// True if the kernel OOM-killed a process in the cgroup.
    pub fn oom_killed(&self) -> bool {
        let (file, key) = match self.version {
            CgroupVersion::V2 => ("memory.events", "oom_kill"),
            CgroupVersion::V1 => ("memory.oom_control", "oom_kill"),
        };
        fs::read_to_string(self.path.join(file))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
            })
            .is_some_and(|n| n > 0)
    }

    /// Moves the calling process into the cgroup at `path` (in the child,
    /// with the path its parent passed in [`CGROUP_ENV`]).
    ///
    /// # Errors
    ///
    /// If the kernel refuses the move.
    pub fn join(path: &Path) -> io::Result<()> {
        fs::write(path.join("cgroup.procs"), std::process::id().to_string())
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Fails while a process is still inside; the test's child has
        // exited by now. Retry briefly: the kernel frees it asynchronously.
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
