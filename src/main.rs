//! The `grantbridge` binary: parse the command line, start logging, run the
//! command. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use grantbridge::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();

    let runtime = match tokio::runtime::Runtime::new() {
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
