//! grantbridge: the bridge between an access-management control plane and the
//! Google Cloud Functions that grant and revoke access.
//!
//! This crate is what runs in production. The world it talks to (Google, a
//! control plane) is emulated by the separate `grantbridge-sandbox` crate,
//! which this library never depends on; only the binary's default `sandbox`
//! feature links it, for `grantbridge demo` and `grantbridge sandbox`.
//!
//! # Map
//! - [`app`]: the one composition root. [`app::Application`] builds the
//!   journal, the services, the control-plane client, the engine and the
//!   listeners from a configuration and runs them.
//! - [`services`]: everything built from one configuration (credentials,
//!   token cache, invoker), swapped whole on reload.
//! - [`config`]: the TOML file (+ `GRANTBRIDGE__*` env overrides) parsed once into
//!   validated types: connections, integrations, control plane, push, journal, engine.
//! - [`google`]: credentials (service-account key, metadata server, impersonation,
//!   ADC) that mint Google-signed ID tokens, and the per-audience token cache.
//! - [`function`]: invokes a Cloud Function per the function contract and
//!   classifies the outcome, with retries; [`contract`] holds its vocabulary.
//! - [`action`]: actions and results as the protocol writes them.
//! - [`engine`]: runs actions: validation, bounded concurrency, journaling.
//! - [`health`]: each integration's health, written by the engine (calls) and
//!   the online checks (verdicts), read by heartbeats and `/readyz`.
//! - [`check`]: online checks of each integration's function through the Cloud
//!   Functions API (exists, ACTIVE, 1st gen HTTPS at the configured URL, timeout,
//!   invoke permission, not public), as per-integration verdicts.
//! - [`journal`]: the SQLite journal: actions, outbox, audit trail, group commit.
//! - [`control_plane`]: the client for leases, results and heartbeats.
//! - [`daemon`]: the loops (poll, lease keeping, reporting, heartbeat, online checks),
//!   the signed push endpoint, the admin endpoints, signals, SIGHUP reload,
//!   graceful shutdown.
//! - [`cli`]: one file per command, and the dispatch.
//! - [`clock`], [`http`], [`env`], [`retry`], [`metrics`], [`telemetry`]: injected
//!   time, the shared HTTP clients and URL policy, the environment behind a trait,
//!   backoff schedules, Prometheus metrics, logging.
//!
//! # How an action flows
//! [`daemon`] leases it from the control plane (or receives it signed on the push
//! endpoint) → [`engine::Engine::submit`] records it in the [`journal`] (answering
//! from the journal if the id is known) → validation against the [`config`] → the
//! [`function::Invoker`] asks the [`google::TokenCache`] for an ID token whose
//! audience is the function URL, POSTs the contract payload and classifies the
//! answer, retrying what is retryable → the outcome is recorded in [`health`] and
//! the result stored in the journal's outbox → the reporter delivers it to the
//! control plane, which accepts it once.
#![forbid(unsafe_code)]

pub mod action;
pub mod app;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod contract;
pub mod control_plane;
pub mod daemon;
pub mod engine;
pub mod env;
pub mod function;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod google;
pub mod health;
pub mod http;
pub mod journal;
pub mod metrics;
pub mod retry;
pub mod services;
pub mod telemetry;
#[cfg(test)]
mod testing;
