//! Pure decisions over Git: which Apps a commit touches, which tag a semver range picks. The
//! hub's git2 adapter (`gitfleet_hub::git`) feeds them what it reads.

pub mod changes;
pub mod refs;
