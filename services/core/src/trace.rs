//! One message, one trace: each stage opens a span for the message it
//! handles, continuing the trace whose context came with the record (W3C
//! `traceparent` in the record's headers), and puts its own context in the
//! headers of the records it writes. Spans go to OpenTelemetry only when a
//! process turned tracing on (`tern-telemetry`, setting `otlp_endpoint`);
//! otherwise [`message_span!`] returns a disabled span and no header is
//! written: the default costs one atomic load per message and stage.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::log::Headers;

#[doc(hidden)]
pub use tracing as __tracing;

/// The `tracing` target of message spans: the OpenTelemetry layer takes
/// these and nothing else.
pub const TARGET: &str = "tern::trace";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns message spans on for this process (done by `tern-telemetry` when it
/// installs the OpenTelemetry layer).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A span named `$name` for one message, a child of the trace context in
/// `$headers` (a `&Headers`; empty: a new trace), with optional `tracing`
/// fields. A disabled span when tracing is off.
///
/// ```ignore
/// let span = tern_core::message_span!("router.route", &delivery.headers, user = %user);
/// ```
#[macro_export]
macro_rules! message_span {
    ($name:literal, $headers:expr $(, $($fields:tt)*)?) => {{
        if $crate::trace::enabled() {
            let span = $crate::trace::__tracing::info_span!(
                target: "tern::trace", $name $(, $($fields)*)?
            );
            $crate::trace::set_parent(&span, $headers);
            span
        } else {
            $crate::trace::__tracing::Span::none()
        }
    }};
}

/// Makes `span` continue the trace in `headers`. Must come before the span
/// is entered (or its context read); a no-op when the headers carry none.
pub fn set_parent(span: &tracing::Span, headers: &Headers) {
    if headers.is_empty() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderReader(headers));
    // Fails only without the OpenTelemetry layer: tracing is off.
    let _ = span.set_parent(parent);
}

/// The headers that carry `span`'s context to the next stage; empty when
/// tracing is off or the span is disabled.
pub fn headers_of(span: &tracing::Span) -> Headers {
    let mut headers = HeaderWriter(Headers::new());
    if enabled() && !span.is_disabled() {
        TraceContextPropagator::new().inject_context(&span.context(), &mut headers);
    }
    headers.0
}

/// `span`'s W3C `traceparent`, for a context carried inside a record
/// rather than in its headers; empty when tracing is off.
pub fn traceparent_of(span: &tracing::Span) -> String {
    headers_of(span)
        .into_iter()
        .find(|(k, _)| k == TRACEPARENT)
        .and_then(|(_, v)| String::from_utf8(v.to_vec()).ok())
        .unwrap_or_default()
}

/// Headers carrying `traceparent` (from [`traceparent_of`]); empty for "".
pub fn headers_with(traceparent: &str) -> Headers {
    if traceparent.is_empty() {
        return Headers::new();
    }
    vec![(TRACEPARENT.to_owned(), Bytes::from(traceparent.to_owned()))]
}

const TRACEPARENT: &str = "traceparent";

struct HeaderReader<'a>(&'a Headers);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

struct HeaderWriter(Headers);

impl Injector for HeaderWriter {
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        self.0.push((key.to_owned(), Bytes::from(value)));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn off_by_default_no_span_and_no_header() {
        // ENABLED is process-wide; this test binary never enables it.
        assert!(!super::enabled());
        let span = crate::message_span!("test.stage", &Vec::new(), n = 1);
        assert!(span.is_disabled());
        assert!(super::headers_of(&span).is_empty());
    }
}
