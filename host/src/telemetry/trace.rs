//! Traces: one per alert, across stages and processes. The alert's trace
//! id comes from the ingest request's W3C `traceparent` when it has one
//! (random otherwise) and travels in every event derived from it
//! (`trace_id`, and `span_id`: the span that appended the event). A stage
//! handling an event, a job attempt and a plugin invocation are spans in
//! that trace, children of the span that produced the event. With
//! `telemetry.otlp_endpoint` set they are exported over OTLP/HTTP
//! (protobuf); without it, these helpers do nothing.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::model;

/// `(trace id, parent span id)` of a W3C `traceparent` header value
/// (`00-<32 hex>-<16 hex>-<2 hex>`), lower-case hex; `None` unless valid
/// (an all-zero id is invalid).
pub fn parse_traceparent(value: &str) -> Option<(String, String)> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if version.len() != 2 || version == "ff" || !hex(version, 2) || !hex(flags, 2) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if !hex(trace, 32) || !hex(span, 16) {
        return None;
    }
    let (trace, span) = (trace.to_ascii_lowercase(), span.to_ascii_lowercase());
    if trace.bytes().all(|b| b == b'0') || span.bytes().all(|b| b == b'0') {
        return None;
    }
    Some((trace, span))
}

/// Make `span` a child of the remote span `(trace_id, span_id)`. Ids that
/// are not W3C hex (events from before traces were kept) are left alone.
pub fn set_parent(span: &tracing::Span, trace_id: &str, span_id: &str) {
    let (Ok(trace), Ok(parent)) = (TraceId::from_hex(trace_id), SpanId::from_hex(span_id)) else {
        return;
    };
    if trace == TraceId::INVALID {
        return;
    }
    // No parent span known (tracing was off when the event was made):
    // still the alert's trace, under a stand-in parent id.
    let parent = if parent == SpanId::INVALID {
        SpanId::from_bytes(trace.to_bytes()[8..].try_into().expect("8 bytes"))
    } else {
        parent
    };
    let remote = SpanContext::new(
        trace,
        parent,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// Make `span` part of `event`'s trace, a child of the span that
/// appended it.
pub fn follow(span: &tracing::Span, event: &model::Event) {
    set_parent(span, &event.trace_id, &event.span_id);
}

/// The trace id of the current span (32 hex), when traces are exported.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let id = cx.span().span_context().trace_id();
    (id != TraceId::INVALID).then(|| id.to_string())
}

/// The span an ingest request is handled in, and the caller's trace id
/// when the request carries a valid `traceparent` (the span is then a
/// child of the caller's).
pub fn ingest_span(
    source: &'static str,
    headers: &http::HeaderMap,
) -> (tracing::Span, Option<String>) {
    let span = tracing::info_span!("ingest", otel.name = format!("ingest {source}"), source);
    let caller = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    let trace = caller.map(|(trace, parent)| {
        set_parent(&span, &trace, &parent);
        trace
    });
    (span, trace)
}

/// Put `event`, built while handling an ingest request in the current
/// span, in that request's trace: the caller's (or, when traces are
/// exported, the one the request's span started), as a child of it.
pub fn stamp(event: &mut model::Event, caller_trace: Option<&str>) {
    if let Some(t) = current_trace_id().or(caller_trace.map(str::to_owned)) {
        event.trace_id = t;
    }
    event.span_id = current_span_id();
}

/// The id of the current span in its trace (16 hex), or empty when
/// traces are not exported.
pub fn current_span_id() -> String {
    let cx = tracing::Span::current().context();
    let id = cx.span().span_context().span_id();
    if id == SpanId::INVALID {
        String::new()
    } else {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_traceparent;

    #[test]
    fn traceparent_is_parsed_strictly() {
        let t = "0af7651916cd43dd8448eb211c80319c";
        let s = "b7ad6b7169203331";
        assert_eq!(
            parse_traceparent(&format!("00-{t}-{s}-01")),
            Some((t.into(), s.into()))
        );
        assert_eq!(
            parse_traceparent(&format!("00-{}-{s}-01", t.to_uppercase())),
            Some((t.into(), s.into()))
        );
        for bad in [
            "".to_owned(),
            format!("00-{t}-{s}"),
            format!("ff-{t}-{s}-01"),
            format!("00-{}-{s}-01", "0".repeat(32)),
            format!("00-{t}-{}-01", "0".repeat(16)),
            format!("00-{}-{s}-01", &t[1..]),
            format!("00-{t}-{s}-01-extra"),
            format!("00-{t}-{s}-zz"),
        ] {
            assert_eq!(parse_traceparent(&bad), None, "{bad}");
        }
        // A later version may add fields.
        assert!(parse_traceparent(&format!("01-{t}-{s}-01-more")).is_some());
    }
}
