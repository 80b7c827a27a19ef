//! Generated protobuf types for tern, from `schemas/proto`.
//!
//! `client` is the wire protocol between clients and gateways, `records` the
//! records the pipeline stages pass through the event log, `api` the gRPC API,
//! `archive` the compliance archive's segment entries.
//! Nothing here is written by hand: edit the `.proto` files instead.

/// Modules nested as the protobuf packages are, so cross-package references
/// in generated code (`super::super::client::v1`) resolve.
#[allow(clippy::all, clippy::pedantic)]
pub mod tern {
    pub mod client {
        pub mod v1 {
            tonic::include_proto!("tern.client.v1");
        }
    }
    pub mod records {
        pub mod v1 {
            tonic::include_proto!("tern.records.v1");
        }
    }
    pub mod api {
        pub mod v1 {
            tonic::include_proto!("tern.api.v1");
        }
    }
    pub mod archive {
        pub mod v1 {
            tonic::include_proto!("tern.archive.v1");
        }
    }
}

/// The encoded `FileDescriptorSet` of every `.proto` file: what tests read
/// to enumerate every RPC and every frame kind.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tern_descriptors.bin"));

pub use tern::api::v1 as api;
pub use tern::archive::v1 as archive;
pub use tern::client::v1 as client;
pub use tern::records::v1 as records;
