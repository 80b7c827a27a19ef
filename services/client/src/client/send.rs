//! Sending messages: [`SendOptions`] says what to send and where, and
//! [`Client::send`] writes one `Send` frame and waits for the `SendResult`
//! matched to it by client message id, so that several sends may be in
//! flight on one connection.

use bytes::Bytes;
use tern_proto::client::{SendResult, client_frame};
use tern_wire::encode_client;
use tokio::sync::oneshot;

use super::{Client, Target};
use crate::ClientError;

/// One message to send.
#[derive(Debug, Clone)]
pub struct SendOptions {
    pub target: Target,
    /// Retrying with the same id is answered with the same result and stores
    /// the message once; `None` picks a fresh UUIDv7.
    pub client_msg_id: Option<String>,
    pub content_type: String,
    pub body: Bytes,
}

impl SendOptions {
    /// A `text/plain` message in the 1:1 chat with `user`.
    pub fn to_user(user: impl Into<String>, body: impl Into<Bytes>) -> Self {
        SendOptions::new(Target::ToUser(user.into()), body)
    }

    /// A `text/plain` message in an existing conversation.
    pub fn to_conversation(conversation: impl Into<String>, body: impl Into<Bytes>) -> Self {
        SendOptions::new(Target::Conversation(conversation.into()), body)
    }

    pub fn new(target: Target, body: impl Into<Bytes>) -> Self {
        SendOptions {
            target,
            client_msg_id: None,
            content_type: "text/plain".into(),
            body: body.into(),
        }
    }

    pub fn with_client_msg_id(mut self, id: impl Into<String>) -> Self {
        self.client_msg_id = Some(id.into());
        self
    }

    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = content_type.into();
        self
    }
}

impl Client {
    /// Sends a `text/plain` message to `to_user` with a fresh client message id.
    pub async fn send_to(
        &self,
        to_user: impl Into<String>,
        body: impl Into<Bytes>,
    ) -> Result<SendResult, ClientError> {
        self.send(SendOptions::to_user(to_user, body)).await
    }

    /// Sends a message and waits for its `SendResult`. Several sends may be
    /// in flight at once; each answer is matched by client message id.
    pub async fn send(&self, options: SendOptions) -> Result<SendResult, ClientError> {
        let client_msg_id = options
            .client_msg_id
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let (tx, rx) = oneshot::channel();
        let _pending = self.shared.register_send(&client_msg_id, tx)?;
        self.write(encode_client(client_frame::Kind::Send(
            tern_proto::client::Send {
                client_msg_id,
                target: Some(options.target),
                content_type: options.content_type,
                body: options.body,
            },
        )))
        .await?;
        self.wait(rx).await
    }
}
