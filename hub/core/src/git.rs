//! Pure decisions over Git: which Apps a commit touches, which tag a semver range picks, whether
//! a commit or tag is signed by a trusted key. The
//! hub's git2 adapter (`gitfleet_hub::git`) feeds them what it reads.

pub mod changes;
pub mod refs;
pub mod signature;
