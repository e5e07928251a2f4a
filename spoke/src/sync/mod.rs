//! The decisions of a sync, free of IO: render manifests, order them, judge health, and sum the
//! results up into a Target's status. The adapters (`git`, `cluster`) feed these functions and
//! carry out what they decide.

pub mod diff;
pub mod drift;
pub mod health;
pub mod hooks;
pub mod order;
pub mod ownership;
pub mod project;
pub mod prune;
pub mod render;
pub mod report;
pub mod retry;
