//! A TCP proxy a test controls: [`gitfleet_support::proxy`], shared with the hub's tests.

pub use gitfleet_support::proxy::Proxy;
