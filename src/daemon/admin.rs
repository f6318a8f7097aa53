//! The admin listener: `/healthz` (the process is alive), `/readyz` (ready to
//! do its job: configuration loaded, journal open, every connection can mint a
//! token, the control plane accepts the connector token; the body says which
//! check fails), `/metrics` (Prometheus text).
//!
//! It must not expose tokens or configuration secrets; it binds where the
//! operator says (127.0.0.1 by default).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::ControlPlaneState;
use crate::engine::Engine;

#[derive(Clone)]
struct AdminState {
    engine: Arc<Engine>,
    state: Arc<ControlPlaneState>,
    has_control_plane: bool,
}

pub(super) fn router(
    engine: Arc<Engine>,
    state: Arc<ControlPlaneState>,
    has_control_plane: bool,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState {
            engine,
            state,
            has_control_plane,
        })
}

/// One readiness check.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// Every readiness check, in a stable order.
pub async fn readiness(
    engine: &Engine,
    state: &ControlPlaneState,
    has_control_plane: bool,
) -> Vec<Check> {
    let google = engine.services();
    let mut checks = vec![Check {
        name: "config".into(),
        ok: true,
        detail: format!(
            "{} ({} integrations)",
            google.config.source.display(),
            google.config.integrations.len()
        ),
    }];
    checks.extend(outbox_checks(engine, google.config.journal.outbox_max_age).await);
    for connection in google.config.connections.keys() {
        let name = format!("credentials:{connection}");
        // Any audience proves the connection can mint; one it uses is cached already.
        let Some(audience) = google
            .config
            .integrations
            .values()
            .find(|i| &i.connection == connection)
            .map(|i| i.audience.clone())
        else {
            checks.push(Check {
                name,
                ok: true,
                detail: "no integration uses this connection".into(),
            });
            continue;
        };
        let check = match tokio::time::timeout(
            Duration::from_secs(10),
            google.tokens.get(connection, &audience),
        )
        .await
        {
            Ok(Ok(t)) => Check {
                name,
                ok: true,
                detail: format!(
                    "ID token valid for {}s",
                    t.remaining(engine.clock().now()).as_secs()
                ),
            },
            Ok(Err(e)) => Check {
                name,
                ok: false,
                detail: e.to_string(),
            },
            Err(_) => Check {
                name,
                ok: false,
                detail: "minting an ID token took longer than 10s".into(),
            },
        };
        checks.push(check);
    }
    if has_control_plane {
        let auth = state.auth_ok.load(Ordering::SeqCst);
        let reachable = state.reachable.load(Ordering::SeqCst);
        checks.push(Check {
            name: "control_plane".into(),
            ok: auth,
            detail: match (auth, reachable) {
                (true, true) => "the control plane accepts the connector token".into(),
                (true, false) => "the connector token was accepted; the control plane is unreachable right now (results wait in the outbox)".into(),
                (false, true) => "the control plane refuses the connector token: it is wrong or was revoked".into(),
                (false, false) => "the control plane has not been reached yet".into(),
            },
        });
    }
    for i in engine.health_report() {
        checks.push(Check {
            name: format!("integration:{}", i.name),
            // Integration health informs; it does not take the connector out of service.
            ok: true,
            detail: if i.detail.is_empty() {
                i.health.to_string()
            } else {
                format!("{}: {}", i.health, i.detail)
            },
        });
    }
    checks
}

/// The journal answers, and the outbox drains: its oldest result is younger
/// than `max_age`.
async fn outbox_checks(engine: &Engine, max_age: Duration) -> Vec<Check> {
    let summary = match engine.journal().outbox_summary().await {
        Ok(s) => s,
        Err(e) => {
            return vec![Check {
                name: "journal".into(),
                ok: false,
                detail: e.to_string(),
            }];
        }
    };
    let age = outbox_age(engine, summary.oldest);
    let draining = age <= max_age;
    let journal = match engine.journal().writable() {
        Ok(()) => Check {
            name: "journal".into(),
            ok: true,
            detail: format!(
                "open; {} result(s) waiting for the control plane",
                summary.depth
            ),
        },
        Err(f) => Check {
            name: "journal".into(),
            ok: false,
            detail: format!(
                "{} cannot write since {}: {}; {} write(s) failed. No new work is taken until it can",
                engine.journal().path().display(),
                crate::action::rfc3339(f.since),
                f.error,
                f.failed_writes
            ),
        },
    };
    vec![
        journal,
        Check {
            name: "outbox".into(),
            ok: draining,
            detail: if draining {
                format!("draining (oldest waiting result {}s old)", age.as_secs())
            } else {
                format!(
                    "not draining: the oldest of {} waiting result(s) is {}s old (journal.outbox_max_age is {}s); see the report errors in the log",
                    summary.depth,
                    age.as_secs(),
                    max_age.as_secs()
                )
            },
        },
    ]
}

/// How long the oldest waiting result has waited (zero when none waits).
fn outbox_age(engine: &Engine, oldest: Option<std::time::SystemTime>) -> Duration {
    oldest
        .and_then(|t| engine.clock().now().duration_since(t).ok())
        .unwrap_or_default()
}

async fn readyz(State(s): State<AdminState>) -> Response {
    let checks = readiness(&s.engine, &s.state, s.has_control_plane).await;
    let ready = checks.iter().all(|c| c.ok) && !s.engine.is_draining();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(serde_json::json!({"ready": ready, "draining": s.engine.is_draining(), "checks": checks}))).into_response()
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let services = s.engine.services();
    let summary = s.engine.journal().outbox_summary().await.ok();
    let (depth, oldest) = summary.map_or((0, None), |s| (s.depth, s.oldest));
    services.metrics.set_queue(
        depth,
        outbox_age(&s.engine, oldest),
        s.engine.pending() as u64,
    );
    let journal = s.engine.journal();
    services.metrics.set_journal(
        journal.writable().is_ok(),
        journal.failed_writes(),
        journal.stats(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        services.metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::journal::Source;
    use crate::testing::{Fixture, SA, grant};

    fn check<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} check in {checks:?}"))
    }

    /// A result that has waited longer than `journal.outbox_max_age` makes
    /// the connector not ready, and the gauge shows its age.
    #[tokio::test]
    async fn a_stalled_outbox_is_not_ready() {
        // The engine's clock runs an hour ahead of the journal's: what the
        // journal stores now is an hour old to the engine.
        let f = Fixture::start_at(
            Clock::system().skewed(3600),
            &[("db", "grant-db", &[SA])],
            |c| c.set("journal.outbox_max_age", "5m"),
        )
        .await;
        let state = ControlPlaneState::default();
        let fresh = readiness(&f.engine, &state, false).await;
        assert!(check(&fresh, "outbox").ok, "an empty outbox drains");

        let result = crate::action::ActionResult::failed(
            &grant("s-1", "db").id,
            crate::contract::ErrorCode::Internal,
            "m",
            std::time::SystemTime::now(),
            std::time::SystemTime::now(),
            "unit/0",
        );
        f.engine
            .journal()
            .complete_unrecorded(&result, Source::Poll, None)
            .await
            .unwrap();
        let stalled = readiness(&f.engine, &state, false).await;
        let outbox = check(&stalled, "outbox");
        assert!(!outbox.ok);
        assert!(outbox.detail.contains("not draining"), "{}", outbox.detail);

        let app = router(f.engine.clone(), Arc::new(state), false);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let metrics = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let age: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("grantbridge_outbox_oldest_age_seconds "))
            .expect("the gauge is exported")
            .parse()
            .unwrap();
        assert!((3590..=3700).contains(&age), "{age}");
        let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
        assert_eq!(ready.status(), 503);
    }
}
