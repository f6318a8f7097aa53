//! `grantbridge token`: print an ID token for an audience, minted with a
//! connection's credentials (like `gcloud auth print-identity-token`).

use std::path::Path;
use std::process::ExitCode;

use super::{CliError, services};
use crate::env::Environment;

pub(super) async fn token(
    path: &Path,
    env: &dyn Environment,
    connection: &str,
    audience: &str,
) -> Result<ExitCode, CliError> {
    let services = services(path, env)?;
    if !services.credentials.contains_key(connection) {
        return Err(CliError::unknown(
            "connection",
            connection,
            services.credentials.keys(),
        ));
    }
    let token = services.tokens.get(connection, audience).await?;
    println!("{}", token.expose());
    Ok(ExitCode::SUCCESS)
}
