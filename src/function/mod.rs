//! Invokes a configured Cloud Function per the function contract: a POST with an
//! ID token for the integration's audience, the contract body, `Idempotency-Key`,
//! `traceparent` and `User-Agent`; the answer read up to a bound and classified;
//! retries with full-jitter backoff honouring `Retry-After`, bounded by the
//! integration's `max_attempts` and the action's `not_after`.
//!
//! It must only call the integration's configured URL (no redirects are
//! followed), and must never log a token or a response body.

pub mod outcome;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};
use tracing::Instrument;

use crate::clock::Clock;
use crate::config::Integration;
use crate::contract::{Body, ErrorCode, EventType, request_body};
use crate::google::TokenCache;
use crate::http::{BodyError, read_limited};
use crate::metrics::Metrics;
use crate::retry::{Backoff, parse_retry_after};
use outcome::{Disposition, classify};

// Static names and values: a name or value parsed per call would be
// allocated, and allocated again in each copy reqwest keeps of the headers.
const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");
const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
const JSON: http::HeaderValue = http::HeaderValue::from_static("application/json");

/// One call to make.
#[derive(Debug, Clone)]
pub struct Call {
    pub event_type: EventType,
    pub params: std::sync::Arc<Map<String, Value>>,
    /// Sent as `Idempotency-Key`; the same on every retry.
    pub idempotency_key: String,
    /// Never start or retry after this instant.
    pub not_after: Option<SystemTime>,
    /// The W3C trace id of the call's `traceparent` (and of the action's log
    /// lines); a fresh one when `None`.
    pub trace_id: Option<String>,
    /// The `traceparent` sampled flag when traces are not exported (the
    /// caller's decision, for an action pushed with one).
    pub sampled: bool,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded,
    Failed {
        code: ErrorCode,
        message: String,
        retryable: bool,
    },
}

/// Everything known about a finished call.
#[derive(Debug, Clone)]
pub struct Report {
    pub url: String,
    pub outcome: Outcome,
    /// Attempts made, including ones that failed to get a token (0 when the
    /// call was never started).
    pub attempts: u32,
    /// The last answer's status and body, when there was one.
    pub status: Option<u16>,
    pub body: Option<Body>,
    /// Latency of the last attempt.
    pub latency: Duration,
    pub started_at: SystemTime,
    pub finished_at: SystemTime,
    /// The W3C trace id shared by every attempt.
    pub trace_id: String,
    /// Every attempt, for the audit trail.
    pub log: Vec<AttemptLog>,
}

/// One attempt, as the audit trail records it.
#[derive(Debug, Clone)]
pub struct AttemptLog {
    pub number: u32,
    pub at: SystemTime,
    pub status: Option<u16>,
    pub latency: Duration,
    /// `succeeded`, or the error code the attempt ended with.
    pub outcome: String,
}

/// Invokes functions; one per app, shared.
pub struct Invoker {
    http: reqwest::Client,
    tokens: Arc<TokenCache>,
    clock: Clock,
    metrics: Arc<Metrics>,
    max_response_bytes: usize,
    backoff: Backoff,
}

/// The last attempt's answer, carried between attempts.
struct Attempt {
    status: Option<u16>,
    body: Option<Body>,
    latency: Duration,
}

impl Invoker {
    pub fn new(
        http: reqwest::Client,
        tokens: Arc<TokenCache>,
        clock: Clock,
        metrics: Arc<Metrics>,
        max_response_bytes: usize,
    ) -> Self {
        Self {
            http,
            tokens,
            clock,
            metrics,
            max_response_bytes,
            backoff: Backoff::default(),
        }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn tokens(&self) -> &Arc<TokenCache> {
        &self.tokens
    }

    /// Makes the call, retrying as the outcome rules allow.
    pub async fn invoke(&self, integration: &Integration, call: &Call) -> Report {
        let started_at = self.clock.now();
        let trace_id = call
            .trace_id
            .clone()
            .unwrap_or_else(|| hex::encode(rand::random::<[u8; 16]>()));
        let body = request_body(
            call.event_type,
            &call.params,
            &integration.custom_parameters,
        );
        let mut last = Attempt {
            status: None,
            body: None,
            latency: Duration::ZERO,
        };
        let mut attempts = 0;
        let mut log = Vec::new();
        let outcome = loop {
            if call.not_after.is_some_and(|na| self.clock.now() >= na) {
                break if attempts == 0 {
                    Outcome::Failed {
                        code: ErrorCode::Expired,
                        message: "not_after passed before the call was made".into(),
                        retryable: false,
                    }
                } else {
                    Outcome::Failed {
                        code: ErrorCode::Expired,
                        message: format!("not_after passed after {attempts} attempt(s)"),
                        retryable: false,
                    }
                };
            }
            attempts += 1;
            let at = self.clock.now();
            let verdict = self
                .attempt(integration, call, &body, &trace_id, &mut last)
                .await;
            log.push(AttemptLog {
                number: attempts,
                at,
                status: last.status,
                latency: last.latency,
                outcome: match &verdict {
                    Disposition::Success => "succeeded".to_owned(),
                    Disposition::Retry { code, .. } | Disposition::Fail { code, .. } => {
                        code.as_str().to_owned()
                    }
                },
            });
            let (code, message, retry_after) = match verdict {
                Disposition::Success => break Outcome::Succeeded,
                Disposition::Fail { code, message } => {
                    break Outcome::Failed {
                        code,
                        message,
                        retryable: false,
                    };
                }
                Disposition::Retry {
                    code,
                    message,
                    retry_after,
                } => (code, message, retry_after),
            };
            if attempts >= integration.max_attempts {
                break Outcome::Failed {
                    code,
                    message: format!("{message} (gave up after {attempts} attempts)"),
                    retryable: true,
                };
            }
            let delay = self.backoff.delay(attempts, retry_after);
            if call
                .not_after
                .is_some_and(|na| self.clock.now() + delay >= na)
            {
                break Outcome::Failed {
                    code,
                    message: format!(
                        "{message} (no retry: the next attempt would start after not_after)"
                    ),
                    retryable: true,
                };
            }
            tracing::info!(integration = %integration.name, attempt = attempts, delay_ms = delay.as_millis() as u64, reason = %message, "retrying function call");
            tokio::time::sleep(delay).await;
        };
        Report {
            url: integration.url.to_string(),
            outcome,
            attempts,
            status: last.status,
            body: last.body,
            latency: last.latency,
            started_at,
            finished_at: self.clock.now(),
            trace_id,
            log,
        }
    }

    /// One attempt: an ID token, the POST, and what its answer means. What
    /// came back is left in `last` for the report.
    async fn attempt(
        &self,
        integration: &Integration,
        call: &Call,
        body: &bytes::Bytes,
        trace_id: &str,
        last: &mut Attempt,
    ) -> Disposition {
        *last = Attempt {
            status: None,
            body: None,
            latency: Duration::ZERO,
        };
        // The attempt's span: its id is the function's parent in the trace.
        let span = tracing::debug_span!(
            "attempt",
            span_id = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let traceparent = {
            let (span_id, sampled) = crate::telemetry::traces::exported_ids(&span)
                .unwrap_or_else(|| (hex::encode(rand::random::<[u8; 8]>()), call.sampled));
            span.record("span_id", span_id.as_str());
            let value = format!("00-{trace_id}-{span_id}-{:02x}", u8::from(sampled));
            // Hex digits and dashes (the trace id is checked hex): always a valid value.
            http::HeaderValue::try_from(value).expect("a traceparent is a valid header value")
        };
        let verdict = self
            .attempt_in_span(integration, call, body, traceparent, last)
            .instrument(span.clone())
            .await;
        if let Some(status) = last.status {
            span.record("http.response.status_code", i64::from(status));
        }
        if !matches!(verdict, Disposition::Success) {
            span.record("otel.status_code", "error");
        }
        let label = match &verdict {
            Disposition::Success => "succeeded",
            Disposition::Retry {
                code: ErrorCode::FunctionUnavailable,
                ..
            } if last.status.is_none() => "unavailable",
            Disposition::Retry { .. } => "retryable",
            Disposition::Fail { code, .. } => code.as_str(),
        };
        tracing::debug!(parent: &span, status = last.status, latency_ms = last.latency.as_millis() as u64, outcome = label, "function attempt");
        self.metrics
            .function_attempt(&integration.name, label, last.latency.as_secs_f64());
        verdict
    }

    /// [`Self::attempt`] within its span: the token, then the POST.
    async fn attempt_in_span(
        &self,
        integration: &Integration,
        call: &Call,
        body: &bytes::Bytes,
        traceparent: http::HeaderValue,
        last: &mut Attempt,
    ) -> Disposition {
        let token = match self
            .tokens
            .get(&integration.connection, &integration.audience)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                let (code, message) = (ErrorCode::Credentials, e.to_string());
                return if e.is_retryable() {
                    Disposition::Retry {
                        code,
                        message,
                        retry_after: None,
                    }
                } else {
                    Disposition::Fail { code, message }
                };
            }
        };
        let started = Instant::now();
        let sent = self
            .http
            .post(integration.url.clone())
            .timeout(integration.timeout)
            .header(http::header::AUTHORIZATION, token.authorization())
            .header(http::header::CONTENT_TYPE, JSON)
            .header(IDEMPOTENCY_KEY, &call.idempotency_key)
            .header(TRACEPARENT, traceparent)
            .body(body.clone())
            .send()
            .await;
        let verdict = match sent {
            // Boxed: reading the answer needs more state than waiting for it,
            // and every call in flight would otherwise hold room for it.
            Ok(resp) => Box::pin(self.read_answer(integration, resp, last)).await,
            Err(e) => no_answer(integration, &e),
        };
        last.latency = started.elapsed();
        verdict
    }

    /// Reads the function's answer (at most `max_response_bytes`) and
    /// classifies it.
    async fn read_answer(
        &self,
        integration: &Integration,
        resp: reqwest::Response,
        last: &mut Attempt,
    ) -> Disposition {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.clock.now()));
        last.status = Some(status);
        match read_limited(resp, self.max_response_bytes).await {
            Ok(bytes) => {
                last.body = Body::from_bytes(&bytes);
                // Named only in a refusal's advice (401, 403): not built for every answer.
                let who = if matches!(status, 401 | 403) {
                    format!(
                        "{} with audience {}",
                        self.tokens
                            .principal(&integration.connection)
                            .unwrap_or_default(),
                        integration.audience
                    )
                } else {
                    String::new()
                };
                classify(status, last.body.as_ref(), retry_after, &who)
            }
            Err(BodyError::TooLarge { limit }) => Disposition::Fail {
                code: ErrorCode::FunctionError,
                message: format!(
                    "function answered HTTP {status} with a body over the {limit}-byte limit (for a 2xx, the call may have taken effect)"
                ),
            },
            Err(BodyError::Read(_)) => Disposition::Retry {
                code: ErrorCode::FunctionUnavailable,
                message: format!("function answered HTTP {status} but the body could not be read"),
                retry_after,
            },
        }
    }
}

/// What a call that got no HTTP answer means: retry, the function is unavailable.
fn no_answer(integration: &Integration, e: &reqwest::Error) -> Disposition {
    let what = if e.is_timeout() {
        format!(
            "no answer within the {} timeout",
            humantime::format_duration(integration.timeout)
        )
    } else if let Some(tls) = crate::http::tls_problem(e) {
        tls
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "the connection failed".to_owned()
    };
    Disposition::Retry {
        code: ErrorCode::FunctionUnavailable,
        message: format!("calling {}: {what}", integration.url),
        retry_after: None,
    }
}

/// The W3C trace id of an action: derived from its id, so every attempt, a
/// retry after a restart and every log line of the action share one trace.
pub fn trace_id_for(action_id: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, action_id.as_bytes());
    hex::encode(&digest.as_ref()[..16])
}
