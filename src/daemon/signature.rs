//! Push-request signatures (PROTOCOL.md §4): `X-Grantbridge-Signature:
//! v1=<hex HMAC-SHA256(secret, "<timestamp>.<METHOD>.<path and query>.<body>")>`
//! with `X-Grantbridge-Timestamp` within 300 s of our clock. Several secrets
//! may be valid at once (rotation); comparison is constant-time.
//!
//! It must never reveal which secret matched or echo a signature back.

use aws_lc_rs::hmac;
use secrecy::{ExposeSecret, SecretString};

pub const TIMESTAMP_HEADER: &str = "x-grantbridge-timestamp";
pub const SIGNATURE_HEADER: &str = "x-grantbridge-signature";
pub const WINDOW_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Grantbridge-Timestamp or X-Grantbridge-Signature header")]
    Missing,
    #[error("X-Grantbridge-Timestamp is not unix seconds")]
    BadTimestamp,
    #[error(
        "X-Grantbridge-Timestamp is more than 300 s from the connector's clock (replayed, or a clock is wrong)"
    )]
    OutsideWindow,
    #[error("signature does not match")]
    Mismatch,
}

fn message(timestamp: &str, method: &str, path_and_query: &str, body: &[u8]) -> Vec<u8> {
    let mut m =
        Vec::with_capacity(timestamp.len() + method.len() + path_and_query.len() + body.len() + 3);
    m.extend_from_slice(timestamp.as_bytes());
    m.push(b'.');
    m.extend_from_slice(method.as_bytes());
    m.push(b'.');
    m.extend_from_slice(path_and_query.as_bytes());
    m.push(b'.');
    m.extend_from_slice(body);
    m
}

/// Verifies a request's signature headers against any of `secrets`.
pub fn verify(
    secrets: &[SecretString],
    timestamp: Option<&str>,
    signature: Option<&str>,
    now_unix: i64,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> Result<(), SignatureError> {
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return Err(SignatureError::Missing);
    };
    let ts = ts.trim();
    let ts_num: i64 = ts.parse().map_err(|_| SignatureError::BadTimestamp)?;
    if (now_unix - ts_num).abs() > WINDOW_SECS {
        return Err(SignatureError::OutsideWindow);
    }
    let msg = message(ts, method, path_and_query, body);
    // A sender mid-rotation may send several: "v1=aa, v1=bb".
    let candidates: Vec<Vec<u8>> = sig
        .split(',')
        .filter_map(|part| part.trim().strip_prefix("v1="))
        .filter_map(|h| hex::decode(h).ok())
        .filter(|tag| tag.len() == 32)
        .collect();
    for secret in secrets {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret().as_bytes());
        for tag in &candidates {
            if hmac::verify(&key, &msg, tag).is_ok() {
                return Ok(());
            }
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    // Signed by the sandbox's sender, written from the protocol on its own.
    use grantbridge_sandbox::pusher::signature as sign;
    use proptest::prelude::*;

    fn secrets(s: &[&str]) -> Vec<SecretString> {
        s.iter()
            .map(|s| SecretString::from(s.to_string()))
            .collect()
    }

    #[test]
    fn a_signed_request_verifies_with_any_current_secret() {
        let body = br#"{"id":"a1"}"#;
        let sig = sign(
            "new-secret-0123456789",
            1_000,
            "POST",
            "/v1/actions?wait=5",
            body,
        );
        let keys = secrets(&["old-secret-0123456789", "new-secret-0123456789"]);
        assert_eq!(
            verify(
                &keys,
                Some("1000"),
                Some(&sig),
                1_100,
                "POST",
                "/v1/actions?wait=5",
                body
            ),
            Ok(())
        );
        // Rotation on the sender side: two signatures, one matches.
        let both = format!("v1={}, {sig}", "00".repeat(32));
        assert_eq!(
            verify(
                &keys[1..],
                Some("1000"),
                Some(&both),
                1_000,
                "POST",
                "/v1/actions?wait=5",
                body
            ),
            Ok(())
        );
    }

    #[test]
    fn everything_signed_is_covered() {
        let keys = secrets(&["s3cret-0123456789abc"]);
        let sig = sign("s3cret-0123456789abc", 1_000, "POST", "/v1/actions", b"{}");
        for (method, path, body) in [
            ("GET", "/v1/actions", &b"{}"[..]),
            ("POST", "/v1/actions?wait=1", b"{}"),
            ("POST", "/v1/actions", b"{ }"),
        ] {
            assert_eq!(
                verify(&keys, Some("1000"), Some(&sig), 1_000, method, path, body),
                Err(SignatureError::Mismatch)
            );
        }
        assert_eq!(
            verify(
                &keys,
                Some("1001"),
                Some(&sig),
                1_000,
                "POST",
                "/v1/actions",
                b"{}"
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_window_is_300_seconds_both_ways() {
        let keys = secrets(&["s3cret-0123456789abc"]);
        let sig = sign("s3cret-0123456789abc", 1_000, "GET", "/v1/actions/a", b"");
        assert!(
            verify(
                &keys,
                Some("1000"),
                Some(&sig),
                1_300,
                "GET",
                "/v1/actions/a",
                b""
            )
            .is_ok()
        );
        assert_eq!(
            verify(
                &keys,
                Some("1000"),
                Some(&sig),
                1_301,
                "GET",
                "/v1/actions/a",
                b""
            ),
            Err(SignatureError::OutsideWindow)
        );
        assert_eq!(
            verify(
                &keys,
                Some("1000"),
                Some(&sig),
                699,
                "GET",
                "/v1/actions/a",
                b""
            ),
            Err(SignatureError::OutsideWindow)
        );
        assert_eq!(
            verify(&keys, None, Some(&sig), 1_000, "GET", "/v1/actions/a", b""),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(
                &keys,
                Some("soon"),
                Some(&sig),
                1_000,
                "GET",
                "/v1/actions/a",
                b""
            ),
            Err(SignatureError::BadTimestamp)
        );
    }

    proptest! {
        #[test]
        fn garbage_headers_never_verify_or_panic(ts in ".{0,20}", sig in ".{0,100}") {
            let keys = secrets(&["s3cret-0123456789abc"]);
            let verdict = verify(&keys, Some(&ts), Some(&sig), 1_000, "POST", "/v1/actions", b"{}");
            prop_assert!(verdict.is_err());
        }
    }
}
