//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): each
//! feeds arbitrary bytes to the same parsers the daemon runs on what comes
//! from outside. None may panic, hang or allocate without bound, whatever
//! the bytes; what they return does not matter here (the unit and
//! integration tests check that).

use std::path::Path;
use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use serde_json::Value;

use crate::action::{Action, parse_rfc3339, rfc3339};
use crate::clock::Clock;
use crate::contract::Body;
use crate::env::MapEnv;

/// A fixed instant, so a run is reproducible.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000)
}

fn text(data: &[u8]) -> &str {
    std::str::from_utf8(data).unwrap_or("")
}

/// An action as the control plane or a pusher sends it, and the journal's
/// round trip of it.
pub fn action(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<Value>(data)
        && let Ok(a) = Action::from_value(&v)
    {
        let stored = serde_json::to_string(&a).expect("an action serializes");
        let back: Action = serde_json::from_str(&stored).expect("a stored action reads back");
        assert_eq!(back.id, a.id);
        for event in crate::contract::EventType::ALL {
            if event.as_str() == a.event_type {
                let _ = crate::contract::validate_params(event, &a.params);
                let _ = crate::contract::request_body(event, &a.params, &Default::default());
            }
        }
    }
    let _ = parse_rfc3339(text(data)).map(rfc3339);
}

/// Lease, extend and results answers from the control plane.
pub fn control_plane_answers(data: &[u8]) {
    let asked = data.first().map_or(1, |b| usize::from(*b % 64) + 1);
    let _ = crate::control_plane::read_lease_answer(data, asked);
    let _ = crate::control_plane::read_extend_answer(data);
    let _ = crate::control_plane::read_results_answer(data);
}

/// A pushed request: `METHOD TARGET\n`, header lines `name: value\n`, an
/// empty line, then the body. Signature headers, the query, the trace
/// header and the body are read as the push endpoint reads them.
pub fn push_request(data: &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let (method, target) = lines
        .next()
        .and_then(|l| l.split_once(' '))
        .unwrap_or(("POST", "/v1/actions"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let secrets = [
        SecretString::from("0123456789abcdef0123456789abcdef"),
        SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ];
    let now_unix = 1_796_000_000;
    if let Ok(signed) = crate::daemon::signature::SignedHeaders::from_request(header, now_unix) {
        let _ = signed.webhook_id();
        let _ = signed.verify(&secrets, method, target, body);
    }
    let query = target.split_once('?').map(|(_, q)| q);
    let _ = crate::daemon::push::parse_wait(query);
    let _ = header("traceparent").and_then(crate::telemetry::traces::TraceParent::parse);
    action(body);
}

/// A configuration file. The first line holds `GRANTBRIDGE__A__B=value`
/// overrides separated by `;`; the rest is the TOML.
pub fn config(data: &[u8]) {
    let all = text(data);
    let (overrides, toml) = all.split_once('\n').unwrap_or(("", all));
    let mut env = MapEnv::new();
    for pair in overrides.split(';') {
        if let Some((k, v)) = pair.split_once('=')
            && k.starts_with("GRANTBRIDGE__")
        {
            env = env.with(k, v);
        }
    }
    // Relative key files resolve under a directory that does not exist.
    let origin = Path::new("/nonexistent-grantbridge-fuzz/grantbridge.toml");
    let _ = crate::config::Config::from_toml(toml, origin, &env);
}

/// A credentials file: a service-account key, or an ADC file.
pub fn key_file(data: &[u8]) {
    for loopback in [false, true] {
        let _ = crate::google::key::CredentialsFile::from_json(text(data), "fuzz.json", loopback);
    }
}

/// Token answers: the OAuth token endpoint (both grants, any status), the
/// metadata server, IAM Credentials (`generateIdToken`,
/// `generateAccessToken`), and a bare ID token.
pub fn token_answers(data: &[u8]) {
    use crate::google::fuzz_token_answers;
    let status = data.first().map_or(200, |b| match b % 4 {
        0 => 400,
        1 => 503,
        _ => 200,
    });
    fuzz_token_answers(status, data, &Clock::system());
    let _ = crate::google::IdToken::parse(text(data).to_owned());
}

/// Cloud Functions API answers.
pub fn functions_api(data: &[u8]) {
    crate::google::functions_api::read_every_answer(data);
}

/// A function's answer (any status, body and `Retry-After`), classified and
/// made into what a result stores.
pub fn function_response(data: &[u8]) {
    let (status, rest) = match data {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]) % 600, rest),
        _ => (200, data),
    };
    let (retry_after, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (text(&rest[..i]), &rest[i + 1..]),
        None => ("", rest),
    };
    let retry = crate::retry::parse_retry_after(retry_after, now());
    let body = Body::from_bytes(body);
    let _ = crate::function::outcome::classify(
        status,
        body.as_ref(),
        retry,
        "sa@p.iam.gserviceaccount.com",
    );
    if let Some(b) = &body {
        let _ = crate::engine::cap_body(b, 1024).to_string();
    }
}
