//! The archive administration's table: how to call each `ArchiveAdmin`
//! method with a given credential. Only the admin token may call these, and
//! none of them touches alice's conversation or group, so they need no
//! fixture. A method with no row here panics, so a new one cannot go
//! untested.

use tern_proto::api::archive_admin_client::ArchiveAdminClient;
use tern_proto::api::*;
use tonic::Code;
use tonic::transport::Channel;

use crate::setup::{code, req};

/// Calls `method` of the archive administration with `credential`.
pub async fn archive_call(
    api: &ArchiveAdminClient<Channel>,
    method: &str,
    credential: Option<&str>,
) -> Code {
    let mut api = api.clone();
    let c = credential;
    match method {
        "Verify" => code(api.verify(req(VerifyArchiveRequest {}, c)).await),
        "Export" => code(
            api.export(req(
                ExportArchiveRequest {
                    who: Some(export_archive_request::Who::User("alice".into())),
                    ..Default::default()
                },
                c,
            ))
            .await,
        ),
        "AddHold" => code(
            api.add_hold(req(
                AddHoldRequest {
                    id: "authz-hold".into(),
                    scope: Some(add_hold_request::Scope::User("alice".into())),
                    reason: "test".into(),
                },
                c,
            ))
            .await,
        ),
        "RemoveHold" => code(
            api.remove_hold(req(
                RemoveHoldRequest {
                    id: "authz-hold".into(),
                },
                c,
            ))
            .await,
        ),
        "ListHolds" => code(api.list_holds(req(ListHoldsRequest {}, c)).await),
        other => panic!("no row for ArchiveAdmin.{other}: add it to this test"),
    }
}
