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
    checks.push(match engine.journal().outbox_depth().await {
        Ok(depth) => Check {
            name: "journal".into(),
            ok: true,
            detail: format!("open; {depth} result(s) waiting for the control plane"),
        },
        Err(e) => Check {
            name: "journal".into(),
            ok: false,
            detail: e.to_string(),
        },
    });
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
    let depth = s.engine.journal().outbox_depth().await.unwrap_or(0);
    services.metrics.set_queue(depth, s.engine.pending() as u64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        services.metrics.encode(),
    )
        .into_response()
}
