//! What can go wrong getting a token from Google, classified into retryable and
//! permanent, each with what to do next. Google's own error text is quoted.
//!
//! It must never carry a token, an assertion or key material: bodies are
//! parsed for Google's error fields and anything else is cut short.

use crate::http::{ExchangeError, transport_reason};

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Google's token endpoint refused the request (`{"error","error_description"}`).
    #[error("token endpoint {url} refused {account}: {error}: {description}. {advice}")]
    Refused {
        url: String,
        account: String,
        error: String,
        description: String,
        advice: &'static str,
        retryable: bool,
    },
    /// IAM Credentials refused (`{"error":{"code","message","status"}}`).
    #[error(
        "IAM Credentials {method} for {target} answered HTTP {status} {google_status}: {message}. {advice}"
    )]
    Iam {
        method: &'static str,
        target: String,
        status: u16,
        google_status: String,
        message: String,
        advice: String,
    },
    /// The metadata server answered something other than a token.
    #[error("metadata server {url} answered HTTP {status}: {detail}. {advice}")]
    Metadata {
        url: String,
        status: u16,
        detail: String,
        advice: String,
    },
    /// An HTTP status without a recognisable Google error body.
    #[error("{url} answered HTTP {status}: {snippet}")]
    Http {
        url: String,
        status: u16,
        snippet: String,
    },
    /// The request never got an answer.
    #[error("calling {url}: {reason}{advice}")]
    Transport {
        url: String,
        reason: String,
        advice: String,
    },
    /// A 2xx answer that does not hold what Google's API promises.
    #[error("{url} returned a malformed token response: {reason}")]
    BadResponse { url: String, reason: String },
    /// Signing the JWT assertion failed (the key could not sign).
    #[error("signing the JWT assertion for {account}: {reason}")]
    Sign { account: String, reason: String },
    /// Credentials could not be found or loaded.
    #[error("{0}")]
    Setup(String),
}

impl CredentialsError {
    /// Worth trying again later (Google transient errors, 5xx, 429, network).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Refused { retryable, .. } => *retryable,
            Self::Iam { status, .. }
            | Self::Metadata { status, .. }
            | Self::Http { status, .. } => retryable_status(*status),
            Self::Transport { .. } => true,
            Self::BadResponse { .. } | Self::Sign { .. } | Self::Setup(_) => false,
        }
    }

    /// A failed [`crate::http::exchange`] with `url`: no answer (with
    /// `advice` on what to check), or an answer that could not be read.
    pub(crate) fn exchange(url: &str, err: ExchangeError, advice: &str) -> Self {
        match err {
            ExchangeError::Send(e) => Self::transport(url, &e, advice),
            ExchangeError::Body { source, .. } => Self::BadResponse {
                url: url.to_owned(),
                reason: source.to_string(),
            },
        }
    }

    pub(crate) fn transport(url: &str, err: &reqwest::Error, advice: &str) -> Self {
        let reason = transport_reason(err);
        Self::Transport {
            url: url.to_owned(),
            reason,
            advice: if advice.is_empty() {
                String::new()
            } else {
                format!(". {advice}")
            },
        }
    }
}

#[derive(serde::Deserialize)]
struct GoogleError {
    error: GoogleErrorBody,
}

#[derive(serde::Deserialize)]
struct GoogleErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
}

/// Google's API error body `{"error":{"code","message","status"}}` as
/// (status, message of at most 300 characters); for any other body, ("", an excerpt).
pub(crate) fn google_api_error(body: &[u8]) -> (String, String) {
    match serde_json::from_slice::<GoogleError>(body) {
        Ok(e) => (
            e.error.status,
            e.error
                .message
                .trim_end_matches('.')
                .chars()
                .take(300)
                .collect(),
        ),
        Err(_) => (String::new(), snippet(body)),
    }
}

pub(crate) fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// Google's OAuth error codes and descriptions, mapped to what the operator
/// should do. Returns (advice, retryable).
pub(crate) fn oauth_advice(error: &str, description: &str) -> (&'static str, bool) {
    let d = description.to_ascii_lowercase();
    match error {
        "internal_failure" | "temporarily_unavailable" | "server_error" => (
            "Google reported a transient failure; grantbridge retries",
            true,
        ),
        "invalid_grant" if d.contains("expired or revoked") => (
            "The login's refresh token was revoked or has expired (a password change, `gcloud auth application-default revoke`, or the session-length policy): run `gcloud auth application-default login --impersonate-service-account=SA` again",
            false,
        ),
        "invalid_grant" if d.contains("signature") => (
            "The key in the key file is not a current key of this service account: it was deleted or rotated, or the file was edited. Create a new key (gcloud iam service-accounts keys create) and update key_file",
            false,
        ),
        "invalid_grant"
            if d.contains("short-lived")
                || d.contains("iat")
                || d.contains("exp")
                || d.contains("timeframe") =>
        {
            (
                "Google thinks this host's clock is wrong (clock skew): synchronise it with NTP",
                false,
            )
        }
        "invalid_grant" if d.contains("account not found") || d.contains("not a valid email") => (
            "The service account was deleted or disabled, or client_email in the key file is wrong",
            false,
        ),
        "invalid_grant" if d.contains("audience") => (
            "The assertion's `aud` is not Google's token endpoint: check token_uri in the key file",
            false,
        ),
        "invalid_client" | "unauthorized_client" | "disabled_client" => (
            "The service account or its key is disabled; enable it or create a new key",
            false,
        ),
        "invalid_scope" => (
            "The request named no valid audience or scope; this is a grantbridge bug, please report it",
            false,
        ),
        _ => (
            "Check the service account and its key (gcloud iam service-accounts keys list)",
            false,
        ),
    }
}

/// A short, single-line excerpt of a body for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 200 {
        format!("{}…", one_line.chars().take(200).collect::<String>())
    } else if one_line.is_empty() {
        "(empty body)".to_owned()
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_errors_map_to_advice() {
        assert!(
            oauth_advice("invalid_grant", "Invalid JWT Signature.")
                .0
                .contains("rotated")
        );
        assert!(oauth_advice("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.").0.contains("clock"));
        assert!(oauth_advice("internal_failure", "").1);
        assert!(!oauth_advice("invalid_grant", "Invalid grant: account not found").1);
    }

    #[test]
    fn snippets_are_short_and_single_line() {
        let s = snippet("a\n b\t c".as_bytes());
        assert_eq!(s, "a b c");
        assert!(snippet(&[b'x'; 1000]).chars().count() <= 201);
    }
}
