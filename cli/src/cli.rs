//! The command line: `ebb serve` with its flags, every engine config key
//! as a flag (`--memory-limit-bytes`, ...), and the environment
//! (`EBB_ADMIN_TOKEN`, `EBB_LISTEN`, `EBB_MAX_BODY_BYTES`, `EBB_<KEY>` for
//! engine keys). Precedence, as the engine's: defaults, the `--config`
//! TOML file (engine keys), env, flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Arg, ArgMatches, Command};
use ebb_engine::{EngineConfig, KEYS};

use crate::serve::{DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES, ServeConfig};

/// The `ebb` command.
pub fn command() -> Command {
    Command::new("ebb")
        .about("ebb: a KV/vector store's memory subsystem, served")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(serve_command())
        .subcommand(soak_command())
}

fn engine_key_args(mut c: Command) -> Command {
    for key in KEYS {
        c = c.arg(
            Arg::new(*key)
                .long(key.replace('_', "-"))
                .value_name("VALUE")
                .help(format!(
                    "Engine config key `{key}` [env EBB_{}]",
                    key.to_ascii_uppercase()
                )),
        );
    }
    c
}

fn soak_command() -> Command {
    let c = Command::new("soak")
        .about("Run an embedded engine under sustained load, sample it every second, write samples.csv, rss.png/svg and summary.json, and judge it (exit 0 only on a pass)")
        .arg(Arg::new("duration").long("duration").value_name("TIME").help("How long the load runs: 20m, 90s, 1h30m [default: 20m]"))
        .arg(Arg::new("out").long("out").value_name("DIR").help("Where the files go [default: target/soak]"))
        .arg(Arg::new("config").long("config").value_name("FILE").help("TOML file of engine config keys"))
        .arg(Arg::new("seed").long("seed").value_name("N").help("Seed of the load [default: 7]"))
        .arg(Arg::new("dim").long("dim").value_name("D").help("Vector dimension [default: 64]"))
        .arg(Arg::new("writers").long("writers").value_name("N").help("Writer threads [default: 2]"))
        .arg(Arg::new("live-bytes").long("live-bytes").value_name("BYTES").help("Live bytes held in steady state [default: 268435456]"))
        .arg(Arg::new("write-bytes-per-sec").long("write-bytes-per-sec").value_name("BYTES").help("Each writer's pace [default: 8388608]"))
        .arg(Arg::new("cycle-secs").long("cycle-secs").value_name("SECS").help("Create/drop period of the cycling dataset [default: 20]"))
        .arg(Arg::new("workload").long("workload").value_name("FILE").help("Also replay a streaming runbook (big-ann-benchmarks NeurIPS'23 YAML), pass after pass, with recall@10 per search step"))
        .arg(Arg::new("workload-dataset").long("workload-dataset").value_name("NAME").help("Which of the runbook's datasets to replay [default: its only one]"))
        .arg(Arg::new("queries").long("queries").value_name("N").help("Queries per runbook search step [default: 100]"))
        .arg(Arg::new("plant").long("plant").value_name("KIND").hide(true));
    engine_key_args(c)
}

/// The soak's configuration from `soak`'s matches.
pub fn soak_config(m: &ArgMatches) -> Result<crate::soak::SoakConfig, CliError> {
    fn num<T: std::str::FromStr>(
        m: &ArgMatches,
        name: &'static str,
        default: T,
        allowed: &'static str,
    ) -> Result<T, CliError> {
        match m.get_one::<String>(name) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| CliError::Bad {
                name: format!("--{name}"),
                value: v.clone(),
                allowed,
            }),
        }
    }
    let duration = match m.get_one::<String>("duration") {
        None => std::time::Duration::from_secs(20 * 60),
        Some(v) => crate::soak::parse_duration(v).map_err(|_| CliError::Bad {
            name: "--duration".into(),
            value: v.clone(),
            allowed: "a duration such as 20m, 90s, 1h30m",
        })?,
    };
    let plant = match m.get_one::<String>("plant") {
        None => None,
        Some(v) => Some(v.parse().map_err(|_| CliError::Bad {
            name: "--plant".into(),
            value: v.clone(),
            allowed: "leak, bloat, growth or hung",
        })?),
    };
    let flags: Vec<(String, String)> = KEYS
        .iter()
        .filter_map(|k| m.get_one::<String>(k).map(|v| (k.to_string(), v.clone())))
        .collect();
    let file = m.get_one::<String>("config").map(PathBuf::from);
    let engine = EngineConfig::load(file.as_deref(), &flags)?;
    /// `num` within `range`.
    fn num_in(
        m: &ArgMatches,
        name: &'static str,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
        allowed: &'static str,
    ) -> Result<usize, CliError> {
        let v = num(m, name, default, allowed)?;
        if !range.contains(&v) {
            return Err(CliError::Bad {
                name: format!("--{name}"),
                value: v.to_string(),
                allowed,
            });
        }
        Ok(v)
    }
    let dim = num_in(m, "dim", 64, 1..=4096, "an integer in 1..=4096")?;
    let seed: u64 = num(m, "seed", 7, "an integer")?;
    let replay = match m.get_one::<String>("workload") {
        None => None,
        Some(file) => {
            let bad = |reason: String| CliError::Runbook {
                file: file.clone(),
                reason,
            };
            let text = std::fs::read_to_string(file).map_err(|e| bad(e.to_string()))?;
            let pick = m.get_one::<String>("workload-dataset").map(String::as_str);
            let runbook =
                crate::soak::runbook::parse(&text, pick, dim).map_err(|e| bad(e.to_string()))?;
            let queries = num_in(m, "queries", 100, 1..=100_000, "an integer in 1..=100000")?;
            Some(crate::soak::replay::ReplayConfig {
                runbook,
                file: file.clone(),
                queries,
                k: 10,
                seed,
            })
        }
    };
    Ok(crate::soak::SoakConfig {
        duration,
        out_dir: m
            .get_one::<String>("out")
            .map_or_else(|| PathBuf::from("target/soak"), PathBuf::from),
        engine,
        workload: crate::soak::workload::WorkloadConfig {
            dim,
            writers: num(m, "writers", 2, "an integer")?,
            live_bytes: num(m, "live-bytes", 256 << 20, "an integer")?,
            write_bytes_per_sec: num(m, "write-bytes-per-sec", 8 << 20, "an integer")?,
            cycle_secs: num(m, "cycle-secs", 20.0, "a number of seconds")?,
            snapshot_secs: 60.0,
            seed,
            replay,
        },
        plant,
    })
}

fn serve_command() -> Command {
    let c = Command::new("serve")
        .about("Serve the engine over HTTP (JSON and Arrow API, /metrics, debug and admin routes)")
        .arg(
            Arg::new("listen")
                .long("listen")
                .value_name("ADDR")
                .help(format!(
                    "Address to listen on [default: {DEFAULT_LISTEN}; env EBB_LISTEN]; off loopback needs --admin-token"
                )),
        )
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .help("TOML file of engine config keys"),
        )
        .arg(
            Arg::new("admin-token")
                .long("admin-token")
                .value_name("TOKEN")
                .help("Token the debug and admin routes need [env EBB_ADMIN_TOKEN]"),
        )
        .arg(
            Arg::new("max-body-bytes")
                .long("max-body-bytes")
                .value_name("BYTES")
                .help(format!(
                    "Largest request body read [default: {DEFAULT_MAX_BODY_BYTES}; env EBB_MAX_BODY_BYTES]"
                )),
        );
    engine_key_args(c)
}

/// A command line the server cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag or env var with a bad value.
    #[error("{name}: {value:?} is not allowed ({allowed})")]
    Bad {
        /// The flag or variable.
        name: String,
        /// The value given.
        value: String,
        /// What it accepts.
        allowed: &'static str,
    },
    /// The engine's configuration is not allowed.
    #[error(transparent)]
    Engine(#[from] ebb_engine::Error),
    /// A runbook that cannot be read or is refused (the step named).
    #[error("{file}: {reason}")]
    Runbook {
        /// The file given.
        file: String,
        /// Why (the step it is about, if one).
        reason: String,
    },
}

/// The server's configuration from `serve`'s matches and `env`.
pub fn serve_config(
    m: &ArgMatches,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ServeConfig, CliError> {
    let pick = |flag: &str, var: &str| m.get_one::<String>(flag).cloned().or_else(|| env(var));
    let listen_text = pick("listen", "EBB_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listen: SocketAddr = listen_text.parse().map_err(|_| CliError::Bad {
        name: "--listen".into(),
        value: listen_text.clone(),
        allowed: "an IP address and port, such as 127.0.0.1:7878",
    })?;
    let max_body_bytes = match pick("max-body-bytes", "EBB_MAX_BODY_BYTES") {
        None => DEFAULT_MAX_BODY_BYTES,
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=(4usize << 30)).contains(n))
            .ok_or(CliError::Bad {
                name: "--max-body-bytes".into(),
                value: v,
                allowed: "an integer in 1..=4294967296",
            })?,
    };
    let flags: Vec<(String, String)> = KEYS
        .iter()
        .filter_map(|k| m.get_one::<String>(k).map(|v| (k.to_string(), v.clone())))
        .collect();
    let file = m.get_one::<String>("config").map(PathBuf::from);
    let engine = EngineConfig::load(file.as_deref(), &flags)?;
    Ok(ServeConfig {
        listen,
        admin_token: pick("admin-token", "EBB_ADMIN_TOKEN"),
        max_body_bytes,
        engine,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<ServeConfig, CliError> {
        let m = command()
            .try_get_matches_from(std::iter::once("ebb").chain(args.iter().copied()))
            .unwrap();
        let (_, sm) = m.subcommand().unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        serve_config(sm, &|k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn every_engine_key_is_a_flag_and_flags_beat_env() {
        let c = parse(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--soft-limit-ratio",
                "0.7",
                "--metrics-dataset-labels",
                "8",
            ],
            &[("EBB_ADMIN_TOKEN", "t"), ("EBB_LISTEN", "10.0.0.1:1")],
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:0");
        assert_eq!(c.admin_token.as_deref(), Some("t"));
        assert_eq!(c.engine.soft_limit_ratio, 0.7);
        assert_eq!(c.engine.metrics_dataset_labels, 8);
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        for key in KEYS {
            let flag = format!("--{}", key.replace('_', "-"));
            assert!(
                serve_command()
                    .get_arguments()
                    .any(|a| a.get_long() == Some(&flag[2..])),
                "{flag}"
            );
        }
    }

    #[test]
    fn bad_values_name_the_flag() {
        let e = parse(&["serve", "--listen", "nowhere"], &[]).unwrap_err();
        assert!(e.to_string().contains("--listen"), "{e}");
        let e = parse(&["serve", "--soft-limit-ratio", "2"], &[]).unwrap_err();
        assert!(e.to_string().contains("soft_limit_ratio"), "{e}");
        let e = parse(&["serve", "--max-body-bytes", "0"], &[]).unwrap_err();
        assert!(e.to_string().contains("--max-body-bytes"), "{e}");
    }
}
