//! The machine's memory limit: the cgroup's (v2 `memory.max`, v1
//! `memory.limit_in_bytes`) where one is set, else the RAM.

use std::path::PathBuf;

/// 80 % of [`memory_limit`], the default `memory_limit_bytes`.
pub fn default_memory_limit_bytes() -> u64 {
    memory_limit() / 5 * 4
}

/// The tightest limit this process runs under: its cgroup's memory limit if
/// one is set and under the RAM, else the RAM (`MemTotal`); 1 GiB if
/// neither can be read.
pub fn memory_limit() -> u64 {
    let ram = ram_bytes().unwrap_or(1 << 30);
    match cgroup_limit() {
        Some(limit) if limit < ram => limit,
        _ => ram,
    }
}

fn ram_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The memory limit of this process's cgroup, v2 first, then v1's memory
/// controller; `None` where unlimited or unreadable.
pub fn cgroup_limit() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in cgroups.lines() {
        // "hierarchy-id:controllers:path"; v2 is "0::path".
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        let file: Option<PathBuf> = if controllers.is_empty() {
            Some(
                PathBuf::from("/sys/fs/cgroup")
                    .join(path)
                    .join("memory.max"),
            )
        } else if controllers.split(',').any(|c| c == "memory") {
            Some(
                PathBuf::from("/sys/fs/cgroup/memory")
                    .join(path)
                    .join("memory.limit_in_bytes"),
            )
        } else {
            None
        };
        if let Some(limit) = file.and_then(read_limit) {
            return Some(limit);
        }
    }
    None
}

fn read_limit(file: PathBuf) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    // v2 writes "max" for none; v1 a number near i64::MAX.
    let limit: u64 = text.trim().parse().ok()?;
    (limit < 1 << 60).then_some(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_positive_and_at_most_the_ram() {
        let limit = memory_limit();
        assert!(limit > 0);
        if let Some(ram) = ram_bytes() {
            assert!(limit <= ram);
        }
        assert_eq!(default_memory_limit_bytes(), limit / 5 * 4);
    }
}
