//! `ebb`: see `ebb --help`. `ebb serve` exits 0 after a clean shutdown, 1
//! when the server cannot start (the message says why), 2 when a worker
//! missed the close deadline; `ebb soak` exits 0 only when its verdict
//! passes.

use std::process::ExitCode;

use ebb::serve::{Server, shutdown_signal};

/// jemalloc, counted: the soak samples heap bytes from these counters (a
/// few thread-local adds per allocation; bench/RESULTS.md, leak overhead).
#[cfg(all(feature = "jemalloc", not(feature = "dhat-heap")))]
#[global_allocator]
static GLOBAL: ebb_leak::TrackingAllocator<tikv_jemallocator::Jemalloc> =
    ebb_leak::TrackingAllocator::new(tikv_jemallocator::Jemalloc);

/// The system allocator, counted (`--no-default-features`: what heaptrack
/// and valgrind can see).
#[cfg(not(any(feature = "jemalloc", feature = "dhat-heap")))]
#[global_allocator]
static GLOBAL: ebb_leak::TrackingAllocator<std::alloc::System> =
    ebb_leak::TrackingAllocator::new(std::alloc::System);

/// dhat's profiler (`--features dhat-heap`).
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static GLOBAL: dhat::Alloc = dhat::Alloc;

fn main() -> ExitCode {
    // `serve` logs at info by default; `soak` at warn (its progress is
    // the output). EBB_LOG overrides either.
    let default = if std::env::args().nth(1).as_deref() == Some("soak") {
        tracing::Level::WARN
    } else {
        tracing::Level::INFO
    };
    let level = std::env::var("EBB_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(default);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .init();
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::builder()
        .file_name(std::env::var("EBB_DHAT_FILE").unwrap_or_else(|_| "dhat-heap.json".into()))
        .build();
    #[cfg(all(feature = "jemalloc", not(feature = "dhat-heap")))]
    ebb::allocator::register_jemalloc_purge();
    let matches = ebb::cli::command().get_matches();
    match matches.subcommand() {
        Some(("serve", m)) => {
            let config = match ebb::cli::serve_config(m, &|k| std::env::var(k).ok()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("ebb serve: {e}");
                    return ExitCode::from(1);
                }
            };
            serve(config)
        }
        Some(("soak", m)) => {
            let config = match ebb::cli::soak_config(m) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("ebb soak: {e}");
                    return ExitCode::from(1);
                }
            };
            soak(&config)
        }
        _ => ExitCode::from(1),
    }
}

fn soak(config: &ebb::soak::SoakConfig) -> ExitCode {
    eprintln!(
        "ebb soak: {:.0} s, writing to {}",
        config.duration.as_secs_f64(),
        config.out_dir.display()
    );
    match ebb::soak::run(config) {
        Ok(report) => {
            for c in &report.verdict.criteria {
                println!(
                    "  {:<12} {}  {}",
                    c.name,
                    if c.passed { "pass" } else { "FAIL" },
                    c.detail
                );
            }
            if let Some((recall, steps, passes)) = report.recall {
                println!(
                    "  {:<12} recall@10 {}  over {steps} search steps, {passes} passes completed",
                    "runbook",
                    recall.map_or_else(|| "-".to_string(), |r| format!("{r:.4}"))
                );
            }
            println!(
                "ebb soak: {}; plot {}, summary {}",
                if report.verdict.passed {
                    "PASS"
                } else {
                    "FAIL"
                },
                report.plot.display(),
                report.summary.display()
            );
            if report.verdict.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("ebb soak: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve(config: ebb::serve::ServeConfig) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ebb-serve")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ebb serve: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async move {
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("ebb serve: {e}");
                return ExitCode::from(1);
            }
        };
        // The line tests and scripts wait for (the port, when 0 was asked).
        println!("ebb serve: listening on http://{}", server.local_addr());
        let report = server.run(shutdown_signal()).await;
        let close = &report.close;
        println!(
            "ebb serve: closed in {:.3} s (deadline {} s){}",
            close.duration_secs,
            close.deadline_secs,
            if close.deadline_missed {
                ", deadline missed"
            } else {
                ""
            }
        );
        println!(
            "ebb serve: close report {}",
            ebb::serve::report::close(close)
        );
        if close.deadline_missed {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        }
    });
    // A blocking task still running (one the close deadline abandoned)
    // must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}
