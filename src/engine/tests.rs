//! The engine's step, [`Engine::process`], tested on its own: validation
//! before any call, the result and audit entries of a call, what it records
//! in the health board, and the concurrency bounds. The journal, the loops
//! and the listeners are the daemon's and are tested there.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::routing::post;
use grantbridge_sandbox::FunctionImpl;
use serde_json::json;

use crate::action::Action;
use crate::contract::ErrorCode;
use crate::health::Health;
use crate::testing::{Fixture, SA, grant};

fn action(v: serde_json::Value) -> Action {
    Action::from_value(&v).expect("a structurally valid action")
}

#[tokio::test]
async fn invalid_actions_fail_with_their_code_and_reach_no_function() {
    let f = Fixture::start(&[("orders-db", "grant-db", &[SA])], |c| c).await;
    let cases = [
        (grant("a1", "payroll"), ErrorCode::UnknownIntegration),
        (
            action(json!({"id": "a2", "integration": "orders-db", "event_type": "drop-table"})),
            ErrorCode::UnsupportedEventType,
        ),
        (
            action(
                json!({"id": "a3", "integration": "orders-db", "event_type": "grant-access",
                "params": {"grant_id": "g"}}),
            ),
            ErrorCode::InvalidAction,
        ),
        (
            action(
                json!({"id": "a4", "integration": "orders-db", "event_type": "get-status",
                "params": {"custom_parameters": {"role": "admin"}}}),
            ),
            ErrorCode::InvalidAction,
        ),
        (
            action(
                json!({"id": "a5", "integration": "orders-db", "event_type": "get-status",
                "not_after": "2020-01-01T00:00:00Z"}),
            ),
            ErrorCode::Expired,
        ),
    ];
    for (a, code) in cases {
        let (result, audit) = f.engine.process(&a).await;
        assert_eq!(result.error_code(), Some(code), "{}", a.id);
        assert_eq!((result.attempts, audit.len()), (0, 0), "{}", a.id);
        assert!(result.function.is_none());
        assert!(!result.error.as_ref().unwrap().message.is_empty());
    }
    assert!(f.google.invocations("grant-db").is_empty());
    // Names the control plane sent are never metric labels.
    let metrics = &f.engine.services().metrics;
    assert_eq!(
        metrics.actions("(unknown)", "grant-access", "unknown_integration"),
        1
    );
    assert_eq!(
        metrics.actions("orders-db", "(unsupported)", "unsupported_event_type"),
        1
    );
}

#[tokio::test]
async fn a_call_gives_a_result_an_audit_entry_and_healthy_integration() {
    let f = Fixture::start(&[("orders-db", "grant-db", &[SA])], |c| c).await;
    let (result, audit) = f.engine.process(&grant("ok-1", "orders-db")).await;
    assert!(result.succeeded(), "{result:?}");
    assert_eq!(result.attempts, 1);
    assert_eq!(result.instance_id, "unit/0");
    let call = result.function.expect("the call is reported");
    assert_eq!(call.status, Some(200));
    assert_eq!(audit.len(), 1);
    let entry = &audit[0];
    assert_eq!(
        (
            entry.action_id.as_str(),
            entry.integration.as_str(),
            entry.attempt
        ),
        ("ok-1", "orders-db", 1)
    );
    assert_eq!(entry.username.as_deref(), Some("alice@example.com"));
    let invocations = f.google.invocations("grant-db");
    assert_eq!(invocations.len(), 1);
    assert_eq!(invocations[0].idempotency_key.as_deref(), Some("ok-1"));
    let health = f.engine.health_report();
    assert_eq!(
        (health[0].name.as_str(), health[0].health),
        ("orders-db", Health::Ok)
    );
}

#[tokio::test]
async fn a_refused_call_puts_the_integration_in_error_with_the_reason() {
    let f = Fixture::start(
        &[(
            "hr",
            "grant-hr",
            &["someone-else@x.iam.gserviceaccount.com"],
        )],
        |c| c,
    )
    .await;
    let (result, _) = f.engine.process(&grant("no-1", "hr")).await;
    assert_eq!(result.error_code(), Some(ErrorCode::PermissionDenied));
    let health = f.engine.health_report();
    assert_eq!(health[0].health, Health::Error);
    assert!(
        health[0].detail.contains("roles/cloudfunctions.invoker"),
        "{}",
        health[0].detail
    );
    // The next success clears it.
    f.google.set_invokers("grant-hr", &[SA]);
    let (result, _) = f.engine.process(&grant("no-2", "hr")).await;
    assert!(result.succeeded());
    assert_eq!(f.engine.health_report()[0].health, Health::Ok);
}

/// An upstream that counts calls in flight and keeps the peak.
async fn gauge_upstream(peak: Arc<AtomicUsize>) -> url::Url {
    let now = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().fallback(post(move || {
        let (now, peak) = (now.clone(), peak.clone());
        async move {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            axum::Json(json!({"status": "ok"}))
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn calls_to_one_integration_never_exceed_its_concurrency() {
    let f = Fixture::start(&[("db", "slow-db", &[SA])], |c| {
        c.set("engine.per_integration_concurrency", 2)
    })
    .await;
    let peak = Arc::new(AtomicUsize::new(0));
    f.google.deploy_function(
        "slow-db",
        FunctionImpl::Proxy(gauge_upstream(peak.clone()).await),
        &[SA],
    );
    let runs = (0..10).map(|i| {
        let engine = f.engine.clone();
        async move { engine.process(&grant(&format!("c-{i}"), "db")).await }
    });
    let results = futures_util::future::join_all(runs).await;
    assert!(results.iter().all(|(r, _)| r.succeeded()));
    let peak = peak.load(Ordering::SeqCst);
    assert!((1..=2).contains(&peak), "peak concurrency {peak}, limit 2");
}

#[tokio::test]
async fn concurrent_submissions_never_overshoot_the_queue() {
    let f = Fixture::start(&[("db", "held", &[SA])], |c| {
        c.set("engine.queue_capacity", 5)
            .set("engine.max_concurrency", 1)
    })
    .await;
    f.google.set_faults(
        "held",
        grantbridge_sandbox::Faults {
            latency: Duration::from_secs(30),
            ..Default::default()
        },
    );
    let submits = (0..50).map(|i| {
        let engine = f.engine.clone();
        async move {
            engine
                .submit(
                    grant(&format!("q-{i}"), "db"),
                    crate::journal::Source::Push,
                    None,
                )
                .await
        }
    });
    let outcomes = futures_util::future::join_all(submits).await;
    let accepted = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(super::Submitted::Accepted)))
        .count();
    let full = outcomes
        .iter()
        .filter(|o| matches!(o, Err(super::EngineError::Full(_))))
        .count();
    assert_eq!((accepted, full), (5, 45));
    assert_eq!(f.engine.pending(), 5);
}

/// A lease redelivered while its action runs here replaces the one held
/// (extensions and the report use the newest token), and no lease is kept
/// once the action has finished.
#[tokio::test]
async fn a_lease_is_kept_with_its_running_action_and_goes_with_it() {
    let f = Fixture::start(&[("db", "held", &[SA])], |c| c).await;
    f.google.set_faults(
        "held",
        grantbridge_sandbox::Faults {
            latency: Duration::from_millis(500),
            ..Default::default()
        },
    );
    let lease = |token: &str| super::Lease {
        token: token.to_owned(),
        expires_at: std::time::SystemTime::now() + Duration::from_secs(60),
    };
    let submit = |token: &'static str| {
        let engine = f.engine.clone();
        async move {
            engine
                .submit(
                    grant("l-1", "db"),
                    crate::journal::Source::Poll,
                    Some(lease(token)),
                )
                .await
                .expect("submitted")
        }
    };
    assert!(matches!(submit("first").await, super::Submitted::Accepted));
    let tokens = || {
        f.engine
            .leases()
            .into_iter()
            .map(|(id, l)| (id, l.token))
            .collect::<Vec<_>>()
    };
    assert_eq!(tokens(), [("l-1".to_owned(), "first".to_owned())]);
    assert!(matches!(
        submit("second").await,
        super::Submitted::InProgress(_)
    ));
    assert_eq!(tokens(), [("l-1".to_owned(), "second".to_owned())]);
    f.engine.wait_finished(1).await;
    // The task lets go of the action (and its place in the queue) just after.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while f.engine.pending() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(f.engine.pending(), 0);
    assert!(f.engine.leases().is_empty(), "{:?}", f.engine.leases());
}

/// What every queued action and every call in flight holds is the size of
/// these futures (allocated once per action): the rare paths (a token
/// mint, reading an answer) are boxed so they take no room in them. Bounds
/// with room to spare for the compiler, far below the sizes before the
/// boxing (720, 488 and 1,864 bytes in a debug build).
#[tokio::test]
async fn queued_actions_and_calls_in_flight_hold_small_futures() {
    let f = Fixture::start(&[("orders-db", "grant-db", &[SA])], |c| c).await;
    let a = grant("a1", "orders-db");
    let services = f.engine.services();
    let token = std::mem::size_of_val(&services.invoker.tokens().get("c", "aud"));
    let queued = std::mem::size_of_val(&f.engine.run(&a));
    let admitted = f.engine.admit(&a).await;
    let calling = std::mem::size_of_val(&f.engine.process_admitted(&a, admitted));
    assert!(token <= 256, "the token cache's future: {token} bytes");
    assert!(queued <= 384, "a queued action's future: {queued} bytes");
    assert!(calling <= 1_536, "a call's future: {calling} bytes");
}

/// Leasing keeps the slots fed: the next batch is asked for while half a
/// concurrency's worth still waits (not only once every held action has
/// taken a slot), in batches of at least half a concurrency, and never more
/// than twice the concurrency is held.
#[tokio::test]
async fn the_next_lease_is_asked_for_before_the_slots_run_dry() {
    let f = Fixture::start(&[("db", "fn", &[SA])], |c| {
        c.set("engine.max_concurrency", 32)
            .set("engine.queue_capacity", 1000)
    })
    .await;
    let room = |held: usize| {
        f.engine.pending.store(held, Ordering::SeqCst);
        f.engine.lease_room()
    };
    assert_eq!(room(0), 64, "idle: twice the concurrency");
    assert_eq!(room(32), 32, "every slot busy, none waiting");
    assert_eq!(room(40), 24, "eight waiting: ask before they are taken");
    assert_eq!(
        room(48),
        16,
        "half a concurrency waiting: the smallest batch"
    );
    assert_eq!(room(49), 0, "more waiting: no lease yet");
    assert_eq!(room(64), 0);
    assert_eq!(room(80), 0, "never more than twice the concurrency");
    f.engine.pending.store(0, Ordering::SeqCst);
    // The queue's capacity still bounds it.
    let small = Fixture::start(&[("db", "fn", &[SA])], |c| {
        c.set("engine.max_concurrency", 32)
            .set("engine.queue_capacity", 40)
    })
    .await;
    small.engine.pending.store(30, Ordering::SeqCst);
    assert_eq!(small.engine.lease_room(), 10);
    small.engine.pending.store(0, Ordering::SeqCst);
}
