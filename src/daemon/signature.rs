//! Push-request signatures (docs/protocol.md §4): `X-Grantbridge-Signature:
//! v1=<hex HMAC-SHA256(secret, "<timestamp>.<METHOD>.<path and query>.<body>")>`
//! with `X-Grantbridge-Timestamp` within 300 s of our clock. Several secrets
//! may be valid at once (rotation); comparison is constant-time.
//!
//! It must never reveal which secret matched or echo a signature back, and
//! the work an unsigned request can cause is bounded: at most
//! [`MAX_SIGNATURES`] candidates, one MAC per configured secret.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use secrecy::{ExposeSecret, SecretString};

pub const TIMESTAMP_HEADER: &str = "x-grantbridge-timestamp";
pub const SIGNATURE_HEADER: &str = "x-grantbridge-signature";
pub const WINDOW_SECS: u64 = 300;
/// Signatures one header may carry: enough for a sender rotating its secret,
/// few enough that checking them costs nothing an unauthenticated client
/// could multiply.
pub const MAX_SIGNATURES: usize = 8;
/// Longest signature header looked at (eight `v1=` entries and separators).
const MAX_SIGNATURE_HEADER: usize = 1024;

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
    #[error(
        "X-Grantbridge-Signature holds more than 8 signatures or 1024 bytes; send the current and the next one at most"
    )]
    TooManySignatures,
    #[error("signature does not match")]
    Mismatch,
}

/// The signature headers of a request, checked for shape and freshness:
/// everything that can be decided before the body is read.
#[derive(Debug, Clone)]
pub struct SignedHeaders {
    timestamp: String,
    /// The `v1=` signatures, decoded (other schemes are ignored).
    candidates: Vec<[u8; 32]>,
}

impl SignedHeaders {
    /// Checks presence, the timestamp window and the signature count; cheap,
    /// so it runs before the body is read.
    pub fn parse(
        timestamp: Option<&str>,
        signature: Option<&str>,
        now_unix: i64,
    ) -> Result<Self, SignatureError> {
        let (Some(ts), Some(sig)) = (timestamp, signature) else {
            return Err(SignatureError::Missing);
        };
        let ts = ts.trim();
        let ts_num: i64 = ts.parse().map_err(|_| SignatureError::BadTimestamp)?;
        if now_unix.abs_diff(ts_num) > WINDOW_SECS {
            return Err(SignatureError::OutsideWindow);
        }
        if sig.len() > MAX_SIGNATURE_HEADER || sig.split(',').count() > MAX_SIGNATURES {
            return Err(SignatureError::TooManySignatures);
        }
        // A sender mid-rotation may send several: "v1=aa, v1=bb".
        let candidates = sig
            .split(',')
            .filter_map(|part| part.trim().strip_prefix("v1="))
            .filter_map(|h| hex::decode(h).ok())
            .filter_map(|tag| <[u8; 32]>::try_from(tag).ok())
            .collect();
        Ok(Self {
            timestamp: ts.to_owned(),
            candidates,
        })
    }

    /// The signature that matches one of `secrets`, if one does: one MAC per
    /// secret, compared in constant time with every candidate.
    pub fn verify(
        &self,
        secrets: &[SecretString],
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<[u8; 32], SignatureError> {
        for secret in secrets {
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret().as_bytes());
            let mut ctx = hmac::Context::with_key(&key);
            for part in [
                self.timestamp.as_bytes(),
                b".",
                method.as_bytes(),
                b".",
                path_and_query.as_bytes(),
                b".",
                body,
            ] {
                ctx.update(part);
            }
            let tag = ctx.sign();
            if let Some(c) = self
                .candidates
                .iter()
                .find(|c| verify_slices_are_equal(tag.as_ref(), &c[..]).is_ok())
            {
                return Ok(*c);
            }
        }
        Err(SignatureError::Mismatch)
    }
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
    SignedHeaders::parse(timestamp, signature, now_unix)?
        .verify(secrets, method, path_and_query, body)
        .map(drop)
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

    #[test]
    fn the_window_check_is_exact_at_the_extremes() {
        let keys = secrets(&["s3cret-0123456789abc"]);
        let sig = sign("s3cret-0123456789abc", 1_000, "GET", "/", b"");
        // now - 2^63 would overflow `(now - ts).abs()`.
        for ts in [i64::MIN, i64::MIN + 1, i64::MAX, 1_000 - (1 << 62)] {
            assert_eq!(
                verify(
                    &keys,
                    Some(&ts.to_string()),
                    Some(&sig),
                    1_000,
                    "GET",
                    "/",
                    b""
                ),
                Err(SignatureError::OutsideWindow),
                "{ts}"
            );
        }
        assert_eq!(
            SignedHeaders::parse(Some(&i64::MIN.to_string()), Some(&sig), i64::MAX).unwrap_err(),
            SignatureError::OutsideWindow
        );
    }

    #[test]
    fn more_than_eight_signatures_are_refused_before_any_mac() {
        let keys = secrets(&["s3cret-0123456789abc"]);
        let good = sign("s3cret-0123456789abc", 1_000, "POST", "/v1/actions", b"{}");
        let many = std::iter::repeat_n(format!("v1={}", "00".repeat(32)), 8)
            .chain([good.clone()])
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            SignedHeaders::parse(Some("1000"), Some(&many), 1_000).unwrap_err(),
            SignatureError::TooManySignatures
        );
        let eight = std::iter::repeat_n(format!("v1={}", "00".repeat(32)), 7)
            .chain([good])
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            verify(
                &keys,
                Some("1000"),
                Some(&eight),
                1_000,
                "POST",
                "/v1/actions",
                b"{}"
            ),
            Ok(())
        );
        let long = format!("v1={}", "a".repeat(2000));
        assert_eq!(
            SignedHeaders::parse(Some("1000"), Some(&long), 1_000).unwrap_err(),
            SignatureError::TooManySignatures
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
