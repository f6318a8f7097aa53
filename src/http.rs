//! The HTTP clients grantbridge uses, built once and shared (connection pooling),
//! and the rule every outbound URL must pass: TLS, except loopback development
//! URLs the operator explicitly allowed.
//!
//! It must not follow redirects: the connector never calls a URL that is not in
//! its configuration, and a redirect would be exactly that.

use std::net::IpAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use url::Url;

/// `User-Agent` on every request: `grantbridge/<version>`.
pub const USER_AGENT: &str = concat!("grantbridge/", env!("CARGO_PKG_VERSION"));

/// The client for Google APIs, token endpoints and functions: rustls, pooled,
/// proxy from `HTTPS_PROXY`/`NO_PROXY`, no redirects.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_keepalive(Duration::from_secs(60))
        .build()
}

/// The client for the metadata server: never through a proxy (it is link-local
/// and a proxy would be a credential leak), short timeouts. The metadata
/// server speaks only plain http, so this client trusts no certificate at
/// all: loading the platform's roots a second time took a fifth of every
/// start.
pub fn metadata_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .tls_certs_only(std::iter::empty())
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()
}

/// Why a URL may not be called.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlPolicyError {
    #[error("`{0}` is not a valid absolute URL")]
    Invalid(String),
    #[error(
        "`{0}` must use https (plain http is only allowed for loopback hosts such as 127.0.0.1, and only with `allow_insecure_loopback = true`)"
    )]
    NotTls(String),
    #[error(
        "`{0}` uses plain http on a loopback host; set `allow_insecure_loopback = true` to allow it for local development"
    )]
    LoopbackNotAllowed(String),
    #[error("`{0}` must not carry a user name or password")]
    Credentials(String),
}

/// Parses `raw` and checks it against the TLS rule. A user name or password
/// in the URL is refused, and never repeated in the error.
pub fn checked_url(raw: &str, allow_insecure_loopback: bool) -> Result<Url, UrlPolicyError> {
    let shown = || redact_userinfo(raw);
    let url = Url::parse(raw).map_err(|_| UrlPolicyError::Invalid(shown()))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlPolicyError::Invalid(shown()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlPolicyError::Credentials(shown()));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => {
            if allow_insecure_loopback {
                Ok(url)
            } else {
                Err(UrlPolicyError::LoopbackNotAllowed(shown()))
            }
        }
        _ => Err(UrlPolicyError::NotTls(shown())),
    }
}

/// `raw` with anything before an `@` in its authority replaced by
/// `REDACTED`: text to show for a URL that may carry a password, whether or
/// not it parses.
pub fn redact_userinfo(raw: &str) -> String {
    let Some(scheme_end) = raw.find("://") else {
        return raw.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &raw[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_len].rfind('@') {
        Some(at) => format!("{}REDACTED{}", &raw[..authority_start], &rest[at..]),
        None => raw.to_owned(),
    }
}

/// True when the URL's host is a loopback address or `localhost`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || d.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

/// A peer's answer, its body read whole up to a limit.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// No answer at all: connection, TLS or timeout.
    #[error("{}", transport_reason(.0))]
    Send(reqwest::Error),
    /// An answer whose body could not be read within the limit.
    #[error("{source}")]
    Body {
        status: u16,
        headers: http::HeaderMap,
        source: BodyError,
    },
}

/// Sends `request` and reads the answer's body, at most `limit` bytes: how
/// grantbridge talks to Google's APIs and to the control plane. Callers map
/// [`ExchangeError`] into their own error once.
pub async fn exchange(
    request: reqwest::RequestBuilder,
    limit: usize,
) -> Result<Answer, ExchangeError> {
    let resp = request.send().await.map_err(ExchangeError::Send)?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    match read_limited(resp, limit).await {
        Ok(body) => Ok(Answer {
            status,
            headers,
            body,
        }),
        Err(source) => Err(ExchangeError::Body {
            status,
            headers,
            source,
        }),
    }
}

/// Why a request got no answer, without the URL reqwest's Display repeats.
pub fn transport_reason(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".to_owned()
    } else if let Some(tls) = tls_problem(err) {
        tls
    } else if err.is_connect() {
        "could not connect".to_owned()
    } else {
        let mut source: &dyn std::error::Error = err;
        while let Some(next) = source.source() {
            source = next;
        }
        source.to_string()
    }
}

/// The TLS failure behind `err`, said in the error itself (otherwise it is
/// only in a separate log line of the verifier). An unknown issuer is what a private CA looks like.
pub fn tls_problem(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(describe_tls(tls));
        }
        // An io::Error's source() is its inner error's source, not the inner
        // error: step into it instead (rustls' error sits in two of them).
        cause = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

fn describe_tls(err: &rustls::Error) -> String {
    use rustls::{CertificateError as Cert, Error};
    match err {
        Error::InvalidCertificate(Cert::UnknownIssuer) => "TLS: certificate not trusted (unknown issuer); for a private CA, set SSL_CERT_FILE to a PEM bundle holding it and the public roots (docs/operations.md, \"Private CAs\")".to_owned(),
        Error::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => {
            "TLS: certificate expired".to_owned()
        }
        Error::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            "TLS: certificate not valid for this host name".to_owned()
        }
        Error::InvalidCertificate(other) => format!("TLS: certificate refused ({other:?})"),
        other => format!("TLS: {other}"),
    }
}

/// A body larger than the limit.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("response body exceeds the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("reading the response body: {0}")]
    Read(#[source] reqwest::Error),
}

/// Reads a response body, refusing more than `limit` bytes (hostile or broken
/// peers must not be able to exhaust memory).
pub async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<Bytes, BodyError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut buf = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Read)?;
        if buf.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_is_always_fine() {
        assert!(checked_url("https://us-central1-p.cloudfunctions.net/f", false).is_ok());
    }

    #[test]
    fn plain_http_needs_loopback_and_the_flag() {
        assert_eq!(
            checked_url("http://example.com/f", true),
            Err(UrlPolicyError::NotTls("http://example.com/f".into()))
        );
        assert!(matches!(
            checked_url("http://127.0.0.1:8080/f", false),
            Err(UrlPolicyError::LoopbackNotAllowed(_))
        ));
        assert!(checked_url("http://127.0.0.1:8080/f", true).is_ok());
        assert!(checked_url("http://[::1]:8080/f", true).is_ok());
        assert!(checked_url("http://localhost:8080/f", true).is_ok());
        // 10.x is private, not loopback: still refused.
        assert!(checked_url("http://10.0.0.1/f", true).is_err());
    }

    #[test]
    fn a_password_in_a_url_is_never_repeated() {
        for raw in [
            "https://admin:PASSWORD@cp.example.com/api",
            "http://admin:PASSWORD@127.0.0.1:1/x",
            "https://admin:PASSWORD@[bad/",
            "ftp://admin:PASSWORD@host/",
        ] {
            let e = checked_url(raw, true).unwrap_err();
            assert!(!e.to_string().contains("PASSWORD"), "{e}");
            assert!(e.to_string().contains("REDACTED@"), "{e}");
        }
        assert_eq!(
            redact_userinfo("https://u:p@h/a@b?c@d"),
            "https://REDACTED@h/a@b?c@d"
        );
        assert_eq!(redact_userinfo("https://h/x"), "https://h/x");
        assert_eq!(redact_userinfo("not a url"), "not a url");
    }

    #[test]
    fn userinfo_and_garbage_are_refused() {
        assert!(matches!(
            checked_url("https://u:p@example.com/", false),
            Err(UrlPolicyError::Credentials(_))
        ));
        assert!(checked_url("not a url", false).is_err());
        assert!(checked_url("file:///etc/passwd", true).is_err());
    }
}
