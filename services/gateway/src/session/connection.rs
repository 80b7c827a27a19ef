//! One connection's tasks: the session, and the writer that owns the
//! socket's sending half; how a session ends (its last words); the small
//! futures the session's loop waits on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::metrics;
use bytes::Bytes;
use futures_util::SinkExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tern_core::proto::client::{Error as ErrorFrame, ErrorCode, server_frame};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument;

use super::{Close, LAST_WORDS_GRACE, Session, flow, next_conn_id};
use crate::Shared;
use crate::hub::{Kick, SessionEvent};
use crate::transport::{Budget, FrameReader, FrameWriter};

/// Serves one connection until it ends.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    reader: FrameReader,
    writer: FrameWriter,
    budget: Budget,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let id = next_conn_id();
    let span = tracing::info_span!("conn", id, %peer);
    async move {
        let (out, queue) = mpsc::channel(shared.config.outbound_queue);
        let (last_words_tx, last_words) = oneshot::channel();
        let write_timeout = shared.config.write_timeout;
        let writer_task =
            tokio::spawn(write_loop(writer, queue, last_words, write_timeout).in_current_span());
        let now = Instant::now();
        let frames = shared.config.limits.frames;
        let mut session = Session {
            shared,
            id,
            out,
            opened: now,
            last_frame: now,
            login: None,
            mailbox: None,
            kick: None,
            pushes: Default::default(),
            in_group_members: false,
            appends: FuturesUnordered::new(),
            receipts: Default::default(),
            room: None,
            room_epoch: 0,
            room_feed: None,
            room_tx: None,
            room_posts: FuturesUnordered::new(),
            cursor_write: None,
            cursor: Default::default(),
            budget,
            replies: flow::Replies::default(),
            read_gate: flow::ReadGate::new(frames, now.into_std()),
            _user_place: None,
            token_expires: None,
        };
        metrics::CONNECTIONS.inc();
        let close = session.run(reader, shutdown).await;
        // Before the client can hear why it is closed and log in again:
        // what it ACKed here must be what its next login starts from.
        session.flush_cursor().await;
        metrics::CONNECTIONS.dec();
        if let Close::Fatal(code, _) = &close {
            metrics::DISCONNECTS.inc(code.as_str_name());
        }
        tracing::debug!(?close, "connection closing");
        if let Close::Fatal(code, message) = close {
            let frame = tern_wire::encode_server(server_frame::Kind::Error(ErrorFrame {
                code: code as i32,
                message,
                fatal: true,
                ..Default::default()
            }));
            let _ = last_words_tx.send(frame);
        }
        session.cleanup().await;
        drop(session);
        let _ = writer_task.await;
    }
    .instrument(span)
    .await
}

/// Writes queued frames, batching writes when several are waiting. A
/// session's last words (a fatal error) jump the queue: a client that is
/// too slow would otherwise never see why it was dropped.
async fn write_loop(
    mut writer: FrameWriter,
    mut queue: mpsc::Receiver<Bytes>,
    mut last_words: oneshot::Receiver<Bytes>,
    write_timeout: Duration,
) {
    let mut no_last_words = false;
    loop {
        tokio::select! {
            biased;
            words = &mut last_words, if !no_last_words => match words {
                Ok(frame) => {
                    // The socket may be full (the session gave up on a slow
                    // client): wait as long as for the writer's own reason.
                    let _ = tokio::time::timeout(LAST_WORDS_GRACE, writer.send(frame)).await;
                    break;
                }
                Err(_) => no_last_words = true,
            },
            frame = queue.recv() => {
                let Some(frame) = frame else { break };
                let write = async {
                    writer.feed(frame).await?;
                    while let Ok(more) = queue.try_recv() {
                        writer.feed(more).await?;
                    }
                    writer.flush().await
                };
                match tokio::time::timeout(write_timeout, write).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::info!(error = %e, "write failed; closing the connection");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(timeout_ms = write_timeout.as_millis() as u64, "socket write blocked; dropping slow client");
                        // Queued after what is already buffered: a client that
                        // reads again soon still learns why it was dropped.
                        let why = tern_wire::encode_server(server_frame::Kind::Error(ErrorFrame {
                            code: ErrorCode::SlowConsumer as i32,
                            message: format!("socket write blocked for {} ms: the client is not reading", write_timeout.as_millis()),
                            fatal: true,
                            ..Default::default()
                        }));
                        let _ = tokio::time::timeout(LAST_WORDS_GRACE, writer.send(why)).await;
                        return;
                    }
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.close()).await;
}

/// Resolves with the next mailbox event, or never if there is no mailbox.
pub(super) async fn next_event(
    mailbox: &mut Option<mpsc::Receiver<SessionEvent>>,
) -> Option<SessionEvent> {
    // A closed mailbox means the hub dropped this session (it was replaced):
    // the kick that comes with it says why, so wait for that instead.
    match mailbox {
        Some(m) => match m.recv().await {
            Some(e) => Some(e),
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Resolves when the cursor write in flight is done, or never if none is.
pub(super) async fn cursor_written(write: &mut Option<BoxFuture<'static, ()>>) {
    match write {
        Some(w) => w.await,
        None => std::future::pending().await,
    }
}

/// Resolves when the session is kicked, or never if it cannot be.
pub(super) async fn kicked(kick: &mut Option<watch::Receiver<Option<Kick>>>) -> Kick {
    match kick {
        Some(k) => {
            let kick = k.wait_for(|k| k.is_some()).await.map(|k| *k);
            match kick {
                Ok(Some(k)) => k,
                _ => std::future::pending().await,
            }
        }
        None => std::future::pending().await,
    }
}
