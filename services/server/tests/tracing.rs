//! One message, one trace: with `--otlp-endpoint` set, every `tern-server`
//! process exports its message spans over OTLP/gRPC, and the trace context
//! travels in the Kafka record headers. Here the collector is an in-process
//! OTLP server; alice on gateway 1 sends bob on gateway 2 one message, and
//! the spans the five processes export form one trace:
//!
//! ```text
//! gateway.send (gw1) ─► persister.store ─┬► router.route ─► push.deliver (gw2, bob)
//!                                        │  router.route ─► push.deliver (gw1, alice's own copy)
//!                                        └► push.receipt (gw1: "stored" to alice)
//! ```

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Cluster, infra, receive, send_until_stored};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tern_client::{SendOptions, Target};

/// An OTLP/gRPC trace collector keeping what it receives.
#[derive(Clone, Default)]
struct Collector {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.requests.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A span as the test looks at it.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    /// `service.name` and `service.instance.id` of the process that made it.
    service: String,
    instance: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    /// The span's string attributes (its `tracing` fields).
    attributes: HashMap<String, String>,
}

fn string_value(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> Option<String> {
    match v.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

impl Collector {
    fn spans(&self) -> Vec<Span> {
        let mut out = Vec::new();
        for request in self.requests.lock().unwrap().iter() {
            for rs in &request.resource_spans {
                let attribute = |key: &str| {
                    rs.resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == key)
                        .and_then(|kv| string_value(&kv.value))
                        .unwrap_or_default()
                };
                for s in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                    out.push(Span {
                        name: s.name.clone(),
                        service: attribute("service.name"),
                        instance: attribute("service.instance.id"),
                        trace_id: s.trace_id.clone(),
                        span_id: s.span_id.clone(),
                        parent_span_id: s.parent_span_id.clone(),
                        attributes: s
                            .attributes
                            .iter()
                            .filter_map(|kv| Some((kv.key.clone(), string_value(&kv.value)?)))
                            .collect(),
                    });
                }
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_message_is_one_trace_across_the_processes() {
    let Some(infra) = infra() else {
        eprintln!(
            "TERN_TEST_KAFKA/CQL/REDIS not set: skipping the tracing test (make test sets them)"
        );
        return;
    };
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut cluster = Cluster::with_args(&infra, &[], &["--otlp-endpoint", &endpoint]);
    let alice_name = tern_core::conformance::fresh("alice");
    let bob_name = tern_core::conformance::fresh("bob");
    let alice = cluster.login(&cluster.gw1_addr, &alice_name, "phone").await;
    let bob = cluster.login(&cluster.gw2_addr, &bob_name, "phone").await;
    // Warm up (the first sends may be retried while consumers join),
    // then the message traced, sent once.
    send_until_stored(&alice, &bob_name, "warm-up", "warm-up".into()).await;
    receive(&bob, 1).await;
    receive(&alice, 1).await;
    alice
        .send(
            SendOptions::new(Target::ToUser(bob_name.clone()), "traced")
                .with_client_msg_id("traced-1"),
        )
        .await
        .expect("stored at the first attempt");
    let (got, _) = receive(&bob, 1).await;
    assert_eq!(got[0].body, "traced".as_bytes());
    // Also wait until alice's own copy came back, then stop every process
    // the way Kubernetes does: SIGTERM makes each export what it buffered.
    receive(&alice, 1).await;
    for s in [
        &mut cluster.gw1,
        &mut cluster.gw2,
        &mut cluster.persister,
        &mut cluster.router,
        &mut cluster.api,
    ] {
        let status = s.terminate(Duration::from_secs(30)).await;
        assert!(status.success(), "{status}");
    }

    let spans = collector.spans();
    for s in &spans {
        // On failure, what was exported.
        eprintln!(
            "span {} on {} trace {:02x?} id {:02x?} parent {:02x?}",
            s.name,
            s.instance,
            &s.trace_id[..4],
            &s.span_id[..4],
            s.parent_span_id.get(..4)
        );
    }
    let names = |t: &[Span]| t.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    // The trace of the message sent.
    let sent = spans
        .iter()
        .find(|s| {
            s.name == "gateway.send"
                && s.attributes.get("client_msg_id").map(String::as_str) == Some("traced-1")
        })
        .unwrap_or_else(|| panic!("no gateway.send of traced-1 among {:?}", names(&spans)));
    let trace: Vec<Span> = spans
        .iter()
        .filter(|s| s.trace_id == sent.trace_id)
        .cloned()
        .collect();
    let by_id: HashMap<&[u8], &Span> = trace.iter().map(|s| (&s.span_id[..], s)).collect();
    let parent = |s: &Span| -> Option<String> {
        by_id
            .get(&s.parent_span_id[..])
            .map(|p| format!("{}@{}", p.name, p.instance))
    };
    let one = |name: &str, instance: &str| -> &Span {
        let found: Vec<&Span> = trace
            .iter()
            .filter(|s| s.name == name && s.instance == instance)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one {name} on {instance} in {:?}",
            names(&trace)
        );
        found[0]
    };
    let send = one("gateway.send", "gw1");
    assert!(
        send.parent_span_id.is_empty(),
        "the trace starts at the send"
    );
    assert_eq!(send.service, "tern-gateway");
    let store = one("persister.store", "p1");
    assert_eq!(store.service, "tern-persister");
    assert_eq!(parent(store).as_deref(), Some("gateway.send@gw1"));
    let routes: Vec<&Span> = trace.iter().filter(|s| s.name == "router.route").collect();
    assert_eq!(
        routes.len(),
        2,
        "bob's copy and alice's own: {:?}",
        names(&trace)
    );
    for r in &routes {
        assert_eq!(r.service, "tern-router");
        assert_eq!(parent(r).as_deref(), Some("persister.store@p1"));
    }
    for gateway in ["gw1", "gw2"] {
        let push = one("push.deliver", gateway);
        assert_eq!(
            parent(push).as_deref(),
            Some("router.route@r1"),
            "{gateway}"
        );
    }
    let receipt = one("push.receipt", "gw1");
    assert_eq!(parent(receipt).as_deref(), Some("persister.store@p1"));
    assert_eq!(
        trace.len(),
        7,
        "nothing else in the trace: {:?}",
        names(&trace)
    );
}
