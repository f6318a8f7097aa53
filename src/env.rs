//! The process environment behind a trait, so tests never read or mutate the
//! real one (ADC lookup, `GCE_METADATA_HOST`, `GRANTBRIDGE__*` overrides).
//! It must not cache: each lookup answers what the source holds now.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Where environment variables come from.
pub trait Environment: Send + Sync + std::fmt::Debug {
    fn var(&self, name: &str) -> Option<String>;
    /// Every variable, for prefix scans such as `GRANTBRIDGE__*`.
    fn vars(&self) -> Vec<(String, String)>;
}

/// The real process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

/// A fixed set of variables, for tests and for `grantbridge` subcommands that
/// want a sealed environment.
#[derive(Debug, Default, Clone)]
pub struct MapEnv(BTreeMap<String, String>);

impl MapEnv {
    pub fn new() -> Self {
        Self::default()
    }
    /// A snapshot of another environment's variables.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        Self(pairs.into_iter().collect())
    }

    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.0.insert(name.to_owned(), value.into());
        self
    }
}

impl Environment for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned().filter(|v| !v.is_empty())
    }
    fn vars(&self) -> Vec<(String, String)> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// The shared handle the app passes around.
pub type Env = Arc<dyn Environment>;

/// The real environment as an [`Env`].
pub fn process() -> Env {
    Arc::new(ProcessEnv)
}
