//! Push-request signatures (docs/protocol.md §4), in two schemes, chosen per
//! configured secret:
//!
//! - grantbridge's own: `X-Grantbridge-Signature: v1=<hex HMAC-SHA256(secret,
//!   "<timestamp>.<METHOD>.<path and query>.<body>")>` with
//!   `X-Grantbridge-Timestamp`; any secret not written `whsec_...`;
//! - Standard Webhooks (standard-webhooks `spec/standard-webhooks.md`):
//!   `webhook-signature: v1,<base64 HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")>`
//!   (space-separated for rotation) with `webhook-id` and `webhook-timestamp`;
//!   a secret written `whsec_<base64 key>`, as the standard's libraries make them.
//!
//! Timestamps must be within 300 s of our clock. Several secrets may be valid
//! at once (rotation); comparison is constant-time. Written here rather than
//! taken from the `standardwebhooks` crate: that crate reads the wall clock
//! itself (no injected clock), subtracts timestamps unchecked (the overflow
//! this module must not have), bounds no candidate list, and brings a second
//! base64 and SHA-256 implementation.
//!
//! It must never reveal which secret matched or echo a signature back, and
//! the work an unsigned request can cause is bounded: at most
//! [`MAX_SIGNATURES`] candidates, one MAC per configured secret.

use std::borrow::Cow;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};

pub const TIMESTAMP_HEADER: &str = "x-grantbridge-timestamp";
pub const SIGNATURE_HEADER: &str = "x-grantbridge-signature";
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";
/// How a Standard Webhooks secret is written: `whsec_` and the key in base64.
pub const STANDARD_SECRET_PREFIX: &str = "whsec_";
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
    #[error("webhook-id must be 1-128 characters of [A-Za-z0-9._:-] (it is the action id)")]
    BadWebhookId,
    #[error("signature does not match")]
    Mismatch,
}

/// Which signing scheme a request (or a secret) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Grantbridge,
    StandardWebhooks,
}

/// The key of a Standard Webhooks secret (`whsec_<base64>`), or `None` for a
/// grantbridge secret. `Some(Err)` when it is written `whsec_` but its key
/// is not base64.
pub fn standard_key(secret: &str) -> Option<Result<Vec<u8>, base64::DecodeError>> {
    let b64 = secret.strip_prefix(STANDARD_SECRET_PREFIX)?;
    let b64 = b64.trim_end_matches('=');
    Some(base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
}

/// A configured secret's scheme and HMAC key.
fn key_of(secret: &SecretString) -> (Scheme, Option<Cow<'_, [u8]>>) {
    let text = secret.expose_secret();
    match standard_key(text) {
        Some(key) => (Scheme::StandardWebhooks, key.ok().map(Cow::Owned)),
        None => (Scheme::Grantbridge, Some(Cow::Borrowed(text.as_bytes()))),
    }
}

/// The signature headers of a request, checked for shape and freshness:
/// everything that can be decided before the body is read.
#[derive(Debug, Clone)]
pub struct SignedHeaders {
    scheme: Scheme,
    timestamp: String,
    /// `webhook-id` (Standard Webhooks only).
    webhook_id: Option<String>,
    /// The `v1` signatures, decoded (other versions are ignored).
    candidates: Vec<[u8; 32]>,
}

impl SignedHeaders {
    /// The signature headers of a request in whichever scheme it uses: any
    /// `webhook-*` header means Standard Webhooks.
    pub fn from_request<'a>(
        header: impl Fn(&str) -> Option<&'a str>,
        now_unix: i64,
    ) -> Result<Self, SignatureError> {
        let standard = [
            WEBHOOK_ID_HEADER,
            WEBHOOK_TIMESTAMP_HEADER,
            WEBHOOK_SIGNATURE_HEADER,
        ]
        .iter()
        .any(|h| header(h).is_some());
        if standard {
            Self::parse_standard(
                header(WEBHOOK_ID_HEADER),
                header(WEBHOOK_TIMESTAMP_HEADER),
                header(WEBHOOK_SIGNATURE_HEADER),
                now_unix,
            )
        } else {
            Self::parse(header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER), now_unix)
        }
    }

    /// Standard Webhooks headers, checked as [`SignedHeaders::parse`] checks
    /// grantbridge's.
    pub fn parse_standard(
        id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
        now_unix: i64,
    ) -> Result<Self, SignatureError> {
        let (Some(id), Some(ts), Some(sig)) = (id, timestamp, signature) else {
            return Err(SignatureError::Missing);
        };
        if !crate::action::valid_id(id) {
            return Err(SignatureError::BadWebhookId);
        }
        let ts = ts.trim();
        let ts_num: i64 = ts.parse().map_err(|_| SignatureError::BadTimestamp)?;
        if now_unix.abs_diff(ts_num) > WINDOW_SECS {
            return Err(SignatureError::OutsideWindow);
        }
        if sig.len() > MAX_SIGNATURE_HEADER || sig.split(' ').count() > MAX_SIGNATURES {
            return Err(SignatureError::TooManySignatures);
        }
        let candidates = sig
            .split(' ')
            .filter_map(|part| part.strip_prefix("v1,"))
            .filter_map(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .filter_map(|tag| <[u8; 32]>::try_from(tag).ok())
            .collect();
        Ok(Self {
            scheme: Scheme::StandardWebhooks,
            timestamp: ts.to_owned(),
            webhook_id: Some(id.to_owned()),
            candidates,
        })
    }

    /// The scheme the request is signed with.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// `webhook-id` of a Standard Webhooks request: the action's id.
    pub fn webhook_id(&self) -> Option<&str> {
        self.webhook_id.as_deref()
    }

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
            scheme: Scheme::Grantbridge,
            timestamp: ts.to_owned(),
            webhook_id: None,
            candidates,
        })
    }

    /// The signature that matches one of `secrets` of the request's scheme,
    /// if one does: one MAC per such secret, compared in constant time with
    /// every candidate.
    pub fn verify(
        &self,
        secrets: &[SecretString],
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<[u8; 32], SignatureError> {
        for secret in secrets {
            let (scheme, Some(key)) = key_of(secret) else {
                continue;
            };
            if scheme != self.scheme {
                continue;
            }
            let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
            let mut ctx = hmac::Context::with_key(&key);
            let parts: [&[u8]; 7] = match self.scheme {
                Scheme::Grantbridge => [
                    self.timestamp.as_bytes(),
                    b".",
                    method.as_bytes(),
                    b".",
                    path_and_query.as_bytes(),
                    b".",
                    body,
                ],
                Scheme::StandardWebhooks => [
                    self.webhook_id.as_deref().unwrap_or_default().as_bytes(),
                    b".",
                    self.timestamp.as_bytes(),
                    b".",
                    body,
                    b"",
                    b"",
                ],
            };
            for part in parts {
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

    /// The spec's example: secret `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`,
    /// id `msg_p5jXN8AQM9LWM0D4loKWxJek`, timestamp 1614265330, body
    /// `{"test": 2432232314}`, signature
    /// `v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=` (the same vector the
    /// official libraries test with).
    #[test]
    fn the_standard_webhooks_example_verifies() {
        let keys = secrets(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]);
        let signed = SignedHeaders::parse_standard(
            Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
            Some("1614265330"),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            1_614_265_330,
        )
        .unwrap();
        assert_eq!(signed.scheme(), Scheme::StandardWebhooks);
        assert!(
            signed
                .verify(&keys, "POST", "/v1/actions", br#"{"test": 2432232314}"#)
                .is_ok()
        );
        assert_eq!(
            signed.verify(&keys, "POST", "/v1/actions", br#"{"test": 2432232315}"#),
            Err(SignatureError::Mismatch)
        );
        // A grantbridge secret never verifies a Standard Webhooks signature.
        let plain = secrets(&["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]);
        assert_eq!(
            signed.verify(&plain, "POST", "/v1/actions", br#"{"test": 2432232314}"#),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn standard_webhooks_headers_are_bounded_like_ours() {
        let sig = format!("v1,{}", "A".repeat(44));
        assert_eq!(
            SignedHeaders::parse_standard(Some("m1"), Some("1000"), Some(&sig), 1_301).unwrap_err(),
            SignatureError::OutsideWindow
        );
        assert_eq!(
            SignedHeaders::parse_standard(Some("m1"), Some(&i64::MIN.to_string()), Some(&sig), 0)
                .unwrap_err(),
            SignatureError::OutsideWindow
        );
        let nine = vec![sig.clone(); 9].join(" ");
        assert_eq!(
            SignedHeaders::parse_standard(Some("m1"), Some("1000"), Some(&nine), 1_000)
                .unwrap_err(),
            SignatureError::TooManySignatures
        );
        assert_eq!(
            SignedHeaders::parse_standard(Some("a b"), Some("1000"), Some(&sig), 1_000)
                .unwrap_err(),
            SignatureError::BadWebhookId
        );
        assert_eq!(
            SignedHeaders::parse_standard(None, Some("1000"), Some(&sig), 1_000).unwrap_err(),
            SignatureError::Missing
        );
        // Any webhook-* header selects the scheme.
        let headers = |name: &str| (name == WEBHOOK_ID_HEADER).then_some("m1");
        assert_eq!(
            SignedHeaders::from_request(headers, 1_000).unwrap_err(),
            SignatureError::Missing
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
