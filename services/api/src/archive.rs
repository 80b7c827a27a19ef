//! The `ArchiveAdmin` gRPC service: verify the compliance archive, export
//! from it, place and remove legal holds. Every call needs the admin token
//! (`authorization: Bearer <admin_token>`); a user's login token is refused,
//! whoever the user is.

use std::pin::Pin;

use futures_util::Stream;
use tern_archive::{Archive, ArchiveError, ExportFilter, Hold, HoldScope};
use tern_core::auth::TokenAuthority;
use tern_core::proto::api::archive_admin_server::ArchiveAdmin;
use tern_core::proto::api::{
    AddHoldRequest, ArchiveHold, ArchiveProblem, ExportArchiveChunk, ExportArchiveRequest,
    ListHoldsRequest, ListHoldsResponse, RemoveHoldRequest, VerifyArchiveRequest,
    VerifyArchiveResponse, add_hold_request, archive_hold, export_archive_request,
};
use tokio::sync::mpsc;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct ArchiveAdminService {
    archive: Option<Archive>,
    admin_token: Option<tern_core::secret::Secret>,
    auth: TokenAuthority,
}

impl ArchiveAdminService {
    pub fn new(
        archive: Option<Archive>,
        admin_token: Option<tern_core::secret::Secret>,
        auth: TokenAuthority,
    ) -> Self {
        ArchiveAdminService {
            archive,
            admin_token,
            auth,
        }
    }

    /// The archive, if the caller holds the admin token.
    fn authorize(&self, metadata: &MetadataMap) -> Result<&Archive, Status> {
        let Some(expected) = &self.admin_token else {
            return Err(Status::failed_precondition(
                "archive administration is off on this server: set admin_token",
            ));
        };
        let Some(archive) = &self.archive else {
            return Err(Status::failed_precondition(
                "this server has no archive: set archive",
            ));
        };
        let token = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("archive calls need authorization: Bearer <admin token>")
            })?;
        if crate::authz::same_secret(token, expected.expose()) {
            return Ok(archive);
        }
        if self.auth.verify(token, tern_core::now_ms()).is_ok() {
            return Err(Status::permission_denied(
                "a user's token cannot administer the archive: use the admin token",
            ));
        }
        Err(Status::unauthenticated("wrong admin token"))
    }
}

fn status(e: ArchiveError) -> Status {
    match e {
        ArchiveError::Invalid(m) => Status::invalid_argument(m),
        ArchiveError::UnknownHold(id) => Status::not_found(format!("no such hold: {id}")),
        e @ ArchiveError::Storage(_) => Status::unavailable(e.to_string()),
        e @ ArchiveError::Format(_) => Status::data_loss(e.to_string()),
    }
}

fn hold_message(h: Hold) -> ArchiveHold {
    ArchiveHold {
        id: h.id,
        scope: Some(match h.scope {
            HoldScope::User(u) => archive_hold::Scope::User(u),
            HoldScope::Conversation(c) => archive_hold::Scope::Conversation(c),
        }),
        reason: h.reason,
        created_at_ms: h.created_at_ms,
    }
}

type ExportStream = Pin<Box<dyn Stream<Item = Result<ExportArchiveChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ArchiveAdmin for ArchiveAdminService {
    async fn verify(
        &self,
        r: Request<VerifyArchiveRequest>,
    ) -> Result<Response<VerifyArchiveResponse>, Status> {
        let archive = self.authorize(r.metadata())?;
        let report = archive.verify().await.map_err(status)?;
        Ok(Response::new(VerifyArchiveResponse {
            segments: report.segments,
            purged: report.purged,
            records: report.records,
            problems: report
                .problems
                .into_iter()
                .map(|p| ArchiveProblem {
                    segment: p.segment,
                    what: p.what,
                })
                .collect(),
        }))
    }

    type ExportStream = ExportStream;

    async fn export(
        &self,
        r: Request<ExportArchiveRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let archive = self.authorize(r.metadata())?.clone();
        let req = r.into_inner();
        let filter = match req.who {
            Some(export_archive_request::Who::User(u)) if !u.is_empty() => ExportFilter::User(u),
            Some(export_archive_request::Who::Conversation(c)) if !c.is_empty() => {
                ExportFilter::Conversation(c)
            }
            _ => {
                return Err(Status::invalid_argument(
                    "export needs a user or a conversation",
                ));
            }
        };
        let to_ms = if req.to_ms == 0 { u64::MAX } else { req.to_ms };
        if req.from_ms >= to_ms {
            return Err(Status::invalid_argument("from_ms must be before to_ms"));
        }
        // A bounded channel: a slow client slows the export down instead
        // of filling memory; a client that goes away ends it.
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            let chunks = tx.clone();
            let result = archive
                .export(&filter, req.from_ms, to_ms, move |chunk| {
                    let chunks = chunks.clone();
                    async move {
                        let p = chunk.progress;
                        let message = ExportArchiveChunk {
                            jsonl: chunk.jsonl.into(),
                            segments_done: p.segments_done,
                            segments_total: p.segments_total,
                            messages: p.messages_written,
                        };
                        chunks
                            .send(Ok(message))
                            .await
                            .map_err(|_| ArchiveError::Invalid("the client went away".into()))
                    }
                })
                .await;
            if let Err(e) = result {
                let _ = tx.send(Err(status(e))).await;
            }
        });
        Ok(Response::new(Box::pin(receiver_stream(rx))))
    }

    async fn add_hold(&self, r: Request<AddHoldRequest>) -> Result<Response<ArchiveHold>, Status> {
        let archive = self.authorize(r.metadata())?;
        let req = r.into_inner();
        let scope = match req.scope {
            Some(add_hold_request::Scope::User(u)) => HoldScope::User(u),
            Some(add_hold_request::Scope::Conversation(c)) => HoldScope::Conversation(c),
            None => {
                return Err(Status::invalid_argument(
                    "a hold needs a user or a conversation",
                ));
            }
        };
        let id = (!req.id.is_empty()).then_some(req.id);
        let hold = archive
            .add_hold(id, scope, &req.reason)
            .await
            .map_err(status)?;
        Ok(Response::new(hold_message(hold)))
    }

    async fn remove_hold(
        &self,
        r: Request<RemoveHoldRequest>,
    ) -> Result<Response<ArchiveHold>, Status> {
        let archive = self.authorize(r.metadata())?;
        let hold = archive
            .remove_hold(&r.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(hold_message(hold)))
    }

    async fn list_holds(
        &self,
        r: Request<ListHoldsRequest>,
    ) -> Result<Response<ListHoldsResponse>, Status> {
        let archive = self.authorize(r.metadata())?;
        let holds = archive.holds().await.map_err(status)?;
        Ok(Response::new(ListHoldsResponse {
            holds: holds.into_iter().map(hold_message).collect(),
        }))
    }
}

/// A receiver as a stream.
fn receiver_stream<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
