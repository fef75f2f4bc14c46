//! Views of the process read from /proc and /sys: RSS, a memory breakdown,
//! threads, file descriptors, the cgroup v2 memory controller and PSI.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

fn read_small(path: &str, buf: &mut [u8]) -> Result<usize> {
    let mut f = File::open(path).map_err(|e| Error::os("open", e))?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::os("read", e)),
        }
    }
    Ok(n)
}

fn parse_err(path: impl AsRef<Path>, what: impl Into<String>) -> Error {
    Error::Parse {
        path: path.as_ref().display().to_string(),
        what: what.into(),
    }
}

/// Resident set size of this process in bytes, from `/proc/self/statm`.
///
/// Cheap (one open, one read into a stack buffer, no allocation on the
/// success path): fit for a 500 ms control loop and for tests.
///
/// # Errors
///
/// [`Error::Os`] if the file cannot be read, [`Error::Parse`] if it is
/// malformed.
pub fn rss_bytes() -> Result<u64> {
    const PATH: &str = "/proc/self/statm";
    let mut buf = [0u8; 128];
    let n = read_small(PATH, &mut buf)?;
    // Fields: size resident shared text lib data dt (in pages).
    let resident = buf[..n]
        .split(|b| *b == b' ')
        .nth(1)
        .and_then(|f| std::str::from_utf8(f).ok())
        .and_then(|f| f.trim().parse::<u64>().ok())
        .ok_or_else(|| parse_err(PATH, "no resident field"))?;
    Ok(resident * super::page_size() as u64)
}

/// The exact composition of the resident set, from `/proc/self/smaps_rollup`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryBreakdown {
    /// `Rss`: all resident bytes.
    pub rss_bytes: u64,
    /// `Anonymous`: resident bytes not backed by a file (heaps, slabs).
    pub anonymous_bytes: u64,
    /// `AnonHugePages`: anonymous bytes backed by transparent huge pages.
    pub anon_huge_bytes: u64,
    /// `LazyFree`: bytes released with `MADV_FREE` the kernel has not taken yet.
    pub lazy_free_bytes: u64,
    /// `Swap`: bytes swapped out.
    pub swap_bytes: u64,
}

/// Reads `/proc/self/smaps_rollup`. Slow (the kernel walks every mapping):
/// for reports and debug endpoints, not for control loops.
///
/// # Errors
///
/// [`Error::Os`] if the file cannot be read, [`Error::Parse`] if the `Rss`
/// line is missing.
pub fn memory_breakdown() -> Result<MemoryBreakdown> {
    const PATH: &str = "/proc/self/smaps_rollup";
    let text = std::fs::read_to_string(PATH).map_err(|e| Error::os("read smaps_rollup", e))?;
    let mut out = MemoryBreakdown::default();
    let mut saw_rss = false;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(kb) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        let bytes = kb * 1024;
        match key {
            "Rss" => {
                out.rss_bytes = bytes;
                saw_rss = true;
            }
            "Anonymous" => out.anonymous_bytes = bytes,
            "AnonHugePages" => out.anon_huge_bytes = bytes,
            "LazyFree" => out.lazy_free_bytes = bytes,
            "Swap" => out.swap_bytes = bytes,
            _ => {}
        }
    }
    if !saw_rss {
        return Err(parse_err(PATH, "no Rss line"));
    }
    Ok(out)
}

fn count_dir(path: &str) -> Result<usize> {
    let dir = std::fs::read_dir(path).map_err(|e| Error::os("read_dir", e))?;
    Ok(dir.filter(|e| e.is_ok()).count())
}

/// Number of OS threads of this process (entries of `/proc/self/task`).
///
/// # Errors
///
/// [`Error::Os`] if the directory cannot be read.
pub fn thread_count() -> Result<usize> {
    count_dir("/proc/self/task")
}

/// Names (`comm`) of this process's OS threads, for messages that say which
/// thread was left running.
///
/// # Errors
///
/// [`Error::Os`] if `/proc/self/task` cannot be read.
pub fn thread_names() -> Result<Vec<String>> {
    let dir = std::fs::read_dir("/proc/self/task").map_err(|e| Error::os("read_dir", e))?;
    let mut names = Vec::new();
    for entry in dir.flatten() {
        let comm = entry.path().join("comm");
        if let Ok(name) = std::fs::read_to_string(comm) {
            names.push(name.trim_end().to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Number of open file descriptors of this process (entries of
/// `/proc/self/fd`, not counting the one used to list them).
///
/// # Errors
///
/// [`Error::Os`] if the directory cannot be read.
pub fn open_fd_count() -> Result<usize> {
    // `read_dir` holds one descriptor of its own while listing.
    count_dir("/proc/self/fd").map(|n| n.saturating_sub(1))
}

/// Counters of `memory.events` of a cgroup v2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryEvents {
    /// Times usage went under `memory.low` protection and was reclaimed anyway.
    pub low: u64,
    /// Times usage went over `memory.high` and was throttled.
    pub high: u64,
    /// Times usage hit `memory.max`.
    pub max: u64,
    /// Times the OOM killer was invoked.
    pub oom: u64,
    /// Processes killed by the OOM killer.
    pub oom_kill: u64,
}

/// The memory controller of this process's cgroup v2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMemory {
    /// The cgroup directory read.
    pub path: PathBuf,
    /// `memory.max`; `None` when it is `max` (no limit).
    pub max_bytes: Option<u64>,
    /// `memory.high`; `None` when it is `max` or absent.
    pub high_bytes: Option<u64>,
    /// `memory.current`.
    pub current_bytes: u64,
    /// `memory.events`.
    pub events: MemoryEvents,
}

fn cgroup_dir() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    // cgroup v2 has the single line `0::/path`.
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'));
    if dir.join("memory.current").exists() {
        return Some(dir);
    }
    // Inside a cgroup namespace the path may read as `/`: the mount root is
    // then our own cgroup.
    let root = PathBuf::from("/sys/fs/cgroup");
    root.join("memory.current").exists().then_some(root)
}

fn read_limit(path: &Path) -> Option<Option<u64>> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    if text == "max" {
        Some(None)
    } else {
        text.parse().ok().map(Some)
    }
}

/// The cgroup v2 memory controller of this process, or `None` when there is
/// none (cgroup v1, no memory controller, or no /sys).
pub fn cgroup_memory() -> Option<CgroupMemory> {
    let dir = cgroup_dir()?;
    let current_bytes = std::fs::read_to_string(dir.join("memory.current"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let max_bytes = read_limit(&dir.join("memory.max")).flatten();
    let high_bytes = read_limit(&dir.join("memory.high")).flatten();
    let mut events = MemoryEvents::default();
    if let Ok(text) = std::fs::read_to_string(dir.join("memory.events")) {
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(k), Some(v)) = (it.next(), it.next().and_then(|v| v.parse().ok())) else {
                continue;
            };
            match k {
                "low" => events.low = v,
                "high" => events.high = v,
                "max" => events.max = v,
                "oom" => events.oom = v,
                "oom_kill" => events.oom_kill = v,
                _ => {}
            }
        }
    }
    Some(CgroupMemory {
        path: dir,
        max_bytes,
        high_bytes,
        current_bytes,
        events,
    })
}

/// One line of a PSI file: the share of wall time (percent) that some or all
/// tasks were stalled on memory, averaged over 10 s and 60 s.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PressureAverages {
    /// `avg10`, percent.
    pub avg10: f64,
    /// `avg60`, percent.
    pub avg60: f64,
    /// `total`, microseconds stalled since boot.
    pub total_us: u64,
}

/// Memory pressure stall information (`/proc/pressure/memory`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MemoryPressure {
    /// At least one task stalled on memory.
    pub some: PressureAverages,
    /// All non-idle tasks stalled on memory at once.
    pub full: PressureAverages,
}

fn parse_pressure_line(line: &str) -> PressureAverages {
    let mut out = PressureAverages::default();
    for field in line.split_whitespace().skip(1) {
        match field.split_once('=') {
            Some(("avg10", v)) => out.avg10 = v.parse().unwrap_or(0.0),
            Some(("avg60", v)) => out.avg60 = v.parse().unwrap_or(0.0),
            Some(("total", v)) => out.total_us = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    out
}

/// Parses the text of a PSI memory file; `None` if it has no `some` line.
pub(crate) fn parse_pressure(text: &str) -> Option<MemoryPressure> {
    let mut out = MemoryPressure::default();
    let mut saw_some = false;
    for line in text.lines() {
        if line.starts_with("some ") {
            out.some = parse_pressure_line(line);
            saw_some = true;
        } else if line.starts_with("full ") {
            out.full = parse_pressure_line(line);
        }
    }
    saw_some.then_some(out)
}

/// Memory PSI of the process's cgroup if it has one, else of the system;
/// `None` when the kernel has no PSI.
pub fn memory_pressure() -> Option<MemoryPressure> {
    let from_cgroup =
        cgroup_dir().and_then(|d| std::fs::read_to_string(d.join("memory.pressure")).ok());
    let text = from_cgroup.or_else(|| std::fs::read_to_string("/proc/pressure/memory").ok())?;
    parse_pressure(&text)
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn rss_is_positive_and_grows_with_touched_memory() {
        let before = rss_bytes().unwrap();
        assert!(before > 0);
        let mut v = vec![0u8; 64 << 20];
        for i in (0..v.len()).step_by(4096) {
            v[i] = 1;
        }
        std::hint::black_box(&v);
        let after = rss_bytes().unwrap();
        // Other test threads may free memory meanwhile; 64 MiB dwarfs that.
        assert!(after > before + (32 << 20), "{before} -> {after}");
    }

    #[test]
    fn breakdown_agrees_with_statm_roughly() {
        let b = memory_breakdown().unwrap();
        let statm = rss_bytes().unwrap();
        assert!(b.rss_bytes > 0 && b.anonymous_bytes <= b.rss_bytes);
        let diff = b.rss_bytes.abs_diff(statm);
        assert!(
            diff < statm / 2 + (16 << 20),
            "smaps {} statm {statm}",
            b.rss_bytes
        );
    }

    #[test]
    fn threads_and_fds_are_counted() {
        let threads = thread_count().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::spawn(move || rx.recv().ok());
        assert!(
            thread_count().unwrap() >= 2,
            "main + spawned thread, had {threads} before"
        );
        assert!(!thread_names().unwrap().is_empty());
        drop(tx);
        h.join().unwrap();

        let files: Vec<File> = (0..4)
            .map(|_| File::open("/proc/self/statm").unwrap())
            .collect();
        // stdin/stdout/stderr (or whatever the harness left) plus our four.
        assert!(open_fd_count().unwrap() >= 4, "{:?}", open_fd_count());
        drop(files);
    }

    #[test]
    fn pressure_text_parses() {
        let text = "some avg10=1.50 avg60=0.25 avg300=0.00 total=1234\n\
                    full avg10=0.50 avg60=0.10 avg300=0.00 total=99\n";
        let p = parse_pressure(text).unwrap();
        assert_eq!(p.some.avg10, 1.5);
        assert_eq!(p.some.avg60, 0.25);
        assert_eq!(p.some.total_us, 1234);
        assert_eq!(p.full.avg10, 0.5);
        assert!(parse_pressure("garbage").is_none());
    }

    #[test]
    fn cgroup_and_psi_are_optional_but_consistent() {
        if let Some(cg) = cgroup_memory() {
            assert!(cg.current_bytes > 0);
            if let Some(max) = cg.max_bytes {
                assert!(max > 0);
            }
        }
        if let Some(p) = memory_pressure() {
            assert!(p.some.avg10 >= 0.0 && p.some.avg10 <= 100.0);
        }
    }
}
