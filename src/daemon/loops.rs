//! The daemon's background loops: lease (long poll), keep leases alive,
//! report results, heartbeat, prune the journal. Each stops when its token is
//! cancelled and backs off with jitter (honouring `Retry-After`) on failure.
//!
//! They must not drop a result: the outbox shrinks only for results the
//! control plane accepted (or explicitly rejected, which is logged).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;

use super::ControlPlaneState;
use crate::action::rfc3339;
use crate::config::ControlPlaneSettings;
use crate::control_plane::{ControlPlaneClient, CpError, Heartbeat, IntegrationStatus, ReportItem};
use crate::engine::{Engine, EngineError, Lease};
use crate::health::Health;
use crate::journal::{JournalError, Source};
use crate::retry::Backoff;

/// Sleeps unless cancelled first; false when cancelled.
async fn pause(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = stop.cancelled() => false,
    }
}

fn note(state: &ControlPlaneState, result: &Result<(), &CpError>) {
    match result {
        Ok(()) => {
            state.auth_ok.store(true, Ordering::SeqCst);
            state.reachable.store(true, Ordering::SeqCst);
        }
        Err(CpError::Unauthorized { .. }) => {
            state.auth_ok.store(false, Ordering::SeqCst);
            state.reachable.store(true, Ordering::SeqCst);
        }
        Err(_) => state.reachable.store(false, Ordering::SeqCst),
    }
}

/// How long to wait after a control-plane failure: slowly after a refused
/// token (`unauthorized`), else backoff with jitter honouring `Retry-After`.
fn failure_delay(
    e: &CpError,
    failures: u32,
    backoff: &Backoff,
    unauthorized: Duration,
) -> Duration {
    match e {
        CpError::Unauthorized { .. } => unauthorized,
        other => backoff.delay(failures, other.retry_after()),
    }
}

/// A leased batch being recorded: each action's submission (or its
/// rejection as invalid).
type Recording = futures_util::future::BoxFuture<'static, Vec<Result<(), EngineError>>>;

/// The leased batches being recorded, and how many actions they hold.
#[derive(Default)]
struct Recordings {
    batches: FuturesUnordered<Recording>,
    actions: usize,
}

impl Recordings {
    fn push(&mut self, batch: Recording, actions: usize) {
        self.batches.push(batch);
        self.actions += actions;
    }

    fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// The outcomes of the next batch to finish recording; `None` when
    /// there is none.
    async fn next(&mut self) -> Option<Vec<Result<(), EngineError>>> {
        let outcomes = self.batches.next().await?;
        self.actions -= outcomes.len();
        Some(outcomes)
    }
}

/// Leases actions while there is room, and hands them to the engine.
///
/// The next long poll is asked for as soon as a batch has arrived, while the
/// batch is still being recorded: an action enqueued meanwhile is answered
/// at once instead of waiting for the journal's commit and a new request.
/// Room is counted after the batch has reserved its places in the queue.
/// The batches being recorded hold no more than one lease's worth of actions
/// (`max_actions`) together, as when one batch was recorded at a time: a
/// backlog comes in full batches, one after the other, and each action being
/// recorded costs more memory than one queued.
pub(super) async fn poll(
    engine: Arc<Engine>,
    cp: ControlPlaneClient,
    settings: ControlPlaneSettings,
    state: Arc<ControlPlaneState>,
    stop: CancellationToken,
) {
    let backoff = Backoff {
        base: Duration::from_millis(500),
        max: Duration::from_secs(30),
    };
    let mut failures = 0;
    let journal_backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };
    let mut journal_failures = 0;
    let mut recording = Recordings::default();
    let mut asking = None;
    loop {
        if stop.is_cancelled() {
            break;
        }
        if asking.is_none() {
            if journal_failures > 0 {
                // Since the journal failed, one batch at a time until a whole
                // batch records: a nearly full disk refuses one batch, not two.
                settle(&mut recording, &engine, &mut journal_failures).await;
            }
            if engine.journal().writable().is_err() {
                // No new work while nothing can be recorded: a leased action would
                // only be refused, or run with nowhere to keep its result.
                // `watch_journal` probes; once a write commits this waits a
                // hold-off that doubles each time the journal fails again soon
                // (a nearly full disk takes a small write, then fails the batch).
                settle(&mut recording, &engine, &mut journal_failures).await;
                journal_failures += 1;
                while engine.journal().writable().is_err() {
                    if !pause(Duration::from_millis(500), &stop).await {
                        break;
                    }
                }
                if !pause(journal_backoff.ceiling(journal_failures), &stop).await {
                    break;
                }
                continue;
            }
            // Subscribed before looking, so a finish in between is not missed.
            let mut finished = engine.finished_changes();
            let room = engine
                .lease_room()
                .min((settings.max_actions as usize).saturating_sub(recording.actions));
            if room == 0 {
                // Enough leased, or a lease's worth still being recorded: wait
                // until actions finish or a batch records before leasing more.
                tokio::select! {
                    _ = finished.changed() => {}
                    Some(outcomes) = recording.next(), if !recording.is_empty() => {
                        recorded(outcomes, &engine, &mut journal_failures);
                    }
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop.cancelled() => break,
                }
                continue;
            }
            asking = Some(Box::pin(cp.lease(
                engine.instance_id(),
                room as u32,
                settings.wait,
                settings.lease,
            )));
        }
        let leased = tokio::select! {
            r = asking.as_mut().expect("asked above") => {
                asking = None;
                r
            }
            Some(outcomes) = recording.next(), if !recording.is_empty() => {
                recorded(outcomes, &engine, &mut journal_failures);
                continue;
            }
            () = stop.cancelled() => break,
        };
        note(&state, &leased.as_ref().map(|_| ()));
        match leased {
            Ok(leased) => {
                failures = 0;
                let actions = leased.len();
                let mut batch = record(&engine, leased);
                // Polled once here, so its actions hold their places in the
                // queue before the room for the next lease is counted.
                match futures_util::poll!(batch.as_mut()) {
                    std::task::Poll::Ready(outcomes) => {
                        recorded(outcomes, &engine, &mut journal_failures);
                    }
                    std::task::Poll::Pending => recording.push(batch, actions),
                }
            }
            Err(e) => {
                engine
                    .services()
                    .metrics
                    .control_plane_error("lease", e.kind());
                failures += 1;
                let delay = failure_delay(&e, failures, &backoff, settings.unauthorized_retry);
                match &e {
                    CpError::Unauthorized { .. } => {
                        tracing::error!(error = %e, retry_in_s = delay.as_secs(), "cannot lease actions")
                    }
                    _ => {
                        tracing::warn!(error = %e, failures, retry_in_ms = delay.as_millis() as u64, "cannot lease actions; backing off")
                    }
                }
                settle(&mut recording, &engine, &mut journal_failures).await;
                if !pause(delay, &stop).await {
                    break;
                }
            }
        }
    }
    // What was leased is recorded (and started) before the loop ends.
    drop(asking);
    settle(&mut recording, &engine, &mut journal_failures).await;
    tracing::debug!("poll loop stopped");
}

/// Submits a leased batch together, so its journal records share group
/// commits (one fsync for the batch instead of one per action).
fn record(engine: &Arc<Engine>, leased: Vec<crate::control_plane::Leased>) -> Recording {
    let mut invalid = leased.iter().filter_map(|l| l.action.as_ref().err());
    if let Some(first) = invalid.next() {
        let first = first.to_string();
        tracing::warn!(invalid = 1 + invalid.count(), first = %crate::telemetry::Escaped(&first), "invalid action(s) from the control plane; reporting them failed");
    }
    // Handed to join_all as an iterator: collected into a Vec first, every
    // submission's future sat in one large allocation beside the nodes
    // join_all moves them to, and 10,000 queued actions kept 3 to 4 MiB more.
    let submissions = leased.into_iter().map(|l| {
        let engine = engine.clone();
        async move {
            match l.action {
                Ok(action) => {
                    let lease = Lease {
                        token: l.lease_token,
                        expires_at: l.expires_at,
                    };
                    engine
                        .submit(action, Source::Poll, Some(lease))
                        .await
                        .map(|_| ())
                }
                Err(invalid) => {
                    engine
                        .reject_invalid(&invalid, Source::Poll, Some(&l.lease_token))
                        .await
                }
            }
        }
    });
    Box::pin(futures_util::future::join_all(submissions))
}

/// Waits for every batch still being recorded.
async fn settle(recording: &mut Recordings, engine: &Engine, journal_failures: &mut u32) {
    while let Some(outcomes) = recording.next().await {
        recorded(outcomes, engine, journal_failures);
    }
}

/// Says what a recorded batch refused (the journal could not take it).
fn recorded(outcomes: Vec<Result<(), EngineError>>, engine: &Engine, journal_failures: &mut u32) {
    let mut refused = 0usize;
    let mut first_refusal = None;
    for submitted in outcomes {
        match submitted {
            Ok(()) | Err(EngineError::Draining) => {}
            // Not recorded: the lease expires and the control plane hands it out again.
            Err(e) => {
                refused += 1;
                first_refusal.get_or_insert(e);
            }
        }
    }
    if refused == 0 && engine.journal().writable().is_ok() {
        *journal_failures = 0; // a whole batch recorded: the disk is back
    }
    if let Some(e) = first_refusal {
        if engine.journal().writable().is_err() {
            // The journal has said why (and the loop pauses above).
            tracing::debug!(refused, error = %e, "could not accept leased action(s): the journal cannot write; they will be redelivered");
        } else {
            tracing::error!(refused, error = %e, "could not accept leased action(s); they will be redelivered");
        }
    }
}

/// While the journal cannot write, probes it every `every` with a small
/// real write, so the daemon takes work again as soon as the disk does
/// (also in push mode with no traffic, where nothing else would write).
pub(super) async fn watch_journal(engine: Arc<Engine>, every: Duration, stop: CancellationToken) {
    loop {
        if !pause(every, &stop).await {
            break;
        }
        if engine.journal().writable().is_err() {
            let _ = engine.journal().probe().await;
        }
    }
}

/// Extends the leases of actions still running, well before they expire.
pub(super) async fn keep_leases(
    engine: Arc<Engine>,
    cp: ControlPlaneClient,
    lease: Duration,
    stop: CancellationToken,
) {
    let tick = (lease / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
    while pause(tick, &stop).await {
        let now = engine.clock().now();
        for (id, l) in engine.leases() {
            let left = l.expires_at.duration_since(now).unwrap_or_default();
            if left > lease / 2 {
                continue;
            }
            match cp.extend(&id, &l.token, lease).await {
                Ok(expires_at) => engine.update_lease(&id, expires_at),
                Err(e @ CpError::LeaseLost(_)) => {
                    engine
                        .services()
                        .metrics
                        .control_plane_error("extend", e.kind());
                    // Keep going: the call may be mid-flight, and the control plane
                    // accepts a late result. Another instance may run it too
                    // (at-least-once); the function dedupes on Idempotency-Key.
                    tracing::warn!(action_id = %id, "lease lost while the action runs; finishing it anyway");
                    engine.update_lease(&id, now + Duration::from_secs(3600));
                }
                Err(e) => {
                    engine
                        .services()
                        .metrics
                        .control_plane_error("extend", e.kind());
                    tracing::warn!(action_id = %id, error = %e, "could not extend the lease; will retry");
                }
            }
        }
    }
}

/// Why the outbox could not be flushed: the local journal, or the control
/// plane. They are different problems with different owners, so they are
/// counted and reported apart.
#[derive(Debug, thiserror::Error)]
pub(super) enum FlushError {
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    #[error(transparent)]
    ControlPlane(#[from] CpError),
}

/// Sends the outbox in completion order until it is empty. Returns how many
/// results left the outbox.
pub(super) async fn flush_outbox(
    engine: &Engine,
    cp: Option<&ControlPlaneClient>,
    batch: u32,
) -> Result<usize, FlushError> {
    let _one_at_a_time = engine.delivering().await;
    let mut sent = 0;
    loop {
        let items = engine.journal().outbox(batch as usize).await?;
        if items.is_empty() {
            return Ok(sent);
        }
        let Some(cp) = cp else {
            // Push-only without a control plane: results stay queryable with
            // GET /v1/actions/{id}; nobody to deliver them to.
            let ids: Vec<String> = items.iter().map(|i| i.result.action_id.clone()).collect();
            engine.journal().mark_reported(&ids).await?;
            engine.action_spans().forget(&ids);
            sent += ids.len();
            continue;
        };
        let report: Vec<ReportItem> = items
            .iter()
            .map(|i| ReportItem {
                result: i.result.clone(),
                lease_token: i.lease_token.clone(),
            })
            .collect();
        // Open while the results are delivered (traces only).
        let spans: Vec<tracing::Span> = items
            .iter()
            .filter_map(|i| engine.action_spans().report_span(&i.result.action_id))
            .collect();
        let answer = cp.report(&report).await;
        if let Err(e) = &answer {
            for span in &spans {
                span.record("otel.status_code", "error");
                span.record("otel.status_message", e.to_string());
            }
        }
        drop(spans);
        let answer = answer?;
        let mut done: Vec<String> = answer.accepted.clone();
        for r in &answer.rejected {
            // A rejection is final: resending would be rejected again.
            tracing::error!(action_id = %r.action_id, reason = %r.reason, "the control plane rejected a result");
            done.push(r.action_id.clone());
        }
        // Only ids we sent count (a confused control plane cannot drain others).
        done.retain(|id| items.iter().any(|i| &i.result.action_id == id));
        if done.is_empty() {
            return Err(CpError::Protocol(
                "the control plane accepted none of the results sent".into(),
            )
            .into());
        }
        engine.journal().mark_reported(&done).await?;
        engine.action_spans().forget(&done);
        sent += done.len();
    }
}

/// Reports results as they complete, batching what accumulated meanwhile.
pub(super) async fn report(
    engine: Arc<Engine>,
    cp: Option<ControlPlaneClient>,
    batch: u32,
    unauthorized: Duration,
    state: Arc<ControlPlaneState>,
    stop: CancellationToken,
) {
    let notify = engine.outbox_notify();
    let backoff = Backoff {
        base: Duration::from_millis(500),
        max: Duration::from_secs(30),
    };
    let mut failures = 0;
    loop {
        match flush_outbox(&engine, cp.as_ref(), batch).await {
            Ok(sent) => {
                // Only a call that happened says anything about the control plane.
                if sent > 0 && cp.is_some() {
                    note(&state, &Ok(()));
                }
                failures = 0;
                tokio::select! {
                    () = notify.notified() => {}
                    // Safety net: also look every few seconds.
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                    () = stop.cancelled() => break,
                }
            }
            Err(e) => {
                failures += 1;
                let delay = match &e {
                    FlushError::ControlPlane(e) => {
                        engine
                            .services()
                            .metrics
                            .control_plane_error("results", e.kind());
                        note(&state, &Err(e));
                        failure_delay(e, failures, &backoff, unauthorized)
                    }
                    // The control plane is not at fault: say nothing about it.
                    FlushError::Journal(_) => backoff.delay(failures, None),
                };
                if matches!(e, FlushError::Journal(_)) && engine.journal().writable().is_err() {
                    // The journal has said why (once, then every 30 s).
                    tracing::debug!(error = %e, failures, retry_in_ms = delay.as_millis() as u64, "could not mark results reported: the journal cannot write; they stay in the outbox");
                } else {
                    tracing::warn!(error = %e, failures, retry_in_ms = delay.as_millis() as u64, "could not report results; they stay in the outbox");
                }
                if !pause(delay, &stop).await {
                    break;
                }
            }
        }
    }
}

pub(super) async fn heartbeat(
    engine: Arc<Engine>,
    cp: ControlPlaneClient,
    interval: Duration,
    started_at: SystemTime,
    state: Arc<ControlPlaneState>,
    stop: CancellationToken,
) {
    loop {
        let hb = Heartbeat {
            instance_id: engine.instance_id().to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: rfc3339(started_at),
            integrations: engine
                .health_report()
                .into_iter()
                .map(IntegrationStatus::from)
                .collect(),
            stats: serde_json::json!({
                "pending": engine.pending(),
                "outbox": engine.journal().outbox_depth().await.unwrap_or(0),
            }),
        };
        let r = cp.heartbeat(&hb).await;
        note(&state, &r.as_ref().map(|_| ()));
        if let Err(e) = r {
            engine
                .services()
                .metrics
                .control_plane_error("heartbeat", e.kind());
            tracing::warn!(error = %e, "heartbeat failed");
        }
        if !pause(interval, &stop).await {
            break;
        }
    }
}

/// Runs the online checks every `interval`; verdicts feed heartbeats and /readyz.
pub(super) async fn online_checks(
    engine: Arc<Engine>,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        let google = engine.services();
        let verdicts = tokio::select! {
            v = crate::check::check_all(&google) => v,
            () = stop.cancelled() => break,
        };
        for v in verdicts.iter().filter(|v| v.status != Health::Ok) {
            tracing::warn!(integration = %v.integration, status = %v.status, detail = %v.detail(), "online check");
        }
        engine.health().record_checks(
            verdicts
                .iter()
                .map(|v| (v.integration.clone(), v.reading())),
        );
        if !pause(interval, &stop).await {
            break;
        }
    }
}

/// Applies the retention setting hourly.
pub(super) async fn prune(engine: Arc<Engine>, stop: CancellationToken) {
    loop {
        match engine.journal().prune().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "journal pruned"),
            Err(e) => tracing::warn!(error = %e, "journal prune failed"),
        }
        if !pause(Duration::from_secs(3600), &stop).await {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use grantbridge_sandbox::{ControlPlane, ControlPlaneOptions};
    use secrecy::SecretString;
    use serde_json::json;

    use super::*;
    use crate::testing::{Fixture, SA, grant};

    /// Waits up to 3 s for `done`.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A grant-access action for integration `db`, as the control plane holds it.
    fn action(id: &str) -> serde_json::Value {
        json!({"id": id, "integration": "db", "event_type": "grant-access",
            "params": {"grant_id": "g-1", "username": "alice@example.com", "resource_type": "db",
                "resources": ["orders"], "permission": "read"}})
    }

    /// A simulated control plane, a client of it on the engine's HTTP client,
    /// and poll settings with a 1 s long poll.
    async fn control_plane(
        f: &Fixture,
    ) -> (ControlPlane, ControlPlaneClient, ControlPlaneSettings) {
        let server = ControlPlane::start(ControlPlaneOptions {
            connector_id: "unit".into(),
            tokens: vec!["t".into()],
            clock: grantbridge_sandbox::Clock::system(),
        })
        .await
        .unwrap();
        let url = url::Url::parse(&server.url()).unwrap();
        let cp = ControlPlaneClient::new(
            f.engine.services().http.clone(),
            url.clone(),
            "unit".into(),
            SecretString::from("t"),
        );
        let settings = ControlPlaneSettings {
            url,
            token: SecretString::from("t"),
            poll: true,
            max_actions: 10,
            wait: Duration::from_secs(1),
            lease: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(60),
            report_batch: 10,
            unauthorized_retry: Duration::from_secs(1),
        };
        (server, cp, settings)
    }

    /// Another connection holding the journal file's write lock (until its
    /// `ROLLBACK`): the journal's commits wait, well within its 5 s busy timeout.
    fn hold_writes(f: &Fixture) -> rusqlite::Connection {
        let lock = rusqlite::Connection::open(&f.engine.services().config.journal.path).unwrap();
        lock.execute_batch("BEGIN IMMEDIATE").unwrap();
        lock
    }

    /// Lets the journal's commits through (ends [`hold_writes`]), waits until
    /// `calls` calls reached the function, and stops the poll loop.
    async fn release_and_stop(
        f: &Fixture,
        lock: rusqlite::Connection,
        calls: usize,
        stop: CancellationToken,
        looping: tokio::task::JoinHandle<()>,
    ) {
        lock.execute_batch("ROLLBACK").unwrap();
        until(&format!("all {calls} invoked once recorded"), || {
            f.google.invocations("grant-db").len() == calls
        })
        .await;
        stop.cancel();
        looping.await.unwrap();
    }

    /// The poll loop on the fixture's engine, and what stops it.
    fn start_polling(
        f: &Fixture,
        cp: ControlPlaneClient,
        settings: ControlPlaneSettings,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let stop = CancellationToken::new();
        let looping = tokio::spawn(poll(
            f.engine.clone(),
            cp,
            settings,
            Arc::new(ControlPlaneState::default()),
            stop.clone(),
        ));
        (stop, looping)
    }

    /// The next long poll is under way while a leased batch is recorded: an
    /// action enqueued while the journal's commit of the one before is held
    /// (another connection holds the file's write lock) is leased at once,
    /// and neither is invoked before its record commits.
    #[tokio::test]
    async fn the_next_lease_is_asked_for_while_a_batch_is_recorded() {
        let f = Fixture::start(&[("db", "grant-db", &[SA])], |c| c).await;
        let (server, cp, settings) = control_plane(&f).await;
        let lock = hold_writes(&f);
        server.enqueue(action("p-1"));
        let (stop, looping) = start_polling(&f, cp, settings);
        until("p-1 leased", || server.leased() == 1).await;
        server.enqueue(action("p-2"));
        until("p-2 leased while p-1's record waits", || {
            server.leased() == 2
        })
        .await;
        assert!(
            f.google.invocations("grant-db").is_empty(),
            "invoked before its record committed"
        );
        release_and_stop(&f, lock, 2, stop, looping).await;
        for id in ["p-1", "p-2"] {
            assert!(
                f.engine.journal().state(id).await.unwrap().is_some(),
                "{id} recorded"
            );
        }
    }

    /// The room for the next lease counts the batch still being recorded: with
    /// the journal's commit held, no more than twice the concurrency is leased.
    #[tokio::test]
    async fn the_next_lease_counts_the_batch_being_recorded() {
        let f = Fixture::start(&[("db", "grant-db", &[SA])], |c| {
            c.set("engine.max_concurrency", 2)
        })
        .await;
        let (server, cp, settings) = control_plane(&f).await;
        let lock = hold_writes(&f);
        server.enqueue_many((0..20).map(|i| action(&format!("q-{i}"))).collect());
        let (stop, looping) = start_polling(&f, cp, settings);
        until("a first batch leased", || server.leased() >= 4).await;
        // Long enough for a wrongly counted second lease to come back.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(server.leased(), 4, "leased past twice the concurrency");
        release_and_stop(&f, lock, 20, stop, looping).await;
    }

    /// The batches being recorded hold no more than one lease's worth of
    /// actions together: with the journal's commit held and `max_actions` 3,
    /// a batch of 2 being recorded leaves room for 1 more, and then none,
    /// however much the control plane holds and the queue has room for.
    #[tokio::test]
    async fn the_batches_being_recorded_hold_one_lease_at_most() {
        let f = Fixture::start(&[("db", "grant-db", &[SA])], |c| c).await;
        let (server, cp, mut settings) = control_plane(&f).await;
        settings.max_actions = 3;
        let lock = hold_writes(&f);
        server.enqueue_many((0..2).map(|i| action(&format!("r-{i}"))).collect());
        let (stop, looping) = start_polling(&f, cp, settings);
        until("a first batch of 2 leased", || server.leased() == 2).await;
        server.enqueue_many((2..12).map(|i| action(&format!("r-{i}"))).collect());
        until("one more leased", || server.leased() >= 3).await;
        // Long enough for a lease past the bound to come back.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            server.leased(),
            3,
            "leased past one lease's worth while recording"
        );
        release_and_stop(&f, lock, 12, stop, looping).await;
    }

    /// A journal that cannot write, behind a control plane that works: the
    /// failure is the journal's, and the control plane is not blamed for it
    /// (no control-plane error counted, `/readyz` keeps saying reachable).
    #[tokio::test]
    async fn a_journal_failure_while_reporting_is_not_a_control_plane_error() {
        let f = Fixture::start(&[("db", "grant-db", &[SA])], |c| c).await;
        let (result, _) = f.engine.process(&grant("j-1", "db")).await;
        f.engine
            .journal()
            .complete_unrecorded(&result, Source::Push, None)
            .await
            .unwrap();
        let (server, cp, _) = control_plane(&f).await;
        f.engine.journal().clone().close().await;

        let err = flush_outbox(&f.engine, Some(&cp), 10).await.unwrap_err();
        assert!(matches!(err, FlushError::Journal(_)), "{err}");
        assert_eq!(
            server.results().len(),
            1,
            "the control plane got the result"
        );

        let state = Arc::new(ControlPlaneState::default());
        state.reachable.store(true, Ordering::SeqCst);
        state.auth_ok.store(true, Ordering::SeqCst);
        let stop = CancellationToken::new();
        let looping = tokio::spawn(report(
            f.engine.clone(),
            Some(cp),
            10,
            Duration::from_secs(30),
            state.clone(),
            stop.clone(),
        ));
        // The loop tries (and fails on the journal) at least once more.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while server.calls().results < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        looping.await.unwrap();
        assert!(server.calls().results >= 2, "the loop retried");
        assert!(state.reachable.load(Ordering::SeqCst));
        assert!(state.auth_ok.load(Ordering::SeqCst));
        let metrics = &f.engine.services().metrics;
        for kind in ["unauthorized", "unavailable", "lease_lost", "protocol"] {
            assert_eq!(metrics.control_plane_errors("results", kind), 0, "{kind}");
        }
    }
}
