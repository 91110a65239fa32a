//! `kubectl-quiver`: parses the command line and runs it; failures print one line and exit 1.

use std::process::ExitCode;

use clap::Parser as _;
use quiver_plugin::cli::Cli;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match quiver_plugin::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
