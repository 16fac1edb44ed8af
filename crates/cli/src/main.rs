//! The `keyturn` binary: parse, set up logging, run one command, map the outcome to an exit code.

// The clap structures live in the library, so that `cargo xtask completions|man` sees them.
use keyturn_cli::args;
mod commands;
mod exit;
mod output;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Crash-test builds only: the failpoints FAILPOINTS configures, for the whole process.
    #[cfg(feature = "failpoints")]
    let _failpoints = keyturn_worker::failpoints::setup();
    let args = args::Cli::parse();
    init_logging(args.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::Exit::Internal.into();
        }
    };
    let outcome = runtime.block_on(commands::run(args));
    exit::report(outcome)
}

/// Logs go to stderr, so stdout only ever carries the requested output.
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,aws_config=warn,aws_smithy_runtime=warn",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYTURN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .init();
}
