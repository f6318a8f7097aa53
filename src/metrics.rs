//! Prometheus metrics, in a struct registered into a registry the app owns
//! (no globals). Labels are names from the configuration, never user input
//! that could explode cardinality.
//!
//! It must not record secrets, usernames or action ids as labels.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MintLabels {
    pub connection: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub integration: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IntegrationLabel {
    pub integration: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub integration: String,
    pub event_type: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControlPlaneLabels {
    pub call: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    token_mints: Family<MintLabels, Counter>,
    function_calls: Family<CallLabels, Counter>,
    function_latency: Family<IntegrationLabel, Histogram>,
    actions: Family<ActionLabels, Counter>,
    control_plane_errors: Family<ControlPlaneLabels, Counter>,
    config_reloads: Family<ResultLabel, Counter>,
    outbox_depth: Gauge,
    outbox_oldest: Gauge,
    in_flight: Gauge,
    journal_writable: Gauge,
    journal_write_failures: Counter,
    journal_writes: Counter,
    journal_commits: Counter,
    journal_unsynced_commits: Counter,
    journal_commit_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("grantbridge");
        let token_mints = Family::<MintLabels, Counter>::default();
        registry.register(
            "token_mints",
            "ID tokens minted, by connection and result (ok/error)",
            token_mints.clone(),
        );
        let function_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "function_attempts",
            "Function HTTP attempts, by integration and outcome",
            function_calls.clone(),
        );
        let function_latency = Family::<IntegrationLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 16))
        });
        registry.register(
            "function_latency_seconds",
            "Function call latency per attempt",
            function_latency.clone(),
        );
        let actions = Family::<ActionLabels, Counter>::default();
        registry.register("actions", "Actions finished, by integration, event type and outcome (succeeded or the error code)", actions.clone());
        let control_plane_errors = Family::<ControlPlaneLabels, Counter>::default();
        registry.register("control_plane_errors", "Failed control plane calls, by call (lease, extend, results, heartbeat) and kind (unauthorized, unavailable, lease_lost, protocol)", control_plane_errors.clone());
        let config_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP), by result (ok/rejected)",
            config_reloads.clone(),
        );
        let outbox_depth = Gauge::default();
        registry.register(
            "outbox_depth",
            "Results waiting to be accepted by the control plane",
            outbox_depth.clone(),
        );
        let outbox_oldest = Gauge::default();
        registry.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest result waiting for the control plane (0 when none waits); a growing value means the outbox is not draining",
            outbox_oldest.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_actions",
            "Actions accepted and not finished (queued or running)",
            in_flight.clone(),
        );
        let journal_writable = Gauge::default();
        registry.register(
            "journal_writable",
            "1 while the journal can write; 0 from a failed write on a full or failing disk until one commits again (no new work is taken meanwhile)",
            journal_writable.clone(),
        );
        let journal_write_failures = Counter::default();
        registry.register(
            "journal_write_failures",
            "Journal writes that failed on a disk error (full, failing, read-only)",
            journal_write_failures.clone(),
        );
        let journal_writes = Counter::default();
        registry.register(
            "journal_writes",
            "Journal writes committed (record, complete, report marks, ...)",
            journal_writes.clone(),
        );
        let journal_commits = Counter::default();
        registry.register(
            "journal_commits",
            "Journal transactions committed, each one fsync of the write-ahead log: writes per commit is the group-commit factor",
            journal_commits.clone(),
        );
        let journal_unsynced_commits = Counter::default();
        registry.register(
            "journal_unsynced_commits",
            "Journal transactions committed without an fsync: those that only mark results reported or prune (the next fsync covers them)",
            journal_unsynced_commits.clone(),
        );
        let journal_commit_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "journal_commit_seconds",
            "Time spent applying and committing the fsync'd journal transactions, fsync included: per commit, what a write waits for the disk",
            journal_commit_seconds.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "build_info",
            "Always 1; the version label says which build runs",
            build_info.clone(),
        );
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        Self {
            registry: Mutex::new(registry),
            token_mints,
            function_calls,
            function_latency,
            actions,
            control_plane_errors,
            config_reloads,
            outbox_depth,
            outbox_oldest,
            in_flight,
            journal_writable,
            journal_write_failures,
            journal_writes,
            journal_commits,
            journal_unsynced_commits,
            journal_commit_seconds,
        }
    }

    pub fn token_minted(&self, connection: &str, ok: bool) {
        self.token_mints
            .get_or_create(&mint_labels(connection, ok))
            .inc();
    }

    pub fn token_mints(&self, connection: &str, ok: bool) -> u64 {
        self.token_mints
            .get_or_create(&mint_labels(connection, ok))
            .get()
    }

    pub fn function_attempt(&self, integration: &str, outcome: &str, seconds: f64) {
        self.function_calls
            .get_or_create(&CallLabels {
                integration: integration.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.function_latency
            .get_or_create(&IntegrationLabel {
                integration: integration.into(),
            })
            .observe(seconds);
    }

    pub fn action_finished(&self, integration: &str, event_type: &str, outcome: &str) {
        self.actions
            .get_or_create(&ActionLabels {
                integration: integration.into(),
                event_type: event_type.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn actions(&self, integration: &str, event_type: &str, outcome: &str) -> u64 {
        self.actions
            .get_or_create(&ActionLabels {
                integration: integration.into(),
                event_type: event_type.into(),
                outcome: outcome.into(),
            })
            .get()
    }

    pub fn control_plane_error(&self, call: &str, kind: &str) {
        self.control_plane_errors
            .get_or_create(&ControlPlaneLabels {
                call: call.into(),
                kind: kind.into(),
            })
            .inc();
    }

    /// How many control-plane errors of `kind` a `call` has had (tests, tools).
    pub fn control_plane_errors(&self, call: &str, kind: &str) -> u64 {
        self.control_plane_errors
            .get_or_create(&ControlPlaneLabels {
                call: call.into(),
                kind: kind.into(),
            })
            .get()
    }

    pub fn config_reloaded(&self, ok: bool) {
        self.config_reloads
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "rejected" }.into(),
            })
            .inc();
    }

    /// Gauges read at scrape time.
    pub fn set_queue(&self, outbox_depth: u64, outbox_oldest_age: Duration, in_flight: u64) {
        self.outbox_depth.set(outbox_depth as i64);
        self.outbox_oldest
            .set(i64::try_from(outbox_oldest_age.as_secs()).unwrap_or(i64::MAX));
        self.in_flight.set(in_flight as i64);
    }

    /// The journal's state at scrape time: writable, and its running totals
    /// of failed writes, committed writes, commits and time committing.
    pub fn set_journal(
        &self,
        writable: bool,
        failed_writes: u64,
        stats: crate::journal::JournalStats,
    ) {
        let (writes, commits) = (stats.writes, stats.transactions);
        let seconds = stats.commit_time.as_secs_f64();
        let counted = self.journal_commit_seconds.get();
        if seconds > counted {
            self.journal_commit_seconds.inc_by(seconds - counted);
        }
        self.journal_writable.set(i64::from(writable));
        for (counter, total) in [
            (&self.journal_write_failures, failed_writes),
            (&self.journal_writes, writes),
            (&self.journal_commits, commits),
            (&self.journal_unsynced_commits, stats.unsynced_transactions),
        ] {
            let counted = counter.get();
            if total > counted {
                counter.inc_by(total - counted);
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry lock");
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

fn mint_labels(connection: &str, ok: bool) -> MintLabels {
    MintLabels {
        connection: connection.into(),
        result: if ok { "ok" } else { "error" }.into(),
    }
}
