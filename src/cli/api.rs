//! `grantbridge api METHOD PATH`: one call to a Google API with a
//! connection's access token, for what the built-in commands do not cover
//! (listing functions in a region with a filter, reading a policy).
//!
//! It only calls Google: `https://*.googleapis.com`, or the hosts the
//! configuration points Google at (`[google] cloudfunctions_api`, e.g. a
//! private endpoint or the sandbox). It never prints the token.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use url::Url;

use super::{CliError, services};
use crate::env::Environment;
use crate::http::{checked_url, exchange};

/// Answers larger than this are not printed whole.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// GET, POST, PATCH, PUT or DELETE.
    pub method: String,
    /// A full URL (`https://cloudfunctions.googleapis.com/v2/projects/...`), or a
    /// path (`/v1/projects/...`) under `[google] cloudfunctions_api`.
    pub path: String,
    /// A JSON body to send.
    #[arg(long)]
    pub data: Option<String>,
    /// The connection whose access token authenticates the call.
    #[arg(long)]
    pub connection: String,
}

/// Why a URL may not be called by `grantbridge api`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiTargetError {
    #[error("`{0}` is not a URL or a path starting with `/`")]
    Invalid(String),
    #[error(
        "{0} is not a Google API: `grantbridge api` calls https://*.googleapis.com, or the host of [google] cloudfunctions_api ({1})"
    )]
    NotGoogle(String, String),
    #[error("`{0}` is not an HTTP method grantbridge api sends (GET, POST, PATCH, PUT, DELETE)")]
    Method(String),
}

/// The URL `path` names, if it is one `grantbridge api` may call.
pub fn api_target(
    path: &str,
    configured: &Url,
    allow_insecure_loopback: bool,
) -> Result<Url, ApiTargetError> {
    let invalid = || ApiTargetError::Invalid(crate::http::redact_userinfo(path));
    let url = if path.starts_with('/') {
        configured
            .join(path.trim_start_matches('/'))
            .map_err(|_| invalid())?
    } else {
        checked_url(path, allow_insecure_loopback).map_err(|_| invalid())?
    };
    let google = url.scheme() == "https"
        && url
            .host_str()
            .is_some_and(|h| h == "googleapis.com" || h.ends_with(".googleapis.com"));
    let same_as_configured = url.scheme() == configured.scheme()
        && url.host_str() == configured.host_str()
        && url.port_or_known_default() == configured.port_or_known_default();
    if google || same_as_configured {
        Ok(url)
    } else {
        let host = url.host_str().unwrap_or_default().to_owned();
        Err(ApiTargetError::NotGoogle(
            host,
            configured.host_str().unwrap_or_default().to_owned(),
        ))
    }
}

pub(super) async fn api(
    path: &Path,
    env: &dyn Environment,
    args: ApiArgs,
) -> Result<ExitCode, CliError> {
    let services = services(path, env)?;
    let method = match args.method.to_ascii_uppercase().as_str() {
        m @ ("GET" | "POST" | "PATCH" | "PUT" | "DELETE") => {
            reqwest::Method::from_bytes(m.as_bytes()).expect("a standard method")
        }
        _ => return Err(ApiTargetError::Method(args.method).into()),
    };
    let url = api_target(
        &args.path,
        &services.config.google.cloudfunctions_api,
        services.config.http.allow_insecure_loopback,
    )?;
    let body: Option<serde_json::Value> = args
        .data
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| super::ParamError::Json {
            key: "--data".into(),
            reason: e.to_string(),
        })?;
    let token = crate::check::access_token(&services, &args.connection).await?;
    let mut request = services
        .http
        .request(method, url.clone())
        .bearer_auth(token.expose());
    if let Some(body) = &body {
        request = request.json(body);
    }
    let answer = exchange(request, MAX_ANSWER)
        .await
        .map_err(|e| CliError::Api(format!("{url}: {e}")))?;
    eprintln!("HTTP {} {url}", answer.status);
    match serde_json::from_slice::<serde_json::Value>(&answer.body) {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
        Err(_) => println!("{}", String::from_utf8_lossy(&answer.body)),
    }
    Ok(if answer.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_google_and_the_configured_endpoint_are_called() {
        let google = Url::parse("https://cloudfunctions.googleapis.com").unwrap();
        assert_eq!(
            api_target("/v2/projects/p/locations/-/functions", &google, false)
                .unwrap()
                .as_str(),
            "https://cloudfunctions.googleapis.com/v2/projects/p/locations/-/functions"
        );
        assert!(api_target("https://run.googleapis.com/v2/projects/p", &google, false).is_ok());
        for bad in [
            "https://evil.example.com/v1",
            "https://googleapis.com.evil.example/v1",
            "http://cloudfunctions.googleapis.com/v1",
            "https://u:PASSWORD@cloudfunctions.googleapis.com/v1",
            "v1/projects",
        ] {
            let e = api_target(bad, &google, false).unwrap_err();
            assert!(!e.to_string().contains("PASSWORD"), "{e}");
        }
        let sandbox = Url::parse("http://127.0.0.1:4000/").unwrap();
        assert!(api_target("/v1/projects/p/locations/-/functions", &sandbox, true).is_ok());
        assert!(api_target("http://127.0.0.1:4000/v1/x", &sandbox, true).is_ok());
        assert!(api_target("http://127.0.0.1:4001/v1/x", &sandbox, true).is_err());
    }
}
