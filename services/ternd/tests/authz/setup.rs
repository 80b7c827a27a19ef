//! What both tests share: the signing key and admin token, a ternd with
//! dev mode off and every credential kind configured, alice's conversation
//! and group for others to aim at, tokens fresh, expired and revoked, the
//! protobuf descriptors the tables are checked against, and small helpers
//! for making a gRPC call with a credential and reading its status code.

use std::time::Duration;

use prost::Message as _;
use tern_core::auth::{TokenAuthority, TokenSpec};
use tern_proto::api::*;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::Server;

const SECRET: &str = "authz-test-signing-key-0123456789abcdef";
pub const ADMIN: &str = "authz-test-admin-token-0123456789abcdef";

/// The descriptors of every `.proto` file.
pub fn descriptors() -> prost_types::FileDescriptorSet {
    prost_types::FileDescriptorSet::decode(tern_proto::FILE_DESCRIPTOR_SET).unwrap()
}

/// The methods of `service` in `tern.api.v1`, in declaration order.
pub fn methods(service: &str) -> Vec<String> {
    let set = descriptors();
    let file = set
        .file
        .iter()
        .find(|f| f.package() == "tern.api.v1")
        .unwrap();
    let service = file
        .service
        .iter()
        .find(|s| s.name() == service)
        .unwrap_or_else(|| panic!("no service {service}"));
    service.method.iter().map(|m| m.name().to_owned()).collect()
}

/// Every client frame kind, by its field name in `ClientFrame.kind`.
pub fn frame_kinds() -> Vec<String> {
    let set = descriptors();
    let file = set
        .file
        .iter()
        .find(|f| f.package() == "tern.client.v1")
        .unwrap();
    let frame = file
        .message_type
        .iter()
        .find(|m| m.name() == "ClientFrame")
        .unwrap();
    frame.field.iter().map(|f| f.name().to_owned()).collect()
}

/// A token for `user` signed with the server's key, issued `age_ms` ago and
/// valid for `ttl_secs`.
pub fn token(user: &str, age_ms: u64, ttl_secs: u64) -> String {
    let spec = TokenSpec {
        rooms: Some(vec!["public".into()]),
        ..TokenSpec::new(user, ttl_secs)
    };
    TokenAuthority::new(SECRET).issue(&spec, tern_core::now_ms() - age_ms)
}

/// A server with dev mode off (tokens come from its secret), a back-end
/// token, an archive with an admin token, and rooms by token.
pub async fn server() -> Server {
    Server::start_with(|c| {
        c.dev_mode = false;
        c.api.dev_mode = false;
        c.jwt_secret = Some(SECRET.into());
        c.api.admin_token = Some(ADMIN.into());
        c.archive = Some(ternd::ArchiveSettings {
            location: c.data_dir.join("archive").to_str().unwrap().into(),
            retention: Duration::from_secs(86_400),
            archiver: Default::default(),
        });
        c.gateway.room_policy = tern_chat::rooms::RoomPolicy::Token;
        c.api.room_policy = tern_chat::rooms::RoomPolicy::Token;
    })
    .await
}

/// What alice owns, for others to try to reach.
pub struct Fixture {
    pub group: String,
}

pub async fn fixture(server: &Server) -> Fixture {
    let mut backend = server.backend().await;
    backend
        .send_as_system(SendAsSystemRequest {
            from_user: "alice".into(),
            to_user: "bob".into(),
            client_msg_id: "first".into(),
            body: b"hello bob".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let group = backend
        .create_group(CreateGroupRequest {
            owner: "alice".into(),
            name: "alice's".into(),
            members: vec!["bob".into()],
            history_open: false,
        })
        .await
        .unwrap()
        .into_inner();
    Fixture { group: group.id }
}

/// A request with `authorization: Bearer <credential>`, or none.
pub fn req<T>(message: T, credential: Option<&str>) -> tonic::Request<T> {
    match credential {
        Some(c) => tern_client::with_token(message, c).unwrap(),
        None => tonic::Request::new(message),
    }
}

pub fn code<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

pub async fn channel(addr: &str) -> Channel {
    Channel::from_shared(addr.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A token that was valid until its user was logged out everywhere.
pub async fn revoked_token(server: &Server, user: &str) -> String {
    let t = token(user, 1000, 3600);
    server
        .backend()
        .await
        .revoke_tokens(RevokeTokensRequest {
            user: user.into(),
            device: String::new(),
        })
        .await
        .unwrap();
    t
}
