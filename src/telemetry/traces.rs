//! Traces: OpenTelemetry spans exported over OTLP/HTTP (protobuf) when an
//! endpoint is configured (`[traces]`, or the standard `OTEL_EXPORTER_OTLP_*`
//! variables); off by default. docs/operations.md "Traces" is the reference.
//!
//! The span tree of one action: `action` (a root, or the child of the
//! `traceparent` a pusher sent), and under it one `attempt` per function call
//! (its span id is the `traceparent` the function receives, so the function's
//! own trace joins this one), a `token mint` under the attempt that needed a
//! new token, a `journal write` per journal write and a `report` per delivery
//! of the result to the control plane.
//!
//! An action's trace id is its pushed `traceparent`'s, else derived from its id
//! ([`crate::function::trace_id_for`]). The log lines, the function's
//! `traceparent` and the exported spans therefore agree, across retries and
//! restarts, whether or not traces are exported. The SDK draws trace ids from
//! [`ActionTraceIds`], which hands out the action's id when the action span is
//! started ([`start_action_span`]).

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use tokio::runtime::Handle;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use url::Url;

/// Where traces go (the validated `[traces]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSettings {
    /// The OTLP/HTTP traces URL, e.g. `https://collector:4318/v1/traces`.
    pub endpoint: Url,
    /// `service.name` of every span.
    pub service_name: String,
}

/// A W3C `traceparent` (version 00): the caller's trace and span, and whether
/// it sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` header value as W3C Trace Context level 1 says:
    /// lowercase hex, non-zero ids, version `ff` invalid; a later version may
    /// append fields after a `-`. `None` for anything else (the spec says
    /// to ignore an invalid header and start a new trace).
    pub fn parse(s: &str) -> Option<TraceParent> {
        let s = s.trim_matches([' ', '\t']);
        let b = s.as_bytes();
        if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let lower_hex = |part: &[u8]| {
            part.iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        };
        let (version, trace, parent, flags) = (&b[0..2], &b[3..35], &b[36..52], &b[53..55]);
        if ![version, trace, parent, flags].into_iter().all(lower_hex) || version == b"ff" {
            return None;
        }
        // Version 00 is exactly 55 characters; a later one may say more after a dash.
        if (version == b"00" && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
            return None;
        }
        let mut tp = TraceParent {
            trace_id: [0; 16],
            parent_id: [0; 8],
            flags: 0,
        };
        hex::decode_to_slice(trace, &mut tp.trace_id).ok()?;
        hex::decode_to_slice(parent, &mut tp.parent_id).ok()?;
        let mut f = [0u8; 1];
        hex::decode_to_slice(flags, &mut f).ok()?;
        tp.flags = f[0];
        if tp.trace_id == [0; 16] || tp.parent_id == [0; 8] {
            return None;
        }
        Some(tp)
    }

    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.parent_id),
            self.flags
        )
    }
}

impl serde::Serialize for TraceParent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TraceParent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TraceParent::parse(&s).ok_or_else(|| serde::de::Error::custom("not a W3C traceparent"))
    }
}

thread_local! {
    /// The trace id the next root span started on this thread gets.
    static NEXT_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// The SDK's id source: random, except for an action span started by
/// [`start_action_span`], which gets its action's trace id.
#[derive(Debug, Default)]
struct ActionTraceIds(RandomIdGenerator);

impl IdGenerator for ActionTraceIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE_ID
            .with(Cell::take)
            .unwrap_or_else(|| self.0.new_trace_id())
    }
    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

/// Starts `span` (an action's) in its trace: the child of `parent` (a pushed
/// `traceparent`), or a root with trace id `trace_id`. Does nothing when
/// traces are not exported.
pub fn start_action_span(span: &tracing::Span, trace_id: &str, parent: Option<&TraceParent>) {
    if let Some(p) = parent {
        let remote = SpanContext::new(
            TraceId::from_bytes(p.trace_id),
            SpanId::from_bytes(p.parent_id),
            TraceFlags::new(p.flags),
            true,
            TraceState::NONE,
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        let _ = span.context(); // starts it now
        return;
    }
    let Ok(id) = TraceId::from_hex(trace_id) else {
        return;
    };
    NEXT_TRACE_ID.with(|next| next.set(Some(id)));
    let _ = span.context(); // starts it now, drawing the id set above
    NEXT_TRACE_ID.with(|next| next.set(None)); // unused when traces are off
}

/// The span id and sampled flag `span` has in the exported trace, when
/// traces are exported.
pub fn exported_ids(span: &tracing::Span) -> Option<(String, bool)> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.span_id().to_string(), sc.is_sampled()))
}

/// The exported trace context of `span`, to parent later spans (a result's
/// report) on; `None` when traces are not exported.
pub fn exported_context(span: &tracing::Span) -> Option<SpanContext> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The exported span of each action whose result is not yet reported, so
/// the `report` span that delivers the result joins the action's trace.
/// Empty when traces are not exported; bounded, because results can wait in
/// the outbox a long time while the control plane is down (beyond the bound,
/// a report is not traced).
#[derive(Debug, Default)]
pub struct ActionSpans(std::sync::Mutex<std::collections::HashMap<String, SpanContext>>);

impl ActionSpans {
    const MAX: usize = 100_000;

    pub fn remember(&self, action_id: &str, cx: SpanContext) {
        let mut map = self.0.lock().expect("action spans lock");
        if map.len() < Self::MAX {
            map.insert(action_id.to_owned(), cx);
        }
    }

    /// A `report` span for delivering `action_id`'s result, in its trace;
    /// `None` when its action span is not known (traces off, or a restart).
    pub fn report_span(&self, action_id: &str) -> Option<tracing::Span> {
        let cx = self
            .0
            .lock()
            .expect("action spans lock")
            .get(action_id)?
            .clone();
        let span = tracing::info_span!(target: "grantbridge::report", "report", action_id = %action_id,
            otel.status_code = tracing::field::Empty, otel.status_message = tracing::field::Empty);
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(cx));
        Some(span)
    }

    /// Forgets the actions whose results were delivered.
    pub fn forget(&self, action_ids: &[String]) {
        let mut map = self.0.lock().expect("action spans lock");
        if map.is_empty() {
            return;
        }
        for id in action_ids {
            map.remove(id);
        }
    }
}

/// Why traces could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("traces: {0}")]
pub struct TraceSetupError(String);

impl TraceSetupError {
    pub(super) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The running exporter; [`Exporter::shutdown`] sends what is still buffered.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Flushes and stops the exporter (blocking: at most the export timeout).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "traces: the last spans could not be exported");
        }
    }
}

/// The tracer provider for `settings`: a batch exporter over OTLP/HTTP whose
/// requests run on `runtime` (the SDK exports from its own thread).
pub(super) fn provider(
    settings: &TraceSettings,
    runtime: Handle,
) -> Result<(SdkTracerProvider, Exporter), TraceSetupError> {
    let client = reqwest::Client::builder()
        .user_agent(crate::http::USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| TraceSetupError(format!("building the HTTP client: {e}")))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(settings.endpoint.as_str())
        .with_timeout(Duration::from_secs(10))
        .with_http_client(OnRuntime { client, runtime })
        .build()
        .map_err(|e| TraceSetupError(format!("the OTLP exporter: {e}")))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_id_generator(ActionTraceIds::default())
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service_name.clone())
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.version",
                    env!("CARGO_PKG_VERSION"),
                ))
                .build(),
        )
        .build();
    Ok((
        provider.clone(),
        Exporter {
            provider: provider.clone(),
        },
    ))
}

/// The layer that turns grantbridge's spans into OpenTelemetry spans.
pub(super) fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("grantbridge"))
        .with_threads(false)
        .with_location(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            // Our own spans, whatever the log level; events at info and above
            // become span events. Nothing of the HTTP stack (its spans would
            // trace the exporter's own requests).
            meta.target().starts_with("grantbridge")
                && (meta.is_span() || *meta.level() <= tracing::Level::INFO)
        }))
}

/// The SDK's batch exporter runs on a thread of its own, and reqwest needs a
/// Tokio runtime: each export request runs on the daemon's.
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await
            .map_err(|e| Box::new(e) as HttpError)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_follows_the_w3c_rules() {
        let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("the spec's example");
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(tp.sampled());
        assert_eq!(
            tp.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        for bad in [
            "",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", // 00 is exact
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        // A later version may append fields.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what")
                .is_some_and(|t| !t.sampled())
        );
    }

    #[test]
    fn action_spans_draw_their_action_trace_id() {
        let ids = ActionTraceIds::default();
        let wanted = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        NEXT_TRACE_ID.with(|n| n.set(Some(wanted)));
        assert_eq!(ids.new_trace_id(), wanted);
        // Only once: the next root span gets a random id.
        assert_ne!(ids.new_trace_id(), wanted);
    }
}
