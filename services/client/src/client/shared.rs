//! What the client shares with its reader and writer: the waiters for
//! answers (sends by client message id, other requests by request id), the
//! reason the connection ended, and the tokens that stop the reader and say
//! it is done. Guards remove a waiter when its call gives up.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tern_proto::client::{
    BlockedList, ConversationList, HistoryPage, MarkReadResult, RoomResult, SendResult,
    SetBlockedResult, SyncPage,
};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::ClientError;

pub(super) type SendWaiter = oneshot::Sender<Result<SendResult, ClientError>>;
/// What a request (sync, room join/leave/post) is answered with.
#[derive(Debug)]
pub(super) enum Answer {
    Sync(SyncPage),
    Room(RoomResult),
    History(HistoryPage),
    Conversations(ConversationList),
    MarkRead(MarkReadResult),
    Blocked(SetBlockedResult),
    BlockedList(BlockedList),
}

pub(super) type RequestWaiter = oneshot::Sender<Result<Answer, ClientError>>;

/// State shared by the client, the reader and the writer.
#[derive(Default)]
pub(super) struct Shared {
    state: Mutex<State>,
    /// Asks the reader to end the connection (writer failed, logout timed out, client dropped).
    pub(super) stop: CancellationToken,
    /// The reader has ended: the connection is over.
    pub(super) done: CancellationToken,
}

#[derive(Default)]
pub(super) struct State {
    /// Set once the connection is over; every request fails with it from then on.
    pub(super) closed: Option<String>,
    /// Why the connection is ending, known before the socket closes (a
    /// fatal error, a logout): a better reason than "the gateway closed it".
    closing: Option<String>,
    /// Sends waiting for their answer, by client message id. A queue because
    /// a test may send the same id again before the first answer.
    sends: HashMap<String, VecDeque<(u64, SendWaiter)>>,
    /// Requests waiting for their answer, by request id.
    requests: HashMap<u64, RequestWaiter>,
    /// Tells apart waiters that share a client message id.
    next_waiter: u64,
}

impl Shared {
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn closed_error(&self) -> ClientError {
        let state = self.state();
        let reason = state.closed.clone().or_else(|| state.closing.clone());
        ClientError::Closed(reason.unwrap_or_else(|| "the connection is closed".into()))
    }

    pub(super) fn closing(&self, reason: impl Into<String>) {
        self.state().closing.get_or_insert_with(|| reason.into());
    }

    /// Registers a waiter, unless the connection is already over (then no
    /// answer can come, and the caller must not wait for one).
    pub(super) fn register_send(
        self: &Arc<Self>,
        client_msg_id: &str,
        waiter: SendWaiter,
    ) -> Result<PendingSend, ClientError> {
        let mut state = self.state();
        if let Some(reason) = &state.closed {
            return Err(ClientError::Closed(reason.clone()));
        }
        state.next_waiter += 1;
        let token = state.next_waiter;
        state
            .sends
            .entry(client_msg_id.to_string())
            .or_default()
            .push_back((token, waiter));
        Ok(PendingSend {
            shared: self.clone(),
            client_msg_id: client_msg_id.to_string(),
            token,
        })
    }

    pub(super) fn register_request(
        self: &Arc<Self>,
        request_id: u64,
        waiter: RequestWaiter,
    ) -> Result<PendingRequest, ClientError> {
        let mut state = self.state();
        if let Some(reason) = &state.closed {
            return Err(ClientError::Closed(reason.clone()));
        }
        state.requests.insert(request_id, waiter);
        Ok(PendingRequest {
            shared: self.clone(),
            request_id,
        })
    }

    /// Hands an answer to the oldest send waiting on `client_msg_id`; false if none waits.
    pub(super) fn resolve_send(
        &self,
        client_msg_id: &str,
        answer: Result<SendResult, ClientError>,
    ) -> bool {
        let mut state = self.state();
        let Some(queue) = state.sends.get_mut(client_msg_id) else {
            return false;
        };
        let waiter = queue.pop_front();
        if queue.is_empty() {
            state.sends.remove(client_msg_id);
        }
        match waiter {
            Some((_, tx)) => {
                let _ = tx.send(answer);
                true
            }
            None => false,
        }
    }

    pub(super) fn resolve_request(
        &self,
        request_id: u64,
        answer: Result<Answer, ClientError>,
    ) -> bool {
        match self.state().requests.remove(&request_id) {
            Some(tx) => {
                let _ = tx.send(answer);
                true
            }
            None => false,
        }
    }

    /// Ends the connection: fails every waiter, wakes everyone, and returns the reason.
    pub(super) fn finish(&self, observed: String) -> String {
        let mut state = self.state();
        let reason = state.closing.take().unwrap_or(observed);
        state.closed = Some(reason.clone());
        for (_, queue) in state.sends.drain() {
            for (_, tx) in queue {
                let _ = tx.send(Err(ClientError::Closed(reason.clone())));
            }
        }
        for (_, tx) in state.requests.drain() {
            let _ = tx.send(Err(ClientError::Closed(reason.clone())));
        }
        drop(state);
        self.done.cancel();
        reason
    }
}

/// Removes a send's waiter when the call ends without an answer (timeout,
/// the caller's future dropped).
pub(super) struct PendingSend {
    shared: Arc<Shared>,
    client_msg_id: String,
    token: u64,
}

impl Drop for PendingSend {
    fn drop(&mut self) {
        let mut state = self.shared.state();
        if let Some(queue) = state.sends.get_mut(&self.client_msg_id) {
            queue.retain(|(token, _)| *token != self.token);
            if queue.is_empty() {
                state.sends.remove(&self.client_msg_id);
            }
        }
    }
}

pub(super) struct PendingRequest {
    shared: Arc<Shared>,
    request_id: u64,
}

impl Drop for PendingRequest {
    fn drop(&mut self) {
        self.shared.state().requests.remove(&self.request_id);
    }
}
