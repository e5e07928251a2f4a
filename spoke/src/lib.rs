//! gitfleet spoke agent: dials the hub, fetches the exact commit of each Target, renders and
//! applies it to its cluster with server-side apply, and reports status back.

pub mod git;
pub mod model;
pub mod sync;
