//! ID tokens cached per (connection, audience): refreshed ahead of expiry,
//! single-flight (concurrent callers share one mint), and a failed refresh keeps
//! serving a token that is still valid. Every mint is counted and logged,
//! never with the token.
//!
//! It must not hold a lock across anything but the mint of its own slot, so one
//! slow audience never delays another.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument;

use super::credentials::IdTokenSource;
use super::error::CredentialsError;
use super::token::IdToken;
use crate::clock::Clock;
use crate::metrics::Metrics;

/// A token with less than this left is never handed out (a call could outlive it).
pub const MIN_REMAINING: Duration = Duration::from_secs(60);

/// No ID token could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("no connection named `{0}` is configured")]
    UnknownConnection(String),
    #[error("minting an ID token for audience {audience} as {principal}: {source}")]
    Mint {
        audience: String,
        principal: String,
        #[source]
        source: Arc<CredentialsError>,
    },
}

impl TokenError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::UnknownConnection(_) => false,
            Self::Mint { source, .. } => source.is_retryable(),
        }
    }
}

#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    /// Held while minting: the single flight.
    minting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct SlotState {
    token: Option<IdToken>,
    /// Bumped on every finished mint, so waiters can tell a mint finished while they queued.
    generation: u64,
    last_error: Option<(u64, TokenError)>,
}

pub struct TokenCache {
    sources: BTreeMap<String, Arc<dyn IdTokenSource>>,
    /// Connection → audience → slot (nested, so finding one allocates nothing).
    slots: Mutex<HashMap<String, HashMap<String, Arc<Slot>>>>,
    refresh_ahead: Duration,
    clock: Clock,
    metrics: Arc<Metrics>,
}

impl TokenCache {
    pub fn new(
        sources: BTreeMap<String, Arc<dyn IdTokenSource>>,
        refresh_ahead: Duration,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            sources,
            slots: Mutex::default(),
            refresh_ahead,
            clock,
            metrics,
        }
    }

    /// Who a connection's tokens speak for.
    pub fn principal(&self, connection: &str) -> Option<String> {
        self.sources.get(connection).map(|s| s.principal())
    }

    fn slot(&self, connection: &str, audience: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().expect("token cache lock");
        if let Some(slot) = slots.get(connection).and_then(|m| m.get(audience)) {
            return slot.clone();
        }
        slots
            .entry(connection.to_owned())
            .or_default()
            .entry(audience.to_owned())
            .or_default()
            .clone()
    }

    /// A valid ID token for `audience` as `connection`, minting when needed.
    ///
    /// A cached token not yet due for refresh is the answer of nearly every
    /// call, so that is found without awaiting; the rest (a refresh, a mint,
    /// waiting for another caller's) runs in a box of its own. The future
    /// every function call holds while it waits for its answer stays small.
    pub async fn get(&self, connection: &str, audience: &str) -> Result<IdToken, TokenError> {
        if let Some(token) = self.fresh(connection, audience) {
            return Ok(token);
        }
        Box::pin(self.get_or_mint(connection, audience)).await
    }

    /// The cached token for `audience` as `connection` if it is not yet due
    /// for refresh.
    fn fresh(&self, connection: &str, audience: &str) -> Option<IdToken> {
        let slot = {
            let slots = self.slots.lock().expect("token cache lock");
            slots.get(connection)?.get(audience)?.clone()
        };
        let state = slot.state.lock().expect("slot lock");
        state
            .token
            .as_ref()
            .filter(|t| t.remaining(self.clock.now()) > self.refresh_ahead)
            .cloned()
    }

    /// [`Self::get`] past its fast path: the slot's state decides.
    async fn get_or_mint(&self, connection: &str, audience: &str) -> Result<IdToken, TokenError> {
        let source = self
            .sources
            .get(connection)
            .ok_or_else(|| TokenError::UnknownConnection(connection.to_owned()))?;
        let slot = self.slot(connection, audience);
        enum Decision {
            Fresh(IdToken),
            DueForRefresh(IdToken),
            Mint { seen_generation: u64 },
        }
        let decision = {
            let state = slot.state.lock().expect("slot lock");
            let now = self.clock.now();
            match &state.token {
                Some(t) if t.remaining(now) > self.refresh_ahead => Decision::Fresh(t.clone()),
                Some(t) if t.remaining(now) > MIN_REMAINING => Decision::DueForRefresh(t.clone()),
                _ => Decision::Mint {
                    seen_generation: state.generation,
                },
            }
        };
        let seen_generation = match decision {
            Decision::Fresh(t) => return Ok(t),
            Decision::DueForRefresh(current) => {
                // Still good: one caller refreshes, the rest keep using it meanwhile.
                let Ok(_flight) = slot.minting.try_lock() else {
                    return Ok(current);
                };
                return Ok(self
                    .refresh(&slot, source.as_ref(), connection, audience, current)
                    .await);
            }
            Decision::Mint { seen_generation } => seen_generation,
        };
        let _flight = slot.minting.lock().await;
        {
            let state = slot.state.lock().expect("slot lock");
            if let Some(t) = state
                .token
                .as_ref()
                .filter(|t| t.remaining(self.clock.now()) > MIN_REMAINING)
            {
                return Ok(t.clone());
            }
            // A mint finished (and failed) while we queued: share its answer
            // instead of hammering a failing endpoint once per waiter.
            if let Some((generation, err)) = &state.last_error
                && *generation > seen_generation
            {
                return Err(err.clone());
            }
        }
        self.mint(&slot, source.as_ref(), connection, audience)
            .await
    }

    /// Refreshes a still-valid token; on failure keeps serving the old one.
    async fn refresh(
        &self,
        slot: &Slot,
        source: &dyn IdTokenSource,
        connection: &str,
        audience: &str,
        current: IdToken,
    ) -> IdToken {
        {
            let state = slot.state.lock().expect("slot lock");
            if let Some(t) = state
                .token
                .as_ref()
                .filter(|t| t.remaining(self.clock.now()) > self.refresh_ahead)
            {
                return t.clone(); // someone refreshed just before us
            }
        }
        match self.mint(slot, source, connection, audience).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(connection, audience, error = %e,
                    remaining_s = current.remaining(self.clock.now()).as_secs(),
                    "ID token refresh failed; serving the current token until it nears expiry");
                current
            }
        }
    }

    async fn mint(
        &self,
        slot: &Slot,
        source: &dyn IdTokenSource,
        connection: &str,
        audience: &str,
    ) -> Result<IdToken, TokenError> {
        let started = Instant::now();
        let result = source
            .mint(audience)
            .instrument(tracing::info_span!("token mint", connection, audience))
            .await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let mut state = slot.state.lock().expect("slot lock");
        state.generation += 1;
        match result {
            Ok(token) => {
                self.metrics.token_minted(connection, true);
                tracing::info!(
                    connection,
                    audience,
                    elapsed_ms,
                    expires_in_s = token.remaining(self.clock.now()).as_secs(),
                    email = token.email.as_deref().unwrap_or(""),
                    "minted ID token"
                );
                state.token = Some(token.clone());
                state.last_error = None;
                Ok(token)
            }
            Err(e) => {
                self.metrics.token_minted(connection, false);
                tracing::warn!(connection, audience, elapsed_ms, error = %e, "ID token mint failed");
                let err = TokenError::Mint {
                    audience: audience.to_owned(),
                    principal: source.principal(),
                    source: Arc::new(e),
                };
                state.last_error = Some((state.generation, err.clone()));
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests;
