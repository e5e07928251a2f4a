//! gitfleet's test bench: kubesim, end-to-end tests, the demo and benchmarks.
