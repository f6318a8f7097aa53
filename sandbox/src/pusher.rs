//! A control plane's side of push mode (docs/protocol.md §4): signs requests
//! with `X-Grantbridge-Timestamp` and `X-Grantbridge-Signature: v1=<hex
//! HMAC-SHA256(secret, "<timestamp>.<METHOD>.<path and query>.<body>")>` and
//! sends them to a connector's push endpoint.
//!
//! Written from the protocol document, not with the connector's verifier: the
//! two sides must agree because they both follow the document.

use std::net::SocketAddr;

use aws_lc_rs::hmac;

use crate::Clock;

/// The `X-Grantbridge-Signature` value for a request.
pub fn signature(
    secret: &str,
    timestamp: i64,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    for part in [
        timestamp.to_string().as_bytes(),
        b".",
        method.as_bytes(),
        b".",
        path_and_query.as_bytes(),
        b".",
    ] {
        ctx.update(part);
    }
    ctx.update(body);
    format!("v1={}", hex::encode(ctx.sign().as_ref()))
}

/// Sends signed requests to one connector's push endpoint.
#[derive(Debug, Clone)]
pub struct Pusher {
    addr: SocketAddr,
    secret: String,
    http: reqwest::Client,
}

impl Pusher {
    pub fn new(addr: SocketAddr, secret: &str) -> Self {
        Self {
            addr,
            secret: secret.to_owned(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("a plain HTTP client builds"),
        }
    }

    /// Sends `method path` with `body`, signed `ts_offset` seconds away from now.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: &str,
        ts_offset: i64,
    ) -> reqwest::Result<reqwest::Response> {
        self.send_with_secret(&self.secret, method, path, body, ts_offset)
            .await
    }

    /// The same, signed with another secret (a rotated or a wrong one).
    pub async fn send_with_secret(
        &self,
        secret: &str,
        method: &str,
        path: &str,
        body: &str,
        ts_offset: i64,
    ) -> reqwest::Result<reqwest::Response> {
        self.send_signed(secret, method, path, body, ts_offset, &[])
            .await
    }

    /// A signed `POST /v1/actions` that also carries `headers` (a
    /// `traceparent`, say).
    pub async fn push_with_headers(
        &self,
        body: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Result<reqwest::Response> {
        self.send_signed(&self.secret, "POST", "/v1/actions", body, 0, headers)
            .await
    }

    async fn send_signed(
        &self,
        secret: &str,
        method: &str,
        path: &str,
        body: &str,
        ts_offset: i64,
        headers: &[(&str, &str)],
    ) -> reqwest::Result<reqwest::Response> {
        let ts = Clock::system().unix_secs() + ts_offset;
        let method_v: reqwest::Method = method.parse().unwrap_or(reqwest::Method::POST);
        let mut request = self
            .http
            .request(method_v, format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
            .header("content-type", "application/json")
            .header("x-grantbridge-timestamp", ts.to_string())
            .header(
                "x-grantbridge-signature",
                signature(secret, ts, method, path, body.as_bytes()),
            )
            .body(body.to_owned())
            .send()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_of_the_documented_message() {
        // HMAC-SHA256("k", "1.POST./v1/actions.{}"), computed independently.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k");
        let expected = hex::encode(hmac::sign(&key, b"1.POST./v1/actions.{}").as_ref());
        assert_eq!(
            signature("k", 1, "POST", "/v1/actions", b"{}"),
            format!("v1={expected}")
        );
    }
}
