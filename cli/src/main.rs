//! `ebb`: see `ebb --help`. Exit codes: 0 after a clean shutdown, 1 when
//! the server cannot start (the message says why), 2 when a worker missed
//! the close deadline.

use std::process::ExitCode;

use ebb::serve::{Server, shutdown_signal};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let level = std::env::var("EBB_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .init();
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
        _ => ExitCode::from(1),
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
