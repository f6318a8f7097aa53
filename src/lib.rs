//! grantbridge: the bridge between an access-management control plane and the
//! Google Cloud Functions that grant and revoke access.
//!
//! # Map
//! - [`config`]: the TOML file (+ `GRANTBRIDGE__*` env overrides) parsed once into
//!   validated types: connections (credentials) and integrations (functions).
//! - [`google`]: credentials (service-account key, metadata server, impersonation,
//!   ADC) that mint Google-signed ID tokens, and the per-audience token cache.
//! - [`function`]: invokes a Cloud Function per the function contract and
//!   classifies the outcome, with retries.
//! - [`sandbox`]: Google on 127.0.0.1 (token endpoint, certs, metadata server, IAM
//!   Credentials, a Cloud Functions front end with sample functions).
//! - [`clock`], [`http`], [`env`]: injected time, the shared HTTP clients, and the
//!   process environment behind a trait.
//!
//! # How an action flows
//! config names the integration → [`function::Invoker`] asks the
//! [`google::TokenCache`] for an ID token whose audience is the function URL →
//! the connection's credentials mint one when needed → the function is POSTed the
//! contract payload → the response is classified into an outcome.
#![forbid(unsafe_code)]

pub mod action;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod contract;
pub mod env;
pub mod function;
pub mod google;
pub mod http;
pub mod journal;
pub mod metrics;
pub mod retry;
pub mod sandbox;
pub mod telemetry;
