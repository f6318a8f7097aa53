//! `grantbridge health`: exit 0 when the daemon's `/healthz` answers 200, for
//! container HEALTHCHECKs in images without curl.

use std::process::ExitCode;
use std::time::Duration;

use super::CliError;

pub(super) async fn health(url: &str) -> Result<ExitCode, CliError> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()?;
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => Ok(ExitCode::SUCCESS),
        Ok(r) => {
            eprintln!("unhealthy: {url} answered HTTP {}", r.status().as_u16());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            let why = if e.is_connect() {
                "could not connect"
            } else {
                "no answer"
            };
            eprintln!("unhealthy: {url}: {why}");
            Ok(ExitCode::FAILURE)
        }
    }
}
