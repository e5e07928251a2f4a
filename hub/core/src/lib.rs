//! gitfleet's pure core: decisions and parsers that both the hub and the spoke use, with no IO.
//!
//! - [`credential_scope`]: where a Git credential may be sent (its entry's URL prefixes).
//! - [`names`]: names that reach another program's command line (Helm release names).
//! - [`yaml`]: reading untrusted YAML and JSON into JSON values within one budget (events,
//!   aliases, depth, documents and expanded size, per document and per Target or commit).
//! - [`documents`]: resource documents (`gitfleet apply -f`, the fleet path of a Repo) from text.
//! - [`resources`]: the declarative resources (Repo, App, ClusterGroup): types, parsing and
//!   validation with a field path in every error.
//! - [`health_rules`]: custom health rules (CEL over a live object): checked, compiled, judged;
//!   the built-in rules for common CRDs.
//! - [`gitfleetconfig`]: the admin credentials file's format (the hub writes one, the CLI reads
//!   it); reading and writing the file is the caller's.
//! - [`fleet`]: the fleet's decisions: placement, each cluster's desired Targets, rollouts, and
//!   which changes in a Target's reports are events.
//! - [`model`]: the hub's own records (clusters, tokens, per-cluster desired state, Target
//!   status).
//! - [`link`]: what a (re)connecting spoke is sent: nothing, a delta or a snapshot.
//! - [`fleetsync`]: what a commit of the fleet path asks the hub to apply and delete.
//! - [`webhook`]: verifying Git hosts' push webhooks and finding the Repos they name.
//! - [`git`]: which Apps a commit touches; which tag a semver range picks.
//! - [`authz`]: who may do what through the admin API (role × action × Project).
//! - [`dashboard`]: the web dashboard's sign-in links, sessions, what a role may do there, and
//!   the fleet grid's compact model.
//! - [`users`]: the admin API's users (records bound to their certificates) and the audit
//!   log's entries and retention.

pub mod authz;
pub mod charts;
pub mod cluster_labels;
pub mod credential_scope;
pub mod dashboard;
pub mod documents;
pub mod fleet;
pub mod fleetsync;
pub mod git;
pub mod gitfleetconfig;
pub mod health_rules;
pub mod kube_api;
pub mod link;
pub mod model;
pub mod names;
pub mod notify;
pub mod resources;
pub mod users;
pub mod webhook;
pub mod yaml;
