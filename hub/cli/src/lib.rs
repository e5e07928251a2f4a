//! The `gitfleet` admin CLI and its client: [`cli`] (arguments, commands, output) and
//! [`client`] (the admin credentials file and the mutual-TLS gRPC client of the hub's Admin and
//! Access services). It does not depend on the hub: what both need (the resource parser, the
//! credentials file's format) is in `gitfleet-core`, so this crate links neither sled nor
//! libgit2.

pub mod cli;
pub mod client;
