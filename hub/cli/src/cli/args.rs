//! The command line: every command, flag and help text. Parsing only; [`super::run`] acts.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str = "Drive a gitfleet hub: apply Repos and Apps, watch Targets converge, \
                     register clusters";

const LONG_ABOUT: &str = "\
gitfleet is the admin CLI of a gitfleet hub. The hub follows Git repositories and places
Apps (paths in those repositories) onto clusters; a spoke agent in each cluster applies
exactly the commit it is given and reports back. This CLI talks to the hub over mutual TLS
with a context from your gitfleet config (like a kubeconfig).";

const AFTER_HELP: &str = "\
Getting started:
  # Use the admin credential the hub wrote on first start
  gitfleet config import /var/lib/gitfleet/admin.gitfleetconfig

  # Declare a Repo and an App, then watch every Target converge
  gitfleet apply -f fleet/
  gitfleet status

  # Let a new cluster register (the token is shown once)
  gitfleet token create --ttl 1h --label env=prod

  # On a hub started with --require-approval, let it in
  gitfleet cluster pending
  gitfleet cluster approve prod-eu-1

Output:
  Read commands print tables for people; -o json and -o yaml print complete, stable documents
  for scripts. Colour is used only on a terminal (never with NO_COLOR set).

Exit codes:
  0  success
  1  the command failed (hub unreachable, invalid resource, not found, ...)
  2  usage error (unknown command or flag, bad flag value)";

/// The `gitfleet` command line.
#[derive(Debug, Parser)]
#[command(
    name = "gitfleet",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    propagate_version = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Credentials file with the hub contexts [default: ~/.config/gitfleet/config]
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "GITFLEET_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Context to use instead of the config's current-context
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "GITFLEET_CONTEXT",
        value_name = "NAME"
    )]
    pub context: Option<String>,

    /// Output format: tables for people, json or yaml for scripts
    #[arg(
        short = 'o',
        long,
        global = true,
        help_heading = "Global options",
        value_name = "FORMAT",
        env = "GITFLEET_OUTPUT",
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    pub output: OutputFormat,

    /// When to colour tables: auto colours only on a terminal and never with NO_COLOR set
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "WHEN",
        env = "GITFLEET_COLOR",
        value_enum,
        default_value_t = ColorChoice::Auto
    )]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update Repos, Apps, ClusterGroups, Projects, HealthRules and Notifiers from YAML
    /// or JSON files
    #[command(after_help = APPLY_EXAMPLES)]
    Apply(ApplyArgs),

    /// List stored resources, or show one in full with -o yaml
    #[command(after_help = GET_EXAMPLES)]
    Get(GetArgs),

    /// Everything about one resource or cluster on one page: its fields, an App's rollout and
    /// Targets, a cluster's state and Targets, and the latest events
    #[command(after_help = DESCRIBE_EXAMPLES)]
    Describe(DescribeArgs),

    /// Show what `apply -f` would change on the hub, or with --live APP what syncing the App
    /// would change on its clusters; exit 0 when nothing differs, 1 when something does, 2 on
    /// error
    #[command(after_help = DIFF_EXAMPLES)]
    Diff(DiffArgs),

    /// Create a bootstrap token, a user or a freeze (`token create`, `user create` and
    /// `freeze create` are the same commands)
    #[command(subcommand, after_help = CREATE_EXAMPLES)]
    Create(CreateCommand),

    /// Delete a stored resource; or revoke a token or a user, end a freeze
    #[command(after_help = DELETE_EXAMPLES)]
    Delete(DeleteArgs),

    /// Set (KEY=VALUE) or remove (KEY-) a cluster's labels, as kubectl's `label` (the same as
    /// `cluster label`)
    #[command(after_help = LABEL_EXAMPLES)]
    Label(LabelArgs),

    /// Show every Target (one App on one cluster): revisions, sync state and health
    #[command(after_help = STATUS_EXAMPLES)]
    Status(StatusArgs),

    /// Bootstrap tokens that let new clusters register: create, list, revoke
    #[command(subcommand)]
    Token(TokenCommand),

    /// Clusters: list, approve waiting registrations, revoke
    #[command(subcommand)]
    Cluster(ClusterCommand),

    /// Repos: fetch one now
    #[command(subcommand)]
    Repo(RepoCommand),

    /// Follow and steer an App's rollout: status, pause, resume, promote, rollback, history
    #[command(subcommand)]
    Rollout(RolloutCommand),

    /// Suspend or resume an App, or make its spokes sync it again now
    #[command(subcommand)]
    App(AppCommand),

    /// Hold new revisions for a while: create, list, delete freezes
    #[command(subcommand)]
    Freeze(FreezeCommand),

    /// Notifiers (webhooks, Slack, commit statuses): list them with their last delivery,
    /// last error and what waits
    #[command(subcommand)]
    Notifier(NotifierCommand),

    /// What happened to Apps and Targets: new revisions, rollout steps, failures, who did what
    #[command(after_help = EVENTS_EXAMPLES)]
    Events(EventsArgs),

    /// People who may use the hub: create (a credentials file with a role), list, revoke
    #[command(subcommand)]
    User(UserCommand),

    /// Who the hub takes you for: your user, role, Projects and certificate expiry
    Whoami,

    /// Sign in to the hub's web dashboard: prints (and opens) a single-use sign-in link that
    /// starts a browser session as you, with your role
    #[command(after_help = DASHBOARD_EXAMPLES)]
    Dashboard(DashboardArgs),

    /// The versions of this client and of the hub it talks to
    Version(VersionArgs),

    /// The audit log: every change made through the hub's API, who made it and how it ended
    #[command(after_help = AUDIT_EXAMPLES)]
    Audit(AuditArgs),

    /// Show and change your gitfleet config (hub contexts and credentials)
    #[command(subcommand)]
    Config(ConfigCommand),

    /// Print a shell completion script
    #[command(after_help = COMPLETION_EXAMPLES)]
    Completion(CompletionArgs),
}

const APPLY_EXAMPLES: &str = "\
Examples:
  # Apply one file (YAML documents separated by ---)
  gitfleet apply -f guestbook.yaml

  # Apply every .yaml, .yml and .json file under a directory, in path order
  gitfleet apply -f fleet/

  # See what would change without storing anything
  gitfleet apply -f fleet/ --dry-run

  # Read from standard input
  cat app.yaml | gitfleet apply -f -

Every document is checked by the hub first; if any is invalid nothing is stored.";

const DIFF_EXAMPLES: &str = "\
Examples:
  # Review a change before applying it
  gitfleet diff -f fleet/

  # In CI: fail when the hub has drifted from the repository
  gitfleet diff -f fleet/ > /dev/null || echo \"the hub differs from fleet/\"

  # For scripts: which resources would change
  gitfleet diff -f fleet/ -o json | jq -r '.resources[] | select(.diff) | .name'

  # What syncing App web would change on its clusters (the head of its branch)
  gitfleet diff --live web

  # On one cluster, at a given commit
  gitfleet diff --live web --cluster eu-1 --revision 4f1c2e0d9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d

Exit codes (like diff and kubectl diff): 0 no differences, 1 differences, 2 error (with
--live also when a cluster could not be compared: offline, its render failed).
Nothing is stored: the hub validates the documents as `apply --dry-run` does; with --live
the spokes dry-run apply, and nothing in any cluster changes.";

const GET_EXAMPLES: &str = "\
Examples:
  gitfleet get apps
  gitfleet get repo platform -o yaml
  gitfleet get projects
  gitfleet get clusters -l env=prod
  gitfleet get tokens
  gitfleet get all -o json";

const DESCRIBE_EXAMPLES: &str = "\
Examples:
  gitfleet describe app web
  gitfleet describe cluster eu-1
  gitfleet describe repo platform --events 30
  gitfleet describe app web -o json";

const DELETE_EXAMPLES: &str = "\
Examples:
  gitfleet delete app guestbook
  gitfleet delete clustergroup eu
  gitfleet delete project team-a   # refused while Apps name it

  # Revoke a bootstrap token (by its id) or a user; end a freeze
  gitfleet delete token 8e1adea849d1
  gitfleet delete user alice
  gitfleet delete freeze campaign

Clusters are not deleted: revoke one with `gitfleet cluster revoke NAME`.";

const LABEL_EXAMPLES: &str = "\
Examples:
  # Move a cluster from the canary ring to prod (changing a value needs --overwrite)
  gitfleet label cluster prod-eu-1 ring=prod --overwrite

  # Add one label and remove another
  gitfleet label cluster prod-eu-1 zone=eu-west-1 gpu-

Placement follows at once, as with `gitfleet cluster label`.";

const CREATE_EXAMPLES: &str = "\
Examples:
  gitfleet create token --ttl 24h --label env=prod --max-uses 10
  gitfleet create user alice --role operator --project team-a -f alice.gitfleetconfig
  gitfleet create freeze maintenance --for 2h --reason \"datacenter maintenance\"";

/// `gitfleet create KIND`: kubectl's grammar for what the hub issues rather than stores from
/// YAML. Each is the same command as its older noun-first form.
#[derive(Debug, Subcommand)]
pub enum CreateCommand {
    /// A bootstrap token for registering clusters (the same as `token create`)
    #[command(after_help = TOKEN_EXAMPLES)]
    Token(TokenCreateArgs),
    /// A user with a role, and its credentials file (the same as `user create`)
    #[command(after_help = USER_CREATE_EXAMPLES)]
    User(UserCreateArgs),
    /// A freeze holding new revisions until a time (the same as `freeze create`)
    #[command(after_help = FREEZE_CREATE_EXAMPLES)]
    Freeze(FreezeCreateArgs),
}

/// What `gitfleet label` labels: clusters (resources' labels live in their YAML).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LabelKind {
    #[value(name = "cluster", alias = "clusters")]
    Cluster,
}

#[derive(Debug, Clone, Args)]
pub struct LabelArgs {
    /// cluster
    #[arg(value_enum, ignore_case = true)]
    pub kind: LabelKind,
    #[command(flatten)]
    pub label: ClusterLabelArgs,
}

const STATUS_EXAMPLES: &str = "\
Examples:
  # Every Target
  gitfleet status

  # One App, with the result for each Kubernetes object
  gitfleet status --app guestbook --resources

  # For scripts: full revisions and every field
  gitfleet status --cluster prod-eu-1 -o json

  # Follow a rollout; or block until it has converged (exit 1 after --timeout)
  gitfleet status --app guestbook --watch
  gitfleet status --app guestbook --wait --timeout 10m

Resources that failed to apply are always listed with their messages.";

const COMPLETION_EXAMPLES: &str = "\
Examples:
  # bash: load now, or install for every shell
  source <(gitfleet completion bash)
  gitfleet completion bash > /etc/bash_completion.d/gitfleet

  # zsh
  gitfleet completion zsh > \"${fpath[1]}/_gitfleet\"

  # fish
  gitfleet completion fish > ~/.config/fish/completions/gitfleet.fish";

#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    /// File or directory to compare with the hub, or - for standard input (repeatable)
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required_unless_present = "live",
        conflicts_with = "live"
    )]
    pub files: Vec<String>,

    /// Compare an App with its clusters: each spoke renders the App at the revision and
    /// server-side applies it with dryRun=All (nothing changes); what would be created,
    /// changed and pruned, Secret values masked
    #[arg(long, requires = "app")]
    pub live: bool,

    /// The App to compare with its clusters (with --live)
    #[arg(value_name = "APP", requires = "live")]
    pub app: Option<String>,

    /// Only this cluster (default: every cluster the App has a Target on, at most 50)
    #[arg(long, value_name = "NAME", requires = "live")]
    pub cluster: Option<String>,

    /// The commit to compare: in full, or a unique prefix of a commit the App has rolled out
    /// (`rollout history`), as `rollout rollback --to` takes (default: the head of the App's
    /// ref as the hub last fetched it, what a rollout dispatches next)
    #[arg(long, value_name = "COMMIT", requires = "live")]
    pub revision: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// File or directory to apply, or - for standard input (repeatable)
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    pub files: Vec<String>,

    /// Validate and report what would change, storing nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// The kinds of resource `get` and `delete` accept; singulars and plurals both work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    #[value(name = "repos", alias = "repo")]
    Repos,
    #[value(name = "apps", alias = "app")]
    Apps,
    #[value(
        name = "clustergroups",
        aliases = ["clustergroup", "groups", "group", "cluster-group", "cluster-groups"]
    )]
    ClusterGroups,
    #[value(name = "projects", aliases = ["project", "proj"])]
    Projects,
    #[value(name = "healthrules", aliases = ["healthrule", "hr"])]
    HealthRules,
    #[value(name = "notifiers", aliases = ["notifier"])]
    Notifiers,
    /// Registered clusters, as `cluster list` shows them (get only)
    #[value(name = "clusters", aliases = ["cluster"])]
    Clusters,
    /// Bootstrap tokens, by id (get lists them as `token list`, delete revokes one)
    #[value(name = "tokens", aliases = ["token"])]
    Tokens,
    /// Users (get lists them as `user list`, delete revokes one)
    #[value(name = "users", aliases = ["user"])]
    Users,
    /// Freezes (get lists them as `freeze list`, delete ends one)
    #[value(name = "freezes", aliases = ["freeze"])]
    Freezes,
    /// Every kind (get only)
    #[value(name = "all")]
    All,
}

impl KindArg {
    /// The kind as the Admin API names it; empty for all kinds.
    pub fn api_kind(self) -> &'static str {
        match self {
            KindArg::Repos => "Repo",
            KindArg::Apps => "App",
            KindArg::ClusterGroups => "ClusterGroup",
            KindArg::Projects => "Project",
            KindArg::HealthRules => "HealthRule",
            KindArg::Notifiers => "Notifier",
            KindArg::Clusters => "Cluster",
            KindArg::Tokens => "Token",
            KindArg::Users => "User",
            KindArg::Freezes => "Freeze",
            KindArg::All => "",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// What to list: repos, apps, clustergroups, projects, healthrules, notifiers, clusters,
    /// tokens, users, freezes (or singulars), or all
    #[arg(value_enum, ignore_case = true)]
    pub kind: KindArg,
    /// Only this resource
    pub name: Option<String>,
    /// Only those whose labels match, in kubectl's syntax: `env=prod,tier!=edge`,
    /// `region in (eu,us)`, `gpu`, `!legacy` (clusters: their labels; resources:
    /// metadata.labels)
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct DescribeArgs {
    /// app, cluster, repo, clustergroup, project or healthrule
    #[arg(value_enum, ignore_case = true)]
    pub kind: KindArg,
    pub name: String,
    /// How many of the newest events to show
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub events: u32,
}

#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// repo, app, clustergroup, project, healthrule, notifier; token (by id) or user (both
    /// revoked), freeze (ended)
    #[arg(value_enum, ignore_case = true)]
    pub kind: KindArg,
    pub name: String,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Only the Targets of this App
    #[arg(long, value_name = "APP")]
    pub app: Option<String>,
    /// Only the Targets on this cluster
    #[arg(long, value_name = "CLUSTER")]
    pub cluster: Option<String>,
    /// Also list every Kubernetes object of each Target (failed ones are always listed)
    #[arg(long)]
    pub resources: bool,
    /// Print the Targets, then each change as it happens, from the hub's stream (Ctrl-C
    /// stops); a dropped connection is dialled again
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Wait until every Target is synced and healthy at its desired revision; exit 1 on timeout
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration, requires = "wait")]
    pub timeout: Duration,
    /// With --wait: wait until every Target runs this commit (an id or a prefix of one, as
    /// `git rev-parse --short` prints it), not only its current desired revision
    #[arg(long, value_name = "COMMIT", requires = "wait", value_parser = parse_revision)]
    pub revision: Option<String>,
    /// How often --wait polls the hub (and --watch a hub older than this CLI, without streams)
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user and print its credentials file (a context for `gitfleet config import`);
    /// the hub keeps no copy of the private key
    #[command(after_help = USER_CREATE_EXAMPLES)]
    Create(UserCreateArgs),

    /// List users: role, Projects, expiry, status and who created them
    #[command(visible_alias = "ls")]
    List,

    /// Revoke a user: its certificate is refused from its next call on
    Revoke(UserNameArgs),
}

const USER_CREATE_EXAMPLES: &str = "\
Examples:
  # An operator of the default Project; hand the file to alice over a safe channel
  gitfleet user create alice --role operator -f alice.gitfleetconfig

  # An operator of two Projects, for 30 days
  gitfleet user create bob --role operator --project team-a --project team-b --ttl 30d -f bob.gitfleetconfig

  # Read-only access
  gitfleet user create auditor --role viewer -f auditor.gitfleetconfig

The user then runs `gitfleet config import alice.gitfleetconfig`. The file is the only copy of
the user's private key. Revoking the user and creating it again issues a new certificate; the
old one stays refused.";

#[derive(Debug, Clone, Args)]
pub struct UserCreateArgs {
    /// The user's name (a DNS label: lower-case letters, digits and -)
    #[arg(value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub name: String,
    /// What the user may do: viewer reads; operator also applies, deletes and steers Apps and
    /// rollouts in its Projects; admin does everything
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// A Project the operator works in (repeatable; default: the `default` Project only)
    #[arg(long = "project", value_name = "PROJECT", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub projects: Vec<String>,
    /// How long the user's certificate is valid (e.g. 30d, 12h; at most 365d)
    #[arg(long, value_name = "DURATION", default_value = "90d", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Write the credentials file here (owner-only) instead of printing it
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Admin,
    Operator,
    Viewer,
}

impl RoleArg {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleArg::Admin => "admin",
            RoleArg::Operator => "operator",
            RoleArg::Viewer => "viewer",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct UserNameArgs {
    #[arg(value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub name: String,
}

const AUDIT_EXAMPLES: &str = "\
Examples:
  # The last 50 changes
  gitfleet audit

  # What alice did in the last day, for scripts
  gitfleet audit --user alice --since 24h -o json

Every change (apply, delete, rollout and app commands, tokens, clusters, users) is recorded
before the hub answers it, allowed or refused.";

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Only this user's calls
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Only calls this recent (e.g. 1h, 7d)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// How many of the newest entries to show
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a bootstrap token; it is printed once and cannot be shown again
    #[command(after_help = TOKEN_EXAMPLES)]
    Create(TokenCreateArgs),

    /// List bootstrap tokens: uses, expiry, whether revoked (never the secret)
    #[command(visible_alias = "ls", after_help = TOKEN_LIST_EXAMPLES)]
    List,

    /// Make a bootstrap token unusable at once; clusters it registered stay registered
    #[command(after_help = TOKEN_REVOKE_EXAMPLES)]
    Revoke(TokenRevokeArgs),
}

const TOKEN_LIST_EXAMPLES: &str = "\
Examples:
  gitfleet token list

  # Ids of tokens that can still register clusters
  gitfleet token list -o json | jq -r '.tokens[] | select(.revoked | not) | .tokenId'

A token is usable until it expires, is used up (USES reaches its maximum) or is revoked.";

const TOKEN_REVOKE_EXAMPLES: &str = "\
Examples:
  # The id is printed by `gitfleet token create` and listed by `gitfleet token list`
  gitfleet token revoke 8e1adea849d1

Clusters that already registered with the token keep their certificates; cut one off with
`gitfleet cluster revoke NAME`.";

#[derive(Debug, Clone, Args)]
pub struct TokenRevokeArgs {
    /// The token's id (not the secret): see `gitfleet token list`
    #[arg(value_name = "ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub id: String,
}

const TOKEN_EXAMPLES: &str = "\
Examples:
  # A token for one cluster, valid for an hour
  gitfleet token create --max-uses 1

  # Clusters registering with this token get these labels (and the spoke can add none)
  gitfleet token create --ttl 24h --label env=prod --label region=eu --description \"eu rollout\"

  # One cluster, named by the token; the spoke may add its own zone=... label
  gitfleet token create --max-uses 1 --cluster eu-prod-3 --label env=prod --allow-label-key zone

  # For scripts
  TOKEN=$(gitfleet token create -o json | jq -r .token)";

#[derive(Debug, Clone, Args)]
pub struct TokenCreateArgs {
    /// How long the token stays valid (e.g. 30m, 1h, 7d)
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Label that clusters registering with this token get, as KEY=VALUE (repeatable); the
    /// spoke cannot change it
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Label key under which the spoke may add a label of its own (its `--label`), repeatable;
    /// a spoke proposing a label under any other key is refused
    #[arg(long = "allow-label-key", value_name = "KEY", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub allowed_label_keys: Vec<String>,
    /// The one cluster name the token may register
    #[arg(long, value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub cluster: Option<String>,
    /// How many clusters may register with it (default: any number until it expires)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_uses: Option<u32>,
    /// A note for whoever reads the hub's records later
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// List registered clusters, their labels and when they were last heard from
    #[command(visible_alias = "ls")]
    List(ClusterListArgs),

    /// List registrations waiting for approval (hubs started with --require-approval)
    #[command(after_help = CLUSTER_PENDING_EXAMPLES)]
    Pending,

    /// Let a registration waiting for approval get its certificate on its next retry
    #[command(after_help = CLUSTER_APPROVE_EXAMPLES)]
    Approve(ClusterNameArgs),

    /// Cut a cluster off at once: its connection is closed, its certificate refused from now on,
    /// and it leaves every placement
    #[command(after_help = CLUSTER_REVOKE_EXAMPLES)]
    Revoke(ClusterNameArgs),

    /// Set (KEY=VALUE) or remove (KEY-) a cluster's labels; Apps move onto or off it as their
    /// selectors now match
    #[command(after_help = CLUSTER_LABEL_EXAMPLES)]
    Label(ClusterLabelArgs),
}

const CLUSTER_LABEL_EXAMPLES: &str = "\
Examples:
  # Move a cluster from the canary ring to prod (changing a value needs --overwrite)
  gitfleet cluster label prod-eu-1 ring=prod --overwrite

  # Add one label and remove another
  gitfleet cluster label prod-eu-1 zone=eu-west-1 gpu-

Placement follows at once: Apps whose selectors now match the cluster are placed on it, and
those that no longer match leave it, as if it had registered with these labels. The hub keeps
the labels from now on: the spoke registering again does not change them.";

const CLUSTER_PENDING_EXAMPLES: &str = "\
Examples:
  gitfleet cluster pending
  gitfleet cluster pending -o json | jq -r '.clusters[].name'

Only a hub started with --require-approval keeps registrations waiting; approve one with
`gitfleet cluster approve NAME`, or refuse it with `gitfleet cluster revoke NAME`.";

const CLUSTER_APPROVE_EXAMPLES: &str = "\
Examples:
  # See who is waiting, with the labels they will get, then let one in
  gitfleet cluster pending
  gitfleet cluster approve prod-eu-1

The spoke keeps retrying its registration with the same key and gets its certificate on the
next retry; it then shows in `gitfleet cluster list`.";

const CLUSTER_REVOKE_EXAMPLES: &str = "\
Examples:
  gitfleet cluster revoke prod-eu-1

  # Refuse a registration that is waiting for approval
  gitfleet cluster revoke suspicious-1

Revocation cannot be undone: the name stays refused, and its Targets are dropped. A spoke for
that cluster must register again under a new name.";

#[derive(Debug, Clone, Args)]
pub struct ClusterListArgs {
    /// Also list revoked clusters (their names stay refused), marked as revoked
    #[arg(short = 'A', long)]
    pub all: bool,
    /// Only clusters whose labels match, in kubectl's syntax (`env=prod,region in (eu,us)`)
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ClusterLabelArgs {
    /// The cluster's name
    #[arg(value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub name: String,
    /// KEY=VALUE sets a label, KEY- removes one
    #[arg(value_name = "KEY=VALUE|KEY-", required = true, value_parser = parse_label_change)]
    pub changes: Vec<String>,
    /// Allow giving a label that exists another value
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ClusterNameArgs {
    /// The cluster's name
    #[arg(value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the config, with keys and certificates elided unless --raw
    #[command(after_help = VIEW_EXAMPLES)]
    View(ConfigViewArgs),
    /// List the contexts, marking the current one
    GetContexts,
    /// Make NAME the current context
    UseContext(UseContextArgs),
    /// Merge the contexts of a hub's admin.gitfleetconfig into your config and switch to it
    #[command(after_help = IMPORT_EXAMPLES)]
    Import(ImportArgs),
}

const VIEW_EXAMPLES: &str = "\
Examples:
  gitfleet config view
  gitfleet config view --raw -o json

  # The hub's CA certificate, which a spoke needs on its first start
  gitfleet config view --ca > hub-ca.pem";

const IMPORT_EXAMPLES: &str = "\
Examples:
  gitfleet config import /var/lib/gitfleet/admin.gitfleetconfig
  gitfleet config import ./hub-data/admin.gitfleetconfig --name staging";

#[derive(Debug, Clone, Args)]
pub struct ConfigViewArgs {
    /// Show certificates and keys in full
    #[arg(long)]
    pub raw: bool,
    /// Print only the hub CA certificate (PEM) of the context, e.g. for a spoke's --hub-ca
    #[arg(long, conflicts_with = "raw")]
    pub ca: bool,
}

#[derive(Debug, Clone, Args)]
pub struct UseContextArgs {
    pub name: String,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The file to import (the hub writes DATA_DIR/admin.gitfleetconfig)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Name for the imported context (the file must hold exactly one)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct CompletionArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (write durations like 30m, 1h or 7d)"))?;
    if d.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(d)
}

/// Only the grammar (`k=v` or `k-`); the keys and values are checked by the hub.
fn parse_label_change(s: &str) -> Result<String, String> {
    gitfleet_core::cluster_labels::parse_label_arg(s, &mut Default::default())?;
    Ok(s.to_owned())
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Show an App's rollout: each wave's progress, Targets by state, why anything is stuck
    #[command(after_help = ROLLOUT_STATUS_EXAMPLES)]
    Status(RolloutStatusArgs),

    /// Stop giving the new revision to more Targets until `resume`
    #[command(after_help = ROLLOUT_PAUSE_EXAMPLES)]
    Pause(AppNameArgs),

    /// Continue a paused rollout; failures it paused for are accepted
    #[command(after_help = ROLLOUT_RESUME_EXAMPLES)]
    Resume(AppNameArgs),

    /// Let the current wave skip the rest of its minHealthyFor wait
    Promote(AppNameArgs),

    /// Roll back to the last revision that completed a rollout, or to --to REVISION
    #[command(after_help = ROLLOUT_ROLLBACK_EXAMPLES)]
    Rollback(RollbackArgs),

    /// List an App's rollouts (a rollback is one too) and how each ended
    History(AppNameArgs),

    /// Let an App's held rollout through freezes and sync windows now (admins; audited)
    #[command(after_help = ROLLOUT_START_EXAMPLES)]
    Start(RolloutStartArgs),
}

const ROLLOUT_START_EXAMPLES: &str = "\
Examples:
  # An emergency fix during a freeze
  gitfleet rollout start checkout --override-freeze --reason \"INC-4411: payment API change\"

The override lifts freezes and sync windows for the App's current rollout only (not an App it
depends on); the next commit is held again. Who, when and why are in `gitfleet audit` and
`gitfleet events`.";

#[derive(Debug, Clone, Args)]
pub struct RolloutStartArgs {
    /// The App's name
    #[arg(value_name = "APP", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub app: String,
    /// Go through the freezes and sync windows that hold the rollout
    #[arg(long, required = true)]
    pub override_freeze: bool,
    /// Why (recorded in the audit log and the App's events)
    #[arg(long, value_name = "TEXT", required = true, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub reason: String,
}

#[derive(Debug, Subcommand)]
pub enum FreezeCommand {
    /// Hold new revisions of some Apps (or all) until a time (admins; audited)
    #[command(after_help = FREEZE_CREATE_EXAMPLES)]
    Create(FreezeCreateArgs),

    /// List freezes: scope, until when, who made them and why
    #[command(visible_alias = "ls")]
    List,

    /// Delete a freeze: what it held starts rolling out at once (admins; audited)
    Delete(FreezeNameArgs),
}

const FREEZE_CREATE_EXAMPLES: &str = "\
Examples:
  # Hold checkout until the campaign ends
  gitfleet freeze create campaign --app checkout --until 2026-12-07T06:00:00Z \\
    --reason \"holiday campaign: no checkout changes\"

  # The whole fleet, for two hours
  gitfleet freeze create maintenance --for 2h --reason \"datacenter maintenance\"

  # A Project's Apps on production clusters
  gitfleet freeze create eu-prod --project shop --cluster-selector env=prod,region=eu \\
    --for 1d --reason \"EU peak\"

  # Hands-on maintenance: hold the database and leave what people change by hand alone
  gitfleet freeze create db-maint --app postgres --for 3h --no-self-heal \\
    --reason \"INC-4412: manual failover\"

Held Targets keep running (and, unless --no-self-heal, self-healing) the revision they have; a
rollback is never held.
When the freeze ends the held rollouts start by themselves. `gitfleet rollout start APP
--override-freeze --reason TEXT` lets one rollout through.";

#[derive(Debug, Clone, Args)]
pub struct FreezeCreateArgs {
    /// The freeze's name (a DNS label)
    #[arg(value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub name: String,
    /// When it ends, RFC 3339 (2026-12-07T06:00:00Z)
    #[arg(long, value_name = "TIME", value_parser = parse_time, conflicts_with = "for_", required_unless_present = "for_")]
    pub until: Option<i64>,
    /// How long it lasts from now (e.g. 30m, 2h, 3d)
    #[arg(long = "for", id = "for_", value_name = "DURATION", value_parser = parse_duration)]
    pub for_: Option<Duration>,
    /// An App it holds (repeatable); with no --app and no --project: every App
    #[arg(long = "app", value_name = "APP")]
    pub apps: Vec<String>,
    /// A Project whose Apps it holds (repeatable)
    #[arg(long = "project", value_name = "PROJECT")]
    pub projects: Vec<String>,
    /// Only clusters whose labels match, kubectl's syntax (env=prod,region in (eu,us))
    #[arg(long, value_name = "SELECTOR")]
    pub cluster_selector: Option<String>,
    /// Why (shown to everyone it holds)
    #[arg(long, value_name = "TEXT", required = true, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub reason: String,
    /// Suspend self-heal of what it holds until it ends: drift is reported (OutOfSync), not
    /// corrected
    #[arg(long)]
    pub no_self_heal: bool,
}

#[derive(Debug, Clone, Args)]
pub struct FreezeNameArgs {
    /// The freeze's name
    #[arg(value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub name: String,
}

fn parse_time(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.timestamp())
        .map_err(|e| format!("{s:?}: {e} (write a time like 2026-12-07T06:00:00Z)"))
}

const ROLLOUT_STATUS_EXAMPLES: &str = "\
Examples:
  gitfleet rollout status guestbook

  # Follow it with a progress bar per wave until it completes, pauses or rolls back
  gitfleet rollout status guestbook --watch

  # In a pipeline: exit 0 when complete, 1 when paused or rolled back, or after --timeout
  gitfleet rollout status guestbook --watch --timeout 30m

Targets are pending (not given the revision yet), updating, healthy, failed, tolerated (failed,
accepted by resume) or disconnected (never counted as failed).";

const ROLLOUT_PAUSE_EXAMPLES: &str = "\
Examples:
  gitfleet rollout pause guestbook

Targets that already have the new revision keep it. A pause by a person also holds a newer
commit's rollout until `gitfleet rollout resume`.";

const ROLLOUT_RESUME_EXAMPLES: &str = "\
Examples:
  gitfleet rollout resume guestbook

Resuming after failures accepts them: the failed Targets no longer count against the wave's
failure budget. To undo the change instead, use `gitfleet rollout rollback`.";

const ROLLOUT_ROLLBACK_EXAMPLES: &str = "\
Examples:
  # Back to the last revision that completed a rollout, every Target at once
  gitfleet rollout rollback guestbook

  # To a revision from the history
  gitfleet rollout history guestbook
  gitfleet rollout rollback guestbook --to 1a2b3c4

Git keeps pointing at the revision rolled back from; the hub does not roll it out again. The
next commit to the App's path starts a new rollout.";

#[derive(Debug, Clone, Args)]
pub struct AppNameArgs {
    /// The App's name
    #[arg(value_name = "APP", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub app: String,
}

#[derive(Debug, Clone, Args)]
pub struct RolloutStatusArgs {
    /// The App's name
    #[arg(value_name = "APP", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub app: String,
    /// Follow the rollout until it completes (exit 0), pauses or rolls back (exit 1)
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Give up watching after this long (exit 1)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "watch")]
    pub timeout: Option<Duration>,
    /// How often --watch polls a hub older than this CLI (without streams)
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct RollbackArgs {
    /// The App's name
    #[arg(value_name = "APP", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub app: String,
    /// The revision to return to: a commit id or a unique prefix of one from `rollout history`
    #[arg(long, value_name = "REVISION")]
    pub to: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Stop syncing an App everywhere (no apply, prune or self-heal) and hold its rollout
    #[command(after_help = APP_SUSPEND_EXAMPLES)]
    Suspend(AppNameArgs),

    /// Sync a suspended App again; its rollout carries on where it stood
    Resume(AppNameArgs),

    /// Make the spokes fetch, render and apply an App again now, although nothing changed
    #[command(after_help = APP_SYNC_EXAMPLES)]
    Sync(AppSyncArgs),
}

const APP_SUSPEND_EXAMPLES: &str = "\
Examples:
  # Hands off while you debug in the cluster
  gitfleet app suspend guestbook
  gitfleet app resume guestbook

Objects stay as they are while suspended; new commits wait until the App is resumed.";

const APP_SYNC_EXAMPLES: &str = "\
Examples:
  gitfleet app sync guestbook
  gitfleet app sync guestbook --cluster prod-eu-1";

#[derive(Debug, Clone, Args)]
pub struct AppSyncArgs {
    /// The App's name
    #[arg(value_name = "APP", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub app: String,
    /// Only the Target on this cluster
    #[arg(long, value_name = "CLUSTER")]
    pub cluster: Option<String>,
}

const DASHBOARD_EXAMPLES: &str = "\
Examples:
  # Open the dashboard in your browser, signed in as you
  gitfleet dashboard

  # Only print the link (over SSH: open it on your own machine); it works once, within 5 minutes
  gitfleet dashboard --no-open

The hub's --ui-url is where the link points (default: its HTTP listener, /ui).";

const EVENTS_EXAMPLES: &str = "\
Examples:
  # The newest 50 events of every App
  gitfleet events

  # One App, its Target on one cluster
  gitfleet events guestbook --cluster prod-eu-1

  # Keep printing new events as they happen (Ctrl-C stops)
  gitfleet events guestbook --watch";

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Only this App's events
    #[arg(value_name = "APP")]
    pub app: Option<String>,
    /// Only events of the Targets on this cluster
    #[arg(long, value_name = "CLUSTER")]
    pub cluster: Option<String>,
    /// How many of the newest events to show
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
    /// Keep printing new events as they happen, from the hub's stream (Ctrl-C stops); a
    /// dropped connection resumes after the last event printed
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// How often --watch polls a hub older than this CLI (without streams)
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
}

#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Only print the link; do not open a browser (xdg-open, or open on macOS)
    #[arg(long)]
    pub no_open: bool,
}

#[derive(Debug, clap::Args)]
pub struct VersionArgs {
    /// Only this client's version: no connection to the hub
    #[arg(long)]
    pub client: bool,
}

/// A commit id or a prefix of one: hex, 4 to 40 characters.
fn parse_revision(text: &str) -> Result<String, String> {
    let ok = (4..=40).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!(
            "{text:?} is not a commit id or a prefix of one (4 to 40 hex characters)"
        ))
    }
}

#[derive(Debug, Subcommand)]
pub enum NotifierCommand {
    /// Every Notifier: its sink, events, last delivery, last error and deliveries waiting
    /// (apply, get and delete them as resources: `gitfleet apply -f notifier.yaml`)
    #[command(visible_alias = "ls", after_help = NOTIFIER_LIST_EXAMPLES)]
    List,
}

const NOTIFIER_LIST_EXAMPLES: &str = "\
Examples:
  # Which Notifiers deliver, and which fail
  gitfleet notifier list

  # The same for scripts: counts, keys and times
  gitfleet notifier list -o json

A delivery that fails is retried with backoff; one refused for good (a 4xx answer) or retried
to the bound is given up, and LAST ERROR says which and why. See docs/notifications.md.";

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Fetch a Repo now instead of at its next poll (what a push webhook does)
    Refresh(RepoRefreshArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RepoRefreshArgs {
    /// The Repo's name
    pub name: String,
    /// Wait for the fetch to finish and print what the Repo is at (or why the fetch failed)
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration, requires = "wait")]
    pub timeout: Duration,
}
