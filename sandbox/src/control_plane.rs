//! A simulated control plane on 127.0.0.1, speaking poll mode (docs/protocol.md
//! §3) faithfully: connector-token auth, leases that expire by the injected
//! [`Clock`] and are handed out again, long polls that wake on enqueue or
//! lease expiry, idempotent results (the first stands), heartbeats. Knobs
//! simulate a bad day: outages (503, or the port really closed and re-opened),
//! injected failures, latency, token revocation. Tests, the demo and the
//! benchmarks drive it through [`ControlPlane`] or over HTTP under `/_admin/`.
//!
//! Admin API (no token; JSON bodies):
//! - `POST /_admin/actions`: one action or an array → `{"enqueued":[ids]}`
//! - `GET /_admin/results`, `GET /_admin/state` (counts, heartbeats, knobs, calls)
//! - `POST /_admin/outage` `{"mode":"none"|"unavailable"|"refuse","seconds"?}`
//!   (`seconds`: switch back to `none` after that long; a refuse without it
//!   can only be ended from Rust, since nothing listens)
//! - `POST /_admin/fail_next` `{"count","status","retry_after"?}`,
//!   `POST /_admin/latency` `{"ms"}`, `POST /_admin/tokens` `{"add"?,"revoke"?}`
//!
//! It must never be reachable from production code paths, must not read the
//! process environment or wall-clock time directly (time comes from the
//! [`Clock`]), and keeps all state in one `Arc` owned by the [`ControlPlane`]
//! (no globals), so tests run side by side.

mod ledger;
mod net;
mod routes;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::SandboxError;
use crate::clock::Clock;
use ledger::Ledger;
use net::{ConnHandle, Gate, Net};

pub use ledger::ResultRecord;

/// How to start a [`ControlPlane`].
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// The `{connector_id}` the `/v1` paths must carry (else 404).
    pub connector_id: String,
    /// Connector tokens accepted as `Authorization: Bearer` (several: rotation).
    pub tokens: Vec<String>,
    /// The source of every timestamp: lease expiry, `accepted_at`, heartbeats.
    pub clock: Clock,
}

impl Default for ControlPlaneOptions {
    fn default() -> Self {
        Self {
            connector_id: "sandbox".to_owned(),
            tokens: vec!["sandbox-connector-token".to_owned()],
            clock: Clock::system(),
        }
    }
}

/// A simulated outage of the whole `/v1` API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outage {
    /// Business as usual.
    #[default]
    None,
    /// Every `/v1` call answers 503 with `Retry-After: 1` (`/_admin/` still works).
    Unavailable,
    /// Nothing listens: connections are refused and open ones are cut
    /// (`/_admin/` too). Ending it re-binds the same port.
    Refuse,
}

/// Calls to `/v1`, per endpoint as they arrived, and answers by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallCounts {
    pub lease: u64,
    pub extend: u64,
    pub results: u64,
    pub heartbeat: u64,
    /// Any other `/v1` path.
    pub other: u64,
    /// Every answer given, by status (401s, injected 5xx and 429s included;
    /// calls cut by a refuse outage were never answered).
    pub statuses: BTreeMap<u16, u64>,
}

impl CallCounts {
    /// Every `/v1` call that arrived.
    pub fn total(&self) -> u64 {
        self.lease + self.extend + self.results + self.heartbeat + self.other
    }

    /// Answers with exactly this status.
    pub fn with_status(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// 401 answers (missing, wrong or revoked connector token).
    pub fn unauthorized(&self) -> u64 {
        self.with_status(401)
    }

    /// 5xx answers (outages and injected failures).
    pub fn server_errors(&self) -> u64 {
        self.statuses.range(500..600).map(|(_, n)| n).sum()
    }

    fn arrived(&mut self, endpoint: Endpoint) {
        let n = match endpoint {
            Endpoint::Lease => &mut self.lease,
            Endpoint::Extend => &mut self.extend,
            Endpoint::Results => &mut self.results,
            Endpoint::Heartbeat => &mut self.heartbeat,
            Endpoint::Other => &mut self.other,
        };
        *n += 1;
    }

    fn answered(&mut self, status: u16) {
        *self.statuses.entry(status).or_default() += 1;
    }
}

/// Which `/v1` call a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Lease,
    Extend,
    Results,
    Heartbeat,
    Other,
}

impl Endpoint {
    fn of(path: &str) -> Endpoint {
        let rest = path
            .strip_prefix("/v1/connectors/")
            .and_then(|r| r.split_once('/'))
            .map(|(_, rest)| rest);
        match rest {
            Some("lease") => Endpoint::Lease,
            Some("results") => Endpoint::Results,
            Some("heartbeat") => Endpoint::Heartbeat,
            Some(r) if r.starts_with("actions/") && r.ends_with("/extend") => Endpoint::Extend,
            _ => Endpoint::Other,
        }
    }
}

/// `fail_next`: the next `count` `/v1` calls answer `status`.
#[derive(Debug, Clone)]
struct FailNext {
    count: u32,
    status: u16,
    retry_after: Option<u64>,
}

/// Mutable state behind one lock (never held across an `.await`).
#[derive(Default)]
struct Inner {
    ledger: Ledger,
    heartbeats: HashMap<String, (Value, SystemTime)>,
    tokens: HashSet<String>,
    outage: Outage,
    /// Bumped on every outage switch, so a timed outage only ends itself.
    outage_epoch: u64,
    fail_next: Option<FailNext>,
    latency: Duration,
    /// Misbehaving: lease up to this many actions whatever `max_actions` asks.
    lease_overflow: Option<usize>,
    calls: CallCounts,
}

/// Everything the listener and the [`ControlPlane`] share.
struct Shared {
    connector_id: String,
    clock: Mutex<Clock>,
    inner: Mutex<Inner>,
    net: Arc<Net>,
    /// Woken when held long polls must look again (enqueue, clock change).
    changed: Notify,
    /// Woken when results are accepted.
    resulted: Notify,
    /// How many lease calls are being held (long polls waiting).
    held: watch::Sender<usize>,
    /// The current outage, for waiters.
    outage: watch::Sender<Outage>,
    /// Cancelled when the [`ControlPlane`] is dropped.
    cancel: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> SystemTime {
        self.clock.lock().unwrap_or_else(|e| e.into_inner()).now()
    }

    /// Enqueues actions that each have a string `id`; returns the ids.
    fn enqueue_all(&self, actions: Vec<Value>) -> Vec<String> {
        let mut ids = Vec::with_capacity(actions.len());
        {
            let mut inner = self.lock();
            for action in actions {
                let id = match action.get("id") {
                    Some(Value::String(id)) => id.clone(),
                    _ => panic!("control-plane sandbox: an enqueued action needs a string `id`"),
                };
                if !inner.ledger.enqueue(id.clone(), action) {
                    tracing::debug!(%id, "control-plane sandbox: id already known; ignored");
                }
                ids.push(id);
            }
        }
        self.changed.notify_waiters();
        ids
    }

    fn set_outage(&self, outage: Outage) -> Result<(), SandboxError> {
        let mut inner = self.lock();
        inner.outage_epoch += 1;
        // The net switch happens under the state lock, so concurrent switches
        // end in the state they recorded.
        if outage == Outage::Refuse {
            self.net.refuse();
        } else if let Err(e) = self.net.listen() {
            inner.outage = Outage::Refuse;
            return Err(e);
        }
        inner.outage = outage;
        self.outage.send_replace(outage);
        tracing::debug!(?outage, "control-plane sandbox: outage switched");
        Ok(())
    }

    /// `outage` now, back to [`Outage::None`] after `d` unless switched again.
    fn set_outage_for(self: &Arc<Self>, outage: Outage, d: Duration) -> Result<(), SandboxError> {
        self.set_outage(outage)?;
        let epoch = self.lock().outage_epoch;
        let me = self.clone();
        self.net.runtime().spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(d) => {}
                () = me.cancel.cancelled() => return,
            }
            if me.lock().outage_epoch == epoch
                && let Err(e) = me.set_outage(Outage::None)
            {
                tracing::error!(error = %e, "control-plane sandbox: cannot end the timed outage");
            }
        });
        Ok(())
    }

    fn fail_next(&self, count: u32, status: u16, retry_after: Option<u64>) {
        self.lock().fail_next = Some(FailNext {
            count,
            status,
            retry_after,
        });
    }
}

/// The control plane on 127.0.0.1. `Send + Sync`; dropping it stops it (the
/// port is closed, open connections are cut, held long polls end).
pub struct ControlPlane {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("url", &self.url())
            .field("connector_id", &self.shared.connector_id)
            .finish()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
        self.shared.net.shut();
        self.task.abort();
    }
}

impl ControlPlane {
    /// Binds 127.0.0.1:0 and starts serving.
    pub async fn start(opts: ControlPlaneOptions) -> Result<ControlPlane, SandboxError> {
        let cancel = CancellationToken::new();
        let net = Arc::new(Net::bind(cancel.clone())?);
        let shared = Arc::new(Shared {
            connector_id: opts.connector_id,
            clock: Mutex::new(opts.clock),
            inner: Mutex::new(Inner {
                tokens: opts.tokens.into_iter().collect(),
                ..Inner::default()
            }),
            net: net.clone(),
            changed: Notify::new(),
            resulted: Notify::new(),
            held: watch::Sender::new(0),
            outage: watch::Sender::new(Outage::None),
            cancel: cancel.clone(),
        });
        let app =
            routes::router(shared.clone()).into_make_service_with_connect_info::<ConnHandle>();
        let task = tokio::spawn(async move {
            let result = axum::serve(Gate(net), app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "control-plane sandbox listener stopped");
            }
        });
        let cp = ControlPlane { shared, task };
        tracing::debug!(url = %cp.url(), "control-plane sandbox started");
        Ok(cp)
    }

    /// `http://127.0.0.1:PORT` (stable across refuse outages).
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.net.addr())
    }

    /// The connector id the `/v1` paths must carry.
    pub fn connector_id(&self) -> &str {
        &self.shared.connector_id
    }

    /// Enqueues an action as is (it may be malformed, to test the connector);
    /// it must have a string `id`, which is returned. Wakes held long polls.
    /// An id that is already known is ignored (the first stands).
    ///
    /// # Panics
    /// When `action` has no string `id`.
    pub fn enqueue(&self, action: Value) -> String {
        self.shared
            .enqueue_all(vec![action])
            .pop()
            .unwrap_or_default()
    }

    /// [`ControlPlane::enqueue`] for many actions, waking long polls once.
    pub fn enqueue_many(&self, actions: Vec<Value>) {
        self.shared.enqueue_all(actions);
    }

    /// The first accepted result of `id`, with its report count.
    pub fn result(&self, id: &str) -> Option<ResultRecord> {
        self.shared.lock().ledger.result(id)
    }

    /// Every result, enqueued and pushed actions alike.
    pub fn results(&self) -> HashMap<String, ResultRecord> {
        self.shared.lock().ledger.results()
    }

    /// Waits until `count` distinct actions have results, or `timeout`;
    /// returns the results either way.
    pub async fn wait_for_results(
        &self,
        count: usize,
        timeout: Duration,
    ) -> HashMap<String, ResultRecord> {
        let enough = async {
            loop {
                let resulted = self.shared.resulted.notified();
                tokio::pin!(resulted);
                resulted.as_mut().enable();
                if self.shared.lock().ledger.result_count() >= count {
                    return;
                }
                resulted.await;
            }
        };
        // Timing out is an answer too: the caller looks at what came.
        let _ = tokio::time::timeout(timeout, enough).await;
        self.results()
    }

    /// How many times `id` was leased (more than 1: redelivered).
    pub fn leases_issued(&self, id: &str) -> u32 {
        self.shared.lock().ledger.leases_issued(id)
    }

    /// Enqueued actions without a result (leased or not).
    pub fn pending(&self) -> usize {
        self.shared.lock().ledger.pending()
    }

    /// Enqueued actions under a lease that has not ended.
    pub fn leased(&self) -> usize {
        let now = self.shared.now();
        self.shared.lock().ledger.leased(now)
    }

    /// The latest heartbeat of each `instance_id`, with when it arrived.
    pub fn heartbeats(&self) -> HashMap<String, (Value, SystemTime)> {
        self.shared.lock().heartbeats.clone()
    }

    /// `/v1` calls so far.
    pub fn calls(&self) -> CallCounts {
        self.shared.lock().calls.clone()
    }

    /// Switches the outage. Synchronous, even for [`Outage::Refuse`]: when
    /// this returns, connections are refused (or accepted again).
    ///
    /// # Panics
    /// When the port cannot be bound again after a refuse outage (another
    /// process took it); [`ControlPlane::try_set_outage`] returns that instead.
    pub fn set_outage(&self, outage: Outage) {
        if let Err(e) = self.try_set_outage(outage) {
            panic!("control-plane sandbox: {e}");
        }
    }

    /// [`ControlPlane::set_outage`], returning a re-bind failure.
    pub fn try_set_outage(&self, outage: Outage) -> Result<(), SandboxError> {
        self.shared.set_outage(outage)
    }

    /// `outage` now, and back to [`Outage::None`] after `d` (unless the
    /// outage is switched again meanwhile).
    pub fn set_outage_for(&self, outage: Outage, d: Duration) -> Result<(), SandboxError> {
        self.shared.set_outage_for(outage, d)
    }

    /// The current outage.
    pub fn outage(&self) -> Outage {
        self.shared.lock().outage
    }

    /// Waits until the outage is `outage` (e.g. a timed one has ended).
    pub async fn wait_for_outage(&self, outage: Outage) {
        let mut rx = self.shared.outage.subscribe();
        // The sender lives in `shared`, which outlives this borrow of `self`.
        let _ = rx.wait_for(|o| *o == outage).await;
    }

    /// Waits until at least `count` lease calls are being held open (long
    /// polls with nothing to hand out), so a test can enqueue while one waits.
    pub async fn wait_for_held_polls(&self, count: usize) {
        let mut rx = self.shared.held.subscribe();
        let _ = rx.wait_for(|n| *n >= count).await;
    }

    /// The next `count` `/v1` calls answer `status` (with `Retry-After` when
    /// given), before authentication, as a load balancer would. Replaces any
    /// earlier `fail_next`.
    pub fn fail_next(&self, count: u32, status: u16, retry_after: Option<u64>) {
        self.shared.fail_next(count, status, retry_after);
    }

    /// Misbehaves: every lease hands out up to `n` actions, whatever the
    /// connector asked for (`None`: honour `max_actions` again).
    pub fn ignore_max_actions(&self, n: Option<usize>) {
        self.shared.lock().lease_overflow = n;
    }

    /// Delays every `/v1` answer by `d` (zero: no delay).
    pub fn set_latency(&self, d: Duration) {
        self.shared.lock().latency = d;
    }

    /// Stops accepting a connector token (its calls get 401).
    pub fn revoke_token(&self, token: &str) {
        self.shared.lock().tokens.remove(token);
    }

    /// Accepts one more connector token.
    pub fn add_token(&self, token: &str) {
        self.shared.lock().tokens.insert(token.to_owned());
    }

    /// Replaces the clock (e.g. a skewed one, to make leases expire now);
    /// held long polls look again.
    pub fn set_clock(&self, clock: Clock) {
        *self.shared.clock.lock().unwrap_or_else(|e| e.into_inner()) = clock;
        self.shared.changed.notify_waiters();
    }
}
