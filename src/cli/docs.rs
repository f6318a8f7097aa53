//! `grantbridge completions SHELL` and `grantbridge man`: shell completion
//! scripts and the man page, generated from the same clap definition the
//! binary parses with, so they never drift from it.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;

use super::{Cli, CliError};

/// Prints the completion script for `shell` (install: see `--help`).
pub(super) fn completions(shell: clap_complete::Shell) -> Result<ExitCode, CliError> {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "grantbridge", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Prints the man page, grantbridge(1), with a section per subcommand.
pub(super) fn man() -> Result<ExitCode, CliError> {
    let command = Cli::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut out)
        .map_err(|e| CliError::Api(format!("rendering the man page: {e}")))?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        if name == "help" {
            continue;
        }
        let _ = writeln!(out, ".SH \"GRANTBRIDGE {}\"", name.to_uppercase());
        let mut page = Vec::new();
        clap_mangen::Man::new(sub.clone())
            .render_description_section(&mut page)
            .and_then(|()| clap_mangen::Man::new(sub.clone()).render_options_section(&mut page))
            .map_err(|e| CliError::Api(format!("rendering the man page: {e}")))?;
        // Sub-pages' own section headers become subsections.
        let text = String::from_utf8_lossy(&page).replace(".SH ", ".SS ");
        out.extend_from_slice(text.as_bytes());
    }
    std::io::stdout()
        .write_all(&out)
        .map_err(|e| CliError::Api(format!("writing the man page: {e}")))?;
    Ok(ExitCode::SUCCESS)
}
