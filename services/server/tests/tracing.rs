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
//!
//! Then three messages merged into one push record (the router paused
//! while they are stored) keep one trace each, and a large group's message
//! ends in `push.group` on bob's gateway.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Cluster, infra, receive, send_until_stored, send_until_stored_to};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tern_client::{Event, SendOptions, Target};

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
    // Every group of more than one member is large: pushed from the feed.
    let mut cluster = Cluster::with_args(
        &infra,
        &[],
        &["--otlp-endpoint", &endpoint, "--large-group-members", "1"],
    );
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
    receive(&alice, 1).await;
    // Three messages routed in one batch, merged into one push record per
    // user: the router is paused while they are stored.
    cluster.router.signal("-STOP");
    let resume = Resume(&cluster.router);
    for i in 0..3 {
        alice
            .send(
                SendOptions::new(Target::ToUser(bob_name.clone()), format!("merged {i}"))
                    .with_client_msg_id(format!("merged-{i}")),
            )
            .await
            .expect("stored at the first attempt");
    }
    drop(resume);
    assert_eq!(receive(&bob, 3).await.0.len(), 3);
    receive(&alice, 3).await;
    // A large group's message, pushed by bob's gateway from the group feed.
    let token = tern_client::dev_token(&cluster.api_addr, &alice_name)
        .await
        .unwrap();
    let mut groups = tern_client::GroupApi::connect(&cluster.api_addr, token)
        .await
        .unwrap();
    let group = groups
        .create("big", std::slice::from_ref(&bob_name))
        .await
        .expect("group created");
    // A new device of bob's: its login reads his groups, the new one too.
    let bob_tablet = cluster.login(&cluster.gw2_addr, &bob_name, "tablet").await;
    let to_group = || Target::Conversation(group.conversation.clone());
    // The feed is read from its end: post until one arrives live.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    'warm: for n in 0.. {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no live group message"
        );
        send_until_stored_to(&alice, to_group(), &format!("gw{n}"), format!("w{n}")).await;
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(200), bob_tablet.next_event()).await
        {
            if matches!(event, Event::GroupMessages { .. }) {
                break 'warm;
            }
        }
    }
    alice
        .send(SendOptions::new(to_group(), "to the group").with_client_msg_id("group-traced"))
        .await
        .expect("stored at the first attempt");
    'live: loop {
        match tokio::time::timeout(Duration::from_secs(20), bob_tablet.next_event()).await {
            Ok(Some(Event::GroupMessages { messages, .. })) => {
                if messages.iter().any(|m| m.body == "to the group".as_bytes()) {
                    break 'live;
                }
            }
            Ok(Some(_)) => {}
            other => panic!("the traced group message did not arrive: {other:?}"),
        }
    }
    // Then stop every process the way Kubernetes does: SIGTERM makes each
    // export what it buffered.
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

    // Each merged message keeps its own trace to both gateways.
    for i in 0..3 {
        let id = format!("merged-{i}");
        let sent = spans
            .iter()
            .find(|s| {
                s.name == "gateway.send"
                    && s.attributes.get("client_msg_id").map(String::as_str) == Some(id.as_str())
            })
            .unwrap_or_else(|| panic!("no gateway.send of {id}"));
        let trace: Vec<&Span> = spans
            .iter()
            .filter(|s| s.trace_id == sent.trace_id)
            .collect();
        let routes: Vec<&[u8]> = trace
            .iter()
            .filter(|s| s.name == "router.route")
            .map(|s| &s.span_id[..])
            .collect();
        for gateway in ["gw1", "gw2"] {
            let pushes: Vec<&&Span> = trace
                .iter()
                .filter(|s| s.name == "push.deliver" && s.instance == gateway)
                .collect();
            assert_eq!(
                pushes.len(),
                1,
                "{id}: one push.deliver on {gateway} in {:?}",
                names(&trace.iter().map(|s| (*s).clone()).collect::<Vec<_>>())
            );
            assert!(
                routes.contains(&&pushes[0].parent_span_id[..]),
                "{id}: the push on {gateway} continues a router.route of its message"
            );
        }
    }

    // The large-group message: sent, stored, pushed from the feed by gw2.
    let sent = spans
        .iter()
        .find(|s| {
            s.name == "gateway.send"
                && s.attributes.get("client_msg_id").map(String::as_str) == Some("group-traced")
        })
        .expect("no gateway.send of group-traced");
    let trace: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == sent.trace_id)
        .collect();
    let store = trace
        .iter()
        .find(|s| s.name == "persister.store")
        .expect("group message stored in its trace");
    let pushed: Vec<&&Span> = trace
        .iter()
        .filter(|s| s.name == "push.group" && s.instance == "gw2")
        .collect();
    assert_eq!(pushed.len(), 1, "one push.group on gw2");
    assert_eq!(
        pushed[0].parent_span_id, store.span_id,
        "pushed from the stored post"
    );
    assert_eq!(
        pushed[0].attributes.get("conversation"),
        Some(&group.conversation)
    );
}

/// Resumes a paused process even if the test fails half-way.
struct Resume<'a>(&'a common::Service);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        self.0.signal("-CONT");
    }
}
