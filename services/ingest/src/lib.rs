//! tern-ingest: the server-side gRPC API.
//!
//! Back ends and bots send messages as a system user, read inbox pages and
//! conversation history, and manage groups ([`groups`]); in dev mode anyone
//! can get a login token. A send
//! goes through the pipeline like a user's: it is appended to `inbound` and
//! the call returns when the persister's receipt comes back on this node's
//! push topic, so a success always means "stored".

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument as _;

use prost::Message as _;
use tern_core::auth::TokenAuthority;
use tern_core::ids::{Conversation, IdError, MessageId, check_room, check_user};
use tern_core::log::{EventLog, LogError, Record};
use tern_core::proto::api::tern_server::{Tern, TernServer};
use tern_core::proto::api::*;
use tern_core::proto::client::ErrorCode;
use tern_core::proto::records::{InboundRecord, Origin, Receipt, RoomRecord, push_record};
use tern_core::stage::stopped;
use tern_core::store::{MessageStore, StoreError, load_entries};
use tern_core::{now_ms, topics};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::{Request, Response, Status};

mod archive;
mod conversations;
mod groups;

/// Most messages one page returns.
const MAX_PAGE: u32 = 1000;
/// Longest content type accepted (the same limit as the gateway's).
pub const MAX_CONTENT_TYPE: usize = 128;

#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Identity of this node: receipts come back on `push.<node_id>`.
    pub node_id: String,
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// A send with no receipt after this long fails with UNAVAILABLE.
    pub receipt_timeout: Duration,
    /// Issue tokens to anyone who asks (development only).
    pub dev_mode: bool,
    pub dev_token_ttl: Duration,
    /// The credential of the archive administration calls; None turns them off.
    pub admin_token: Option<String>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            node_id: "ingest-local".into(),
            listen: "127.0.0.1:7402".parse().expect("valid address"),
            max_body_bytes: 64 * 1024,
            receipt_timeout: Duration::from_secs(10),
            dev_mode: false,
            dev_token_ttl: Duration::from_secs(30 * 24 * 3600),
            admin_token: None,
        }
    }
}

#[derive(Clone)]
pub struct IngestDeps {
    pub log: Arc<dyn EventLog>,
    pub store: Arc<dyn MessageStore>,
    /// For room viewer counts.
    pub routes: Arc<dyn tern_core::routes::RouteDirectory>,
    pub auth: TokenAuthority,
    /// The compliance archive, for the ArchiveAdmin calls.
    pub archive: Option<tern_archive::Archive>,
}

/// Errors of the API, each mapped to a gRPC status in one place.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    BadId(#[from] IdError),
    #[error("message body of {len} bytes is over the limit of {max} bytes; nothing was stored")]
    TooLarge { len: usize, max: usize },
    #[error("cursor {cursor} is past the end of the inbox ({head})")]
    BadCursor { cursor: u64, head: u64 },
    #[error("message not stored: {0}; retry with the same client_msg_id")]
    Log(#[from] LogError),
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
    #[error("route directory unavailable: {0}")]
    Routes(#[from] tern_core::routes::RouteError),
    #[error(
        "send not confirmed within {0:?}; retry with the same client_msg_id (it is stored once)"
    )]
    NotConfirmed(Duration),
    #[error("send refused: {0}")]
    Rejected(String),
    #[error("content_type is over the limit of {0} bytes")]
    BadContentType(usize),
    #[error("dev tokens are disabled: the server is not in dev mode")]
    DevModeOff,
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("unknown group {0}")]
    UnknownGroup(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("membership changed, but the gateways could not be told yet: {0}; retry the call")]
    Feed(LogError),
}

impl From<IngestError> for Status {
    fn from(e: IngestError) -> Self {
        let msg = e.to_string();
        match e {
            IngestError::BadId(IdError::UnknownConversation(_)) | IngestError::UnknownGroup(_) => {
                Status::not_found(msg)
            }
            IngestError::BadId(_)
            | IngestError::BadCursor { .. }
            | IngestError::Rejected(_)
            | IngestError::BadRequest(_) => Status::invalid_argument(msg),
            IngestError::Unauthenticated(_) => Status::unauthenticated(msg),
            IngestError::Forbidden(_) => Status::permission_denied(msg),
            IngestError::TooLarge { .. } | IngestError::BadContentType(_) => {
                Status::invalid_argument(msg)
            }
            IngestError::Log(_)
            | IngestError::Feed(_)
            | IngestError::Store(_)
            | IngestError::Routes(_)
            | IngestError::NotConfirmed(_) => Status::unavailable(msg),
            IngestError::DevModeOff => Status::permission_denied(msg),
        }
    }
}

#[derive(Clone)]
struct Api {
    config: Arc<IngestConfig>,
    deps: IngestDeps,
    waiters: Arc<Waiters>,
}

pub struct Ingest {
    api: Api,
    listener: TcpListener,
}

impl Ingest {
    pub async fn bind(config: IngestConfig, deps: IngestDeps) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Ingest {
            api: Api {
                config: Arc::new(config),
                deps,
                waiters: Default::default(),
            },
            listener,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until `shutdown` turns true.
    pub async fn run(
        self,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let Ingest { api, listener } = self;
        let node = api.config.node_id.clone();
        let sub =
            topics::subscribe_push_topic(api.deps.log.as_ref(), &node, &format!("ingest.{node}"))
                .await?;
        let receipts = tokio::spawn(receive_receipts(api.clone(), sub, shutdown.clone()));
        let mut signal = shutdown.clone();
        let archive_admin = archive::ArchiveAdminService::new(
            api.deps.archive.clone(),
            api.config.admin_token.clone(),
            api.deps.auth.clone(),
        );
        tonic::transport::Server::builder()
            .add_service(
                tern_core::proto::api::archive_admin_server::ArchiveAdminServer::new(archive_admin),
            )
            .add_service(TernServer::new(api))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async move { stopped(&mut signal).await },
            )
            .await?;
        receipts.await??;
        Ok(())
    }
}

/// Hands receipts from this node's push topic to the calls waiting for them.
async fn receive_receipts(
    api: Api,
    sub: Box<dyn tern_core::log::Subscription>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), LogError> {
    let node = api.config.node_id.clone();
    let waiters = api.waiters.clone();
    topics::consume_push_topic(
        sub,
        &node,
        shutdown,
        move |record| {
            if let push_record::Kind::Receipt(r) = record {
                waiters.resolve(&r);
            }
        },
        // A missed receipt only makes its call time out; the caller retries.
        || {},
        topics::push_resubscriber(api.deps.log.clone(), &node, &format!("ingest.{node}")),
    )
    .await
}

/// Calls waiting for a receipt, by (sender, client_msg_id). Several calls
/// may wait for the same send (a retry while the first is in flight); each
/// removes itself when it ends, however it ends.
#[derive(Default)]
struct Waiters {
    next_id: std::sync::atomic::AtomicU64,
    calls: Mutex<HashMap<SendKey, Vec<Waiting>>>,
}

/// One waiting call: its id and where its receipt goes.
type Waiting = (u64, oneshot::Sender<Receipt>);

/// (sender, client_msg_id): what a receipt answers.
type SendKey = (String, String);

impl Waiters {
    fn wait(self: &Arc<Self>, key: (String, String)) -> (WaitGuard, oneshot::Receiver<Receipt>) {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.calls
            .lock()
            .expect("waiters poisoned")
            .entry(key.clone())
            .or_default()
            .push((id, tx));
        (
            WaitGuard {
                waiters: self.clone(),
                key,
                id,
            },
            rx,
        )
    }

    fn resolve(&self, r: &Receipt) {
        let waiting = self
            .calls
            .lock()
            .expect("waiters poisoned")
            .remove(&(r.sender_user.clone(), r.client_msg_id.clone()));
        for (_, w) in waiting.into_iter().flatten() {
            let _ = w.send(r.clone());
        }
    }
}

struct WaitGuard {
    waiters: Arc<Waiters>,
    key: (String, String),
    id: u64,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let mut calls = self.waiters.calls.lock().expect("waiters poisoned");
        if let Some(list) = calls.get_mut(&self.key) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                calls.remove(&self.key);
            }
        }
    }
}

fn page_limit(limit: u32) -> usize {
    match limit {
        0 => 100,
        n => n.min(MAX_PAGE) as usize,
    }
}

impl Api {
    async fn send_as_system(
        &self,
        req: SendAsSystemRequest,
    ) -> Result<SendAsSystemResponse, IngestError> {
        check_user(&req.from_user)?;
        let conversation = if req.conversation.is_empty() {
            Conversation::direct(&req.from_user, &req.to_user)?
        } else {
            Conversation::parse(&req.conversation)?
        };
        let max = self.config.max_body_bytes;
        if req.body.len() > max {
            return Err(IngestError::TooLarge {
                len: req.body.len(),
                max,
            });
        }
        let cmid = if req.client_msg_id.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            req.client_msg_id
        };
        if req.content_type.len() > MAX_CONTENT_TYPE {
            return Err(IngestError::BadContentType(MAX_CONTENT_TYPE));
        }
        // Wait before appending, so the receipt cannot come first; the guard
        // withdraws the wait however this call ends.
        let (_guard, rx) = self.waiters.wait((req.from_user.clone(), cmid.clone()));
        let record = InboundRecord {
            message_id: MessageId::new().to_vec(),
            conversation: conversation.to_string(),
            sender_user: req.from_user,
            sender_device: "api".into(),
            client_msg_id: cmid,
            content_type: if req.content_type.is_empty() {
                "text/plain".into()
            } else {
                req.content_type
            },
            body: req.body,
            sent_at_ms: now_ms(),
            origin: Some(Origin {
                node_id: self.config.node_id.clone(),
                connection_id: 0,
            }),
        };
        // The trace of this message starts here (when tracing is on).
        let span = tern_core::message_span!("api.send", &Vec::new(), conversation = %conversation);
        let inbound = Record::new(conversation.to_string(), record.encode_to_vec())
            .with_headers(tern_core::trace::headers_of(&span));
        let appended = self
            .deps
            .log
            .append(topics::INBOUND, vec![inbound])
            .instrument(span)
            .await;
        appended?;
        let receipt = match tokio::time::timeout(self.config.receipt_timeout, rx).await {
            Ok(Ok(r)) => r,
            _ => return Err(IngestError::NotConfirmed(self.config.receipt_timeout)),
        };
        if !receipt.rejected.is_empty() {
            return Err(match ErrorCode::try_from(receipt.reject_code) {
                Ok(ErrorCode::Forbidden) => IngestError::Forbidden(receipt.rejected),
                _ => IngestError::Rejected(receipt.rejected),
            });
        }
        Ok(SendAsSystemResponse {
            message_id: receipt.message_id,
            conversation: receipt.conversation,
            seq: receipt.seq,
            sent_at_ms: receipt.sent_at_ms,
        })
    }

    async fn fetch_inbox(&self, req: FetchInboxRequest) -> Result<InboxPage, IngestError> {
        check_user(&req.user)?;
        let page = self
            .deps
            .store
            .read_inbox(&req.user, req.after_cursor, page_limit(req.limit))
            .await?;
        if req.after_cursor > page.head {
            return Err(IngestError::BadCursor {
                cursor: req.after_cursor,
                head: page.head,
            });
        }
        let next_cursor = page.entries.last().map_or(req.after_cursor, |e| e.cursor);
        let messages = load_entries(self.deps.store.as_ref(), &page.entries).await?;
        Ok(InboxPage {
            messages,
            next_cursor,
            has_more: page.head > next_cursor,
        })
    }

    async fn post_to_room(
        &self,
        req: PostToRoomRequest,
    ) -> Result<PostToRoomResponse, IngestError> {
        check_room(&req.room)?;
        check_user(&req.from_user)?;
        let max = self.config.max_body_bytes;
        if req.body.len() > max {
            return Err(IngestError::TooLarge {
                len: req.body.len(),
                max,
            });
        }
        if req.content_type.len() > MAX_CONTENT_TYPE {
            return Err(IngestError::BadContentType(MAX_CONTENT_TYPE));
        }
        let message_id = MessageId::new().to_vec();
        let record = RoomRecord {
            room: req.room.clone(),
            message_id: message_id.clone(),
            sender_user: req.from_user,
            sender_device: "api".into(),
            content_type: if req.content_type.is_empty() {
                "text/plain".into()
            } else {
                req.content_type
            },
            body: req.body,
            sent_at_ms: now_ms(),
        };
        self.deps
            .log
            .append(
                topics::ROOMS,
                vec![Record::new(req.room, record.encode_to_vec())],
            )
            .await?;
        Ok(PostToRoomResponse { message_id })
    }

    async fn room_viewers(
        &self,
        req: RoomViewersRequest,
    ) -> Result<RoomViewersResponse, IngestError> {
        if req.rooms.len() > MAX_PAGE as usize {
            return Err(IngestError::BadRequest(format!(
                "{} rooms in one call; the limit is {MAX_PAGE}",
                req.rooms.len()
            )));
        }
        for room in &req.rooms {
            check_room(room)?;
        }
        let viewers = self.deps.routes.room_viewers(&req.rooms).await?;
        Ok(RoomViewersResponse {
            viewers: viewers.into_iter().collect(),
        })
    }

    fn issue_dev_token(
        &self,
        req: IssueDevTokenRequest,
    ) -> Result<IssueDevTokenResponse, IngestError> {
        if !self.config.dev_mode {
            return Err(IngestError::DevModeOff);
        }
        check_user(&req.user)?;
        let ttl = if req.ttl_seconds == 0 {
            self.config.dev_token_ttl.as_secs()
        } else {
            req.ttl_seconds
        };
        Ok(IssueDevTokenResponse {
            token: self
                .deps
                .auth
                .issue(&req.user, tern_core::auth::now_secs(), ttl),
        })
    }
}

#[tonic::async_trait]
impl Tern for Api {
    async fn send_as_system(
        &self,
        r: Request<SendAsSystemRequest>,
    ) -> Result<Response<SendAsSystemResponse>, Status> {
        Ok(Response::new(
            Api::send_as_system(self, r.into_inner()).await?,
        ))
    }

    async fn fetch_inbox(
        &self,
        r: Request<FetchInboxRequest>,
    ) -> Result<Response<InboxPage>, Status> {
        Ok(Response::new(Api::fetch_inbox(self, r.into_inner()).await?))
    }

    async fn history(&self, r: Request<HistoryRequest>) -> Result<Response<HistoryPage>, Status> {
        let caller = self.caller(r.metadata())?;
        Ok(Response::new(
            Api::history(self, caller, r.into_inner()).await?,
        ))
    }

    async fn list_conversations(
        &self,
        r: Request<ListConversationsRequest>,
    ) -> Result<Response<ConversationList>, Status> {
        let caller = self.caller(r.metadata())?;
        Ok(Response::new(
            Api::list_conversations(self, caller, r.into_inner()).await?,
        ))
    }

    async fn mark_read(
        &self,
        r: Request<MarkReadRequest>,
    ) -> Result<Response<MarkReadResponse>, Status> {
        let caller = self.caller(r.metadata())?;
        Ok(Response::new(
            Api::mark_read(self, caller, r.into_inner()).await?,
        ))
    }

    async fn issue_dev_token(
        &self,
        r: Request<IssueDevTokenRequest>,
    ) -> Result<Response<IssueDevTokenResponse>, Status> {
        Ok(Response::new(Api::issue_dev_token(self, r.into_inner())?))
    }

    async fn create_group(
        &self,
        r: Request<CreateGroupRequest>,
    ) -> Result<Response<Group>, Status> {
        let caller = self.caller(r.metadata())?;
        Ok(Response::new(
            Api::create_group(self, caller, r.into_inner()).await?,
        ))
    }

    async fn add_members(
        &self,
        r: Request<ChangeMembersRequest>,
    ) -> Result<Response<Group>, Status> {
        let caller = self.caller(r.metadata())?;
        Ok(Response::new(
            self.change_members(caller, r.into_inner(), true).await?,
        ))
    }

    async fn remove_members(
        &self,
        r: Request<ChangeMembersRequest>,
    ) -> Result<Response<Group>, Status> {
        let caller = self.caller(r.metadata())?;
        Ok(Response::new(
            self.change_members(caller, r.into_inner(), false).await?,
        ))
    }

    async fn list_members(
        &self,
        r: Request<ListMembersRequest>,
    ) -> Result<Response<MembersPage>, Status> {
        let caller = self.caller(r.metadata())?;
        Ok(Response::new(
            Api::list_members(self, caller, r.into_inner()).await?,
        ))
    }

    async fn list_groups(
        &self,
        r: Request<ListGroupsRequest>,
    ) -> Result<Response<GroupList>, Status> {
        let caller = self.caller(r.metadata())?;
        Ok(Response::new(
            Api::list_groups(self, caller, r.into_inner()).await?,
        ))
    }

    async fn post_to_room(
        &self,
        r: Request<PostToRoomRequest>,
    ) -> Result<Response<PostToRoomResponse>, Status> {
        Ok(Response::new(
            Api::post_to_room(self, r.into_inner()).await?,
        ))
    }

    async fn room_viewers(
        &self,
        r: Request<RoomViewersRequest>,
    ) -> Result<Response<RoomViewersResponse>, Status> {
        Ok(Response::new(
            Api::room_viewers(self, r.into_inner()).await?,
        ))
    }
}
