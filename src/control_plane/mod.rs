//! The control plane client (docs/protocol.md §3): lease actions (long poll), extend
//! leases, report results in batches, send heartbeats. Every answer is parsed
//! as hostile input; every failure is classified so the daemon knows whether to
//! back off, retry slowly (bad token) or drop a lease.
//!
//! It must only call the configured base URL and must never log the connector
//! token or result bodies.

use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use crate::action::{Action, ActionResult, InvalidAction, parse_rfc3339};
use crate::health::IntegrationHealth;
use crate::http::{ExchangeError, exchange};
use crate::retry::parse_retry_after;

/// Answers larger than this are not a control plane's.
const MAX_ANSWER: usize = 32 * 1024 * 1024;

/// What went wrong talking to the control plane.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CpError {
    /// 401/403: the connector token is wrong or revoked.
    #[error(
        "the control plane refused the connector token (HTTP {status}): it is wrong or was revoked; check control_plane.token_file / token_env"
    )]
    Unauthorized { status: u16 },
    /// 429/5xx/connection errors: back off (honouring `retry_after`).
    #[error("control plane unavailable: {reason}")]
    Unavailable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// 409 on extend: another instance may have the action now.
    #[error("lease lost for action {0}")]
    LeaseLost(String),
    /// A 4xx we did not expect, or an answer that is not the protocol's.
    #[error("control plane protocol error: {0}")]
    Protocol(String),
}

impl CpError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unauthorized { .. } => "unauthorized",
            Self::Unavailable { .. } => "unavailable",
            Self::LeaseLost(_) => "lease_lost",
            Self::Protocol(_) => "protocol",
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A leased action as it arrived: parsed, or why it could not be.
#[derive(Debug, Clone)]
pub struct Leased {
    pub action: Result<Action, InvalidAction>,
    pub lease_token: String,
    pub expires_at: SystemTime,
}

/// The answer to a results report.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReportAnswer {
    #[serde(default)]
    pub accepted: Vec<String>,
    #[serde(default)]
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Rejected {
    pub action_id: String,
    #[serde(default)]
    pub reason: String,
}

/// One result to report, with the lease it was worked under (poll mode).
#[derive(Debug, Clone, Serialize)]
pub struct ReportItem {
    #[serde(flatten)]
    pub result: ActionResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<String>,
}

/// Heartbeat body.
#[derive(Debug, Clone, Serialize)]
pub struct Heartbeat {
    pub instance_id: String,
    pub version: String,
    pub started_at: String,
    pub integrations: Vec<IntegrationStatus>,
    pub stats: Value,
}

/// One entry of a heartbeat's `integrations` (protocol §3).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IntegrationStatus {
    pub name: String,
    pub function_url: String,
    /// "ok", "degraded" or "error".
    pub status: &'static str,
    pub detail: String,
    /// A link to the application the function manages (`access_details`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_details: Option<String>,
}

impl From<IntegrationHealth> for IntegrationStatus {
    fn from(h: IntegrationHealth) -> Self {
        Self {
            name: h.name,
            function_url: h.function_url,
            status: h.health.as_str(),
            detail: h.detail,
            access_details: h.access_details,
        }
    }
}

#[derive(Clone)]
pub struct ControlPlaneClient {
    http: reqwest::Client,
    base: Url,
    connector_id: String,
    /// Swappable: a rotated token takes effect on reload (SIGHUP).
    token: std::sync::Arc<std::sync::RwLock<SecretString>>,
}

impl std::fmt::Debug for ControlPlaneClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneClient")
            .field("base", &self.base.as_str())
            .field("connector_id", &self.connector_id)
            .finish()
    }
}

/// Each action kept raw: one action nested past what a JSON tree may hold
/// (10,000 levels in its params, say) fails alone, not the whole answer
/// with every good action in it.
#[derive(Deserialize)]
struct LeaseAnswer {
    actions: Vec<Box<serde_json::value::RawValue>>,
}

/// The parts of an action that survive any nesting below them.
#[derive(Deserialize)]
struct ShallowAction {
    id: Option<Value>,
    lease: Option<Value>,
}

impl ControlPlaneClient {
    pub fn new(
        http: reqwest::Client,
        base: Url,
        connector_id: String,
        token: SecretString,
    ) -> Self {
        Self {
            http,
            base,
            connector_id,
            token: std::sync::Arc::new(std::sync::RwLock::new(token)),
        }
    }

    /// Uses `token` from now on (every clone of this client).
    pub fn set_token(&self, token: SecretString) {
        *self.token.write().expect("token lock") = token;
    }

    /// The base URL plus `v1/connectors/ID/` and `tail`, each segment
    /// percent-encoded. `.` and `..` are refused: a URL resolves them (even
    /// as `%2E%2E`) as path steps, which would drop the id from the path.
    /// Ids are validated long before, so this is a last guard.
    fn url(&self, tail: &[&str]) -> Result<Url, CpError> {
        if tail.iter().any(|s| matches!(*s, "." | "..")) {
            return Err(CpError::Protocol(
                "refusing a URL with a `.` or `..` path segment (not a valid id)".into(),
            ));
        }
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http(s) base URL")
            .pop_if_empty()
            .extend(["v1", "connectors", &self.connector_id])
            .extend(tail);
        Ok(url)
    }

    async fn post<T: Serialize>(
        &self,
        url: Url,
        body: &T,
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), CpError> {
        // A copy, so no lock is held across the request.
        let token: SecretString = self.token.read().expect("token lock").clone();
        let request = self
            .http
            .post(url.clone())
            .timeout(timeout)
            .bearer_auth(token.expose_secret())
            .json(body);
        let retry_after = |headers: &http::HeaderMap| {
            headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()))
        };
        let answer = exchange(request, MAX_ANSWER)
            .await
            .map_err(|e| CpError::Unavailable {
                reason: format!("{}: {e}", url.path()),
                retry_after: match &e {
                    ExchangeError::Body { headers, .. } => retry_after(headers),
                    ExchangeError::Send(_) => None,
                },
            })?;
        let (status, body) = (answer.status, answer.body);
        let retry_after = retry_after(&answer.headers);
        match status {
            200..=299 => Ok((status, body.to_vec())),
            401 | 403 => Err(CpError::Unauthorized { status }),
            408 | 429 | 500..=599 => Err(CpError::Unavailable {
                reason: format!("{} answered HTTP {status}", url.path()),
                retry_after,
            }),
            _ => Ok((status, body.to_vec())),
        }
    }

    /// Leases up to `max_actions`, holding up to `wait` while none are available.
    pub async fn lease(
        &self,
        instance_id: &str,
        max_actions: u32,
        wait: Duration,
        lease: Duration,
    ) -> Result<Vec<Leased>, CpError> {
        let body = serde_json::json!({
            "instance_id": instance_id,
            "max_actions": max_actions,
            "wait_seconds": wait.as_secs().min(30),
            "lease_seconds": lease.as_secs().max(1),
        });
        let (status, bytes) = self
            .post(self.url(&["lease"])?, &body, wait + Duration::from_secs(30))
            .await?;
        if status != 200 {
            return Err(CpError::Protocol(format!("lease answered HTTP {status}")));
        }
        read_lease_answer(&bytes, max_actions as usize)
    }

    /// Extends a lease; `LeaseLost` when the control plane says another has it.
    pub async fn extend(
        &self,
        action_id: &str,
        lease_token: &str,
        lease: Duration,
    ) -> Result<SystemTime, CpError> {
        let body = serde_json::json!({"lease_token": lease_token, "lease_seconds": lease.as_secs().max(1)});
        let (status, bytes) = self
            .post(
                self.url(&["actions", action_id, "extend"])?,
                &body,
                Duration::from_secs(15),
            )
            .await?;
        match status {
            200 => read_extend_answer(&bytes),
            404 | 409 => Err(CpError::LeaseLost(action_id.to_owned())),
            s => Err(CpError::Protocol(format!("extend answered HTTP {s}"))),
        }
    }

    /// Reports a batch of results.
    pub async fn report(&self, items: &[ReportItem]) -> Result<ReportAnswer, CpError> {
        #[derive(Serialize)]
        struct Results<'a> {
            results: &'a [ReportItem],
        }
        let body = Results { results: items };
        let (status, bytes) = self
            .post(self.url(&["results"])?, &body, Duration::from_secs(30))
            .await?;
        if status != 200 {
            return Err(CpError::Protocol(format!("results answered HTTP {status}")));
        }
        read_results_answer(&bytes)
    }

    pub async fn heartbeat(&self, hb: &Heartbeat) -> Result<(), CpError> {
        let (status, _) = self
            .post(self.url(&["heartbeat"])?, hb, Duration::from_secs(15))
            .await?;
        if status == 200 {
            Ok(())
        } else {
            Err(CpError::Protocol(format!(
                "heartbeat answered HTTP {status}"
            )))
        }
    }
}

/// A lease answer (`{"actions": [...]}`), held to the `asked` first actions.
/// Pure, so it can be tested (and fuzzed) alone.
pub(crate) fn read_lease_answer(bytes: &[u8], asked: usize) -> Result<Vec<Leased>, CpError> {
    let answer: LeaseAnswer = serde_json::from_slice(bytes)
        .map_err(|_| CpError::Protocol("lease answer is not {\"actions\":[...]}".into()))?;
    if answer.actions.len() > asked {
        // Taking more than asked would hoard actions (and memory) the
        // engine has no room for; the rest go back when their leases end.
        tracing::warn!(
            asked,
            answered = answer.actions.len(),
            "the control plane leased more actions than asked for; taking the first, the rest return when their leases expire"
        );
    }
    let mut skipped = 0usize;
    let mut first_skipped = None;
    let leased = answer
        .actions
        .iter()
        .take(asked)
        .filter_map(|raw| {
            let (leased, id) = match serde_json::from_str::<Value>(raw.get()) {
                Ok(v) => match parse_leased(v) {
                    Ok(leased) => (Some(leased), None),
                    // Only a skipped action's id is kept, for the log.
                    Err(v) => (None, v.get("id").and_then(Value::as_str).map(str::to_owned)),
                },
                Err(_) => too_deep(raw.get()),
            };
            if leased.is_none() {
                skipped += 1;
                first_skipped.get_or_insert_with(|| id.unwrap_or_else(|| "?".to_owned()));
            }
            leased
        })
        .collect();
    if let Some(first) = first_skipped {
        // One line per answer, however many elements were bad.
        tracing::error!(
            skipped,
            first_id = %crate::telemetry::Escaped(&first),
            "leased action(s) without a valid lease {{token, expires_at}}; skipped (their leases expire on the control plane)"
        );
    }
    Ok(leased)
}

/// An extend answer: `{"expires_at"}`.
pub(crate) fn read_extend_answer(bytes: &[u8]) -> Result<SystemTime, CpError> {
    #[derive(Deserialize)]
    struct A {
        expires_at: String,
    }
    let a: A = serde_json::from_slice(bytes)
        .map_err(|_| CpError::Protocol("extend answer lacks expires_at".into()))?;
    parse_rfc3339(&a.expires_at)
        .ok_or_else(|| CpError::Protocol("extend expires_at is not RFC 3339".into()))
}

/// A results answer: `{"accepted", "rejected"}`.
pub(crate) fn read_results_answer(bytes: &[u8]) -> Result<ReportAnswer, CpError> {
    serde_json::from_slice(bytes)
        .map_err(|_| CpError::Protocol("results answer is not {\"accepted\",\"rejected\"}".into()))
}

/// One element of a lease answer. Without a lease token we cannot report on
/// it: it is skipped (logged) and the control plane hands it out again.
/// A leased action JSON could not hold as a tree (nested past serde_json's
/// 128 levels): read its id and lease only, and fail it as `invalid_action`
/// so the control plane learns why. Also its id, for the log.
fn too_deep(raw: &str) -> (Option<Leased>, Option<String>) {
    let Ok(shallow) = serde_json::from_str::<ShallowAction>(raw) else {
        return (None, None);
    };
    let shell = serde_json::json!({"lease": shallow.lease});
    let leased = lease_of(&shell).map(|(token, expires_at)| Leased {
        action: Err(InvalidAction {
            id: shallow
                .id
                .as_ref()
                .and_then(Value::as_str)
                .filter(|id| crate::action::valid_action_id(id))
                .map(str::to_owned),
            reason: format!(
                "the action nests deeper than {} levels of arrays and objects",
                crate::contract::MAX_JSON_DEPTH
            ),
        }),
        lease_token: token,
        expires_at,
    });
    let id = shallow
        .id
        .as_ref()
        .and_then(Value::as_str)
        .map(str::to_owned);
    (leased, id)
}

/// The `lease` of a leased action: its token and expiry, when both are valid.
fn lease_of(v: &Value) -> Option<(String, SystemTime)> {
    let lease = v.get("lease");
    let token = lease
        .and_then(|l| l.get("token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() <= 1024);
    let expires = lease
        .and_then(|l| l.get("expires_at"))
        .and_then(Value::as_str)
        .and_then(parse_rfc3339);
    Some((token?.to_owned(), expires?))
}

/// A leased action, or the value back when it has no valid lease.
fn parse_leased(v: Value) -> Result<Leased, Value> {
    let Some((lease_token, expires_at)) = lease_of(&v) else {
        return Err(v);
    };
    Ok(Leased {
        action: Action::from_json(v),
        lease_token,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_stay_under_the_base() {
        let c = ControlPlaneClient::new(
            reqwest::Client::new(),
            Url::parse("https://cp.example.com/api/").unwrap(),
            "conn-1".into(),
            SecretString::from("secret-token"),
        );
        assert_eq!(
            c.url(&["lease"]).unwrap().as_str(),
            "https://cp.example.com/api/v1/connectors/conn-1/lease"
        );
        let u = c.url(&["actions", "../../evil", "extend"]).unwrap();
        assert!(
            u.as_str()
                .starts_with("https://cp.example.com/api/v1/connectors/conn-1/actions/"),
            "{u}"
        );
        // A dot segment would drop the action id from the path: refused.
        assert!(c.url(&["actions", "..", "extend"]).is_err());
        assert!(c.url(&["actions", ".", "extend"]).is_err());
        assert!(!format!("{c:?}").contains("secret-token"));
    }

    #[test]
    fn leased_actions_parse_or_explain() {
        let good = serde_json::json!({"id":"a1","integration":"i","event_type":"get-status","lease":{"token":"lt","expires_at":"2026-11-22T10:00:00Z"}});
        let l = parse_leased(good.clone()).unwrap();
        assert_eq!(l.action.unwrap().id, "a1");
        let bad_action = serde_json::json!({"id":"a2","integration":"i","event_type":"x","params":7,"lease":{"token":"lt","expires_at":"2026-11-22T10:00:00Z"}});
        assert_eq!(
            parse_leased(bad_action.clone())
                .unwrap()
                .action
                .unwrap_err()
                .id
                .as_deref(),
            Some("a2")
        );
        assert!(parse_leased(serde_json::json!({"id":"a3"})).is_err());
    }
}
