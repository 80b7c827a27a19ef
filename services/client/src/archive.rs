//! The compliance archive's administration calls, made with the server's
//! admin token (not a user's login token nor the back-end token) on the
//! server's back-end listener.

use tern_proto::api::archive_admin_client::ArchiveAdminClient;
use tern_proto::api::{
    AddHoldRequest, ArchiveHold, ExportArchiveChunk, ExportArchiveRequest, ListHoldsRequest,
    RemoveHoldRequest, VerifyArchiveRequest, VerifyArchiveResponse, add_hold_request,
    export_archive_request,
};
use tonic::transport::Channel;

use crate::ClientError;
use crate::api::api_channel;

/// Who an export or a hold is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveSubject {
    User(String),
    Conversation(String),
}

pub struct ArchiveApi {
    api: ArchiveAdminClient<Channel>,
    admin_token: String,
}

impl ArchiveApi {
    /// Connects to the archive administration at `backend_addr` (the
    /// server's `backend_listen`, default [`crate::DEFAULT_BACKEND_ADDR`]).
    pub async fn connect(
        backend_addr: &str,
        admin_token: impl Into<String>,
    ) -> Result<Self, ClientError> {
        Ok(ArchiveApi {
            // No per-call timeout: an export streams for as long as it needs.
            api: ArchiveAdminClient::new(api_channel(backend_addr, None).await?),
            admin_token: admin_token.into(),
        })
    }

    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, ClientError> {
        let mut request = tonic::Request::new(message);
        let value = format!("Bearer {}", self.admin_token)
            .parse()
            .map_err(|_| {
                ClientError::Protocol("the admin token is not valid header text".into())
            })?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }

    pub async fn verify(&mut self) -> Result<VerifyArchiveResponse, ClientError> {
        let request = self.request(VerifyArchiveRequest {})?;
        Ok(self.api.verify(request).await?.into_inner())
    }

    /// Streams the export: `on_chunk` gets each chunk (JSON lines and progress)
    /// as it arrives. `to_ms` 0 means no end.
    pub async fn export(
        &mut self,
        subject: ArchiveSubject,
        from_ms: u64,
        to_ms: u64,
        mut on_chunk: impl FnMut(ExportArchiveChunk) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        let who = match subject {
            ArchiveSubject::User(u) => export_archive_request::Who::User(u),
            ArchiveSubject::Conversation(c) => export_archive_request::Who::Conversation(c),
        };
        let request = self.request(ExportArchiveRequest {
            who: Some(who),
            from_ms,
            to_ms,
        })?;
        let mut stream = self.api.export(request).await?.into_inner();
        while let Some(chunk) = stream.message().await? {
            on_chunk(chunk)?;
        }
        Ok(())
    }

    /// Places a hold; `id` None lets the server make one.
    pub async fn add_hold(
        &mut self,
        id: Option<String>,
        subject: ArchiveSubject,
        reason: &str,
    ) -> Result<ArchiveHold, ClientError> {
        let scope = match subject {
            ArchiveSubject::User(u) => add_hold_request::Scope::User(u),
            ArchiveSubject::Conversation(c) => add_hold_request::Scope::Conversation(c),
        };
        let request = self.request(AddHoldRequest {
            id: id.unwrap_or_default(),
            scope: Some(scope),
            reason: reason.to_owned(),
        })?;
        Ok(self.api.add_hold(request).await?.into_inner())
    }

    pub async fn remove_hold(&mut self, id: &str) -> Result<ArchiveHold, ClientError> {
        let request = self.request(RemoveHoldRequest { id: id.to_owned() })?;
        Ok(self.api.remove_hold(request).await?.into_inner())
    }

    pub async fn holds(&mut self) -> Result<Vec<ArchiveHold>, ClientError> {
        let request = self.request(ListHoldsRequest {})?;
        Ok(self.api.list_holds(request).await?.into_inner().holds)
    }
}
