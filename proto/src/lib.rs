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

/// Bounds of one `DiffResult` (`gitfleet diff --live`, docs/protocol.md). The spoke builds its
/// results within them: a diff too long is cut and ends with a line saying so, and beyond the
/// object count or the size budget objects are left out (failures and changes first, counted
/// in `omitted`). The hub answers a `DiffLive` within [`diff_limits::MAX_RESPONSE_BYTES`],
/// leaving out the objects of the clusters that do not fit (their counts stay).
pub mod diff_limits {
    /// Objects one result lists.
    pub const MAX_OBJECTS: usize = 5_000;
    /// One object's unified diff.
    pub const MAX_OBJECT_DIFF_BYTES: usize = 64 * 1024;
    /// One object's message.
    pub const MAX_MESSAGE_BYTES: usize = 1024;
    /// The result's error.
    pub const MAX_ERROR_BYTES: usize = 4 * 1024;
    /// The whole result, encoded (below the link's 4 MiB message limit).
    pub const MAX_RESULT_BYTES: usize = 1024 * 1024;
    /// A whole `DiffLive` answer, encoded (below the 4 MiB message limit).
    pub const MAX_RESPONSE_BYTES: usize = 3 * 1024 * 1024;
    /// The line a cut diff ends with.
    pub const CUT_MARKER: &str = "... (diff cut: longer than 65536 bytes)";
}
