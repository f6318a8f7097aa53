//! The engine: runs actions. Validates each one before anything is called,
//! records it in the journal before it runs, invokes its function under
//! bounded concurrency (global and per integration), stores the result in the
//! outbox and wakes whoever waits for it.
//!
//! [`Engine::process`] is one step as a plain function (validate, invoke, build
//! the result) that tests call directly; everything else is bookkeeping around
//! it. It must never invoke a function for an action the journal already has a
//! result for.

mod result;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use url::Url;

use crate::action::{Action, ActionResult, InvalidAction};
use crate::clock::Clock;
use crate::config::{Config, EngineSettings};
use crate::contract::{ErrorCode, EventType, validate_params};
use crate::function::Call;
use crate::health::{HealthBoard, IntegrationHealth};
use crate::journal::{AuditEntry, Journal, JournalError, Progress, Recorded, Source};
use crate::services::Services;
pub use result::cap_body;

/// Why an action was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the connector is shutting down")]
    Draining,
    #[error("the connector's queue is full ({0} actions waiting)")]
    Full(usize),
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
}

/// What became of a submitted action.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// Newly recorded; it will run.
    Accepted,
    /// Known and still queued or running.
    InProgress(Progress),
    /// Known and finished: its result, from the journal.
    Done(Box<ActionResult>),
}

/// An action accepted here and not finished.
#[derive(Debug)]
struct InFlight {
    /// Calling its function (running), or waiting for a permit (queued).
    calling: bool,
    /// Its lease, in poll mode: kept with it, so a lease is never kept for
    /// an action that has finished.
    lease: Option<Lease>,
}

/// An action past validation and waiting: its configuration, and either
/// its event type and permits (integration, global) or why it is refused.
struct Admitted {
    services: Arc<Services>,
    permitted: Result<(EventType, [OwnedSemaphorePermit; 2]), (ErrorCode, String)>,
}

/// A counted place in the queue; dropped unused, it is given back.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A poll-mode lease the engine keeps alive while the action runs.
#[derive(Debug, Clone)]
pub struct Lease {
    pub token: String,
    pub expires_at: SystemTime,
}

pub struct Engine {
    /// Everything built from the configuration in force; swapped whole on reload.
    services: std::sync::RwLock<Arc<Services>>,
    journal: Journal,
    clock: Clock,
    instance_id: String,
    settings: EngineSettings,
    global: Arc<Semaphore>,
    per_integration: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Accepted and not finished (queued or running) in this process.
    pending: AtomicUsize,
    /// Accepted and not finished in this process: whether it is calling
    /// its function (running) or waiting for a permit (queued), and its
    /// lease. Whether it is calling is kept here, not journaled: it is for
    /// status answers, and an fsync per action would buy nothing (any
    /// unfinished action may have been called).
    running: Mutex<HashMap<String, InFlight>>,
    /// Each integration's health: the engine records calls, the online checks verdicts.
    health: Arc<HealthBoard>,
    /// Counts of actions started and finished by this engine, for waiters.
    accepted: watch::Sender<u64>,
    finished: watch::Sender<u64>,
    outbox: Arc<Notify>,
    /// Held while the outbox is being delivered: one delivery at a time (the
    /// report loop and the last flush at shutdown would otherwise both send
    /// the same results).
    delivering: tokio::sync::Mutex<()>,
    draining: AtomicBool,
    tracker: TaskTracker,
    /// Cancelled when the shutdown grace period runs out.
    abort: CancellationToken,
    /// Exported action spans, for the spans of their reports.
    traces: crate::telemetry::traces::ActionSpans,
}

impl Engine {
    pub fn new(services: Services, journal: Journal, clock: Clock) -> Arc<Self> {
        let config: &Config = &services.config;
        let settings = config.engine.clone();
        Arc::new(Self {
            instance_id: config.instance_id.clone(),
            global: Arc::new(Semaphore::new(settings.max_concurrency)),
            settings,
            services: std::sync::RwLock::new(Arc::new(services)),
            journal,
            clock,
            per_integration: Mutex::default(),
            pending: AtomicUsize::new(0),
            running: Mutex::default(),
            health: Arc::default(),
            accepted: watch::channel(0).0,
            finished: watch::channel(0).0,
            outbox: Arc::new(Notify::new()),
            delivering: tokio::sync::Mutex::new(()),
            draining: AtomicBool::new(false),
            tracker: TaskTracker::new(),
            abort: CancellationToken::new(),
            traces: Default::default(),
        })
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }
    /// The exported spans of actions whose results are not yet reported.
    pub fn action_spans(&self) -> &crate::telemetry::traces::ActionSpans {
        &self.traces
    }
    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        self.services().config.clone()
    }

    /// Configuration, credentials and invoker in force now.
    pub fn services(&self) -> Arc<Services> {
        self.services.read().expect("services lock").clone()
    }

    /// Puts a reloaded configuration in force. Running actions finish with
    /// the one they started with.
    pub fn replace_services(&self, services: Services) {
        *self.services.write().expect("services lock") = Arc::new(services);
    }
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }
    pub fn clock(&self) -> &Clock {
        &self.clock
    }
    /// Woken whenever a result enters the outbox.
    pub fn outbox_notify(&self) -> Arc<Notify> {
        self.outbox.clone()
    }

    /// The right to deliver the outbox, one delivery at a time.
    pub async fn delivering(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.delivering.lock().await
    }
    /// Actions accepted and not yet finished in this process.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }
    /// Room left before intake must pause.
    pub fn free_capacity(&self) -> usize {
        self.settings.queue_capacity.saturating_sub(self.pending())
    }

    /// How many actions to lease now: enough to keep every slot busy with one
    /// batch in reserve, no more (at most twice the concurrency held). Leasing
    /// what cannot start soon would hide it from the other instances sharing
    /// the connector id.
    ///
    /// Zero while more than one and a half concurrencies' worth are held, so
    /// leases come in batches of at least half a concurrency's worth (one round
    /// trip, one group commit) rather than one by one, and the next batch is
    /// asked for while half a concurrency's worth still waits: when it was
    /// asked for only once every slot's action was already taken, slots sat
    /// idle for the lease's round trip and its journal commit.
    pub fn lease_room(&self) -> usize {
        let max = self.settings.max_concurrency;
        let pending = self.pending();
        if 2 * pending > 3 * max {
            return 0;
        }
        self.free_capacity().min(2 * max - pending)
    }

    /// A receiver that changes whenever an action finishes (for intake loops
    /// waiting for room: subscribe, check, then wait).
    pub fn finished_changes(&self) -> watch::Receiver<u64> {
        self.finished.subscribe()
    }
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Records an action and starts it, or answers from the journal when the id
    /// is already known (redelivered leases, retried pushes).
    ///
    /// It takes its place in the queue before its first await: the poll loop
    /// polls a leased batch once, then counts the room for the next lease.
    pub async fn submit(
        self: &Arc<Self>,
        action: Action,
        source: Source,
        lease: Option<Lease>,
    ) -> Result<Submitted, EngineError> {
        if self.is_draining() {
            return Err(EngineError::Draining);
        }
        // Reserved before the journal write: concurrent submissions (a lease
        // batch, pushes) cannot all pass the check and overshoot the queue.
        let slot = self.reserve_slot()?;
        let token = lease.as_ref().map(|l| l.token.as_str());
        let span = action_span(&action);
        let recorded = self
            .journal
            .record(&action, source, token)
            .instrument(span.clone())
            .await?;
        match recorded {
            Recorded::New => {
                self.start(action, lease, slot, span);
                Ok(Submitted::Accepted)
            }
            Recorded::Known(state) => {
                if let Some(result) = state.result {
                    // Already done: answered from the journal, never invoked again.
                    tracing::info!(action_id = %action.id, "duplicate delivery of a finished action; answering from the journal");
                    if source == Source::Poll {
                        // The control plane handed it out again, so it lacks our result: send it again.
                        self.journal.requeue_result(&action.id).await?;
                        self.outbox.notify_one();
                    }
                    return Ok(Submitted::Done(Box::new(result)));
                }
                let mut lease = lease;
                let here = match self
                    .running
                    .lock()
                    .expect("running lock")
                    .get_mut(&action.id)
                {
                    Some(running) => {
                        // Redelivered while running here: the new lease is the one to keep.
                        if let Some(lease) = lease.take() {
                            running.lease = Some(lease);
                        }
                        true
                    }
                    None => false,
                };
                let status = self.progress(&action.id, state.status);
                if !here {
                    // Recorded by an earlier run of this process that did not finish it.
                    self.start(action, lease, slot, span);
                }
                Ok(Submitted::InProgress(status))
            }
        }
    }

    /// Records a failed `invalid_action` result for an action that could not be
    /// parsed but has an id (so the control plane learns why).
    pub async fn reject_invalid(
        self: &Arc<Self>,
        invalid: &InvalidAction,
        source: Source,
        lease_token: Option<&str>,
    ) -> Result<(), EngineError> {
        let Some(id) = &invalid.id else { return Ok(()) };
        if let Some(state) = self.journal.state(id).await?
            && state.result.is_some()
        {
            return Ok(());
        }
        let now = self.clock.now();
        let result = ActionResult::failed(
            id,
            ErrorCode::InvalidAction,
            &invalid.reason,
            now,
            now,
            &self.instance_id,
        );
        self.journal
            .complete_unrecorded(&result, source, lease_token)
            .await?;
        self.announce_finished();
        Ok(())
    }

    /// Resumes actions a previous run recorded but did not finish (crash,
    /// grace period exceeded). Same id, so the same `Idempotency-Key`.
    pub async fn resume_unfinished(self: &Arc<Self>) -> Result<usize, EngineError> {
        let unfinished = self.journal.unfinished().await?;
        let n = unfinished.len();
        for u in unfinished {
            tracing::info!(action_id = %u.action.id, was_running = u.was_running, "resuming an action left unfinished by the previous run");
            let lease = u.lease_token.map(|token| Lease {
                token,
                expires_at: self.clock.now(),
            });
            // Resumed work is admitted whatever the queue: it was accepted before.
            self.pending.fetch_add(1, Ordering::SeqCst);
            let span = action_span(&u.action);
            self.start(u.action, lease, Slot(&self.pending), span);
        }
        Ok(n)
    }

    /// Where an unfinished action is, for status answers: the journal's
    /// `journaled` status, `Running` while this process calls its function.
    pub fn progress(&self, id: &str, journaled: Progress) -> Progress {
        let calling = self
            .running
            .lock()
            .expect("running lock")
            .get(id)
            .is_some_and(|running| running.calling);
        if calling && journaled == Progress::Queued {
            Progress::Running
        } else {
            journaled
        }
    }

    /// A place in the queue, or `Full`. The check and the count are one step.
    fn reserve_slot(&self) -> Result<Slot<'_>, EngineError> {
        let capacity = self.settings.queue_capacity;
        self.pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < capacity).then_some(n + 1)
            })
            .map(|_| Slot(&self.pending))
            .map_err(EngineError::Full)
    }

    /// Runs `action` in the background in the place `slot` holds (which the
    /// task gives back when the action finishes).
    /// `span` is the action's (see [`action_span`]).
    fn start(
        self: &Arc<Self>,
        action: Action,
        lease: Option<Lease>,
        slot: Slot<'_>,
        span: tracing::Span,
    ) {
        {
            let mut running = self.running.lock().expect("running lock");
            match running.entry(action.id.clone()) {
                // Already running here; the slot goes back.
                std::collections::hash_map::Entry::Occupied(_) => return,
                std::collections::hash_map::Entry::Vacant(v) => v.insert(InFlight {
                    calling: false,
                    lease,
                }),
            };
        }
        std::mem::forget(slot); // the task below gives the place back
        self.accepted.send_modify(|n| *n += 1);
        if let Some(cx) = crate::telemetry::traces::exported_context(&span) {
            self.traces.remember(&action.id, cx);
        }
        let engine = self.clone();
        self.tracker.spawn(
            async move {
                tokio::select! {
                    done = engine.run(&action) => {
                        if let Err(e) = done {
                            // The result could not be stored: leave it unfinished so it resumes.
                            tracing::error!(error = %e, "could not record the result; the action will be resumed");
                        }
                    }
                    () = engine.abort.cancelled() => {
                        tracing::warn!("shutdown grace period over; left unfinished for the next start to resume");
                    }
                }
                engine.running.lock().expect("running lock").remove(&action.id);
                engine.pending.fetch_sub(1, Ordering::SeqCst);
            }
            .instrument(span),
        );
    }

    /// Admission (small, while queued), then the step and the journal (in a
    /// box of their own): the result and its audit entries become durable.
    ///
    /// It borrows `action` (which the task owns): an async fn keeps its
    /// by-value arguments twice, and every queued action would hold both.
    async fn run(&self, action: &Action) -> Result<(), JournalError> {
        let admitted = self.admit(action).await;
        Box::pin(async {
            let (result, audit) = self.process_admitted(action, admitted).await;
            self.store(&result, audit).await?;
            self.announce_finished();
            Ok(())
        })
        .await
    }

    /// Stores a result and its audit entries (one journal write). On
    /// a disk error (full, failing) it keeps them and tries again, backing
    /// off, until the journal takes them: the function was called, and
    /// giving up would mean calling it again after a restart. Only a
    /// shutdown (the grace period running out) stops it, leaving the action
    /// to be resumed.
    async fn store(
        &self,
        result: &ActionResult,
        audit: Vec<AuditEntry>,
    ) -> Result<(), JournalError> {
        let backoff = crate::retry::Backoff {
            base: Duration::from_millis(200),
            max: Duration::from_secs(5),
        };
        for round in 1u32.. {
            let e = match self
                .journal
                .complete_with_attempts(result, audit.clone())
                .await
            {
                Ok(()) => {
                    for entry in &audit {
                        self.export_audit(entry);
                    }
                    return Ok(());
                }
                Err(e) => e,
            };
            if self.journal.writable().is_ok() && !e.is_retryable() {
                return Err(e);
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.delay(round, None)) => {}
                () = self.abort.cancelled() => return Err(e),
            }
        }
        unreachable!("the loop above returns")
    }

    /// `[log] audit_stdout`: a recorded attempt as one JSON line on stdout
    /// (the shape of `grantbridge audit --json`), for a log pipeline that
    /// keeps the audit trail when the journal does not outlive the pod.
    fn export_audit(&self, entry: &AuditEntry) {
        if !self.services().config.log.audit_stdout {
            return;
        }
        if let Ok(line) = serde_json::to_string(entry) {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
    }

    fn announce_finished(&self) {
        self.finished.send_modify(|n| *n += 1);
        self.outbox.notify_one();
    }

    /// docs/protocol.md §2 validation: integration, event type, params, not_after.
    fn validate(
        &self,
        services: &Services,
        action: &Action,
    ) -> Result<EventType, (ErrorCode, String)> {
        let config = &services.config;
        if !config.integrations.contains_key(&action.integration) {
            return Err((
                ErrorCode::UnknownIntegration,
                format!(
                    "no integration named `{}` is configured in this connector",
                    action.integration
                ),
            ));
        }
        let event = EventType::parse(&action.event_type).ok_or_else(|| {
            (
                ErrorCode::UnsupportedEventType,
                format!("`{}` is not a supported event type", action.event_type),
            )
        })?;
        validate_params(event, &action.params)
            .map_err(|e| (ErrorCode::InvalidAction, e.to_string()))?;
        if action.not_after.is_some_and(|na| self.clock.now() >= na) {
            return Err((
                ErrorCode::Expired,
                "not_after passed before the action could start".into(),
            ));
        }
        Ok(event)
    }

    /// One step, what the daemon does per action: validate, wait for the
    /// concurrency permits, invoke, count and log the outcome. Returns the result
    /// and the audit entry of every attempt; storing them is the caller's (the
    /// daemon writes them to the journal). Tests call it directly.
    pub async fn process(&self, action: &Action) -> (ActionResult, Vec<AuditEntry>) {
        let admitted = self.admit(action).await;
        self.process_admitted(action, admitted).await
    }

    /// Validates `action` and waits for its concurrency permits. A small
    /// future: what a queued action holds while it waits (the call's own,
    /// larger state is only allocated once it may run).
    async fn admit(&self, action: &Action) -> Admitted {
        // One configuration for the whole action, even if a reload lands meanwhile.
        let services = self.services();
        // Validation first: an invalid action never waits for a permit or reaches a function.
        let permitted = match self.validate(&services, action) {
            Err(refusal) => Err(refusal),
            Ok(event) => {
                let local = self
                    .semaphore(&action.integration)
                    .acquire_owned()
                    .await
                    .expect("semaphores are never closed");
                let global = self
                    .global
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("semaphores are never closed");
                Ok((event, [local, global]))
            }
        };
        Admitted {
            services,
            permitted,
        }
    }

    /// [`Engine::process`] once admitted.
    async fn process_admitted(
        &self,
        action: &Action,
        admitted: Admitted,
    ) -> (ActionResult, Vec<AuditEntry>) {
        let Admitted {
            services,
            permitted,
        } = admitted;
        let (result, audit) = match permitted {
            Err((code, message)) => {
                let now = self.clock.now();
                (
                    ActionResult::failed(&action.id, code, &message, now, now, &self.instance_id),
                    Vec::new(),
                )
            }
            Ok((event, _permits)) => {
                if let Some(running) = self
                    .running
                    .lock()
                    .expect("running lock")
                    .get_mut(&action.id)
                {
                    running.calling = true;
                }
                self.invoke(&services, action, event).await
            }
        };
        // Labels only from the configuration and the protocol's vocabulary:
        // names sent by the control plane could otherwise grow the series without bound.
        let integration = if services
            .config
            .integrations
            .contains_key(&action.integration)
        {
            action.integration.as_str()
        } else {
            "(unknown)"
        };
        let event = EventType::parse(&action.event_type).map_or("(unsupported)", EventType::as_str);
        let outcome = result
            .error
            .as_ref()
            .map_or("succeeded", |e| e.code.as_str());
        services
            .metrics
            .action_finished(integration, event, outcome);
        match &result.error {
            None => tracing::info!(attempts = result.attempts, "action succeeded"),
            Some(e) => {
                let call = result.function.as_ref();
                let status = call.and_then(|f| f.status);
                // A function's own failure message comes from its answer, which
                // may carry secrets: it stays in the result, out of the log.
                let reported = e.code == ErrorCode::FunctionError
                    && status.is_some_and(|s| (200..300).contains(&s));
                let error = if reported {
                    "the function reported failure (its message is in the result)"
                } else {
                    e.message.as_str()
                };
                tracing::warn!(
                    attempts = result.attempts,
                    code = e.code.as_str(),
                    status,
                    error,
                    "action failed"
                )
            }
        }
        (result, audit)
    }

    /// Calls the function; returns the result and the audit entry of every attempt.
    async fn invoke(
        &self,
        services: &Services,
        action: &Action,
        event: EventType,
    ) -> (ActionResult, Vec<AuditEntry>) {
        let integration = &services.config.integrations[&action.integration];
        let call = Call {
            trace_id: Some(action.trace_id()),
            sampled: action.traceparent.is_none_or(|tp| tp.sampled()),
            event_type: event,
            params: action.params.clone(),
            idempotency_key: action.id.clone(),
            not_after: action.not_after,
        };
        let report = services.invoker.invoke(integration, &call).await;
        let mut result = result::from_report(
            &action.id,
            &report,
            &self.instance_id,
            self.settings.result_body_max_bytes,
        );
        if event == EventType::GrantAccess && result.succeeded() {
            result.access_details = integration.access_details.as_ref().map(Url::to_string);
        }
        self.health.record_call(
            &action.integration,
            result.error.as_ref().map(|e| (e.code, e.message.as_str())),
        );
        // Escaped: the audit trail is read on terminals (`grantbridge audit`)
        // and must not carry a control plane's newlines, escapes or bidi overrides.
        let username = action
            .params
            .get("username")
            .and_then(|u| u.as_str())
            .map(|u| crate::telemetry::escape_for_log(u).into_owned());
        let audit = report
            .log
            .iter()
            .map(|attempt| AuditEntry {
                at: attempt.at,
                action_id: action.id.clone(),
                integration: action.integration.clone(),
                event_type: action.event_type.clone(),
                username: username.clone(),
                function_url: Some(report.url.clone()),
                http_status: attempt.status,
                latency_ms: attempt.latency.as_millis() as u64,
                outcome: attempt.outcome.clone(),
                attempt: attempt.number,
                instance_id: self.instance_id.clone(),
            })
            .collect();
        (result, audit)
    }

    /// Each integration's health, written by the engine (calls) and the
    /// online checks (verdicts).
    pub fn health(&self) -> &Arc<HealthBoard> {
        &self.health
    }

    /// Every configured integration's health now, for heartbeats and `/readyz`.
    pub fn health_report(&self) -> Vec<IntegrationHealth> {
        let services = self.services();
        self.health.report(services.config.integrations.values())
    }

    fn semaphore(&self, integration: &str) -> Arc<Semaphore> {
        let mut map = self.per_integration.lock().expect("semaphores lock");
        map.entry(integration.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.per_integration_concurrency)))
            .clone()
    }

    /// Poll-mode leases of actions running here: (id, lease).
    pub fn leases(&self) -> Vec<(String, Lease)> {
        self.running
            .lock()
            .expect("running lock")
            .iter()
            .filter_map(|(id, running)| Some((id.clone(), running.lease.clone()?)))
            .collect()
    }

    pub fn update_lease(&self, id: &str, expires_at: SystemTime) {
        if let Some(lease) = self
            .running
            .lock()
            .expect("running lock")
            .get_mut(id)
            .and_then(|running| running.lease.as_mut())
        {
            lease.expires_at = expires_at;
        }
    }

    /// Waits until this engine has started `n` actions since it started.
    pub async fn wait_accepted(&self, n: u64) {
        let mut accepted = self.accepted.subscribe();
        let _ = accepted.wait_for(|&done| done >= n).await;
    }

    /// Waits until this engine has finished `n` actions since it started
    /// (results stored in the journal's outbox).
    pub async fn wait_finished(&self, n: u64) {
        let mut finished = self.finished.subscribe();
        let _ = finished.wait_for(|&done| done >= n).await;
    }

    /// Waits up to `timeout` for an action's result.
    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<ActionResult>, EngineError> {
        let mut finished = self.finished.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(state) = self.journal.state(id).await?
                && let Some(result) = state.result
            {
                return Ok(Some(result));
            }
            if tokio::time::timeout_at(deadline, finished.changed())
                .await
                .is_err()
            {
                return Ok(None);
            }
        }
    }

    /// Stops intake, waits up to the grace period for running actions, then
    /// leaves the rest unfinished in the journal (they resume at next start).
    /// Returns how many were left.
    pub async fn drain(&self) -> usize {
        self.draining.store(true, Ordering::SeqCst);
        self.tracker.close();
        let grace = self.settings.shutdown_grace;
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            let left = self.pending();
            tracing::warn!(
                left,
                grace_s = grace.as_secs(),
                "grace period over; cancelling running actions, they resume at next start"
            );
            self.abort.cancel();
            self.tracker.wait().await;
            return left;
        }
        0
    }
}

/// The span of one action: its log lines carry these fields, and when traces
/// are exported it is the action's span in its trace (the child of a pushed
/// `traceparent`, else a root with the action's trace id).
fn action_span(action: &Action) -> tracing::Span {
    let username = action
        .params
        .get("username")
        .and_then(|u| u.as_str())
        .unwrap_or("");
    let trace_id = action.trace_id();
    let span = tracing::info_span!("action", action_id = %action.id, integration = %action.integration, event_type = %action.event_type, username = %username, trace_id = %trace_id);
    crate::telemetry::traces::start_action_span(&span, &trace_id, action.traceparent.as_ref());
    span
}
