//! gitfleet's pure core: decisions and parsers that both the hub and the spoke use, with no IO.
//!
//! - [`credential_scope`]: where a Git credential may be sent (its entry's URL prefixes).
//! - [`names`]: names that reach another program's command line (Helm release names).
//! - [`yaml`]: reading untrusted YAML and JSON into JSON values within one budget (events,
//!   aliases, depth, documents and expanded size, per document and per Target or commit).
//! - [`documents`]: resource documents (`gitfleet apply -f`, the fleet path of a Repo) from text.
//! - [`resources`]: the declarative resources (Repo, App, ClusterGroup): types, parsing and
//!   validation with a field path in every error.
//! - [`gitfleetconfig`]: the admin credentials file's format (the hub writes one, the CLI reads
//!   it); reading and writing the file is the caller's.

pub mod credential_scope;
pub mod documents;
pub mod gitfleetconfig;
pub mod names;
pub mod resources;
pub mod yaml;
