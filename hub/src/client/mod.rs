//! Talking to a hub as an admin: the credentials file and the gRPC client.

pub mod config;
