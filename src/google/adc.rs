//! Application Default Credentials, in Google's order: the file named by
//! `GOOGLE_APPLICATION_CREDENTIALS`, then gcloud's well-known file (honouring
//! `CLOUDSDK_CONFIG`), then the metadata server.
//!
//! It must read the environment only through `Environment`, and must refuse a
//! person's gcloud login (`authorized_user`) with an explanation.

use std::path::PathBuf;

use super::error::CredentialsError;
use super::key::CredentialsFile;
use crate::env::Environment;

/// What ADC found.
#[derive(Debug)]
pub enum Adc {
    File {
        path: PathBuf,
        file: CredentialsFile,
    },
    /// Nothing on disk: use the metadata server. `searched` says where we looked.
    Metadata { searched: String },
}

/// gcloud's ADC file for this environment.
pub fn well_known_file(env: &dyn Environment) -> Option<PathBuf> {
    let dir = match env.var("CLOUDSDK_CONFIG") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env.var("HOME")?)
            .join(".config")
            .join("gcloud"),
    };
    Some(dir.join("application_default_credentials.json"))
}

pub fn resolve(
    env: &dyn Environment,
    allow_insecure_loopback: bool,
) -> Result<Adc, CredentialsError> {
    if let Some(path) = env.var("GOOGLE_APPLICATION_CREDENTIALS") {
        let path = PathBuf::from(path);
        let file = CredentialsFile::from_file(&path, allow_insecure_loopback)
            .map_err(|e| CredentialsError::Setup(format!("GOOGLE_APPLICATION_CREDENTIALS: {e}")))?;
        return Ok(Adc::File { path, file });
    }
    let well_known = well_known_file(env);
    if let Some(path) = well_known.as_ref().filter(|p| p.is_file()) {
        let file = CredentialsFile::from_file(path, allow_insecure_loopback).map_err(|e| {
            CredentialsError::Setup(format!(
                "Application Default Credentials (gcloud's file): {e}"
            ))
        })?;
        return Ok(Adc::File {
            path: path.clone(),
            file,
        });
    }
    let searched = format!(
        "; Application Default Credentials found no GOOGLE_APPLICATION_CREDENTIALS and no gcloud file{}",
        well_known
            .map(|p| format!(" at {}", p.display()))
            .unwrap_or_default()
    );
    Ok(Adc::Metadata { searched })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::MapEnv;
    use crate::google::key::tests::{key_json, test_pem};

    #[test]
    fn explicit_variable_wins_and_errors_name_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.json");
        std::fs::write(
            &key,
            key_json(&test_pem(), "https://oauth2.googleapis.com/token"),
        )
        .unwrap();
        let env = MapEnv::new().with("GOOGLE_APPLICATION_CREDENTIALS", key.to_str().unwrap());
        assert!(matches!(
            resolve(&env, false).unwrap(),
            Adc::File {
                file: CredentialsFile::ServiceAccount(_),
                ..
            }
        ));
        let env = MapEnv::new().with("GOOGLE_APPLICATION_CREDENTIALS", "/nope.json");
        let err = resolve(&env, false).unwrap_err().to_string();
        assert!(
            err.contains("GOOGLE_APPLICATION_CREDENTIALS") && err.contains("/nope.json"),
            "{err}"
        );
    }

    #[test]
    fn gcloud_file_honours_cloudsdk_config_and_refuses_user_logins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("application_default_credentials.json"),
            r#"{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"r"}"#,
        )
        .unwrap();
        let env = MapEnv::new()
            .with("CLOUDSDK_CONFIG", dir.path().to_str().unwrap())
            .with("HOME", "/nonexistent");
        let err = resolve(&env, false).unwrap_err().to_string();
        assert!(
            err.contains("authorized_user") && err.contains("impersonate"),
            "{err}"
        );
    }

    #[test]
    fn falls_back_to_the_metadata_server() {
        let env = MapEnv::new().with("HOME", "/nonexistent");
        match resolve(&env, false).unwrap() {
            Adc::Metadata { searched } => assert!(searched.contains("/nonexistent/.config/gcloud")),
            other => panic!("{other:?}"),
        }
    }
}
