//! gitfleet's test bench: kubesim (a Kubernetes API simulator), the in-process fleet harness, the
//! demo, and benchmarks.

pub mod gitrepo;
pub mod harness;
pub mod hubproc;
pub mod kubesim;
pub mod proxy;
