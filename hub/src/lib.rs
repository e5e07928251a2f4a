//! gitfleet hub: follows Git repositories, places Apps on clusters, sends each spoke its desired
//! state over mutual TLS, and keeps everything it learns in an embedded sled store. Also the
//! library behind the `gitfleet` admin CLI.

pub mod client;
pub mod fleet;
pub mod resources;
