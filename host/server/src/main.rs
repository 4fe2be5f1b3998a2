//! `plinth`: serve SageMaker-style endpoints from WebAssembly model components, invoke them,
//! and run a component locally.

use clap::Parser;

/// mimalloc: the request path allocates small, short-lived buffers all the time, and the
/// system allocator spends about twice as long on them (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = plinth_server::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLINTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(args.default_log_level())),
        )
        .init();
    match plinth_server::cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
