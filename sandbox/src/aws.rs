//! AWS, as far as Google's STS sees it: an AWS identity (an access key for a
//! role ARN) whose signed `GetCallerIdentity` request STS accepts as a
//! subject token of type `urn:ietf:params:aws:token-type:aws4_request`. Real
//! STS replays the request to AWS, which checks the signature; the sandbox
//! plays AWS too and checks it itself (Signature Version 4: HMAC-SHA256 over
//! the canonical request), the signing time within 15 minutes, and that
//! `x-goog-cloud-target-resource` names the provider (google-auth sends it
//! unsigned, Go's library signs it: both are accepted).
//!
//! It must refuse anything it cannot verify, and never echo the request.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{digest, hmac};
use serde_json::Value;

use super::{Sandbox, keys};

/// An AWS access key of a role (see [`Sandbox::create_aws_identity`]).
#[derive(Debug, Clone)]
pub struct AwsIdentity {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The caller's ARN, what `GetCallerIdentity` answers (`assertion.arn`).
    pub arn: String,
}

impl Sandbox {
    /// An AWS access key for `role` in account 123456789012; its signed
    /// `GetCallerIdentity` is a subject token of any provider created with
    /// [`Sandbox::create_workload_identity_provider`], for the subject `arn`
    /// (`google.subject = assertion.arn`).
    pub fn create_aws_identity(&self, role: &str) -> AwsIdentity {
        let identity = AwsIdentity {
            access_key_id: format!("ASIA{}", keys::random_token(16).to_uppercase()),
            secret_access_key: keys::random_token(40),
            arn: format!("arn:aws:sts::123456789012:assumed-role/{role}/i-0sandbox"),
        };
        self.state
            .lock()
            .aws_keys
            .insert(identity.access_key_id.clone(), identity.clone());
        identity
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn mac(key: &[u8], msg: &str) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg.as_bytes())
        .as_ref()
        .to_vec()
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYYMMDDTHHMMSSZ` to a time.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        n(0..4)?,
        n(4..6)?,
        n(6..8)?,
        n(9..11)?,
        n(11..13)?,
        n(13..15)?,
    );
    // Search the day: dates here are near now.
    let approx = (y - 1970) * 365 + (y - 1969) / 4;
    let day = (approx - 2..approx + 400).find(|&day| civil(day) == (y, mo as u32, d as u32))?;
    let secs = day * 86_400 + h * 3600 + mi * 60 + se;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Percent-decoding of the token (it is `quote(json)`).
fn unquote(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The ARN a subject token signed for `provider` speaks for, or why not.
pub(crate) fn verify(
    sandbox: &super::State,
    token: &str,
    provider: &str,
    now: SystemTime,
) -> Result<String, &'static str> {
    const BAD: &str = "The AWS signed request in the subject token could not be verified.";
    let json: Value = serde_json::from_str(&unquote(token).ok_or(BAD)?).map_err(|_| BAD)?;
    let url = url::Url::parse(json["url"].as_str().ok_or(BAD)?).map_err(|_| BAD)?;
    if json["method"] != "POST" || url.scheme() != "https" {
        return Err(BAD);
    }
    let host = url.host_str().ok_or(BAD)?;
    if !(host.starts_with("sts.") && host.ends_with(".amazonaws.com")) {
        return Err("The AWS request must be an STS GetCallerIdentity request.");
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    for h in json["headers"].as_array().ok_or(BAD)? {
        headers.push((
            h["key"].as_str().ok_or(BAD)?.to_owned(),
            h["value"].as_str().ok_or(BAD)?.to_owned(),
        ));
    }
    let get = |k: &str| {
        headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let authorization = get("authorization").ok_or(BAD)?;
    let rest = authorization
        .strip_prefix("AWS4-HMAC-SHA256 Credential=")
        .ok_or(BAD)?;
    let (credential, rest) = rest.split_once(", SignedHeaders=").ok_or(BAD)?;
    let (signed, signature) = rest.split_once(", Signature=").ok_or(BAD)?;
    let mut scope = credential.splitn(5, '/');
    let (akid, date, region, service, kind) = (
        scope.next().ok_or(BAD)?,
        scope.next().ok_or(BAD)?,
        scope.next().ok_or(BAD)?,
        scope.next().ok_or(BAD)?,
        scope.next().ok_or(BAD)?,
    );
    if service != "sts" || kind != "aws4_request" {
        return Err(BAD);
    }
    let amz_date = get("x-amz-date").ok_or(BAD)?;
    let signed_at = parse_amz_date(amz_date).ok_or(BAD)?;
    let skew = now
        .duration_since(signed_at)
        .or_else(|e| Ok::<_, ()>(e.duration()))
        .unwrap_or_default();
    if skew > Duration::from_secs(15 * 60) || !amz_date.starts_with(date) {
        return Err("The AWS signed request has expired.");
    }
    let target = get("x-goog-cloud-target-resource").ok_or(BAD)?;
    if target.trim_start_matches("https:") != provider {
        return Err("The AWS request's x-goog-cloud-target-resource does not match the audience.");
    }
    let names: Vec<&str> = signed.split(';').collect();
    if !names.contains(&"host") || !names.contains(&"x-amz-date") {
        return Err(BAD);
    }
    let mut canonical_headers = String::new();
    for name in &names {
        let value = if *name == "host" {
            get("host").unwrap_or(host)
        } else {
            get(name).ok_or(BAD)?
        };
        canonical_headers.push_str(&format!("{name}:{}\n", value.trim()));
    }
    let mut query: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (encode(&k), encode(&v)))
        .collect();
    query.sort();
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let path = if url.path().is_empty() {
        "/"
    } else {
        url.path()
    };
    let empty = hex(digest::digest(&digest::SHA256, b"").as_ref());
    let canonical = format!("POST\n{path}\n{query}\n{canonical_headers}\n{signed}\n{empty}");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/sts/aws4_request\n{}",
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let identity = sandbox.lock().aws_keys.get(akid).cloned().ok_or(BAD)?;
    let mut key = mac(
        format!("AWS4{}", identity.secret_access_key).as_bytes(),
        date,
    );
    for part in [region, "sts", "aws4_request"] {
        key = mac(&key, part);
    }
    if hex(&mac(&key, &to_sign)) != signature {
        return Err(BAD);
    }
    Ok(identity.arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_parse() {
        let t = parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_440_938_160
        );
        assert!(parse_amz_date("2015-08-30").is_none());
        assert_eq!(unquote("%7B%22a%22%3A1%7D").as_deref(), Some("{\"a\":1}"));
    }
}
