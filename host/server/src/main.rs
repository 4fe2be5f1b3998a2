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
    raise_open_file_limit();
    match plinth_server::cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Raise the soft limit on open files to the hard limit: every guest instance may hold up to
/// `Limits::MAX_OPEN_FILES` files, on top of the server's connections, and the usual soft
/// limit of 1024 would let a few instances exhaust it.
#[allow(unsafe_code)]
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` and `setrlimit` only read and write the struct passed.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && {
            let wanted = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            limit.rlim_cur >= limit.rlim_max || libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0
        }
    };
    if !raised {
        tracing::warn!(
            soft = limit.rlim_cur,
            "could not raise the open-file limit to its hard limit; guests share the soft limit"
        );
    }
}
