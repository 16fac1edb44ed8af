//! The `keyturn` binary: parse, set up logging, run one command, map the outcome to an exit code.

// The clap structures live in the library, so that `cargo xtask completions|man` sees them.
use keyturn_cli::args;
mod commands;
mod exit;
mod output;
mod progress;
mod telemetry;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Crash-test builds only: the failpoints FAILPOINTS configures, for the whole process.
    #[cfg(feature = "failpoints")]
    let _failpoints = keyturn_worker::failpoints::setup();
    let args = args::Cli::parse();
    // Logs to stderr, and the OTLP exporters when OTEL_EXPORTER_OTLP_*ENDPOINT asks for them.
    let telemetry = match telemetry::init(args.log_format, args.verbose) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::Exit::InvalidInput.into();
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            telemetry.shutdown();
            return exit::Exit::Internal.into();
        }
    };
    // `run` stops cleanly between steps on Ctrl-C by itself; any other command is cut
    // short, so that what it traced so far is still exported.
    let handles_ctrl_c = matches!(args.command, args::Command::Run(_));
    let outcome = runtime.block_on(async {
        if handles_ctrl_c {
            Some(commands::run(args).await)
        } else {
            tokio::select! {
                outcome = commands::run(args) => Some(outcome),
                _ = tokio::signal::ctrl_c() => None,
            }
        }
    });
    let code = match outcome {
        Some(outcome) => exit::report(outcome),
        None => {
            eprintln!("interrupted (Ctrl-C)");
            std::process::ExitCode::from(130)
        }
    };
    // The exporters' last batches are sent after the runtime is gone (their HTTP client
    // must not be used from async code).
    drop(runtime);
    telemetry.shutdown();
    code
}
