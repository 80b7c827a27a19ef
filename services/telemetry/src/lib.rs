//! How a tern process reports: log lines on stderr, filtered by the `log`
//! setting, and, when `otlp_endpoint` is set, the message spans of
//! [`tern_core::trace`] exported to an OpenTelemetry collector over OTLP/gRPC.
//! With no endpoint there is no OpenTelemetry layer, exporter or thread at
//! all, and stages skip their message spans.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// What to report, and where.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// Log filter, as RUST_LOG.
    pub log_filter: String,
    /// OTLP/gRPC endpoint of a collector (`http://collector:4317`); None:
    /// no tracing.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of this process's spans (e.g. `tern-gateway`).
    pub service_name: String,
    /// The `service.instance.id`: the node id (a gateway's pod name).
    pub instance_id: String,
    /// Share of new traces kept, in (0, 1]; later stages follow the
    /// decision the first one made (it travels in the trace context).
    pub sample_ratio: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP exporter for {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("cannot install the log subscriber: {0}")]
    Install(#[from] tracing_subscriber::util::TryInitError),
}

/// Keeps the span exporter running; [`Telemetry::shutdown`] sends what is
/// still buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Installs the process-wide subscriber. Call once, inside the Tokio
/// runtime (the exporter's connection runs on it).
pub fn init(settings: &TelemetrySettings) -> Result<Telemetry, TelemetryError> {
    let log_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            EnvFilter::try_new(&settings.log_filter).unwrap_or_else(|_| EnvFilter::new("info")),
        );
    let provider = match &settings.otlp_endpoint {
        Some(endpoint) => Some(provider(endpoint, settings)?),
        None => None,
    };
    // Message spans only: the exporter's own transport (tonic, h2) also
    // makes spans, and exporting those would feed on itself.
    let otel_layer = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("tern"))
            .with_filter(EnvFilter::new(format!(
                "off,{}=info",
                tern_core::trace::TARGET
            )))
    });
    tracing_subscriber::registry()
        .with(otel_layer)
        .with(log_layer)
        .try_init()?;
    if let Some(endpoint) = &settings.otlp_endpoint {
        tern_core::trace::enable();
        tracing::info!(%endpoint, service = %settings.service_name, sample_ratio = settings.sample_ratio, "tracing to OTLP");
    }
    Ok(Telemetry { provider })
}

fn provider(
    endpoint: &str,
    settings: &TelemetrySettings,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|source| TelemetryError::Exporter {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service_name.clone())
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.instance.id",
                    settings.instance_id.clone(),
                ))
                .build(),
        )
        .build())
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter. Blocks a
    /// thread of its own: the exporter needs the runtime's workers meanwhile.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = done {
                eprintln!("tracing: spans not all exported at shutdown: {e}");
            }
        }
    }
}
