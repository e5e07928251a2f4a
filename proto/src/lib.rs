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

/// Bounds of one status report (docs/protocol.md). A spoke builds its reports within them
/// (cutting long messages, leaving resources out and saying so); the hub keeps only a summary
/// of a report that breaks them, and acks it, so that no report can wedge a spoke's outbox or
/// weigh on the hub's store.
pub mod report_limits {
    /// Resources one report lists (a 2,000-object App fits with room to spare).
    pub const MAX_RESOURCES: usize = 5_000;
    /// The Target's message.
    pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;
    /// One resource's message.
    pub const MAX_RESOURCE_MESSAGE_BYTES: usize = 1024;
    /// Every other string of a report: the Target id, the revision, and each resource's API
    /// version, kind, namespace, name, action and source file; the trace context's keys and
    /// values.
    pub const MAX_FIELD_BYTES: usize = 512;
    /// Entries of a report's trace context.
    pub const MAX_TRACE_FIELDS: usize = 8;
    /// The whole report, encoded (below the link's 4 MiB message limit, with room for the
    /// envelope).
    pub const MAX_REPORT_BYTES: usize = 3 * 1024 * 1024;
}
