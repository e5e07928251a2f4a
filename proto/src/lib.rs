//! gitfleet's wire format, generated from `proto/gitfleet/v1/*.proto`.
//!
//! This crate knows only the wire format. Conversion to and from domain types happens in the
//! gRPC adapters of the hub and the spoke.

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
    tonic::include_proto!("gitfleet.v1");
}

/// Largest message either side accepts on the link (4 MiB). Messages carry references, never
/// rendered manifests, so real traffic stays far below this.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
