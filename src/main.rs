//! The `grantbridge` binary: parse the command line, start logging, run the
//! command. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use grantbridge::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();

    let mut builder = if cli.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(cli.worker_threads.into());
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, &grantbridge::env::ProcessEnv)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", grantbridge::cli::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
