//! Integration health: how each configured integration is doing, from two
//! sources. The engine records the outcome of every call; the periodic online
//! checks record their verdicts. The heartbeat and `/readyz` read the worse of
//! the two for each integration.
//!
//! It knows nothing of the control plane's wire format or of the checks
//! themselves: callers translate into and out of [`Health`].

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::Integration;
use crate::contract::ErrorCode;

/// How an integration is doing, from best to worst; `max` picks the worse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    #[default]
    Ok,
    /// Working, or likely to, with a problem worth a look (a 5xx streak, a
    /// function deploying, a warning from the online checks).
    Degraded,
    /// Not working until someone acts (permission denied, credentials refused,
    /// the function does not exist).
    Error,
}

impl Health {
    /// The protocol's word for it (heartbeat `integrations[].status`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Degraded => "degraded",
            Self::Error => "error",
        }
    }

    /// What a call that ended with `error` (none: it succeeded) says about
    /// the integration. A function that answered, even with an error, is
    /// reachable and lets us in.
    pub fn of_call(error: Option<ErrorCode>) -> Self {
        match error {
            Some(ErrorCode::PermissionDenied | ErrorCode::Credentials) => Self::Error,
            Some(ErrorCode::FunctionUnavailable) => Self::Degraded,
            _ => Self::Ok,
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reading: a health and why (empty when there is nothing to say).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    pub health: Health,
    pub detail: String,
}

impl Reading {
    /// At most this many characters of detail are kept per reading.
    const MAX_DETAIL: usize = 300;

    pub fn new(health: Health, detail: &str) -> Self {
        Self {
            health,
            detail: detail.chars().take(Self::MAX_DETAIL).collect(),
        }
    }
}

/// An integration's combined health, as heartbeats and `/readyz` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationHealth {
    pub name: String,
    pub function_url: String,
    /// The integration's `access_details`, as configured.
    pub access_details: Option<String>,
    pub health: Health,
    pub detail: String,
}

/// The latest reading per integration from each source.
#[derive(Debug, Default)]
pub struct HealthBoard {
    calls: Mutex<HashMap<String, Reading>>,
    checks: Mutex<HashMap<String, Reading>>,
}

impl HealthBoard {
    /// Records the outcome of a call to `integration`'s function.
    pub fn record_call(&self, integration: &str, error: Option<(ErrorCode, &str)>) {
        let reading = match error {
            None => Reading::default(),
            Some((code, message)) => match Health::of_call(Some(code)) {
                Health::Ok => Reading::default(),
                health => Reading::new(health, message),
            },
        };
        self.calls
            .lock()
            .expect("health lock")
            .insert(integration.to_owned(), reading);
    }

    /// Replaces every online-check reading with this round's.
    pub fn record_checks(&self, readings: impl IntoIterator<Item = (String, Reading)>) {
        let mut checks = self.checks.lock().expect("health lock");
        checks.clear();
        checks.extend(readings);
    }

    /// Each of `integrations`' health: the worse of the last call and the
    /// last online check, with both details.
    pub fn report<'a>(
        &self,
        integrations: impl IntoIterator<Item = &'a Integration>,
    ) -> Vec<IntegrationHealth> {
        let calls = self.calls.lock().expect("health lock");
        let checks = self.checks.lock().expect("health lock");
        integrations
            .into_iter()
            .map(|i| {
                let call = calls
                    .get(&i.name)
                    .cloned()
                    .unwrap_or_else(|| Reading::new(Health::Ok, "no calls yet"));
                let (health, detail) = match checks.get(&i.name) {
                    None => (call.health, call.detail),
                    Some(check) => {
                        let detail = [call.detail.as_str(), check.detail.as_str()]
                            .into_iter()
                            .filter(|d| !d.is_empty())
                            .collect::<Vec<_>>()
                            .join("; online check: ");
                        (call.health.max(check.health), detail)
                    }
                };
                IntegrationHealth {
                    name: i.name.clone(),
                    function_url: i.url.to_string(),
                    access_details: i.access_details.as_ref().map(|u| u.to_string()),
                    health,
                    detail,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_ordered_from_best_to_worst() {
        assert!(Health::Ok < Health::Degraded && Health::Degraded < Health::Error);
        assert_eq!(Health::Degraded.max(Health::Ok), Health::Degraded);
        assert_eq!(Health::Degraded.max(Health::Error), Health::Error);
    }

    #[test]
    fn calls_classify_by_error_code() {
        assert_eq!(Health::of_call(None), Health::Ok);
        assert_eq!(
            Health::of_call(Some(ErrorCode::PermissionDenied)),
            Health::Error
        );
        assert_eq!(
            Health::of_call(Some(ErrorCode::FunctionUnavailable)),
            Health::Degraded
        );
        assert_eq!(Health::of_call(Some(ErrorCode::FunctionError)), Health::Ok);
    }

    #[test]
    fn a_reading_keeps_a_bounded_detail() {
        let r = Reading::new(Health::Error, &"x".repeat(1000));
        assert_eq!(r.detail.chars().count(), Reading::MAX_DETAIL);
    }
}
