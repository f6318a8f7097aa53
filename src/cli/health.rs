//! `grantbridge health`: exit 0 when the daemon's `/healthz` answers 200, for
//! container HEALTHCHECKs in images without curl.

use std::process::ExitCode;
use std::time::Duration;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use super::CliError;
use crate::config::{Config, Secrets};
use crate::env::Environment;

/// Where to ask: `--url`, else the configured admin listener.
fn health_url(path: &Path, env: &dyn Environment, url: Option<String>) -> Result<String, CliError> {
    if let Some(url) = url {
        return Ok(url);
    }
    if !path.is_file() {
        return Ok(format!(
            "http://{}/healthz",
            crate::config::DEFAULT_ADMIN_LISTEN
        ));
    }
    let config = Config::load_with(path, env, Secrets::Skip)?;
    let Some(mut addr) = config.admin else {
        return Err(CliError::Api(format!(
            "{}: admin.enabled = false, so there is no /healthz to ask (pass --url)",
            path.display()
        )));
    };
    addr.set_ip(reachable(addr));
    Ok(format!("http://{addr}/healthz"))
}

/// A wildcard listen address is asked on the matching loopback address.
fn reachable(addr: SocketAddr) -> IpAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

pub(super) async fn health(
    path: &Path,
    env: &dyn Environment,
    url: Option<String>,
) -> Result<ExitCode, CliError> {
    let url = &health_url(path, env, url)?;
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
