//! Prometheus metrics, in a struct registered into a registry the app owns
//! (no globals). Labels are names from the configuration, never user input
//! that could explode cardinality.
//!
//! It must not record secrets, usernames or action ids as labels.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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

pub struct Metrics {
    registry: Mutex<Registry>,
    token_mints: Family<MintLabels, Counter>,
    function_calls: Family<CallLabels, Counter>,
    function_latency: Family<IntegrationLabel, Histogram>,
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
        Self {
            registry: Mutex::new(registry),
            token_mints,
            function_calls,
            function_latency,
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
