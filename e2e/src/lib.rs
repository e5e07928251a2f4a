//! gitfleet's test bench: the in-process fleet harness, the demo and benchmarks; the Kubernetes API
//! simulator they run against is the `gitfleet-kubesim` crate.

pub mod gitrepo;
pub mod harness;
pub mod hubproc;
pub mod proxy;
pub mod rollout_checks;
