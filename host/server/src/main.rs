//! `plinth`: serve SageMaker-style endpoints from WebAssembly model components, invoke them,
//! and run a component locally.

mod alarms;
mod api;
mod apply;
mod artifacts;
mod auth;
mod catalog;
mod cli;
mod client;
mod control;
mod deploy;
mod endpoints;
mod error;
mod experiments;
mod loadtest;
mod metrics;
mod onnxruntime;
mod rollout;
mod shadows;
mod sigv4;
mod store;
mod watch;

use clap::Parser;

/// mimalloc: the request path allocates small, short-lived buffers all the time, and the
/// system allocator spends about twice as long on them (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLINTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
