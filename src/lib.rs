//! grantbridge: the bridge between an access-management control plane and the
//! Google Cloud Functions that grant and revoke access.
//!
//! # Map
//! - [`config`]: the TOML file (+ `GRANTBRIDGE__*` env overrides) parsed once into
//!   validated types: connections, integrations, control plane, push, journal, engine.
//! - [`google`]: credentials (service-account key, metadata server, impersonation,
//!   ADC) that mint Google-signed ID tokens, and the per-audience token cache.
//! - [`function`]: invokes a Cloud Function per the function contract and
//!   classifies the outcome, with retries; [`contract`] holds its vocabulary.
//! - [`action`]: actions and results as the protocol writes them.
//! - [`check`]: online checks of each integration's function through the Cloud
//!   Functions API (exists, ACTIVE, 1st gen HTTPS at the configured URL, timeout,
//!   invoke permission, not public), as per-integration verdicts.
//! - [`engine`]: runs actions: validation, bounded concurrency, journaling.
//! - [`journal`]: the SQLite journal: actions, outbox, audit trail, group commit.
//! - [`control_plane`]: the client for leases, results and heartbeats.
//! - [`daemon`]: the loops (poll, lease keeping, reporting, heartbeat, online checks),
//!   the signed push endpoint, the admin endpoints, SIGHUP reload, graceful shutdown.
//! - [`sandbox`]: Google and a control plane on 127.0.0.1, for tests, the demo and
//!   local function development; [`demo`] plays the README's scenario on it.
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
//! answer, retrying what is retryable → the result is stored in the journal's
//! outbox → the reporter delivers it to the control plane, which accepts it once.
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
pub mod demo;
pub mod engine;
pub mod env;
pub mod function;
pub mod google;
pub mod http;
pub mod journal;
pub mod metrics;
pub mod retry;
pub mod sandbox;
pub mod telemetry;
