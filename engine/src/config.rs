//! [`EngineConfig`]: the engine's keys, their defaults, and where they come
//! from (a TOML file, then `EBB_*` env vars, then flags, each overriding the
//! one before).
//!
//! The key names are a contract: the README, the runbook and the alerting
//! rules quote them. An unknown key or a bad value is an
//! [`Error::Config`] naming the key, the value and what is allowed.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::limits;

/// Every key the engine reads, in the order the docs list them.
pub const KEYS: &[&str] = &[
    "memory_limit_bytes",
    "soft_limit_ratio",
    "shutdown_deadline_secs",
    "compaction_interval_secs",
    "compact_when_due",
    "arena_max_live_ratio",
    "arena_max_waste_ratio",
    "index_max_deleted_ratio",
    "pressure_interval_ms",
    "leak_level",
    "leak_threshold_secs",
    "leak_check_interval_secs",
    "max_value_bytes",
    "metrics_dataset_labels",
    "data_dir",
];

/// How much resource tracking the engine does (ebb-leak's levels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeakLevel {
    /// No tracking.
    Disabled,
    /// Counts per kind, a backtrace for one acquisition in 128 (the cost is
    /// in bench/RESULTS.md).
    Sampled,
    /// A backtrace for every acquisition (debugging).
    Paranoid,
}

impl LeakLevel {
    /// The value as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            LeakLevel::Disabled => "disabled",
            LeakLevel::Sampled => "sampled",
            LeakLevel::Paranoid => "paranoid",
        }
    }
}

/// The engine's configuration. Build one with [`EngineConfig::default`]
/// (every documented default), [`EngineConfig::load`] (file, env, flags),
/// or [`set`](Self::set) key by key.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// `memory_limit_bytes`: the one budget every dataset reserves from.
    /// Default: 80 % of the cgroup's limit (v2 `memory.max`, v1
    /// `memory.limit_in_bytes`), else of RAM.
    pub memory_limit_bytes: u64,
    /// `soft_limit_ratio` (0.85): the fraction of the limit where the
    /// pressure controller starts tightening.
    pub soft_limit_ratio: f64,
    /// `shutdown_deadline_secs` (30): `close()` returns within this.
    pub shutdown_deadline_secs: u64,
    /// `compaction_interval_secs` (5): how often the compaction worker
    /// checks every arena, index and pool.
    pub compaction_interval_secs: u64,
    /// `compact_when_due` (true): the pressure controller also wakes the
    /// compaction and rebuild workers whenever it finds maintenance due
    /// (every `pressure_interval_ms`), so garbage never waits for the
    /// interval under heavy churn. False: only the interval and pressure
    /// wake them (for measurements that must not be raced).
    pub compact_when_due: bool,
    /// `arena_max_live_ratio` (0.5): a sealed slab whose live share is
    /// under this is compacted.
    pub arena_max_live_ratio: f64,
    /// `arena_max_waste_ratio` (0.1): when more than this share of an
    /// arena's sealed slabs is not live, its next sparsest slabs are
    /// compacted too, until it is not (1 turns it off). Bounds an arena
    /// under steady random churn near 1.11x its live bytes, where
    /// `arena_max_live_ratio` alone settles near 1.39x.
    pub arena_max_waste_ratio: f64,
    /// `index_max_deleted_ratio` (0.2): an index with this share of
    /// deleted points is rebuilt.
    pub index_max_deleted_ratio: f64,
    /// `pressure_interval_ms` (500): how often the pressure controller
    /// samples memory.
    pub pressure_interval_ms: u64,
    /// `leak_level` (sampled): `disabled`, `sampled` or `paranoid`.
    pub leak_level: LeakLevel,
    /// `leak_threshold_secs` (300): a tracked resource older than this is
    /// reported.
    pub leak_threshold_secs: u64,
    /// `leak_check_interval_secs` (30): how often the leak monitor looks.
    pub leak_check_interval_secs: u64,
    /// `max_value_bytes` (16 MiB): the largest value or payload accepted.
    pub max_value_bytes: u64,
    /// `metrics_dataset_labels` (64): how many datasets get a `dataset`
    /// label of their own in the metrics; the rest are summed under
    /// `other`, so many datasets cannot blow up a Prometheus's series
    /// count.
    pub metrics_dataset_labels: u64,
    /// `data_dir` (none): where snapshots go; none keeps everything in
    /// memory.
    pub data_dir: Option<PathBuf>,
    /// The tokio runtime the engine's workers run on (not a config key:
    /// code only; a multi-thread runtime's handle, a current-thread one is
    /// refused at open). None: the engine builds and owns one (one async thread
    /// named `ebb-worker`, blocking threads `ebb-blocking`).
    pub runtime: Option<RuntimeHandle>,
}

/// A host's tokio runtime for the engine's workers. Compares equal to any
/// other: a runtime is where the engine runs, not configuration data.
#[derive(Clone, Debug)]
pub struct RuntimeHandle(pub tokio::runtime::Handle);

impl PartialEq for RuntimeHandle {
    fn eq(&self, _: &RuntimeHandle) -> bool {
        true
    }
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            memory_limit_bytes: limits::default_memory_limit_bytes(),
            soft_limit_ratio: 0.85,
            shutdown_deadline_secs: 30,
            compaction_interval_secs: 5,
            compact_when_due: true,
            arena_max_live_ratio: 0.5,
            arena_max_waste_ratio: 0.1,
            index_max_deleted_ratio: 0.2,
            pressure_interval_ms: 500,
            leak_level: LeakLevel::Sampled,
            leak_threshold_secs: 300,
            leak_check_interval_secs: 30,
            max_value_bytes: 16 << 20,
            metrics_dataset_labels: 64,
            data_dir: None,
            runtime: None,
        }
    }
}

/// The smallest `soft_limit_ratio` accepted: the pressure controller's
/// exit mark is the soft limit less a 5 % hysteresis, which must stay
/// above 0.
pub const MIN_SOFT_LIMIT_RATIO: f64 = 0.1;

/// The largest `max_value_bytes` accepted: a record must fit an arena's
/// `u32` length.
pub const MAX_VALUE_BYTES_LIMIT: u64 = 1 << 30;

fn bad(key: &str, value: &str, allowed: &str) -> Error {
    Error::Config {
        key: key.to_string(),
        value: value.to_string(),
        allowed: allowed.to_string(),
    }
}

fn parse_u64(key: &str, value: &str, min: u64, max: u64) -> Result<u64> {
    let allowed = || bad(key, value, &format!("an integer in {min}..={max}"));
    let v: u64 = value
        .trim()
        .replace('_', "")
        .parse()
        .map_err(|_| allowed())?;
    if v < min || v > max {
        return Err(allowed());
    }
    Ok(v)
}

/// A ratio in `(0, max]` (`max` 1 or under).
fn parse_ratio(key: &str, value: &str, max_inclusive: bool) -> Result<f64> {
    let allowed = || {
        let upper = if max_inclusive { "1]" } else { "1)" };
        bad(key, value, &format!("a number in (0, {upper}"))
    };
    let v: f64 = value.trim().parse().map_err(|_| allowed())?;
    let in_range = v > 0.0 && if max_inclusive { v <= 1.0 } else { v < 1.0 };
    if !v.is_finite() || !in_range {
        return Err(allowed());
    }
    Ok(v)
}

impl EngineConfig {
    /// Sets one key from its text form (as an env var or a flag gives it).
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        const DAY: u64 = 24 * 3600;
        match key {
            "memory_limit_bytes" => {
                self.memory_limit_bytes = parse_u64(key, value, 1 << 20, u64::MAX >> 1)?
            }
            "soft_limit_ratio" => {
                let v = parse_ratio(key, value, true)?;
                if v < MIN_SOFT_LIMIT_RATIO {
                    // Under it, soft - hysteresis is <= 0: Critical could
                    // never be left.
                    return Err(bad(key, value, "a number in [0.1, 1]"));
                }
                self.soft_limit_ratio = v;
            }
            "shutdown_deadline_secs" => {
                self.shutdown_deadline_secs = parse_u64(key, value, 1, 3600)?
            }
            "compaction_interval_secs" => {
                self.compaction_interval_secs = parse_u64(key, value, 1, DAY)?
            }
            "compact_when_due" => {
                self.compact_when_due = match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad(key, value, "true or false")),
                }
            }
            "arena_max_live_ratio" => self.arena_max_live_ratio = parse_ratio(key, value, false)?,
            "arena_max_waste_ratio" => self.arena_max_waste_ratio = parse_ratio(key, value, true)?,
            "index_max_deleted_ratio" => {
                self.index_max_deleted_ratio = parse_ratio(key, value, true)?
            }
            "pressure_interval_ms" => {
                self.pressure_interval_ms = parse_u64(key, value, 10, 60_000)?
            }
            "leak_level" => {
                self.leak_level = match value.trim() {
                    "disabled" => LeakLevel::Disabled,
                    "sampled" => LeakLevel::Sampled,
                    "paranoid" => LeakLevel::Paranoid,
                    _ => return Err(bad(key, value, "one of disabled, sampled, paranoid")),
                }
            }
            "leak_threshold_secs" => self.leak_threshold_secs = parse_u64(key, value, 1, DAY)?,
            "leak_check_interval_secs" => {
                self.leak_check_interval_secs = parse_u64(key, value, 1, DAY)?
            }
            "max_value_bytes" => {
                self.max_value_bytes = parse_u64(key, value, 1, MAX_VALUE_BYTES_LIMIT)?
            }
            "metrics_dataset_labels" => {
                self.metrics_dataset_labels = parse_u64(key, value, 0, 4096)?
            }
            "data_dir" => {
                let v = value.trim();
                self.data_dir = if v.is_empty() {
                    None
                } else {
                    Some(PathBuf::from(v))
                };
            }
            _ => {
                return Err(bad(
                    key,
                    value,
                    &format!("unknown key; the keys are {}", KEYS.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// Applies a TOML document's top-level keys (integers, floats and
    /// strings; anything else is an error naming the key).
    pub fn apply_toml(&mut self, text: &str, origin: &str) -> Result<()> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| Error::ConfigFile {
                path: origin.to_string(),
                reason: e.to_string(),
            })?;
        for (key, value) in &table {
            let text = match value {
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::String(s) => s.clone(),
                other => {
                    return Err(bad(
                        key,
                        other.type_str(),
                        "an integer, a number or a string",
                    ));
                }
            };
            self.set(key, &text)?;
        }
        Ok(())
    }

    /// Applies `EBB_<KEY>` variables (the key in upper case) from `vars`;
    /// other `EBB_` variables are not config keys and are left alone (the
    /// binary has its own, such as `EBB_LOG`).
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<()> {
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix("EBB_") else {
                continue;
            };
            let key = rest.to_ascii_lowercase();
            if KEYS.contains(&key.as_str()) {
                self.set(&key, &value)?;
            }
        }
        Ok(())
    }

    /// The documented order: defaults, then `file` (if any), then the
    /// process's `EBB_*` env vars, then `flags` (key, value pairs, as the
    /// binary's flags give them).
    pub fn load(file: Option<&Path>, flags: &[(String, String)]) -> Result<EngineConfig> {
        Self::load_from(file, std::env::vars(), flags)
    }

    /// [`load`](Self::load) with the environment given (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &[(String, String)],
    ) -> Result<EngineConfig> {
        let mut config = EngineConfig::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| Error::ConfigFile {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            config.apply_toml(&text, &path.display().to_string())?;
        }
        config.apply_env(env)?;
        for (key, value) in flags {
            config.set(key, value)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what a single key cannot: the keys against each other.
    pub fn validate(&self) -> Result<()> {
        // The fields are public: check each as `set` would (the same
        // ranges, the same errors), so a struct literal cannot hold what a
        // file could not (a 0 interval, a NaN ratio).
        let mut probe = EngineConfig::default();
        for (key, text) in self.key_texts() {
            probe.set(key, &text)?;
        }
        if self.leak_check_interval_secs > self.leak_threshold_secs {
            return Err(bad(
                "leak_check_interval_secs",
                &self.leak_check_interval_secs.to_string(),
                &format!(
                    "at most leak_threshold_secs = {} (a leak must be looked for before it is old)",
                    self.leak_threshold_secs
                ),
            ));
        }
        if self.max_value_bytes > self.memory_limit_bytes {
            return Err(bad(
                "max_value_bytes",
                &self.max_value_bytes.to_string(),
                &format!("at most memory_limit_bytes = {}", self.memory_limit_bytes),
            ));
        }
        Ok(())
    }

    /// Every scalar key with its value as text (what `set` parses back to
    /// the same value: Rust prints floats in their shortest round-trip
    /// form).
    fn key_texts(&self) -> [(&'static str, String); 14] {
        [
            ("memory_limit_bytes", self.memory_limit_bytes.to_string()),
            ("soft_limit_ratio", self.soft_limit_ratio.to_string()),
            (
                "shutdown_deadline_secs",
                self.shutdown_deadline_secs.to_string(),
            ),
            (
                "compaction_interval_secs",
                self.compaction_interval_secs.to_string(),
            ),
            ("compact_when_due", self.compact_when_due.to_string()),
            (
                "arena_max_live_ratio",
                self.arena_max_live_ratio.to_string(),
            ),
            (
                "arena_max_waste_ratio",
                self.arena_max_waste_ratio.to_string(),
            ),
            (
                "index_max_deleted_ratio",
                self.index_max_deleted_ratio.to_string(),
            ),
            (
                "pressure_interval_ms",
                self.pressure_interval_ms.to_string(),
            ),
            ("leak_level", self.leak_level.as_str().to_string()),
            ("leak_threshold_secs", self.leak_threshold_secs.to_string()),
            (
                "leak_check_interval_secs",
                self.leak_check_interval_secs.to_string(),
            ),
            ("max_value_bytes", self.max_value_bytes.to_string()),
            (
                "metrics_dataset_labels",
                self.metrics_dataset_labels.to_string(),
            ),
        ]
    }

    /// The soft limit in bytes (`memory_limit_bytes * soft_limit_ratio`).
    pub fn soft_limit_bytes(&self) -> u64 {
        (self.memory_limit_bytes as f64 * self.soft_limit_ratio) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = EngineConfig::default();
        assert_eq!(c.soft_limit_ratio, 0.85);
        assert_eq!(c.shutdown_deadline_secs, 30);
        assert_eq!(c.compaction_interval_secs, 5);
        assert_eq!(c.arena_max_live_ratio, 0.5);
        assert_eq!(c.index_max_deleted_ratio, 0.2);
        assert_eq!(c.arena_max_waste_ratio, 0.1);
        assert_eq!(c.pressure_interval_ms, 500);
        assert_eq!(c.leak_level, LeakLevel::Sampled);
        assert_eq!(c.leak_threshold_secs, 300);
        assert_eq!(c.leak_check_interval_secs, 30);
        assert_eq!(c.max_value_bytes, 16 << 20);
        assert_eq!(c.data_dir, None);
        assert!(c.memory_limit_bytes > 0);
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = std::env::temp_dir().join(format!("ebb-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("engine.toml");
        std::fs::write(
            &file,
            "soft_limit_ratio = 0.7\ncompaction_interval_secs = 9\nleak_level = \"paranoid\"\n",
        )
        .unwrap();
        let c = EngineConfig::load_from(
            Some(&file),
            env(&[
                ("EBB_COMPACTION_INTERVAL_SECS", "11"),
                ("EBB_LOG", "debug"),
                ("PATH", "x"),
            ]),
            &[("leak_level".into(), "disabled".into())],
        )
        .unwrap();
        assert_eq!(c.soft_limit_ratio, 0.7, "file");
        assert_eq!(c.compaction_interval_secs, 11, "env over file");
        assert_eq!(c.leak_level, LeakLevel::Disabled, "flag over file");
        let mut t = EngineConfig::default();
        t.apply_toml("compact_when_due = false", "t.toml").unwrap();
        assert!(!t.compact_when_due, "a TOML boolean");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_keys_and_values_name_the_key_the_value_and_what_is_allowed() {
        let mut c = EngineConfig::default();
        for (key, value, allowed) in [
            ("memory_limt_bytes", "1", "unknown key"),
            ("soft_limit_ratio", "1.5", "(0, 1]"),
            ("soft_limit_ratio", "NaN", "(0, 1]"),
            ("soft_limit_ratio", "0.05", "[0.1, 1]"),
            ("arena_max_live_ratio", "1", "(0, 1)"),
            ("arena_max_waste_ratio", "0", "(0, 1]"),
            ("shutdown_deadline_secs", "0", "1..=3600"),
            ("leak_level", "loud", "disabled, sampled, paranoid"),
            ("compact_when_due", "yes", "true or false"),
            ("max_value_bytes", "-3", "integer"),
        ] {
            let err = c.set(key, value).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(key) && text.contains(value) && text.contains(allowed),
                "{text}"
            );
        }
        assert_eq!(c, EngineConfig::default(), "a refused key changes nothing");
        let err = c
            .apply_toml("soft_limit_ratio = [1]", "t.toml")
            .unwrap_err();
        assert!(err.to_string().contains("soft_limit_ratio"), "{err}");
        assert!(matches!(
            c.apply_toml("soft_limit_ratio = ", "t.toml"),
            Err(Error::ConfigFile { .. })
        ));
        for bad_struct in [
            EngineConfig {
                soft_limit_ratio: f64::NAN,
                ..EngineConfig::default()
            },
            EngineConfig {
                pressure_interval_ms: 0,
                ..EngineConfig::default()
            },
            EngineConfig {
                shutdown_deadline_secs: 0,
                ..EngineConfig::default()
            },
        ] {
            assert!(
                matches!(bad_struct.validate(), Err(Error::Config { .. })),
                "{bad_struct:?}"
            );
        }
        assert!(EngineConfig::default().validate().is_ok());
        let mut c = EngineConfig::default();
        c.set("leak_check_interval_secs", "600").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("leak_threshold_secs")
        );
    }
}
