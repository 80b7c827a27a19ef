//! Names of the event-log topics that connect the stages (see DESIGN.md).

/// Messages users sent, keyed by conversation: the persister's input.
pub const INBOUND: &str = "inbound";
/// One record per recipient, keyed by user: the router's input.
pub const DELIVER: &str = "deliver";
/// Live room messages, keyed by room: every gateway reads all of it.
pub const ROOMS: &str = "rooms";
/// Large-group messages and membership changes, keyed by group: every
/// gateway reads all of it.
pub const GROUP_FEED: &str = "group-feed";

/// Stored messages for the compliance archiver, keyed by inbound partition;
/// written only when an archive is configured.
pub const ARCHIVE: &str = "archive";

/// The conversation id room messages carry (`r:<room>`).
pub fn room_conversation(room: &str) -> String {
    format!("r:{room}")
}

/// Work for one gateway or API node: deliveries and send receipts.
pub fn push_topic(node_id: &str) -> String {
    format!("push.{node_id}")
}

/// Subscribes to the push topic of `node_id` as group `group`. Done before
/// the node accepts work, so nothing pushed to it after that is skipped.
///
/// A group with nothing committed starts at the end ([`StartFrom::Latest`]):
/// older pushes address connections or calls of an earlier run of the node.
/// A restarted node resumes from its last commit; the pushes it replays
/// find no connection, or one that drops them as already delivered.
/// A [`crate::stage::Resubscribe`] for a node's push topic.
pub fn push_resubscriber(
    log: std::sync::Arc<dyn crate::log::EventLog>,
    node_id: &str,
    group: &str,
) -> crate::stage::Resubscribe {
    let (node, group) = (node_id.to_owned(), group.to_owned());
    std::sync::Arc::new(move || {
        let (log, node, group) = (log.clone(), node.clone(), group.clone());
        Box::pin(async move { subscribe_push_topic(log.as_ref(), &node, &group).await })
    })
}

pub async fn subscribe_push_topic(
    log: &dyn crate::log::EventLog,
    node_id: &str,
    group: &str,
) -> Result<Box<dyn crate::log::Subscription>, crate::log::LogError> {
    log.subscribe(&push_topic(node_id), group, crate::log::StartFrom::Latest)
        .await
}

/// `push.deliver` spans for the refs after the first whose trace context
/// differs from the record's (the first's is the record's own span).
fn merged_spans(refs: &[crate::proto::records::InboxRef]) -> Vec<tracing::Span> {
    let first = refs.first().map(|r| r.traceparent.as_str());
    refs.iter()
        .skip(1)
        .map(|r| r.traceparent.as_str())
        .filter(|tp| !tp.is_empty() && Some(*tp) != first)
        .map(|tp| crate::message_span!("push.deliver", &crate::trace::headers_with(tp)))
        .collect()
}

/// Hands each decodable record of `sub` to `on_record` and commits each
/// batch once handed over, until `shutdown` (or the log closes). Calls
/// `on_reassigned` when the subscription got partitions anew (see
/// [`crate::log::Subscription::take_reassigned`]). Poll and
/// commit errors are retried with backoff: a push consumer that stopped
/// would silently stop live delivery and send receipts.
pub async fn consume_push_topic(
    mut sub: Box<dyn crate::log::Subscription>,
    node_id: &str,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut on_record: impl FnMut(crate::proto::records::push_record::Kind) + Send,
    mut on_reassigned: impl FnMut() + Send,
    resubscribe: crate::stage::Resubscribe,
) -> Result<(), crate::log::LogError> {
    use crate::log::LogError;
    use prost::Message as _;
    let topic = push_topic(node_id);
    let mut backoff = std::time::Duration::from_millis(50);
    loop {
        let polled = tokio::select! {
            b = sub.poll(1024) => b,
            _ = crate::stage::stopped(&mut shutdown) => return Ok(()),
        };
        let batch = match polled {
            Ok(b) => b,
            Err(LogError::Closed) => return Err(LogError::Closed),
            Err(e) => {
                tracing::warn!(%topic, error = %e, retry_in_ms = backoff.as_millis() as u64, "push topic poll failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                // A fresh consumer, as stages do (see `StageConfig::resubscribe`);
                // it may have missed pushes meanwhile, so sessions catch up.
                match resubscribe().await {
                    Ok(fresh) => {
                        crate::stage::retire(std::mem::replace(&mut sub, fresh));
                        on_reassigned();
                    }
                    Err(e) => tracing::warn!(%topic, error = %e, "cannot subscribe again yet"),
                }
                continue;
            }
        };
        backoff = std::time::Duration::from_millis(50);
        if sub.take_reassigned() {
            // Pushes appended while this node had no partitions may have
            // been skipped; what they announced is in the inboxes.
            tracing::info!(%topic, "push topic reassigned; sessions catch up from their inboxes");
            on_reassigned();
        }
        for d in &batch {
            match crate::proto::records::PushRecord::decode(d.value.clone()) {
                Ok(crate::proto::records::PushRecord { kind: Some(k) }) => {
                    // The last hop of a message's trace: handed to the
                    // connection (or, for a receipt, to the waiting send).
                    use crate::proto::records::push_record::Kind;
                    let span = match &k {
                        Kind::Deliveries(_) => crate::message_span!("push.deliver", &d.headers),
                        Kind::Receipt(_) => crate::message_span!("push.receipt", &d.headers),
                    };
                    // Messages merged into this record after the first:
                    // one span each in its own trace, open for the same time.
                    let _merged = match &k {
                        Kind::Deliveries(d) if crate::trace::enabled() => merged_spans(&d.refs),
                        _ => Vec::new(),
                    };
                    span.in_scope(|| on_record(k))
                }
                _ => {
                    tracing::error!(%topic, offset = d.position.offset, "skipping undecodable push record")
                }
            }
        }
        match sub.commit(&batch).await {
            Ok(()) => {}
            Err(LogError::Closed) => return Err(LogError::Closed),
            // Not fatal: uncommitted pushes are handed out again and dropped
            // as already delivered. A fresh consumer, in case this one was
            // left out of its group (see `StageConfig::resubscribe`).
            Err(e) => {
                tracing::warn!(%topic, error = %e, "push topic commit failed; subscribing again");
                if let Ok(fresh) = resubscribe().await {
                    crate::stage::retire(std::mem::replace(&mut sub, fresh));
                    on_reassigned();
                }
            }
        }
    }
}
